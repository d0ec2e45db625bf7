/* Compute pipelines built once at model load from the embedded SPIR-V (runtime/shader_table.h).
 * Every pipeline binds its storage buffers with push descriptors (set 0, bindings 0..n-1) and
 * takes its sizes as push constants, so recording a dispatch needs no descriptor pools. A
 * binding is either the buffer itself (a storage buffer) or its rgba32ui view (a storage texel
 * buffer, EgBuffer.texels: the *_texel shader variants on CPU devices). */
#ifndef EGRET_VK_PIPELINE_H
#define EGRET_VK_PIPELINE_H

#include <stdatomic.h>

#include "runtime/vk_context.h"

/* the most bindings a shader has: attention_slots.comp (19; push descriptors allow 32) */
#define EG_MAX_BINDINGS 20

typedef struct EgPipeline {
    VkPipeline pipeline;
    VkPipelineLayout layout;
    VkDescriptorSetLayout set_layout;
    int n_bindings;
    uint32_t write_mask; /* bit i: binding i is written (for barrier tracking) */
    uint32_t texel_mask; /* bit i: binding i is the buffer's texel view (read-only) */
    uint32_t push_size;
    const char *name;
    /* Set by its first dispatch (eg_cmd_dispatch), which is when lavapipe JIT-compiles the
     * shader: the warm-up's proof that no request pays a compile (EgVk.pipelines_first_used). */
    atomic_int dispatched;
} EgPipeline;

#define EG_MAX_SPEC 16           /* specialization constants per pipeline */
#define EG_PIPELINE_BATCH_MAX 64 /* pipelines per batch (eg_ops_init builds about 35) */

/* One pipeline to build: shader `name` in its fp32 or fp16-storage variant (the batch's f16),
 * with n_bindings bindings, of which write_mask's are written (barrier tracking) and
 * texel_mask's are bound as the buffers' texel views (needs vk->texel_views); spec[i] is the
 * value of constant_id i (32-bit ints, uints or bools), for i < n_spec. Tile and workgroup sizes
 * are chosen this way at load time from the device's limits, so one SPIR-V module serves small
 * and large devices. */
typedef struct EgPipelineRequest {
    EgPipeline *out;
    const char *name;
    int n_bindings;
    uint32_t write_mask, texel_mask, push_size;
    uint32_t spec[EG_MAX_SPEC];
    uint32_t n_spec;
} EgPipelineRequest;

/* Pipelines are built in batches, on one thread per core: compiling is most of a model's load
 * time on CPU devices (lavapipe: 40 ms a pipeline even with Mesa's shader cache warm, all of it
 * on the calling thread), and Vulkan lets threads create pipelines concurrently (lavapipe, 30
 * matmul_direct variants: 1.25 s on one thread, 0.63 on two). */
typedef struct EgPipelineBatch {
    int f16;
    int n;
    int overflow; /* more requests than EG_PIPELINE_BATCH_MAX (a bug: the build fails) */
    EgPipelineRequest req[EG_PIPELINE_BATCH_MAX];
} EgPipelineBatch;

void eg_pipeline_batch_init(EgPipelineBatch *b, int f16);
/* Queues one pipeline (spec is copied; NULL with n_spec 0 for none). */
void eg_pipeline_batch_add(EgPipelineBatch *b, EgPipeline *out, const char *name, int n_bindings,
                           uint32_t write_mask, uint32_t texel_mask, uint32_t push_size,
                           const uint32_t *spec, uint32_t n_spec);
/* Builds every queued pipeline into its `out`. On failure none of them stays built and err
 * names the first request (in queue order) that failed. */
int eg_pipeline_batch_build(EgVk *vk, EgPipelineBatch *b, EgError *err);
void eg_pipeline_destroy(EgVk *vk, EgPipeline *p);

/* Whether the shader `name` was compiled into this binary for that storage precision (the
 * optional cooperative-matrix ones are only with their CMake options). */
int eg_shader_available(const char *name, int f16);

#endif
