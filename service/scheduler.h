/* The queue between the gRPC threads and the engine.
 *
 * Requests become jobs in a bounded FIFO; one worker thread takes them in order and runs them on
 * the engine. The engine's scratch buffers serve one sequence at a time, so today the worker runs
 * one job at a time. The interface is already what continuous batching needs (issue 6): a job is
 * a whole request plus callbacks, tokens are reported per step through on_token, and cancellation
 * is polled through the callbacks, so a batched worker can slot in behind the same calls.
 *
 * Callbacks run on the worker thread. A job belongs to its submitter; the scheduler only links it
 * into the queue and calls on_done exactly once for every accepted job (also when it is skipped
 * because it was cancelled while queued, or when the scheduler stops). */
#ifndef EGRET_SCHEDULER_H
#define EGRET_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "service/engine.h"

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

EgScheduler *eg_scheduler_start(EgEngine *engine, uint32_t max_queue, EgError *err);
/* Returns 0 when queued, -1 with err naming the limit when the queue is full (RESOURCE_EXHAUSTED)
 * or the scheduler is stopping. */
int eg_scheduler_submit(EgScheduler *s, EgJob *job, EgError *err);
/* Jobs waiting, and jobs running. */
void eg_scheduler_counts(EgScheduler *s, size_t *queued, size_t *running);
/* Finishes the running job, ends the queued ones with EG_STATUS_CANCELLED and joins the worker. */
void eg_scheduler_stop(EgScheduler *s);

#endif
