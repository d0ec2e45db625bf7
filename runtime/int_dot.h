/* Integer dot products (VK_KHR_shader_integer_dot_product): whether the device has the
 * shaderIntegerDotProduct feature, which the int-dot kernels of quantized products need
 * (shaders/linear_quant_idot.glsl, OpSDotKHR on 4x8-bit packed operands), and whether it
 * reports that instruction accelerated (integerDotProduct4x8BitPackedSignedAccelerated, reported
 * by `egret devices`). The kernels run only when asked for (EGRET_INT_DOT=1) until a GPU
 * measures them against the float kernels. */
#ifndef EGRET_INT_DOT_H
#define EGRET_INT_DOT_H

#include <vulkan/vulkan.h>

typedef struct EgIntDot {
    int supported;   /* the feature is enabled on the device (set at device creation) */
    int accelerated; /* the packed signed 8-bit dot product is reported accelerated */
    char why[128];   /* for `egret devices` and logs: what was found */
} EgIntDot;

/* Before vkCreateDevice: fills *id; returns the extension to enable and sets *feature to a
 * features struct to chain into VkDeviceCreateInfo (static storage, one device at a time), or
 * returns NULL (id->supported 0). */
const char *eg_int_dot_probe(VkPhysicalDevice phys, EgIntDot *id, void **feature);

/* The one place the int-dot kernels are chosen. cfg (EgOpsConfig.int_dot): 1 required, -1
 * never, 0 automatic: EGRET_INT_DOT=1 forces them on, =0 or unset off (unmeasured on GPUs; the
 * tests force them on lavapipe). 1: use them; 0: not; -1: required but the device lacks them. */
int eg_int_dot_choose(const EgIntDot *id, int cfg);
/* What eg_int_dot_choose(id, 0) gives and why, for `egret devices` and logs. */
const char *eg_int_dot_policy(const EgIntDot *id);

#endif
