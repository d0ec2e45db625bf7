#include "engine/scheduler.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "runtime/clock.h"
#include "runtime/parallel.h"

struct EgScheduler {
    EgEngine *engine;
    uint32_t max_queue, max_batch;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    EgJob *head, *tail;
    size_t queued, running, preparing;
    size_t decodes_done; /* image work finished and not yet taken up by the engine's thread */
    int stopping;
    int tidy; /* eg_scheduler_tidy asked for eg_engine_tidy */
    pthread_t worker;
    EgWorkPool *decoders;
    /* engine steps by the number of jobs they advanced (batch occupancy, for metrics) */
    _Atomic unsigned long long steps_by_batch[EG_BATCH_MAX + 1];
};

/* A job on the engine. */
typedef struct Active {
    EgJob *job;
    EgEngineJob *ej;
    EgRequestStats stats;
    double queue_s;
    int preparing; /* its images are with a decode worker: the engine's thread leaves it alone */
} Active;

static int job_token(void *user, int32_t id, const char *text, size_t len) {
    EgJob *job = user;
    return job->on_token(job->owner, id, text, len);
}

/* Reports a job that never reached the engine. Called without the lock. */
static void end_unrun(EgJob *job, EgStatus status, const EgError *err, double queue_s) {
    EgJobResult r = {.status = status, .err = err, .queue_s = queue_s};
    job->on_done(job->owner, &r);
}

static void count_done(EgScheduler *s) {
    pthread_mutex_lock(&s->mu);
    s->running--;
    pthread_mutex_unlock(&s->mu);
}

/* With the lock held: unlinks the queued jobs whose callers went away (they never run, and no
 * longer hold queue places), returning them as a list. */
static EgJob *take_cancelled_locked(EgScheduler *s) {
    EgJob *dead = NULL, **p = &s->head;
    s->tail = NULL;
    while (*p) {
        EgJob *j = *p;
        if (j->is_cancelled(j->owner)) {
            *p = j->next;
            j->next = dead;
            dead = j;
            s->queued--;
        } else {
            s->tail = j;
            p = &j->next;
        }
    }
    return dead;
}

static int job_stop(void *user) {
    EgJob *job = user;
    return job->is_cancelled(job->owner);
}

/* A decode worker: the job's images, then word to the engine's thread. The job may be ended and
 * freed as soon as the lock is released, so nothing touches it after. */
