#include "runtime/vk_context.h"
#include "runtime/env.h"
#include "runtime/vk_pipeline_cache.h"
#include "runtime/vk_profile.h"

#include <ctype.h>
#include <dlfcn.h>
#include <link.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int validation_messages;

int eg_vk_validation_message_count(void) {
    return atomic_load(&validation_messages);
}

const char *eg_vk_result_name(VkResult r) {
    switch (r) {
    case VK_SUCCESS:
        return "VK_SUCCESS";
    case VK_NOT_READY:
        return "VK_NOT_READY";
    case VK_TIMEOUT:
        return "VK_TIMEOUT";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
        return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
        return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
        return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
        return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED:
        return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT:
        return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT:
        return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT:
        return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER:
        return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS:
        return "VK_ERROR_TOO_MANY_OBJECTS";
    default:
        return "VkResult(other)";
    }
}

static VKAPI_ATTR VkBool32 VKAPI_CALL on_validation_message(
    VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT type,
    const VkDebugUtilsMessengerCallbackDataEXT *data, void *user) {
    (void)type;
    (void)user;
    if (severity >= VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
        atomic_fetch_add(&validation_messages, 1);
        fprintf(stderr, "vulkan validation: %s\n", data->pMessage);
    }
    return VK_FALSE;
}

static int layer_available(const char *name) {
    uint32_t n = 0;
    vkEnumerateInstanceLayerProperties(&n, NULL);
    VkLayerProperties *layers = calloc(n ? n : 1, sizeof *layers);
    if (!layers) return 0;
    vkEnumerateInstanceLayerProperties(&n, layers);
    int found = 0;
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(layers[i].layerName, name) == 0) found = 1;
    free(layers);
    return found;
}

static int create_instance(EgVk *vk, int want_validation, EgError *err) {
    static const char *layer = "VK_LAYER_KHRONOS_validation";
    vk->validation = want_validation && layer_available(layer);
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "egret",
                             .apiVersion = VK_API_VERSION_1_2};
    const char *exts[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                               .pApplicationInfo = &app,
                               .enabledLayerCount = vk->validation ? 1 : 0,
                               .ppEnabledLayerNames = &layer,
                               .enabledExtensionCount = vk->validation ? 1 : 0,
                               .ppEnabledExtensionNames = exts};
    VkResult r = vkCreateInstance(&ci, NULL, &vk->instance);
    if (r != VK_SUCCESS)
        return eg_fail(err, "vkCreateInstance failed (%s): is a Vulkan driver installed?",
                       eg_vk_result_name(r));
    if (vk->validation) {
        PFN_vkCreateDebugUtilsMessengerEXT create =
            (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
                vk->instance, "vkCreateDebugUtilsMessengerEXT");
        VkDebugUtilsMessengerCreateInfoEXT mi = {
            .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
            .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                               VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
            .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
            .pfnUserCallback = on_validation_message};
        if (create) create(vk->instance, &mi, NULL, &vk->messenger);
    }
    return 0;
}

static int pin_object(struct dl_phdr_info *info, size_t size, void *user) {
    (void)size;
    (void)user;
    if (!info->dlpi_name || !info->dlpi_name[0]) return 0; /* the executable itself */
    void *h = dlopen(info->dlpi_name, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    if (h) dlclose(h); /* RTLD_NODELETE outlives the handle */
    return 0;
}

/* The Vulkan loader unloads the driver and the layers when the last instance goes away. A block
 * the driver still points to from its own globals (lavapipe keeps a few of 128 bytes on some
 * CPUs) then looks leaked to LeakSanitizer, from an address in no module, which no suppression
 * or symbolizer can name. Every shared object loaded by now is therefore kept resident until the
 * process exits: its globals stay roots for LeakSanitizer, its frames stay nameable in profiles
 * and sanitizer reports, and a later instance does not load it again. */
static void destroy_instance(VkInstance instance) {
    dl_iterate_phdr(pin_object, NULL);
    vkDestroyInstance(instance, NULL);
}

static int type_rank(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        return 3;
    default:
        return 4;
    }
}

