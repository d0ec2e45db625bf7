/* safetensors reader: the real checkpoints and goldens in the repo, conversions of random data
 * in files written here, a sharded folder, and one malformed file per validation rule (each
 * error must name the file and, where there is one, the tensor). */
#include "runtime/half.h"
#include "runtime/safetensors.h"
#include "tests/test_util.h"

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* REQUIRE for void helpers: record the failure and leave the helper. */
#define NEED(cond, ...)                                                                            \
    do {                                                                                           \
        CHECK(cond, __VA_ARGS__);                                                                  \
        if (!(cond)) return;                                                                       \
    } while (0)

static char tmpdir[64];
static char created[64][256]; /* files to delete at the end */
static int n_created;

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

static void remember(const char *path) {
    for (int i = 0; i < n_created; i++)
        if (strcmp(created[i], path) == 0) return;
    if (n_created < 64) snprintf(created[n_created++], 256, "%s", path);
}

/* Writes u64 header length (hlen, or strlen(header) when hlen is 0), the header, then data. */
static void write_raw(const char *path, const char *header, uint64_t hlen, const void *data,
                      size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        perror(path);
        exit(2);
    }
    uint64_t n = hlen ? hlen : strlen(header);
    fwrite(&n, 8, 1, fp);
    fwrite(header, 1, strlen(header), fp);
    if (len) fwrite(data, 1, len, fp);
    fclose(fp);
    remember(path);
}

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "wb");
    fputs(text, fp);
    fclose(fp);
    remember(path);
}

/* Opens `name` (a temp file) expecting failure; checks the message holds every `needles`. */
static void expect_fail(const char *name, const char *needle1, const char *needle2) {
    EgError err = {0};
    const char *path = tmp_path(name);
    EgTensorFile *f = eg_tensors_open_file(path, &err);
    CHECK(f == NULL, "%s: opened but should fail", name);
    eg_tensors_close(f);
    CHECK(strstr(err.msg, path) != NULL, "%s: message lacks the path: %s", name, err.msg);
    if (needle1)
        CHECK(strstr(err.msg, needle1) != NULL, "%s: lacks '%s': %s", name, needle1, err.msg);
    if (needle2)
        CHECK(strstr(err.msg, needle2) != NULL, "%s: lacks '%s': %s", name, needle2, err.msg);
}

