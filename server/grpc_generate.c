/* Generate and GenerateStream: a decoded request becomes a scheduler job; the worker thread
 * reports tokens (streamed as they become final) and the outcome, and this file turns them into
 * messages and a status. Cancellation is polled once per generated token: a client that cancels,
 * disconnects or runs past its deadline stops costing compute within one decode step. */
#include <stdlib.h>
#include <string.h>

#include "server/grpc_server_internal.h"

/* pump results */
enum { PUMP_OK = 0, PUMP_SEND_FAILED = -1, PUMP_FINISH_FAILED = -2 };

static int deadline_passed(const Call *c) {
    return gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), c->deadline) >= 0;
}

static int job_cancelled(void *owner) {
    Call *c = owner;
    return atomic_load(&c->client_gone) || atomic_load(&c->srv->cancel_all) ||
           deadline_passed(c);
}

static int pending_append(Call *c, int32_t id, const char *text, size_t len) {
    if (eg_buf_append(&c->pend_text, text, len)) return -1;
    if (id < 0) return 0;
    uint32_t u = (uint32_t)id;
    return eg_buf_append(&c->pend_ids, &u, sizeof u);
}

/* The pending text and ids as one message (and the outcome when final); empties the pending. */
static grpc_byte_buffer *pack_pending(Call *c, int final) {
    Egret__V1__GenerateResponse r = EGRET__V1__GENERATE_RESPONSE__INIT;
    r.text = c->pend_text.len ? c->pend_text.data : "";
    r.n_token_ids = c->pend_ids.len / sizeof(uint32_t);
    r.token_ids = (uint32_t *)c->pend_ids.data;
    if (final) {
        r.finish_reason = c->finish_reason;
        r.usage = &c->usage;
    }
    grpc_byte_buffer *bb = eg_grpc_pack(&r.base);
    c->pend_text.len = 0;
    c->pend_ids.len = 0;
    return bb;
}

/* With c->mu held: sends what is pending, or, once the outcome is known and nothing is in
 * flight, the last message and the status. */
static int stream_pump_locked(Call *c) {
    if (c->send_in_flight || c->finish_started) return PUMP_OK;
    if (c->have_final) {
        grpc_byte_buffer *last = c->final_code == GRPC_STATUS_OK ? pack_pending(c, 1) : NULL;
        return eg_call_finish_locked(c, c->final_code, c->final_msg, last) ? PUMP_FINISH_FAILED
                                                                             : PUMP_OK;
    }
    if (c->pend_text.len == 0 && c->pend_ids.len == 0) return PUMP_OK;
    return eg_call_send_locked(c, pack_pending(c, 0)) ? PUMP_SEND_FAILED : PUMP_OK;
}

static int job_token(void *owner, int32_t id, const char *text, size_t len) {
    Call *c = owner;
    if (c->method == M_STREAM && (id >= 0 || len > 0)) {
        pthread_mutex_lock(&c->mu);
        int rc = pending_append(c, id, text, len) ? PUMP_SEND_FAILED : stream_pump_locked(c);
        pthread_mutex_unlock(&c->mu);
        if (rc != PUMP_OK) return 1;
    }
    return job_cancelled(c);
}


/* Why a job stopped early, as a status. */
static grpc_status_code cancel_status(const Call *c, size_t generated, char *msg, size_t cap) {
    if (atomic_load(&c->srv->cancel_all)) {
        snprintf(msg, cap, "the server is shutting down (cancelled after %zu generated tokens)",
                 generated);
        return GRPC_STATUS_UNAVAILABLE;
    }
    /* The core also cancels a call whose deadline passed, so the deadline is checked first. */
    if (deadline_passed(c)) {
        snprintf(msg, cap, "deadline exceeded after %zu generated tokens", generated);
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    }
    snprintf(msg, cap, "cancelled by the client after %zu generated tokens", generated);
    return GRPC_STATUS_CANCELLED;
}

static grpc_status_code outcome(Call *c, const EgJobResult *r, char *msg, size_t cap) {
    size_t generated = r->gen ? r->gen->n_ids : 0;
    switch (r->status) {
    case EG_STATUS_OK:
        if (r->gen->finish != EG_FINISH_CANCELLED) return GRPC_STATUS_OK;
        return cancel_status(c, generated, msg, cap);
    case EG_STATUS_CANCELLED:
        return cancel_status(c, generated, msg, cap);
    case EG_STATUS_INVALID_ARGUMENT:
        snprintf(msg, cap, "%s", r->err->msg);
        return GRPC_STATUS_INVALID_ARGUMENT;
    case EG_STATUS_RESOURCE_EXHAUSTED:
        snprintf(msg, cap, "%s", r->err->msg);
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case EG_STATUS_NOT_FOUND:
        snprintf(msg, cap, "%s", r->err->msg);
        return GRPC_STATUS_NOT_FOUND;
    case EG_STATUS_INTERNAL:
        break;
    }
    snprintf(msg, cap, "%s", r->err->msg);
    return GRPC_STATUS_INTERNAL;
}

static grpc_byte_buffer *pack_unary(const Call *c, const EgGenerateResult *gen) {
    uint32_t *ids = malloc((gen->n_ids + 1) * sizeof *ids);
    if (!ids) return NULL;
    for (size_t i = 0; i < gen->n_ids; i++)
        ids[i] = (uint32_t)gen->ids[i];
    Egret__V1__GenerateResponse r = EGRET__V1__GENERATE_RESPONSE__INIT;
    Egret__V1__Usage usage = c->usage;
    r.text = gen->text;
    r.n_token_ids = gen->n_ids;
    r.token_ids = ids;
    r.finish_reason = c->finish_reason;
    r.usage = &usage;
    grpc_byte_buffer *bb = eg_grpc_pack(&r.base);
    free(ids);
    return bb;
}