static const char *type_name(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        return "discrete GPU";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        return "integrated GPU";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        return "virtual GPU";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        return "CPU";
    default:
        return "other";
    }
}

static int contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n) return 1;
    }
    return n == 0;
}

/* A device Egret can use: a compute queue, 16-bit storage buffers and push descriptors. */
static int device_usable(VkPhysicalDevice d, uint32_t *queue_family) {
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(d, &nq, NULL);
    VkQueueFamilyProperties qf[16];
    if (nq > 16) nq = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(d, &nq, qf);
    int family = -1;
    for (uint32_t i = 0; i < nq && family < 0; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) family = (int)i;
    if (family < 0) return 0;
    uint32_t ne = 0;
    vkEnumerateDeviceExtensionProperties(d, NULL, &ne, NULL);
    VkExtensionProperties *exts = calloc(ne ? ne : 1, sizeof *exts);
    if (!exts) return 0;
    vkEnumerateDeviceExtensionProperties(d, NULL, &ne, exts);
    int push = 0;
    for (uint32_t i = 0; i < ne; i++)
        if (strcmp(exts[i].extensionName, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME) == 0) push = 1;
    free(exts);
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f11};
    vkGetPhysicalDeviceFeatures2(d, &f2);
    *queue_family = (uint32_t)family;
    return push && f11.storageBuffer16BitAccess;
}

static int pick_device(EgVk *vk, const char *want, EgError *err) {
    uint32_t n = 0;
    vkEnumeratePhysicalDevices(vk->instance, &n, NULL);
    if (n == 0)
        return eg_fail(err,
                       "no Vulkan device found (install mesa-vulkan-drivers for a CPU device)");
    VkPhysicalDevice devs[32];
    if (n > 32) n = 32;
    vkEnumeratePhysicalDevices(vk->instance, &n, devs);
    int best = -1, best_rank = 99;
    uint32_t best_family = 0;
    char *end = NULL;
    long want_index = want && *want ? strtol(want, &end, 10) : -1;
    int by_index = want && *want && end && *end == '\0';
    for (uint32_t i = 0; i < n; i++) {
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(devs[i], &p);
        uint32_t family;
        if (!device_usable(devs[i], &family)) continue;
        if (want && *want) {
            if (by_index ? (long)i != want_index : !contains_ci(p.deviceName, want)) continue;
        }
        int rank = type_rank(p.deviceType);
        if (rank < best_rank) {
            best = (int)i;
            best_rank = rank;
            best_family = family;
        }
    }
    if (best < 0) {
        if (want && *want)
            return eg_fail(err, "no usable Vulkan device matches '%s' (see `egret devices`)", want);
        return eg_fail(err, "no Vulkan device with compute, 16-bit storage and push descriptors");
    }
    vk->phys = devs[best];
    vk->queue_family = best_family;
    return 0;
}

