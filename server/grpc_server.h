/* Egret's gRPC server on the gRPC C core: egret.v1.Egret (Generate, GenerateStream,
 * GetModelInfo, GetStats, the example set methods) and grpc.health.v1.Health (Check, Watch), see
 * proto/.
 *
 * Threads: one thread runs the completion queue (eg_server_run): it accepts calls, answers the
 * cheap ones (health, model info, bad requests) at once and queues generation requests for the
 * engine's worker thread (engine/scheduler.h). The worker streams tokens back by starting send
 * batches on the calls itself; their completions come back to the queue thread.
 *
 * Draining (SIGTERM, or eg_server_drain): health turns NOT_SERVING, the listening socket closes
 * (new connections are refused) and every connection gets GOAWAY (no new calls on it), calls in
 * flight get `grace_s` seconds to finish and are then cancelled (UNAVAILABLE), and
 * eg_server_run returns once every call has ended. */
#ifndef EGRET_GRPC_SERVER_H
#define EGRET_GRPC_SERVER_H

#include <stdint.h>
#include <stdio.h>

#include "engine/engine.h"

#define EG_SERVER_DEFAULT_MAX_BATCH 8

typedef struct EgServerOptions {
    const char *listen;              /* "host:port" or "unix:/path"; default 127.0.0.1:50051 */
    const char *model_name;          /* reported by GetModelInfo; default the folder's name */
    uint32_t max_request_bytes;      /* largest request message; default 64 MiB */
    uint32_t max_queue;              /* requests waiting for the engine; default 64 */
    uint32_t max_batch;              /* requests decoding together; default
                                        EG_SERVER_DEFAULT_MAX_BATCH */
    /* What requests may hold in memory: decoded requests queued or on the engine (past it,
     * RESOURCE_EXHAUSTED), and, through gRPC's resource quota, the transport's buffers (partial
     * messages still arriving). Default 8 x max_request_bytes (512 MiB). */
    uint64_t request_memory_bytes;
    uint32_t max_streams_per_connection; /* HTTP/2 streams open at once per connection; 100 */
    uint32_t decode_workers;         /* threads decoding request images, off the engine's
                                        thread; default half the cores (1 to 8) */
    uint32_t default_max_new_tokens; /* when a request leaves max_new_tokens 0; default 128 */
    double grace_s;                  /* drain grace period; default 30 s */
    /* Connections. Durations: 0 takes the default, < 0 turns idle and age limits off. */
    uint32_t max_connections;        /* live at once, plaintext listeners; default from the
                                        descriptor limit (eg_server_default_max_connections) */
    double handshake_timeout_s;      /* to send the HTTP/2 preface (TLS: finish the TLS and
                                        HTTP/2 handshakes); default 15 s */
    double max_connection_idle_s;    /* closed after this long without calls; default 300 s */
    double max_connection_age_s;     /* told to go away after this long; default 1800 s */
    double max_connection_age_grace_s; /* then calls get this long to finish; default 60 s */
    const char *tls_cert_file;       /* PEM server certificate chain and key: TLS when both set */
    const char *tls_key_file;
    const char *api_key; /* when set, Egret calls need "authorization: Bearer KEY" or
                            "x-api-key: KEY" (health checks do not) */
    FILE *log;           /* one line per request; default stderr */
    /* Where example sets are kept across restarts (server/example_set_store.h); NULL: only in
     * memory. Registered again at start, before the first call is taken. */
    const char *example_sets_dir;
    int log_json;        /* 1: each line is one JSON object (same fields), for log shippers */
} EgServerOptions;

typedef struct EgServer EgServer;

/* The default for max_connections given the descriptor limit: each plaintext connection costs
 * two descriptors (see grpc_listener.c), and a reserve is kept for the engine, model files and
 * logs (64 + an eighth of the limit); at most 4096. */
uint32_t eg_server_default_max_connections(uint64_t nofile);

/* Fills the options left 0 with their defaults (what eg_server_start serves with). */
void eg_server_apply_defaults(EgServerOptions *o);

/* Binds and starts listening; the engine must outlive the server. */
EgServer *eg_server_start(EgEngine *engine, const EgServerOptions *opt, EgError *err);
/* The TCP port bound (useful with port 0), or 0 for unix sockets. */
int eg_server_port(const EgServer *s);
/* Serves until drained. Returns 0. */
int eg_server_run(EgServer *s);
/* Asks the server to drain. Async-signal-safe and thread-safe; a second call cancels the calls in
 * flight at once instead of waiting for the grace period. */
void eg_server_drain(EgServer *s);
void eg_server_free(EgServer *s);

#endif
