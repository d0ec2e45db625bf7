/* The gRPC service end to end over a unix socket with the demo model: answers equal the engine's
 * own, unary and streamed answers agree, few-shot examples equal the same prompt written as
 * parts; health, model info, API keys; every limit and bad input answered with the right status
 * and a message naming it while the server keeps serving; cancellation and deadlines stop the
 * work within a step; draining lets calls in flight finish, or cancels them after the grace. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "egret/internal/descriptor_lite.pb-c.h"
#include "egret/v1/egret.pb-c.h"
#include "engine/engine_internal.h" /* the device-memory ceiling of the engine's model */
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "server/grpc_server.h"
#include "server/proto_request.h"
#include "test_util.h"
#include "tools/grpc_client.h"
#include "tools/shapes_world.h"

static EgEngine *engine;
static unsigned char *img[3];
static size_t img_len[3];
static const char *const IMAGE_FILES[3] = {"shapes-cases/images/c001_0.png",
                                           "shapes-cases/images/c001_1.png",
                                           "shapes-cases/images/c001_2.png"};

/* ---- requests ---- */


static EgRequestPart image_part(int i) {
    return (EgRequestPart){.is_image = 1, .image = img[i], .image_len = img_len[i]};
}

typedef struct Outcome {
    EgClientAnswer a;
    EgCallStatus st;
    int rc;
} Outcome;

static Outcome call(const char *addr, const EgClientOptions *copt, const EgRequest *req,
                    int stream, double timeout_s, EgClientTextFn fn, void *user) {
    Outcome o;
    memset(&o, 0, sizeof o);
    EgError err = {0};
    EgClient *c = eg_client_connect(addr, copt, &err);
    o.rc = c ? eg_client_generate(c, req, stream, timeout_s, fn, user, &o.a, &o.st, &err) : -1;
    CHECK(o.rc == 0, "call failed: %s", err.msg);
    eg_client_close(c);
    return o;
}

static void expect_status(const char *what, const Outcome *o, grpc_status_code code,
                          const char *needle) {
    CHECK(o->st.code == code, "%s: status %d (%s), want %d", what, (int)o->st.code, o->st.message,
          (int)code);
    CHECK(!needle || strstr(o->st.message, needle), "%s: message '%s' should mention '%s'", what,
          o->st.message, needle);
}

/* The engine's own answer, for comparison. */
static EgGenerateResult direct(const EgRequest *req) {
    EgGenerateResult r;
    EgError err = {0};
    EgStatus st = eg_engine_generate(engine, req, NULL, NULL, &r, NULL, &err);
    CHECK(st == EG_STATUS_OK, "engine: %s", err.msg);
    return r;
}

static int same_answer(const EgGenerateResult *want, const EgClientAnswer *got) {
    if (strcmp(want->text, got->text) != 0 || want->n_ids != got->n_ids) return 0;
    for (size_t i = 0; i < want->n_ids; i++)
        if ((uint32_t)want->ids[i] != got->ids[i]) return 0;
    return 1;
}

/* A freshly drawn scene (shapes world) as PNG bytes: an image no cache has seen. */
static unsigned char *fresh_png(uint64_t seed, size_t *len) {
    TestPng p = test_shapes_png(seed, 0);
    *len = p.len;
    return p.bytes;
}

typedef struct Background {
    const char *addr;
    EgRequest req;
    EgClientTextFn fn; /* called with each message of the stream (optional) */
    void *user;
    double timeout_s; /* the call's deadline (0: none) */
    Outcome out;
    pthread_t thread;
} Background;

static void *background_call(void *arg) {
    Background *b = arg;
    b->out = call(b->addr, NULL, &b->req, 1, b->timeout_s, b->fn, b->user);
    return NULL;
}

/* ---- answers equal the engine's ---- */