/* Open descriptors of this process (-1 where /proc is unavailable). */
static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void test_real_files(void) {
    static const struct {
        const char *dir;
        int count;
    } models[] = {{"tiny-idefics-a", 131}, {"tiny-idefics-b", 125}, {"tiny-idefics-c", 68}};
    EgError err = {0};
    char path[512];
    for (int m = 0; m < 3; m++) {
        snprintf(path, sizeof path, "%s", test_data_path(models[m].dir));
        EgTensorFile *f = eg_tensors_open_dir(path, &err);
        CHECK(f != NULL, "%s: %s", path, err.msg);
        if (!f) continue;
        CHECK(eg_tensors_count(f) == models[m].count, "%s: %d tensors", path, eg_tensors_count(f));
        /* Every tensor is found by name (the hash agrees with the list) and is F32. */
        int found = 0, f32 = 0;
        for (int i = 0; i < eg_tensors_count(f); i++) {
            const EgTensorView *t = eg_tensors_at(f, i);
            found += eg_tensors_find(f, t->name) == t;
            f32 += t->dtype == EG_DT_F32 && t->nbytes == (size_t)t->numel * 4;
        }
        CHECK(found == models[m].count && f32 == models[m].count, "%s: %d found, %d f32", path,
              found, f32);
        CHECK(eg_tensors_at(f, -1) == NULL && eg_tensors_at(f, models[m].count) == NULL, "at");
        CHECK(eg_tensors_find(f, "no.such.tensor") == NULL, "absent tensor found");
        CHECK(eg_tensors_find(f, "__metadata__") == NULL, "__metadata__ is not a tensor");
        EgError e2 = {0};
        CHECK(eg_tensors_expect(f, "no.such.tensor", 1, (const int64_t[]){1}, NULL, &e2) != 0 &&
                  strstr(e2.msg, "no.such.tensor") && strstr(e2.msg, path),
              "missing tensor message names the folder: %s", e2.msg);
        eg_tensors_close(f);

        snprintf(path, sizeof path, "%s/golden.safetensors", test_data_path(models[m].dir));
        f = eg_tensors_open_file(path, &err);
        CHECK(f != NULL, "%s: %s", path, err.msg);
        if (!f) continue;
        CHECK(eg_tensors_count(f) == 11, "%s: %d tensors", path, eg_tensors_count(f));
        const EgTensorView *t = eg_tensors_find(f, "input_ids");
        CHECK(t && t->dtype == EG_DT_I64 && t->ndim == 2 && t->shape[0] == 2, "input_ids");
        eg_tensors_close(f);
    }

    /* Tiny model a: known shapes, and golden values read independently with Python. */
    snprintf(path, sizeof path, "%s/model.safetensors", test_data_path("tiny-idefics-a"));
    EgTensorFile *f = eg_tensors_open_file(path, &err);
    NEED(f != NULL, "%s: %s", path, err.msg);
    const EgTensorView *t = NULL;
    CHECK(eg_tensors_expect(f, "model.vision_model.embeddings.patch_embedding.weight", 4,
                            (const int64_t[]){48, 3, 16, 16}, &t, &err) == 0,
          "%s", err.msg);
    CHECK(t && t->numel == 48 * 3 * 16 * 16 && strcmp(t->file, path) == 0, "patch embedding");
    CHECK(eg_tensors_expect(f, "model.gated_cross_attn_layers.2.alpha_dense", 1,
                            (const int64_t[]){1}, NULL, &err) == 0,
          "%s", err.msg);
    CHECK(eg_tensors_expect(f, "lm_head.additional_fc.weight", 2, (const int64_t[]){2, 64}, NULL,
                            &err) == 0,
          "%s", err.msg);
    eg_tensors_close(f);

    snprintf(path, sizeof path, "%s/golden.safetensors", test_data_path("tiny-idefics-a"));
    f = eg_tensors_open_file(path, &err);
    NEED(f != NULL, "%s: %s", path, err.msg);
    CHECK(eg_tensors_expect(f, "logits", 3, (const int64_t[]){2, 34, 477}, &t, &err) == 0, "%s",
          err.msg);
    if (t) {
        float *v = malloc((size_t)t->numel * sizeof *v);
        CHECK(eg_tensor_to_f32(t, v, &err) == 0, "%s", err.msg);
        CHECK(v[0] == -2.585860013961792f && v[1] == 0.23478780686855316f &&
                  v[2] == 1.5173686742782593f && v[12345] == 0.07143723219633102f &&
                  v[t->numel - 1] == -0.6561990976333618f,
              "logits values %g %g %g", v[0], v[1], v[2]);
        free(v);
    }
    t = eg_tensors_find(f, "input_ids");
    if (t) {
        int64_t ids[68];
        CHECK(eg_tensor_to_i64(t, ids, &err) == 0, "%s", err.msg);
        const int64_t want[8] = {1, 475, 476, 475, 299, 300, 321, 376};
        CHECK(memcmp(ids, want, sizeof want) == 0, "input_ids %lld %lld", (long long)ids[0],
              (long long)ids[1]);
        float x;
        CHECK(eg_tensor_to_f32(t, &x, &err) != 0 && strstr(err.msg, "input_ids"),
              "I64 to f32 must fail: %s", err.msg);
    }
    eg_tensors_close(f);

    /* shapes-idefics: 150 header entries = 149 BF16 tensors + __metadata__. The mapping
     * outlives the descriptor, which must be closed at once. */
    int fds = count_fds();
    f = eg_tensors_open_dir(test_model_path("shapes-idefics"), &err);
    NEED(f != NULL, "%s", err.msg);
    CHECK(count_fds() == fds, "descriptor left open: %d -> %d", fds, count_fds());
    CHECK(eg_tensors_count(f) == 149, "shapes-idefics: %d tensors", eg_tensors_count(f));
    int bf16 = 0;
    for (int i = 0; i < eg_tensors_count(f); i++)
        bf16 += eg_tensors_at(f, i)->dtype == EG_DT_BF16;
    CHECK(bf16 == 149, "%d BF16", bf16);
    CHECK(eg_tensors_expect(f, "model.embed_tokens.weight", 2, (const int64_t[]){475, 256}, NULL,
                            &err) == 0,
          "%s", err.msg);
    CHECK(eg_tensors_expect(f, "model.norm.weight", 1, (const int64_t[]){256}, &t, &err) == 0, "%s",
          err.msg);
    if (t) {
        float v[256];
        uint16_t h[3];
        CHECK(eg_tensor_to_f32(t, v, &err) == 0, "%s", err.msg);
        CHECK(v[0] == 1.1484375f && v[1] == 1.1328125f && v[2] == 1.171875f, "norm %g %g %g", v[0],
              v[1], v[2]);
        CHECK(eg_tensor_range_to_f16(t, 0, 3, h, &err) == 0, "%s", err.msg);
        CHECK(eg_f16_to_f32(h[0]) == 1.1484375f && eg_f16_to_f32(h[2]) == 1.171875f, "bf16->f16");
    }
    t = eg_tensors_find(f, "model.vision_model.embeddings.class_embedding");
    CHECK(t && t->ndim == 1 && t->shape[0] == 160, "class_embedding");
    if (t) {
        float v[3];
        CHECK(eg_tensor_range_to_f32(t, 0, 3, v, &err) == 0, "%s", err.msg);
        CHECK(v[0] == 0.69140625f && v[1] == -0.2177734375f && v[2] == -0.78125f, "class %g", v[0]);
    }
    eg_tensors_close(f);
}

