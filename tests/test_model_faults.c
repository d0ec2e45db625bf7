/* A model folder that is broken fails to open with a message naming the file (and the tensor)
 * at fault, never a crash: missing files, truncated or corrupt weights, a weight with the wrong
 * shape, broken JSON, a bad template. The server refuses to start on such a folder, so these are
 * what `egret serve --model DIR` prints before exiting non-zero. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "test_util.h"

static char dir[256];
static const char *const FILES[] = {"config.json", "model.safetensors", "tokenizer.json",
                                    "egret_template.json"};
enum { N_FILES = sizeof FILES / sizeof *FILES };

static void write_file(const char *name, const void *data, size_t len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(test_write_file(path, data, len) == 0, "cannot write %s", path);
}

/* Copies the demo model into dir, leaving out `skip` (may be NULL). */
static void copy_model(const char *skip) {
    mkdir(dir, 0755);
    for (size_t i = 0; i < N_FILES; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, FILES[i]);
        unlink(path);
        if (skip && strcmp(FILES[i], skip) == 0) continue;
        size_t len;
        char src[512];
        snprintf(src, sizeof src, "shapes-idefics/%s", FILES[i]);
        unsigned char *data = test_read_file(test_model_path(src), &len);
        CHECK(data != NULL, "read %s", src);
        if (data) write_file(FILES[i], data, len);
        free(data);
    }
}

static void expect_open_fails(const char *what, const char *needle) {
    EgError err = {0};
    EgEngine *e = eg_engine_open(dir, NULL, &err);
    CHECK(e == NULL, "%s: the model opened", what);
    CHECK(strstr(err.msg, needle) != NULL, "%s: message '%s' should mention '%s'", what, err.msg,
          needle);
    if (!e) printf("  %s: %s\n", what, err.msg);
    eg_engine_close(e);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/egret-broken-model-%d", (int)getpid());
    size_t len;
    unsigned char *weights = test_read_file(test_model_path("shapes-idefics/model.safetensors"), &len);
    REQUIRE(weights && len > 1000, "demo weights missing");

    copy_model("model.safetensors");
    expect_open_fails("missing weights", "safetensors");
    copy_model("config.json");
    expect_open_fails("missing config", "config.json");
    copy_model("tokenizer.json");
    expect_open_fails("missing tokenizer", "tokenizer.json");

    copy_model(NULL);
    write_file("model.safetensors", weights, len / 2);
    expect_open_fails("truncated weights", "model.safetensors");
    write_file("model.safetensors", weights, 7);
    expect_open_fails("weights shorter than their header length", "model.safetensors");
    /* A header length far past the end of the file. */
    unsigned char *bad = malloc(len);
    REQUIRE(bad, "out of memory");
    memcpy(bad, weights, len);
    bad[5] = 0x7f;
    write_file("model.safetensors", bad, len);
    expect_open_fails("header length past the end", "model.safetensors");
    /* Header JSON damaged. */
    memcpy(bad, weights, len);
    bad[8] = '[';
    write_file("model.safetensors", bad, len);
    expect_open_fails("corrupt header", "model.safetensors");
    /* A tensor renamed away: the loader names the missing tensor. */
    memcpy(bad, weights, len);
    char *name = memmem(bad, 4096, "lm_head.weight", 14);
    if (!name) name = memmem(bad, 4096, "model.norm.weight", 17);
    REQUIRE(name, "no known tensor name in the header");
    name[0] = 'X';
    write_file("model.safetensors", bad, len);
    expect_open_fails("missing tensor", "weight");
    free(bad);

    copy_model(NULL);
    write_file("config.json", "{\"model_type\": \"idefics\", \"hidden_size\": ", 42);
    expect_open_fails("broken config.json", "config.json");
    copy_model(NULL);
    write_file("config.json", "{\"model_type\": \"idefics\", \"hidden_size\": 512}", 46);
    expect_open_fails("config that does not match the weights", "shape");
    copy_model(NULL);
    write_file("tokenizer.json", "{\"model\": {}}", 13);
    expect_open_fails("broken tokenizer.json", "tokenizer.json");
    copy_model(NULL);
    write_file("egret_template.json", "{\"example\": 3}", 14);
    expect_open_fails("broken template", "egret_template.json");

    copy_model(NULL);
    EgError err = {0};
    EgEngine *e = eg_engine_open(dir, NULL, &err);
    CHECK(e != NULL, "the intact copy should open: %s", err.msg);
    eg_engine_close(e);
    free(weights);
    for (size_t i = 0; i < N_FILES; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, FILES[i]);
        unlink(path);
    }
    rmdir(dir);
    return test_finish();
}
