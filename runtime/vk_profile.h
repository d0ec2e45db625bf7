/* Per-dispatch GPU timing (EGRET_PROFILE=1): each recorded dispatch, copy and fill is followed
 * by a timestamp; after the command buffer completes, the time between consecutive stamps is
 * added to its shader's total, with the bytes and floating-point operations the op declared for
 * that dispatch (eg_cmd_work), and eg_profile_report prints the totals and the achieved GB/s and
 * GFLOP/s when the device is destroyed (or on demand): a kernel far below the card's bandwidth
 * and throughput names itself. A tool for finding where a forward step spends its time, not a
 * benchmark: the timestamps themselves serialise work on some drivers. Off unless set. */
#ifndef EGRET_VK_PROFILE_H
#define EGRET_VK_PROFILE_H

#include <stdio.h>

#include "runtime/vk_context.h"

#define EG_PROFILE_MAX_STAMPS 4096

typedef struct EgCmdProfile {
    VkQueryPool pool;
    const char *label[EG_PROFILE_MAX_STAMPS]; /* label[i]: the work that ended at stamp i + 1 */
    uint64_t bytes[EG_PROFILE_MAX_STAMPS], flops[EG_PROFILE_MAX_STAMPS]; /* of that work */
    int n_stamps;
} EgCmdProfile;

/* 1 when EGRET_PROFILE is set to something other than 0 (read once). */
int eg_profile_enabled(void);
/* Creates the query pool and writes the first stamp (no-op when profiling is off). */
void eg_profile_begin(EgVk *vk, VkCommandBuffer cb, EgCmdProfile *p);
/* Stamps the end of the work just recorded, labelled (a pipeline's name, "copy", ...), with the
 * bytes it moved and the operations it did. */
void eg_profile_stamp(VkCommandBuffer cb, EgCmdProfile *p, const char *label, uint64_t bytes,
                      uint64_t flops);
/* After the submission completed: reads the stamps, adds them to the totals, frees the pool. */
void eg_profile_collect(EgVk *vk, EgCmdProfile *p);
/* Frees the pool of a command buffer that was never submitted. */
void eg_profile_discard(EgVk *vk, EgCmdProfile *p);
/* Prints the totals per label, largest first, and clears them. */
void eg_profile_report(FILE *out);
/* Clears the totals (to time one phase of a run). */
void eg_profile_reset(void);

#endif
