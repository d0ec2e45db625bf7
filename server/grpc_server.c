/* Server lifecycle: binding, the completion-queue loop, accepting and dispatching calls,
 * call reference counting, draining. Generation lives in grpc_generate.c, health in
 * grpc_health.c, model info and stats in grpc_info.c, example sets in grpc_example_sets.c,
 * accepting connections in grpc_listener.c. */
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "grpc/health/v1/health.pb-c.h"
#include "server/grpc_log_escape.h"
#include "server/grpc_server_internal.h"
#include "server/request_log.h"

static const char *const METHOD_PATHS[M_UNKNOWN] = {
    "/egret.v1.Egret/Generate",     "/egret.v1.Egret/GenerateStream",
    "/egret.v1.Egret/GetModelInfo", "/egret.v1.Egret/GetStats", "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/egret.v1.Egret/CreateExampleSet", "/egret.v1.Egret/GetExampleSet",
    "/egret.v1.Egret/ListExampleSets", "/egret.v1.Egret/DeleteExampleSet",
};
static const char *const METHOD_NAMES[M_COUNT] = {
    "Generate",     "GenerateStream", "GetModelInfo", "GetStats",
    "Health.Check", "Health.Watch",   "Reflection",   "Reflection(v1alpha)",
    "CreateExampleSet", "GetExampleSet", "ListExampleSets", "DeleteExampleSet",
    "unknown",
};

const char *eg_server_method_name(Method m) { return m < M_COUNT ? METHOD_NAMES[m] : "?"; }

static int is_generation(Method m) { return m == M_GENERATE || m == M_STREAM; }
/* Client-streaming methods: messages are received with RECV_MESSAGE, not with the call. */
static int is_client_streaming(Method m) { return m == M_REFLECT || m == M_REFLECT_V1ALPHA; }

/* ---- calls ---- */

static Call *call_new(EgServer *s, Method m) {
    Call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->srv = s;
    c->method = m;
    c->t_accept = (Tag){TAG_ACCEPT, c};
    c->t_recv_close = (Tag){TAG_RECV_CLOSE, c};
    c->t_recv = (Tag){TAG_RECV, c};
    c->t_send = (Tag){TAG_SEND, c};
    c->t_finish = (Tag){TAG_FINISH, c};
    grpc_metadata_array_init(&c->md);
    if (m == M_UNKNOWN) grpc_call_details_init(&c->details);
    c->status_details = grpc_empty_slice();
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void call_free(Call *c) {
    EgServer *s = c->srv;
    if (c->call) {
        grpc_call_unref(c->call);
        atomic_fetch_sub(&s->live_calls, 1);
    }
    grpc_metadata_array_destroy(&c->md);
    if (c->method == M_UNKNOWN) grpc_call_details_destroy(&c->details);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->recv_buf) grpc_byte_buffer_destroy(c->recv_buf);
    if (c->send_buf) grpc_byte_buffer_destroy(c->send_buf);
    if (c->finish_buf) grpc_byte_buffer_destroy(c->finish_buf);
    grpc_slice_unref(c->status_details);
    eg_buf_free(&c->pend_text);
    eg_buf_free(&c->pend_ids);
    eg_generate_release_request(c);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void eg_call_unref(Call *c) {
    if (atomic_fetch_sub(&c->refs, 1) == 1) call_free(c);
}

int eg_call_finish_locked(Call *c, grpc_status_code code, const char *msg,
                          grpc_byte_buffer *response) {
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->initial_md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = 1;
    }
    if (response) {
        c->finish_buf = response;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = response;
    }
    grpc_slice_unref(c->status_details);
    c->status_details = grpc_slice_from_copied_string(msg ? msg : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details = &c->status_details;
    c->finish_started = 1;
    /* In flight means "not answered yet": the count drops as the answer leaves. */
    if (is_generation(c->method)) atomic_fetch_sub(&c->srv->generate_calls, 1);
    return grpc_call_start_batch(c->call, ops, n, &c->t_finish, NULL) == GRPC_CALL_OK ? 0 : -1;
}

int eg_call_send_locked(Call *c, grpc_byte_buffer *buf) {
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->initial_md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->initial_md_sent = 1;
    }
    c->send_buf = buf;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = buf;
    c->send_in_flight = 1;
    if (grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL) == GRPC_CALL_OK) return 0;
    c->send_in_flight = 0;
    grpc_byte_buffer_destroy(buf);
    c->send_buf = NULL;
    return -1;
}

