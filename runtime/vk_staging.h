/* Copies between host memory and device buffers through a host-visible staging buffer, each
 * recorded with the command recorder (runtime/vk_cmd.h) and waited for. */
#ifndef EGRET_VK_STAGING_H
#define EGRET_VK_STAGING_H

#include "runtime/vk_memory.h"

/* A staging area: a host-visible buffer of the size given to eg_staging_init. */
typedef struct EgStaging {
    EgArena arena;
    EgBuffer buf;
} EgStaging;

int eg_staging_init(EgStaging *s, EgVk *vk, VkDeviceSize size, EgError *err);
void eg_staging_destroy(EgStaging *s);
/* Synchronous copies (each waits for the device). */
int eg_upload(EgStaging *s, const EgBuffer *dst, VkDeviceSize dst_offset, const void *src,
              VkDeviceSize size, EgError *err);
int eg_download(EgStaging *s, const EgBuffer *src, VkDeviceSize src_offset, void *dst,
                VkDeviceSize size, EgError *err);

#endif
