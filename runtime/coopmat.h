/* Cooperative matrices (tensor cores): whether the device has VK_KHR_cooperative_matrix, or
 * VK_NV_cooperative_matrix where a driver has only that, and the matrix shape Egret's fp16
 * matmul uses there (shaders/coopmat/), chosen from the shapes the device reports. Where none
 * fits, or the shader was not built (CMake's EGRET_GLSLANG / EGRET_COOPMAT_NV), the tiled
 * kernels run: runtime/ops.c falls back on its own. */
#ifndef EGRET_COOPMAT_H
#define EGRET_COOPMAT_H

#include <stdint.h>
#include <vulkan/vulkan.h>

typedef enum EgCoopmatKind { EG_COOPMAT_NONE = 0, EG_COOPMAT_KHR, EG_COOPMAT_NV } EgCoopmatKind;

/* Component types, as both extensions number them (VkComponentTypeKHR = VkComponentTypeNV). */
enum { EG_COMPONENT_FLOAT16 = 0, EG_COMPONENT_FLOAT32 = 1 };
/* Subgroup scope, as both extensions number it (VkScopeKHR = VkScopeNV). */
enum { EG_SCOPE_SUBGROUP = 3 };

/* One shape a device reports: A is m×k, B k×n, C and the result m×n. */
typedef struct EgCoopmatShape {
    uint32_t m, n, k;
    uint32_t a_type, b_type, c_type, result_type, scope;
} EgCoopmatShape;

typedef struct EgCoopmat {
    EgCoopmatKind kind;   /* EG_COOPMAT_NONE: not available (see why) */
    EgCoopmatShape shape; /* the chosen one */
    char why[160];        /* for logs and `egret devices`: what was found or why none */
} EgCoopmat;

/* The shape to use among those reported: fp16 A and B into an fp32 accumulator and result at
 * subgroup scope, each side a multiple of 8 and at most 32; 16×16×16 where offered, else the
 * one with the largest m·n·k. 0 and *out set, or -1 when none qualifies. */
int eg_coopmat_choose(const EgCoopmatShape *shapes, int n, EgCoopmatShape *out);

/* Before vkCreateDevice: whether the physical device offers either extension with its feature
 * on and a usable shape (KHR preferred). Fills *cm; returns the extension name to enable and
 * sets *feature to a features struct to chain into VkDeviceCreateInfo (static storage, one
 * device at a time), or returns NULL with cm->kind EG_COOPMAT_NONE. */
const char *eg_coopmat_probe(VkInstance instance, VkPhysicalDevice phys, EgCoopmat *cm,
                             void **feature);

/* Whether the physical device offers the device extension `name` (also runtime/int_dot.c). */
int eg_device_has_extension(VkPhysicalDevice phys, const char *name);

#endif
