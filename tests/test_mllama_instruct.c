/* The Llama 3.2 Vision Instruct path end to end against HF: tests/data/mllama/tiny-mllama-instruct
 * is a folder shaped as the Instruct checkpoints ship (tokenizer_config.json with the published
 * chat template and eos_token <|eot_id|>, generation_config.json with eos [<|end_of_text|>,
 * <|eom_id|>, <|eot_id|>]); instruct_golden.json holds, per conversation, HF's
 * processor.apply_chat_template(add_generation_prompt=True) ids and model.generate's greedy ids,
 * which end with <|eot_id|> (one case: <|eom_id|>) a few tokens in
 * (refgen/mllama/make_instruct_goldens.py fits those tokens' lm_head rows so the stop is real).
 *
 * Checked: the folder gets the built-in mllama-instruct template by itself; each case, sent as a
 * use_template request (few-shot examples + query image and text), gives HF's prompt ids exactly
 * (the template's parts through the family's prompt rules, and the engine's prompt token count);
 * greedy generation gives HF's ids, stops at <|eot_id|> (<|eom_id|>) with finish reason
 * end-of-sequence, and neither the ids nor the text hold it; with end of sequence ignored the stop
 * token is the one generated at that step. The same through the gRPC service (unary and streamed),
 * whose GetModelInfo names the template. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "egret/v1/egret.pb-c.h"
#include "engine/engine.h"
#include "families/mllama/prompt.h"
#include "language/template.h"
#include "runtime/vk_context.h"
#include "server/grpc_server.h"
#include "test_util.h"
#include "tools/grpc_client.h"

#define FOLDER "mllama/tiny-mllama-instruct"
#define MAX_EXAMPLES 4

typedef struct Case {
    const char *name;
    EgRequestExample examples[MAX_EXAMPLES];
    EgRequestPart query[2];
    unsigned char *images[MAX_EXAMPLES + 1];
    size_t n_examples, n_query, n_images;
    const cJSON *input_ids, *generated_ids; /* HF's; generated_ids end with the stop token */
    int32_t stop_id;                        /* <|eot_id|> or <|eom_id|> */
    const char *text;                       /* HF's decode without special tokens */
} Case;

static unsigned char *load_png(Case *c, const char *file, size_t *len) {
    char rel[256];
    snprintf(rel, sizeof rel, FOLDER "/%s", file);
    unsigned char *png = test_read_file(test_data_path(rel), len);
    CHECK(png != NULL, "cannot read %s", rel);
    c->images[c->n_images++] = png;
    return png;
}

static void case_load(const cJSON *g, Case *c) {
    memset(c, 0, sizeof *c);
    c->name = cJSON_GetObjectItem(g, "name")->valuestring;
    c->input_ids = cJSON_GetObjectItem(g, "input_ids");
    c->generated_ids = cJSON_GetObjectItem(g, "generated_ids");
    c->text = cJSON_GetObjectItem(g, "text")->valuestring;
    c->stop_id = cJSON_GetObjectItem(g, "stop_id")->valueint;
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(g, "examples")) {
        if (c->n_examples == MAX_EXAMPLES) break;
        EgRequestExample *ex = &c->examples[c->n_examples++];
        ex->image = load_png(c, cJSON_GetObjectItem(p, "image")->valuestring, &ex->image_len);
        ex->text = cJSON_GetObjectItem(p, "text")->valuestring;
        ex->text_len = strlen(ex->text);
    }
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(g, "query")) {
        if (c->n_query == 2) break;
        const cJSON *image = cJSON_GetObjectItem(p, "image");
        EgRequestPart *q = &c->query[c->n_query++];
        if (image) {
            *q = (EgRequestPart){.is_image = 1};
            q->image = load_png(c, image->valuestring, &q->image_len);
        } else {
            *q = test_text_part(cJSON_GetObjectItem(p, "text")->valuestring);
        }
    }
}

static void case_free(Case *c) {
    for (size_t i = 0; i < c->n_images; i++)
        free(c->images[i]);
}

static EgRequest case_request(const Case *c, uint32_t max_new_tokens) {
    EgRequest req = test_greedy_request(max_new_tokens);
    req.parts = c->query;
    req.n_parts = c->n_query;
    req.examples = c->examples;
    req.n_examples = c->n_examples;
    req.use_template = 1;
    return req;
}

static int ids_equal(const cJSON *want, size_t n_want, const void *got, size_t n,
                     int unsigned_ids) {
    if (n != n_want) return 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v =
            unsigned_ids ? (int64_t)((const uint32_t *)got)[i] : (int64_t)((const int32_t *)got)[i];
        if (v != cJSON_GetArrayItem(want, (int)i)->valueint) return 0;
    }
    return 1;
}

