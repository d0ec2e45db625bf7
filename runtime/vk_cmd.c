#include "runtime/vk_cmd.h"

#include <stdatomic.h>
#include <string.h>

int eg_cmd_begin(EgVk *vk, EgCmd *cmd, EgError *err) {
    memset(cmd, 0, sizeof *cmd);
    cmd->vk = vk;
    if (vk->plan_only) return 0; /* nothing is recorded: cb stays VK_NULL_HANDLE */
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = vk->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    if (vkAllocateCommandBuffers(vk->device, &ai, &cmd->cb) != VK_SUCCESS)
        return eg_fail(err, "vkAllocateCommandBuffers failed");
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    vkBeginCommandBuffer(cmd->cb, &bi);
    eg_profile_begin(vk, cmd->cb, &cmd->profile);
    return 0;
}

static int in_set(const VkBuffer *set, int n, VkBuffer b) {
    for (int i = 0; i < n; i++)
        if (set[i] == b) return 1;
    return 0;
}

static void barrier(EgCmd *cmd) {
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                         VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT};
    VkPipelineStageFlags stages =
        VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    vkCmdPipelineBarrier(cmd->cb, stages, stages, 0, 1, &mb, 0, NULL, 0, NULL);
    cmd->n_written = cmd->n_read = 0;
    cmd->n_barriers++;
}

/* Emits a barrier if touching these buffers conflicts with work since the last barrier, then
 * records the accesses. */
static void track(EgCmd *cmd, const VkBuffer *reads, int nr, const VkBuffer *writes, int nw) {
    int conflict = 0;
    for (int i = 0; i < nr && !conflict; i++)
        conflict = in_set(cmd->written, cmd->n_written, reads[i]);
    for (int i = 0; i < nw && !conflict; i++)
        conflict = in_set(cmd->written, cmd->n_written, writes[i]) ||
                   in_set(cmd->read, cmd->n_read, writes[i]);
    if (conflict || cmd->n_read + nr > EG_CMD_MAX_TRACKED ||
        cmd->n_written + nw > EG_CMD_MAX_TRACKED)
        barrier(cmd);
    for (int i = 0; i < nr; i++)
        if (!in_set(cmd->read, cmd->n_read, reads[i])) cmd->read[cmd->n_read++] = reads[i];
    for (int i = 0; i < nw; i++)
        if (!in_set(cmd->written, cmd->n_written, writes[i]))
            cmd->written[cmd->n_written++] = writes[i];
}

void eg_cmd_dispatch(EgCmd *cmd, const EgPipeline *p, const EgBuffer *const *bufs, const void *push,
                     uint32_t gx, uint32_t gy, uint32_t gz) {
    eg_cmd_dispatch_addressed(cmd, p, bufs, push, gx, gy, gz, NULL, 0, NULL, 0);
}

void eg_cmd_dispatch_addressed(EgCmd *cmd, const EgPipeline *p, const EgBuffer *const *bufs,
                               const void *push, uint32_t gx, uint32_t gy, uint32_t gz,
                               const EgBuffer *const *addr_reads, int n_addr_reads,
                               const EgBuffer *const *addr_writes, int n_addr_writes) {
    if (!cmd->cb) return; /* the device's plan_only dry run */
    /* the tracked sets hold EG_CMD_MAX_TRACKED: bindings plus at most the rest by address */
    enum { MAX_ADDRESSED = EG_CMD_MAX_TRACKED - EG_MAX_BINDINGS };
    VkBuffer reads[EG_CMD_MAX_TRACKED], writes[EG_CMD_MAX_TRACKED];
    int nr = 0, nw = 0;
    for (int i = 0; i < n_addr_reads && nr < MAX_ADDRESSED; i++)
        reads[nr++] = addr_reads[i]->buf;
    for (int i = 0; i < n_addr_writes && nw < MAX_ADDRESSED; i++)
        writes[nw++] = addr_writes[i]->buf;
    VkDescriptorBufferInfo info[EG_MAX_BINDINGS];
    VkWriteDescriptorSet w[EG_MAX_BINDINGS];
    for (int i = 0; i < p->n_bindings; i++) {
        info[i] =
            (VkDescriptorBufferInfo){.buffer = bufs[i]->buf, .offset = 0, .range = VK_WHOLE_SIZE};
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                      .dstBinding = (uint32_t)i,
                                      .descriptorCount = 1,
                                      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &info[i]};
        if (p->texel_mask & (1u << i)) {
            w[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER;
            w[i].pBufferInfo = NULL;
            w[i].pTexelBufferView = &bufs[i]->texels;
        }
        if (p->write_mask & (1u << i))
            writes[nw++] = bufs[i]->buf;
        else
            reads[nr++] = bufs[i]->buf;
    }
    track(cmd, reads, nr, writes, nw);
    vkCmdBindPipeline(cmd->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipeline);
    cmd->vk->cmd_push_descriptor_set(cmd->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0,
                                     (uint32_t)p->n_bindings, w);
    if (p->push_size)
        vkCmdPushConstants(cmd->cb, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, p->push_size, push);
    if (gx && gy && gz) {
        vkCmdDispatch(cmd->cb, gx, gy, gz);
        /* the flag is the pipeline's own bookkeeping, not part of what callers pass as const */
        atomic_int *dispatched = (atomic_int *)&p->dispatched;
        if (!atomic_load_explicit(dispatched, memory_order_relaxed) &&
            !atomic_exchange(dispatched, 1))
            atomic_fetch_add(&cmd->vk->pipelines_first_used, 1);
    }
    eg_profile_stamp(cmd->cb, &cmd->profile, p->name, cmd->next_bytes, cmd->next_flops);
    cmd->work_bytes += cmd->next_bytes;
    cmd->work_flops += cmd->next_flops;
    cmd->next_bytes = cmd->next_flops = 0;
    cmd->n_dispatches++;
}

