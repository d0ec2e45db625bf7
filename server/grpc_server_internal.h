/* Shared by the server's files (grpc_server.c: lifecycle and dispatch; grpc_generate.c:
 * generation calls; grpc_health.c: health and model info). Not a public interface. */
#ifndef EGRET_GRPC_SERVER_INTERNAL_H
#define EGRET_GRPC_SERVER_INTERNAL_H

#include <grpc/grpc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>

#include "egret/v1/egret.pb-c.h"
#include "engine/scheduler.h"
#include "runtime/buf.h"
#include "runtime/clock.h"
#include "server/grpc_bytes.h"
#include "server/grpc_inflate.h"
#include "server/grpc_listener.h"
#include "server/grpc_server.h"
#include "server/metrics.h"
#include "server/proto_request.h"

/* The largest health or reflection request, inflated: they are a service name or a symbol. */
#define EG_SMALL_REQUEST_BYTES (64u << 10)

typedef enum Method {
    M_GENERATE,
    M_STREAM,
    M_INFO,
    M_STATS,
    M_HEALTH_CHECK,
    M_HEALTH_WATCH,
    M_REFLECT,         /* grpc.reflection.v1 */
    M_REFLECT_V1ALPHA, /* the same, under its older name */
    M_CREATE_SET,      /* example sets: grpc_example_sets.c */
    M_GET_SET,
    M_LIST_SETS,
    M_DELETE_SET,
    M_UNKNOWN, /* any other method: answered UNIMPLEMENTED */
    M_COUNT
} Method;
_Static_assert(M_COUNT == EG_METRICS_METHODS, "server/metrics.h counts every method");

typedef enum TagKind {
    TAG_ACCEPT,
    TAG_RECV_CLOSE,
    TAG_RECV, /* a message from a client stream (reflection) */
    TAG_SEND,
    TAG_FINISH,
    TAG_SHUTDOWN
} TagKind;

typedef struct Call Call;

/* What a completion-queue event refers to. */
typedef struct Tag {
    TagKind kind;
    Call *call;
} Tag;

/* One accepted call. Lifetime: a reference for the pending RECV_CLOSE_ON_SERVER, one for the
 * final status batch, and one while a job for it is in the scheduler; the last release frees it. */
struct Call {
    EgServer *srv;
    Method method;
    uint64_t id;
    grpc_call *call;
    gpr_timespec deadline; /* GPR_CLOCK_MONOTONIC */
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* M_UNKNOWN only */
    Tag t_accept, t_recv_close, t_recv, t_send, t_finish;
    grpc_byte_buffer *recv_buf; /* reflection: the request being received */
    int recv_cancelled;      /* written by the core when RECV_CLOSE completes */
    int log_at_close;        /* no request message came: logged once the close says why */
    atomic_int refs;
    atomic_int client_gone;  /* the client cancelled or disconnected */
    double accepted_at;

    /* Sending: the worker thread (tokens, final answer) and the queue thread (send completions,
     * early errors) both send on the call; mu serializes them. At most one SEND_MESSAGE batch is
     * in flight; tokens arriving meanwhile accumulate and go out together in the next message. */
    pthread_mutex_t mu;
    int initial_md_sent, send_in_flight, finish_started;
    grpc_byte_buffer *send_buf, *finish_buf;
    grpc_slice status_details;
    EgBuf pend_text; /* text not yet sent */
    EgBuf pend_ids;  /* uint32_t token ids not yet sent */
    /* The outcome, once the job is done. */
    int have_final;
    grpc_status_code final_code;
    char final_msg[512];
    Egret__V1__FinishReason finish_reason;
    Egret__V1__Usage usage;
    EgGenerateResult *unary_result; /* Generate: the whole answer */

    /* Generation: the decoded request, and the bytes of the server's request memory budget it
     * holds (EgServer.request_bytes_held) until the engine is done with it */
    EgProtoRequest preq;
    uint64_t held_bytes;
    EgJob job;
    /* Health watch: the status last sent (-1: none yet), whether the service asked for is
     * unknown, and the next watcher */
    int watch_sent, watch_unknown;
    Call *next_watcher;
};

