/* Chunked prefill (engine/engine_job.c eg_engine_step): a prompt fed a few tokens per step
 * gives the same answer as one fed at once, and while it is being fed, a request that is
 * already decoding gets a token in every step instead of waiting for the whole prompt. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "test_util.h"
#include "tools/shapes_world.h"

static int count_token(void *user, int32_t id, const char *text, size_t len) {
    (void)text;
    (void)len;
    if (id >= 0) ++*(int *)user;
    return 0;
}

static EgEngine *open_engine(uint32_t prefill_chunk) {
    EgError err = {0};
    /* fp32: chunks of up to 8 tokens take the matrix-vector kernels, longer ones the tiled
     * matmul; in fp32 their different summation orders cannot flip a greedy choice */
    EgEngineOptions o = {.model = {.fp32 = 1},
                         .caches = {.image_cache_mb = -1, .prefix_cache_entries = -1},
                         .prefill_chunk = prefill_chunk};
    EgEngine *e = eg_engine_open(test_model_path("shapes-idefics"), &o, &err);
    if (!e) {
        fprintf(stderr, "open: %s\n", err.msg);
        exit(1);
    }
    return e;
}

static int same_answer(const EgGenerateResult *a, const EgGenerateResult *b) {
    return a->n_ids == b->n_ids && memcmp(a->ids, b->ids, a->n_ids * sizeof *a->ids) == 0 &&
           strcmp(a->text, b->text) == 0;
}

int main(void) {
    test_rng_init();
    EgError err = {0};
    uint64_t seed = test_rng_u64();
    /* a long 4-shot prompt (five images) and a one-image caption request */
    TestPng shots[4], query = test_shapes_png(seed + 100, 1),
                      other = test_shapes_png(seed + 200, 1);
    char answers[4][EG_SHAPES_TEXT_MAX];
    EgRequestExample ex[4];
    for (int i = 0; i < 4; i++) {
        EgShapesScene scene;
        shots[i] = test_shapes_png(seed + (uint64_t)i, 1);
        eg_shapes_scene_from_seed(seed + (uint64_t)i, 1, &scene);
        eg_shapes_answer(&scene, EG_SHAPES_TASK_SHAPE, answers[i], sizeof answers[i]);
        ex[i] = (EgRequestExample){shots[i].bytes, shots[i].len, answers[i], strlen(answers[i])};
    }
    /* the query: its image and a long text (the examples alone are about 25 tokens) */
    const char *text = "Earlier scenes showed a red circle, a small blue square, a large green "
                       "triangle at the top left, two yellow circles near the middle and a "
                       "purple square at the bottom right, all on a white ground. Which shape "
                       "does this one show?";
    EgRequestPart q[2] = {{.is_image = 1, .image = query.bytes, .image_len = query.len},
                          {.text = text, .text_len = strlen(text)}};
    EgRequest long_req = {.parts = q,
                          .n_parts = 2,
                          .examples = ex,
                          .n_examples = 4,
                          .gen = {.max_new_tokens = 10, .ignore_eos = 1}};
    eg_sampling_params_default(&long_req.gen.sampling);
    EgRequestPart c = {.is_image = 1, .image = other.bytes, .image_len = other.len};
    /* it must outlast the long prompt: no end of sequence, and a stop string (instead of the
     * template's) that the model's vocabulary cannot produce */
    static const char *never[] = {"\x01\x02"};
    EgRequest short_req = {
        .parts = &c,
        .n_parts = 1,
        .use_template = 1,
        .gen = {.max_new_tokens = 200, .ignore_eos = 1, .stop = never, .n_stop = 1}};
    eg_sampling_params_default(&short_req.gen.sampling);

    /* 1: the same answer whole and in chunks of 7 (and 1: every prompt token its own step) */
    EgEngine *whole = open_engine(1u << 20), *chunked = open_engine(7), *single = open_engine(1);
    EgGenerateResult ref, r7, r1;
    EgRequestStats stats;
    REQUIRE(eg_engine_generate(whole, &long_req, NULL, NULL, &ref, &stats, &err) == EG_STATUS_OK,
            "whole: %s", err.msg);
    CHECK(eg_engine_generate(chunked, &long_req, NULL, NULL, &r7, NULL, &err) == EG_STATUS_OK,
          "chunks of 7: %s", err.msg);
    CHECK(eg_engine_generate(single, &long_req, NULL, NULL, &r1, NULL, &err) == EG_STATUS_OK,
          "chunks of 1: %s", err.msg);
    CHECK(same_answer(&ref, &r7), "chunks of 7: '%s', whole: '%s'", r7.text, ref.text);
    CHECK(same_answer(&ref, &r1), "chunks of 1: '%s', whole: '%s'", r1.text, ref.text);
    printf("4-shot prompt of %u tokens: '%s' whole, in chunks of 7 and of 1\n", stats.prompt_tokens,
           ref.text);
    REQUIRE(stats.prompt_tokens > 60, "the prompt has only %u tokens", stats.prompt_tokens);

    /* 2: a request decoding while the long prompt arrives keeps getting one token per step */
    int short_tokens = 0, long_tokens = 0;
    EgEngineJob *jobs[2];
    REQUIRE(eg_engine_begin(chunked, &short_req, count_token, &short_tokens, &jobs[0], NULL,
                            &err) == EG_STATUS_OK,
            "begin: %s", err.msg);
    for (int i = 0; i < 3; i++)
        REQUIRE(eg_engine_step(chunked, jobs, 1, &err) == 0, "step: %s", err.msg);
    REQUIRE(short_tokens == 3, "%d tokens after 3 steps", short_tokens);
    REQUIRE(eg_engine_begin(chunked, &long_req, count_token, &long_tokens, &jobs[1], NULL, &err) ==
                EG_STATUS_OK,
            "begin: %s", err.msg);
    uint32_t chunks = (stats.prompt_tokens + 6) / 7, steps = 0;
    int short_before = short_tokens;
    while (long_tokens == 0 && steps < 1000) {
        int before = short_tokens;
        REQUIRE(eg_engine_step(chunked, jobs, 2, &err) == 0, "step: %s", err.msg);
        steps++;
        CHECK(short_tokens == before + 1, "step %u: the decoding request got %d tokens", steps,
              short_tokens - before);
    }
    int short_during = short_tokens - short_before;
    CHECK(steps == chunks, "the first token of a %u-token prompt came after %u steps, not %u",
          stats.prompt_tokens, steps, chunks);
    while (!eg_engine_job_finished(jobs[1]))
        REQUIRE(eg_engine_step(chunked, jobs, 2, &err) == 0, "step: %s", err.msg);
    EgGenerateResult interleaved;
    CHECK(eg_engine_end(jobs[1], &interleaved, &err) == EG_STATUS_OK, "end: %s", err.msg);
    CHECK(same_answer(&ref, &interleaved), "interleaved with a decoding request: '%s', alone '%s'",
          interleaved.text, ref.text);
    printf("while it was fed in %u steps the decoding request got %d tokens\n", steps,
           short_during);
    eg_engine_cancel(jobs[0]);
    EgGenerateResult cancelled;
    eg_engine_end(jobs[0], &cancelled, &err);

    eg_generate_result_free(&cancelled);
    eg_generate_result_free(&interleaved);
    eg_generate_result_free(&ref);
    eg_generate_result_free(&r7);
    eg_generate_result_free(&r1);
    eg_engine_close(single);
    eg_engine_close(chunked);
    eg_engine_close(whole);
    free(other.bytes);
    free(query.bytes);
    for (int i = 0; i < 4; i++)
        free(shots[i].bytes);
    return test_finish();
}