void eg_call_fail(Call *c, grpc_status_code code, const char *msg) {
    if (c->method != M_HEALTH_CHECK && c->method != M_HEALTH_WATCH) {
        c->usage.total_s = eg_now_s() - c->accepted_at;
        eg_server_log(c->srv, c, code, msg);
    }
    pthread_mutex_lock(&c->mu);
    int rc = c->finish_started ? 0 : eg_call_finish_locked(c, code, msg, NULL);
    pthread_mutex_unlock(&c->mu);
    if (rc) eg_call_unref(c);
}

/* A call with no message is, nearly always, one whose client reset it before sending the message;
 * a client may also have half-closed without one. Only the call's close tells them apart: the
 * answer goes out now, and if the call was cancelled before it could, the close says so. */
static const char NO_MESSAGE[] = "the call carries no request message";

void eg_call_fail_no_message(Call *c) {
    c->log_at_close = 1;
    pthread_mutex_lock(&c->mu);
    int rc = c->finish_started
                 ? 0
                 : eg_call_finish_locked(c, GRPC_STATUS_INVALID_ARGUMENT, NO_MESSAGE, NULL);
    pthread_mutex_unlock(&c->mu);
    if (rc) eg_call_unref(c);
}

static void log_at_close(Call *c, int cancelled) {
    c->usage.total_s = eg_now_s() - c->accepted_at;
    if (cancelled)
        eg_server_log(c->srv, c, GRPC_STATUS_CANCELLED,
                      "cancelled by the client before its request message arrived");
    else
        eg_server_log(c->srv, c, GRPC_STATUS_INVALID_ARGUMENT, NO_MESSAGE);
}

static void count_outcome(EgServer *s, const Call *c, grpc_status_code code) {
    if (!is_generation(c->method)) return;
    atomic_fetch_add(&s->n_tokens, c->usage.generated_tokens);
    switch (code) {
    case GRPC_STATUS_OK:
        atomic_fetch_add(&s->n_ok, 1);
        break;
    case GRPC_STATUS_CANCELLED:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_UNAVAILABLE:
        atomic_fetch_add(&s->n_cancelled, 1);
        break;
    case GRPC_STATUS_INTERNAL:
        atomic_fetch_add(&s->n_failed, 1);
        break;
    default:
        atomic_fetch_add(&s->n_rejected, 1);
    }
}

void eg_server_log(EgServer *s, const Call *c, grpc_status_code code, const char *msg) {
    count_outcome(s, c, code);
    const Egret__V1__Usage *u = &c->usage;
    eg_metrics_observe(&s->metrics, (int)c->method, code,
                       is_generation(c->method) ? c->method == M_STREAM : -1, u->total_s,
                       u->time_to_first_token_s, u->queue_s, u->prompt_tokens,
                       u->generated_tokens);
    /* Peers and messages may carry what a client chose (a method path, its input quoted back):
     * the log writer escapes them, so that no client can write a line of its own. */
    char *peer_raw = grpc_call_get_peer(c->call);
    char named[64]; /* connections from Egret's listener: gRPC knows them as "fd:N" */
    const char *shown = eg_listener_peer(s->listener, peer_raw, named, sizeof named) == 0 ? named
                        : peer_raw                                                      ? peer_raw
                                                                                        : "?";
    EgRequestLogLine line = {.id = c->id,
                             .method = METHOD_NAMES[c->method],
                             .peer = shown,
                             .status = eg_grpc_status_name(code),
                             .images = u->images,
                             .prompt_tokens = u->prompt_tokens,
                             .generated = u->generated_tokens,
                             .ttft_s = u->time_to_first_token_s,
                             .total_s = u->total_s,
                             .queue_s = u->queue_s,
                             .error = code != GRPC_STATUS_OK ? msg : NULL};
    pthread_mutex_lock(&s->log_mu);
    eg_request_log_write(s->opt.log, s->opt.log_json, &line);
    fflush(s->opt.log);
    pthread_mutex_unlock(&s->log_mu);
    gpr_free(peer_raw);
}