struct EgServer {
    EgEngine *engine;
    EgServerOptions opt;
    char model_name[256];
    grpc_server *server;
    EgListener *listener; /* plaintext addresses: Egret accepts (NULL: gRPC does) */
    grpc_completion_queue *cq;
    void *methods[M_COUNT];
    int port;
    EgScheduler *sched;
    atomic_int drain_requests;   /* eg_server_drain calls */
    atomic_int cancel_all;       /* drain grace over: every generation stops */
    atomic_ullong next_id;
    atomic_long generate_calls;  /* Generate / GenerateStream calls not yet freed */
    atomic_long live_calls;      /* calls accepted and not yet freed */
    /* generation requests by outcome (GetStats), counted when their log line is written */
    atomic_ullong n_total, n_ok, n_cancelled, n_rejected, n_failed, n_tokens;
    EgMetrics metrics; /* by method and status code, latencies, tokens (server/metrics.h) */
    atomic_ullong request_bytes_held; /* by decoded requests, within opt.request_memory_bytes */
    grpc_resource_quota *quota;       /* the transport's memory, sized to the same budget */
    double started_at;
    int draining;                /* queue thread only, from here down */
    double drain_deadline;
    double idle_since;           /* draining: when the last generation call ended (0: busy) */
    int shutdown_called, forced; /* the core server told to shut down; calls cut */
    int shutdown_done;
    int serving_status;          /* grpc.health.v1 ServingStatus */
    Call *watchers;
    int watches_ended;           /* drained: watch calls end after their last update */
    int stopped;                 /* eg_server_run returned */
    Tag t_shutdown;
    pthread_mutex_t log_mu;
};

/* The method's short name, as the log and the metrics show it ("Generate", "Health.Check"). */
const char *eg_server_method_name(Method m);

/* Reference counting (see Call). */
void eg_call_unref(Call *c);

/* With c->mu held: ends the call with status code/msg, after `response` (may be NULL; consumed)
 * when the code is OK or a message is still due. Returns 0, or -1 when the core refused the
 * batch (the caller must then eg_call_unref after unlocking). */
int eg_call_finish_locked(Call *c, grpc_status_code code, const char *msg,
                          grpc_byte_buffer *response);
/* Ends the call with a status and no message (takes c->mu). */
void eg_call_fail(Call *c, grpc_status_code code, const char *msg);
/* With c->mu held: starts a SEND_MESSAGE batch (buf consumed). Returns 0 or -1. */
int eg_call_send_locked(Call *c, grpc_byte_buffer *buf);
/* One log line for a finished request. */
void eg_server_log(EgServer *s, const Call *c, grpc_status_code code, const char *msg);
/* A generation call without a request message: answered at once, logged by its close. */
void eg_call_fail_no_message(Call *c);

/* grpc_generate.c */
void eg_generate_begin(Call *c);
void eg_generate_on_send_done(Call *c);
/* Frees the decoded request and gives its bytes back to the budget (idempotent). */
void eg_generate_release_request(Call *c);

/* grpc_health.c */
void eg_health_check(Call *c);
void eg_health_watch_begin(Call *c);
void eg_health_watch_continue(Call *c); /* after a send, or when its client went away */
void eg_health_forget(Call *c);    /* the watch call ended: drop it from the list */
void eg_health_set(EgServer *s, int status);
void eg_health_end_watches(EgServer *s);

/* grpc_reflection.c */
void eg_reflection_begin(Call *c);
void eg_reflection_on_recv(Call *c, int ok);
void eg_reflection_on_send_done(Call *c);

/* grpc_example_sets.c */
void eg_example_sets_call(Call *c);
/* Registers the sets in opt.example_sets_dir (creating it if needed), each with a warm-up. */
int eg_example_sets_load(EgServer *s, EgError *err);
/* Queues a one-token request that makes the set ready (images encoded, prefix kept). */
void eg_example_set_warm_up(EgServer *s, const char *id);

/* grpc_info.c */
void eg_model_info(Call *c);
void eg_server_stats(Call *c);

#endif
