/* A small gRPC client on the C core, for the `egret generate` / `egret caption` commands and the
 * service tests: unary and server-streaming calls with raw request bytes, and a Generate helper
 * that speaks egret.v1 messages. */
#ifndef EGRET_GRPC_CLIENT_H
#define EGRET_GRPC_CLIENT_H

#include <grpc/status.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct EgClientOptions {
    const char *tls_ca_file; /* PEM roots: TLS when set */
    const char *tls_server_name; /* override the name checked in the server's certificate */
    const char *api_key;         /* sent as "authorization: Bearer KEY" */
} EgClientOptions;

typedef struct EgClient EgClient;

/* target: "host:port" or "unix:/path". Connecting is lazy: errors show up in the first call. */
EgClient *eg_client_connect(const char *target, const EgClientOptions *opt, EgError *err);
void eg_client_close(EgClient *c);

typedef struct EgCallStatus {
    grpc_status_code code;
    char message[512];
} EgCallStatus;

/* Called per response message; non-zero cancels the call (its status is then CANCELLED). */
typedef int (*EgClientReplyFn)(void *user, const uint8_t *data, size_t len);

/* Calls `method` ("/pkg.Service/Method") with one request message and reads every response
 * until the status. timeout_s <= 0: no deadline. Returns 0 when the call ran to a status (in
 * *st, OK or not), -1 with err when it could not be made at all. */
int eg_client_call(EgClient *c, const char *method, const uint8_t *request, size_t request_len,
                   double timeout_s, EgClientReplyFn fn, void *user, EgCallStatus *st,
                   EgError *err);

/* The answer to a Generate / GenerateStream call, assembled from its messages. */
typedef struct EgClientAnswer {
    char *text; /* malloc'd */
    uint32_t *ids;
    size_t n_ids;
    size_t n_messages;
    int finish_reason; /* egret.v1.FinishReason */
    uint32_t prompt_tokens, images, generated_tokens;
    double ttft_s, total_s, queue_s;
} EgClientAnswer;
void eg_client_answer_free(EgClientAnswer *a);

/* Called with each message's new text; non-zero cancels. */
typedef int (*EgClientTextFn)(void *user, const char *text, size_t len);

/* Sends `req` as a GenerateRequest (stream: GenerateStream) and collects the answer. Returns as
 * eg_client_call; *out is filled (possibly partly) whatever the status. */
int eg_client_generate(EgClient *c, const EgRequest *req, int stream, double timeout_s,
                       EgClientTextFn on_text, void *user, EgClientAnswer *out, EgCallStatus *st,
                       EgError *err);

#endif
