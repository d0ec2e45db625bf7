/* The core warmer (runtime/core_warmer.c): its spinners run at SCHED_IDLE, spin while a
 * submission is in flight and through the linger after it, then sleep (an idle service burns
 * nothing), also after many concurrent busy/idle pairs; and it stops cleanly.
 *
 * Spinners are told apart by state, not by CPU time: a starved spinner (ctest runs two tests at
 * once on two cores) is still runnable ('R'), a sleeping one is 'S'. */
#include "runtime/core_warmer.h"
#include "test_util.h"

#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_SPINNERS 8

/* The thread ids of this process's SCHED_IDLE threads (the spinners): how many. */
static int find_spinners(pid_t *tids) {
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d)) && n < MAX_SPINNERS;) {
        pid_t tid = (pid_t)atoi(e->d_name);
        if (tid > 0 && sched_getscheduler(tid) == SCHED_IDLE) tids[n++] = tid;
    }
    closedir(d);
    return n;
}

/* The scheduler state letter of thread tid ('R' runnable, 'S' sleeping, ...), or 0. */
static char thread_state(pid_t tid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *paren = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
    return paren && paren[1] == ' ' ? paren[2] : 0;
}

/* Waits up to timeout_s until every spinner is in `state`; returns whether they all were. */
static int all_reach(const pid_t *tids, int n, char state, double timeout_s) {
    for (double waited = 0; waited <= timeout_s; waited += 0.005) {
        int all = 1;
        for (int i = 0; i < n; i++)
            all &= thread_state(tids[i]) == state;
        if (all) return 1;
        usleep(5000);
    }
    return 0;
}

static double process_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *busy_idle_pairs(void *arg) {
    EgCoreWarmer *w = arg;
    for (int i = 0; i < 2000; i++) {
        eg_core_warmer_busy(w);
        eg_core_warmer_idle(w);
    }
    return NULL;
}

int main(void) {
    /* No threads, no warmer; NULL is accepted everywhere. */
    CHECK(eg_core_warmer_start(0, 1000) == NULL, "a warmer with no threads");
    eg_core_warmer_busy(NULL);
    eg_core_warmer_idle(NULL);
    eg_core_warmer_stop(NULL);

    EgCoreWarmer *w = eg_core_warmer_start(2, 300000); /* 300 ms linger */
    REQUIRE(w != NULL, "start");
    pid_t tids[MAX_SPINNERS];
    int n = 0;
    for (int tries = 0; tries < 200 && n < 2; tries++, usleep(5000))
        n = find_spinners(tids);
    REQUIRE(n == 2, "2 spinners at SCHED_IDLE, found %d", n);
    CHECK(all_reach(tids, n, 'S', 2.0), "spinners sleep before any submission");

    eg_core_warmer_busy(w);
    CHECK(all_reach(tids, n, 'R', 2.0), "spinners spin while a submission is in flight");
    usleep(50000);
    eg_core_warmer_idle(w);
    usleep(50000);
    CHECK(thread_state(tids[0]) == 'R' && thread_state(tids[1]) == 'R',
          "spinners still spin 50 ms into a 300 ms linger");
    CHECK(all_reach(tids, n, 'S', 3.0), "spinners sleep once the linger is over");
    double cpu0 = process_cpu_s();
    usleep(300000);
    double used = process_cpu_s() - cpu0;
    CHECK(used < 0.03, "an idle warmer used %.3f s of CPU in 0.3 s", used);

    /* Busy/idle pairs from four threads at once: none is lost (the spinners sleep after). */
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, busy_idle_pairs, w);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK(all_reach(tids, n, 'S', 3.0), "spinners sleep after 8000 concurrent busy/idle pairs");

    /* Stopping while spinning joins every thread. */
    eg_core_warmer_busy(w);
    CHECK(all_reach(tids, n, 'R', 2.0), "spinning again");
    eg_core_warmer_stop(w);
    CHECK(find_spinners(tids) == 0, "no spinner is left after stop");
    return test_finish();
}