/* The template's layout of the case through the family's prompt rules: HF's ids exactly. */
static void check_prompt(const EgTemplate *t, const EgTokenizer *tok, const Case *c) {
    EgFewShotExample ex[MAX_EXAMPLES];
    for (size_t i = 0; i < c->n_examples; i++)
        ex[i] = (EgFewShotExample){c->examples[i].text, c->examples[i].text_len};
    const EgRequestPart *qt = c->n_query > 1 ? &c->query[1] : NULL;
    EgPartList list = {0};
    EgError err = {0};
    int rc = eg_template_build(t, ex, c->n_examples, qt ? qt->text : NULL, qt ? qt->text_len : 0,
                               &list, &err);
    CHECK(rc == 0, "%s: template: %s", c->name, err.msg);
    EgPrompt p = {0};
    if (rc == 0) rc = eg_mllama_prompt_build(tok, list.parts, list.n, &p, &err);
    CHECK(rc == 0, "%s: prompt: %s", c->name, err.msg);
    if (rc == 0) {
        CHECK(
            ids_equal(c->input_ids, (size_t)cJSON_GetArraySize(c->input_ids), p.ids, p.n_tokens, 0),
            "%s: the prompt's %zu ids differ from HF apply_chat_template's %d", c->name, p.n_tokens,
            cJSON_GetArraySize(c->input_ids));
        CHECK(p.n_images == (int)(c->n_examples + 1), "%s: %d images", c->name, p.n_images);
        eg_prompt_free(&p);
    }
    eg_part_list_free(&list);
}

/* Through the engine: stops where HF does, on an end-of-turn id of the Instruct eos list. */
static void check_engine(EgEngine *e, const Case *c, int32_t eot, int32_t eom) {
    size_t n_gen = (size_t)cJSON_GetArraySize(c->generated_ids);
    int ends_stop = n_gen >= 2 && (c->stop_id == eot || c->stop_id == eom) &&
                    cJSON_GetArrayItem(c->generated_ids, (int)n_gen - 1)->valueint == c->stop_id;
    CHECK(ends_stop, "%s: the golden should end with <|eot_id|> or <|eom_id|>", c->name);
    if (!ends_stop) return;
    EgRequest req = case_request(c, 16);
    EgGenerateResult r;
    EgRequestStats stats = {0};
    EgError err = {0};
    EgStatus st = eg_engine_generate(e, &req, NULL, NULL, &r, &stats, &err);
    CHECK(st == EG_STATUS_OK, "%s: %s", c->name, err.msg);
    if (st != EG_STATUS_OK) return;
    CHECK((int)stats.prompt_tokens == cJSON_GetArraySize(c->input_ids) &&
              stats.images == c->n_examples + 1,
          "%s: %u prompt tokens and %u images, HF's prompt has %d tokens", c->name,
          stats.prompt_tokens, stats.images, cJSON_GetArraySize(c->input_ids));
    CHECK(ids_equal(c->generated_ids, n_gen - 1, r.ids, r.n_ids, 0),
          "%s: %zu greedy ids differ from HF's %zu before the stop (first %d)", c->name, r.n_ids,
          n_gen - 1, r.n_ids ? r.ids[0] : -1);
    CHECK(r.finish == EG_FINISH_EOS, "%s: finish %d, want end of sequence", c->name, (int)r.finish);
    CHECK(strcmp(r.text, c->text) == 0 && !strstr(r.text, "<|eot_id|>") &&
              !strstr(r.text, "<|eom_id|>"),
          "%s: text '%s', HF's '%s'", c->name, r.text, c->text);
    eg_generate_result_free(&r);

    /* End of sequence ignored: the token at the stop step is the stop token itself. */
    req = case_request(c, (uint32_t)n_gen);
    req.gen.ignore_eos = 1;
    st = eg_engine_generate(e, &req, NULL, NULL, &r, NULL, &err);
    CHECK(st == EG_STATUS_OK, "%s (eos ignored): %s", c->name, err.msg);
    if (st != EG_STATUS_OK) return;
    CHECK(ids_equal(c->generated_ids, n_gen, r.ids, r.n_ids, 0) && r.finish == EG_FINISH_LENGTH,
          "%s: with eos ignored, %zu ids (finish %d) differ from HF's %zu ending in the stop token",
          c->name, r.n_ids, (int)r.finish, n_gen);
    eg_generate_result_free(&r);
}

static int got_info(void *user, const uint8_t *data, size_t len) {
    *(Egret__V1__ModelInfo **)user = egret__v1__model_info__unpack(NULL, len, data);
    return 0;
}

