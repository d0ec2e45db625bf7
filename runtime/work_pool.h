/* A fixed set of threads running queued work items in submission order: work that must not run
 * on the thread that submits it (the service decodes request images here, off the engine's
 * thread, so the running streams keep getting tokens while a newcomer's images are prepared).
 *
 * Items are intrusive: the submitter owns each EgWork (usually inside a larger struct) until its
 * run function has been called, so submitting never allocates and never fails. */
#ifndef EGRET_WORK_POOL_H
#define EGRET_WORK_POOL_H

#include <stddef.h>

#include "runtime/error.h"

typedef struct EgWork EgWork;
struct EgWork {
    /* Called once, on a pool thread; the item may be freed or resubmitted from inside. */
    void (*run)(EgWork *work);
    EgWork *next; /* pool-owned while queued */
};

typedef struct EgWorkPool EgWorkPool;

/* Starts n threads (n >= 1). NULL with err set when none could start. */
EgWorkPool *eg_work_pool_start(int n, EgError *err);
/* Queues work; a free thread runs it. */
void eg_work_pool_submit(EgWorkPool *p, EgWork *work);
int eg_work_pool_threads(const EgWorkPool *p);
/* Items waiting for a thread, and items running now. */
void eg_work_pool_counts(EgWorkPool *p, size_t *queued, size_t *running);
/* Runs what is still queued, then joins the threads and frees the pool. */
void eg_work_pool_stop(EgWorkPool *p);

#endif
