/* The image cache and the prefix cache change nothing but speed: a sequence of requests that
 * repeat images and prompt starts (few-shot examples in front of new queries, the same request
 * twice, an image swapped under the same tokens) gets exactly the answers of an engine with
 * both caches off, while the counters show the caches were used. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "test_util.h"
#include "tools/shapes_world.h"

typedef struct Answer {
    EgStatus st;
    EgGenerateResult r;
    double ttft;
} Answer;

static Answer ask(EgEngine *e, const EgRequest *req) {
    Answer a;
    EgError err = {0};
    a.st = eg_engine_generate(e, req, NULL, NULL, &a.r, NULL, &err);
    CHECK(a.st == EG_STATUS_OK, "generate: %s", err.msg);
    a.ttft = a.r.prefill_s;
    return a;
}

static void same(const char *what, const Answer *with, const Answer *without) {
    int equal = with->st == EG_STATUS_OK && without->st == EG_STATUS_OK &&
                with->r.n_ids == without->r.n_ids &&
                memcmp(with->r.ids, without->r.ids, with->r.n_ids * sizeof *with->r.ids) == 0 &&
                strcmp(with->r.text, without->r.text) == 0;
    CHECK(equal, "%s: with caches '%s', without '%s'", what, with->st ? "" : with->r.text,
          without->st ? "" : without->r.text);
}

int main(void) {
    test_rng_init();
    EgError err = {0};
    EgEngine *cached = eg_engine_open(test_model_path("shapes-idefics"), NULL, &err);
    REQUIRE(cached, "open: %s", err.msg);
    EgEngineOptions off = {.caches = {.image_cache_mb = -1, .prefix_cache_entries = -1}};
    EgEngine *plain = eg_engine_open(test_model_path("shapes-idefics"), &off, &err);
    REQUIRE(plain, "open: %s", err.msg);

    uint64_t seed = test_rng_u64();
    TestPng shots[4], queries[3];
    char answers[4][EG_SHAPES_TEXT_MAX];
    for (int i = 0; i < 4; i++) {
        shots[i] = test_shapes_png(seed + (uint64_t)i, 1);
        EgShapesScene scene;
        eg_shapes_scene_from_seed(seed + (uint64_t)i, 1, &scene);
        eg_shapes_answer(&scene, EG_SHAPES_TASK_COLOR, answers[i], sizeof answers[i]);
    }
    for (int i = 0; i < 3; i++)
        queries[i] = test_shapes_png(seed + 100 + (uint64_t)i, 1);
    EgRequestExample ex[4];
    for (int i = 0; i < 4; i++)
        ex[i] = (EgRequestExample){shots[i].bytes, shots[i].len, answers[i], strlen(answers[i])};

    /* 1-3: four shots, then a query; the same shots with another query; the first again. */
    const int order[] = {0, 1, 0, 2};
    const char *names[] = {"4-shot, query A", "4-shot, query B", "4-shot, query A again",
                           "4-shot, query C"};
    double first_ttft = 0, repeat_ttft = 0;
    for (int k = 0; k < 4; k++) {
        EgRequestPart q = {
            .is_image = 1, .image = queries[order[k]].bytes, .image_len = queries[order[k]].len};
        EgRequest req = {.parts = &q,
                         .n_parts = 1,
                         .examples = ex,
                         .n_examples = 4,
                         .gen = {.max_new_tokens = 8}};
        eg_sampling_params_default(&req.gen.sampling);
        Answer a = ask(cached, &req), b = ask(plain, &req);
        same(names[k], &a, &b);
        if (k == 0) first_ttft = a.ttft;
        if (k == 2) repeat_ttft = a.ttft;
        eg_generate_result_free(&a.r);
        eg_generate_result_free(&b.r);
    }
    printf("time to first token, 4-shot prompt: first %.3f s, repeated %.3f s (%.1fx)\n",
           first_ttft, repeat_ttft, repeat_ttft > 0 ? first_ttft / repeat_ttft : 0);

    /* 4: the same tokens with one example image swapped: the prefix may be reused only up to
     * the swapped image. */
    EgRequestExample swapped[4];
    memcpy(swapped, ex, sizeof ex);
    swapped[1].image = queries[2].bytes;
    swapped[1].image_len = queries[2].len;
    EgRequestPart q = {.is_image = 1, .image = queries[0].bytes, .image_len = queries[0].len};
    EgRequest req = {.parts = &q,
                     .n_parts = 1,
                     .examples = swapped,
                     .n_examples = 4,
                     .gen = {.max_new_tokens = 8}};
    eg_sampling_params_default(&req.gen.sampling);
    Answer a = ask(cached, &req), b = ask(plain, &req);
    same("an example image swapped", &a, &b);
    eg_generate_result_free(&a.r);
    eg_generate_result_free(&b.r);

    /* 5: raw parts continuing a previous answer, sampled with a seed. */
    EgRequestPart raw[3] = {{.is_image = 1, .image = shots[0].bytes, .image_len = shots[0].len},
                            {.text = "Output: a", .text_len = 9},
                            {.text = " small", .text_len = 6}};
    EgRequest r2 = {.parts = raw, .n_parts = 3, .gen = {.max_new_tokens = 12}};
    eg_sampling_params_default(&r2.gen.sampling);
    r2.gen.sampling.temperature = 0.8f;
    r2.gen.sampling.seed = 7;
    for (int k = 0; k < 2; k++) {
        a = ask(cached, &r2);
        b = ask(plain, &r2);
        same(k ? "sampled raw prompt again" : "sampled raw prompt", &a, &b);
        eg_generate_result_free(&a.r);
        eg_generate_result_free(&b.r);
    }

    EgEngineStats cached_stats, plain_stats;
    eg_engine_stats(cached, &cached_stats);
    eg_engine_stats(plain, &plain_stats);
    printf("image cache: %llu hits, %llu misses, %llu entries; prefix cache: %llu hits, %llu "
           "tokens reused\n",
           (unsigned long long)cached_stats.image_cache_hits, (unsigned long long)cached_stats.image_cache_misses,
           (unsigned long long)cached_stats.image_cache_entries, (unsigned long long)cached_stats.prefix_cache_hits,
           (unsigned long long)cached_stats.prefix_cache_tokens_reused);
    /* 7 distinct images over 5 requests of 5 images and 2 of 1: the rest of the lookups hit */
    CHECK(cached_stats.image_cache_misses == 7 && cached_stats.image_cache_hits == 5 * 5 + 2 - 7,
          "image cache: %llu hits, %llu misses", (unsigned long long)cached_stats.image_cache_hits,
          (unsigned long long)cached_stats.image_cache_misses);
    CHECK(cached_stats.prefix_cache_hits >= 5 && cached_stats.prefix_cache_tokens_reused > 40,
          "prefix cache: %llu hits, %llu tokens", (unsigned long long)cached_stats.prefix_cache_hits,
          (unsigned long long)cached_stats.prefix_cache_tokens_reused);
    CHECK(plain_stats.image_cache_hits == 0 && plain_stats.image_cache_entries == 0 && plain_stats.prefix_cache_hits == 0 &&
              plain_stats.prefix_cache_entries == 0,
          "caches turned plain_stats still kept something");

    for (int i = 0; i < 4; i++)
        free(shots[i].bytes);
    for (int i = 0; i < 3; i++)
        free(queries[i].bytes);
    eg_engine_close(plain);
    eg_engine_close(cached);
    return test_finish();
}
