#include "test_util.h"

#include "runtime/hash.h"
#include "tools/grpc_client.h"
#include "tools/shapes_world.h"

#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int test_checks_passed;
int test_checks_failed;

int test_finish(void) {
    printf("%d passed, %d failed\n", test_checks_passed, test_checks_failed);
    return test_checks_failed ? 1 : 0;
}

static const char *join_env(const char *env, const char *fallback, const char *relative) {
    static char path[4096];
    const char *root = getenv(env);
    snprintf(path, sizeof path, "%s/%s", root && *root ? root : fallback, relative);
    return path;
}

const char *test_data_path(const char *relative) {
    return join_env("EGRET_TEST_DATA", "tests/data", relative);
}

const char *test_model_path(const char *relative) {
    return join_env("EGRET_MODELS", "models", relative);
}

const char *test_egret_binary(void) {
    static char path[PATH_MAX];
    const char *env = getenv("EGRET_BIN");
    if (env && *env) {
        snprintf(path, sizeof path, "%s", env);
        return path;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';
    snprintf(path, sizeof path, "%s/egret", dirname(self));
    return path;
}

unsigned char *test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf && len) *len = (size_t)n;
    return buf;
}

int test_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, n, f) == n;
    if (f && fclose(f)) ok = 0;
    return ok ? 0 : -1;
}

void test_remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            test_remove_tree(p);
        else
            unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static uint64_t rng_state;