/* eg_tensors_open_memory: the same views as the file (names, shapes, bytes) pointing into the
 * caller's buffer, and the same validation errors, named after source_name. */
static void test_memory(void) {
    EgError err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", test_data_path("tiny-idefics-c"));
    size_t len = 0;
    unsigned char *bytes = test_read_file(path, &len);
    NEED(bytes != NULL, "cannot read %s", path);
    EgTensorFile *file = eg_tensors_open_file(path, &err);
    EgTensorFile *mem = eg_tensors_open_memory(bytes, len, "mem.safetensors", &err);
    CHECK(file && mem, "%s", err.msg);
    if (file && mem) {
        CHECK(eg_tensors_count(mem) == eg_tensors_count(file), "%d tensors from memory, %d",
              eg_tensors_count(mem), eg_tensors_count(file));
        int same = 0;
        for (int i = 0; i < eg_tensors_count(file); i++) {
            const EgTensorView *a = eg_tensors_at(file, i), *b = eg_tensors_at(mem, i);
            same += b && strcmp(a->name, b->name) == 0 && a->ndim == b->ndim &&
                    memcmp(a->shape, b->shape, sizeof a->shape) == 0 && a->nbytes == b->nbytes &&
                    memcmp(a->data, b->data, a->nbytes) == 0 &&
                    (const unsigned char *)b->data >= bytes &&
                    (const unsigned char *)b->data + b->nbytes <= bytes + len &&
                    strcmp(b->file, "mem.safetensors") == 0;
        }
        CHECK(same == eg_tensors_count(file), "%d of %d views equal", same, eg_tensors_count(file));
        CHECK(strcmp(eg_tensors_source(mem), "mem.safetensors") == 0, "source %s",
              eg_tensors_source(mem));
    }
    eg_tensors_close(file);
    eg_tensors_close(mem);
    /* Cut inside the data section, inside the header, and before the header length. */
    static const size_t cuts[] = {0, 7, 100};
    for (size_t i = 0; i < 3; i++) {
        size_t cut = i == 2 ? len - cuts[i] : cuts[i];
        mem = eg_tensors_open_memory(cut ? bytes : NULL, cut, "cut.safetensors", &err);
        CHECK(mem == NULL && strstr(err.msg, "cut.safetensors"), "cut at %zu: %s", cut,
              mem ? "opened" : err.msg);
        eg_tensors_close(mem);
    }
    free(bytes);
}

/* ---- round trips through files written here ---- */

enum { N = 1001 }; /* odd, so later tensors start at odd offsets */

