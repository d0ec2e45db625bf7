#include "runtime/vk_profile.h"
#include "runtime/env.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS 128

typedef struct {
    const char *label;
    double total_ns;
    unsigned long count;
    double bytes, flops;
} LabelTotal;

static pthread_mutex_t totals_lock = PTHREAD_MUTEX_INITIALIZER;
static LabelTotal totals[MAX_LABELS];
static int n_totals;
static unsigned long n_submissions;

int eg_profile_enabled(void) {
    static int enabled = -1;
    if (enabled < 0) {
        enabled = eg_env_flag("EGRET_PROFILE");
    }
    return enabled;
}

void eg_profile_begin(EgVk *vk, VkCommandBuffer cb, EgCmdProfile *p) {
    p->pool = VK_NULL_HANDLE;
    p->n_stamps = 0;
    if (!eg_profile_enabled() || vk->props.limits.timestampPeriod <= 0) return;
    VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                .queryCount = EG_PROFILE_MAX_STAMPS};
    if (vkCreateQueryPool(vk->device, &qi, NULL, &p->pool) != VK_SUCCESS) {
        p->pool = VK_NULL_HANDLE;
        return;
    }
    vkCmdResetQueryPool(cb, p->pool, 0, EG_PROFILE_MAX_STAMPS);
    vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, p->pool, 0);
    p->n_stamps = 1;
}

void eg_profile_stamp(VkCommandBuffer cb, EgCmdProfile *p, const char *label, uint64_t bytes,
                      uint64_t flops) {
    if (!p->pool || p->n_stamps >= EG_PROFILE_MAX_STAMPS) return;
    p->label[p->n_stamps - 1] = label ? label : "?";
    p->bytes[p->n_stamps - 1] = bytes;
    p->flops[p->n_stamps - 1] = flops;
    vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, p->pool, (uint32_t)p->n_stamps);
    p->n_stamps++;
}

static void add_total(const char *label, double ns, uint64_t bytes, uint64_t flops) {
    for (int i = 0; i < n_totals; i++)
        if (strcmp(totals[i].label, label) == 0) {
            totals[i].total_ns += ns;
            totals[i].count++;
            totals[i].bytes += (double)bytes;
            totals[i].flops += (double)flops;
            return;
        }
    if (n_totals < MAX_LABELS)
        totals[n_totals++] = (LabelTotal){label, ns, 1, (double)bytes, (double)flops};
}

void eg_profile_collect(EgVk *vk, EgCmdProfile *p) {
    if (!p->pool) return;
    uint64_t stamps[EG_PROFILE_MAX_STAMPS];
    int n = p->n_stamps;
    if (n > 1 && vkGetQueryPoolResults(
                     vk->device, p->pool, 0, (uint32_t)n, sizeof stamps, stamps, sizeof stamps[0],
                     VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) == VK_SUCCESS) {
        double period = vk->props.limits.timestampPeriod;
        pthread_mutex_lock(&totals_lock);
        for (int i = 1; i < n; i++)
            add_total(p->label[i - 1], (double)(stamps[i] - stamps[i - 1]) * period,
                      p->bytes[i - 1], p->flops[i - 1]);
        n_submissions++;
        pthread_mutex_unlock(&totals_lock);
    }
    eg_profile_discard(vk, p);
}

void eg_profile_discard(EgVk *vk, EgCmdProfile *p) {
    if (p->pool) vkDestroyQueryPool(vk->device, p->pool, NULL);
    p->pool = VK_NULL_HANDLE;
    p->n_stamps = 0;
}

/* A rate with three significant digits at most, never rounded to zero (a first dispatch on
 * lavapipe includes the shader's compilation), or "-" where the work declared nothing. */
static void format_rate(char *out, size_t size, double amount, double ns) {
    double r = amount / ns;
    if (!(amount > 0 && ns > 0))
        snprintf(out, size, "-");
    else if (r >= 100)
        snprintf(out, size, "%.0f", r);
    else
        snprintf(out, size, "%.3g", r);
}

static int by_total_desc(const void *a, const void *b) {
    double x = ((const LabelTotal *)a)->total_ns, y = ((const LabelTotal *)b)->total_ns;
    return (x < y) - (x > y);
}

void eg_profile_report(FILE *out) {
    pthread_mutex_lock(&totals_lock);
    if (n_totals) {
        double all = 0;
        unsigned long count = 0;
        for (int i = 0; i < n_totals; i++) {
            all += totals[i].total_ns;
            count += totals[i].count;
        }
        qsort(totals, (size_t)n_totals, sizeof totals[0], by_total_desc);
        fprintf(out, "egret profile: %lu submissions, %lu commands, %.1f ms on the device\n",
                n_submissions, count, all * 1e-6);
        /* bytes per ns is GB/s, operations per ns GFLOP/s; "-" where the work declared none */
        fprintf(out, "  %-24s %9s %11s %10s %6s %9s %9s\n", "work", "count", "total ms",
                "mean us", "share", "GB/s", "GFLOP/s");
        for (int i = 0; i < n_totals; i++) {
            const LabelTotal *t = &totals[i];
            char gbs[32], gflops[32];
            format_rate(gbs, sizeof gbs, t->bytes, t->total_ns);
            format_rate(gflops, sizeof gflops, t->flops, t->total_ns);
            fprintf(out, "  %-24s %9lu %11.2f %10.1f %5.1f%% %9s %9s\n", t->label, t->count,
                    t->total_ns * 1e-6, t->total_ns * 1e-3 / (double)t->count,
                    100.0 * t->total_ns / all, gbs, gflops);
        }
    }
    n_totals = 0;
    n_submissions = 0;
    pthread_mutex_unlock(&totals_lock);
}

void eg_profile_reset(void) {
    pthread_mutex_lock(&totals_lock);
    n_totals = 0;
    n_submissions = 0;
    pthread_mutex_unlock(&totals_lock);
}
