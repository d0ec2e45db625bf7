/* The bundled demo model (models/shapes-idefics, bf16 weights) on the 30 held-out few-shot cases
 * of tests/data/shapes-cases: from each case's HF prompt_ids and its 64x64 PNGs, greedy decoding
 * of 24 tokens (no stop, end-of-sequence ignored) must equal HF's greedy_ids for all 30 cases in
 * fp32 mode and for at least 28 in fp16 mode; in fp32 the decoded text must equal greedy_text.
 * With the projections quantized (q8, q4: docs/quantization.md) the answer line (the text up to
 * its first newline) must equal greedy_text's in at least 29 and 27 cases. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "engine/generate.h"
#include "language/prompt.h"
#include "runtime/clock.h"
#include "runtime/vk_context.h"
#include "test_util.h"
#include "vision/image_decode.h"
#include "vision/preprocess.h"

static float *load_case_images(const cJSON *parts, uint32_t size, uint32_t *n_images) {
    uint32_t n = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, parts) if (cJSON_GetObjectItem(part, "image")) n++;
    size_t per = 3 * (size_t)size * size;
    float *pixels = malloc((n ? n : 1) * per * sizeof *pixels);
    uint32_t i = 0;
    cJSON_ArrayForEach(part, parts) {
        const cJSON *img = cJSON_GetObjectItem(part, "image");
        if (!img) continue;
        char rel[256];
        snprintf(rel, sizeof rel, "shapes-cases/%s", img->valuestring);
        size_t len;
        unsigned char *bytes = test_read_file(test_data_path(rel), &len);
        EgImage im = {0};
        EgError err;
        int ok = bytes && eg_image_decode(bytes, len, NULL, &im, &err) == 0 &&
                 eg_preprocess_image(&im, (int)size, pixels + i * per, &err) == 0;
        CHECK(ok, "image %s: %s", rel, bytes ? err.msg : "unreadable");
        eg_image_free(&im);
        free(bytes);
        i++;
    }
    *n_images = n;
    return pixels;
}

/* Whether a and b agree up to the first newline (or their ends): the answer of a case, the
 * template's "Output: {text}\n" line. */
static int same_answer(const char *a, const char *b) {
    size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
    return la == lb && memcmp(a, b, la) == 0;
}

/* Runs every case; returns how many equal HF's greedy ids (quantized: not compared, 0), and in
 * *answers how many HF's answer line. */
static int run_cases(const cJSON *cases, int fp32, EgWeightFormat quant, int *answers) {
    EgError err = {0};
    EgModelOptions opt = {.fp32 = fp32, .quant = quant};
    const char *mode = quant ? eg_weight_format_name(quant) : fp32 ? "fp32" : "fp16";
    *answers = 0;
    double t0 = eg_now_s();
    EgFamilyModel *m = eg_family_open(test_model_path("shapes-idefics"), &opt, &err);
    CHECK(m != NULL, "load: %s", err.msg);
    EgTokenizer *tok = eg_tokenizer_load(test_model_path("shapes-idefics/tokenizer.json"), &err);
    CHECK(tok != NULL, "tokenizer: %s", err.msg);
    if (!m || !tok) {
        eg_family_close(m);
        eg_tokenizer_free(tok);
        return 0;
    }
    int32_t image_token = eg_tokenizer_find(tok, "<image>");
    int matches = 0, index = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const cJSON *prompt = cJSON_GetObjectItem(c, "prompt_ids");
        const cJSON *greedy = cJSON_GetObjectItem(c, "greedy_ids");
        int n = cJSON_GetArraySize(prompt), n_greedy = cJSON_GetArraySize(greedy);
        int32_t *ids = malloc((size_t)n * sizeof *ids), *img = malloc((size_t)n * sizeof *img);
        for (int t = 0; t < n; t++) ids[t] = cJSON_GetArrayItem(prompt, t)->valueint;
        uint32_t n_images;
        float *pixels = load_case_images(cJSON_GetObjectItem(c, "parts"),
                                         m->info.image_size, &n_images);
        eg_prompt_image_index(ids, (size_t)n, image_token, m->info.eos[0], (int)n_images,
                              img);
        CHECK(img[n - 1] == (int32_t)n_images - 1, "case %d: the query should see the last image",
              index);
        EgGenerateParams gp = {.max_new_tokens = (uint32_t)n_greedy, .ignore_eos = 1};
        /* quantized: only the answer line is compared, so generation stops at its end */
        static const char *const newline[] = {"\n"};
        if (quant) gp.stop = newline, gp.n_stop = 1;
        eg_sampling_params_default(&gp.sampling);
        EgGenerateResult r;
        if (eg_generate(m, tok, ids, img, (uint32_t)n, pixels, n_images, &gp, NULL, NULL, &r,
                        &err) == 0) {
            int same = !quant && (int)r.n_ids == n_greedy;
            for (int k = 0; same && k < n_greedy; k++)
                same = r.ids[k] == cJSON_GetArrayItem(greedy, k)->valueint;
            matches += same;
            if (!same && !quant) printf("  %s case %d (%s): greedy ids differ\n", mode, index,
                              cJSON_GetObjectItem(c, "task")->valuestring);
            const char *want = cJSON_GetObjectItem(c, "greedy_text")->valuestring;
            if (fp32)
                CHECK(strcmp(r.text, want) == 0, "case %d text '%s' != '%s'", index, r.text, want);
            *answers += same_answer(r.text, want);
            eg_generate_result_free(&r);
        } else {
            CHECK(0, "case %d: %s", index, err.msg);
        }
        free(ids);
        free(img);
        free(pixels);
        index++;
    }
    if (quant)
        printf("%s: %d of %d answer lines equal HF's (%.1f s)\n", mode, *answers, index,
               eg_now_s() - t0);
    else
        printf("%s: %d of %d cases equal HF's greedy ids, %d its answer line (%.1f s)\n", mode,
               matches, index, *answers, eg_now_s() - t0);
    eg_tokenizer_free(tok);
    eg_family_close(m);
    return matches;
}

int main(void) {
    size_t len;
    char *json = (char *)test_read_file(test_data_path("shapes-cases/cases.json"), &len);
    REQUIRE(json != NULL, "cannot read cases.json");
    cJSON *cases = cJSON_ParseWithLength(json, len);
    REQUIRE(cases && cJSON_GetArraySize(cases) == 30, "cases.json should hold 30 cases");
    int answers;
    int exact = run_cases(cases, 1, EG_WEIGHTS_DENSE, &answers);
    CHECK(exact == 30, "fp32: %d of 30 cases match (all must)", exact);
    int fast = run_cases(cases, 0, EG_WEIGHTS_DENSE, &answers);
    CHECK(fast >= 28, "fp16: %d of 30 cases match (at least 28 must)", fast);
    /* Quantized projections (fp16 otherwise), issue 19's targets: q8's answer line as HF's (as
     * fp32's) in at least 29 cases, q4's in at least 27. */
    run_cases(cases, 0, EG_WEIGHTS_Q8, &answers);
    CHECK(answers >= 29, "q8: %d of 30 answers equal HF's (at least 29 must)", answers);
    run_cases(cases, 0, EG_WEIGHTS_Q4, &answers);
    CHECK(answers >= 27, "q4: %d of 30 answers equal HF's (at least 27 must)", answers);
    CHECK(eg_vk_validation_message_count() == 0, "the Vulkan validation layer reported %d messages",
          eg_vk_validation_message_count());
    cJSON_Delete(cases);
    free(json);
    return test_finish();
}