static void test_conversions(void) {
    static float f32[N], back[N];
    static uint16_t f16[N], bf16[N], h[N];
    static double f64[N];
    for (int i = 0; i < N; i++) {
        f32[i] = test_rng_normal() * (i % 7 == 0 ? 1e4f : 1.0f);
        f64[i] = (double)test_rng_normal() * 3.0;
        /* Random finite halves and bfloat16s (exponent field not all ones). */
        do
            f16[i] = (uint16_t)test_rng_u64();
        while ((f16[i] & 0x7c00) == 0x7c00);
        do
            bf16[i] = (uint16_t)test_rng_u64();
        while ((bf16[i] & 0x7f80) == 0x7f80);
    }
    f32[1] = INFINITY;
    f32[2] = -0.0f;
    f16[0] = 0x3c00; /* 1.0 */
    f16[1] = 0xc000; /* -2.0 */
    f16[2] = 0x7bff; /* 65504 */
    f16[3] = 0x0001; /* smallest subnormal */
    int8_t i8[5] = {-128, -1, 0, 1, 127};

    /* Header length 1 mod 8 on purpose: the data section is then unaligned. */
    char header[1024];
    size_t o1 = 4 * N, o2 = o1 + 2 * N, o3 = o2 + 2 * N, o4 = o3 + 8 * N, o5 = o4 + 5, o6 = o5 + 4;
    snprintf(header, sizeof header,
             "{\"__metadata__\":{\"format\":\"pt\"},"
             "\"a.f32\":{\"dtype\":\"F32\",\"shape\":[7,143],\"data_offsets\":[0,%zu]},"
             "\"b.f16\":{\"dtype\":\"F16\",\"shape\":[%d],\"data_offsets\":[%zu,%zu]},"
             "\"c.bf16\":{\"dtype\":\"BF16\",\"shape\":[1,%d,1],\"data_offsets\":[%zu,%zu]},"
             "\"d.f64\":{\"dtype\":\"F64\",\"shape\":[%d],\"data_offsets\":[%zu,%zu]},"
             "\"e.i8\":{\"dtype\":\"I8\",\"shape\":[5],\"data_offsets\":[%zu,%zu]},"
             "\"f.scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[%zu,%zu]},"
             "\"g.empty\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[%zu,%zu]}}",
             o1, N, o1, o2, N, o2, o3, N, o3, o4, o4, o5, o5, o6, o6, o6);
    size_t hl = strlen(header);
    while (hl % 8 != 1)
        header[hl++] = ' ';
    header[hl] = '\0';
    unsigned char *data = malloc(o6);
    memcpy(data, f32, 4 * N);
    memcpy(data + o1, f16, 2 * N);
    memcpy(data + o2, bf16, 2 * N);
    memcpy(data + o3, f64, 8 * N);
    memcpy(data + o4, i8, 5);
    float scalar = 3.5f;
    memcpy(data + o5, &scalar, 4);
    const char *path = tmp_path("conv.safetensors");
    write_raw(path, header, 0, data, o6);
    free(data);

    EgError err = {0};
    EgTensorFile *f = eg_tensors_open_file(path, &err);
    CHECK(f != NULL, "%s", err.msg);
    if (!f) return;
    CHECK(eg_tensors_count(f) == 7, "count %d", eg_tensors_count(f));
    /* Stable data order: a, b, c, d, e, f, g. */
    for (int i = 0; i < eg_tensors_count(f); i++)
        CHECK(eg_tensors_at(f, i)->name[0] == 'a' + i, "order %d: %s", i,
              eg_tensors_at(f, i)->name);

    const EgTensorView *a = eg_tensors_find(f, "a.f32"), *b = eg_tensors_find(f, "b.f16"),
                       *c = eg_tensors_find(f, "c.bf16"), *d = eg_tensors_find(f, "d.f64"),
                       *e = eg_tensors_find(f, "e.i8"), *s = eg_tensors_find(f, "f.scalar"),
                       *g = eg_tensors_find(f, "g.empty");
    NEED(a && b && c && d && e && s && g, "missing tensors");
    CHECK(a->ndim == 2 && a->shape[0] == 7 && a->shape[1] == 143 && a->numel == N, "a shape");
    CHECK(c->ndim == 3 && c->shape[1] == N && c->numel == N && c->nbytes == 2 * N, "c shape");
    CHECK(s->ndim == 0 && s->numel == 1 && s->nbytes == 4, "scalar");
    CHECK(g->ndim == 2 && g->numel == 0 && g->nbytes == 0, "empty");

    /* F32: exact copy to f32, and eg_f32_to_f16 per element to f16. */
    CHECK(eg_tensor_to_f32(a, back, &err) == 0, "%s", err.msg);
    CHECK(memcmp(back, f32, sizeof f32) == 0, "f32 -> f32 not exact");
    CHECK(eg_tensor_to_f16(a, h, &err) == 0, "%s", err.msg);
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += h[i] != eg_f32_to_f16(f32[i]);
    CHECK(bad == 0, "f32 -> f16: %d mismatches", bad);

    /* F16: exact copy to f16; to f32 is exact, so converting back must give the same bits. */
    CHECK(eg_tensor_to_f16(b, h, &err) == 0 && memcmp(h, f16, sizeof f16) == 0, "f16 -> f16");
    CHECK(eg_tensor_to_f32(b, back, &err) == 0, "%s", err.msg);
    CHECK(back[0] == 1.0f && back[1] == -2.0f && back[2] == 65504.0f &&
              back[3] == ldexpf(1.0f, -24),
          "f16 known values %g %g %g %g", back[0], back[1], back[2], back[3]);
    bad = 0;
    for (int i = 0; i < N; i++)
        bad += eg_f32_to_f16(back[i]) != f16[i];
    CHECK(bad == 0, "f16 -> f32 -> f16: %d mismatches", bad);

    /* BF16: the f32 value is the bits shifted up, independently of half.c. */
    CHECK(eg_tensor_to_f32(c, back, &err) == 0, "%s", err.msg);
    bad = 0;
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)bf16[i] << 16, got;
        memcpy(&got, &back[i], 4);
        bad += got != u;
    }
    CHECK(bad == 0, "bf16 -> f32: %d mismatches", bad);
    CHECK(eg_tensor_to_f16(c, h, &err) == 0, "%s", err.msg);
    bad = 0;
    for (int i = 0; i < N; i++)
        bad += h[i] != eg_f32_to_f16(back[i]);
    CHECK(bad == 0, "bf16 -> f16: %d mismatches", bad);

    /* F64 narrows like a C cast. */
    CHECK(eg_tensor_to_f32(d, back, &err) == 0, "%s", err.msg);
    bad = 0;
    for (int i = 0; i < N; i++)
        bad += back[i] != (float)f64[i];
    CHECK(bad == 0, "f64 -> f32: %d mismatches", bad);
    CHECK(eg_tensor_to_f16(d, h, &err) == 0 && h[5] == eg_f32_to_f16((float)f64[5]), "f64 -> f16");

    /* Ranges agree with the whole-tensor conversion, for every dtype. */
    const EgTensorView *fl[4] = {a, b, c, d};
    static float whole[N];
    static uint16_t whole16[N];
    for (int k = 0; k < 4; k++) {
        eg_tensor_to_f32(fl[k], whole, &err);
        eg_tensor_to_f16(fl[k], whole16, &err);
        for (int rep = 0; rep < 20; rep++) {
            int64_t first = (int64_t)(test_rng_u64() % N);
            int64_t count = (int64_t)(test_rng_u64() % (uint64_t)(N - first + 1));
            CHECK(eg_tensor_range_to_f32(fl[k], first, count, back, &err) == 0, "%s", err.msg);
            CHECK(eg_tensor_range_to_f16(fl[k], first, count, h, &err) == 0, "%s", err.msg);
            CHECK(memcmp(back, whole + first, (size_t)count * 4) == 0 &&
                      memcmp(h, whole16 + first, (size_t)count * 2) == 0,
                  "%s range [%lld, +%lld)", fl[k]->name, (long long)first, (long long)count);
        }
    }
    CHECK(eg_tensor_range_to_f32(a, N - 1, 2, back, &err) != 0 && strstr(err.msg, "a.f32"),
          "range past the end must fail: %s", err.msg);
    CHECK(eg_tensor_range_to_f16(a, -1, 1, h, &err) != 0, "negative first must fail");
    CHECK(eg_tensor_to_f32(s, back, &err) == 0 && back[0] == 3.5f, "scalar value");
    CHECK(eg_tensor_to_f32(g, back, &err) == 0, "empty tensor converts: %s", err.msg);

    int64_t iv[5];
    CHECK(eg_tensor_to_f32(e, back, &err) != 0 && strstr(err.msg, "e.i8") && strstr(err.msg, path),
          "I8 to f32 must fail naming tensor and file: %s", err.msg);
    CHECK(eg_tensor_to_f16(e, h, &err) != 0, "I8 to f16 must fail");
    CHECK(eg_tensor_to_i64(e, iv, &err) == 0 && iv[0] == -128 && iv[1] == -1 && iv[4] == 127,
          "i8 -> i64");
    CHECK(eg_tensor_to_i64(a, iv, &err) != 0, "F32 to i64 must fail");

    /* eg_tensors_expect: wrong shape names tensor, file, both shapes; missing names source. */
    CHECK(eg_tensors_expect(f, "a.f32", 2, (const int64_t[]){143, 7}, NULL, &err) != 0,
          "wrong shape accepted");
    CHECK(strstr(err.msg, "a.f32") && strstr(err.msg, path) && strstr(err.msg, "[7, 143]") &&
              strstr(err.msg, "[143, 7]"),
          "expect message: %s", err.msg);
    CHECK(eg_tensors_expect(f, "a.f32", 1, (const int64_t[]){N}, NULL, &err) != 0 &&
              strstr(err.msg, "[1001]"),
          "wrong ndim accepted: %s", err.msg);
    const EgTensorView *out = a;
    CHECK(eg_tensors_expect(f, "zz", 1, (const int64_t[]){1}, &out, &err) != 0 && out == NULL &&
              strstr(err.msg, "'zz'") && strstr(err.msg, path),
          "missing tensor: %s", err.msg);
    eg_tensors_close(f);
}

