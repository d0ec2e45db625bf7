/* Warm start (tools/serve_warmup.c): once eg_serve_warmup has run, a varied set of requests
 * through a server dispatches no pipeline for the first time. A pipeline's first dispatch is
 * when lavapipe compiles its shader (what a first request paid: seconds), so "the count stays
 * constant while serving" is "no request pays a compile", whatever the machine's timing.
 *
 * The requests are random each run: 0 to 4 images (new ones and repeated ones: cache misses and
 * hits), few-shot examples, prompts of 1 to 60 words (over the 24-token prefill chunk set here),
 * prompts that repeat an earlier one (prefix cache), unary and streamed, greedy and sampled,
 * sent by 6 clients at once to a server decoding up to 4 together. */
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "tools/serve_warmup.h"

enum { CLIENTS = 6, PER_CLIENT = 5, MAX_BATCH = 4, PREFILL_CHUNK = 24, POOL = 6 };

static const char *g_addr;
static TestPng g_pool[POOL]; /* images sent more than once: cache hits */
static const char WORDS[] =
    "a red circle and a blue square sit above a green triangle near the left edge while a "
    "small yellow star hides below two large purple hexagons in the right corner of a white "
    "picture with thin black lines crossing a grey background from top to bottom and one more "
    "orange circle";

typedef struct Client {
    uint64_t seed;
    int failures;
    char what[600];
} Client;

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The first n words of WORDS. */
static EgRequestPart words_part(uint32_t n) {
    size_t len = 0;
    for (uint32_t w = 0; w < n && len < sizeof WORDS - 1; w++) {
        while (len < sizeof WORDS - 1 && WORDS[len] != ' ')
            len++;
        if (w + 1 < n && len < sizeof WORDS - 1) len++;
    }
    return (EgRequestPart){.text = WORDS, .text_len = len};
}

static void *client_main(void *arg) {
    Client *cl = arg;
    EgError err = {0};
    EgClient *c = eg_client_connect(g_addr, NULL, &err);
    if (!c) {
        cl->failures++;
        snprintf(cl->what, sizeof cl->what, "connect: %s", err.msg);
        return NULL;
    }
    for (int r = 0; r < PER_CLIENT; r++) {
        uint64_t *s = &cl->seed;
        EgRequest req = test_greedy_request(1 + (uint32_t)(next_rand(s) % 8));
        if (next_rand(s) % 3 == 0) {
            req.gen.sampling.temperature = 0.8f;
            req.gen.sampling.seed = next_rand(s);
        }
        EgRequestPart parts[6];
        EgRequestExample ex[2];
        TestPng fresh[4] = {{0}};
        size_t n = 0;
        uint32_t n_images = (uint32_t)(next_rand(s) % 5);
        if (next_rand(s) % 4 == 0) { /* few-shot: examples and one query image */
            uint32_t n_ex = 1 + (uint32_t)(next_rand(s) % 2);
            for (uint32_t i = 0; i < n_ex; i++) {
                const TestPng *p = &g_pool[next_rand(s) % POOL];
                EgRequestPart t = words_part(2 + (uint32_t)(next_rand(s) % 6));
                ex[i] = (EgRequestExample){p->bytes, p->len, t.text, t.text_len};
            }
            req.examples = ex;
            req.n_examples = n_ex;
            n_images = 1;
        }
        for (uint32_t i = 0; i < n_images; i++) {
            const TestPng *p = &g_pool[next_rand(s) % POOL];
            if (next_rand(s) % 2) {
                fresh[i] = test_shapes_png(next_rand(s), 0);
                p = &fresh[i];
            }
            parts[n++] = (EgRequestPart){.is_image = 1, .image = p->bytes, .image_len = p->len};
        }
        parts[n++] = words_part(1 + (uint32_t)(next_rand(s) % 60));
        req.parts = parts;
        req.n_parts = n;
        EgClientAnswer a = {0};
        EgCallStatus st = {0};
        int stream = (int)(next_rand(s) % 2);
        int rc = eg_client_generate(c, &req, stream, 120, NULL, NULL, &a, &st, &err);
        if (rc || st.code != GRPC_STATUS_OK) {
            cl->failures++;
            snprintf(cl->what, sizeof cl->what, "request %d: %s", r, rc ? err.msg : st.message);
        }
        eg_client_answer_free(&a);
        for (uint32_t i = 0; i < 4; i++)
            free(fresh[i].bytes);
    }
    eg_client_close(c);
    return NULL;
}

