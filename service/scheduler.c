#include "service/scheduler.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct EgScheduler {
    EgEngine *engine;
    uint32_t max_queue;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    EgJob *head, *tail;
    size_t queued, running;
    int stopping;
    pthread_t worker;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int job_token(void *user, int32_t id, const char *text, size_t len) {
    EgJob *job = user;
    return job->on_token(job->owner, id, text, len);
}

static void run_job(EgScheduler *s, EgJob *job) {
    EgJobResult r = {.queue_s = now_s() - job->submitted_at};
    EgGenerateResult gen = {0};
    EgRequestStats stats = {0};
    EgError err = {{0}};
    if (job->is_cancelled(job->owner)) {
        r.status = EG_STATUS_CANCELLED;
        eg_fail(&err, "cancelled while queued");
    } else {
        r.status = eg_engine_generate(s->engine, job->req, job_token, job, &gen, &stats, &err);
    }
    r.gen = &gen;
    r.stats = &stats;
    r.err = &err;
    /* The engine is free before the outcome is reported, so a client that has its answer never
     * sees the job still counted as running. */
    pthread_mutex_lock(&s->mu);
    s->running--;
    pthread_mutex_unlock(&s->mu);
    job->on_done(job->owner, &r);
    eg_generate_result_free(&gen);
}

static void *worker_main(void *arg) {
    EgScheduler *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stopping)
            pthread_cond_wait(&s->wake, &s->mu);
        if (!s->head) break; /* stopping with nothing queued */
        EgJob *job = s->head;
        s->head = job->next;
        if (!s->head) s->tail = NULL;
        s->queued--;
        s->running++;
        int stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stopping) {
            EgError err;
            eg_fail(&err, "the server is shutting down");
            EgJobResult r = {.status = EG_STATUS_CANCELLED, .err = &err};
            pthread_mutex_lock(&s->mu);
            s->running--;
            pthread_mutex_unlock(&s->mu);
            job->on_done(job->owner, &r);
        } else {
            run_job(s, job);
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

EgScheduler *eg_scheduler_start(EgEngine *engine, uint32_t max_queue, EgError *err) {
    EgScheduler *s = calloc(1, sizeof *s);
    if (!s) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    s->engine = engine;
    s->max_queue = max_queue;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    if (pthread_create(&s->worker, NULL, worker_main, s) != 0) {
        eg_fail(err, "cannot start the engine thread");
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    return s;
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
        job->submitted_at = now_s();
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

void eg_scheduler_counts(EgScheduler *s, size_t *queued, size_t *running) {
    pthread_mutex_lock(&s->mu);
    *queued = s->queued;
    *running = s->running;
    pthread_mutex_unlock(&s->mu);
}

void eg_scheduler_stop(EgScheduler *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->worker, NULL);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
