/* What requests can make the server hold in memory, against an in-process server with the demo
 * model: a compressed request that inflates far past its size (a gzip bomb) is refused without
 * inflating it, while a small compressed request is answered; decoded requests are held to a
 * memory budget (RESOURCE_EXHAUSTED past it, the figures in GetStats), without the unknown fields
 * a client may pad them with; connections parking partial messages are held to the transport's
 * memory quota. Growth is read from this process's peak resident set (VmHWM, reset before each
 * measurement), so a peak that is freed again before the answer still counts. */
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "egret/v1/egret.pb-c.h"
#include "service/grpc_client.h"
#include "service/grpc_server.h"
#include "service/proto_request.h"
#include "test_util.h"

#define MiB (1ull << 20)

static EgEngine *engine;
static unsigned char *png;
static size_t png_len;

/* ---- memory ---- */

/* A field of /proc/self/status in bytes (VmRSS, VmHWM). */
static uint64_t proc_status_bytes(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') kb = strtoull(line + n + 1, NULL, 10);
    if (f) fclose(f);
    return kb * 1024;
}

/* Resets the peak resident set to the current one (Linux: clear_refs 5). */
static int reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* ---- requests ---- */

static EgRequest caption_request(EgRequestPart *part) {
    *part = (EgRequestPart){.is_image = 1, .image = png, .image_len = png_len};
    EgRequest q = {.parts = part, .n_parts = 1, .use_template = 1, .gen = {.max_new_tokens = 4}};
    eg_sampling_params_default(&q.gen.sampling);
    return q;
}

/* A packed GenerateRequest (malloc'd). */
static uint8_t *packed(const EgRequest *q, size_t *len) {
    uint8_t *bytes = NULL;
    EgError err = {{0}};
    CHECK(eg_proto_request_encode(q, &bytes, len, &err) == 0, "encode: %s", err.msg);
    return bytes;
}

/* `inflated` bytes of zeros after `head`, gzip-compressed (windowBits 15 + 16) or, with
 * zlib_format, in the zlib format gRPC's "deflate" uses. */
static grpc_slice compress_zeros(const uint8_t *head, size_t head_len, uint64_t inflated,
                                 int zlib_format) {
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(deflateInit2(&z, 9, Z_DEFLATED, zlib_format ? 15 : 15 + 16, 9, Z_DEFAULT_STRATEGY) ==
              Z_OK,
          "deflateInit2");
    size_t cap = head_len + inflated / 500 + (1 << 16);
    uint8_t *out = malloc(cap);
    static uint8_t zeros[1 << 20];
    z.next_out = out;
    z.avail_out = (uInt)cap;
    z.next_in = (uint8_t *)head;
    z.avail_in = (uInt)head_len;
    CHECK(deflate(&z, Z_NO_FLUSH) == Z_OK, "deflate head");
    int ok = 1;
    for (uint64_t left = inflated; left > 0 && ok;) {
        uInt n = left < sizeof zeros ? (uInt)left : (uInt)sizeof zeros;
        z.next_in = zeros;
        z.avail_in = n;
        ok = deflate(&z, Z_NO_FLUSH) == Z_OK && z.avail_in == 0;
        left -= n;
    }
    CHECK(ok && deflate(&z, Z_FINISH) == Z_STREAM_END, "deflate");
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)out, z.total_out);
    deflateEnd(&z);
    free(out);
    return s;
}

/* One Generate call whose message is `body`, already compressed with `algorithm` (the
 * channel's default, so grpc-encoding names it). Returns the status code; message in msg. */
