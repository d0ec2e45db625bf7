/* mllama served end to end through the engine API: tests/data/mllama/tiny-mllama-engine is a
 * folder shaped as the hub ships one (config, generation and preprocessor configs, a Llama
 * 3-shaped tokenizer, weights) with two PNGs, and engine_golden.json holds HF's processor ids and
 * greedy continuations for prompts of text and those images (refgen/mllama/make_engine_goldens.py).
 * Each prompt goes through eg_engine_generate as a request (PNG bytes, text parts; fp32, greedy,
 * end of sequence ignored): the prompt's token count must be the processor's and the generated
 * ids HF's; the prompt builder alone must give the processor's ids. Every prompt runs twice, the
 * second time with its images from the image cache and its prefix from the prefix cache, and must
 * give the same ids. The engine describes the model as mllama and refuses more images than it
 * allows. An example set answers by id as the same pair sent inline does. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "families/mllama/prompt.h"
#include "runtime/vk_context.h"
#include "test_util.h"

#define FOLDER "mllama/tiny-mllama-engine"
#define MAX_PARTS 8

typedef struct Case {
    EgRequestPart parts[MAX_PARTS];
    unsigned char *images[MAX_PARTS];
    size_t n_parts;
} Case;

static void case_load(const cJSON *parts, Case *c) {
    memset(c, 0, sizeof *c);
    const cJSON *p;
    cJSON_ArrayForEach(p, parts) {
        if (c->n_parts == MAX_PARTS) break;
        EgRequestPart *rp = &c->parts[c->n_parts];
        const cJSON *image = cJSON_GetObjectItem(p, "image");
        if (image) {
            char rel[256];
            snprintf(rel, sizeof rel, FOLDER "/%s", image->valuestring);
            size_t len = 0;
            c->images[c->n_parts] = test_read_file(test_data_path(rel), &len);
            CHECK(c->images[c->n_parts] != NULL, "cannot read %s", rel);
            *rp = (EgRequestPart){.is_image = 1, .image = c->images[c->n_parts], .image_len = len};
        } else {
            const char *text = cJSON_GetObjectItem(p, "text")->valuestring;
            *rp = (EgRequestPart){.text = text, .text_len = strlen(text)};
        }
        c->n_parts++;
    }
}

static void case_free(Case *c) {
    for (size_t i = 0; i < c->n_parts; i++)
        free(c->images[i]);
}

/* The processor's ids from the family's prompt rules. */
static void check_prompt(const EgTokenizer *tok, const Case *c, const cJSON *golden, int index) {
    EgPromptPart parts[MAX_PARTS];
    for (size_t i = 0; i < c->n_parts; i++)
        parts[i] = (EgPromptPart){.kind = c->parts[i].is_image ? EG_PART_IMAGE : EG_PART_TEXT,
                                  .text = c->parts[i].text,
                                  .len = c->parts[i].text_len};
    EgPrompt p;
    EgError err = {0};
    int rc = eg_mllama_prompt_build(tok, parts, c->n_parts, &p, &err);
    CHECK(rc == 0, "case %d: prompt: %s", index, err.msg);
    if (rc) return;
    const cJSON *want = cJSON_GetObjectItem(golden, "input_ids");
    int same = (int)p.n_tokens == cJSON_GetArraySize(want);
    for (size_t t = 0; same && t < p.n_tokens; t++)
        same = p.ids[t] == cJSON_GetArrayItem(want, (int)t)->valueint;
    CHECK(same, "case %d: the prompt's ids differ from the processor's", index);
    eg_prompt_free(&p);
}

static void run_case(EgEngine *e, const EgTokenizer *tok, const cJSON *golden, int index,
                     int round) {
    Case c;
    case_load(cJSON_GetObjectItem(golden, "parts"), &c);
    if (round == 0) check_prompt(tok, &c, golden, index);
    const cJSON *want = cJSON_GetObjectItem(golden, "generated_ids");
    int n_want = cJSON_GetArraySize(want);
    EgRequest req = {.parts = c.parts, .n_parts = c.n_parts};
    req.gen.max_new_tokens = (uint32_t)n_want;
    req.gen.ignore_eos = 1;
    eg_sampling_params_default(&req.gen.sampling);
    EgGenerateResult r;
    EgRequestStats stats = {0};
    EgError err = {0};
    EgStatus st = eg_engine_generate(e, &req, NULL, NULL, &r, &stats, &err);
    CHECK(st == EG_STATUS_OK, "case %d round %d: %s", index, round, err.msg);
    if (st == EG_STATUS_OK) {
        int n_prompt = cJSON_GetArraySize(cJSON_GetObjectItem(golden, "input_ids"));
        CHECK((int)stats.prompt_tokens == n_prompt, "case %d: %u prompt tokens, HF's has %d", index,
              stats.prompt_tokens, n_prompt);
        int same = (int)r.n_ids == n_want;
        for (int k = 0; same && k < n_want; k++)
            same = r.ids[k] == cJSON_GetArrayItem(want, k)->valueint;
        CHECK(same, "case %d round %d (%s): greedy ids differ from HF's (first %d)", index, round,
              cJSON_GetObjectItem(golden, "processor_text")->valuestring, r.n_ids ? r.ids[0] : -1);
        eg_generate_result_free(&r);
    }
    case_free(&c);
}

