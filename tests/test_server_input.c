/* What a client types reaches the server as data, never as structure: log lines escape every
 * client-supplied string; stop strings must be UTF-8; U+0000 in a text, an example or a stop
 * string is refused rather than cutting the string; special-token strings typed in a text part
 * are plain text; and the small protocol rules (a call reset before its message counts as
 * cancelled, GetStats and GetModelInfo parse their request, the API key is checked before an
 * unknown method is named, use_template's messages). Over a unix socket, with the demo model. */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "egret/v1/egret.pb-c.h"
#include "server/grpc_log_escape.h"
#include "server/grpc_server.h"
#include "test_util.h"
#include "tools/grpc_client.h"

static EgEngine *engine;
static unsigned char *img[2];
static size_t img_len[2];

static EgRequestPart image_part(int i) {
    return (EgRequestPart){.is_image = 1, .image = img[i], .image_len = img_len[i]};
}

static EgClientAnswer generate(const char *addr, const EgRequest *req, EgCallStatus *st) {
    EgClientAnswer a;
    memset(&a, 0, sizeof a);
    EgError err = {0};
    EgClient *c = eg_client_connect(addr, NULL, &err);
    int rc = c ? eg_client_generate(c, req, 0, 30, NULL, NULL, &a, st, &err) : -1;
    CHECK(rc == 0, "call failed: %s", err.msg);
    eg_client_close(c);
    return a;
}

static grpc_status_code raw(const char *addr, const char *key, const char *method,
                            const uint8_t *body, size_t len, EgClientReplyFn fn, void *user,
                            char *msg, size_t cap) {
    EgClientOptions copt = {.api_key = key};
    return test_call(addr, &copt, method, body, len, 30, fn, user, msg, cap);
}

/* ---- the escaping helper ---- */

static void test_escape(void) {
    char out[64];
    eg_log_escape_str(out, sizeof out, "a\nb\r\"c\\\t\x01\x7f");
    CHECK(strcmp(out, "a\\nb\\r\\\"c\\\\\\t\\x01\\x7F") == 0, "controls: %s", out);
    eg_log_escape_str(out, sizeof out, "caf\xc3\xa9 \xbf\xbd \xe2\x80\xae!");
    CHECK(strcmp(out, "caf\xc3\xa9 \\xBF\\xBD \\u{202E}!") == 0, "UTF-8: %s", out);
    char *zero = "x\0y";
    eg_log_escape(out, sizeof out, zero, 3);
    CHECK(strcmp(out, "x\\x00y") == 0, "NUL: %s", out);
    char long_text[200];
    memset(long_text, '\n', sizeof long_text);
    eg_log_escape(out, 20, long_text, sizeof long_text);
    CHECK(strlen(out) < 20 && strcmp(out + strlen(out) - 3, "...") == 0 && !strchr(out, '\n'),
          "capped: %s", out);
    /* a cut never splits a character */
    eg_log_escape_str(out, 16, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
    size_t n = strlen(out);
    CHECK(n >= 3 && strcmp(out + n - 3, "...") == 0 && n % 2 == 1, "capped UTF-8: %s", out);
    eg_log_escape_str(out, sizeof out, NULL);
    CHECK(out[0] == '\0', "NULL: %s", out);
}

/* ---- log injection; unknown methods after the key; GetStats / GetModelInfo bodies ---- */

static int lines_starting(const char *log, const char *prefix) {
    int n = 0;
    size_t k = strlen(prefix);
    for (const char *line = log; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        n += strncmp(line, prefix, k) == 0;
    return n;
}

static void test_protocol(void) {
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){.api_key = "k3y"}, "input-auth")) return;
    const char *forged = "/egret.v1.Egret/Nope\negret: request 999 Generate peer=forged status=OK";
    char msg[512];
    grpc_status_code code = raw(r.addr, NULL, forged, NULL, 0, NULL, NULL, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_UNAUTHENTICATED, "unknown method without the key: %d '%s'", code,
          msg);
    code = raw(r.addr, "k3y", forged, NULL, 0, NULL, NULL, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_UNIMPLEMENTED && strstr(msg, "/egret.v1.Egret/Nope"),
          "unknown method with the key: %d '%s'", code, msg);
    code = raw(r.addr, "k3y", "/egret.v1.Egret/Nope", NULL, 0, NULL, NULL, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_UNIMPLEMENTED, "plain unknown method with the key: %d", code);

    /* GetStats and GetModelInfo take their (empty) request message, and nothing else */
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    static const uint8_t unknown_field[] = {0x98, 0x06, 0x01};
    const char *methods[2] = {"/egret.v1.Egret/GetStats", "/egret.v1.Egret/GetModelInfo"};
    const char *names[2] = {"GetStatsRequest", "GetModelInfoRequest"};
    for (int i = 0; i < 2; i++) {
        code = raw(r.addr, "k3y", methods[i], garbage, sizeof garbage, NULL, NULL, msg, sizeof msg);
        CHECK(code == GRPC_STATUS_INVALID_ARGUMENT && strstr(msg, names[i]),
              "%s with a body that does not parse: %d '%s'", methods[i], code, msg);
        code = raw(r.addr, "k3y", methods[i], NULL, 0, NULL, NULL, msg, sizeof msg);
        CHECK(code == GRPC_STATUS_OK, "%s with an empty body: %d '%s'", methods[i], code, msg);
        code = raw(r.addr, "k3y", methods[i], unknown_field, sizeof unknown_field, NULL, NULL, msg,
                   sizeof msg);
        CHECK(code == GRPC_STATUS_OK, "%s with an unknown field: %d '%s'", methods[i], code, msg);
    }
    char *log = test_server_stop(&r);
    CHECK(lines_starting(log, "egret: request 999") == 0, "a forged log line: %s", log);
    CHECK(strstr(log, "/egret.v1.Egret/Nope\\\\negret: request 999"),
          "the method is logged escaped: %s", log);
    free(log);
}

