/* Minimal test harness shared by every test executable: CHECK records a failure and goes on,
 * test_finish prints "N passed, N failed" and gives the exit code. */
#ifndef EGRET_TEST_UTIL_H
#define EGRET_TEST_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "egret/v1/egret.pb-c.h"
#include "runtime/safetensors.h"
#include "server/grpc_server.h"
#include "tools/grpc_client.h"

extern int test_checks_passed;
extern int test_checks_failed;

#define CHECK(cond, ...) TEST_CHECK_VALUE((cond) ? 1 : 0, #cond, __VA_ARGS__)

/* Stops the test at once (for failures that make the rest meaningless). cond is evaluated
 * once: it may be the call under test. */
#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        int require_ok_ = (cond) ? 1 : 0;                                                          \
        TEST_CHECK_VALUE(require_ok_, #cond, __VA_ARGS__);                                         \
        if (!require_ok_) return test_finish();                                                    \
    } while (0)

/* For a setup step whose failure makes the rest of the test meaningless, outside main: records
 * the failure and ends the test with its summary. */
#define MUST(cond, ...)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            CHECK(0, __VA_ARGS__);                                                                 \
            exit(test_finish());                                                                   \
        }                                                                                          \
    } while (0)

#define TEST_CHECK_VALUE(ok, text, ...)                                                            \
    do {                                                                                           \
        if (ok) {                                                                                  \
            test_checks_passed++;                                                                  \
        } else {                                                                                   \
            test_checks_failed++;                                                                  \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, text);                \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* A shapes-world scene drawn from seed (n_objects: 0 for a random count) as PNG bytes
 * (malloc'd; NULL, with a failed check, if rendering fails): an image no cache has seen. */
typedef struct TestPng {
    uint8_t *bytes;
    size_t len;
} TestPng;
TestPng test_shapes_png(uint64_t seed, int n_objects);

/* A baseline JPEG of about 1.3 KB that declares width x height (each below 65536): headers,
 * a short scan of zero bytes and the end marker. It decodes (stb_image reads zeros past the
 * data) at the full cost of its declared size: a decompression bomb within the limits. seed
 * varies the bytes (so no cache has seen them). In a TestPng, which holds any encoded bytes. */
TestPng test_jpeg_declaring(uint32_t width, uint32_t height, uint64_t seed);

/* Prints the summary line and returns the process exit code. */
int test_finish(void);

/* Path of a file under tests/data (EGRET_TEST_DATA, else ./tests/data). Static buffer. */
const char *test_data_path(const char *relative);

/* Path of a file under models/ (EGRET_MODELS, else ./models). Static buffer. */
const char *test_model_path(const char *relative);
/* The egret executable: $EGRET_BIN, else the one next to this test's (both are built in
 * build/). */
const char *test_egret_binary(void);

/* Reads a whole file; returns NULL on failure. The caller frees. */
unsigned char *test_read_file(const char *path, size_t *len);
/* Writes n bytes to path: 0, or -1 when it cannot. */
int test_write_file(const char *path, const void *data, size_t n);
/* Removes dir and everything under it (a test's temporary folder). */
void test_remove_tree(const char *dir);

/* Deterministic per-run random numbers: seeded from EGRET_TEST_SEED if set, else from the clock
 * (printed, so a failure can be replayed). */
void test_rng_init(void);
uint64_t test_rng_u64(void);
float test_rng_uniform(float lo, float hi);
float test_rng_normal(void);

/* ---- Goldens (the golden.safetensors files under tests/data) */

/* A tensor of a golden file as float32 / int64 (malloc'd; NULL when absent or unreadable).
 * n, when given, gets its element count; view its header (shape). */
float *test_tensor_f32(EgTensorFile *g, const char *name, size_t *n, const EgTensorView **view);
int64_t *test_tensor_i64(EgTensorFile *g, const char *name, size_t *n, const EgTensorView **view);

/* out against the reference: max|out − ref| / max|ref| and ||out − ref|| / ||ref||, each within
 * 1e-4 (fp32) or 1e-2 (fp16); a NaN or infinity in out fails. Prints both figures under `what`. */
void test_check_close(const char *what, int fp32, const float *out, const float *ref, size_t n);

/* The first index of the largest value: HF's greedy choice. */
int32_t test_argmax(const float *v, size_t n);

/* An in-process gRPC server on a unix socket, run on its own thread, logging to a temporary
 * file. test_server_start returns 0 (or -1 after a failed CHECK); test_server_stop drains it,
 * frees it and returns its log (malloc'd). */
typedef struct TestServer {
    EgServer *server;
    pthread_t thread;
    char addr[128]; /* "unix:/tmp/egret-test-PID-NAME.sock" */
    FILE *log;
} TestServer;
int test_server_start(TestServer *t, EgEngine *engine, EgServerOptions opt, const char *name);
char *test_server_stop(TestServer *t);

/* Calls `method` on the server at addr with one request body (copt: NULL, or client options such
 * as an API key) and reads every reply through fn. Returns the call's status, its message in msg
 * (cap bytes; msg may be NULL); GRPC_STATUS_UNKNOWN after a failed CHECK when the call could not
 * be made at all. */
grpc_status_code test_call(const char *addr, const EgClientOptions *copt, const char *method,
                           const uint8_t *body, size_t len, double timeout_s, EgClientReplyFn fn,
                           void *user, char *msg, size_t cap);

/* GetStats from the server at addr (no API key), or NULL after a failed CHECK. The caller frees
 * it with egret__v1__server_stats__free_unpacked. */
Egret__V1__ServerStats *test_server_stats(const char *addr);
/* Polls GetStats (for up to 60 s) until the engine has this many running and queued jobs; a
 * failed CHECK if it never does. */
void test_wait_for_engine(const char *addr, uint32_t running, uint32_t queued);

/* A greedy request with default sampling settings and no parts yet. */
EgRequest test_greedy_request(uint32_t max_new_tokens);
/* A text part pointing at t (NUL-terminated). */
EgRequestPart test_text_part(const char *t);

#endif