/* An example set on mllama: by id, the answer is token for token the inline one's (greedy),
 * the second use a hit; both as a raw prompt and through the template. */
static void check_example_set(EgEngine *e) {
    size_t wide_len = 0, tall_len = 0;
    unsigned char *wide = test_read_file(test_data_path(FOLDER "/wide.png"), &wide_len);
    unsigned char *tall = test_read_file(test_data_path(FOLDER "/tall.png"), &tall_len);
    if (!wide || !tall) {
        CHECK(0, "cannot read the folder's PNGs");
        free(wide), free(tall);
        return;
    }
    const char *text = "a wide picture.";
    EgRequestExample pair = {wide, wide_len, text, strlen(text)};
    EgExampleSetInfo info = {0};
    int created = 0;
    EgError err = {0};
    EgStatus st = eg_engine_example_set_create(e, &pair, 1, NULL, NULL, &info, &created, &err);
    CHECK(st == EG_STATUS_OK && created, "create: %s", err.msg);
    EgRequestPart query = {.is_image = 1, .image = tall, .image_len = tall_len};
    for (int use_template = 0; st == EG_STATUS_OK && use_template < 2; use_template++) {
        EgGenerateResult by_id = {0}, inline_r = {0};
        for (int round = 0; round < 2; round++) {
            EgRequest req = {.parts = &query, .n_parts = 1, .use_template = use_template};
            req.gen.max_new_tokens = 8;
            eg_sampling_params_default(&req.gen.sampling);
            if (round == 0) {
                req.example_set = info.id;
            } else {
                req.examples = &pair;
                req.n_examples = 1;
            }
            EgGenerateResult *out = round ? &inline_r : &by_id;
            EgStatus gs = eg_engine_generate(e, &req, NULL, NULL, out, NULL, &err);
            CHECK(gs == EG_STATUS_OK, "template %d round %d: %s", use_template, round, err.msg);
        }
        CHECK(by_id.n_ids == 8 && by_id.n_ids == inline_r.n_ids &&
                  memcmp(by_id.ids, inline_r.ids, by_id.n_ids * sizeof *by_id.ids) == 0,
              "template %d: by id and inline answers differ ('%s' / '%s')", use_template,
              by_id.text ? by_id.text : "", inline_r.text ? inline_r.text : "");
        eg_generate_result_free(&by_id);
        eg_generate_result_free(&inline_r);
    }
    EgExampleSetInfo after = {0};
    if (st == EG_STATUS_OK)
        CHECK(eg_engine_example_set_get(e, info.id, &after, NULL, NULL, &err) == EG_STATUS_OK &&
                  after.uses == 2,
              "uses %llu: %s", (unsigned long long)after.uses, err.msg);
    free(wide);
    free(tall);
}