/* ---- a call reset before its message arrives ---- */

/* Starts a Generate call, sends its headers and resets it before any message. */
static void reset_before_message(const char *addr) {
    grpc_init();
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(addr, creds, NULL);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call *call = grpc_channel_create_call(
        ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
        grpc_slice_from_static_string("/egret.v1.Egret/Generate"), NULL,
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(30, GPR_TIMESPAN)), NULL);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    static int tag;
    CHECK(grpc_call_start_batch(call, &op, 1, &tag, NULL) == GRPC_CALL_OK, "send headers");
    grpc_completion_queue_pluck(
        cq, &tag,
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(10, GPR_TIMESPAN)), NULL);
    usleep(300 * 1000); /* the headers reach the server, which now waits for the message */
    grpc_call_cancel(call, NULL);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    grpc_shutdown();
}

static void test_reset_before_message(void) {
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){0}, "input-reset")) return;
    Egret__V1__ServerStats *before = test_server_stats(r.addr), *after = NULL;
    /* The server sees the call only if the headers arrived before the reset: tried again if not. */
    for (int attempt = 0; attempt < 3 && before; attempt++) {
        reset_before_message(r.addr);
        for (int tries = 0; tries < 100; tries++) { /* up to 10 s */
            if (after) egret__v1__server_stats__free_unpacked(after, NULL);
            after = test_server_stats(r.addr);
            if (!after || after->requests_total > before->requests_total) break;
            usleep(100 * 1000);
        }
        if (after && after->requests_total > before->requests_total) break;
    }
    if (before && after) {
        CHECK(after->requests_total == before->requests_total + 1, "the reset call was not seen");
        CHECK(after->requests_cancelled == before->requests_cancelled + 1 &&
                  after->requests_rejected == before->requests_rejected,
              "reset before its message: cancelled %llu -> %llu, rejected %llu -> %llu",
              (unsigned long long)before->requests_cancelled,
              (unsigned long long)after->requests_cancelled,
              (unsigned long long)before->requests_rejected,
              (unsigned long long)after->requests_rejected);
    }
    if (before) egret__v1__server_stats__free_unpacked(before, NULL);
    if (after) egret__v1__server_stats__free_unpacked(after, NULL);
    char *log = test_server_stop(&r);
    CHECK(strstr(log, " Generate ") && strstr(log, "status=CANCELLED") &&
              !strstr(log, "status=INVALID_ARGUMENT"),
          "reset call logged as cancelled: %s", log);
    free(log);
}

/* ---- stop strings, U+0000, typed special tokens, use_template ---- */

/* Protobuf wire format, by hand: protobuf-c packs strings with strlen, so it cannot send a NUL. */
static size_t put_bytes(uint8_t *out, unsigned field, const void *data, size_t len) {
    size_t n = 0;
    out[n++] = (uint8_t)(field << 3 | 2);
    for (size_t v = len;; v >>= 7) {
        out[n++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80) break;
    }
    memcpy(out + n, data, len);
    return n + len;
}

/* A GenerateRequest with the query image, text part `text` (text_len bytes), one example with
 * text `ex` and one stop string `stop` (each optional), max_new_tokens 4. */
static uint8_t *request_bytes(const char *text, size_t text_len, const char *ex, size_t ex_len,
                              const char *stop, size_t stop_len, size_t *len) {
    uint8_t *out = malloc(2 * img_len[0] + text_len + ex_len + stop_len + 64);
    uint8_t *inner = malloc(img_len[0] + text_len + ex_len + 16);
    size_t n = 0, k = put_bytes(inner, 2, img[0], img_len[0]); /* Part.image */
    n += put_bytes(out + n, 1, inner, k);
    if (text) {
        k = put_bytes(inner, 1, text, text_len); /* Part.text */
        n += put_bytes(out + n, 1, inner, k);
    }
    if (ex) {
        k = put_bytes(inner, 1, img[1], img_len[1]); /* Example.image */
        k += put_bytes(inner + k, 2, ex, ex_len);    /* Example.text */
        n += put_bytes(out + n, 2, inner, k);
    }
    if (stop) n += put_bytes(out + n, 8, stop, stop_len);
    out[n++] = 3 << 3; /* max_new_tokens */
    out[n++] = 4;
    free(inner);
    *len = n;
    return out;
}