static void test_answers(void) {
    /* Zero-shot caption through the template; raw interleaved parts; few-shot examples. */
    EgRequestPart caption_parts[1] = {image_part(2)};
    EgRequest caption = test_greedy_request(32);
    caption.parts = caption_parts;
    caption.n_parts = 1;
    caption.use_template = 1;

    EgRequestPart raw_parts[2] = {image_part(0), test_text_part("Output: a")};
    EgRequest raw = test_greedy_request(12);
    raw.parts = raw_parts;
    raw.n_parts = 2;

    EgRequestExample ex[2] = {{img[0], img_len[0], "yellow.", 7}, {img[1], img_len[1], "orange.", 7}};
    EgRequestPart query[1] = {image_part(2)};
    EgRequest fewshot = test_greedy_request(16);
    fewshot.parts = query;
    fewshot.n_parts = 1;
    fewshot.examples = ex;
    fewshot.n_examples = 2;

    const EgRequest *reqs[3] = {&caption, &raw, &fewshot};
    const char *names[3] = {"caption", "raw parts", "few-shot"};
    EgGenerateResult want[3];
    for (int i = 0; i < 3; i++)
        want[i] = direct(reqs[i]); /* before the server shares the engine */
    CHECK(strcmp(want[2].text, "blue.") == 0, "few-shot answer '%s'", want[2].text);
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){0}, "answers")) return;
    for (int i = 0; i < 3; i++) {
        Outcome unary = call(r.addr, NULL, reqs[i], 0, 0, NULL, NULL);
        Outcome stream = call(r.addr, NULL, reqs[i], 1, 0, NULL, NULL);
        expect_status(names[i], &unary, GRPC_STATUS_OK, NULL);
        expect_status(names[i], &stream, GRPC_STATUS_OK, NULL);
        CHECK(same_answer(&want[i], &unary.a), "%s: unary '%s' != engine '%s'", names[i],
              unary.a.text, want[i].text);
        CHECK(same_answer(&want[i], &stream.a), "%s: streamed '%s' != engine '%s'", names[i],
              stream.a.text, want[i].text);
        CHECK(unary.a.n_messages == 1, "%s: unary sent %zu messages", names[i],
              unary.a.n_messages);
        CHECK(stream.a.n_messages >= 2, "%s: the stream came in %zu message(s)", names[i],
              stream.a.n_messages);
        int reason = want[i].finish == EG_FINISH_STOP     ? EGRET__V1__FINISH_REASON__FINISH_REASON_STOP
                     : want[i].finish == EG_FINISH_LENGTH ? EGRET__V1__FINISH_REASON__FINISH_REASON_LENGTH
                                                          : EGRET__V1__FINISH_REASON__FINISH_REASON_END_OF_SEQUENCE;
        CHECK(unary.a.finish_reason == reason && stream.a.finish_reason == reason,
              "%s: finish reasons %d / %d, want %d", names[i], unary.a.finish_reason,
              stream.a.finish_reason, reason);
        CHECK(unary.a.generated_tokens == want[i].n_ids && unary.a.prompt_tokens > 0 &&
                  unary.a.total_s > 0 && stream.a.generated_tokens == want[i].n_ids,
              "%s: usage generated %u/%u prompt %u", names[i], unary.a.generated_tokens,
              stream.a.generated_tokens, unary.a.prompt_tokens);
        eg_client_answer_free(&unary.a);
        eg_client_answer_free(&stream.a);
    }
    /* The few-shot request written out as parts in the template's layout gives the same ids. */
    EgRequestPart as_parts[6] = {image_part(0), test_text_part("Output: yellow.\n"), image_part(1),
                                 test_text_part("Output: orange.\n"), image_part(2),
                                 test_text_part("Output:")};
    const char *stop[1] = {"\n"};
    EgRequest spelled = test_greedy_request(16);
    spelled.parts = as_parts;
    spelled.n_parts = 6;
    spelled.gen.stop = stop;
    spelled.gen.n_stop = 1;
    Outcome o = call(r.addr, NULL, &spelled, 0, 0, NULL, NULL);
    CHECK(o.st.code == GRPC_STATUS_OK && same_answer(&want[2], &o.a),
          "few-shot as parts: '%s' (status %d), want '%s'", o.a.text, (int)o.st.code,
          want[2].text);
    eg_client_answer_free(&o.a);

    /* Together: the three requests twice each, streamed at once, decode in one batch and still
     * give exactly the engine's answers. */
    Background bg[6];
    for (int i = 0; i < 6; i++) {
        bg[i] = (Background){.addr = r.addr, .req = *reqs[i % 3]};
        pthread_create(&bg[i].thread, NULL, background_call, &bg[i]);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(bg[i].thread, NULL);
        CHECK(bg[i].out.st.code == GRPC_STATUS_OK && same_answer(&want[i % 3], &bg[i].out.a),
              "%s in a batch: '%s' (status %d '%s'), want '%s'", names[i % 3], bg[i].out.a.text,
              (int)bg[i].out.st.code, bg[i].out.st.message, want[i % 3].text);
        eg_client_answer_free(&bg[i].out.a);
    }
    for (int i = 0; i < 3; i++)
        eg_generate_result_free(&want[i]);
    free(test_server_stop(&r));
}

/* ---- health, model info, unknown methods, API keys ---- */

static grpc_status_code raw_call(const char *addr, const EgClientOptions *copt,
                                 const char *method, const ProtobufCMessage *msg,
                                 EgClientReplyFn fn, void *user, char *message, size_t cap) {
    uint8_t buf[256];
    size_t len = msg ? protobuf_c_message_pack(msg, buf) : 0;
    return test_call(addr, copt, method, buf, len, 30, fn, user, message, cap);
}

static int got_health(void *user, const uint8_t *data, size_t len) {
    Grpc__Health__V1__HealthCheckResponse *r =
        grpc__health__v1__health_check_response__unpack(NULL, len, data);
    *(int *)user = r ? (int)r->status : -1;
    if (r) grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    return 0;
}

static int got_info(void *user, const uint8_t *data, size_t len) {
    *(Egret__V1__ModelInfo **)user = egret__v1__model_info__unpack(NULL, len, data);
    return 0;
}

