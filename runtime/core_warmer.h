/* Keeps a CPU device's cores awake while it works.
 *
 * On a CPU device (lavapipe) every dispatch hands its workgroups to llvmpipe's worker threads,
 * which sleep between dispatches; the queue thread sleeps until they finish. Waking a thread on
 * an idle core means waking the core, and in a virtual machine a halted virtual CPU takes tens of
 * microseconds to wake: on the 2-core development VM a decode step of 42 small dispatches spent
 * more than half its time there (docs/engine.md, "Keeping the cores awake").
 *
 * The warmer runs spinning threads (by default one per two cores) at SCHED_IDLE, the lowest
 * priority: a core running only such a thread counts as idle to the scheduler, so a woken
 * worker is placed there and preempts the spinner at once, but the core itself never halts.
 * The spinners take no time from any other thread. They spin while a latency-bound submission
 * (a decode step: EgCmd.latency_bound) is in flight and for a short linger after it (the host's
 * work between decode steps), then sleep until the next: an idle service burns nothing.
 * OpenMP runtimes do the same between parallel regions (OMP_WAIT_POLICY).
 */
#ifndef EGRET_CORE_WARMER_H
#define EGRET_CORE_WARMER_H

typedef struct EgCoreWarmer EgCoreWarmer;

/* Starts `threads` spinners that linger `linger_us` microseconds after the last submission.
 * Returns NULL (and warms nothing) if threads is 0 or the threads cannot be created. */
EgCoreWarmer *eg_core_warmer_start(unsigned threads, unsigned linger_us);

/* A submission begins (spin) / has ended (linger, then sleep). Calls pair up; any thread may
 * make them, concurrently. Both accept NULL. */
void eg_core_warmer_busy(EgCoreWarmer *w);
void eg_core_warmer_idle(EgCoreWarmer *w);

/* Stops and joins the spinners. Accepts NULL. */
void eg_core_warmer_stop(EgCoreWarmer *w);

/* The default for a CPU device: one spinner per two online cores (at least one) and a 1 ms
 * linger, or what EGRET_CPU_SPIN says: "off", or THREADS[:LINGER_US]. On the 2-core VM one
 * spinner did best: with two, decode gained less and encode at batch 1 was sometimes 1.8x
 * slower. */
EgCoreWarmer *eg_core_warmer_start_default(void);

#endif