/* ---- accepting ---- */

static void post_accept(EgServer *s, Method m) {
    Call *c = call_new(s, m);
    if (!c) {
        fprintf(s->opt.log, "egret: out of host memory; not accepting %s calls\n",
                METHOD_NAMES[m]);
        return;
    }
    grpc_call_error e =
        m == M_UNKNOWN
            ? grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq,
                                       &c->t_accept)
            : grpc_server_request_registered_call(
                  s->server, s->methods[m], &c->call, &c->deadline, &c->md,
                  is_client_streaming(m) ? NULL : &c->payload, s->cq, s->cq, &c->t_accept);
    if (e != GRPC_CALL_OK) call_free(c);
}

/* Compares in time that depends only on the key's length, not on where the guess differs. */
static int same_secret(grpc_slice guess, const char *key) {
    size_t klen = strlen(key), glen = GRPC_SLICE_LENGTH(guess);
    const unsigned char *g = GRPC_SLICE_START_PTR(guess);
    unsigned diff = klen != glen;
    for (size_t i = 0; i < klen; i++)
        diff |= (unsigned)((unsigned char)key[i] ^ (i < glen ? g[i] : 0));
    return diff == 0;
}

static int authorized(const Call *c) {
    const char *key = c->srv->opt.api_key;
    if (!key) return 1;
    grpc_slice auth = eg_grpc_metadata_get(&c->md, "authorization");
    static const char bearer[] = "Bearer ";
    size_t blen = sizeof bearer - 1;
    if (GRPC_SLICE_LENGTH(auth) > blen &&
        memcmp(GRPC_SLICE_START_PTR(auth), bearer, blen) == 0)
        return same_secret(grpc_slice_sub_no_ref(auth, blen, GRPC_SLICE_LENGTH(auth)), key);
    return same_secret(eg_grpc_metadata_get(&c->md, "x-api-key"), key);
}

static void unknown_method(Call *c) {
    char path[256], msg[300];
    eg_log_escape(path, sizeof path, (const char *)GRPC_SLICE_START_PTR(c->details.method),
                  GRPC_SLICE_LENGTH(c->details.method));
    snprintf(msg, sizeof msg, "unknown method %s", path);
    eg_call_fail(c, GRPC_STATUS_UNIMPLEMENTED, msg);
}

static void on_accept(EgServer *s, Call *c, int ok) {
    if (!ok) { /* the server is shutting down: the pending accept is returned unused */
        c->call = NULL;
        call_free(c);
        return;
    }
    if (!s->shutdown_called) post_accept(s, c->method);
    c->id = atomic_fetch_add(&s->next_id, 1) + 1;
    c->accepted_at = eg_now_s();
    atomic_fetch_add(&s->live_calls, 1);
    if (is_generation(c->method)) {
        atomic_fetch_add(&s->generate_calls, 1);
        atomic_fetch_add(&s->n_total, 1);
    }
    if (c->method == M_UNKNOWN) c->deadline = c->details.deadline;
    c->deadline = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);
    atomic_store(&c->refs, 2);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->recv_cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_recv_close, NULL) != GRPC_CALL_OK)
        eg_call_unref(c);

    switch (c->method) {
    case M_HEALTH_CHECK:
        eg_health_check(c);
        return;
    case M_HEALTH_WATCH:
        eg_health_watch_begin(c);
        return;
    default:
        break;
    }
    if (s->draining && is_generation(c->method)) {
        eg_call_fail(c, GRPC_STATUS_UNAVAILABLE, "the server is shutting down");
        return;
    }
    if (!authorized(c)) {
        eg_call_fail(c, GRPC_STATUS_UNAUTHENTICATED,
                     "missing or wrong API key (send metadata 'authorization: Bearer KEY' or "
                     "'x-api-key: KEY')");
        return;
    }
    /* Only after the key: without it, which methods exist is nobody's business. */
    if (c->method == M_UNKNOWN) {
        unknown_method(c);
        return;
    }
    if (is_client_streaming(c->method))
        eg_reflection_begin(c);
    else if (c->method == M_INFO)
        eg_model_info(c);
    else if (c->method == M_STATS)
        eg_server_stats(c);
    else if (c->method >= M_CREATE_SET && c->method <= M_DELETE_SET)
        eg_example_sets_call(c);
    else
        eg_generate_begin(c);
}

