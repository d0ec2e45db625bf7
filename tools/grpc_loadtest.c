/* The load test (grpc_loadtest.h): clients, per-call verdicts, GetStats before and after. */
#include "tools/grpc_loadtest_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/buf.h"
#include "runtime/clock.h"

#include "egret/v1/egret.pb-c.h"
#include "language/utf8.h"
#include "server/grpc_bytes.h"
#include "server/proto_request.h"
#include "tools/shapes_world.h"

/* Defaults. The host memory slack: the server's resident set after the load is compared with
 * the one after the warm-up, and some growth is not a leak. glibc keeps freed memory in per-thread
 * arenas (up to 8 per core) instead of returning it, gRPC keeps per-connection buffers and slice
 * caches, and 32 clients and their requests (PNG images, a few KiB each, up to 64 queued) touch
 * memory that stays mapped. 64 MiB is a few times what that can account for, and far below what
 * a leak of even a few KiB per request would reach over a 60 s run at these rates: a leak of the
 * request's decoded pixels (3 x 64 x 64 floats, 48 KiB) or of a generation result makes the
 * server grow by that times the number of requests, which the counters make visible. */
enum { DEFAULT_CLIENTS = 32 };
#define DEFAULT_DURATION_S 60.0
#define DEFAULT_CALL_TIMEOUT_S 120.0
#define DEFAULT_MARGIN_S 10.0
#define DEFAULT_SETTLE_S 10.0
#define DEFAULT_HOST_SLACK (64ull << 20)

/* ---- names ---- */

static const char *const KIND_NAMES[EG_LOAD_N_KINDS] = {
    "caption",         "few_shot",           "raw",       "unary",
    "cancel",          "deadline",           "bad_image", "bad_utf8",
    "bad_temperature", "bad_max_new_tokens", "bad_empty", "garbage"};
static const char *const OUTCOME_NAMES[EG_LOAD_N_OUTCOMES] = {
    "ok", "cancelled", "deadline_exceeded", "rejected", "queue_full", "failed"};

const char *eg_loadtest_kind_name(EgLoadKind k) {
    return (unsigned)k < EG_LOAD_N_KINDS ? KIND_NAMES[k] : "?";
}
const char *eg_loadtest_outcome_name(EgLoadOutcome o) {
    return (unsigned)o < EG_LOAD_N_OUTCOMES ? OUTCOME_NAMES[o] : "?";
}


/* ---- growing arrays of samples ---- */

typedef struct Samples {
    EgBuf values; /* doubles */
} Samples;

