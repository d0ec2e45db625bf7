#include "runtime/vk_pipeline.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/parallel.h"
#include "runtime/shader_table.h"

static const EgShaderBlob *find_blob(const char *name, int f16) {
    for (int i = 0; i < eg_shader_table_count; i++)
        if (eg_shader_table[i].f16 == f16 && strcmp(eg_shader_table[i].name, name) == 0)
            return &eg_shader_table[i];
    return NULL;
}

int eg_shader_available(const char *name, int f16) {
    return find_blob(name, f16) != NULL;
}

/* Builds one request's pipeline (err: why not). */
static int build_one(EgVk *vk, int f16, const EgPipelineRequest *r, EgError *err) {
    EgPipeline *out = r->out;
    const char *name = r->name;
    int n_bindings = r->n_bindings;
    uint32_t texel_mask = r->texel_mask, push_size = r->push_size, n_spec = r->n_spec;
    memset(out, 0, sizeof *out);
    out->name = name;
    out->n_bindings = n_bindings;
    out->write_mask = r->write_mask;
    out->texel_mask = texel_mask;
    out->push_size = push_size;
    const EgShaderBlob *blob = find_blob(name, f16);
    if (!blob) return eg_fail(err, "shader '%s' is not compiled into this binary", name);
    if (n_bindings > EG_MAX_BINDINGS) return eg_fail(err, "shader '%s': too many bindings", name);
    if (texel_mask && !vk->texel_views)
        return eg_fail(err, "shader '%s' reads texel views, which %s's buffers do not have", name,
                       vk->props.deviceName);

    VkDescriptorSetLayoutBinding b[EG_MAX_BINDINGS];
    for (int i = 0; i < n_bindings; i++)
        b[i] = (VkDescriptorSetLayoutBinding){
            .binding = (uint32_t)i,
            .descriptorType = (texel_mask >> i) & 1 ? VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER
                                                    : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo dl = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR,
        .bindingCount = (uint32_t)n_bindings,
        .pBindings = b};
    if (vkCreateDescriptorSetLayout(vk->device, &dl, NULL, &out->set_layout) != VK_SUCCESS)
        return eg_fail(err, "shader '%s': vkCreateDescriptorSetLayout failed", name);
    VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = push_size};
    VkPipelineLayoutCreateInfo pl = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                     .setLayoutCount = 1,
                                     .pSetLayouts = &out->set_layout,
                                     .pushConstantRangeCount = push_size ? 1 : 0,
                                     .pPushConstantRanges = &pr};
    if (vkCreatePipelineLayout(vk->device, &pl, NULL, &out->layout) != VK_SUCCESS) {
        eg_pipeline_destroy(vk, out);
        return eg_fail(err, "shader '%s': vkCreatePipelineLayout failed", name);
    }
    VkShaderModuleCreateInfo mi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                   .codeSize = blob->size,
                                   .pCode = blob->code};
    VkShaderModule module;
    if (vkCreateShaderModule(vk->device, &mi, NULL, &module) != VK_SUCCESS) {
        eg_pipeline_destroy(vk, out);
        return eg_fail(err, "shader '%s': vkCreateShaderModule failed", name);
    }
    VkSpecializationMapEntry entries[EG_MAX_SPEC];
    for (uint32_t i = 0; i < n_spec; i++)
        entries[i] = (VkSpecializationMapEntry){
            .constantID = i, .offset = i * (uint32_t)sizeof(uint32_t), .size = sizeof(uint32_t)};
    VkSpecializationInfo si = {.mapEntryCount = n_spec,
                               .pMapEntries = entries,
                               .dataSize = n_spec * sizeof(uint32_t),
                               .pData = r->spec};
    VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = module,
                  .pName = "main",
                  .pSpecializationInfo = n_spec ? &si : NULL},
        .layout = out->layout};
    VkResult vr =
        vkCreateComputePipelines(vk->device, vk->pipeline_cache, 1, &ci, NULL, &out->pipeline);
    vkDestroyShaderModule(vk->device, module, NULL);
    if (vr != VK_SUCCESS) {
        eg_pipeline_destroy(vk, out);
        return eg_fail(err, "shader '%s': vkCreateComputePipelines failed (%s)", name,
                       eg_vk_result_name(vr));
    }
    return 0;
}

void eg_pipeline_destroy(EgVk *vk, EgPipeline *p) {
    if (p->pipeline) vkDestroyPipeline(vk->device, p->pipeline, NULL);
    if (p->layout) vkDestroyPipelineLayout(vk->device, p->layout, NULL);
    if (p->set_layout) vkDestroyDescriptorSetLayout(vk->device, p->set_layout, NULL);
    memset(p, 0, sizeof *p);
}

void eg_pipeline_batch_init(EgPipelineBatch *b, int f16) {
    b->f16 = f16;
    b->n = 0;
    b->overflow = 0;
}

void eg_pipeline_batch_add(EgPipelineBatch *b, EgPipeline *out, const char *name, int n_bindings,
                           uint32_t write_mask, uint32_t texel_mask, uint32_t push_size,
                           const uint32_t *spec, uint32_t n_spec) {
    if (b->n == EG_PIPELINE_BATCH_MAX || n_spec > EG_MAX_SPEC) {
        b->overflow = 1;
        return;
    }
    EgPipelineRequest *r = &b->req[b->n++];
    *r = (EgPipelineRequest){.out = out,
                             .name = name,
                             .n_bindings = n_bindings,
                             .write_mask = write_mask,
                             .texel_mask = texel_mask,
                             .push_size = push_size,
                             .n_spec = n_spec};
    if (n_spec) memcpy(r->spec, spec, n_spec * sizeof *spec);
}

typedef struct {
    EgVk *vk;
    EgPipelineBatch *batch;
    atomic_int next; /* the next request to take */
    EgError errs[EG_PIPELINE_BATCH_MAX];
    int failed[EG_PIPELINE_BATCH_MAX];
} BuildJob;

static void *build_worker(void *arg) {
    BuildJob *j = arg;
    for (int i; (i = atomic_fetch_add(&j->next, 1)) < j->batch->n;)
        j->failed[i] = build_one(j->vk, j->batch->f16, &j->batch->req[i], &j->errs[i]) != 0;
    return NULL;
}

int eg_pipeline_batch_build(EgVk *vk, EgPipelineBatch *b, EgError *err) {
    if (b->overflow)
        return eg_fail(err, "pipeline batch: more than %d pipelines or %d constants",
                       EG_PIPELINE_BATCH_MAX, EG_MAX_SPEC);
    BuildJob *j = calloc(1, sizeof *j); /* 33 KiB of error messages: not on the stack */
    if (!j) return eg_fail(err, "pipeline batch: out of memory");
    j->vk = vk;
    j->batch = b;
    /* every thread takes requests from the shared counter until none is left */
    int n_threads = eg_online_cores(16);
    eg_parallel_run(build_worker, j, 0, n_threads < b->n ? n_threads : b->n);
    int first_failed = -1;
    for (int i = 0; i < b->n && first_failed < 0; i++)
        if (j->failed[i]) first_failed = i;
    if (first_failed >= 0) {
        if (err) *err = j->errs[first_failed];
        for (int i = 0; i < b->n; i++)
            eg_pipeline_destroy(vk, b->req[i].out);
    }
    free(j);
    return first_failed >= 0 ? -1 : 0;
}