static void test_health_info_auth(void) {
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){.api_key = "s3cret-key", .max_queue = 3}, "auth"))
        return;
    Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    int status = -1;
    grpc_status_code code = raw_call(r.addr, NULL, "/grpc.health.v1.Health/Check", &hreq.base,
                                     got_health, &status, NULL, 0);
    CHECK(code == GRPC_STATUS_OK && status == 1, "health: status %d, serving %d", code, status);
    hreq.service = "egret.v1.Egret";
    code = raw_call(r.addr, NULL, "/grpc.health.v1.Health/Check", &hreq.base, got_health,
                    &status, NULL, 0);
    CHECK(code == GRPC_STATUS_OK && status == 1, "health egret.v1.Egret: %d %d", code, status);
    hreq.service = "no.such.Service";
    code = raw_call(r.addr, NULL, "/grpc.health.v1.Health/Check", &hreq.base, NULL, NULL, NULL, 0);
    CHECK(code == GRPC_STATUS_NOT_FOUND, "health of an unknown service: status %d", code);

    char msg[512];
    /* named only to a caller with the key (tests/test_server_input.c: without it) */
    EgClientOptions keyed = {.api_key = "s3cret-key"};
    code = raw_call(r.addr, &keyed, "/egret.v1.Egret/Nope", NULL, NULL, NULL, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_UNIMPLEMENTED && strstr(msg, "/egret.v1.Egret/Nope"),
          "unknown method: %d '%s'", code, msg);

    /* API key: missing, wrong, a prefix of the right one, right. */
    Egret__V1__GetModelInfoRequest ireq = EGRET__V1__GET_MODEL_INFO_REQUEST__INIT;
    const char *keys[4] = {NULL, "wrong-key!", "s3cret-ke", "s3cret-key"};
    for (int i = 0; i < 4; i++) {
        EgClientOptions copt = {.api_key = keys[i]};
        Egret__V1__ModelInfo *info = NULL;
        code = raw_call(r.addr, &copt, "/egret.v1.Egret/GetModelInfo", &ireq.base, got_info,
                        &info, msg, sizeof msg);
        if (i < 3) {
            CHECK(code == GRPC_STATUS_UNAUTHENTICATED && strstr(msg, "API key"),
                  "key '%s': status %d '%s'", keys[i] ? keys[i] : "(none)", code, msg);
        } else {
            CHECK(code == GRPC_STATUS_OK && info, "right key: status %d '%s'", code, msg);
            if (info) {
                EgEngineInfo described;
                eg_engine_describe(engine, &described);
                CHECK(strcmp(info->name, "shapes-idefics") == 0, "name %s", info->name);
                CHECK(strcmp(info->architecture, "IdeficsForVisionText2Text") == 0, "arch %s",
                      info->architecture);
                CHECK(info->image_size == 64 && info->vocab_size == 477, "image %u vocab %u",
                      info->image_size, info->vocab_size);
                CHECK(info->n_template_stop == 1 && strcmp(info->template_stop[0], "\n") == 0 &&
                          strstr(info->prompt_template, "Output: {text}"),
                      "template %s", info->prompt_template);
                /* the demo folder ships its template file */
                CHECK(strncmp(info->prompt_template_name, "file:", 5) == 0 &&
                          strstr(info->prompt_template_name, "shapes-idefics/egret_template.json"),
                      "template name %s", info->prompt_template_name);
                CHECK(info->limits && info->limits->max_queue == 3 &&
                          info->limits->max_images == described.limits.max_images &&
                          info->limits->context_length == described.limits.context_length &&
                          info->limits->max_request_bytes == 64u << 20 &&
                          info->limits->prefill_chunk == described.prefill_chunk,
                      "limits");
                CHECK(*info->device && (strcmp(info->precision, "fp32") == 0), "device %s %s",
                      info->device, info->precision);
                /* the weights by group as the engine counted them, all five dense fp32 */
                uint64_t sum = 0;
                for (size_t g = 0; g < info->n_weight_groups; g++) {
                    const Egret__V1__WeightGroup *wg = info->weight_groups[g];
                    sum += wg->bytes;
                    CHECK(!strcmp(wg->format, "fp32") && wg->bytes > 0 && wg->tensors > 0,
                          "weight group %s: %s, %llu bytes, %u tensors", wg->name, wg->format,
                          (unsigned long long)wg->bytes, wg->tensors);
                }
                CHECK(info->n_weight_groups == 5 && sum == info->weight_bytes &&
                          info->weight_bytes == eg_weight_report_bytes(described.weights) &&
                          !strcmp(info->weight_groups[0]->name, "vision projections"),
                      "%zu weight groups, %llu bytes (engine: %llu)", info->n_weight_groups,
                      (unsigned long long)info->weight_bytes,
                      (unsigned long long)eg_weight_report_bytes(described.weights));
                egret__v1__model_info__free_unpacked(info, NULL);
            }
        }
    }
    /* Generation needs the key too; x-api-key is accepted as well as a bearer token. */
    EgRequestPart q[1] = {image_part(0)};
    EgRequest req = test_greedy_request(4);
    req.parts = q;
    req.n_parts = 1;
    Outcome o = call(r.addr, NULL, &req, 0, 0, NULL, NULL);
    expect_status("generate without a key", &o, GRPC_STATUS_UNAUTHENTICATED, "API key");
    eg_client_answer_free(&o.a);
    EgClientOptions good = {.api_key = "s3cret-key"};
    o = call(r.addr, &good, &req, 1, 0, NULL, NULL);
    expect_status("generate with the key", &o, GRPC_STATUS_OK, NULL);
    eg_client_answer_free(&o.a);
    free(test_server_stop(&r));
}

/* ---- server reflection ---- */

typedef struct Reflected {
    char text[1024]; /* what came back, summarized */
} Reflected;

static int got_reflection(void *user, const uint8_t *data, size_t len) {
    Reflected *out = user;
    Grpc__Reflection__V1__ServerReflectionResponse *r =
        grpc__reflection__v1__server_reflection_response__unpack(NULL, len, data);
    if (!r) return 1;
    size_t n = strlen(out->text);
    /* message_response is a oneof: its members share storage, so the case decides */
    int which = r->message_response_case;
    if (which == GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE)
        for (size_t i = 0; i < r->list_services_response->n_service; i++)
            n += (size_t)snprintf(out->text + n, sizeof out->text - n, "service %s;",
                                  r->list_services_response->service[i]->name);
    if (which == GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE)
        for (size_t i = 0; i < r->file_descriptor_response->n_file_descriptor_proto; i++) {
            ProtobufCBinaryData b = r->file_descriptor_response->file_descriptor_proto[i];
            Egret__Internal__FileLite *f = egret__internal__file_lite__unpack(NULL, b.len, b.data);
            n += (size_t)snprintf(out->text + n, sizeof out->text - n, "file %s;",
                                  f ? f->name : "(unparsable)");
            if (f) egret__internal__file_lite__free_unpacked(f, NULL);
        }
    if (which == GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE)
        snprintf(out->text + n, sizeof out->text - n, "error %d;",
                 r->error_response->error_code);
    grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
    return 0;
}

static void test_reflection(void) {
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){0}, "reflection")) return;
    const char *methods[2] = {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                              "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"};
    struct {
        int which; /* 0 list services, 1 symbol, 2 file */
        const char *arg, *want;
    } cases[] = {
        {0, "", "service egret.v1.Egret;service grpc.health.v1.Health;"},
        {1, "egret.v1.Egret", "file egret/v1/egret.proto;"},
        {1, "egret.v1.Egret.GenerateStream", "file egret/v1/egret.proto;"},
        {1, "egret.v1.GenerateRequest", "file egret/v1/egret.proto;"},
        {1, "grpc.health.v1.HealthCheckResponse.ServingStatus", "file grpc/health/v1/health.proto;"},
        {2, "grpc/health/v1/health.proto", "file grpc/health/v1/health.proto;"},
        {1, "egret.v1.NoSuchThing", "error 5;"},
        {2, "../../etc/passwd", "error 5;"},
    };
    for (int m = 0; m < 2; m++)
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            Grpc__Reflection__V1__ServerReflectionRequest req =
                GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
            if (cases[i].which == 0) {
                req.message_request_case =
                    GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
                req.list_services = (char *)cases[i].arg;
            } else if (cases[i].which == 1) {
                req.message_request_case =
                    GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
                req.file_containing_symbol = (char *)cases[i].arg;
            } else {
                req.message_request_case =
                    GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
                req.file_by_filename = (char *)cases[i].arg;
            }
            Reflected got = {""};
            grpc_status_code code =
                raw_call(r.addr, NULL, methods[m], &req.base, got_reflection, &got, NULL, 0);
            CHECK(code == GRPC_STATUS_OK && strstr(got.text, cases[i].want),
                  "%s %s: status %d, got '%s', want '%s'", methods[m] + 6, cases[i].arg, code,
                  got.text, cases[i].want);
        }
    free(test_server_stop(&r));
}

