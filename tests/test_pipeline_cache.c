/* The on-disk pipeline cache (runtime/vk_pipeline_cache.c): written after the pipelines are
 * built and read back on the next start; a truncated, corrupt, foreign (another device's
 * driver header), other-build or garbage file is ignored with a warning naming it, pipelines
 * still build, and the next save replaces it with a good one. */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/vk_pipeline.h"
#include "runtime/vk_pipeline_cache.h"
#include "test_util.h"

static char g_dir[128];

/* What a start does: the cache from g_dir, every pipeline built through it, then saved. The
 * warnings written meanwhile are returned (malloc'd); *loaded and *saved as the calls said. */
static char *start(long *loaded, long *saved) {
    EgError err = {0};
    EgVk vk;
    *loaded = *saved = -2;
    if (eg_vk_create(&vk, NULL, &err)) {
        CHECK(0, "device: %s", err.msg);
        return strdup("");
    }
    FILE *log = tmpfile();
    *loaded = eg_pipeline_cache_load(&vk, g_dir, log);
    CHECK(vk.pipeline_cache != VK_NULL_HANDLE, "a pipeline cache, empty or not, is in use");
    /* one pipeline (eg_ops_init builds them all the same way, just more of them) */
    EgPipelineBatch batch;
    EgPipeline rope;
    eg_pipeline_batch_init(&batch, 1);
    eg_pipeline_batch_add(&batch, &rope, "rope", 2, 1u << 0, 0,
                          7 * sizeof(uint32_t) /* ops.c RopePush */, NULL, 0);
    int built = eg_pipeline_batch_build(&vk, &batch, &err);
    CHECK(built == 0, "a pipeline builds through the cache: %s", err.msg);
    if (built == 0) eg_pipeline_destroy(&vk, &rope);
    *saved = eg_pipeline_cache_save(&vk, log);
    eg_vk_destroy(&vk);
    long n = ftell(log);
    char *text = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
    rewind(log);
    if (n > 0 && fread(text, 1, (size_t)n, log) != (size_t)n) text[0] = '\0';
    fclose(log);
    return text;
}

static char g_path[4200];

static unsigned char *read_cache(size_t *len) {
    return test_read_file(g_path, len);
}

static void write_cache(const unsigned char *data, size_t len) {
    FILE *f = fopen(g_path, "wb");
    CHECK(f && fwrite(data, 1, len, f) == len, "write %s", g_path);
    if (f) fclose(f);
}

/* Egret's header: magic (8), key (32), data size (8), data SHA-256 (32); the data after it. */
enum { HEADER = 80, SUM_AT = 48 };

static void reseal(unsigned char *f, size_t len) {
    unsigned n = 0;
    EVP_Digest(f + HEADER, len - HEADER, f + SUM_AT, &n, EVP_sha256(), NULL);
}

/* A start after `name`'s damage: ignored with a warning naming the file, then replaced. */
static void expect_ignored(const char *name) {
    long loaded, saved;
    char *log = start(&loaded, &saved);
    CHECK(loaded == 0, "%s: nothing loaded (got %ld)", name, loaded);
    CHECK(strstr(log, "warning: ignoring pipeline cache") && strstr(log, g_path),
          "%s: a warning names the file, got: %s", name, log);
    CHECK(saved > 0, "%s: the next save writes a good file (%ld)", name, saved);
    printf("%s: %s", name, log);
    free(log);
    free(start(&loaded, &saved));
    CHECK(loaded > 0, "%s: the rewritten file loads (%ld)", name, loaded);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/egret-test-%d-pipeline-cache/nested", (int)getpid());
    EgError err = {0};
    EgVk vk;
    REQUIRE(eg_vk_create(&vk, NULL, &err) == 0, "device: %s", err.msg);
    REQUIRE(eg_pipeline_cache_path(&vk, g_dir, g_path, sizeof g_path) == 0, "path");
    eg_vk_destroy(&vk);

    /* first start: no file, no warning; the save writes one */
    long loaded, saved;
    char *log = start(&loaded, &saved);
    CHECK(loaded == 0 && *log == '\0', "a first start loads nothing and warns of nothing: %s", log);
    free(log);
    CHECK(saved > 0, "saved %ld bytes", saved);
    struct stat st;
    CHECK(stat(g_path, &st) == 0 && st.st_size == HEADER + saved, "%s holds header + data", g_path);
    /* second start: the file is read back; nothing changed, so nothing is rewritten */
    log = start(&loaded, &saved);
    CHECK(loaded > 0 && *log == '\0', "reused: %ld bytes, warnings: %s", loaded, log);
    CHECK(saved == 0, "an unchanged cache is not rewritten (%ld)", saved);
    free(log);

    size_t len = 0;
    unsigned char *good = read_cache(&len);
    REQUIRE(good && len > HEADER + 16, "read %s", g_path);
    unsigned char *bad = malloc(len);

    write_cache(good, len / 2 > HEADER ? len / 2 : HEADER + 1);
    expect_ignored("truncated");
    write_cache(good, 20);
    expect_ignored("truncated header");
    memcpy(bad, good, len);
    bad[len - 1] ^= 0x5a; /* the driver's data, checksum not updated */
    write_cache(bad, len);
    expect_ignored("corrupt");
    memcpy(bad, good, len);
    bad[HEADER + 8] ^= 1; /* the driver header's vendorID: another device's cache */
    reseal(bad, len);
    write_cache(bad, len);
    expect_ignored("foreign device");
    memcpy(bad, good, len);
    bad[HEADER + 4] = 7; /* an unknown VkPipelineCacheHeaderVersion */
    reseal(bad, len);
    write_cache(bad, len);
    expect_ignored("unknown header version");
    memcpy(bad, good, len);
    bad[12] ^= 0xff; /* Egret's key: another build or driver */
    write_cache(bad, len);
    expect_ignored("other build");
    for (size_t i = 0; i < len; i++)
        bad[i] = (unsigned char)(test_rng_u64() & 0xff);
    write_cache(bad, len);
    expect_ignored("garbage");

    free(good);
    free(bad);
    unlink(g_path);
    rmdir(g_dir);
    *strrchr(g_dir, '/') = '\0';
    rmdir(g_dir);
    return test_finish();
}