void eg_cmd_copy(EgCmd *cmd, const EgBuffer *src, VkDeviceSize src_offset, const EgBuffer *dst,
                 VkDeviceSize dst_offset, VkDeviceSize size) {
    if (!cmd->cb) return;
    track(cmd, &src->buf, 1, &dst->buf, 1);
    VkBufferCopy region = {.srcOffset = src_offset, .dstOffset = dst_offset, .size = size};
    vkCmdCopyBuffer(cmd->cb, src->buf, dst->buf, 1, &region);
    eg_profile_stamp(cmd->cb, &cmd->profile, "copy", 2 * size, 0);
    cmd->work_bytes += 2 * size;
}

void eg_cmd_copy_rows(EgCmd *cmd, const EgBuffer *src, VkDeviceSize src_offset,
                      VkDeviceSize src_stride, const EgBuffer *dst, VkDeviceSize dst_offset,
                      VkDeviceSize dst_stride, VkDeviceSize row_bytes, uint32_t rows) {
    if (!cmd->cb) return;
    VkBufferCopy regions[64];
    for (uint32_t r0 = 0; r0 < rows; r0 += 64) {
        uint32_t n = rows - r0 < 64 ? rows - r0 : 64;
        for (uint32_t r = 0; r < n; r++)
            regions[r] = (VkBufferCopy){.srcOffset = src_offset + (r0 + r) * src_stride,
                                        .dstOffset = dst_offset + (r0 + r) * dst_stride,
                                        .size = row_bytes};
        track(cmd, &src->buf, 1, &dst->buf, 1);
        vkCmdCopyBuffer(cmd->cb, src->buf, dst->buf, n, regions);
        eg_profile_stamp(cmd->cb, &cmd->profile, "copy", 2 * n * row_bytes, 0);
        cmd->work_bytes += 2 * n * row_bytes;
    }
}

void eg_cmd_fill(EgCmd *cmd, const EgBuffer *dst, uint32_t pattern) {
    if (!cmd->cb) return;
    track(cmd, NULL, 0, &dst->buf, 1);
    vkCmdFillBuffer(cmd->cb, dst->buf, 0, VK_WHOLE_SIZE, pattern);
    eg_profile_stamp(cmd->cb, &cmd->profile, "fill", dst->size, 0);
    cmd->work_bytes += dst->size;
}

int eg_cmd_submit_wait(EgCmd *cmd, EgError *err) {
    EgVk *vk = cmd->vk;
    if (!cmd->cb) return 0;
    vkEndCommandBuffer(cmd->cb);
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                       .commandBufferCount = 1,
                       .pCommandBuffers = &cmd->cb};
    EgCoreWarmer *warmer = cmd->latency_bound ? vk->warmer : NULL;
    eg_core_warmer_busy(warmer);
    VkResult r = vkQueueSubmit(vk->queue, 1, &si, vk->fence);
    if (r == VK_SUCCESS) r = vkWaitForFences(vk->device, 1, &vk->fence, VK_TRUE, UINT64_MAX);
    eg_core_warmer_idle(warmer);
    vkResetFences(vk->device, 1, &vk->fence);
    if (r == VK_SUCCESS)
        eg_profile_collect(vk, &cmd->profile);
    else
        eg_profile_discard(vk, &cmd->profile);
    vkFreeCommandBuffers(vk->device, vk->pool, 1, &cmd->cb);
    cmd->cb = VK_NULL_HANDLE;
    if (r != VK_SUCCESS) return eg_fail(err, "GPU submission failed (%s)", eg_vk_result_name(r));
    return 0;
}

void eg_cmd_abandon(EgCmd *cmd) {
    if (cmd->cb) {
        vkEndCommandBuffer(cmd->cb);
        vkFreeCommandBuffers(cmd->vk->device, cmd->vk->pool, 1, &cmd->cb);
        cmd->cb = VK_NULL_HANDLE;
    }
    eg_profile_discard(cmd->vk, &cmd->profile);
}