/* ---- limits and bad input ---- */

static unsigned char *big_png(size_t *len) {
    return test_read_file(test_data_path("preprocess/rgb_100x75.png"), len);
}

static void test_limits(void) {
    /* Engine limits are the engine's (egret serve sets them from its options): lowered here. */
    EgEngineInfo described;
    eg_engine_describe(engine, &described);
    EgEngineLimits saved = described.limits, lowered = saved;
    lowered.image.max_pixels = 64 * 64;
    lowered.context_length = 256;
    eg_engine_set_limits(engine, &lowered);
    TestServer r;
    EgServerOptions so = {.max_request_bytes = 1u << 20, .default_max_new_tokens = 8};
    if (test_server_start(&r, engine, so, "limits")) return;
    char long_text[4000];
    memset(long_text, 'a', sizeof long_text - 1);
    for (size_t i = 0; i < sizeof long_text - 1; i += 2)
        long_text[i] = ' ';
    long_text[sizeof long_text - 1] = '\0';
    char *huge_text = malloc(256 * 64 + 2); /* over 64 bytes per token of context */
    memset(huge_text, 'x', 256 * 64 + 1);
    huge_text[256 * 64 + 1] = '\0';
    size_t big_len;
    unsigned char *big = big_png(&big_len);
    unsigned char *huge = calloc(3u << 19, 1); /* 1.5 MiB: over the 1 MiB request limit */
    memcpy(huge, img[0], img_len[0]);

    struct Case {
        const char *what;
        EgRequestPart parts[20];
        size_t n_parts;
        float temperature, top_p;
        uint32_t max_new;
        grpc_status_code code;
        const char *needle;
    } cases[] = {
        {"too many images", {image_part(0)}, 17, 0, 1, 4, GRPC_STATUS_RESOURCE_EXHAUSTED, "max_images"},
        {"image over the pixel limit", {{.is_image = 1, .image = big, .image_len = big_len}}, 1, 0, 1, 4,
         GRPC_STATUS_RESOURCE_EXHAUSTED, "limit"},
        {"prompt over the context", {test_text_part(long_text)}, 1, 0, 1, 4, GRPC_STATUS_RESOURCE_EXHAUSTED,
         "context length"},
        {"text over the byte limit", {test_text_part(huge_text)}, 1, 0, 1, 4, GRPC_STATUS_RESOURCE_EXHAUSTED,
         "bytes of text"},
        {"max_new_tokens over the limit", {image_part(0)}, 1, 0, 1, 100000, GRPC_STATUS_RESOURCE_EXHAUSTED,
         "max_new_tokens"},
        {"request over the size limit", {{.is_image = 1, .image = huge, .image_len = 3u << 19}}, 1, 0, 1, 4,
         GRPC_STATUS_RESOURCE_EXHAUSTED, NULL},
        {"not an image", {{.is_image = 1, .image = (const unsigned char *)"hello", .image_len = 5}}, 1, 0, 1,
         4, GRPC_STATUS_INVALID_ARGUMENT, "image 0"},
        {"truncated PNG", {{.is_image = 1, .image = img[0], .image_len = img_len[0] / 2}}, 1, 0, 1, 4,
         GRPC_STATUS_INVALID_ARGUMENT, "image 0"},
        {"invalid UTF-8", {image_part(0), test_text_part("caf\xc3(")}, 2, 0, 1, 4, GRPC_STATUS_INVALID_ARGUMENT,
         "UTF-8"},
        {"empty prompt", {test_text_part("")}, 1, 0, 1, 4, GRPC_STATUS_INVALID_ARGUMENT, "empty"},
        {"no parts", {{0}}, 0, 0, 1, 4, GRPC_STATUS_INVALID_ARGUMENT, "no parts"},
        {"NaN temperature", {image_part(0)}, 1, NAN, 1, 4, GRPC_STATUS_INVALID_ARGUMENT, "temperature"},
        {"negative temperature", {image_part(0)}, 1, -0.5f, 1, 4, GRPC_STATUS_INVALID_ARGUMENT,
         "temperature"},
        {"top_p above 1", {image_part(0)}, 1, 0.7f, 1.5f, 4, GRPC_STATUS_INVALID_ARGUMENT, "top_p"},
        {"negative top_p", {image_part(0)}, 1, 0.7f, -0.1f, 4, GRPC_STATUS_INVALID_ARGUMENT, "top_p"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct Case *k = &cases[i];
        if (k->n_parts == 17)
            for (int j = 1; j < 17; j++)
                k->parts[j] = image_part(0);
        EgRequest req = test_greedy_request(k->max_new);
        req.parts = k->parts;
        req.n_parts = k->n_parts;
        req.gen.sampling.temperature = k->temperature;
        req.gen.sampling.top_p = k->top_p;
        Outcome o = call(r.addr, NULL, &req, (int)(i % 2), 0, NULL, NULL);
        expect_status(k->what, &o, k->code, k->needle);
        eg_client_answer_free(&o.a);
    }
    /* Messages that are not valid requests at all. */
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    EgError err = {0};
    EgCallStatus st;
    EgClient *c = eg_client_connect(r.addr, NULL, &err);
    CHECK(eg_client_call(c, "/egret.v1.Egret/Generate", garbage, sizeof garbage, 30, NULL, NULL,
                         &st, &err) == 0 &&
              st.code == GRPC_STATUS_INVALID_ARGUMENT && strstr(st.message, "GenerateRequest"),
          "garbage request: %d '%s'", (int)st.code, st.message);
    /* A part with neither text nor image (an empty Part message in field 1). */
    static const uint8_t empty_part[] = {0x0a, 0x00};
    CHECK(eg_client_call(c, "/egret.v1.Egret/Generate", empty_part, sizeof empty_part, 30, NULL,
                         NULL, &st, &err) == 0 &&
              st.code == GRPC_STATUS_INVALID_ARGUMENT && strstr(st.message, "part 0"),
          "empty part: %d '%s'", (int)st.code, st.message);
    /* Structural limits, checked on the wire before unpacking: 5000 empty parts; 17 stop
     * strings ("\n", field 8). */
    uint8_t *many = malloc(2 * 5000);
    for (int i = 0; i < 5000; i++)
        memcpy(many + 2 * i, (const uint8_t[]){0x0a, 0x00}, 2);
    CHECK(eg_client_call(c, "/egret.v1.Egret/Generate", many, 2 * 5000, 30, NULL, NULL, &st,
                         &err) == 0 &&
              st.code == GRPC_STATUS_RESOURCE_EXHAUSTED && strstr(st.message, "limit is 4096"),
          "5000 parts: %d '%s'", (int)st.code, st.message);
    for (int i = 0; i < 17; i++)
        memcpy(many + 3 * i, (const uint8_t[]){0x42, 0x01, '\n'}, 3);
    CHECK(eg_client_call(c, "/egret.v1.Egret/Generate", many, 3 * 17, 30, NULL, NULL, &st,
                         &err) == 0 &&
              st.code == GRPC_STATUS_INVALID_ARGUMENT && strstr(st.message, "stop strings"),
          "17 stops: %d '%s'", (int)st.code, st.message);
    free(many);
    /* Unknown fields are ignored (proto3): field 99, varint 1, next to a valid request. */
    EgRequestPart q[1] = {image_part(0)};
    EgRequest req = test_greedy_request(0); /* 0: the server's default (8) */
    req.parts = q;
    req.n_parts = 1;
    uint8_t *bytes;
    size_t len;
    if (eg_proto_request_encode(&req, &bytes, &len, &err)) {
        CHECK(0, "encode: %s", err.msg);
        return;
    }
    uint8_t *with_unknown = malloc(len + 3);
    memcpy(with_unknown, bytes, len);
    memcpy(with_unknown + len, (const uint8_t[]){0x98, 0x06, 0x01}, 3);
    CHECK(eg_client_call(c, "/egret.v1.Egret/Generate", with_unknown, len + 3, 30, NULL, NULL,
                         &st, &err) == 0 &&
              st.code == GRPC_STATUS_OK,
          "unknown field: %d '%s'", (int)st.code, st.message);
    free(with_unknown);
    free(bytes);
    eg_client_close(c);
    /* After all of that the server still answers, with the default max_new_tokens. */
    Outcome o = call(r.addr, NULL, &req, 1, 0, NULL, NULL);
    expect_status("after the bad requests", &o, GRPC_STATUS_OK, NULL);
    CHECK(o.a.generated_tokens >= 1 && o.a.generated_tokens <= 8, "default max_new_tokens: %u",
          o.a.generated_tokens);
    eg_client_answer_free(&o.a);
    free(big);
    free(huge);
    free(huge_text);
    free(test_server_stop(&r));
    eg_engine_set_limits(engine, &saved);
}

/* ---- cancellation, deadlines, queue depth, draining ---- */

static int cancel_after_3(void *user, const char *text, size_t len) {
    (void)text;
    (void)len;
    return ++*(int *)user >= 3;
}

/* Sets the atomic_int at user at the stream's first message: the call is in flight. */
static int note_started(void *user, const char *text, size_t len) {
    (void)text;
    (void)len;
    atomic_store((atomic_int *)user, 1);
    return 0;
}

/* Cancels the stream at its next message once the atomic_int at user is set. */
static int cancel_once_set(void *user, const char *text, size_t len) {
    (void)text;
    (void)len;
    return atomic_load((atomic_int *)user) != 0;
}

static EgRequest long_request(EgRequestPart *q, uint32_t n) {
    q[0] = image_part(0);
    EgRequest req = test_greedy_request(n);
    req.parts = q;
    req.n_parts = 1;
    req.gen.ignore_eos = 1;
    return req;
}




static void test_cancel_and_deadline(void) {
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){.max_queue = 1, .max_batch = 1}, "cancel"))
        return;
    EgRequestPart q[1];
    /* 1024 tokens (the limit): at least 2 s of decoding even at 500 tokens/s, so the 1 s deadline
     * below always passes mid-answer */
    EgRequest req = long_request(q, 1024);
    int seen = 0;
    Outcome o = call(r.addr, NULL, &req, 1, 0, cancel_after_3, &seen);
    expect_status("cancelled stream", &o, GRPC_STATUS_CANCELLED, NULL);
    eg_client_answer_free(&o.a);
    o = call(r.addr, NULL, &req, 0, 1.0, NULL, NULL);
    expect_status("deadline", &o, GRPC_STATUS_DEADLINE_EXCEEDED, NULL);
    eg_client_answer_free(&o.a);
    /* A deadline that passes during prefill (16 images never seen, so none is cached, and a
     * prompt of about 1200 tokens fed in chunks): the work stops at the next chunk. The long
     * text keeps the prefill well past the deadline however fast the kernels get (the 16
     * images alone once took 0.2 s and no longer do). */
    EgRequestPart sixteen[17];
    unsigned char *fresh[16];
    for (int i = 0; i < 16; i++) {
        size_t len = 0;
        fresh[i] = fresh_png(test_rng_u64(), &len);
        sixteen[i] = (EgRequestPart){.is_image = 1, .image = fresh[i], .image_len = len};
    }
    static char long_text[250 * 6 + 1]; /* "shape " is about 5 tokens of the demo model's */
    for (int w = 0; w < 250; w++)
        memcpy(long_text + 6 * w, "shape ", 6);
    sixteen[16] = test_text_part(long_text);
    EgRequest heavy = test_greedy_request(400);
    heavy.parts = sixteen;
    heavy.n_parts = 17;
    heavy.gen.ignore_eos = 1;
    /* The deadline must pass after the server has the call: on a loaded machine 0.2 s can run
     * out while the 16 images are still being sent, so the call is repeated (with a longer
     * deadline) until GetStats shows the server accepted it. */
    Egret__V1__ServerStats *st0 = test_server_stats(r.addr);
    uint64_t accepted_before = st0 ? st0->requests_total : 0;
    if (st0) egret__v1__server_stats__free_unpacked(st0, NULL);
    int reached = 0;
    for (int attempt = 0; attempt < 5 && !reached; attempt++) {
        o = call(r.addr, NULL, &heavy, 1, 0.2 * (1 << attempt), NULL, NULL);
        expect_status("deadline during prefill", &o, GRPC_STATUS_DEADLINE_EXCEEDED, NULL);
        eg_client_answer_free(&o.a);
        Egret__V1__ServerStats *st1 = test_server_stats(r.addr);
        reached = st1 && st1->requests_total > accepted_before;
        if (st1) egret__v1__server_stats__free_unpacked(st1, NULL);
    }
    CHECK(reached, "the request with 16 images never reached the server before its deadline");
    for (int i = 0; i < 16; i++)
        free(fresh[i]);

    /* Queue depth 1: one running, one waiting, the third is turned away. The running call
     * asks for 1024 tokens and is cancelled once the third has been turned away: a short one
     * could end, and let the waiting one in, before the third arrives (40 tokens sometimes did,
     * once decoding got faster). The waiting one then runs to its end. */
    /* The expired request may still be finishing its step: start from an idle engine, then
     * (watching GetStats) get one call running and one waiting. */
    test_wait_for_engine(r.addr, 0, 0);
    atomic_int release = 0;
    Background bg[2];
    for (int i = 0; i < 2; i++) {
        bg[i] = (Background){.addr = r.addr,
                             .req = long_request(q, i == 0 ? 1024 : 40),
                             .fn = i == 0 ? cancel_once_set : NULL,
                             .user = i == 0 ? &release : NULL};
        pthread_create(&bg[i].thread, NULL, background_call, &bg[i]);
        test_wait_for_engine(r.addr, 1, (uint32_t)i);
    }
    EgRequest quick = test_greedy_request(2);
    quick.parts = q;
    quick.n_parts = 1;
    o = call(r.addr, NULL, &quick, 0, 0, NULL, NULL);
    expect_status("queue full", &o, GRPC_STATUS_RESOURCE_EXHAUSTED, "max_queue");
    eg_client_answer_free(&o.a);
    atomic_store(&release, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(bg[i].thread, NULL);
        expect_status(i == 0 ? "the running call, cancelled" : "the queued call", &bg[i].out,
                      i == 0 ? GRPC_STATUS_CANCELLED : GRPC_STATUS_OK, NULL);
        if (i == 1)
            CHECK(bg[i].out.a.generated_tokens == 40, "the queued call got %u tokens",
                  bg[i].out.a.generated_tokens);
        eg_client_answer_free(&bg[i].out.a);
    }
    /* The next request is served normally. */
    o = call(r.addr, NULL, &quick, 1, 0, NULL, NULL);
    expect_status("after cancellations", &o, GRPC_STATUS_OK, NULL);
    eg_client_answer_free(&o.a);
    char *log = test_server_stop(&r);
    /* The cancelled and expired requests stopped within a step or two, far from 1024 tokens.
     * A client whose deadline passes may reach the server as a cancellation (its own timer
     * fires first and it resets the stream), so an expiry is logged DEADLINE_EXCEEDED or
     * CANCELLED; the requests are told apart by method and images. */
    long stream_cancelled = -1, unary_expired = -1;
    int prefill_expiries = 0;
    char *save = NULL;
    for (char *line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int ended_early =
            strstr(line, "status=CANCELLED ") || strstr(line, "status=DEADLINE_EXCEEDED ");
        const char *g = strstr(line, "generated=");
        long generated = g ? strtol(g + 10, NULL, 10) : -1;
        if (!ended_early) continue;
        if (strstr(line, " GenerateStream ") && strstr(line, " images=1 ") &&
            stream_cancelled < 0)
            stream_cancelled = generated;
        else if (strstr(line, " Generate ") && strstr(line, " images=1 "))
            unary_expired = generated;
        else if (strstr(line, " images=16 ") || strstr(line, " images=0 ")) {
            /* the 16-image request (images=0: dropped before it ran, so nothing generated) */
            CHECK(generated >= 0 && generated <= 1, "a request expired in prefill generated %ld",
                  generated);
            prefill_expiries++;
        }
    }
    CHECK(prefill_expiries >= 1, "no log line for the request that expired in prefill");
    CHECK(stream_cancelled >= 3 && stream_cancelled <= 10,
          "the cancelled request generated %ld tokens", stream_cancelled);
    CHECK(unary_expired >= 0 && unary_expired < 1024,
          "the expired request ran to the end (%ld tokens)", unary_expired);
    free(log);
}

