/* The bounded load test against an in-process server on a unix socket with the
 * demo model: 32 clients for 60 s (EGRET_LOAD_SECONDS overrides, for local runs) send a seeded mix
 * of valid streaming and unary requests, bad requests, cancellations and short deadlines
 * (tools/grpc_loadtest.h). Every call must end as its kind allows, with no failure; each kind
 * must have been answered its way at least once; GetStats must come back to its baseline (nothing
 * in flight, queued or running; device memory outside the image and prefix caches exactly, host
 * memory within the slack); and the server must drain promptly afterwards.
 *
 * The server's queue is 24 deep, below the 32 clients, so overload (RESOURCE_EXHAUSTED "queue is
 * full", after which a client backs off 20-100 ms) is part of the mix. The seed comes from
 * EGRET_TEST_SEED when set (printed either way). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/clock.h"
#include "test_util.h"
#include "tools/grpc_loadtest.h"

/* The allowed growth of the resident set (see grpc_loadtest.c). Under AddressSanitizer freed
 * memory sits in its quarantine (256 MiB by default) before it is reused, so the resident set
 * says little there; LeakSanitizer checks for leaks directly at exit instead. */
#if defined(__SANITIZE_ADDRESS__)
#define HOST_SLACK (256ull << 20)
#else
#define HOST_SLACK (64ull << 20)
#endif

typedef struct Stopper {
    TestServer *t;
    char *log;
    double seconds;
} Stopper;

static void *stop_server(void *arg) {
    Stopper *s = arg;
    double t0 = eg_now_s();
    s->log = test_server_stop(s->t);
    s->seconds = eg_now_s() - t0;
    return NULL;
}

/* Whether a kind was answered the way it exists to test. */
static int answered_its_way(const EgLoadtestReport *r, EgLoadKind k) {
    const uint64_t *o = r->outcomes[k];
    switch (k) {
    case EG_LOAD_CANCEL:
        return o[EG_LOAD_CANCELLED] > 0;
    case EG_LOAD_DEADLINE:
        return o[EG_LOAD_EXPIRED] > 0;
    case EG_LOAD_CAPTION:
    case EG_LOAD_FEW_SHOT:
    case EG_LOAD_RAW:
    case EG_LOAD_UNARY:
        return o[EG_LOAD_OK] > 0;
    default:
        return o[EG_LOAD_REJECTED] > 0;
    }
}

/* The resident set's growth, less the caches' where device memory is host memory. */
static void host_memory_growth_counts_caches_on_cpu_devices(void) {
    const uint64_t MiB = 1u << 20;
    EgLoadtestServerStats b = {.host_memory_bytes = 300 * MiB, .image_cache_bytes = 3 * MiB};
    EgLoadtestServerStats a = {.host_memory_bytes = 400 * MiB,
                               .image_cache_bytes = 33 * MiB,
                               .prefix_cache_bytes = 20 * MiB};
    CHECK(eg_loadtest_host_memory_growth(&b, &a) == 100 * MiB,
          "a GPU's caches are not in the resident set: growth %llu",
          (unsigned long long)eg_loadtest_host_memory_growth(&b, &a));
    b.device_memory_is_host = a.device_memory_is_host = 1;
    CHECK(eg_loadtest_host_memory_growth(&b, &a) == 50 * MiB,
          "a CPU device's caches grew by 50 MiB of the 100: growth %llu",
          (unsigned long long)eg_loadtest_host_memory_growth(&b, &a));
    a.host_memory_bytes = 320 * MiB; /* less than the caches' growth explains */
    CHECK(eg_loadtest_host_memory_growth(&b, &a) == 0, "negative growth is none: %llu",
          (unsigned long long)eg_loadtest_host_memory_growth(&b, &a));
    a.image_cache_bytes = 0; /* the caches shrank: nothing to take off */
    a.prefix_cache_bytes = 0;
    CHECK(eg_loadtest_host_memory_growth(&b, &a) == 20 * MiB, "shrunk caches: growth %llu",
          (unsigned long long)eg_loadtest_host_memory_growth(&b, &a));
}