int main(void) {
    size_t len;
    char *json = (char *)test_read_file(test_data_path(FOLDER "/engine_golden.json"), &len);
    REQUIRE(json != NULL, "cannot read engine_golden.json");
    cJSON *golden = cJSON_ParseWithLength(json, len);
    const cJSON *cases = cJSON_GetObjectItem(golden, "cases");
    REQUIRE(cJSON_GetArraySize(cases) >= 4, "engine_golden.json should hold at least 4 cases");

    EgError err = {0};
    EgEngineOptions opt = {.model = {.fp32 = 1}, .limits = {.max_images = 2}};
    EgEngine *e = eg_engine_open(test_data_path(FOLDER), &opt, &err);
    REQUIRE(e != NULL, "open: %s", err.msg);
    EgEngineInfo info;
    eg_engine_describe(e, &info);
    CHECK(strcmp(info.architecture, "MllamaForConditionalGeneration") == 0, "architecture %s",
          info.architecture);
    CHECK(info.vocab_size == 4256 && info.image_size == 32, "vocab %u, image size %u",
          info.vocab_size, info.image_size);

    /* a base folder (no chat template, no egret_template.json): the built-in base template */
    CHECK(strcmp(eg_template_name(info.prompt_template), "mllama") == 0, "template %s",
          eg_template_name(info.prompt_template));
    EgTokenizer *tok = eg_tokenizer_load(test_data_path(FOLDER "/tokenizer.json"), &err);
    REQUIRE(tok != NULL, "tokenizer: %s", err.msg);
    /* First the text-before-image case with the other image: its first tokens read that image
     * (HF's unmasked rows), so the prefix cache must not lend them to the golden case. */
    {
        const cJSON *golden_case = cJSON_GetArrayItem(cases, 2);
        Case v;
        case_load(cJSON_GetObjectItem(golden_case, "parts"), &v);
        Case other;
        case_load(cJSON_GetObjectItem(cJSON_GetArrayItem(cases, 0), "parts"), &other);
        v.parts[1] = other.parts[0]; /* wide.png in place of tall.png */
        EgRequest vreq = {.parts = v.parts, .n_parts = v.n_parts};
        vreq.gen.max_new_tokens = 2;
        eg_sampling_params_default(&vreq.gen.sampling);
        EgGenerateResult vr;
        EgStatus vst = eg_engine_generate(e, &vreq, NULL, NULL, &vr, NULL, &err);
        CHECK(vst == EG_STATUS_OK, "variant: %s", err.msg);
        if (vst == EG_STATUS_OK) eg_generate_result_free(&vr);
        case_free(&other);
        case_free(&v);
    }
    for (int round = 0; round < 2; round++) {
        int i = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, cases) run_case(e, tok, c, i++, round);
        if (round == 0) {
            /* no two first-round prompts share 4 tokens that saw the same images: in particular
             * the text-before-image case must not take the variant's first 6 tokens */
            EgEngineStats st0;
            eg_engine_stats(e, &st0);
            CHECK(st0.prefix_cache_hits == 0,
                  "%llu prefix cache hits in the first round (%llu "
                  "tokens)",
                  (unsigned long long)st0.prefix_cache_hits,
                  (unsigned long long)st0.prefix_cache_tokens_reused);
        }
    }
    eg_tokenizer_free(tok);
    EgEngineStats stats;
    eg_engine_stats(e, &stats);
    CHECK(stats.image_cache_hits >= 3, "%llu image cache hits in the second round",
          (unsigned long long)stats.image_cache_hits);
    CHECK(stats.prefix_cache_hits >= 1, "%llu prefix cache hits in the second round",
          (unsigned long long)stats.prefix_cache_hits);

    /* zero-shot captioning with the template: image, then "Caption:" and the query text */
    {
        Case q;
        case_load(cJSON_GetObjectItem(cJSON_GetArrayItem(cases, 0), "parts"), &q);
        EgRequest treq = {.parts = q.parts, .n_parts = 2, .use_template = 1};
        treq.gen.max_new_tokens = 4;
        eg_sampling_params_default(&treq.gen.sampling);
        EgGenerateResult tr;
        EgRequestStats ts = {0};
        EgStatus tst = eg_engine_generate(e, &treq, NULL, NULL, &tr, &ts, &err);
        CHECK(tst == EG_STATUS_OK && ts.images == 1 && ts.prompt_tokens > 4, "template: %s",
              err.msg);
        if (tst == EG_STATUS_OK) eg_generate_result_free(&tr);
        case_free(&q);
    }

    /* three images where the engine allows two */
    Case c;
    case_load(cJSON_GetObjectItem(cJSON_GetArrayItem(cases, 1), "parts"), &c);
    EgRequestPart three[MAX_PARTS] = {c.parts[0], c.parts[1], c.parts[0], c.parts[2]};
    EgRequest req = {.parts = three, .n_parts = 4};
    req.gen.max_new_tokens = 1;
    eg_sampling_params_default(&req.gen.sampling);
    EgGenerateResult r;
    EgStatus st = eg_engine_generate(e, &req, NULL, NULL, &r, NULL, &err);
    CHECK(st == EG_STATUS_RESOURCE_EXHAUSTED && strstr(err.msg, "max_images"),
          "three images: status %d (%s)", st, err.msg);
    if (st == EG_STATUS_OK) eg_generate_result_free(&r);
    case_free(&c);

    check_example_set(e);
    eg_engine_close(e);
    CHECK(eg_vk_validation_message_count() == 0, "the Vulkan validation layer reported %d messages",
          eg_vk_validation_message_count());
    cJSON_Delete(golden);
    free(json);
    return test_finish();
}
