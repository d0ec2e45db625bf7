/* The streaming-read bandwidth of the device (shaders/stream_read.comp): the yardstick of a
 * batch-1 decode step, which must read every weight once per token (issue 21: decode at >= 60%
 * of it). A benchmark, never a test.
 *
 *   bandwidth [--mib N] [--reps N] [--json]
 *
 * Reads a buffer of N MiB (default 1024, capped at the device's largest binding) with 4096
 * workgroups of 256 invocations (64 on CPU devices), each pass one dispatch, `reps` passes per
 * command buffer (default 10; 1 on CPU devices); reports the best of 5 command buffers as GB/s
 * (10^9 bytes per second), wall time around submit and wait. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/clock.h"
#include "runtime/vk_cmd.h"
#include "runtime/vk_memory.h"
#include "runtime/vk_pipeline.h"

static void die(const char *what, const EgError *err) {
    fprintf(stderr, "bandwidth: %s: %s\n", what, err->msg);
    exit(1);
}

int main(int argc, char **argv) {
    uint64_t mib = 1024;
    int reps = 0, json = 0; /* 0: 10 passes, 1 on CPU devices (lavapipe reads 0.1 GB/s) */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc)
            mib = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else {
            fprintf(stderr, "usage: bandwidth [--mib N] [--reps N] [--json]\n");
            return 2;
        }
    }
    if (!mib || reps < 0) {
        fprintf(stderr, "bandwidth: --mib and --reps must be positive\n");
        return 2;
    }
    EgVk vk;
    EgError err = {0};
    if (eg_vk_create(&vk, NULL, &err)) die("eg_vk_create", &err);
    uint64_t bytes = mib << 20;
    if (bytes > vk.max_storage_range) bytes = vk.max_storage_range & ~(uint64_t)15;
    if (bytes / 16 > UINT32_MAX) bytes = (uint64_t)UINT32_MAX * 16;
    int cpu = vk.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    uint32_t wg = cpu ? 64 : 256, groups = 4096;
    if (!reps) reps = cpu ? 1 : 10;
    EgArena arena;
    eg_arena_init(&arena, &vk, EG_MEM_DEVICE, 1u << 20);
    EgBuffer src, dst;
    if (eg_buffer_create(&arena, bytes, &src, &err) ||
        eg_buffer_create(&arena, (VkDeviceSize)wg * groups * 4, &dst, &err))
        die("buffers", &err);
    EgPipelineBatch batch;
    EgPipeline pipe;
    eg_pipeline_batch_init(&batch, 0);
    eg_pipeline_batch_add(&batch, &pipe, "stream_read", 2, 1u << 1, 0, 4, &wg, 1);
    if (eg_pipeline_batch_build(&vk, &batch, &err)) die("pipeline", &err);
    uint32_t n_vec4 = (uint32_t)(bytes / 16);
    const EgBuffer *bufs[2] = {&src, &dst};
    double best = 1e30;
    for (int sample = 0; sample < 6; sample++) { /* the first warms up (and compiles) */
        EgCmd cmd;
        if (eg_cmd_begin(&vk, &cmd, &err)) die("eg_cmd_begin", &err);
        if (sample == 0) eg_cmd_fill(&cmd, &src, 0x3c003c00u);
        for (int r = 0; r < reps; r++) {
            eg_cmd_work(&cmd, bytes, 0);
            eg_cmd_dispatch(&cmd, &pipe, bufs, &n_vec4, groups, 1, 1);
        }
        double t0 = eg_now_s();
        if (eg_cmd_submit_wait(&cmd, &err)) die("submit", &err);
        double t = eg_now_s() - t0;
        if (sample > 0 && t < best) best = t;
    }
    double gbs = (double)bytes * reps / best * 1e-9;
    if (json)
        printf("{\"tool\": \"bandwidth\", \"device\": \"%s\", \"bytes\": %llu, \"reps\": %d, "
               "\"best_s\": %.6g, \"read_GB_per_s\": %.1f}\n",
               vk.props.deviceName, (unsigned long long)bytes, reps, best, gbs);
    else
        printf("%s: read %.0f MiB x %d in %.3f ms: %.1f GB/s\n", vk.props.deviceName,
               (double)bytes / (1 << 20), reps, best * 1e3, gbs);
    eg_pipeline_destroy(&vk, &pipe);
    eg_arena_reset(&arena);
    eg_vk_destroy(&vk);
    return 0;
}