int main(void) {
    host_memory_growth_counts_caches_on_cpu_devices();
    test_rng_init();
    uint64_t seed = test_rng_u64();
    const char *env = getenv("EGRET_LOAD_SECONDS");
    double seconds = env && *env ? strtod(env, NULL) : 60.0;
    if (!(seconds > 0)) seconds = 60.0;
    printf("load: 32 clients, %.0f s, seed %llu\n", seconds, (unsigned long long)seed);

    EgError err = {0};
    EgEngine *engine = eg_engine_open(test_model_path("shapes-idefics"), NULL, &err);
    REQUIRE(engine != NULL, "open: %s", err.msg);
    TestServer t;
    REQUIRE(test_server_start(&t, engine, (EgServerOptions){.max_queue = 24}, "load") == 0,
            "server");

    /* The call timeout (a call without a deadline of its own that reaches it is a hang) is
     * generous: a call may wait behind 24 queued requests of up to ~1 s each in the plain build,
     * several times that under ASan with the validation layer on. */
    EgLoadtestOptions o = {.target = t.addr,
                           .clients = 32,
                           .duration_s = seconds,
                           .seed = seed,
                           .call_timeout_s = 240,
                           .host_memory_slack_bytes = HOST_SLACK,
                           .progress = stdout};
    EgLoadtestReport *r = calloc(1, sizeof *r);
    REQUIRE(r != NULL, "out of memory");
    int rc = eg_loadtest_run(&o, r, &err);
    CHECK(rc == 0, "the load test did not run: %s", err.msg);
    if (rc == 0) {
        eg_loadtest_print(r, stdout);
        CHECK(r->failures == 0, "%llu calls or checks failed (listed above)",
              (unsigned long long)r->failures);
        CHECK(r->by_outcome[EG_LOAD_FAILED] == 0, "%llu calls failed",
              (unsigned long long)r->by_outcome[EG_LOAD_FAILED]);
        /* Every kind had its chance: checked on runs long enough for the rarest (4%) to come up
         * through a queue that answers a few requests a second. */
        if (seconds >= 30)
            for (int k = 0; k < EG_LOAD_N_KINDS; k++)
                CHECK(answered_its_way(r, (EgLoadKind)k), "no %s request was answered its way",
                      eg_loadtest_kind_name((EgLoadKind)k));
        const EgLoadtestServerStats *b = &r->before, *a = &r->after;
        CHECK(a->in_flight == 0 && a->queued == 0 && a->running == 0,
              "after the load: %u in flight, %u queued, %u running", a->in_flight, a->queued,
              a->running);
        /* What the image and prefix caches keep varies with traffic (within their bounds);
         * everything else returns to the baseline exactly. */
        CHECK(eg_loadtest_device_memory_held(a) == eg_loadtest_device_memory_held(b),
              "device memory outside the caches %llu after the load, %llu before",
              (unsigned long long)eg_loadtest_device_memory_held(a),
              (unsigned long long)eg_loadtest_device_memory_held(b));
        CHECK(a->image_cache_hits > b->image_cache_hits &&
                  a->image_cache_misses > b->image_cache_misses,
              "the load should both hit and miss the image cache: %llu hits, %llu misses",
              (unsigned long long)(a->image_cache_hits - b->image_cache_hits),
              (unsigned long long)(a->image_cache_misses - b->image_cache_misses));
        /* On a CPU device the caches' memory is host memory: their growth is not a leak. */
        CHECK(eg_loadtest_host_memory_growth(b, a) <= HOST_SLACK,
              "host memory %llu after the load, %llu before (caches %llu, %llu before)",
              (unsigned long long)a->host_memory_bytes, (unsigned long long)b->host_memory_bytes,
              (unsigned long long)(a->image_cache_bytes + a->prefix_cache_bytes),
              (unsigned long long)(b->image_cache_bytes + b->prefix_cache_bytes));
        CHECK(a->requests_failed == b->requests_failed, "%llu engine failures",
              (unsigned long long)(a->requests_failed - b->requests_failed));
    }
    free(r);

    /* The drain completes: nothing is left in flight, so it should be quick; a hang fails here
     * instead of running into the ctest timeout. */
    Stopper s = {.t = &t};
    pthread_t th;
    pthread_create(&th, NULL, stop_server, &s);
    struct timespec limit;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += 60;
    int joined = pthread_timedjoin_np(th, NULL, &limit);
    REQUIRE(joined == 0, "the server did not drain within 60 s (%s)", strerror(joined));
    CHECK(s.seconds < 10, "the drain took %.1f s", s.seconds);
    CHECK(s.log && strstr(s.log, "drained"), "drain log: %s", s.log ? s.log : "(none)");
    printf("drained in %.2f s\n", s.seconds);
    free(s.log);
    eg_engine_close(engine);
    return test_finish();
}
