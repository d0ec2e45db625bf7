#include "tools/grpc_client.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>

#include "egret/v1/egret.pb-c.h"
#include "server/grpc_bytes.h"
#include "server/proto_request.h"

struct EgClient {
    grpc_channel *channel;
    char *auth; /* "Bearer KEY" or NULL */
};

EgClient *eg_client_connect(const char *target, const EgClientOptions *opt, EgError *err) {
    EgClientOptions none = {0};
    if (!opt) opt = &none;
    EgClient *c = calloc(1, sizeof *c);
    if (!c) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    grpc_init();
    grpc_arg args[2];
    memset(args, 0, sizeof args);
    size_t n_args = 0;
    args[n_args].type = GRPC_ARG_INTEGER;
    args[n_args].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[n_args++].value.integer = -1;
    if (opt->tls_server_name) {
        args[n_args].type = GRPC_ARG_STRING;
        args[n_args].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[n_args++].value.string = (char *)opt->tls_server_name;
    }
    grpc_channel_args chargs = {n_args, args};
    grpc_channel_credentials *creds;
    if (opt->tls_ca_file) {
        char *roots = eg_read_pem(opt->tls_ca_file, err);
        if (!roots) {
            free(c);
            grpc_shutdown();
            return NULL;
        }
        creds = grpc_ssl_credentials_create(roots, NULL, NULL, NULL);
        free(roots);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    c->channel = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (opt->api_key) {
        size_t n = strlen(opt->api_key) + 8;
        c->auth = malloc(n);
        if (c->auth) snprintf(c->auth, n, "Bearer %s", opt->api_key);
    }
    return c;
}

void eg_client_close(EgClient *c) {
    if (!c) return;
    grpc_channel_destroy(c->channel);
    free(c->auth);
    free(c);
    grpc_shutdown();
}

/* Runs one batch and waits for it. */
static int run_batch(grpc_completion_queue *cq, grpc_call *call, const grpc_op *ops, size_t n,
                     void *tag) {
    if (grpc_call_start_batch(call, ops, n, tag, NULL) != GRPC_CALL_OK) return -1;
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success ? 0 : -1;
}

int eg_client_call(EgClient *c, const char *method, const uint8_t *request, size_t request_len,
                   double timeout_s, EgClientReplyFn fn, void *user, EgCallStatus *st,
                   EgError *err) {
    memset(st, 0, sizeof *st);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        timeout_s > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                     gpr_time_from_micros((int64_t)(timeout_s * 1e6), GPR_TIMESPAN))
                      : gpr_inf_future(GPR_CLOCK_REALTIME);
    grpc_slice method_slice = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               method_slice, NULL, deadline, NULL);
    grpc_slice_unref(method_slice);
    if (!call) {
        grpc_completion_queue_destroy(cq);
        return eg_fail(err, "cannot create a call to %s", method);
    }
    grpc_metadata md;
    memset(&md, 0, sizeof md);
    if (c->auth) {
        md.key = grpc_slice_from_static_string("authorization");
        md.value = grpc_slice_from_copied_string(c->auth);
    }
    grpc_slice req_slice = grpc_slice_from_copied_buffer((const char *)request, request_len);
    grpc_byte_buffer *req_bb = grpc_raw_byte_buffer_create(&req_slice, 1);
    grpc_slice_unref(req_slice);
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);

    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = c->auth ? 1 : 0;
    ops[0].data.send_initial_metadata.metadata = c->auth ? &md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    int sent = run_batch(cq, call, ops, 4, (void *)1) == 0;
    /* Read until the server ends the stream (a failed batch here just means the call is over:
     * the status below says why). */
    while (sent) {
        grpc_byte_buffer *bb = NULL;
        grpc_op recv;
        memset(&recv, 0, sizeof recv);
        recv.op = GRPC_OP_RECV_MESSAGE;
        recv.data.recv_message.recv_message = &bb;
        if (run_batch(cq, call, &recv, 1, (void *)2) || !bb) break;
        grpc_slice all = eg_grpc_read_all(bb);
        grpc_byte_buffer_destroy(bb);
        int cancel = fn && fn(user, GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all));
        grpc_slice_unref(all);
        if (cancel) {
            grpc_call_cancel(call, NULL);
            break;
        }
    }
    grpc_slice details = grpc_empty_slice();
    grpc_op status_op;
    memset(&status_op, 0, sizeof status_op);
    status_op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    status_op.data.recv_status_on_client.trailing_metadata = &trailing_md;
    status_op.data.recv_status_on_client.status = &st->code;
    status_op.data.recv_status_on_client.status_details = &details;
    int rc = run_batch(cq, call, &status_op, 1, (void *)3);
    if (rc == 0)
        snprintf(st->message, sizeof st->message, "%.*s", (int)GRPC_SLICE_LENGTH(details),
                 (const char *)GRPC_SLICE_START_PTR(details));
    else
        eg_fail(err, "the call to %s did not complete", method);
    grpc_slice_unref(details);
    grpc_byte_buffer_destroy(req_bb);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    if (c->auth) grpc_slice_unref(md.value);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    return rc;
}