static void expect_generate(const char *addr, const char *what, const uint8_t *body, size_t len,
                            grpc_status_code want, const char *needle) {
    char msg[512];
    grpc_status_code code =
        raw(addr, NULL, "/egret.v1.Egret/Generate", body, len, NULL, NULL, msg, sizeof msg);
    CHECK(code == want && (!needle || strstr(msg, needle)), "%s: %d '%s', want %d naming '%s'",
          what, code, msg, want, needle ? needle : "");
}

static void test_texts(void) {
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){0}, "input-text")) return;
    size_t len;
    uint8_t *body = request_bytes("Output: a small", 15, NULL, 0, NULL, 0, &len);
    expect_generate(r.addr, "a valid hand-built request", body, len, GRPC_STATUS_OK, NULL);
    free(body);
    /* U+0000 inside a text part, an example's text, a stop string */
    body = request_bytes("Output:\0 a small red", 20, NULL, 0, NULL, 0, &len);
    expect_generate(r.addr, "NUL in a text part", body, len, GRPC_STATUS_INVALID_ARGUMENT,
                    "part 1");
    free(body);
    body = request_bytes(NULL, 0, "red\0.", 5, NULL, 0, &len);
    expect_generate(r.addr, "NUL in an example", body, len, GRPC_STATUS_INVALID_ARGUMENT,
                    "example 0");
    free(body);
    body = request_bytes("Output:", 7, NULL, 0, ".\0x", 3, &len);
    expect_generate(r.addr, "NUL in a stop string", body, len, GRPC_STATUS_INVALID_ARGUMENT,
                    "stop 0");
    free(body);

    /* a stop string that is not UTF-8 (the tail of U+FFFD) */
    EgRequestPart q[2] = {image_part(0), test_text_part("Output:")};
    EgRequest req = test_greedy_request(8);
    req.parts = q;
    req.n_parts = 2;
    const char *stops[2] = {"\n", "\xbf\xbd"};
    req.gen.stop = stops;
    req.gen.n_stop = 2;
    EgCallStatus st;
    EgClientAnswer a = generate(r.addr, &req, &st);
    CHECK(st.code == GRPC_STATUS_INVALID_ARGUMENT && strstr(st.message, "stop 1") &&
              strstr(st.message, "UTF-8"),
          "stop string not UTF-8: %d '%s'", st.code, st.message);
    eg_client_answer_free(&a);

    /* use_template without the image: the message speaks of use_template */
    EgRequestPart only_text[1] = {test_text_part("a small")};
    req = test_greedy_request(4);
    req.parts = only_text;
    req.n_parts = 1;
    req.use_template = 1;
    a = generate(r.addr, &req, &st);
    CHECK(st.code == GRPC_STATUS_INVALID_ARGUMENT && strstr(st.message, "use_template") &&
              !strstr(st.message, "examples"),
          "use_template without an image: %d '%s'", st.code, st.message);
    eg_client_answer_free(&a);

    /* "<image>" typed before the image is text: it costs the tokens of its characters, not
     * one image token (the image positions themselves: tests/test_prompt.c) */
    uint32_t tokens[2];
    for (int i = 0; i < 2; i++) {
        EgRequestPart typed[3] = {test_text_part("<image>"), image_part(0),
                                  test_text_part("Output:")};
        req = test_greedy_request(4);
        req.parts = typed + (1 - i);
        req.n_parts = 2 + (size_t)i;
        a = generate(r.addr, &req, &st);
        CHECK(st.code == GRPC_STATUS_OK, "typed <image>: %d '%s'", st.code, st.message);
        tokens[i] = a.prompt_tokens;
        eg_client_answer_free(&a);
    }
    CHECK(tokens[1] >= tokens[0] + 3, "typed <image>: %u prompt tokens, %u without it", tokens[1],
          tokens[0]);
    free(test_server_stop(&r));
}

int main(void) {
    test_rng_init();
    test_escape();
    EgError err = {0};
    EgEngineOptions opt = {.model = {.fp32 = 1}};
    engine = eg_engine_open(test_model_path("shapes-idefics"), &opt, &err);
    REQUIRE(engine != NULL, "open: %s", err.msg);
    const char *files[2] = {"shapes-cases/images/c001_0.png", "shapes-cases/images/c001_1.png"};
    for (int i = 0; i < 2; i++) {
        img[i] = test_read_file(test_data_path(files[i]), &img_len[i]);
        REQUIRE(img[i], "missing %s", files[i]);
    }
    test_protocol();
    test_reset_before_message();
    test_texts();
    for (int i = 0; i < 2; i++)
        free(img[i]);
    eg_engine_close(engine);
    return test_finish();
}