/* ---- sharded folder ---- */

static void test_sharded(void) {
    float x[6] = {1, 2, 3, 4, 5, 6};
    uint16_t y[4] = {0x3c00, 0x4000, 0x4200, 0x4400}; /* 1 2 3 4 */
    char dir[128];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    char p1[256], p2[256], pi[256];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(pi, sizeof pi, "%s/model.safetensors.index.json", dir);
    write_raw(p1,
              "{\"w.one\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
              "\"w.two\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[24,24]}}",
              0, x, sizeof x);
    write_raw(p2, "{\"w.three\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 0, y,
              sizeof y);
    const char *good = "{\"metadata\":{\"total_size\":32},\"weight_map\":{"
                       "\"w.one\":\"model-00001-of-00002.safetensors\","
                       "\"w.three\":\"model-00002-of-00002.safetensors\","
                       "\"w.two\":\"model-00001-of-00002.safetensors\"}}";
    write_text(pi, good);

    EgError err = {0};
    EgTensorFile *f = eg_tensors_open_dir(dir, &err);
    CHECK(f != NULL, "sharded: %s", err.msg);
    if (f) {
        CHECK(eg_tensors_count(f) == 3, "count %d", eg_tensors_count(f));
        const EgTensorView *t1 = eg_tensors_find(f, "w.one"), *t3 = eg_tensors_find(f, "w.three");
        CHECK(t1 && strcmp(t1->file, p1) == 0, "w.one in shard 1");
        CHECK(t3 && strcmp(t3->file, p2) == 0, "w.three in shard 2");
        float v[6];
        if (t1) CHECK(eg_tensor_to_f32(t1, v, &err) == 0 && v[5] == 6.0f, "shard 1 data");
        if (t3) CHECK(eg_tensor_to_f32(t3, v, &err) == 0 && v[3] == 4.0f, "shard 2 data");
        CHECK(strcmp(eg_tensors_source(f), dir) == 0, "source");
        CHECK(eg_tensors_expect(f, "nope", 1, (const int64_t[]){1}, NULL, &err) != 0 &&
                  strstr(err.msg, dir) && strstr(err.msg, "nope"),
              "missing names folder: %s", err.msg);
        eg_tensors_close(f);
    }

    static const struct {
        const char *index, *needle;
    } bad[] = {
        /* a shard that is not there */
        {"{\"weight_map\":{\"w.one\":\"model-00001-of-00002.safetensors\","
         "\"w.x\":\"model-00003-of-00003.safetensors\"}}",
         "model-00003-of-00003.safetensors"},
        /* the same tensor twice */
        {"{\"weight_map\":{\"w.one\":\"model-00001-of-00002.safetensors\","
         "\"w.one\":\"model-00001-of-00002.safetensors\"}}",
         "w.one"},
        /* listed in the wrong shard */
        {"{\"weight_map\":{\"w.one\":\"model-00002-of-00002.safetensors\"}}", "w.one"},
        /* listed but stored nowhere */
        {"{\"weight_map\":{\"w.one\":\"model-00001-of-00002.safetensors\","
         "\"w.four\":\"model-00002-of-00002.safetensors\"}}",
         "w.four"},
        {"{\"weight_map\":{\"w.one\":\"model-00001-of-00002.safetensors\",}", "JSON"},
        {"{\"weight_map\":[]}", "weight_map"},
        {"{\"weight_map\":{\"w.one\":7}}", "w.one"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(pi, bad[i].index);
        f = eg_tensors_open_dir(dir, &err);
        CHECK(f == NULL, "bad index %zu accepted", i);
        eg_tensors_close(f);
        CHECK(strstr(err.msg, pi) && strstr(err.msg, bad[i].needle), "bad index %zu: %s", i,
              err.msg);
    }
    /* A tensor stored in two shards is caught even if the index lists it once. */
    write_raw(p2,
              "{\"w.one\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
              "\"w.three\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]}}",
              0, (const unsigned char[32]){0}, 32);
    write_text(pi, good);
    f = eg_tensors_open_dir(dir, &err);
    CHECK(f == NULL && strstr(err.msg, "w.one") && strstr(err.msg, "twice"),
          "tensor in two shards: %s", err.msg);
    eg_tensors_close(f);

    unlink(p1);
    unlink(p2);
    unlink(pi);
    rmdir(dir);

    f = eg_tensors_open_dir(tmpdir, &err);
    CHECK(f == NULL && strstr(err.msg, tmpdir), "empty folder: %s", err.msg);
    eg_tensors_close(f);
}

/* ---- malformed files: one per rule ---- */

static void test_malformed(void) {
    unsigned char zeros[64] = {0};
    const char *ok = "{\"t.w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";

    write_raw(tmp_path("short.safetensors"), "", 0, NULL, 0); /* header length only... */
    FILE *fp = fopen(tmp_path("short.safetensors"), "wb");
    fwrite("abc", 1, 3, fp); /* ...then cut to 3 bytes */
    fclose(fp);
    expect_fail("short.safetensors", "shorter", NULL);

    write_raw(tmp_path("hlen.safetensors"), ok, 4096, zeros, 16);
    expect_fail("hlen.safetensors", "header length", NULL);
    write_raw(tmp_path("absurd.safetensors"), ok, (uint64_t)1 << 40, zeros, 16);
    expect_fail("absurd.safetensors", "header length", NULL);

    write_raw(tmp_path("json.safetensors"), "{\"t.w\":{\"dtype\":\"F32\",", 0, zeros, 16);
    expect_fail("json.safetensors", "JSON", NULL);
    write_raw(tmp_path("garbage.safetensors"), "{} x", 0, zeros, 16);
    expect_fail("garbage.safetensors", "JSON", NULL);
    write_raw(tmp_path("array.safetensors"), "[1, 2]", 0, zeros, 16);
    expect_fail("array.safetensors", "object", NULL);

    write_raw(tmp_path("dtype.safetensors"),
              "{\"t.w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 0, zeros,
              16);
    expect_fail("dtype.safetensors", "t.w", "F8_E4M3");
    write_raw(tmp_path("dtype2.safetensors"),
              "{\"t.w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 0, zeros, 16);
    expect_fail("dtype2.safetensors", "t.w", "dtype");
    write_raw(tmp_path("nooffs.safetensors"), "{\"t.w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0,
              zeros, 16);
    expect_fail("nooffs.safetensors", "t.w", "data_offsets");
    write_raw(tmp_path("noshape.safetensors"),
              "{\"t.w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 0, zeros, 16);
    expect_fail("noshape.safetensors", "t.w", "shape");
    write_raw(tmp_path("entry.safetensors"), "{\"t.w\":[1]}", 0, zeros, 16);
    expect_fail("entry.safetensors", "t.w", NULL);

    write_raw(tmp_path("neg.safetensors"),
              "{\"t.w\":{\"dtype\":\"F32\",\"shape\":[2,-2],\"data_offsets\":[0,16]}}", 0, zeros,
              16);
    expect_fail("neg.safetensors", "t.w", "shape");
    write_raw(tmp_path("frac.safetensors"),
              "{\"t.w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", 0, zeros,
              16);
    expect_fail("frac.safetensors", "t.w", "shape");
    write_raw(tmp_path("overflow.safetensors"),
              "{\"t.w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
              "\"data_offsets\":[0,16]}}",
              0, zeros, 16);
    expect_fail("overflow.safetensors", "t.w", "overflow");
    write_raw(tmp_path("dims.safetensors"),
              "{\"t.w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
              0, zeros, 16);
    expect_fail("dims.safetensors", "t.w", "dims");

    write_raw(tmp_path("mismatch.safetensors"),
              "{\"t.w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", 0, zeros,
              32);
    expect_fail("mismatch.safetensors", "t.w", "data_offsets");
    write_raw(tmp_path("reversed.safetensors"),
              "{\"t.w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]}}", 0, zeros, 32);
    expect_fail("reversed.safetensors", "t.w", "data_offsets");
    write_raw(tmp_path("offs3.safetensors"),
              "{\"t.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 0, zeros, 16);
    expect_fail("offs3.safetensors", "t.w", "data_offsets");

    /* Truncated: a good file with its data cut short. */
    write_raw(tmp_path("trunc.safetensors"), ok, 0, zeros, 10);
    expect_fail("trunc.safetensors", "t.w", "beyond");
    write_raw(tmp_path("beyond.safetensors"),
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"t.far\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1000,1008]}}",
              0, zeros, 64);
    expect_fail("beyond.safetensors", "t.far", "beyond");

    write_raw(tmp_path("overlap.safetensors"),
              "{\"t.a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"t.b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
              0, zeros, 16);
    expect_fail("overlap.safetensors", "t.a", "t.b");
    write_raw(tmp_path("dup.safetensors"),
              "{\"t.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"t.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
              0, zeros, 16);
    expect_fail("dup.safetensors", "t.a", "twice");

    expect_fail("does-not-exist.safetensors", NULL, NULL);

    /* Control: metadata only, and a good file, open fine. */
    write_raw(tmp_path("meta.safetensors"), "{\"__metadata__\":{\"a\":\"b\"}}", 0, NULL, 0);
    EgError err = {0};
    EgTensorFile *f = eg_tensors_open_file(tmp_path("meta.safetensors"), &err);
    CHECK(f && eg_tensors_count(f) == 0, "metadata-only file: %s", err.msg);
    eg_tensors_close(f);
    write_raw(tmp_path("ok.safetensors"), ok, 0, zeros, 16);
    f = eg_tensors_open_file(tmp_path("ok.safetensors"), &err);
    CHECK(f && eg_tensors_count(f) == 1, "good file: %s", err.msg);
    eg_tensors_close(f);
}

/* A generated tensor read in one large range (split across threads) holds what element-by-
 * element reads give, in fp16 and fp32, from an offset that splits no part evenly. */
static void test_generated(void) {
    EgError err = {0};
    EgTensorFile *f = eg_tensors_random(0x5EED, &err);
    const EgTensorView *t = NULL;
    int64_t shape[2] = {1000, 3001};
    CHECK(f && eg_tensors_expect(f, "model.layers.0.mlp.down_proj.weight", 2, shape, &t, &err) == 0,
          "a generated tensor: %s", err.msg);
    enum { FIRST = 777, COUNT = 3000001 - 777 };
    uint16_t *h = malloc(COUNT * sizeof *h);
    float *x = malloc(COUNT * sizeof *x);
    if (!t || !h || !x) {
        free(h);
        free(x);
        eg_tensors_close(f);
        return;
    }
    CHECK(eg_tensor_range_to_f16(t, FIRST, COUNT, h, &err) == 0, "%s", err.msg);
    CHECK(eg_tensor_range_to_f32(t, FIRST, COUNT, x, &err) == 0, "%s", err.msg);
    int bad16 = 0, bad32 = 0;
    for (int64_t i = 0; i < COUNT; i += 997) { /* and the last element */
        uint16_t h1;
        float x1;
        eg_tensor_range_to_f16(t, FIRST + i, 1, &h1, &err);
        eg_tensor_range_to_f32(t, FIRST + i, 1, &x1, &err);
        bad16 += h1 != h[i];
        bad32 += x1 != x[i];
    }
    uint16_t hl;
    eg_tensor_range_to_f16(t, FIRST + COUNT - 1, 1, &hl, &err);
    CHECK(bad16 == 0 && bad32 == 0 && hl == h[COUNT - 1],
          "a large generated range differs from single reads: %d fp16, %d fp32", bad16, bad32);
    float lo = x[0], hi = x[0];
    for (int64_t i = 0; i < COUNT; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    CHECK(lo < -0.019f && hi > 0.019f && lo >= -0.02f && hi <= 0.02f,
          "generated weights span [%g, %g], not about +-0.02", lo, hi);
    free(h);
    free(x);
    eg_tensors_close(f);
}

int main(void) {
    test_rng_init();
    CHECK(eg_dtype_size(EG_DT_BF16) == 2 && eg_dtype_size(EG_DT_I64) == 8 &&
              eg_dtype_size(EG_DT_BOOL) == 1 && strcmp(eg_dtype_name(EG_DT_BF16), "BF16") == 0 &&
              strcmp(eg_dtype_name(EG_DT_F64), "F64") == 0,
          "dtype table");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/egret-st-XXXXXX");
    const char *made = mkdtemp(tmpdir); /* not inside REQUIRE: it evaluates twice */
    REQUIRE(made != NULL, "mkdtemp");

    test_real_files();
    test_memory();
    test_conversions();
    test_sharded();
    test_malformed();
    test_generated();

    for (int i = 0; i < n_created; i++)
        unlink(created[i]);
    CHECK(rmdir(tmpdir) == 0, "temp dir %s left non-empty", tmpdir);
    return test_finish();
}
