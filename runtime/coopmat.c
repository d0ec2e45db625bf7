#include "runtime/coopmat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Debian 12's Vulkan headers (1.3.239) predate VK_KHR_cooperative_matrix (1.3.255): its
 * structures and entry point as the registry defines them. */
#ifndef VK_KHR_cooperative_matrix
#define VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME "VK_KHR_cooperative_matrix"
#define VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR                          \
    ((VkStructureType)1000506000)
#define VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR ((VkStructureType)1000506001)
typedef struct VkCooperativeMatrixPropertiesKHR {
    VkStructureType sType;
    void *pNext;
    uint32_t MSize, NSize, KSize;
    int32_t AType, BType, CType, ResultType; /* VkComponentTypeKHR */
    VkBool32 saturatingAccumulation;
    int32_t scope; /* VkScopeKHR */
} VkCooperativeMatrixPropertiesKHR;
typedef struct VkPhysicalDeviceCooperativeMatrixFeaturesKHR {
    VkStructureType sType;
    void *pNext;
    VkBool32 cooperativeMatrix;
    VkBool32 cooperativeMatrixRobustBufferAccess;
} VkPhysicalDeviceCooperativeMatrixFeaturesKHR;
typedef VkResult(VKAPI_PTR *PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR)(
    VkPhysicalDevice, uint32_t *, VkCooperativeMatrixPropertiesKHR *);
#endif

#define MAX_SHAPES 64

int eg_coopmat_choose(const EgCoopmatShape *shapes, int n, EgCoopmatShape *out) {
    int best = -1;
    for (int i = 0; i < n; i++) {
        const EgCoopmatShape *s = &shapes[i];
        int usable = s->a_type == EG_COMPONENT_FLOAT16 && s->b_type == EG_COMPONENT_FLOAT16 &&
                     s->c_type == EG_COMPONENT_FLOAT32 && s->result_type == EG_COMPONENT_FLOAT32 &&
                     s->scope == EG_SCOPE_SUBGROUP && s->m && s->n && s->k && s->m % 8 == 0 &&
                     s->n % 8 == 0 && s->k % 8 == 0 && s->m <= 32 && s->n <= 32 && s->k <= 32;
        if (!usable) continue;
        if (s->m == 16 && s->n == 16 && s->k == 16) {
            best = i;
            break;
        }
        if (best < 0 || (uint64_t)s->m * s->n * s->k >
                            (uint64_t)shapes[best].m * shapes[best].n * shapes[best].k)
            best = i;
    }
    if (best < 0) return -1;
    *out = shapes[best];
    return 0;
}

int eg_device_has_extension(VkPhysicalDevice phys, const char *name) {
    uint32_t n = 0;
    if (vkEnumerateDeviceExtensionProperties(phys, NULL, &n, NULL) != VK_SUCCESS || !n) return 0;
    VkExtensionProperties *ext = calloc(n, sizeof *ext);
    int found = 0;
    if (ext && vkEnumerateDeviceExtensionProperties(phys, NULL, &n, ext) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = strcmp(ext[i].extensionName, name) == 0;
    free(ext);
    return found;
}

/* The KHR extension's shapes, or -1 where its feature is off or the query fails. */
static int khr_shapes(VkInstance instance, VkPhysicalDevice phys, EgCoopmatShape *shapes) {
    VkPhysicalDeviceCooperativeMatrixFeaturesKHR f = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f};
    vkGetPhysicalDeviceFeatures2(phys, &f2);
    PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR get =
        (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR)vkGetInstanceProcAddr(
            instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
    if (!f.cooperativeMatrix || !get) return -1;
    VkCooperativeMatrixPropertiesKHR props[MAX_SHAPES];
    uint32_t n = MAX_SHAPES;
    for (uint32_t i = 0; i < n; i++)
        props[i] = (VkCooperativeMatrixPropertiesKHR){
            .sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR};
    VkResult r = get(phys, &n, props);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) return -1;
    for (uint32_t i = 0; i < n; i++)
        shapes[i] = (EgCoopmatShape){props[i].MSize,
                                     props[i].NSize,
                                     props[i].KSize,
                                     (uint32_t)props[i].AType,
                                     (uint32_t)props[i].BType,
                                     (uint32_t)props[i].CType,
                                     (uint32_t)props[i].ResultType,
                                     (uint32_t)props[i].scope};
    return (int)n;
}

/* The NV extension's shapes (its own structures are in the headers), or -1. */
static int nv_shapes(VkInstance instance, VkPhysicalDevice phys, EgCoopmatShape *shapes) {
    VkPhysicalDeviceCooperativeMatrixFeaturesNV f = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f};
    vkGetPhysicalDeviceFeatures2(phys, &f2);
    PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV get =
        (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)vkGetInstanceProcAddr(
            instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
    if (!f.cooperativeMatrix || !get) return -1;
    VkCooperativeMatrixPropertiesNV props[MAX_SHAPES];
    uint32_t n = MAX_SHAPES;
    for (uint32_t i = 0; i < n; i++)
        props[i] = (VkCooperativeMatrixPropertiesNV){
            .sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV};
    VkResult r = get(phys, &n, props);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) return -1;
    for (uint32_t i = 0; i < n; i++)
        shapes[i] =
            (EgCoopmatShape){props[i].MSize, props[i].NSize, props[i].KSize, props[i].AType,
                             props[i].BType, props[i].CType, props[i].DType, props[i].scope};
    return (int)n;
}

const char *eg_coopmat_probe(VkInstance instance, VkPhysicalDevice phys, EgCoopmat *cm,
                             void **feature) {
    static VkPhysicalDeviceCooperativeMatrixFeaturesKHR khr_on;
    static VkPhysicalDeviceCooperativeMatrixFeaturesNV nv_on;
    memset(cm, 0, sizeof *cm);
    *feature = NULL;
    EgCoopmatShape shapes[MAX_SHAPES];
    struct {
        EgCoopmatKind kind;
        const char *ext;
        int (*query)(VkInstance, VkPhysicalDevice, EgCoopmatShape *);
    } tries[] = {{EG_COOPMAT_KHR, VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME, khr_shapes},
                 {EG_COOPMAT_NV, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME, nv_shapes}};
    int offered = 0;
    for (int t = 0; t < 2; t++) {
        if (!eg_device_has_extension(phys, tries[t].ext)) continue;
        offered = 1;
        int n = tries[t].query(instance, phys, shapes);
        if (n < 0) {
            snprintf(cm->why, sizeof cm->why, "%s: feature off", tries[t].ext);
            continue;
        }
        if (eg_coopmat_choose(shapes, n, &cm->shape)) {
            snprintf(cm->why, sizeof cm->why, "%s: no fp16 x fp16 -> fp32 subgroup shape among %d",
                     tries[t].ext, n);
            continue;
        }
        cm->kind = tries[t].kind;
        snprintf(cm->why, sizeof cm->why, "%s %ux%ux%u", tries[t].ext, cm->shape.m, cm->shape.n,
                 cm->shape.k);
        if (cm->kind == EG_COOPMAT_KHR) {
            khr_on = (VkPhysicalDeviceCooperativeMatrixFeaturesKHR){
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR,
                .cooperativeMatrix = VK_TRUE};
            *feature = &khr_on;
        } else {
            nv_on = (VkPhysicalDeviceCooperativeMatrixFeaturesNV){
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
                .cooperativeMatrix = VK_TRUE};
            *feature = &nv_on;
        }
        return tries[t].ext;
    }
    if (!offered)
        snprintf(cm->why, sizeof cm->why, "not available (no cooperative-matrix extension)");
    return NULL;
}