/* A sample lost to a failed allocation only thins the percentiles. */
static void samples_add(Samples *s, double x) {
    (void)eg_buf_append(&s->values, &x, sizeof x);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentiles. */
static EgLoadtestPercentiles percentiles(Samples *s) {
    double *v = (double *)s->values.data;
    size_t n = s->values.len / sizeof *v;
    EgLoadtestPercentiles p = {.n = n};
    if (!n) return p;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i50 = (size_t)ceil(0.50 * (double)n), i99 = (size_t)ceil(0.99 * (double)n);
    p.p50 = v[i50 ? i50 - 1 : 0];
    p.p99 = v[i99 ? i99 - 1 : 0];
    p.max = v[n - 1];
    return p;
}

/* ---- shared state ---- */

enum { ANSWER_SLOTS = 1 << 14 };

typedef struct Shared {
    EgLoadtestOptions o; /* defaults applied */
    EgLoadMix mix;
    double t_begin, t_end; /* the time cap: no call starts after t_end */
    atomic_ullong next;
    atomic_int threads_done;
    pthread_mutex_t mu; /* everything below */
    EgLoadtestReport *rep;
    Samples ttft_client, ttft_server, queue_server, latency;
    uint64_t answer_key[ANSWER_SLOTS], answer_val[ANSWER_SLOTS]; /* key 0: empty */
    double last_end;
} Shared;

static void add_failure(Shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_failure(Shared *sh, const char *fmt, ...) {
    pthread_mutex_lock(&sh->mu);
    EgLoadtestReport *r = sh->rep;
    r->failures++;
    if (r->n_details < EG_LOADTEST_MAX_DETAILS) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->details[r->n_details++], sizeof r->details[0], fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&sh->mu);
}

/* ---- replies ---- */

typedef struct Reply {
    const EgLoadReq *q;
    double t0, t_first;
    EgBuf text; /* what the messages said, joined */
    int text_lost;
    uint64_t n_ids;
    size_t n_messages;
    int finish_reason, finals, after_final, usage_early, have_usage, bad_reply, cancelled_by_us;
    Egret__V1__Usage usage;
    uint64_t text_hash, ids_hash;
} Reply;

static int on_reply(void *user, const uint8_t *data, size_t len) {
    Reply *r = user;
    Egret__V1__GenerateResponse *m = egret__v1__generate_response__unpack(NULL, len, data);
    if (!m) {
        r->bad_reply = 1;
        return 1;
    }
    r->n_messages++;
    if (r->finals) r->after_final = 1;
    if (m->n_token_ids && r->t_first == 0) r->t_first = eg_now_s();
    size_t tl = strlen(m->text);
    if (!r->text_lost && eg_buf_append(&r->text, m->text, tl)) {
        eg_buf_free(&r->text);
        r->text_lost = 1;
    }
    r->text_hash = eg_fnv1a(r->text_hash, m->text, tl);
    r->ids_hash = eg_fnv1a(r->ids_hash, m->token_ids, m->n_token_ids * sizeof *m->token_ids);
    r->n_ids += m->n_token_ids;
    int final = m->finish_reason != 0;
    if (final) {
        r->finals++;
        r->finish_reason = m->finish_reason;
    }
    if (m->usage) {
        if (!final) r->usage_early = 1;
        r->usage = *m->usage;
        r->usage.base.descriptor = NULL;
        r->have_usage = 1;
    }
    egret__v1__generate_response__free_unpacked(m, NULL);
    if (r->q->cancel_after && !final && (int)r->n_messages >= r->q->cancel_after) {
        r->cancelled_by_us = 1;
        return 1;
    }
    return 0;
}

/* Whether a complete answer is what it should be; fills why when not. */
static int answer_ok(const EgLoadReq *q, const Reply *r, char *why, size_t cap) {
    uint32_t max_new = q->req.gen.max_new_tokens;
    int fr = r->finish_reason;
    if (r->finals != 1 || r->after_final || r->usage_early || !r->have_usage)
        snprintf(why, cap, "%d final messages, %s, usage %s", r->finals,
                 r->after_final ? "messages after the final one" : "none after the final one",
                 !r->have_usage   ? "missing"
                 : r->usage_early ? "before the end"
                                  : "at the end");
    else if (fr != EGRET__V1__FINISH_REASON__FINISH_REASON_LENGTH &&
             fr != EGRET__V1__FINISH_REASON__FINISH_REASON_STOP &&
             fr != EGRET__V1__FINISH_REASON__FINISH_REASON_END_OF_SEQUENCE)
        snprintf(why, cap, "finish_reason %d", fr);
    else if (!q->stream && r->n_messages != 1)
        snprintf(why, cap, "Generate answered in %zu messages", r->n_messages);
    else if (r->usage.generated_tokens != r->n_ids)
        snprintf(why, cap, "%llu ids, usage.generated_tokens %u", (unsigned long long)r->n_ids,
                 r->usage.generated_tokens);
    else if (r->n_ids > max_new ||
             (fr == EGRET__V1__FINISH_REASON__FINISH_REASON_LENGTH && r->n_ids != max_new) ||
             (fr == EGRET__V1__FINISH_REASON__FINISH_REASON_END_OF_SEQUENCE && r->n_ids >= max_new))
        snprintf(why, cap, "%llu ids with max_new_tokens %u and finish_reason %d",
                 (unsigned long long)r->n_ids, max_new, fr);
    else if (r->text_lost)
        snprintf(why, cap, "out of memory keeping the text");
    else if (eg_utf8_valid_prefix(r->text.data, r->text.len) != r->text.len)
        snprintf(why, cap, "the text is not valid UTF-8");
    else if (r->usage.images != q->expect_images || r->usage.prompt_tokens == 0)
        snprintf(why, cap, "usage: %u images (sent %u), %u prompt tokens", r->usage.images,
                 q->expect_images, r->usage.prompt_tokens);
    else if (!(r->usage.time_to_first_token_s >= 0) ||
             !(r->usage.total_s >= r->usage.time_to_first_token_s) || !(r->usage.queue_s >= 0))
        snprintf(why, cap, "usage times: ttft %g total %g queue %g", r->usage.time_to_first_token_s,
                 r->usage.total_s, r->usage.queue_s);
    else
        return 1;
    return 0;
}

/* Identical requests (same bytes: same prompt, parameters and seed) must get identical answers,
 * streamed or not. Returns 1 when consistent (or first seen), 0 when not. */
static int consistent(Shared *sh, const EgLoadReq *q, const Reply *r) {
    uint64_t key = eg_fnv1a(EG_FNV1A_INIT, q->bytes, q->len) | 1;
    uint64_t val =
        eg_splitmix64(r->text_hash ^ eg_splitmix64(r->ids_hash) ^ (uint64_t)r->finish_reason);
    int ok = 1;
    pthread_mutex_lock(&sh->mu);
    for (uint64_t i = 0; i < ANSWER_SLOTS; i++) {
        size_t slot = (size_t)((key + i) & (ANSWER_SLOTS - 1));
        if (sh->answer_key[slot] == 0) {
            sh->answer_key[slot] = key;
            sh->answer_val[slot] = val;
            break;
        }
        if (sh->answer_key[slot] == key) {
            ok = sh->answer_val[slot] == val;
            sh->rep->consistency_checks++;
            break;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return ok;
}

/* ---- one call ---- */

static EgLoadOutcome verdict(Shared *sh, const EgLoadReq *q, const Reply *r, int rc,
                             const EgCallStatus *st, const EgError *err, double elapsed, char *why,
                             size_t cap) {
    grpc_status_code code = st->code;
    int valid = q->kind < EG_LOAD_BAD_IMAGE;
    if (rc) {
        snprintf(why, cap, "the call did not complete: %.200s", err->msg);
        return EG_LOAD_FAILED;
    }
    if (elapsed > q->timeout_s + sh->o.margin_s) {
        snprintf(why, cap, "returned after %.2f s, past its %.2f s deadline + %.1f s", elapsed,
                 q->timeout_s, sh->o.margin_s);
        return EG_LOAD_FAILED;
    }
    if (r->bad_reply) {
        snprintf(why, cap, "a reply message does not parse as a GenerateResponse");
        return EG_LOAD_FAILED;
    }
    if (r->after_final) {
        snprintf(why, cap, "a message came after the final one");
        return EG_LOAD_FAILED;
    }
    if (code == GRPC_STATUS_RESOURCE_EXHAUSTED && strstr(st->message, "queue is full"))
        return EG_LOAD_QUEUE_FULL;
    if (r->cancelled_by_us && (code == GRPC_STATUS_CANCELLED || code == GRPC_STATUS_OK))
        return EG_LOAD_CANCELLED; /* OK: the end of the answer raced the cancellation */
    if (code == GRPC_STATUS_DEADLINE_EXCEEDED) {
        if (q->asked_deadline) return EG_LOAD_EXPIRED;
        snprintf(why, cap, "hang: no status within the %.0f s call timeout", q->timeout_s);
        return EG_LOAD_FAILED;
    }
    if (valid && code == GRPC_STATUS_OK) {
        if (!answer_ok(q, r, why, cap)) return EG_LOAD_FAILED;
        if (!consistent(sh, q, r)) {
            snprintf(why, cap, "the answer '%.80s' differs from an identical earlier request's",
                     r->text.data ? r->text.data : "");
            return EG_LOAD_FAILED;
        }
        return EG_LOAD_OK;
    }
    if (!valid && code == q->want_code && strstr(st->message, q->want_needle))
        return EG_LOAD_REJECTED;
    if (valid)
        snprintf(why, cap, "a valid request was answered %s", eg_grpc_status_name(code));
    else
        snprintf(why, cap, "want %s mentioning '%s'", eg_grpc_status_name(q->want_code), q->want_needle);
    return EG_LOAD_FAILED;
}

static EgLoadOutcome run_one(Shared *sh, EgClient *c, uint32_t client, uint64_t index,
                             EgShapesRng *rng) {
    EgLoadReq q;
    if (eg_load_build_request(&sh->mix, index, &q, rng)) {
        eg_load_req_free(&q);
        add_failure(sh, "request %llu: out of memory building it", (unsigned long long)index);
        return EG_LOAD_FAILED;
    }
    Reply r = {.q = &q, .text_hash = EG_FNV1A_INIT, .ids_hash = EG_FNV1A_INIT};
    EgCallStatus st = {0};
    EgError err = {0};
    double t0 = eg_now_s();
    r.t0 = t0;
    int rc =
        eg_client_call(c, q.stream ? "/egret.v1.Egret/GenerateStream" : "/egret.v1.Egret/Generate",
                       q.bytes, q.len, q.timeout_s, on_reply, &r, &st, &err);
    double t1 = eg_now_s(), elapsed = t1 - t0;
    char why[256] = "";
    EgLoadOutcome oc = verdict(sh, &q, &r, rc, &st, &err, elapsed, why, sizeof why);
    if (oc == EG_LOAD_FAILED)
        add_failure(sh, "request %llu (client %u, %s, %s: %s): %s [status %s '%s', %.2f s]",
                    (unsigned long long)index, client, KIND_NAMES[q.kind],
                    q.stream ? "GenerateStream" : "Generate", q.what, why, eg_grpc_status_name(st.code),
                    st.message, elapsed);
    pthread_mutex_lock(&sh->mu);
    EgLoadtestReport *rep = sh->rep;
    rep->requests++;
    rep->outcomes[q.kind][oc]++;
    rep->by_outcome[oc]++;
    if (t1 > sh->last_end) sh->last_end = t1;
    if (oc == EG_LOAD_OK) {
        rep->generated_tokens += r.n_ids;
        if (q.stream && r.t_first > 0) samples_add(&sh->ttft_client, r.t_first - t0);
        samples_add(&sh->ttft_server, r.usage.time_to_first_token_s);
        samples_add(&sh->queue_server, r.usage.queue_s);
        samples_add(&sh->latency, elapsed);
    }
    pthread_mutex_unlock(&sh->mu);
    eg_buf_free(&r.text);
    eg_load_req_free(&q);
    return oc;
}

typedef struct Worker {
    Shared *sh;
    uint32_t index;
    pthread_t thread;
} Worker;

static void *client_main(void *arg) {
    Worker *w = arg;
    Shared *sh = w->sh;
    EgError err = {0};
    EgClient *c = eg_client_connect(sh->o.target, &sh->o.client, &err);
    if (!c) add_failure(sh, "client %u: cannot connect: %s", w->index, err.msg);
    unsigned full_streak = 0;
    while (c && eg_now_s() < sh->t_end) {
        uint64_t i = atomic_fetch_add(&sh->next, 1);
        if (sh->o.max_requests && i >= sh->o.max_requests) break;
        EgShapesRng rng;
        if (run_one(sh, c, w->index, i, &rng) != EG_LOAD_QUEUE_FULL) {
            full_streak = 0;
            continue;
        }
        /* A full queue: back off as a polite client would, exponentially from 0.1 s up to
         * 1.6 s, with jitter (x0.5-1.5), so that overload is part of the mix without turning
         * the run into a flood of refusals. */
        double wait = 0.1 * (double)(1u << (full_streak < 4 ? full_streak : 4));
        full_streak++;
        wait *= 0.5 + eg_shapes_rng_uniform(&rng);
        double left = sh->t_end - eg_now_s();
        if (wait > left) wait = left > 0 ? left : 0;
        usleep((useconds_t)(wait * 1e6));
    }
    eg_client_close(c);
    atomic_fetch_add(&sh->threads_done, 1);
    return NULL;
}

/* ---- control calls: model info, stats, warm-up ---- */

typedef struct Unpacked {
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *msg;
} Unpacked;

static int on_message(void *user, const uint8_t *data, size_t len) {
    Unpacked *u = user;
    if (u->msg) protobuf_c_message_free_unpacked(u->msg, NULL);
    u->msg = protobuf_c_message_unpack(u->desc, NULL, len, data);
    return 0;
}

static ProtobufCMessage *control_call(EgClient *c, const char *method,
                                      const ProtobufCMessageDescriptor *desc, EgError *err) {
    Unpacked u = {desc, NULL};
    EgCallStatus st;
    static const uint8_t empty[1] = {0}; /* an empty request message */
    if (eg_client_call(c, method, empty, 0, 30, on_message, &u, &st, err)) return NULL;
    if (st.code != GRPC_STATUS_OK || !u.msg) {
        if (u.msg) protobuf_c_message_free_unpacked(u.msg, NULL);
        eg_fail(err, "%s: %s '%s'%s", method, eg_grpc_status_name(st.code), st.message,
                st.code == GRPC_STATUS_OK ? " (no message that parses)" : "");
        return NULL;
    }
    return u.msg;
}

uint64_t eg_loadtest_device_memory_held(const EgLoadtestServerStats *s) {
    return s->device_memory_bytes - s->image_cache_bytes - s->prefix_cache_bytes;
}

uint64_t eg_loadtest_host_memory_growth(const EgLoadtestServerStats *before,
                                        const EgLoadtestServerStats *after) {
    int64_t growth = (int64_t)after->host_memory_bytes - (int64_t)before->host_memory_bytes;
    if (after->device_memory_is_host) {
        int64_t caches = (int64_t)(after->image_cache_bytes + after->prefix_cache_bytes) -
                         (int64_t)(before->image_cache_bytes + before->prefix_cache_bytes);
        if (caches > 0) growth -= caches;
    }
    return growth > 0 ? (uint64_t)growth : 0;
}

static int get_stats(EgClient *c, EgLoadtestServerStats *out, EgError *err) {
    Egret__V1__ServerStats *s = (Egret__V1__ServerStats *)control_call(
        c, "/egret.v1.Egret/GetStats", &egret__v1__server_stats__descriptor, err);
    if (!s) return -1;
    *out = (EgLoadtestServerStats){.requests_total = s->requests_total,
                                   .requests_ok = s->requests_ok,
                                   .requests_cancelled = s->requests_cancelled,
                                   .requests_rejected = s->requests_rejected,
                                   .requests_failed = s->requests_failed,
                                   .in_flight = s->in_flight,
                                   .queued = s->queued,
                                   .running = s->running,
                                   .generated_tokens = s->generated_tokens,
                                   .device_memory_bytes = s->device_memory_bytes,
                                   .host_memory_bytes = s->host_memory_bytes,
                                   .device_memory_is_host = s->device_memory_is_host,
                                   .uptime_s = s->uptime_s,
                                   .image_cache_hits = s->image_cache_hits,
                                   .image_cache_misses = s->image_cache_misses,
                                   .image_cache_bytes = s->image_cache_bytes,
                                   .prefix_cache_hits = s->prefix_cache_hits,
                                   .prefix_cache_misses = s->prefix_cache_misses,
                                   .prefix_cache_bytes = s->prefix_cache_bytes};
    egret__v1__server_stats__free_unpacked(s, NULL);
    return 0;
}

/* The warm-up: the largest requests of the mix (two examples and a query; streamed and unary;
 * sampled and greedy), so the baseline has whatever the engine keeps after its first requests. */
static int warm_up(Shared *sh, EgClient *c, EgError *err) {
    for (int i = 0; i < 3; i++) {
        EgLoadReq q;
        memset(&q, 0, sizeof q);
        EgShapesRng rng;
        eg_shapes_rng_seed(&rng, eg_splitmix64(sh->o.seed ^ 0x3a3a) + (uint64_t)i);
        eg_load_build_valid(&sh->mix, &rng, &q, i == 2 ? 2 : 1);
        if (i < 2) { /* make it two examples */
            q.ex[1] = (EgRequestExample){sh->mix.pool[(i + 5) % LOAD_POOL].png,
                                         sh->mix.pool[(i + 5) % LOAD_POOL].len,
                                         sh->mix.pool[(i + 5) % LOAD_POOL].answer[0],
                                         strlen(sh->mix.pool[(i + 5) % LOAD_POOL].answer[0])};
            q.req.n_examples = 2;
            q.expect_images = 3;
        }
        q.req.gen.max_new_tokens = 16;
        q.req.gen.sampling.temperature = i == 1 ? 0.8f : 0.0f;
        q.stream = i != 0;
        q.timeout_s = sh->o.call_timeout_s;
        if (eg_proto_request_encode(&q.req, &q.bytes, &q.len, err)) return -1;
        Reply r = {.q = &q, .text_hash = EG_FNV1A_INIT, .ids_hash = EG_FNV1A_INIT};
        EgCallStatus st;
        int rc = eg_client_call(
            c, q.stream ? "/egret.v1.Egret/GenerateStream" : "/egret.v1.Egret/Generate", q.bytes,
            q.len, q.timeout_s, on_reply, &r, &st, err);
        char why[256] = "";
        int good = rc == 0 && st.code == GRPC_STATUS_OK && answer_ok(&q, &r, why, sizeof why);
        if (!good && rc == 0)
            eg_fail(err, "warm-up request %d (%s): status %s '%s' %s", i, q.what,
                    eg_grpc_status_name(st.code), st.message, why);
        eg_buf_free(&r.text);
        eg_load_req_free(&q);
        if (!good) return -1;
    }
    return 0;
}

/* ---- the run ---- */

static void apply_defaults(EgLoadtestOptions *o) {
    if (!o->clients) o->clients = DEFAULT_CLIENTS;
    if (o->duration_s == 0) o->duration_s = DEFAULT_DURATION_S;
    if (o->call_timeout_s <= 0) o->call_timeout_s = DEFAULT_CALL_TIMEOUT_S;
    if (o->margin_s <= 0) o->margin_s = DEFAULT_MARGIN_S;
    if (o->settle_s <= 0) o->settle_s = DEFAULT_SETTLE_S;
    if (!o->host_memory_slack_bytes) o->host_memory_slack_bytes = DEFAULT_HOST_SLACK;
}

static void progress_line(Shared *sh, EgClient *c, double t) {
    EgLoadtestServerStats s;
    EgError err;
    int have = get_stats(c, &s, &err) == 0;
    pthread_mutex_lock(&sh->mu);
    const EgLoadtestReport *r = sh->rep;
    fprintf(sh->o.progress,
            "loadtest: %5.1f s: %llu calls: %llu ok, %llu cancelled, %llu expired, %llu rejected, "
            "%llu queue full, %llu failed",
            t, (unsigned long long)r->requests, (unsigned long long)r->by_outcome[EG_LOAD_OK],
            (unsigned long long)r->by_outcome[EG_LOAD_CANCELLED],
            (unsigned long long)r->by_outcome[EG_LOAD_EXPIRED],
            (unsigned long long)r->by_outcome[EG_LOAD_REJECTED],
            (unsigned long long)r->by_outcome[EG_LOAD_QUEUE_FULL],
            (unsigned long long)r->by_outcome[EG_LOAD_FAILED]);
    pthread_mutex_unlock(&sh->mu);
    if (have)
        fprintf(sh->o.progress, "; server: %u in flight, %u queued, %u running", s.in_flight,
                s.queued, s.running);
    fputc('\n', sh->o.progress);
    fflush(sh->o.progress);
}

static void check_after(Shared *sh, EgClient *c) {
    EgLoadtestReport *rep = sh->rep;
    const EgLoadtestServerStats *b = &rep->before;
    EgLoadtestServerStats *a = &rep->after;
    /* Settling: the last calls' ends may still be on their way through the server's threads. */
    double t0 = eg_now_s();
    EgError err = {0};
    int have = 0, settled = 0;
    for (;;) {
        have = get_stats(c, a, &err) == 0;
        settled = have && a->in_flight == 0 && a->queued == 0 && a->running == 0 &&
                  eg_loadtest_device_memory_held(a) == eg_loadtest_device_memory_held(b);
        if (settled || eg_now_s() - t0 >= sh->o.settle_s) break;
        usleep(200 * 1000);
    }
    rep->settle_s = eg_now_s() - t0;
    if (!have) {
        add_failure(sh, "GetStats after the load: %s", err.msg);
        return;
    }
    if (!settled)
        add_failure(sh,
                    "%.1f s after the load: %u calls in flight, %u queued, %u running; device "
                    "memory outside the caches %llu bytes, baseline %llu",
                    rep->settle_s, a->in_flight, a->queued, a->running,
                    (unsigned long long)eg_loadtest_device_memory_held(a),
                    (unsigned long long)eg_loadtest_device_memory_held(b));
    if (eg_loadtest_host_memory_growth(b, a) > sh->o.host_memory_slack_bytes)
        add_failure(sh,
                    "host memory %.1f MiB after the load, baseline %.1f MiB: +%.1f MiB%s "
                    "(allowed +%.0f MiB)",
                    (double)a->host_memory_bytes / (1 << 20),
                    (double)b->host_memory_bytes / (1 << 20),
                    (double)eg_loadtest_host_memory_growth(b, a) / (1 << 20),
                    a->device_memory_is_host ? " beyond the caches' growth" : "",
                    (double)sh->o.host_memory_slack_bytes / (1 << 20));
    /* The server's counters against what the clients saw. A client may see less than the server
     * counted (a deadline or cancellation racing a finished answer), never more. */
    uint64_t d_total = a->requests_total - b->requests_total,
             d_ok = a->requests_ok - b->requests_ok,
             d_rej = a->requests_rejected - b->requests_rejected,
             d_failed = a->requests_failed - b->requests_failed;
    uint64_t c_rej = rep->by_outcome[EG_LOAD_REJECTED] + rep->by_outcome[EG_LOAD_QUEUE_FULL];
    if (d_failed)
        add_failure(sh, "the server counted %llu engine failures (INTERNAL) during the load",
                    (unsigned long long)d_failed);
    if (d_total > rep->requests || d_ok < rep->by_outcome[EG_LOAD_OK] || d_rej < c_rej)
        add_failure(sh,
                    "server counters: %llu calls, %llu ok, %llu rejected; clients: %llu calls, "
                    "%llu ok, %llu rejected or queue full",
                    (unsigned long long)d_total, (unsigned long long)d_ok,
                    (unsigned long long)d_rej, (unsigned long long)rep->requests,
                    (unsigned long long)rep->by_outcome[EG_LOAD_OK], (unsigned long long)c_rej);
}

int eg_loadtest_run(const EgLoadtestOptions *opt, EgLoadtestReport *out, EgError *err) {
    memset(out, 0, sizeof *out);
    if (!opt || !opt->target) return eg_fail(err, "the load test needs a server address");
    if (opt->duration_s < 0 && !opt->max_requests)
        return eg_fail(err, "without a time cap the load test needs a request cap");
    Shared *sh = calloc(1, sizeof *sh);
    if (!sh) return eg_fail(err, "out of host memory");
    sh->o = *opt;
    apply_defaults(&sh->o);
    sh->rep = out;
    out->clients = sh->o.clients;
    out->seed = sh->o.seed;
    pthread_mutex_init(&sh->mu, NULL);
    int rc = -1;
    Worker *workers = calloc(sh->o.clients, sizeof *workers);
    EgClient *c = NULL;
    if (!workers) {
        eg_fail(err, "out of host memory");
        goto done;
    }
    sh->mix.seed = sh->o.seed;
    sh->mix.call_timeout_s = sh->o.call_timeout_s;
    if (eg_load_pool_build(&sh->mix, err)) goto done;
    c = eg_client_connect(sh->o.target, &sh->o.client, err);
    if (!c) goto done;
    Egret__V1__ModelInfo *info = (Egret__V1__ModelInfo *)control_call(
        c, "/egret.v1.Egret/GetModelInfo", &egret__v1__model_info__descriptor, err);
    if (!info) goto done;
    sh->mix.max_new_limit = info->limits ? info->limits->max_new_tokens : 0;
    egret__v1__model_info__free_unpacked(info, NULL);
    if (!sh->mix.max_new_limit) {
        eg_fail(err, "GetModelInfo reports no max_new_tokens limit");
        goto done;
    }
    if (warm_up(sh, c, err) || get_stats(c, &out->before, err)) goto done;

    sh->t_begin = eg_now_s();
    sh->t_end = sh->o.duration_s > 0 ? sh->t_begin + sh->o.duration_s : INFINITY;
    sh->last_end = sh->t_begin;
    uint32_t started = 0;
    for (; started < sh->o.clients; started++) {
        workers[started] = (Worker){.sh = sh, .index = started};
        if (pthread_create(&workers[started].thread, NULL, client_main, &workers[started])) {
            add_failure(sh, "could only start %u client threads", started);
            break;
        }
    }
    double next_progress = sh->t_begin + 10;
    while ((uint32_t)atomic_load(&sh->threads_done) < started) {
        usleep(50 * 1000);
        if (sh->o.progress && eg_now_s() >= next_progress) {
            progress_line(sh, c, eg_now_s() - sh->t_begin);
            next_progress += 10;
        }
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(workers[i].thread, NULL);
    out->elapsed_s = sh->last_end - sh->t_begin;
    check_after(sh, c);

    double el = out->elapsed_s > 0 ? out->elapsed_s : 1e-9;
    out->requests_per_s = (double)out->requests / el;
    out->answers_per_s = (double)out->by_outcome[EG_LOAD_OK] / el;
    out->tokens_per_s = (double)out->generated_tokens / el;
    out->ttft_client = percentiles(&sh->ttft_client);
    out->ttft_server = percentiles(&sh->ttft_server);
    out->queue_server = percentiles(&sh->queue_server);
    out->latency = percentiles(&sh->latency);
    rc = 0;
done:
    eg_client_close(c);
    eg_load_pool_free(&sh->mix);
    eg_buf_free(&sh->ttft_client.values);
    eg_buf_free(&sh->ttft_server.values);
    eg_buf_free(&sh->queue_server.values);
    eg_buf_free(&sh->latency.values);
    pthread_mutex_destroy(&sh->mu);
    free(workers);
    free(sh);
    return rc;
}
