/* The engine end to end (image bytes and text in, text out) on the demo model, and its answers to
 * bad requests: each gets the right status and a message naming what was wrong, and the engine
 * keeps answering afterwards. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "runtime/vk_context.h"
#include "test_util.h"

static EgEngine *engine;

static EgStatus ask(const EgRequestPart *parts, size_t n, const EgRequestExample *ex, size_t n_ex,
                    uint32_t max_new, char *answer, size_t answer_len, EgError *err) {
    EgRequest req = {.parts = parts,
                     .n_parts = n,
                     .examples = ex,
                     .n_examples = n_ex,
                     .use_template = 1,
                     .gen = {.max_new_tokens = max_new}};
    eg_sampling_params_default(&req.gen.sampling);
    EgGenerateResult r;
    EgStatus st = eg_engine_generate(engine, &req, NULL, NULL, &r, NULL, err);
    if (st == EG_STATUS_OK) {
        snprintf(answer, answer_len, "%s", r.text);
        eg_generate_result_free(&r);
    }
    return st;
}

static void expect_error(const char *what, EgStatus want, const char *needle,
                         const EgRequestPart *parts, size_t n, uint32_t max_new) {
    EgError err = {0};
    char answer[256];
    EgStatus st = ask(parts, n, NULL, 0, max_new, answer, sizeof answer, &err);
    CHECK(st == want, "%s: status %d, want %d (%s)", what, st, want, err.msg);
    CHECK(strstr(err.msg, needle) != NULL, "%s: message '%s' should mention '%s'", what, err.msg,
          needle);
}

int main(void) {
    EgError err = {0};
    EgEngineOptions opt = {.model = {.fp32 = 1}, .limits = {.max_images = 4}};
    engine = eg_engine_open(test_model_path("shapes-idefics"), &opt, &err);
    REQUIRE(engine != NULL, "open: %s", err.msg);
    size_t len0, len1, len2;
    unsigned char *img0 = test_read_file(test_data_path("shapes-cases/images/c000_0.png"), &len0);
    unsigned char *img1 = test_read_file(test_data_path("shapes-cases/images/c001_0.png"), &len1);
    unsigned char *img2 = test_read_file(test_data_path("shapes-cases/images/c001_2.png"), &len2);
    REQUIRE(img0 && img1 && img2, "test images missing");

    /* Zero-shot caption through the template (HF's greedy answer for this case). */
    char answer[256];
    EgRequestPart query = {.is_image = 1, .image = img0, .image_len = len0};
    EgStatus st = ask(&query, 1, NULL, 0, 32, answer, sizeof answer, &err);
    CHECK(st == EG_STATUS_OK &&
              strcmp(answer, "a white diamond, a red diamond and a black circle.") == 0,
          "caption: status %d, '%s' (%s)", st, answer, err.msg);
    /* Few-shot colour with one example, the template's "\n" stop applied. */
    EgRequestExample ex = {img1, len1, "yellow.", 7};
    EgRequestPart q2 = {.is_image = 1, .image = img2, .image_len = len2};
    st = ask(&q2, 1, &ex, 1, 16, answer, sizeof answer, &err);
    CHECK(st == EG_STATUS_OK && strcmp(answer, "blue.") == 0, "few-shot: status %d, '%s' (%s)", st,
          answer, err.msg);

    /* Bad requests. */
    unsigned char corrupt[64];
    memcpy(corrupt, img0, sizeof corrupt); /* a PNG cut after 64 bytes */
    EgRequestPart bad_image = {.is_image = 1, .image = corrupt, .image_len = sizeof corrupt};
    expect_error("truncated PNG", EG_STATUS_INVALID_ARGUMENT, "image 0", &bad_image, 1, 8);
    EgRequestPart bad_text[2] = {query, {.text = "caf\xc3(", .text_len = 5}};
    expect_error("invalid UTF-8", EG_STATUS_INVALID_ARGUMENT, "UTF-8", bad_text, 2, 8);
    expect_error("empty request", EG_STATUS_INVALID_ARGUMENT, "no parts", NULL, 0, 8);
    expect_error("max_new_tokens 0", EG_STATUS_INVALID_ARGUMENT, "max_new_tokens", &query, 1, 0);
    expect_error("max_new_tokens huge", EG_STATUS_RESOURCE_EXHAUSTED, "max_new_tokens", &query, 1,
                 1000000);
    EgRequestPart many[5] = {query, query, query, query, query};
    EgRequest raw = {.parts = many, .n_parts = 5, .gen = {.max_new_tokens = 4}};
    eg_sampling_params_default(&raw.gen.sampling);
    EgGenerateResult r;
    st = eg_engine_generate(engine, &raw, NULL, NULL, &r, NULL, &err);
    CHECK(st == EG_STATUS_RESOURCE_EXHAUSTED && strstr(err.msg, "max_images"),
          "too many images: status %d (%s)", st, err.msg);
    raw.n_parts = 1;
    raw.gen.sampling.temperature = -1;
    st = eg_engine_generate(engine, &raw, NULL, NULL, &r, NULL, &err);
    CHECK(st == EG_STATUS_INVALID_ARGUMENT && strstr(err.msg, "temperature"),
          "negative temperature: status %d (%s)", st, err.msg);

    /* Still serving after all of that. */
    st = ask(&query, 1, NULL, 0, 32, answer, sizeof answer, &err);
    CHECK(st == EG_STATUS_OK &&
              strcmp(answer, "a white diamond, a red diamond and a black circle.") == 0,
          "caption after errors: '%s' (%s)", answer, err.msg);
    eg_engine_close(engine);
    free(img0), free(img1), free(img2);
    CHECK(eg_vk_validation_message_count() == 0, "validation layer reported %d messages",
          eg_vk_validation_message_count());
    return test_finish();
}