/* ---- the image stage: off the engine's thread, stopped by deadlines, a pixel budget ---- */

/* A stream's messages, counted; the stream is cancelled once stop is set. */
typedef struct Counter {
    atomic_int messages, stop;
} Counter;

static int count_message(void *user, const char *text, size_t len) {
    (void)text;
    (void)len;
    Counter *c = user;
    atomic_fetch_add(&c->messages, 1);
    return atomic_load(&c->stop);
}

/* n JPEGs of about 1.3 KB declaring side x side pixels each (never seen before), as parts. */
static void bomb_parts(EgRequestPart *parts, TestPng *bombs, int n, uint32_t side) {
    for (int i = 0; i < n; i++) {
        bombs[i] = test_jpeg_declaring(side, side, test_rng_u64());
        parts[i] =
            (EgRequestPart){.is_image = 1, .image = bombs[i].bytes, .image_len = bombs[i].len};
    }
}

/* Polls GetStats (up to 60 s) until nothing is preparing or running; returns the images decoded. */
static uint64_t wait_for_idle(const char *addr) {
    for (int tries = 0; tries < 1200; tries++) {
        Egret__V1__ServerStats *now = test_server_stats(addr);
        uint64_t decoded = now ? now->images_decoded : 0;
        int idle = now && now->preparing == 0 && now->running == 0;
        if (now) egret__v1__server_stats__free_unpacked(now, NULL);
        if (idle) return decoded;
        usleep(50 * 1000);
    }
    CHECK(0, "the engine never went idle");
    return 0;
}

