/* The queue between the gRPC threads and the engine, and continuous batching.
 *
 * Requests become jobs in a bounded FIFO. One worker thread owns the engine: between decode
 * steps it admits queued jobs until max_batch are on the engine, then advances the running ones
 * by one token in one batched forward (engine/engine.h eg_engine_step), and ends those that
 * finished. Jobs join and leave the running batch at step boundaries, so a long answer never
 * holds up a short one behind it.
 *
 * A job whose images are not all cached is first "preparing": a pool of decode workers
 * decodes, resizes and normalizes its images (one worker per job, its images in order) while
 * the engine's thread keeps stepping the others; it joins the batch when its pixels are ready
 * (the device encodes them on the engine's thread). A preparing job holds its place in the
 * batch. Its worker polls is_cancelled between images and rows, so a job whose caller went away
 * or whose deadline passed stops its image work promptly.
 *
 * Callbacks run on the worker thread. A job belongs to its submitter; the scheduler only links it
 * into the queue and calls on_done exactly once for every accepted job — also when it is dropped
 * because its caller went away while it waited (checked every step, so a dead job does not keep
 * its queue place), or when the scheduler stops. A long prompt is fed in chunks (the engine's
 * prefill_chunk), so the running streams keep getting tokens while a newcomer's prompt is
 * processed. */
#ifndef EGRET_SCHEDULER_H
#define EGRET_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "runtime/work_pool.h"

typedef struct EgJob EgJob;
typedef struct EgScheduler EgScheduler;

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
    /* Polled before the job starts (non-zero skips it), while it runs, and from the decode
     * workers while its images are prepared: must be thread-safe. */
    int (*is_cancelled)(void *owner);
    void (*on_done)(void *owner, const EgJobResult *result);
    /* scheduler-owned */
    double submitted_at;
    EgJob *next;
    EgWork decode; /* the image work, on a decode worker */
    EgScheduler *sched;
    EgEngineJob *decoding; /* the engine job whose images are being prepared */
    int decoded;           /* under the scheduler's lock: the image work is done */
};

/* max_batch: jobs on the engine together, preparing or decoding (capped by the engine's
 * EgFamilyInfo.max_batch). decode_workers: threads preparing images; 0 takes the default,
 * eg_scheduler_default_decode_workers. */
EgScheduler *eg_scheduler_start(EgEngine *engine, uint32_t max_queue, uint32_t max_batch,
                                uint32_t decode_workers, EgError *err);
/* Half the online cores (the other half is the device's, on CPU devices), 1 to 8. */
uint32_t eg_scheduler_default_decode_workers(void);
uint32_t eg_scheduler_max_batch(const EgScheduler *s);
/* Returns 0 when queued, -1 with err naming the limit when the queue is full (RESOURCE_EXHAUSTED)
 * or the scheduler is stopping. */
int eg_scheduler_submit(EgScheduler *s, EgJob *job, EgError *err);
/* Has the engine's thread run eg_engine_tidy soon (a deleted example set's device memory is
 * released there). */
void eg_scheduler_tidy(EgScheduler *s);
/* Jobs waiting, jobs on the engine (preparing ones included), and jobs preparing. */
void eg_scheduler_counts(EgScheduler *s, size_t *queued, size_t *running, size_t *preparing);
/* out[k]: engine steps that advanced k jobs together (k >= 1; out[0] stays 0). Lock-free. */
void eg_scheduler_steps_by_batch(EgScheduler *s, uint64_t out[EG_BATCH_MAX + 1]);
/* Finishes the running jobs, ends the queued ones with EG_STATUS_CANCELLED and joins the worker. */
void eg_scheduler_stop(EgScheduler *s);

#endif