void eg_generate_release_request(Call *c) {
    eg_proto_request_free(&c->preq);
    atomic_fetch_sub(&c->srv->request_bytes_held, c->held_bytes);
    c->held_bytes = 0;
}

/* Takes `asked` bytes of the request memory budget for c, or says why not. */
static int reserve(Call *c, uint64_t asked, EgError *err) {
    EgServer *s = c->srv;
    uint64_t budget = s->opt.request_memory_bytes;
    unsigned long long held = atomic_load(&s->request_bytes_held);
    do {
        if (asked > budget || held > budget - asked)
            return eg_fail(err,
                           "the requests queued and running hold %llu bytes and this one needs "
                           "%llu more: over the request memory budget of %llu bytes "
                           "(request_memory_bytes)",
                           held, (unsigned long long)asked, (unsigned long long)budget);
    } while (!atomic_compare_exchange_weak(&s->request_bytes_held, &held, held + asked));
    c->held_bytes = asked;
    return 0;
}

static void job_done(void *owner, const EgJobResult *r) {
    Call *c = owner;
    eg_generate_release_request(c); /* the engine is done with it */
    char msg[sizeof c->final_msg] = "";
    grpc_status_code code = outcome(c, r, msg, sizeof msg);

    pthread_mutex_lock(&c->mu);
    egret__v1__usage__init(&c->usage);
    if (r->stats) {
        c->usage.prompt_tokens = r->stats->prompt_tokens;
        c->usage.images = r->stats->images;
    }
    if (r->gen) {
        c->usage.generated_tokens = (uint32_t)r->gen->n_ids;
        c->usage.time_to_first_token_s = r->gen->prefill_s;
        c->usage.total_s = r->gen->total_s;
        c->finish_reason = eg_finish_reason_to_proto(r->gen->finish);
    }
    c->usage.queue_s = r->queue_s;
    c->have_final = 1;
    c->final_code = code;
    snprintf(c->final_msg, sizeof c->final_msg, "%s", msg);
    /* Logged and counted before the client can have its answer (GetStats right after agrees). */
    eg_server_log(c->srv, c, code, msg);
    int rc;
    if (c->method == M_GENERATE) {
        grpc_byte_buffer *resp = code == GRPC_STATUS_OK ? pack_unary(c, r->gen) : NULL;
        if (code == GRPC_STATUS_OK && !resp) {
            code = c->final_code = GRPC_STATUS_INTERNAL;
            snprintf(msg, sizeof msg, "out of host memory");
        }
        rc = c->finish_started ? PUMP_OK
                               : (eg_call_finish_locked(c, code, msg, resp) ? PUMP_FINISH_FAILED
                                                                            : PUMP_OK);
    } else {
        rc = stream_pump_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == PUMP_FINISH_FAILED) eg_call_unref(c);
    eg_call_unref(c); /* the job's reference */
}

void eg_generate_on_send_done(Call *c) {
    pthread_mutex_lock(&c->mu);
    int rc = stream_pump_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (rc == PUMP_FINISH_FAILED) eg_call_unref(c);
}

void eg_generate_begin(Call *c) {
    EgServer *s = c->srv;
    EgError err = {0};
    if (!c->payload) {
        eg_call_fail_no_message(c);
        return;
    }
    grpc_slice all;
    grpc_status_code read =
        eg_grpc_read_message(c->payload, s->opt.max_request_bytes, "max_request_bytes", &all, &err);
    grpc_byte_buffer_destroy(c->payload); /* the decoded request holds its own copy */
    c->payload = NULL;
    if (read != GRPC_STATUS_OK) {
        eg_call_fail(c, read, err.msg);
        return;
    }
    /* While it is decoded a request counts at its size; then at what it keeps. */
    if (reserve(c, GRPC_SLICE_LENGTH(all), &err)) {
        grpc_slice_unref(all);
        eg_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, err.msg);
        return;
    }
    EgStatus rc = eg_proto_request_decode(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all),
                                          s->opt.default_max_new_tokens, &c->preq, &err);
    grpc_slice_unref(all);
    if (rc != EG_STATUS_OK) {
        eg_generate_release_request(c);
        eg_call_fail(c,
                     rc == EG_STATUS_RESOURCE_EXHAUSTED ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                                        : GRPC_STATUS_INVALID_ARGUMENT,
                     err.msg);
        return;
    }
    /* Mostly less (no unknown fields); more for many tiny parts, whose structures outweigh
     * their bytes on the wire (bounded by EG_PROTO_MAX_PARTS). */
    uint64_t keeps = eg_proto_request_held_bytes(&c->preq);
    atomic_fetch_add(&s->request_bytes_held, keeps);
    atomic_fetch_sub(&s->request_bytes_held, c->held_bytes);
    c->held_bytes = keeps;
    c->job = (EgJob){.req = &c->preq.req,
                     .owner = c,
                     .on_token = job_token,
                     .is_cancelled = job_cancelled,
                     .on_done = job_done};
    atomic_fetch_add(&c->refs, 1);
    if (eg_scheduler_submit(s->sched, &c->job, &err)) {
        atomic_fetch_sub(&c->refs, 1);
        eg_generate_release_request(c);
        eg_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, err.msg);
    }
}