static uint64_t first_used(EgEngine *e) {
    EgEngineStats st;
    eg_engine_stats(e, &st);
    return st.pipelines_first_used;
}

int main(void) {
    test_rng_init();
    EgError err = {0};
    EgEngineOptions opt = {.prefill_chunk = PREFILL_CHUNK};
    opt.limits.max_images = 6;
    EgEngine *engine = eg_engine_open(test_model_path("shapes-idefics"), &opt, &err);
    REQUIRE(engine != NULL, "open: %s", err.msg);
    for (int i = 0; i < POOL; i++) {
        g_pool[i] = test_shapes_png(test_rng_u64(), 0);
        REQUIRE(g_pool[i].bytes != NULL, "draw");
    }

    EgWarmupReport wr;
    uint64_t before = first_used(engine);
    REQUIRE(eg_serve_warmup(engine, MAX_BATCH, &wr, &err) == 0, "warm-up: %s", err.msg);
    uint64_t warm = first_used(engine);
    printf("warm-up: %u requests, %llu pipelines first dispatched, %.2f s\n", wr.requests,
           (unsigned long long)wr.pipelines, wr.seconds);
    CHECK(wr.pipelines == warm - before && warm > before, "report %llu, counted %llu",
          (unsigned long long)wr.pipelines, (unsigned long long)(warm - before));
    /* the warm-up is not traffic: its images and prompts are neither cached nor counted */
    EgEngineStats st;
    eg_engine_stats(engine, &st);
    CHECK(st.images_decoded == 0 && st.image_cache_hits == 0 && st.image_cache_misses == 0 &&
              st.image_cache_entries == 0 && st.image_cache_bytes == 0 &&
              st.prefix_cache_hits == 0 && st.prefix_cache_misses == 0 &&
              st.prefix_cache_entries == 0 && st.prefix_cache_bytes == 0,
          "after the warm-up: %llu images decoded, image cache %llu/%llu/%llu entries, prefix "
          "cache %llu/%llu/%llu entries",
          (unsigned long long)st.images_decoded, (unsigned long long)st.image_cache_hits,
          (unsigned long long)st.image_cache_misses, (unsigned long long)st.image_cache_entries,
          (unsigned long long)st.prefix_cache_hits, (unsigned long long)st.prefix_cache_misses,
          (unsigned long long)st.prefix_cache_entries);

    TestServer ts;
    EgServerOptions so = {.max_batch = MAX_BATCH};
    REQUIRE(test_server_start(&ts, engine, so, "warmup") == 0, "server");
    g_addr = ts.addr;
    Client cl[CLIENTS];
    pthread_t th[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        cl[i] = (Client){.seed = test_rng_u64() | 1};
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        CHECK(cl[i].failures == 0, "client %d: %d failed, last %s", i, cl[i].failures, cl[i].what);
    }
    uint64_t served = first_used(engine);
    CHECK(served == warm,
          "%llu pipelines were dispatched for the first time by requests after the warm-up (a "
          "compile each on lavapipe): the warm-up misses a shape of request",
          (unsigned long long)(served - warm));
    free(test_server_stop(&ts));

    /* a server with tight limits still warms up: shapes no request could take are skipped,
     * not fatal */
    EgEngineLimits tight = {.context_length = 12, .max_images = 2};
    eg_engine_set_limits(engine, &tight);
    CHECK(eg_serve_warmup(engine, MAX_BATCH, &wr, &err) == 0, "warm-up with tight limits: %s",
          err.msg);
    for (int i = 0; i < POOL; i++)
        free(g_pool[i].bytes);
    eg_engine_close(engine);
    return test_finish();
}
