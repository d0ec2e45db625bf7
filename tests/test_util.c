#include "test_util.h"

#include "runtime/hash.h"
#include "tools/shapes_world.h"

#include <math.h>
#include <stdlib.h>
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