void eg_client_answer_free(EgClientAnswer *a) {
    free(a->text);
    free(a->ids);
    memset(a, 0, sizeof *a);
}

typedef struct Collect {
    EgClientAnswer *a;
    size_t text_len;
    EgClientTextFn on_text;
    void *user;
    int bad_reply;
} Collect;

static int collect(void *user, const uint8_t *data, size_t len) {
    Collect *k = user;
    EgClientAnswer *a = k->a;
    Egret__V1__GenerateResponse *r = egret__v1__generate_response__unpack(NULL, len, data);
    if (!r) {
        k->bad_reply = 1;
        return 1;
    }
    size_t tl = strlen(r->text);
    char *text = realloc(a->text, k->text_len + tl + 1);
    uint32_t *ids = realloc(a->ids, (a->n_ids + r->n_token_ids + 1) * sizeof *ids);
    if (text) a->text = text;
    if (ids) a->ids = ids;
    int cancel = !text || !ids;
    if (!cancel) {
        memcpy(a->text + k->text_len, r->text, tl + 1);
        k->text_len += tl;
        /* protobuf-c leaves token_ids NULL when there are none; memcpy from NULL is undefined
         * even for 0 bytes (UBSan's nonnull-attribute check). */
        if (r->n_token_ids) memcpy(a->ids + a->n_ids, r->token_ids, r->n_token_ids * sizeof *ids);
        a->n_ids += r->n_token_ids;
        a->n_messages++;
        if (r->finish_reason) a->finish_reason = r->finish_reason;
        if (r->usage) {
            a->prompt_tokens = r->usage->prompt_tokens;
            a->images = r->usage->images;
            a->generated_tokens = r->usage->generated_tokens;
            a->ttft_s = r->usage->time_to_first_token_s;
            a->total_s = r->usage->total_s;
            a->queue_s = r->usage->queue_s;
        }
        if (k->on_text) cancel = k->on_text(k->user, r->text, tl);
    }
    egret__v1__generate_response__free_unpacked(r, NULL);
    return cancel;
}

int eg_client_generate(EgClient *c, const EgRequest *req, int stream, double timeout_s,
                       EgClientTextFn on_text, void *user, EgClientAnswer *out, EgCallStatus *st,
                       EgError *err) {
    memset(out, 0, sizeof *out);
    uint8_t *bytes;
    size_t len;
    if (eg_proto_request_encode(req, &bytes, &len, err)) return -1;
    Collect k = {out, 0, on_text, user, 0};
    int rc = eg_client_call(c, stream ? "/egret.v1.Egret/GenerateStream" : "/egret.v1.Egret/Generate",
                            bytes, len, timeout_s, collect, &k, st, err);
    free(bytes);
    if (rc == 0 && k.bad_reply) rc = eg_fail(err, "the server sent a message that does not parse");
    if (!out->text) out->text = calloc(1, 1);
    return rc;
}
