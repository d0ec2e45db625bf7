#include "runtime/vk_pipeline_cache.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/shader_table.h"

/* Egret's header before the driver's data; integers little-endian. */
enum { MAGIC_LEN = 8, KEY_LEN = 32, SUM_LEN = 32, HEADER_LEN = MAGIC_LEN + KEY_LEN + 8 + SUM_LEN };
static const char MAGIC[MAGIC_LEN] = {'E', 'G', 'R', 'E', 'T', 'P', 'C', '1'};
/* a bound on what is read: far above any driver's cache for Egret's few dozen pipelines */
#define MAX_DATA_BYTES (256ull << 20)

const char *eg_pipeline_cache_default_dir(void) {
    static char dir[4096];
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(dir, sizeof dir, "%s/egret", xdg);
    else if (home && *home)
        n = snprintf(dir, sizeof dir, "%s/.cache/egret", home);
    else
        return NULL;
    return n > 0 && (size_t)n < sizeof dir ? dir : NULL;
}

static int sha256(const void *const *parts, const size_t *lens, int n, uint8_t out[32]) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (int i = 0; ok && i < n; i++)
        ok = EVP_DigestUpdate(ctx, parts[i], lens[i]);
    unsigned len = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, out, &len) && len == 32;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -1;
}

/* The key: this device, its driver, and this build's shaders. */
static int cache_key(const EgVk *vk, uint8_t key[KEY_LEN]) {
    const VkPhysicalDeviceProperties *p = &vk->props;
    uint32_t ids[3] = {p->vendorID, p->deviceID, p->driverVersion};
    int n = 2 + 2 * eg_shader_table_count;
    const void **parts = calloc((size_t)n, sizeof *parts);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    int rc = -1;
    if (parts && lens) {
        parts[0] = ids;
        lens[0] = sizeof ids;
        parts[1] = p->pipelineCacheUUID;
        lens[1] = VK_UUID_SIZE;
        for (int i = 0; i < eg_shader_table_count; i++) {
            parts[2 + 2 * i] = eg_shader_table[i].name; /* with its NUL: names cannot run on */
            lens[2 + 2 * i] = strlen(eg_shader_table[i].name) + 1;
            parts[3 + 2 * i] = eg_shader_table[i].code;
            lens[3 + 2 * i] = eg_shader_table[i].size;
        }
        rc = sha256(parts, lens, n, key);
    }
    free(parts);
    free(lens);
    return rc;
}

int eg_pipeline_cache_path(const EgVk *vk, const char *dir, char *out, size_t cap) {
    uint8_t key[KEY_LEN];
    if (cache_key(vk, key)) return -1;
    int n =
        snprintf(out, cap, "%s/pipelines-%04x-%04x-", dir, vk->props.vendorID, vk->props.deviceID);
    for (int i = 0; i < 8 && n > 0 && (size_t)n < cap; i++)
        n += snprintf(out + n, cap - (size_t)n, "%02x", key[i]);
    if (n > 0 && (size_t)n < cap) n += snprintf(out + n, cap - (size_t)n, ".bin");
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* mkdir -p with private permissions: the cache is this user's. */
static int make_dirs(const char *dir) {
    char path[4096];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof path) return -1;
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) return -1;
        path[i] = c;
    }
    struct stat st;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* Reads the file whole (at most HEADER_LEN + MAX_DATA_BYTES). NULL with *why set on failure;
 * *missing when it does not exist (no warning then: a first start). */
static uint8_t *read_file(const char *path, size_t *len, const char **why, int *missing) {
    FILE *f = fopen(path, "rb");
    *missing = !f && errno == ENOENT;
    if (!f) {
        *why = strerror(errno);
        return NULL;
    }
    uint8_t *data = NULL;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0)
        *why = "cannot be read";
    else if ((unsigned long long)size > HEADER_LEN + MAX_DATA_BYTES)
        *why = "is larger than any pipeline cache Egret writes";
    else if (!(data = malloc(size ? (size_t)size : 1)))
        *why = "out of host memory";
    else if (fread(data, 1, (size_t)size, f) != (size_t)size) {
        *why = "cannot be read";
        free(data);
        data = NULL;
    }
    fclose(f);
    *len = (size_t)(size > 0 ? size : 0);
    return data;
}

/* Why the file's bytes cannot be used, or NULL when they can (then *data_off, *data_len). */
static const char *check_file(const EgVk *vk, const uint8_t *f, size_t len,
                              const uint8_t key[KEY_LEN], size_t *data_off, size_t *data_len) {
    if (len < HEADER_LEN) return "is truncated (shorter than its header)";
    if (memcmp(f, MAGIC, MAGIC_LEN) != 0) return "is not an Egret pipeline cache";
    if (memcmp(f + MAGIC_LEN, key, KEY_LEN) != 0)
        return "was written for another device, driver or Egret build";
    uint64_t n = get_u64(f + MAGIC_LEN + KEY_LEN);
    if (n != len - HEADER_LEN) return "is truncated or has trailing bytes (size mismatch)";
    uint8_t sum[SUM_LEN];
    const void *part = f + HEADER_LEN;
    size_t part_len = (size_t)n;
    if (sha256(&part, &part_len, 1, sum) || memcmp(sum, f + MAGIC_LEN + KEY_LEN + 8, SUM_LEN))
        return "is corrupt (its checksum does not match)";
    /* the driver's own header (VkPipelineCacheHeaderVersionOne), checked here too: the driver
     * gets nothing that does not claim to be its own cache for this very device */
    const uint8_t *d = f + HEADER_LEN;
    if (n < 16 + VK_UUID_SIZE) return "holds no driver header";
    uint32_t header_size = get_u32(d), version = get_u32(d + 4);
    if (header_size < 16 + VK_UUID_SIZE || header_size > n) return "has a bad driver header size";
    if (version != VK_PIPELINE_CACHE_HEADER_VERSION_ONE) return "has an unknown header version";
    if (get_u32(d + 8) != vk->props.vendorID || get_u32(d + 12) != vk->props.deviceID ||
        memcmp(d + 16, vk->props.pipelineCacheUUID, VK_UUID_SIZE) != 0)
        return "holds another device's or driver's pipelines";
    *data_off = HEADER_LEN;
    *data_len = (size_t)n;
    return NULL;
}

