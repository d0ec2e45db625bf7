/* Warm start for `egret serve`: before the server says SERVING, run every kind of work a request
 * can reach once, so that the first request costs what the tenth does.
 *
 * What a first request pays on a CPU driver is compiling: lavapipe turns a pipeline's shader into
 * machine code at the pipeline's first dispatch, not when Egret creates it at load (5.5-11 s for
 * a first caption with Mesa's shader cache empty, 0.03-0.06 s for the next ones). Which pipelines
 * a request dispatches depends on its shape: rows of x (1, 2, 3-4, 5-8, more), rows off a
 * multiple of 8, images encoded together, images from the cache, decode batches of 1..max_batch
 * sequences, a prompt longer than one prefill chunk, a prompt that reuses a cached prefix. The
 * warm-up runs requests of each of those shapes through the engine; EgEngineStats'
 * pipelines_first_used then stays constant while serving (tests/test_warmup.c). */
#ifndef EGRET_SERVE_WARMUP_H
#define EGRET_SERVE_WARMUP_H

#include <stdint.h>

#include "engine/engine.h"

typedef struct EgWarmupReport {
    uint32_t requests;  /* requests run */
    uint64_t pipelines; /* pipelines dispatched for the first time */
    double seconds;
} EgWarmupReport;

/* Runs the warm-up requests on the engine (nothing else may use it meanwhile), then empties its
 * caches and zeroes their counters (eg_engine_forget): the warm-up is not traffic. max_batch: the
 * most requests the server will decode together (its --max-batch). Returns 0, or -1 with err
 * naming what failed (a device error: the server should not start). */
int eg_serve_warmup(EgEngine *e, uint32_t max_batch, EgWarmupReport *report, EgError *err);

#endif