static void test_image_stage(void) {
    enum { SIDE = 4000, N = 16 };
    EgEngineLimits saved = engine->limits;
    /* 16 large-declared images fit this budget; 6 of 7000x7000 (294 M pixels) do not. */
    engine->limits.max_request_pixels = (uint64_t)N * SIDE * SIDE;
    EgRequestPart over_parts[7];
    TestPng over_bombs[6];
    bomb_parts(over_parts, over_bombs, 6, 7000);
    over_parts[6] = test_text_part("Output:");
    EgRequest over = test_greedy_request(1);
    over.parts = over_parts;
    over.n_parts = 7;
    /* in-process (egret run, eg_engine_generate): the same limit */
    EgGenerateResult gen;
    EgError err = {0};
    uint64_t decoded_before = atomic_load(&engine->images_decoded);
    EgStatus st = eg_engine_generate(engine, &over, NULL, NULL, &gen, NULL, &err);
    CHECK(st == EG_STATUS_RESOURCE_EXHAUSTED && strstr(err.msg, "max_request_pixels") &&
              strstr(err.msg, "294000000") && strstr(err.msg, "256000000"),
          "in-process pixel budget: status %d '%s'", (int)st, err.msg);
    CHECK(atomic_load(&engine->images_decoded) == decoded_before,
          "the request over the pixel budget decoded %llu images",
          (unsigned long long)(atomic_load(&engine->images_decoded) - decoded_before));
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){.decode_workers = 2}, "images")) {
        engine->limits = saved;
        return;
    }

    /* Over the budget: refused from the headers, before anything is decoded. */
    Egret__V1__ServerStats *st0 = test_server_stats(r.addr);
    Outcome o = call(r.addr, NULL, &over, 0, 0, NULL, NULL);
    expect_status("over the request's pixel budget", &o, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "max_request_pixels");
    CHECK(strstr(o.st.message, "294000000") && strstr(o.st.message, "256000000"),
          "the budget's message names the figures: '%s'", o.st.message);
    eg_client_answer_free(&o.a);
    Egret__V1__ServerStats *st1 = test_server_stats(r.addr);
    if (st0 && st1)
        CHECK(st1->images_decoded == st0->images_decoded,
              "the request over the budget decoded %llu images",
              (unsigned long long)(st1->images_decoded - st0->images_decoded));
    if (st0) egret__v1__server_stats__free_unpacked(st0, NULL);
    if (st1) egret__v1__server_stats__free_unpacked(st1, NULL);
    for (int i = 0; i < 6; i++)
        free(over_bombs[i].bytes);

    /* A stream keeps getting tokens while another request's 16 images decode: between two
     * looks at GetStats that both find the images being prepared (the first after image work
     * began, the second before it ended), the stream received messages. On the engine's thread,
     * the decoding would hold every stream still. */
    Counter counter = {0};
    EgRequestPart q[1];
    Background stream = {
        .addr = r.addr, .req = long_request(q, 1024), .fn = count_message, .user = &counter};
    pthread_create(&stream.thread, NULL, background_call, &stream);
    for (int tries = 0; tries < 6000 && atomic_load(&counter.messages) == 0; tries++)
        usleep(10 * 1000);
    EgRequestPart heavy_parts[N + 1];
    TestPng bombs[N];
    bomb_parts(heavy_parts, bombs, N, SIDE);
    heavy_parts[N] = test_text_part("Output:");
    EgRequest heavy = test_greedy_request(1);
    heavy.parts = heavy_parts;
    heavy.n_parts = N + 1;
    /* the deadline ends it early where decoding is slow (sanitizers) */
    Background images = {.addr = r.addr, .req = heavy, .timeout_s = 10};
    pthread_create(&images.thread, NULL, background_call, &images);
    int first = -1, during = 0, looks = 0;
    for (int tries = 0; tries < 6000 && during < 5; tries++) {
        int before = atomic_load(&counter.messages);
        Egret__V1__ServerStats *now = test_server_stats(r.addr);
        int preparing = now && now->preparing == 1;
        if (now) egret__v1__server_stats__free_unpacked(now, NULL);
        if (preparing && first < 0) {
            first = atomic_load(&counter.messages);
            looks++;
        } else if (preparing) {
            during = before - first;
            looks++;
        } else if (first >= 0) {
            break; /* the image work is over */
        }
        usleep(10 * 1000);
    }
    CHECK(first >= 0, "GetStats never showed the request's images being prepared");
    CHECK(during >= 5,
          "the stream got %d messages while the images were prepared (%d looks); it should "
          "keep streaming",
          during, looks);
    pthread_join(images.thread, NULL);
    CHECK(images.out.st.code == GRPC_STATUS_OK ||
              images.out.st.code == GRPC_STATUS_DEADLINE_EXCEEDED,
          "the request with 16 images: status %d '%s'", (int)images.out.st.code,
          images.out.st.message);
    eg_client_answer_free(&images.out.a);
    atomic_store(&counter.stop, 1);
    pthread_join(stream.thread, NULL);
    expect_status("the stream beside the images", &stream.out, GRPC_STATUS_CANCELLED, NULL);
    eg_client_answer_free(&stream.out.a);

    /* A short deadline: the call ends DEADLINE_EXCEEDED and its image work stops soon after,
     * far from decoding all 16 (new bytes: none is cached). */
    for (int i = 0; i < N; i++)
        free(bombs[i].bytes);
    bomb_parts(heavy_parts, bombs, N, SIDE);
    uint64_t base = wait_for_idle(r.addr);
    o = call(r.addr, NULL, &heavy, 0, 0.5, NULL, NULL);
    expect_status("16 large images, 0.5 s deadline", &o, GRPC_STATUS_DEADLINE_EXCEEDED, NULL);
    eg_client_answer_free(&o.a);
    uint64_t decoded = wait_for_idle(r.addr) - base;
    CHECK(decoded <= N / 2, "%llu of %d images decoded for a call whose deadline passed early",
          (unsigned long long)decoded, N);
    for (int i = 0; i < N; i++)
        free(bombs[i].bytes);

    /* The server serves on. */
    EgRequestPart one[1] = {image_part(1)};
    EgRequest quick = test_greedy_request(2);
    quick.parts = one;
    quick.n_parts = 1;
    o = call(r.addr, NULL, &quick, 1, 0, NULL, NULL);
    expect_status("after the image tests", &o, GRPC_STATUS_OK, NULL);
    eg_client_answer_free(&o.a);
    /* The expired call reached the engine (a job dropped unrun logs images=0), so its images
     * were being decoded when its deadline passed. */
    char *log = test_server_stop(&r);
    int admitted = 0;
    char *save = NULL;
    for (char *line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        admitted +=
            strstr(line, " Generate ") && strstr(line, " images=16 ") &&
            (strstr(line, "status=DEADLINE_EXCEEDED ") || strstr(line, "status=CANCELLED "));
    CHECK(admitted == 1, "%d log lines for the expired call with its 16 images", admitted);
    free(log);
    engine->limits = saved;
}