/* ---- the loop ---- */

static void on_event(EgServer *s, const grpc_event *ev) {
    Tag *t = ev->tag;
    Call *c = t->call;
    switch (t->kind) {
    case TAG_SHUTDOWN:
        s->shutdown_done = 1;
        break;
    case TAG_ACCEPT:
        on_accept(s, c, ev->success);
        break;
    case TAG_RECV_CLOSE:
        if (c->recv_cancelled || !ev->success) atomic_store(&c->client_gone, 1);
        if (c->log_at_close) log_at_close(c, c->recv_cancelled || !ev->success);
        if (c->method == M_HEALTH_WATCH) eg_health_watch_continue(c);
        eg_call_unref(c);
        break;
    case TAG_RECV:
        eg_reflection_on_recv(c, ev->success);
        break;
    case TAG_SEND:
        /* The message is out (or the client is gone): the next send may start. */
        pthread_mutex_lock(&c->mu);
        grpc_byte_buffer_destroy(c->send_buf);
        c->send_buf = NULL;
        c->send_in_flight = 0;
        if (!ev->success) atomic_store(&c->client_gone, 1);
        pthread_mutex_unlock(&c->mu);
        if (c->method == M_HEALTH_WATCH)
            eg_health_watch_continue(c);
        else if (is_client_streaming(c->method))
            eg_reflection_on_send_done(c);
        else
            eg_generate_on_send_done(c);
        break;
    case TAG_FINISH:
        if (c->method == M_HEALTH_WATCH) eg_health_forget(c);
        eg_call_unref(c);
        break;
    }
}

/* Draining takes the replica out of its balancer at once and lets its calls finish. On the
 * drain request the listening socket closes (new connections are refused, so a balancer or a
 * client's round_robin moves on) and the core server shuts down, which sends GOAWAY on every
 * connection: clients and proxies stop starting calls here and open none on it, while the calls
 * in flight go on. A call a client sent before the GOAWAY reached it, arriving after the
 * shutdown, is cancelled by the core (see docs/deploy.md on retries). Calls in flight get the
 * grace period and are then stopped and answered UNAVAILABLE. Last, the connections are closed:
 * after GOAWAY the core waits for every client to hang up, which some clients take seconds to
 * do, so once no call is left and the last answers had a moment to leave the server cuts them;
 * a client that does not read its last messages is cut DRAIN_FORCE_S after the grace period. */
static void shut_down_core(EgServer *s) {
    s->shutdown_called = 1;
    eg_listener_stop(s->listener);
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->t_shutdown);
}

