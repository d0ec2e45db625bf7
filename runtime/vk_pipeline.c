#include "runtime/vk_pipeline.h"

#include <string.h>

#include "runtime/shader_table.h"

static const EgShaderBlob *find_blob(const char *name, int f16) {
    for (int i = 0; i < eg_shader_table_count; i++)
        if (eg_shader_table[i].f16 == f16 && strcmp(eg_shader_table[i].name, name) == 0)
            return &eg_shader_table[i];
    return NULL;
}

int eg_pipeline_create(EgVk *vk, const char *name, int f16, int n_bindings, uint32_t write_mask,
                       uint32_t push_size, EgPipeline *out, EgError *err) {
    return eg_pipeline_create_spec(vk, name, f16, n_bindings, write_mask, push_size, NULL, 0, out,
                                   err);
}

#define EG_MAX_SPEC 16

int eg_pipeline_create_spec(EgVk *vk, const char *name, int f16, int n_bindings,
                            uint32_t write_mask, uint32_t push_size, const uint32_t *spec,
                            uint32_t n_spec, EgPipeline *out, EgError *err) {
    return eg_pipeline_create_texel(vk, name, f16, n_bindings, write_mask, 0, push_size, spec,
                                    n_spec, out, err);
}

int eg_pipeline_create_texel(EgVk *vk, const char *name, int f16, int n_bindings,
                             uint32_t write_mask, uint32_t texel_mask, uint32_t push_size,
                             const uint32_t *spec, uint32_t n_spec, EgPipeline *out, EgError *err) {
    memset(out, 0, sizeof *out);
    out->name = name;
    out->n_bindings = n_bindings;
    out->write_mask = write_mask;
    out->texel_mask = texel_mask;
    out->push_size = push_size;
    const EgShaderBlob *blob = find_blob(name, f16);
    if (!blob) return eg_fail(err, "shader '%s' is not compiled into this binary", name);
    if (n_bindings > EG_MAX_BINDINGS) return eg_fail(err, "shader '%s': too many bindings", name);
    if (n_spec > EG_MAX_SPEC)
        return eg_fail(err, "shader '%s': too many specialization constants", name);
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
                               .pData = spec};
    VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = module,
                  .pName = "main",
                  .pSpecializationInfo = n_spec ? &si : NULL},
        .layout = out->layout};
    VkResult r = vkCreateComputePipelines(vk->device, VK_NULL_HANDLE, 1, &ci, NULL, &out->pipeline);
    vkDestroyShaderModule(vk->device, module, NULL);
    if (r != VK_SUCCESS) {
        eg_pipeline_destroy(vk, out);
        return eg_fail(err, "shader '%s': vkCreateComputePipelines failed (%s)", name,
                       eg_vk_result_name(r));
    }
    return 0;
}

void eg_pipeline_destroy(EgVk *vk, EgPipeline *p) {
    if (p->pipeline) vkDestroyPipeline(vk->device, p->pipeline, NULL);
    if (p->layout) vkDestroyPipelineLayout(vk->device, p->layout, NULL);
    if (p->set_layout) vkDestroyDescriptorSetLayout(vk->device, p->set_layout, NULL);
    memset(p, 0, sizeof *p);
}