static void test_drain(void) {
    /* Calls in flight finish within the grace period. */
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){.grace_s = 60}, "drain")) return;
    EgRequestPart q[1];
    /* In flight before the drain: its first message is out with 199 tokens to go (watching
     * GetStats instead, a 20-token call sometimes ended between two looks). */
    atomic_int started = 0;
    Background bg = {
        .addr = r.addr, .req = long_request(q, 200), .fn = note_started, .user = &started};
    pthread_create(&bg.thread, NULL, background_call, &bg);
    for (int tries = 0; tries < 6000 && !atomic_load(&started); tries++)
        usleep(10 * 1000);
    CHECK(atomic_load(&started), "the call to drain never started streaming");
    char *log = test_server_stop(&r);
    pthread_join(bg.thread, NULL);
    expect_status("in flight during drain", &bg.out, GRPC_STATUS_OK, NULL);
    CHECK(bg.out.a.generated_tokens == 200, "drained call got %u tokens",
          bg.out.a.generated_tokens);
    CHECK(strstr(log, "draining") && strstr(log, "drained"), "drain log: %s", log);
    eg_client_answer_free(&bg.out.a);
    free(log);

    /* Past the grace period they are cancelled with UNAVAILABLE. */
    if (test_server_start(&r, engine, (EgServerOptions){.grace_s = 0.5}, "grace")) return;
    bg = (Background){.addr = r.addr, .req = long_request(q, 1000)};
    pthread_create(&bg.thread, NULL, background_call, &bg);
    test_wait_for_engine(r.addr, 1, 0); /* in flight before the drain */
    log = test_server_stop(&r);
    pthread_join(bg.thread, NULL);
    CHECK(bg.out.st.code == GRPC_STATUS_UNAVAILABLE || bg.out.st.code == GRPC_STATUS_CANCELLED,
          "call past the grace: status %d (%s)", (int)bg.out.st.code, bg.out.st.message);
    CHECK(bg.out.a.generated_tokens < 1000, "call past the grace: %u tokens",
          bg.out.a.generated_tokens);
    eg_client_answer_free(&bg.out.a);
    free(log);
}