static void begin_drain(EgServer *s) {
    s->draining = 1;
    s->drain_deadline = eg_now_s() + s->opt.grace_s;
    eg_health_set(s, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    shut_down_core(s);
    fprintf(s->opt.log,
            "egret: draining: listener closed, GOAWAY sent; %ld generation calls in flight, "
            "grace period %.1f s\n",
            atomic_load(&s->generate_calls), s->opt.grace_s);
    fflush(s->opt.log);
}

/* How long the last answers get to leave before connections close, and how long past the grace
 * period calls that would not end (a client not reading) get before they are cut. */
#define DRAIN_FLUSH_S 0.25
#define DRAIN_FORCE_S 1.0

static void drain_step(EgServer *s, int drains) {
    double now = eg_now_s();
    if (!atomic_load(&s->cancel_all) && (drains > 1 || now >= s->drain_deadline)) {
        fprintf(s->opt.log, "egret: cancelling %ld generation calls still in flight\n",
                atomic_load(&s->generate_calls));
        fflush(s->opt.log);
        atomic_store(&s->cancel_all, 1);
    }
    int idle = atomic_load(&s->generate_calls) == 0;
    if (idle) eg_health_end_watches(s);
    if (idle && s->idle_since == 0) s->idle_since = now;
    if (!idle) s->idle_since = 0;
    int cut = drains > 1 || now >= s->drain_deadline + DRAIN_FORCE_S;
    /* Every call answered and none holding a reference: the answers have left, the connections
     * can go. A call answered whose last messages are still leaving (a slow reader: its count
     * drops when the answer is queued, not when it is read) keeps them until the grace ends. */
    if (idle && atomic_load(&s->live_calls) == 0 && now - s->idle_since >= DRAIN_FLUSH_S) cut = 1;
    if (!s->forced && cut) {
        s->forced = 1;
        grpc_server_cancel_all_calls(s->server); /* and closes every connection */
    }
}

int eg_server_run(EgServer *s) {
    for (;;) {
        int drains = atomic_load(&s->drain_requests);
        if (drains > 0 && !s->draining) begin_drain(s);
        if (s->draining) {
            drain_step(s, drains);
            if (s->shutdown_done && atomic_load(&s->live_calls) == 0) break;
        }
        gpr_timespec wait = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(s->draining ? 20 : 100, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(s->cq, wait, NULL);
        if (ev.type == GRPC_OP_COMPLETE) on_event(s, &ev);
    }
    eg_scheduler_stop(s->sched);
    s->sched = NULL;
    grpc_completion_queue_shutdown(s->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) on_event(s, &ev);
    }
    s->stopped = 1;
    fprintf(s->opt.log, "egret: drained, %llu requests served\n",
            (unsigned long long)atomic_load(&s->next_id));
    fflush(s->opt.log);
    return 0;
}

void eg_server_drain(EgServer *s) { atomic_fetch_add(&s->drain_requests, 1); }

int eg_server_port(const EgServer *s) { return s->port; }

/* ---- start and free ---- */

static grpc_server_credentials *make_credentials(const EgServerOptions *o, EgError *err) {
    if (!o->tls_cert_file && !o->tls_key_file) return grpc_insecure_server_credentials_create();
    if (!o->tls_cert_file || !o->tls_key_file) {
        eg_fail(err, "TLS needs both a certificate and a key file");
        return NULL;
    }
    char *cert = eg_read_pem(o->tls_cert_file, err);
    char *key = cert ? eg_read_pem(o->tls_key_file, err) : NULL;
    grpc_server_credentials *creds = NULL;
    if (key) {
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        creds = grpc_ssl_server_credentials_create(NULL, &pair, 1, 0, NULL);
        if (!creds) eg_fail(err, "cannot use %s / %s as TLS credentials", o->tls_cert_file,
                            o->tls_key_file);
    }
    free(key);
    free(cert);
    return creds;
}

uint32_t eg_server_default_max_connections(uint64_t nofile) {
    uint64_t reserve = 64 + nofile / 8;
    uint64_t n = nofile > reserve + 2 ? (nofile - reserve) / 2 : 1;
    return n > 4096 ? 4096 : (uint32_t)n;
}

void eg_server_apply_defaults(EgServerOptions *o) {
    if (!o->listen) o->listen = "127.0.0.1:50051";
    if (!o->max_request_bytes) o->max_request_bytes = 64u << 20;
    if (!o->max_queue) o->max_queue = 64;
    if (!o->max_batch) o->max_batch = EG_SERVER_DEFAULT_MAX_BATCH;
    if (!o->request_memory_bytes) o->request_memory_bytes = 8ull * o->max_request_bytes;
    if (!o->max_streams_per_connection) o->max_streams_per_connection = 100;
    if (!o->decode_workers) o->decode_workers = eg_scheduler_default_decode_workers();
    if (!o->default_max_new_tokens) o->default_max_new_tokens = 128;
    if (o->grace_s <= 0) o->grace_s = 30;
    if (!o->max_connections) {
        struct rlimit rl = {0, 0};
        getrlimit(RLIMIT_NOFILE, &rl);
        o->max_connections = eg_server_default_max_connections(
            rl.rlim_cur == RLIM_INFINITY ? (uint64_t)1 << 20 : (uint64_t)rl.rlim_cur);
    }
    if (o->handshake_timeout_s <= 0) o->handshake_timeout_s = 15;
    if (o->max_connection_idle_s == 0) o->max_connection_idle_s = 300;
    if (o->max_connection_age_s == 0) o->max_connection_age_s = 1800;
    if (o->max_connection_age_grace_s <= 0) o->max_connection_age_grace_s = 60;
    if (!o->log) o->log = stderr;
}

#define KEEPALIVE_TIME_MS 120000
#define KEEPALIVE_TIMEOUT_MS 20000

static int ms(double seconds) {
    double v = seconds * 1000.0;
    return v >= INT_MAX ? INT_MAX : v < 1 ? 1 : (int)v;
}

static void add_int_arg(grpc_arg *args, int *n, const char *key, int value) {
    memset(&args[*n], 0, sizeof args[*n]);
    args[*n].type = GRPC_ARG_INTEGER;
    args[*n].key = (char *)key;
    args[*n].value.integer = value;
    (*n)++;
}

/* gRPC 1.51 takes only plaintext descriptors (grpc_server_add_channel_from_fd): TLS, and
 * addresses Egret does not bind itself, stay with gRPC's own listener. */
static int own_listener(const EgServerOptions *o) {
    return !o->tls_cert_file && !o->tls_key_file && strncmp(o->listen, "unix-abstract:", 14) &&
           strncmp(o->listen, "vsock:", 6);
}

static int listen_core(EgServer *s, EgError *err) {
    grpc_server_credentials *creds = make_credentials(&s->opt, err);
    if (!creds) return -1;
    s->port = grpc_server_add_http2_port(s->server, s->opt.listen, creds);
    grpc_server_credentials_release(creds);
    if (s->port == 0)
        return eg_fail(err, "cannot listen on %s (address in use or not valid?)", s->opt.listen);
    if (strncmp(s->opt.listen, "unix", 4) == 0) s->port = 0;
    return 0;
}

EgServer *eg_server_start(EgEngine *engine, const EgServerOptions *opt, EgError *err) {
    EgServer *s = calloc(1, sizeof *s);
    if (!s) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    grpc_init();
    s->engine = engine;
    s->opt = *opt;
    eg_server_apply_defaults(&s->opt);
    EgEngineInfo info;
    eg_engine_describe(engine, &info);
    if (s->opt.default_max_new_tokens > info.limits.max_new_tokens)
        s->opt.default_max_new_tokens = info.limits.max_new_tokens;
    const char *name = s->opt.model_name;
    if (!name) {
        const char *slash = strrchr(info.model_dir, '/');
        name = slash && slash[1] ? slash + 1 : info.model_dir;
    }
    snprintf(s->model_name, sizeof s->model_name, "%.255s", name);
    s->serving_status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    s->t_shutdown = (Tag){TAG_SHUTDOWN, NULL};
    s->started_at = eg_now_s();
    pthread_mutex_init(&s->log_mu, NULL);

    grpc_arg args[12];
    int n_args = 0;
    add_int_arg(args, &n_args, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                s->opt.max_request_bytes > INT32_MAX ? INT32_MAX : (int)s->opt.max_request_bytes);
    add_int_arg(args, &n_args, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, -1);
    /* gRPC's listener (TLS): the TLS and HTTP/2 handshakes; Egret's checks the preface itself */
    add_int_arg(args, &n_args, GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                ms(s->opt.handshake_timeout_s));
    if (s->opt.max_connection_idle_s > 0)
        add_int_arg(args, &n_args, GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                    ms(s->opt.max_connection_idle_s));
    if (s->opt.max_connection_age_s > 0) {
        add_int_arg(args, &n_args, GRPC_ARG_MAX_CONNECTION_AGE_MS,
                    ms(s->opt.max_connection_age_s));
        add_int_arg(args, &n_args, GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                    ms(s->opt.max_connection_age_grace_s));
    }
    /* Pings during calls find peers that vanished without a word (no FIN, no RST). */
    add_int_arg(args, &n_args, GRPC_ARG_KEEPALIVE_TIME_MS, KEEPALIVE_TIME_MS);
    add_int_arg(args, &n_args, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, KEEPALIVE_TIMEOUT_MS);
    add_int_arg(args, &n_args, GRPC_ARG_MAX_CONCURRENT_STREAMS,
                s->opt.max_streams_per_connection > INT32_MAX
                    ? INT32_MAX
                    : (int)s->opt.max_streams_per_connection);
    /* The core would inflate a compressed message whole before checking its size; messages
     * arrive as sent and are inflated within the limit (server/grpc_inflate.h). */
    add_int_arg(args, &n_args, GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0);
    /* gRPC's memory quota: under pressure the transport shrinks its flow-control windows and
     * cancels streams holding buffers, so partial messages parked on many connections stay
     * near the budget. */
    s->quota = grpc_resource_quota_create("egret requests");
    grpc_resource_quota_resize(s->quota, (size_t)s->opt.request_memory_bytes);
    memset(&args[n_args], 0, sizeof args[n_args]);
    args[n_args].type = GRPC_ARG_POINTER;
    args[n_args].key = GRPC_ARG_RESOURCE_QUOTA;
    args[n_args].value.pointer.p = s->quota;
    args[n_args].value.pointer.vtable = grpc_resource_quota_arg_vtable();
    n_args++;
    grpc_channel_args chargs = {(size_t)n_args, args};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    for (int m = 0; m < M_UNKNOWN; m++)
        s->methods[m] = grpc_server_register_method(
            s->server, METHOD_PATHS[m], NULL,
            is_client_streaming((Method)m) ? GRPC_SRM_PAYLOAD_NONE
                                           : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
            0);
    if (own_listener(&s->opt)) {
        EgListenerOptions lo = {.max_connections = s->opt.max_connections,
                                .handshake_timeout_s = s->opt.handshake_timeout_s,
                                .log = s->opt.log};
        s->listener = eg_listener_open(s->opt.listen, &lo, &s->port, err);
        if (!s->listener) goto fail;
        fprintf(s->opt.log, "egret: up to %u connections at once, handshake timeout %.1f s\n",
                lo.max_connections, lo.handshake_timeout_s);
    } else if (listen_core(s, err)) {
        goto fail;
    }
    s->sched =
        eg_scheduler_start(engine, s->opt.max_queue, s->opt.max_batch, s->opt.decode_workers, err);
    if (!s->sched) goto fail;
    if (eg_example_sets_load(s, err)) {
        eg_scheduler_stop(s->sched);
        goto fail;
    }
    grpc_server_start(s->server);
    for (int m = 0; m < M_COUNT; m++)
        post_accept(s, (Method)m);
    if (s->listener && eg_listener_start(s->listener, s->server, err)) {
        eg_server_free(s);
        return NULL;
    }
    return s;
fail:
    eg_listener_close(s->listener);
    grpc_server_destroy(s->server);
    grpc_completion_queue_destroy(s->cq);
    grpc_resource_quota_unref(s->quota);
    pthread_mutex_destroy(&s->log_mu);
    free(s);
    grpc_shutdown();
    return NULL;
}

void eg_server_free(EgServer *s) {
    if (!s) return;
    if (!s->stopped) { /* never run: drain at once */
        eg_server_drain(s);
        eg_server_drain(s);
        eg_server_run(s);
    }
    eg_scheduler_stop(s->sched);
    grpc_server_destroy(s->server);
    grpc_completion_queue_destroy(s->cq);
    eg_listener_close(s->listener);
    grpc_resource_quota_unref(s->quota);
    pthread_mutex_destroy(&s->log_mu);
    free(s);
    grpc_shutdown();
}