static grpc_status_code compressed_call(const char *addr, grpc_slice body,
                                        grpc_compression_algorithm algorithm, char *msg,
                                        size_t cap) {
    grpc_init();
    grpc_arg arg = {.type = GRPC_ARG_INTEGER,
                    .key = GRPC_COMPRESSION_CHANNEL_DEFAULT_ALGORITHM,
                    .value.integer = (int)algorithm};
    grpc_channel_args args = {1, &arg};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(addr, creds, &args);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(120, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(
        ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
        grpc_slice_from_static_string("/egret.v1.Egret/Generate"), NULL, deadline, NULL);
    grpc_byte_buffer *bb = grpc_raw_compressed_byte_buffer_create(&body, 1, algorithm);
    grpc_byte_buffer *reply = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &reply;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;
    CHECK(grpc_call_start_batch(call, ops, 6, (void *)1, NULL) == GRPC_CALL_OK, "start batch");
    grpc_event ev =
        grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    CHECK(ev.type == GRPC_OP_COMPLETE, "the compressed call never completed");
    char *d = grpc_slice_to_c_string(details);
    snprintf(msg, cap, "%s", d);
    gpr_free(d);
    grpc_slice_unref(details);
    if (reply) grpc_byte_buffer_destroy(reply);
    grpc_byte_buffer_destroy(bb);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    grpc_shutdown();
    return code;
}

static grpc_status_code plain_call(const char *addr, const EgRequest *q, char *msg, size_t cap) {
    EgError err = {{0}};
    EgClient *c = eg_client_connect(addr, NULL, &err);
    EgClientAnswer a;
    EgCallStatus st = {0};
    int rc = c ? eg_client_generate(c, q, 0, 120, NULL, NULL, &a, &st, &err) : -1;
    CHECK(rc == 0, "call: %s", err.msg);
    eg_client_answer_free(&a);
    eg_client_close(c);
    snprintf(msg, cap, "%s", st.message);
    return st.code;
}

/* ---- compressed requests ---- */

static void test_compression_bomb(void) {
    TestServer r;
    if (test_server_start(&r, engine, (EgServerOptions){0}, "bomb")) return;
    EgRequestPart part;
    EgRequest q = caption_request(&part);
    char msg[512];
    grpc_status_code code = plain_call(r.addr, &q, msg, sizeof msg); /* warm up */
    CHECK(code == GRPC_STATUS_OK, "warm-up: %d %s", (int)code, msg);

    /* A valid request, compressed both ways gRPC offers, is answered. */
    size_t len = 0;
    uint8_t *bytes = packed(&q, &len);
    for (int zlib_format = 0; zlib_format < 2; zlib_format++) {
        grpc_slice small = compress_zeros(bytes, len, 0, zlib_format);
        code =
            compressed_call(r.addr, small, zlib_format ? GRPC_COMPRESS_DEFLATE : GRPC_COMPRESS_GZIP,
                            msg, sizeof msg);
        CHECK(code == GRPC_STATUS_OK, "compressed (%s) request: %d %s",
              zlib_format ? "deflate" : "gzip", (int)code, msg);
        grpc_slice_unref(small);
    }
    /* Data that does not inflate, and a valid stream cut short. */
    grpc_slice garbage = grpc_slice_from_static_string("certainly not gzip");
    code = compressed_call(r.addr, garbage, GRPC_COMPRESS_GZIP, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_INVALID_ARGUMENT && strstr(msg, "not valid gzip"),
          "garbage as gzip: %d %s", (int)code, msg);
    grpc_slice whole = compress_zeros(bytes, len, 0, 0);
    grpc_slice cut = grpc_slice_sub(whole, 0, GRPC_SLICE_LENGTH(whole) / 2);
    code = compressed_call(r.addr, cut, GRPC_COMPRESS_GZIP, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_INVALID_ARGUMENT && strstr(msg, "not valid gzip"),
          "truncated gzip: %d %s", (int)code, msg);
    grpc_slice_unref(cut);
    grpc_slice_unref(whole);

    /* 1 GiB of zeros after a valid request's fields, gzip'd to about 1 MiB. */
    grpc_slice bomb = compress_zeros(bytes, len, 1ull << 30, 0);
    free(bytes);
    uint64_t before = proc_status_bytes("VmRSS");
    int have_peak = reset_peak() == 0;
    code = compressed_call(r.addr, bomb, GRPC_COMPRESS_GZIP, msg, sizeof msg);
    uint64_t peak = proc_status_bytes("VmHWM"), after = proc_status_bytes("VmRSS");
    uint64_t top = have_peak && peak > after ? peak : after;
    fprintf(stderr,
            "gzip bomb (%zu bytes, 1 GiB inflated): status %d '%s'; resident %.1f MiB "
            "before, peak %.1f MiB (+%.1f)\n",
            GRPC_SLICE_LENGTH(bomb), (int)code, msg, before / (double)MiB, top / (double)MiB,
            ((double)top - (double)before) / (double)MiB);
    grpc_slice_unref(bomb);
    CHECK(code == GRPC_STATUS_RESOURCE_EXHAUSTED, "the bomb: status %d '%s'", (int)code, msg);
    CHECK(strstr(msg, "max_request_bytes") != NULL, "the bomb's message names the limit: '%s'",
          msg);
    CHECK(top < before + 64 * MiB, "the bomb grew the resident set by %.1f MiB",
          ((double)top - (double)before) / (double)MiB);
    code = plain_call(r.addr, &q, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_OK, "after the bomb: %d %s", (int)code, msg);
    free(test_server_stop(&r));
}

int main(void) {
    test_rng_init();
    EgError err = {{0}};
    EgEngineOptions opt = {.model = {.fp32 = 1}};
    engine = eg_engine_open(test_model_path("shapes-idefics"), &opt, &err);
    REQUIRE(engine != NULL, "open: %s", err.msg);
    png = test_read_file(test_data_path("shapes-cases/images/c001_0.png"), &png_len);
    REQUIRE(png, "missing the test image");
    test_compression_bomb();
    free(png);
    eg_engine_close(engine);
    return test_finish();
}
