/* The Vulkan instance, the chosen physical device, its logical device and compute queue.
 *
 * Device choice: discrete GPU, then integrated, then virtual, then CPU (lavapipe); the
 * EGRET_DEVICE environment variable (or EgVkOptions.device) picks one by index in
 * vkEnumeratePhysicalDevices order or by a case-insensitive substring of its name.
 * The Khronos validation layer is enabled when EGRET_VALIDATION=1 (tests set it) or
 * options.validation is set, and only if it is installed; every message it prints is counted
 * so tests can fail on any. */
#ifndef EGRET_VK_CONTEXT_H
#define EGRET_VK_CONTEXT_H

#include <stdatomic.h>
#include <vulkan/vulkan.h>

#include "runtime/coopmat.h"
#include "runtime/core_warmer.h"
#include "runtime/error.h"
#include "runtime/int_dot.h"

typedef struct EgVkOptions {
    const char *device; /* index or name substring; NULL: EGRET_DEVICE or automatic */
    int validation;     /* 1: request the validation layer (also EGRET_VALIDATION=1) */
    int verbose;        /* 1: print the chosen device to stderr */
    /* folder of the on-disk pipeline cache (runtime/vk_pipeline_cache.h); NULL: none */
    const char *pipeline_cache_dir;
} EgVkOptions;

typedef struct EgVk {
    VkInstance instance;
    VkPhysicalDevice phys;
    VkDevice device;
    VkQueue queue;
    uint32_t queue_family;
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties mem_props;
    VkDeviceSize max_storage_range; /* maxStorageBufferRange: largest binding a shader may see */
    VkDeviceSize storage_align;     /* minStorageBufferOffsetAlignment */
    uint32_t subgroup_size;
    int subgroup_arithmetic; /* subgroupAdd & co. in compute shaders (the matvec reductions) */
    int subgroup_ballot;     /* subgroupBroadcast in compute shaders (attention.comp) */
    int subgroup_shuffle;    /* subgroupShuffleXor in compute shaders (attention_flash.comp) */
    int validation;  /* the validation layer is active */
    int has_float16; /* shaderFloat16: required by the fp16 (fast) shader variants */
    int has_device_address; /* bufferDeviceAddress: EgBuffer.addr is set (batched attention) */
    int has_int64;          /* shaderInt64: 64-bit loads in matvec64.comp (runtime/ops.c) */
    /* Cooperative matrices (runtime/coopmat.h), enabled at device creation where offered;
     * EGRET_COOPMAT=0 leaves them off (and their extension disabled) */
    EgCoopmat coopmat;
    /* Integer dot products (runtime/int_dot.h), enabled at device creation where offered */
    EgIntDot int_dot;
    /* Every buffer also has an rgba32ui storage texel view (EgBuffer.texels), which the
     * *_texel shader variants read through: CPU devices only, where an imageLoad is a
     * vectorized gather while a storage-buffer load is a loop over the lanes (runtime/ops.c). */
    int texel_views;
    /* Device memory held by every arena (written by the thread that allocates, read by stats),
     * and a debug ceiling on it (EGRET_DEVICE_MEMORY_LIMIT bytes; 0 = none) that makes running
     * out of device memory reproducible in tests. */
    _Atomic unsigned long long device_bytes;
    _Atomic unsigned long long device_bytes_peak; /* the most device_bytes has been */
    unsigned long long device_bytes_limit;
    /* EGRET_DEVICE_PLAN=1: a dry run that sizes a model without holding it. Device-local
     * memory is counted in device_bytes (and its peak) exactly as it would be allocated, from
     * the same buffers and the driver's own size and alignment requirements, but nothing is
     * allocated, no command is recorded or run, and downloads read zeros (egret bench --plan).
     * Host-visible (staging) memory is real. */
    int plan_only;
    /* Pipelines dispatched for the first time since the device was created. CPU drivers
     * (lavapipe) compile a shader at its first dispatch, not at vkCreateComputePipelines, so a
     * count that still grows while serving means a request paid a compile (tools/serve_warmup.c). */
    _Atomic unsigned long long pipelines_first_used;
    /* The driver's pipeline cache every pipeline is built through (VK_NULL_HANDLE: none), the
     * file it is kept in, and the SHA-256 of the data last read or written there. */
    VkPipelineCache pipeline_cache;
    char *pipeline_cache_path;
    unsigned char pipeline_cache_loaded_sum[32];
    int pipeline_cache_loaded_sum_ok;
    VkDebugUtilsMessengerEXT messenger;
    PFN_vkCmdPushDescriptorSetKHR cmd_push_descriptor_set;
    VkCommandPool pool;
    VkFence fence;
    EgCoreWarmer *warmer; /* CPU devices: keeps the cores awake during latency-bound
                             submissions (EgCmd.latency_bound), or NULL */
} EgVk;

int eg_vk_create(EgVk *vk, const EgVkOptions *opt, EgError *err);
void eg_vk_destroy(EgVk *vk);

/* Messages printed by the validation layer since the process started (errors and warnings). */
int eg_vk_validation_message_count(void);

/* Name of a VkResult for error messages. */
const char *eg_vk_result_name(VkResult r);

/* Lists the physical devices to stdout (index, type, name), for `egret devices`. */
int eg_vk_list_devices(EgError *err);

#endif