static int create_device(EgVk *vk, EgError *err) {
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                  .queueFamilyIndex = vk->queue_family,
                                  .queueCount = 1,
                                  .pQueuePriorities = &prio};
    /* Half-precision conversions in the fp16 shader variants need shaderFloat16. */
    VkPhysicalDeviceVulkan12Features have12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceFeatures2 have = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                      .pNext = &have12};
    vkGetPhysicalDeviceFeatures2(vk->phys, &have);
    vk->has_float16 = have12.shaderFloat16 == VK_TRUE;
    /* Buffer device addresses let one dispatch reach every sequence's own KV cache (batched
     * decode attention); without them the batch runs one dispatch per sequence. */
    vk->has_device_address = have12.bufferDeviceAddress == VK_TRUE;
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .shaderFloat16 = have12.shaderFloat16,
        .bufferDeviceAddress = have12.bufferDeviceAddress};
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
        .pNext = &f12,
        .storageBuffer16BitAccess = VK_TRUE};
    /* 64-bit integers let the matvec kernel load its vectors in fewer, wider components, which
     * is faster on CPU implementations (runtime/ops.c linear_params). */
    vk->has_int64 = have.features.shaderInt64 == VK_TRUE;
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f11,
                                    .features = {.shaderInt64 = have.features.shaderInt64}};
    const char *exts[3] = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME};
    uint32_t n_exts = 1;
    const char *off = getenv("EGRET_COOPMAT");
    if (off && strcmp(off, "0") == 0) {
        snprintf(vk->coopmat.why, sizeof vk->coopmat.why, "off (EGRET_COOPMAT=0)");
    } else {
        void *coopmat_feature;
        const char *ext = eg_coopmat_probe(vk->instance, vk->phys, &vk->coopmat, &coopmat_feature);
        if (ext) {
            exts[n_exts++] = ext;
            f12.pNext = coopmat_feature;
        }
    }
    /* Integer dot products (the int-dot kernels of quantized products: runtime/ops.c decides
     * whether they run) */
    void *int_dot_feature;
    const char *int_dot_ext = eg_int_dot_probe(vk->phys, &vk->int_dot, &int_dot_feature);
    if (int_dot_ext) {
        exts[n_exts++] = int_dot_ext;
        ((VkPhysicalDeviceShaderIntegerDotProductFeaturesKHR *)int_dot_feature)->pNext = f12.pNext;
        f12.pNext = int_dot_feature;
    }
    VkDeviceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                             .pNext = &f2,
                             .queueCreateInfoCount = 1,
                             .pQueueCreateInfos = &qi,
                             .enabledExtensionCount = n_exts,
                             .ppEnabledExtensionNames = exts};
    VkResult r = vkCreateDevice(vk->phys, &ci, NULL, &vk->device);
    if (r != VK_SUCCESS) return eg_fail(err, "vkCreateDevice failed (%s)", eg_vk_result_name(r));
    vkGetDeviceQueue(vk->device, vk->queue_family, 0, &vk->queue);
    vk->cmd_push_descriptor_set =
        (PFN_vkCmdPushDescriptorSetKHR)vkGetDeviceProcAddr(vk->device, "vkCmdPushDescriptorSetKHR");
    VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                  .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                  .queueFamilyIndex = vk->queue_family};
    if (vkCreateCommandPool(vk->device, &pi, NULL, &vk->pool) != VK_SUCCESS)
        return eg_fail(err, "vkCreateCommandPool failed");
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if (vkCreateFence(vk->device, &fi, NULL, &vk->fence) != VK_SUCCESS)
        return eg_fail(err, "vkCreateFence failed");
    return 0;
}