void test_rng_init(void) {
    const char *s = getenv("EGRET_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)clock();
    printf("EGRET_TEST_SEED=%llu\n", (unsigned long long)seed);
    rng_state = seed;
}

uint64_t test_rng_u64(void) {
    return eg_splitmix64_next(&rng_state);
}

float test_rng_uniform(float lo, float hi) {
    return lo + (hi - lo) * (float)((test_rng_u64() >> 40) * (1.0 / 16777216.0));
}

float test_rng_normal(void) {
    double u1 = ((test_rng_u64() >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (test_rng_u64() >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void *serve_thread(void *arg) {
    eg_server_run(arg);
    return NULL;
}

int test_server_start(TestServer *t, EgEngine *engine, EgServerOptions opt, const char *name) {
    snprintf(t->addr, sizeof t->addr, "unix:/tmp/egret-test-%d-%s.sock", (int)getpid(), name);
    t->log = tmpfile();
    opt.listen = t->addr;
    opt.log = t->log;
    EgError err = {0};
    t->server = t->log ? eg_server_start(engine, &opt, &err) : NULL;
    CHECK(t->server != NULL, "start %s: %s", name, err.msg);
    if (!t->server) return -1;
    pthread_create(&t->thread, NULL, serve_thread, t->server);
    return 0;
}

char *test_server_stop(TestServer *t) {
    eg_server_drain(t->server);
    pthread_join(t->thread, NULL);
    eg_server_free(t->server);
    long n = ftell(t->log);
    char *text = calloc((size_t)n + 1, 1);
    rewind(t->log);
    if (text && fread(text, 1, (size_t)n, t->log) != (size_t)n) text[0] = '\0';
    fclose(t->log);
    unlink(t->addr + 5);
    return text;
}

TestPng test_shapes_png(uint64_t seed, int n_objects) {
    EgShapesScene scene;
    TestPng p = {0};
    EgError err = {0};
    eg_shapes_scene_from_seed(seed, n_objects, &scene);
    CHECK(eg_shapes_render_png(&scene, &p.bytes, &p.len, &err) == 0, "png: %s", err.msg);
    return p;
}

/* The standard luminance Huffman tables (JPEG spec K.3): DC and AC. */
static const uint8_t DC_COUNTS[16] = {0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
static const uint8_t AC_COUNTS[16] = {0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d};
static const uint8_t AC_SYMBOLS[162] = {
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
    0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52,
    0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
    0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
    0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
    0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
    0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
    0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
    0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3,
    0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8,
    0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa};

/* Appends a marker segment (marker, 16-bit length, body) at *at. */
static void jpeg_segment(uint8_t *out, size_t *at, uint8_t marker, const uint8_t *body, size_t n) {
    out[(*at)++] = 0xFF;
    out[(*at)++] = marker;
    out[(*at)++] = (uint8_t)((n + 2) >> 8);
    out[(*at)++] = (uint8_t)(n + 2);
    memcpy(out + *at, body, n);
    *at += n;
}

TestPng test_jpeg_declaring(uint32_t width, uint32_t height, uint64_t seed) {
    enum { SCAN_BYTES = 1000 };
    TestPng p = {malloc(2048), 0};
    if (!p.bytes) return p;
    uint8_t *o = p.bytes, body[1 + 16 + 162 + 1 + 16 + 12];
    size_t at = 0;
    o[at++] = 0xFF;
    o[at++] = 0xD8;
    body[0] = 0; /* quantization table 0: the seed varies it, so the bytes are new */
    for (int i = 0; i < 64; i++)
        body[1 + i] = (uint8_t)(1 + (seed >> (i % 64)) % 7);
    jpeg_segment(o, &at, 0xDB, body, 65);
    /* 8 bits, the size, 3 components sampled 1x1 with quantization table 0 */
    uint8_t sof[15] = {8, 0, 0, 0, 0, 3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0};
    sof[1] = (uint8_t)(height >> 8);
    sof[2] = (uint8_t)height;
    sof[3] = (uint8_t)(width >> 8);
    sof[4] = (uint8_t)width;
    jpeg_segment(o, &at, 0xC0, sof, sizeof sof);
    size_t n = 0;
    body[n++] = 0x00; /* DC table 0 */
    memcpy(body + n, DC_COUNTS, 16);
    n += 16;
    for (uint8_t v = 0; v < 12; v++)
        body[n++] = v;
    body[n++] = 0x10; /* AC table 0 */
    memcpy(body + n, AC_COUNTS, 16);
    n += 16;
    memcpy(body + n, AC_SYMBOLS, sizeof AC_SYMBOLS);
    n += sizeof AC_SYMBOLS;
    jpeg_segment(o, &at, 0xC4, body, n);
    const uint8_t sos[10] = {3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0};
    jpeg_segment(o, &at, 0xDA, sos, sizeof sos);
    memset(o + at, 0, SCAN_BYTES); /* zero bits decode as valid blocks, also past the end */
    at += SCAN_BYTES;
    o[at++] = 0xFF;
    o[at++] = 0xD9;
    p.len = at;
    return p;
}

static int got_stats(void *user, const uint8_t *data, size_t len) {
    *(Egret__V1__ServerStats **)user = egret__v1__server_stats__unpack(NULL, len, data);
    return 0;
}

grpc_status_code test_call(const char *addr, const EgClientOptions *copt, const char *method,
                           const uint8_t *body, size_t len, double timeout_s, EgClientReplyFn fn,
                           void *user, char *msg, size_t cap) {
    EgError err = {0};
    EgCallStatus st = {0};
    EgClient *c = eg_client_connect(addr, copt, &err);
    int rc = c ? eg_client_call(c, method, body, len, timeout_s, fn, user, &st, &err) : -1;
    eg_client_close(c);
    CHECK(rc == 0, "%s: %s", method, err.msg);
    if (msg) snprintf(msg, cap, "%s", rc ? err.msg : st.message);
    return rc ? GRPC_STATUS_UNKNOWN : st.code;
}

Egret__V1__ServerStats *test_server_stats(const char *addr) {
    Egret__V1__ServerStats *stats = NULL;
    char msg[512];
    grpc_status_code code = test_call(addr, NULL, "/egret.v1.Egret/GetStats", NULL, 0, 30,
                                      got_stats, &stats, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_OK && stats, "GetStats: status %d: %s", (int)code, msg);
    if (code != GRPC_STATUS_OK) {
        if (stats) egret__v1__server_stats__free_unpacked(stats, NULL);
        return NULL;
    }
    return stats;
}

void test_wait_for_engine(const char *addr, uint32_t running, uint32_t queued) {
    for (int tries = 0; tries < 1200; tries++) {
        Egret__V1__ServerStats *now = test_server_stats(addr);
        int ready = now && now->running == running && now->queued == queued;
        if (now) egret__v1__server_stats__free_unpacked(now, NULL);
        if (ready) return;
        usleep(50 * 1000);
    }
    CHECK(0, "the engine never had %u running and %u queued", running, queued);
}

EgRequest test_greedy_request(uint32_t max_new_tokens) {
    EgRequest q = {.gen = {.max_new_tokens = max_new_tokens}};
    eg_sampling_params_default(&q.gen.sampling);
    return q;
}

EgRequestPart test_text_part(const char *t) {
    return (EgRequestPart){.text = t, .text_len = strlen(t)};
}

/* ---- Goldens */

float *test_tensor_f32(EgTensorFile *g, const char *name, size_t *n, const EgTensorView **view) {
    const EgTensorView *t = eg_tensors_find(g, name);
    if (!t) return NULL;
    float *out = malloc((size_t)t->numel * sizeof *out);
    EgError err;
    if (!out || eg_tensor_to_f32(t, out, &err)) {
        free(out);
        return NULL;
    }
    if (n) *n = (size_t)t->numel;
    if (view) *view = t;
    return out;
}

int64_t *test_tensor_i64(EgTensorFile *g, const char *name, size_t *n, const EgTensorView **view) {
    const EgTensorView *t = eg_tensors_find(g, name);
    if (!t) return NULL;
    int64_t *out = malloc((size_t)t->numel * sizeof *out);
    EgError err;
    if (!out || eg_tensor_to_i64(t, out, &err)) {
        free(out);
        return NULL;
    }
    if (n) *n = (size_t)t->numel;
    if (view) *view = t;
    return out;
}

void test_check_close(const char *what, int fp32, const float *out, const float *ref, size_t n) {
    double dmax = 0, rmax = 0, num = 0, den = 0;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)out[i] - ref[i]);
        finite &= isfinite(out[i]) != 0;
        if (d > dmax) dmax = d;
        if (fabs(ref[i]) > rmax) rmax = fabs(ref[i]);
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    double rel_max = dmax / (rmax > 0 ? rmax : 1), rel_l2 = sqrt(num / (den > 0 ? den : 1));
    double tol = fp32 ? 1e-4 : 1e-2;
    const char *precision = fp32 ? "fp32" : "fp16";
    printf("  %s %s: max-relative error %.3g, L2-relative %.3g (limit %.0e)\n", precision, what,
           rel_max, rel_l2, tol);
    CHECK(finite && rel_max <= tol && rel_l2 <= tol,
          "%s %s: relative error max %.3g / L2 %.3g > %.0e%s", precision, what, rel_max, rel_l2,
          tol, finite ? "" : " (non-finite output)");
}

int32_t test_argmax(const float *v, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return (int32_t)best;
}
