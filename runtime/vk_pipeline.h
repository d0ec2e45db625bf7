/* Compute pipelines built once at model load from the embedded SPIR-V (runtime/shader_table.h).
 * Every pipeline binds its storage buffers with push descriptors (set 0, bindings 0..n-1) and
 * takes its sizes as push constants, so recording a dispatch needs no descriptor pools. A
 * binding is either the buffer itself (a storage buffer) or its rgba32ui view (a storage texel
 * buffer, EgBuffer.texels: the *_texel shader variants on CPU devices). */
#ifndef EGRET_VK_PIPELINE_H
#define EGRET_VK_PIPELINE_H

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
} EgPipeline;

/* Builds the pipeline for shader `name` in its fp32 (f16 = 0) or fp16-storage variant. */
int eg_pipeline_create(EgVk *vk, const char *name, int f16, int n_bindings, uint32_t write_mask,
                       uint32_t push_size, EgPipeline *out, EgError *err);
/* The same with specialization constants: spec[i] is the value of constant_id i (32-bit ints,
 * uints or bools), for i < n_spec. Tile and workgroup sizes are chosen this way at load time
 * from the device's limits, so one SPIR-V module serves small and large devices. */
int eg_pipeline_create_spec(EgVk *vk, const char *name, int f16, int n_bindings,
                            uint32_t write_mask, uint32_t push_size, const uint32_t *spec,
                            uint32_t n_spec, EgPipeline *out, EgError *err);
/* The same with the bindings in texel_mask bound as the buffers' texel views (needs
 * vk->texel_views). */
int eg_pipeline_create_texel(EgVk *vk, const char *name, int f16, int n_bindings,
                             uint32_t write_mask, uint32_t texel_mask, uint32_t push_size,
                             const uint32_t *spec, uint32_t n_spec, EgPipeline *out, EgError *err);
void eg_pipeline_destroy(EgVk *vk, EgPipeline *p);

#endif