static FILE *log_of(FILE *log) {
    return log ? log : stderr;
}

long eg_pipeline_cache_load(EgVk *vk, const char *dir, FILE *log) {
    free(vk->pipeline_cache_path);
    vk->pipeline_cache_path = NULL;
    vk->pipeline_cache_loaded_sum_ok = 0;
    char path[4200];
    uint8_t *file = NULL;
    size_t len = 0, off = 0, data_len = 0;
    uint8_t key[KEY_LEN];
    if (cache_key(vk, key) || eg_pipeline_cache_path(vk, dir, path, sizeof path)) {
        fprintf(log_of(log), "egret: warning: no pipeline cache (its name does not fit)\n");
    } else if (make_dirs(dir)) {
        fprintf(log_of(log), "egret: warning: no pipeline cache: cannot create %s (%s)\n", dir,
                strerror(errno));
    } else {
        vk->pipeline_cache_path = strdup(path);
        const char *why = NULL;
        int missing = 0;
        file = read_file(path, &len, &why, &missing);
        if (file) why = check_file(vk, file, len, key, &off, &data_len);
        if (why && !missing)
            fprintf(log_of(log), "egret: warning: ignoring pipeline cache %s: it %s\n", path, why);
        if (why) data_len = 0;
    }
    VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
                                    .initialDataSize = data_len,
                                    .pInitialData = data_len ? file + off : NULL};
    VkResult vr = vkCreatePipelineCache(vk->device, &ci, NULL, &vk->pipeline_cache);
    if (vr != VK_SUCCESS && data_len) { /* the driver refused the data: start empty */
        fprintf(log_of(log),
                "egret: warning: ignoring pipeline cache %s: the driver refused it (%s)\n", path,
                eg_vk_result_name(vr));
        data_len = 0;
        ci.initialDataSize = 0;
        ci.pInitialData = NULL;
        vr = vkCreatePipelineCache(vk->device, &ci, NULL, &vk->pipeline_cache);
    }
    if (vr != VK_SUCCESS) vk->pipeline_cache = VK_NULL_HANDLE;
    /* what was loaded, to skip rewriting the same bytes */
    if (data_len) {
        const void *part = file + off;
        vk->pipeline_cache_loaded_sum_ok =
            sha256(&part, &data_len, 1, vk->pipeline_cache_loaded_sum) == 0;
    }
    free(file);
    return vr != VK_SUCCESS ? -1 : (long)data_len;
}

long eg_pipeline_cache_save(EgVk *vk, FILE *log) {
    if (!vk->pipeline_cache || !vk->pipeline_cache_path) return 0;
    const char *path = vk->pipeline_cache_path;
    size_t n = 0;
    if (vkGetPipelineCacheData(vk->device, vk->pipeline_cache, &n, NULL) != VK_SUCCESS || n == 0 ||
        n > MAX_DATA_BYTES) {
        fprintf(log_of(log),
                "egret: warning: pipeline cache %s not saved: the driver gave no data\n", path);
        return -1;
    }
    uint8_t *buf = malloc(HEADER_LEN + n);
    if (!buf) return -1;
    VkResult vr = vkGetPipelineCacheData(vk->device, vk->pipeline_cache, &n, buf + HEADER_LEN);
    uint8_t sum[SUM_LEN];
    const void *part = buf + HEADER_LEN;
    if (vr != VK_SUCCESS || sha256(&part, &n, 1, sum) || cache_key(vk, buf + MAGIC_LEN)) {
        free(buf);
        fprintf(log_of(log), "egret: warning: pipeline cache %s not saved: reading it failed\n",
                path);
        return -1;
    }
    if (vk->pipeline_cache_loaded_sum_ok &&
        memcmp(sum, vk->pipeline_cache_loaded_sum, SUM_LEN) == 0) {
        free(buf);
        return 0;
    }
    memcpy(buf, MAGIC, MAGIC_LEN);
    put_u64(buf + MAGIC_LEN + KEY_LEN, n);
    memcpy(buf + MAGIC_LEN + KEY_LEN + 8, sum, SUM_LEN);
    /* a temporary file in the same folder, renamed over the old one: readers see the old file
     * or the new one, never a part */
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(buf, 1, HEADER_LEN + n, f) == HEADER_LEN + n;
    ok = f && fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    if (f && fclose(f) != 0) ok = 0;
    ok = ok && rename(tmp, path) == 0;
    int saved_errno = errno;
    free(buf);
    if (!ok) {
        if (f) unlink(tmp);
        fprintf(log_of(log), "egret: warning: pipeline cache %s not saved: %s\n", path,
                strerror(saved_errno));
        return -1;
    }
    memcpy(vk->pipeline_cache_loaded_sum, sum, SUM_LEN);
    vk->pipeline_cache_loaded_sum_ok = 1;
    return (long)n;
}
