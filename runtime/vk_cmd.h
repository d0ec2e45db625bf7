/* Recording a whole forward step into one command buffer. Each dispatch names the buffers it
 * binds; the recorder tracks which buffers were written or read since the last barrier and
 * inserts a pipeline barrier only when the next dispatch (or copy) depends on one of them
 * (read-after-write, write-after-write or write-after-read), so independent dispatches run
 * back to back. */
#ifndef EGRET_VK_CMD_H
#define EGRET_VK_CMD_H

#include "runtime/vk_memory.h"
#include "runtime/vk_pipeline.h"
#include "runtime/vk_profile.h"

#define EG_CMD_MAX_TRACKED 64

typedef struct EgCmd {
    EgVk *vk;
    VkCommandBuffer cb;
    VkBuffer written[EG_CMD_MAX_TRACKED];
    VkBuffer read[EG_CMD_MAX_TRACKED];
    int n_written, n_read;
    int n_dispatches, n_barriers;
    EgCmdProfile profile; /* EGRET_PROFILE=1: a timestamp after each command */
    /* Set by the caller for a submission of many small dispatches (a decode step), whose time
     * goes to the driver's thread hand-offs more than to work: on a CPU device the core warmer
     * spins through it (runtime/core_warmer.h). Not for large work: there the spinner made
     * the image stage at batch 1 take 1.6x longer in some runs. */
    int latency_bound;
    /* What the next dispatch moves and computes (eg_cmd_work), and the totals of every dispatch
     * recorded so far: the profile divides them by the device time (GB/s, GFLOP/s) */
    uint64_t next_bytes, next_flops;
    uint64_t work_bytes, work_flops;
} EgCmd;

int eg_cmd_begin(EgVk *vk, EgCmd *cmd, EgError *err);
/* Declares the bytes the next dispatch reads and writes in device memory (each tensor counted
 * once: the traffic an ideal kernel would have, so a kernel that re-reads shows as low GB/s) and
 * its floating-point operations (a multiply-add is 2). Ops call it just before eg_cmd_dispatch;
 * copies and fills count their own bytes. */
static inline void eg_cmd_work(EgCmd *cmd, uint64_t bytes, uint64_t flops) {
    cmd->next_bytes = bytes;
    cmd->next_flops = flops;
}
/* bufs[i] is bound at binding i (whole buffer). push must be pipeline->push_size bytes. */
void eg_cmd_dispatch(EgCmd *cmd, const EgPipeline *p, const EgBuffer *const *bufs, const void *push,
                     uint32_t gx, uint32_t gy, uint32_t gz);
/* The same for a shader that also reaches buffers through their device addresses: those it
 * reads and writes that way are named here, so that barriers account for them too (at most
 * EG_CMD_MAX_TRACKED − EG_MAX_BINDINGS of each: 44, for 16 sequences' keys and values). */
void eg_cmd_dispatch_addressed(EgCmd *cmd, const EgPipeline *p, const EgBuffer *const *bufs,
                               const void *push, uint32_t gx, uint32_t gy, uint32_t gz,
                               const EgBuffer *const *addr_reads, int n_addr_reads,
                               const EgBuffer *const *addr_writes, int n_addr_writes);
void eg_cmd_copy(EgCmd *cmd, const EgBuffer *src, VkDeviceSize src_offset, const EgBuffer *dst,
                 VkDeviceSize dst_offset, VkDeviceSize size);
/* Copies `rows` rows of row_bytes each, from src_offset + r·src_stride to dst_offset +
 * r·dst_stride (bytes): copy commands of up to 64 regions each (e.g. the key columns of fused
 * q, k, v rows into a KV cache). */
void eg_cmd_copy_rows(EgCmd *cmd, const EgBuffer *src, VkDeviceSize src_offset,
                      VkDeviceSize src_stride, const EgBuffer *dst, VkDeviceSize dst_offset,
                      VkDeviceSize dst_stride, VkDeviceSize row_bytes, uint32_t rows);
/* Fills a whole buffer with a 32-bit pattern (zeroing, or poisoning in tests). */
void eg_cmd_fill(EgCmd *cmd, const EgBuffer *dst, uint32_t pattern);
/* Ends, submits, waits and frees the command buffer. */
int eg_cmd_submit_wait(EgCmd *cmd, EgError *err);
/* Frees a command buffer that will not be submitted. */
void eg_cmd_abandon(EgCmd *cmd);

/* Workgroup count for n items at `per_group` items per workgroup. */
static inline uint32_t eg_groups(uint32_t n, uint32_t per_group) {
    return (n + per_group - 1) / per_group;
}

#endif
