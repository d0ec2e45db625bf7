#include "runtime/vk_memory.h"

#include <stdlib.h>
#include <string.h>

struct EgMemBlock {
    VkDeviceMemory memory;
    VkDeviceSize size, used;
    uint32_t type_index;
    void *mapped;
    EgMemBlock *next;
};

void eg_arena_init(EgArena *a, EgVk *vk, EgMemKind kind, VkDeviceSize block_size) {
    memset(a, 0, sizeof *a);
    a->vk = vk;
    a->kind = kind;
    a->block_size = block_size;
}

static int find_memory_type(const EgVk *vk, uint32_t allowed, EgMemKind kind) {
    const VkPhysicalDeviceMemoryProperties *mp = &vk->mem_props;
    VkMemoryPropertyFlags want = kind == EG_MEM_HOST ? VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                                           VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
                                                     : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    /* Read-back wants cached host memory; take it when there is a choice. */
    VkMemoryPropertyFlags prefer = kind == EG_MEM_HOST ? VK_MEMORY_PROPERTY_HOST_CACHED_BIT : 0;
    int fallback = -1;
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
        if (!(allowed & (1u << i))) continue;
        VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
        if ((f & want) != want) continue;
        if ((f & prefer) == prefer) return (int)i;
        if (fallback < 0) fallback = (int)i;
    }
    return fallback;
}

static EgMemBlock *new_block(EgArena *a, VkDeviceSize size, uint32_t type_index, EgError *err) {
    EgMemBlock *b = calloc(1, sizeof *b);
    if (!b) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    VkMemoryAllocateFlagsInfo flags = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO,
                                       .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT};
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                               .pNext = a->vk->has_device_address ? &flags : NULL,
                               .allocationSize = size,
                               .memoryTypeIndex = type_index};
    unsigned long long limit = a->vk->device_bytes_limit;
    if (a->kind == EG_MEM_DEVICE && limit && atomic_load(&a->vk->device_bytes) + size > limit) {
        free(b);
        eg_fail_kind(err, EG_ERROR_DEVICE_MEMORY,
                     "out of device memory: allocating %llu MiB would pass the "
                     "EGRET_DEVICE_MEMORY_LIMIT of %llu MiB",
                     (unsigned long long)(size >> 20), limit >> 20);
        return NULL;
    }
    int counted_only = a->vk->plan_only && a->kind == EG_MEM_DEVICE;
    VkResult r = counted_only ? VK_SUCCESS : vkAllocateMemory(a->vk->device, &ai, NULL, &b->memory);
    if (r != VK_SUCCESS) {
        free(b);
        int exhausted = r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY;
        eg_fail_kind(err, exhausted ? EG_ERROR_DEVICE_MEMORY : EG_ERROR_PLAIN,
                     "%sdevice memory allocation of %llu MiB failed (%s)",
                     exhausted ? "out of device memory: " : "", (unsigned long long)(size >> 20),
                     eg_vk_result_name(r));
        return NULL;
    }
    if (a->kind == EG_MEM_DEVICE) {
        unsigned long long now = atomic_fetch_add(&a->vk->device_bytes, size) + size;
        unsigned long long peak = atomic_load(&a->vk->device_bytes_peak);
        while (now > peak && !atomic_compare_exchange_weak(&a->vk->device_bytes_peak, &peak, now)) {
        }
    }
    b->size = size;
    b->type_index = type_index;
    if (a->kind == EG_MEM_HOST &&
        vkMapMemory(a->vk->device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->mapped) != VK_SUCCESS) {
        vkFreeMemory(a->vk->device, b->memory, NULL);
        free(b);
        eg_fail(err, "vkMapMemory failed");
        return NULL;
    }
    /* The dry run's results are read from host buffers nothing wrote: they must read as zeros,
     * not as whatever the driver's fresh memory held. */
    if (b->mapped && a->vk->plan_only) memset(b->mapped, 0, size);
    b->next = a->blocks;
    a->blocks = b;
    return b;
}

static int remember_buffer(EgArena *a, VkBuffer buf, VkBufferView view) {
    if (a->n_buffers == a->cap_buffers) {
        int cap = a->cap_buffers ? a->cap_buffers * 2 : 64;
        VkBuffer *nb = realloc(a->buffers, (size_t)cap * sizeof *nb);
        if (nb) a->buffers = nb;
        VkBufferView *nv = realloc(a->views, (size_t)cap * sizeof *nv);
        if (nv) a->views = nv;
        if (!nb || !nv) return -1;
        a->cap_buffers = cap;
    }
    a->buffers[a->n_buffers] = buf;
    a->views[a->n_buffers++] = view;
    return 0;
}

/* The rgba32ui view of a whole buffer that *_texel shaders bind (vk->texel_views). */
static VkResult create_texel_view(EgVk *vk, VkBuffer buf, VkDeviceSize size, VkBufferView *out) {
    *out = VK_NULL_HANDLE;
    if (!vk->texel_views) return VK_SUCCESS;
    VkBufferViewCreateInfo vi = {.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
                                 .buffer = buf,
                                 .format = VK_FORMAT_R32G32B32A32_UINT,
                                 .offset = 0,
                                 .range = size};
    return vkCreateBufferView(vk->device, &vi, NULL, out);
}

