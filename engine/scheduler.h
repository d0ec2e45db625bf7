/* The queue between the gRPC threads and the engine, and continuous batching.
 *
 * Requests become jobs in a bounded FIFO. One worker thread owns the engine: between decode
 * steps it admits queued jobs (preparing and prefilling each) until max_batch are running, then
 * advances all of them by one token in one batched forward (engine/engine.h eg_engine_step),
 * and ends those that finished. Jobs join and leave the running batch at step boundaries, so a
 * long answer never holds up a short one behind it.
 *
 * Callbacks run on the worker thread. A job belongs to its submitter; the scheduler only links it
 * into the queue and calls on_done exactly once for every accepted job — also when it is dropped
 * because its caller went away while it waited (checked every step, so a dead job does not keep
 * its queue place), or when the scheduler stops. Not yet: a long prefill is not split, so the
 * running streams pause while a newcomer's prompt is processed. */
#ifndef EGRET_SCHEDULER_H
#define EGRET_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct EgJob EgJob;

typedef struct EgJobResult {
    EgStatus status; /* EG_STATUS_CANCELLED when the job never ran */
    const EgGenerateResult *gen;
    const EgRequestStats *stats;
    const EgError *err; /* the message when status is not OK */
    double queue_s;     /* seconds between submit and the start of processing */
} EgJobResult;

struct EgJob {
    const EgRequest *req;
    void *owner;
    /* Per generated token (see EgTokenCallback); non-zero cancels the job. */
    int (*on_token)(void *owner, int32_t id, const char *text, size_t len);
    /* Polled before the job starts: non-zero skips it. */
    int (*is_cancelled)(void *owner);
    void (*on_done)(void *owner, const EgJobResult *result);
    /* scheduler-owned */
    double submitted_at;
    EgJob *next;
};

typedef struct EgScheduler EgScheduler;

/* max_batch: jobs decoding together (capped by the engine's eg_sequence_max_batch). */
EgScheduler *eg_scheduler_start(EgEngine *engine, uint32_t max_queue, uint32_t max_batch,
                                EgError *err);
uint32_t eg_scheduler_max_batch(const EgScheduler *s);
/* Returns 0 when queued, -1 with err naming the limit when the queue is full (RESOURCE_EXHAUSTED)
 * or the scheduler is stopping. */
int eg_scheduler_submit(EgScheduler *s, EgJob *job, EgError *err);
/* Jobs waiting, and jobs running. */
void eg_scheduler_counts(EgScheduler *s, size_t *queued, size_t *running);
/* Finishes the running jobs, ends the queued ones with EG_STATUS_CANCELLED and joins the worker. */
void eg_scheduler_stop(EgScheduler *s);

#endif