/* ---- faults: device memory runs out; stats return to their baseline ---- */

static void test_faults(void) {
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){0}, "faults")) return;
    EgRequestPart q[1] = {image_part(0)};
    EgRequest req = test_greedy_request(4);
    req.parts = q;
    req.n_parts = 1;
    Outcome o = call(r.addr, NULL, &req, 0, 0, NULL, NULL); /* warm up: scratch allocated */
    eg_client_answer_free(&o.a);
    Egret__V1__ServerStats *before = test_server_stats(r.addr);

    /* The debug ceiling EGRET_DEVICE_MEMORY_LIMIT sets, just above what is held now; the
     * request brings an image no cache has seen, so it must allocate to encode it. */
    EgVk *vk = engine->model->info.vk;
    vk->device_bytes_limit = atomic_load(&vk->device_bytes) + (1u << 20);
    size_t fresh_len = 0;
    unsigned char *fresh = fresh_png(test_rng_u64(), &fresh_len);
    EgRequestPart fq[1] = {{.is_image = 1, .image = fresh, .image_len = fresh_len}};
    EgRequest fresh_req = test_greedy_request(4);
    fresh_req.parts = fq;
    fresh_req.n_parts = 1;
    o = call(r.addr, NULL, &fresh_req, 1, 0, NULL, NULL);
    free(fresh);
    expect_status("out of device memory", &o, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "out of device memory");
    eg_client_answer_free(&o.a);
    Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    int serving = -1;
    raw_call(r.addr, NULL, "/grpc.health.v1.Health/Check", &hreq.base, got_health, &serving, NULL,
             0);
    CHECK(serving == 1, "health after device memory ran out: %d", serving);
    vk->device_bytes_limit = 0;
    o = call(r.addr, NULL, &req, 0, 0, NULL, NULL);
    expect_status("after device memory came back", &o, GRPC_STATUS_OK, NULL);
    eg_client_answer_free(&o.a);

    Egret__V1__ServerStats *after = test_server_stats(r.addr);
    if (before && after) {
        /* what the caches keep varies with traffic; everything else returns to the baseline */
        unsigned long long held_before = before->device_memory_bytes - before->image_cache_bytes -
                                         before->prefix_cache_bytes,
                           held_after = after->device_memory_bytes - after->image_cache_bytes -
                                        after->prefix_cache_bytes;
        CHECK(held_after == held_before, "device memory outside the caches: %llu after, %llu before",
              held_after, held_before);
        CHECK(after->image_cache_hits >= 1 && after->prefix_cache_hits >= 1,
              "cache hits: images %llu, prefixes %llu",
              (unsigned long long)after->image_cache_hits,
              (unsigned long long)after->prefix_cache_hits);
        CHECK(after->in_flight == 0 && after->queued == 0 && after->running == 0,
              "in flight %u queued %u running %u", after->in_flight, after->queued,
              after->running);
        CHECK(after->requests_total == 3 && after->requests_ok == 2 && after->requests_rejected == 1,
              "requests: total %llu ok %llu rejected %llu",
              (unsigned long long)after->requests_total, (unsigned long long)after->requests_ok,
              (unsigned long long)after->requests_rejected);
        CHECK(after->generated_tokens == 8 && after->host_memory_bytes > 0 && after->uptime_s > 0,
              "tokens %llu", (unsigned long long)after->generated_tokens);
    }
    if (before) egret__v1__server_stats__free_unpacked(before, NULL);
    if (after) egret__v1__server_stats__free_unpacked(after, NULL);
    free(test_server_stop(&r));
}

int main(void) {
    test_rng_init();
    EgError err = {0};
    EgEngineOptions opt = {.model = {.fp32 = 1}};
    engine = eg_engine_open(test_model_path("shapes-idefics"), &opt, &err);
    REQUIRE(engine != NULL, "open: %s", err.msg);
    for (int i = 0; i < 3; i++) {
        img[i] = test_read_file(test_data_path(IMAGE_FILES[i]), &img_len[i]);
        REQUIRE(img[i], "missing %s", IMAGE_FILES[i]);
    }
    test_answers();
    test_health_info_auth();
    test_reflection();
    test_limits();
    test_cancel_and_deadline();
    test_image_stage();
    test_drain();
    test_faults();
    for (int i = 0; i < 3; i++)
        free(img[i]);
    eg_engine_close(engine);
    return test_finish();
}