static void decode_run(EgWork *w) {
    EgJob *job = (EgJob *)(void *)((char *)w - offsetof(EgJob, decode));
    EgScheduler *s = job->sched;
    eg_engine_decode(job->decoding, job_stop, job);
    pthread_mutex_lock(&s->mu);
    job->decoded = 1;
    s->decodes_done++;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

/* Hands a job's images to the decode workers. */
static void begin_decode(EgScheduler *s, Active *a) {
    EgJob *job = a->job;
    a->preparing = 1;
    job->sched = s;
    job->decoding = a->ej;
    job->decoded = 0;
    job->decode.run = decode_run;
    pthread_mutex_lock(&s->mu);
    s->preparing++;
    pthread_mutex_unlock(&s->mu);
    eg_work_pool_submit(s->decoders, &job->decode);
}

/* On the engine's thread, for a job whose images are ready (or that failed): the device encodes
 * them and the job joins the batch, unless an image must be decoded after all. */
static void start(EgScheduler *s, Active *a) {
    eg_engine_start(a->ej);
    if (eg_engine_job_needs_pixels(a->ej)) begin_decode(s, a);
}

/* Starts a popped job on the engine; reports it at once when it cannot run. */
static int admit(EgScheduler *s, EgJob *job, int stopping, Active *slot) {
    double queue_s = eg_now_s() - job->submitted_at;
    EgError err = {0};
    if (stopping || job->is_cancelled(job->owner)) {
        eg_fail(&err, stopping ? "the server is shutting down" : "cancelled while queued");
        count_done(s);
        end_unrun(job, EG_STATUS_CANCELLED, &err, queue_s);
        return 0;
    }
    *slot = (Active){.job = job, .queue_s = queue_s};
    EgStatus st =
        eg_engine_admit(s->engine, job->req, job_token, job, &slot->ej, &slot->stats, &err);
    if (st == EG_STATUS_OK) {
        if (eg_engine_job_needs_pixels(slot->ej))
            begin_decode(s, slot);
        else
            start(s, slot); /* every image cached: nothing to decode */
        return 1;
    }
    count_done(s);
    EgJobResult r = {.status = st, .stats = &slot->stats, .err = &err, .queue_s = queue_s};
    job->on_done(job->owner, &r);
    return 0;
}

/* Ends a finished job and reports its outcome. */
static void finish(EgScheduler *s, Active *a) {
    EgGenerateResult gen;
    EgError err = {0};
    EgStatus st = eg_engine_end(a->ej, &gen, &err);
    /* The engine is free of the job before its outcome is reported, so a client that has its
     * answer never sees the job still counted as running. */
    count_done(s);
    EgJobResult r = {.status = st, .gen = &gen, .stats = &a->stats, .err = &err,
                     .queue_s = a->queue_s};
    a->job->on_done(a->job->owner, &r);
    eg_generate_result_free(&gen);
}

/* Hands the heap's free pages back to the system (glibc's malloc_trim) when the engine goes
 * idle. On CPU Vulkan implementations (lavapipe) device memory is heap memory, and a burst of
 * requests frees its KV caches in pieces the allocator would otherwise keep resident: the
 * server's footprint should come back down after the load. */
static void release_free_memory(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* With the lock held: waits up to ms milliseconds for a signal. */
static void wait_locked(EgScheduler *s, long ms) {
    uint64_t t = eg_now_ns() + (uint64_t)ms * 1000000u; /* the condition waits on CLOCK_MONOTONIC */
    struct timespec until = {.tv_sec = (time_t)(t / 1000000000u),
                             .tv_nsec = (long)(t % 1000000000u)};
    pthread_cond_timedwait(&s->wake, &s->mu, &until);
}

/* The engine's thread: admits queued jobs up to max_batch, takes up the jobs whose images are
 * ready, then advances every running job by one token, or a new one by a chunk of its prompt,
 * per step (continuous batching: jobs join and leave between steps). */
static void *worker_main(void *arg) {
    EgScheduler *s = arg;
    Active active[EG_FAMILY_MAX_BATCH];
    uint32_t n = 0, n_preparing = 0;
    int stepped = 0; /* the engine ran since it was last idle */
    pthread_mutex_lock(&s->mu);
    for (;;) {
        EgJob *dead = take_cancelled_locked(s);
        if (dead) {
            pthread_mutex_unlock(&s->mu);
            EgError err;
            eg_fail(&err, "cancelled while queued");
            while (dead) {
                EgJob *next = dead->next;
                end_unrun(dead, EG_STATUS_CANCELLED, &err, eg_now_s() - dead->submitted_at);
                dead = next;
            }
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (s->tidy) {
            s->tidy = 0;
            pthread_mutex_unlock(&s->mu);
            eg_engine_tidy(s->engine);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (!s->head && n == 0 && stepped) {
            stepped = 0;
            pthread_mutex_unlock(&s->mu);
            release_free_memory();
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (!s->head && n == 0) {
            if (s->stopping) break; /* nothing left */
            pthread_cond_wait(&s->wake, &s->mu);
            continue;
        }
        if (n_preparing == n && !s->decodes_done && (!s->head || n == s->max_batch)) {
            /* Only image work is under way: wait for it, looking at the queue now and then
             * for callers gone away. */
            wait_locked(s, 50);
            continue;
        }
        while (n < s->max_batch && s->head) {
            EgJob *job = s->head;
            s->head = job->next;
            if (!s->head) s->tail = NULL;
            s->queued--;
            s->running++;
            int stopping = s->stopping;
            pthread_mutex_unlock(&s->mu);
            n += (uint32_t)admit(s, job, stopping, &active[n]);
            pthread_mutex_lock(&s->mu);
        }
        Active *ready[EG_FAMILY_MAX_BATCH];
        uint32_t n_ready = 0;
        for (uint32_t i = 0; i < n && s->decodes_done; i++)
            if (active[i].preparing && active[i].job->decoded) {
                active[i].preparing = 0;
                s->decodes_done--;
                s->preparing--;
                ready[n_ready++] = &active[i];
            }
        pthread_mutex_unlock(&s->mu);
        for (uint32_t i = 0; i < n_ready; i++)
            start(s, ready[i]);
        EgEngineJob *jobs[EG_FAMILY_MAX_BATCH];
        uint32_t k = 0;
        n_preparing = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (active[i].preparing) {
                n_preparing++;
                continue;
            }
            jobs[k++] = active[i].ej;
            /* a caller gone during a long prompt is noticed between its chunks */
            if (active[i].job->is_cancelled(active[i].job->owner)) eg_engine_cancel(active[i].ej);
        }
        if (k) {
            EgError err = {0};
            stepped = 1;
            atomic_fetch_add_explicit(&s->steps_by_batch[k], 1, memory_order_relaxed);
            if (eg_engine_step(s->engine, jobs, k, &err))
                for (uint32_t i = 0; i < k; i++) /* the step could not run: end them all */
                    eg_engine_cancel(jobs[i]);
        }
        for (uint32_t i = 0; i < n;) {
            if (!active[i].preparing && eg_engine_job_finished(active[i].ej)) {
                finish(s, &active[i]);
                active[i] = active[--n];
            } else {
                i++;
            }
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void eg_scheduler_steps_by_batch(EgScheduler *s, uint64_t out[EG_BATCH_MAX + 1]) {
    for (int i = 0; i <= EG_BATCH_MAX; i++)
        out[i] = atomic_load_explicit(&s->steps_by_batch[i], memory_order_relaxed);
}

uint32_t eg_scheduler_default_decode_workers(void) {
    return (uint32_t)(eg_online_cores(16) + 1) / 2;
}

EgScheduler *eg_scheduler_start(EgEngine *engine, uint32_t max_queue, uint32_t max_batch,
                                uint32_t decode_workers, EgError *err) {
    EgScheduler *s = calloc(1, sizeof *s);
    if (!s) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    EgEngineInfo info;
    eg_engine_describe(engine, &info);
    uint32_t most = info.max_batch;
    s->engine = engine;
    s->max_queue = max_queue;
    s->max_batch = max_batch == 0 ? 1 : max_batch > most ? most : max_batch;
    s->decoders = eg_work_pool_start(
        (int)(decode_workers ? decode_workers : eg_scheduler_default_decode_workers()), err);
    if (!s->decoders) {
        free(s);
        return NULL;
    }
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&s->worker, NULL, worker_main, s) != 0) {
        eg_fail(err, "cannot start the engine thread");
        eg_work_pool_stop(s->decoders);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    return s;
}

uint32_t eg_scheduler_max_batch(const EgScheduler *s) {
    return s->max_batch;
}

int eg_scheduler_submit(EgScheduler *s, EgJob *job, EgError *err) {
    pthread_mutex_lock(&s->mu);
    int rc = -1;
    if (s->stopping) {
        eg_fail(err, "the server is shutting down");
    } else if (s->queued >= s->max_queue) {
        eg_fail(err, "the request queue is full (%zu waiting; limit max_queue=%u)", s->queued,
                s->max_queue);
    } else {
        job->submitted_at = eg_now_s();
        job->next = NULL;
        if (s->tail)
            s->tail->next = job;
        else
            s->head = job;
        s->tail = job;
        s->queued++;
        pthread_cond_signal(&s->wake);
        rc = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void eg_scheduler_tidy(EgScheduler *s) {
    pthread_mutex_lock(&s->mu);
    s->tidy = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void eg_scheduler_counts(EgScheduler *s, size_t *queued, size_t *running, size_t *preparing) {
    pthread_mutex_lock(&s->mu);
    *queued = s->queued;
    *running = s->running;
    *preparing = s->preparing;
    pthread_mutex_unlock(&s->mu);
}

void eg_scheduler_stop(EgScheduler *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->worker, NULL); /* it ends once no job is left, preparing ones included */
    eg_work_pool_stop(s->decoders);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
