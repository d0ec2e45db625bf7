#include "runtime/vk_staging.h"

#include <string.h>

#include "runtime/vk_cmd.h"

int eg_staging_init(EgStaging *s, EgVk *vk, VkDeviceSize size, EgError *err) {
    eg_arena_init(&s->arena, vk, EG_MEM_HOST, size);
    return eg_buffer_create(&s->arena, size, &s->buf, err);
}

void eg_staging_destroy(EgStaging *s) {
    eg_arena_reset(&s->arena);
}

/* One buffer copy in a command buffer of its own, waited for. */
static int copy_and_wait(EgVk *vk, const EgBuffer *src, VkDeviceSize src_offset,
                         const EgBuffer *dst, VkDeviceSize dst_offset, VkDeviceSize size,
                         EgError *err) {
    EgCmd cmd;
    if (eg_cmd_begin(vk, &cmd, err)) return -1;
    eg_cmd_copy(&cmd, src, src_offset, dst, dst_offset, size);
    return eg_cmd_submit_wait(&cmd, err);
}

int eg_upload(EgStaging *s, const EgBuffer *dst, VkDeviceSize dst_offset, const void *src,
              VkDeviceSize size, EgError *err) {
    if (dst_offset + size > dst->size) return eg_fail(err, "upload past the end of a buffer");
    if (s->arena.vk->plan_only) return 0; /* the dry run moves no data */
    for (VkDeviceSize done = 0; done < size;) {
        VkDeviceSize n = size - done < s->buf.size ? size - done : s->buf.size;
        memcpy(s->buf.mapped, (const char *)src + done, n);
        if (copy_and_wait(s->arena.vk, &s->buf, 0, dst, dst_offset + done, n, err)) return -1;
        done += n;
    }
    return 0;
}

int eg_download(EgStaging *s, const EgBuffer *src, VkDeviceSize src_offset, void *dst,
                VkDeviceSize size, EgError *err) {
    if (src_offset + size > src->size) return eg_fail(err, "download past the end of a buffer");
    if (s->arena.vk->plan_only) { /* nothing ran: reads as zeros, not stale staging bytes */
        memset(dst, 0, size);
        return 0;
    }
    for (VkDeviceSize done = 0; done < size;) {
        VkDeviceSize n = size - done < s->buf.size ? size - done : s->buf.size;
        if (copy_and_wait(s->arena.vk, src, src_offset + done, &s->buf, 0, n, err)) return -1;
        memcpy((char *)dst + done, s->buf.mapped, n);
        done += n;
    }
    return 0;
}