/* Through the gRPC service, unary and streamed. */
static void check_service(EgEngine *e, Case *cases, size_t n_cases) {
    TestServer s;
    if (test_server_start(&s, e, (EgServerOptions){0}, "mllama-instruct")) return;
    Egret__V1__GetModelInfoRequest ireq = EGRET__V1__GET_MODEL_INFO_REQUEST__INIT;
    uint8_t buf[64];
    size_t len = protobuf_c_message_pack(&ireq.base, buf);
    Egret__V1__ModelInfo *info = NULL;
    char msg[256];
    grpc_status_code code = test_call(s.addr, NULL, "/egret.v1.Egret/GetModelInfo", buf, len, 30,
                                      got_info, &info, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_OK && info &&
              strcmp(info->prompt_template_name, "mllama-instruct") == 0,
          "GetModelInfo: status %d '%s', template '%s'", code, msg,
          info ? info->prompt_template_name : "");
    if (info) egret__v1__model_info__free_unpacked(info, NULL);
    for (size_t i = 0; i < n_cases; i++) {
        const Case *c = &cases[i];
        size_t n_gen = (size_t)cJSON_GetArraySize(c->generated_ids);
        for (int stream = 0; stream < 2; stream++) {
            EgRequest req = case_request(c, 16);
            EgError err = {0};
            EgClientAnswer a = {0};
            EgCallStatus st = {0};
            EgClient *cl = eg_client_connect(s.addr, NULL, &err);
            int rc = cl ? eg_client_generate(cl, &req, stream, 60, NULL, NULL, &a, &st, &err) : -1;
            eg_client_close(cl);
            CHECK(rc == 0 && st.code == GRPC_STATUS_OK, "%s (stream %d): %s / %d '%s'", c->name,
                  stream, err.msg, (int)st.code, st.message);
            if (rc == 0 && st.code == GRPC_STATUS_OK) {
                CHECK(ids_equal(c->generated_ids, n_gen - 1, a.ids, a.n_ids, 1) &&
                          a.generated_tokens == n_gen - 1,
                      "%s (stream %d): %zu ids (%u generated) differ from HF's %zu before "
                      "the stop",
                      c->name, stream, a.n_ids, a.generated_tokens, n_gen - 1);
                CHECK(a.finish_reason == EGRET__V1__FINISH_REASON__FINISH_REASON_END_OF_SEQUENCE,
                      "%s (stream %d): finish reason %d", c->name, stream, a.finish_reason);
                CHECK(strcmp(a.text, c->text) == 0, "%s (stream %d): text '%s', HF's '%s'", c->name,
                      stream, a.text, c->text);
                CHECK((int)a.prompt_tokens == cJSON_GetArraySize(c->input_ids),
                      "%s (stream %d): %u prompt tokens", c->name, stream, a.prompt_tokens);
            }
            eg_client_answer_free(&a);
        }
    }
    free(test_server_stop(&s));
}

int main(void) {
    size_t len;
    char *json = (char *)test_read_file(test_data_path(FOLDER "/instruct_golden.json"), &len);
    REQUIRE(json != NULL, "cannot read instruct_golden.json");
    cJSON *golden = cJSON_ParseWithLength(json, len);
    const cJSON *cases_json = cJSON_GetObjectItem(golden, "cases");
    size_t n_cases = (size_t)cJSON_GetArraySize(cases_json);
    REQUIRE(n_cases >= 4, "instruct_golden.json should hold at least 4 cases");
    int32_t eot = cJSON_GetObjectItem(golden, "eot_id")->valueint;
    int32_t eom = cJSON_GetObjectItem(golden, "eom_id")->valueint;

    EgError err = {0};
    EgEngineOptions opt = {.model = {.fp32 = 1}, .limits = {.max_images = 4}};
    EgEngine *e = eg_engine_open(test_data_path(FOLDER), &opt, &err);
    REQUIRE(e != NULL, "open: %s", err.msg);
    EgEngineInfo info;
    eg_engine_describe(e, &info);
    /* no egret_template.json: the tokenizer's chat template picks the Instruct built-in */
    CHECK(strcmp(eg_template_name(info.prompt_template), "mllama-instruct") == 0, "template %s",
          eg_template_name(info.prompt_template));
    EgTokenizer *tok = eg_tokenizer_load(test_data_path(FOLDER "/tokenizer.json"), &err);
    REQUIRE(tok != NULL, "tokenizer: %s", err.msg);
    CHECK(eg_tokenizer_find(tok, "<|eot_id|>") == eot, "<|eot_id|> is %d in the tokenizer",
          eg_tokenizer_find(tok, "<|eot_id|>"));
    CHECK(eg_tokenizer_find(tok, "<|eom_id|>") == eom, "<|eom_id|> is %d in the tokenizer",
          eg_tokenizer_find(tok, "<|eom_id|>"));

    Case *cases = calloc(n_cases, sizeof *cases);
    REQUIRE(cases != NULL, "out of memory");
    for (size_t i = 0; i < n_cases; i++) {
        case_load(cJSON_GetArrayItem(cases_json, (int)i), &cases[i]);
        check_prompt(info.prompt_template, tok, &cases[i]);
        check_engine(e, &cases[i], eot, eom);
    }
    check_service(e, cases, n_cases);

    for (size_t i = 0; i < n_cases; i++)
        case_free(&cases[i]);
    free(cases);
    eg_tokenizer_free(tok);
    eg_engine_close(e);
    CHECK(eg_vk_validation_message_count() == 0, "the Vulkan validation layer reported %d messages",
          eg_vk_validation_message_count());
    cJSON_Delete(golden);
    free(json);
    return test_finish();
}