int eg_buffer_create(EgArena *a, VkDeviceSize size, EgBuffer *out, EgError *err) {
    memset(out, 0, sizeof *out);
    size = (size + 15) & ~(VkDeviceSize)15;
    if (size == 0) size = 16;
    /* llvmpipe compiles a variant of a shader for each combination of power-of-two-or-not
     * sizes of the buffers behind its texel views: keeping every size off the powers of two
     * keeps that at one variant (not, say, four of a two-view kernel, compiled mid-serving);
     * a buffer of the largest size a binding allows stays as it is. */
    if (a->vk->texel_views && (size & (size - 1)) == 0 && size + 16 <= a->vk->max_storage_range)
        size += 16;
    if (size > a->vk->max_storage_range)
        return eg_fail(err,
                       "buffer of %llu bytes exceeds the device's maxStorageBufferRange (%llu)",
                       (unsigned long long)size, (unsigned long long)a->vk->max_storage_range);
    VkBufferCreateInfo bi = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                 (a->vk->has_device_address ? VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT : 0) |
                 (a->vk->texel_views ? VK_BUFFER_USAGE_STORAGE_TEXEL_BUFFER_BIT : 0),
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VkBuffer buf;
    VkResult r = vkCreateBuffer(a->vk->device, &bi, NULL, &buf);
    if (r != VK_SUCCESS) return eg_fail(err, "vkCreateBuffer failed (%s)", eg_vk_result_name(r));
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(a->vk->device, buf, &req);
    int type = find_memory_type(a->vk, req.memoryTypeBits, a->kind);
    if (type < 0) {
        vkDestroyBuffer(a->vk->device, buf, NULL);
        return eg_fail(err, "no suitable Vulkan memory type for %s buffers",
                       a->kind == EG_MEM_HOST ? "host-visible" : "device-local");
    }
    EgMemBlock *b = a->blocks;
    VkDeviceSize offset = 0;
    for (; b; b = b->next) {
        if (b->type_index != (uint32_t)type) continue;
        offset = (b->used + req.alignment - 1) / req.alignment * req.alignment;
        if (offset + req.size <= b->size) break;
    }
    if (!b) {
        /* A buffer of an eighth of a block or more gets a block of its own, of its size.
         * Packed into blocks of the arena's size, large ones left most of a block unused each
         * time the next did not fit (IDEFICS-9B's weights: 22.0 GiB of 256 MiB blocks for 16.6
         * GiB), and at half a block two 28 MB q4 projections still left 11 MB of each 64 MiB
         * block unused (486 MB over IDEFICS-9B q4). Models have hundreds of such tensors, far
         * below any device's maxMemoryAllocationCount (4096 at least). */
        VkDeviceSize bs = 8 * req.size >= a->block_size ? req.size : a->block_size;
        b = new_block(a, bs, (uint32_t)type, err);
        if (!b) {
            vkDestroyBuffer(a->vk->device, buf, NULL);
            return -1;
        }
        offset = 0;
    }
    VkBufferView view = VK_NULL_HANDLE;
    if (!b->memory) { /* plan_only: sized and counted, never bound (nothing reads it) */
        if (remember_buffer(a, buf, VK_NULL_HANDLE)) {
            vkDestroyBuffer(a->vk->device, buf, NULL);
            return eg_fail(err, "out of host memory");
        }
        b->used = offset + req.size;
        a->bytes_used += size;
        out->buf = buf;
        out->size = size;
        return 0;
    }
    const char *failed = vkBindBufferMemory(a->vk->device, buf, b->memory, offset) != VK_SUCCESS
                             ? "binding buffer memory failed"
                         : create_texel_view(a->vk, buf, size, &view) != VK_SUCCESS
                             ? "vkCreateBufferView failed"
                         : remember_buffer(a, buf, view) ? "out of host memory"
                                                         : NULL;
    if (failed) {
        if (view) vkDestroyBufferView(a->vk->device, view, NULL);
        vkDestroyBuffer(a->vk->device, buf, NULL);
        return eg_fail(err, "%s", failed);
    }
    b->used = offset + req.size;
    a->bytes_used += size;
    out->buf = buf;
    out->size = size;
    out->mapped = b->mapped ? (char *)b->mapped + offset : NULL;
    out->texels = view;
    if (a->vk->has_device_address) {
        VkBufferDeviceAddressInfo ai = {.sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO,
                                        .buffer = buf};
        out->addr = vkGetBufferDeviceAddress(a->vk->device, &ai);
    }
    return 0;
}

VkDeviceSize eg_arena_block_bytes(const EgArena *a) {
    VkDeviceSize n = 0;
    for (const EgMemBlock *b = a->blocks; b; b = b->next)
        n += b->size;
    return n;
}

void eg_arena_reset(EgArena *a) {
    if (!a->vk) return;
    for (int i = 0; i < a->n_buffers; i++) {
        if (a->views[i]) vkDestroyBufferView(a->vk->device, a->views[i], NULL);
        vkDestroyBuffer(a->vk->device, a->buffers[i], NULL);
    }
    free(a->buffers);
    free(a->views);
    a->buffers = NULL;
    a->views = NULL;
    a->n_buffers = a->cap_buffers = 0;
    while (a->blocks) {
        EgMemBlock *b = a->blocks;
        a->blocks = b->next;
        if (b->mapped) vkUnmapMemory(a->vk->device, b->memory);
        vkFreeMemory(a->vk->device, b->memory, NULL);
        if (a->kind == EG_MEM_DEVICE) atomic_fetch_sub(&a->vk->device_bytes, b->size);
        free(b);
    }
    a->bytes_used = 0;
}
