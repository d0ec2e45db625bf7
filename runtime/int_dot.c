#include "runtime/int_dot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/coopmat.h"
#include "runtime/env.h"

const char *eg_int_dot_probe(VkPhysicalDevice phys, EgIntDot *id, void **feature) {
    static VkPhysicalDeviceShaderIntegerDotProductFeaturesKHR on;
    memset(id, 0, sizeof *id);
    *feature = NULL;
    /* The extension, not Vulkan 1.3's core feature: the instance asks for Vulkan 1.2. */
    const char *ext = VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME;
    if (!eg_device_has_extension(phys, ext)) {
        snprintf(id->why, sizeof id->why, "unsupported (no %s)", ext);
        return NULL;
    }
    VkPhysicalDeviceShaderIntegerDotProductFeaturesKHR f = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES_KHR};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f};
    vkGetPhysicalDeviceFeatures2(phys, &f2);
    if (!f.shaderIntegerDotProduct) {
        snprintf(id->why, sizeof id->why, "unsupported (shaderIntegerDotProduct off)");
        return NULL;
    }
    VkPhysicalDeviceShaderIntegerDotProductPropertiesKHR props = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES_KHR};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &props};
    vkGetPhysicalDeviceProperties2(phys, &p2);
    id->supported = 1;
    id->accelerated = props.integerDotProduct4x8BitPackedSignedAccelerated == VK_TRUE;
    snprintf(id->why, sizeof id->why, "4x8-bit packed signed %s",
             id->accelerated ? "accelerated" : "supported, not accelerated");
    on = (VkPhysicalDeviceShaderIntegerDotProductFeaturesKHR){
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES_KHR,
        .shaderIntegerDotProduct = VK_TRUE};
    *feature = &on;
    return ext;
}

/* EGRET_INT_DOT: 1 forced on, -1 forced off, 0 unset (or empty). */
static int env_choice(void) {
    const char *env = getenv("EGRET_INT_DOT");
    return env && *env ? (eg_env_flag("EGRET_INT_DOT") ? 1 : -1) : 0;
}

int eg_int_dot_choose(const EgIntDot *id, int cfg) {
    int want = cfg ? cfg : env_choice();
    if (want < 0) return 0;
    if (want > 0) return id->supported ? 1 : -1;
    /* Off until measured: whether the extra activation pass pays on a GPU, and whether the
     * drivers run these kernels as lavapipe does, is for a GPU run to show (docs/quantization.md)
     */
    return 0;
}

const char *eg_int_dot_policy(const EgIntDot *id) {
    int env = env_choice();
    if (!id->supported)
        return env > 0 ? "unavailable (EGRET_INT_DOT=1 fails: the device lacks the feature)"
                       : "off (unsupported)";
    if (env > 0) return "on (EGRET_INT_DOT=1)";
    if (env < 0) return "off (EGRET_INT_DOT=0)";
    return id->accelerated
               ? "off (accelerated, but not yet measured on a GPU; EGRET_INT_DOT=1 forces them on)"
               : "off (not accelerated; EGRET_INT_DOT=1 forces them on)";
}
