/* Device memory: a few large VkDeviceMemory blocks per arena, each holding many VkBuffers
 * (suballocated with a bump pointer). An arena lives as long as what it holds: the model's
 * weights for the life of the model, a sequence's KV cache for the life of the request.
 * Every buffer is at most maxStorageBufferRange bytes so a shader can bind it whole. */
#ifndef EGRET_VK_MEMORY_H
#define EGRET_VK_MEMORY_H

#include "runtime/vk_context.h"

typedef struct EgBuffer {
    VkBuffer buf;
    VkDeviceSize size;
    void *mapped; /* host pointer for host-visible arenas, else NULL */
    VkDeviceAddress addr; /* its device address (shaders' buffer references); 0 when the device
                             has no bufferDeviceAddress */
    VkBufferView texels;  /* the whole buffer as rgba32ui texels where vk->texel_views, else
                             VK_NULL_HANDLE */
} EgBuffer;

typedef enum EgMemKind {
    EG_MEM_DEVICE, /* device-local: weights and activations */
    EG_MEM_HOST    /* host-visible and coherent: staging for uploads and read-back */
} EgMemKind;

typedef struct EgMemBlock EgMemBlock;

typedef struct EgArena {
    EgVk *vk;
    EgMemKind kind;
    VkDeviceSize block_size;
    EgMemBlock *blocks; /* newest first */
    VkBuffer *buffers;  /* every buffer made here, destroyed on reset */
    VkBufferView *views; /* and its texel view (or VK_NULL_HANDLE), at the same index */
    int n_buffers, cap_buffers;
    VkDeviceSize bytes_used; /* sum of buffer sizes, for reporting */
} EgArena;

void eg_arena_init(EgArena *a, EgVk *vk, EgMemKind kind, VkDeviceSize block_size);
/* Creates a buffer of `size` bytes (rounded up to 16) in the arena. Fails (naming the size) when
 * size exceeds maxStorageBufferRange or the device is out of memory. */
int eg_buffer_create(EgArena *a, VkDeviceSize size, EgBuffer *out, EgError *err);
/* Destroys every buffer and frees every block. */
void eg_arena_reset(EgArena *a);
/* Device (or host) memory the arena's blocks hold. */
VkDeviceSize eg_arena_block_bytes(const EgArena *a);

#endif