int eg_vk_create(EgVk *vk, const EgVkOptions *opt, EgError *err) {
    memset(vk, 0, sizeof *vk);
    EgVkOptions none = {0};
    if (!opt) opt = &none;
    const char *want = opt->device ? opt->device : getenv("EGRET_DEVICE");
    if (create_instance(vk, opt->validation || eg_env_flag("EGRET_VALIDATION"), err) ||
        pick_device(vk, want, err) || create_device(vk, err)) {
        eg_vk_destroy(vk);
        return -1;
    }
    vkGetPhysicalDeviceProperties(vk->phys, &vk->props);
    vkGetPhysicalDeviceMemoryProperties(vk->phys, &vk->mem_props);
    const char *limit = getenv("EGRET_DEVICE_MEMORY_LIMIT");
    vk->device_bytes_limit = limit && *limit ? strtoull(limit, NULL, 10) : 0;
    vk->plan_only = eg_env_flag("EGRET_DEVICE_PLAN");
    vk->max_storage_range = vk->props.limits.maxStorageBufferRange;
    vk->storage_align = vk->props.limits.minStorageBufferOffsetAlignment;
    VkPhysicalDeviceSubgroupProperties sg = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &sg};
    vkGetPhysicalDeviceProperties2(vk->phys, &p2);
    vk->subgroup_size = sg.subgroupSize;
    vk->subgroup_arithmetic = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                              (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    vk->subgroup_ballot = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                          (sg.supportedOperations & VK_SUBGROUP_FEATURE_BALLOT_BIT);
    vk->subgroup_shuffle = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                           (sg.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
    /* A view must span any buffer (at most maxStorageBufferRange bytes) in 16-byte texels. */
    VkFormatProperties rgba32ui;
    vkGetPhysicalDeviceFormatProperties(vk->phys, VK_FORMAT_R32G32B32A32_UINT, &rgba32ui);
    vk->texel_views =
        vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU &&
        (rgba32ui.bufferFeatures & VK_FORMAT_FEATURE_STORAGE_TEXEL_BUFFER_BIT) &&
        (VkDeviceSize)vk->props.limits.maxTexelBufferElements * 16 >= vk->max_storage_range;
    if (vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU)
        vk->warmer = eg_core_warmer_start_default();
    if (opt->verbose)
        fprintf(stderr, "egret: Vulkan device: %s (%s)%s\n", vk->props.deviceName,
                type_name(vk->props.deviceType), vk->validation ? ", validation on" : "");
    if (opt->pipeline_cache_dir) {
        long loaded = eg_pipeline_cache_load(vk, opt->pipeline_cache_dir, stderr);
        if (opt->verbose && vk->pipeline_cache_path)
            fprintf(stderr, "egret: pipeline cache %s: %s\n", vk->pipeline_cache_path,
                    loaded > 0 ? "loaded" : "new");
    }
    return 0;
}

void eg_vk_destroy(EgVk *vk) {
    if (eg_profile_enabled()) eg_profile_report(stderr);
    eg_core_warmer_stop(vk->warmer);
    if (vk->device) {
        vkDeviceWaitIdle(vk->device);
        if (vk->fence) vkDestroyFence(vk->device, vk->fence, NULL);
        if (vk->pool) vkDestroyCommandPool(vk->device, vk->pool, NULL);
        if (vk->pipeline_cache) vkDestroyPipelineCache(vk->device, vk->pipeline_cache, NULL);
        vkDestroyDevice(vk->device, NULL);
    }
    if (vk->messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT destroy =
            (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
                vk->instance, "vkDestroyDebugUtilsMessengerEXT");
        if (destroy) destroy(vk->instance, vk->messenger, NULL);
    }
    if (vk->instance) destroy_instance(vk->instance);
    free(vk->pipeline_cache_path);
    memset(vk, 0, sizeof *vk);
}

int eg_vk_list_devices(EgError *err) {
    EgVk vk = {0};
    if (create_instance(&vk, 0, err)) return -1;
    uint32_t n = 0;
    vkEnumeratePhysicalDevices(vk.instance, &n, NULL);
    VkPhysicalDevice devs[32];
    if (n > 32) n = 32;
    vkEnumeratePhysicalDevices(vk.instance, &n, devs);
    for (uint32_t i = 0; i < n; i++) {
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(devs[i], &p);
        uint32_t family;
        printf("%u: %s (%s)%s\n", i, p.deviceName, type_name(p.deviceType),
               device_usable(devs[i], &family)
                   ? ""
                   : " [unusable: lacks 16-bit storage or push descriptors]");
        EgCoopmat cm;
        void *feature;
        eg_coopmat_probe(vk.instance, devs[i], &cm, &feature);
        printf("   cooperative matrices: %s\n", cm.why);
        EgIntDot id;
        eg_int_dot_probe(devs[i], &id, &feature);
        printf("   integer dot product: %s; int-dot kernels for q8/q4 products: %s\n", id.why,
               eg_int_dot_policy(&id));
    }
    destroy_instance(vk.instance);
    return 0;
}
