/* Device memory arenas (runtime/vk_memory.c): how buffers are packed into blocks. A buffer of
 * half a block or more gets a block of its own, of its size; smaller ones share blocks of the
 * arena's size, first fit across every block; resetting returns everything to the device's
 * count. IDEFICS-9B's weights once took 22.0 GiB of 256 MiB blocks for 16.6 GiB of tensors,
 * because each large tensor that missed the current block's rest opened a new one. */
#include "runtime/vk_context.h"
#include "runtime/vk_memory.h"
#include "test_util.h"

#include <stdio.h>

#define KIB (1024ull)
#define MIB (1024ull * KIB)

static unsigned long long device_bytes(const EgVk *vk) {
    return atomic_load(&vk->device_bytes);
}

int main(void) {
    EgVk vk;
    EgError err = {0};
    REQUIRE(eg_vk_create(&vk, NULL, &err) == 0, "eg_vk_create: %s", err.msg);
    unsigned long long base = device_bytes(&vk);

    EgArena a;
    eg_arena_init(&a, &vk, EG_MEM_DEVICE, 4 * MIB);
    EgBuffer big, small1, small2, big2, small3;

    /* 3 MiB: at least half of 4 MiB, so a block of about 3 MiB (its alignment aside) */
    REQUIRE(eg_buffer_create(&a, 3 * MIB, &big, &err) == 0, "%s", err.msg);
    VkDeviceSize after_big = eg_arena_block_bytes(&a);
    CHECK(after_big >= 3 * MIB && after_big < 3 * MIB + 64 * KIB,
          "a 3 MiB buffer took %llu bytes of blocks", (unsigned long long)after_big);
    CHECK(device_bytes(&vk) - base == after_big, "device count %llu, blocks %llu",
          device_bytes(&vk) - base, (unsigned long long)after_big);

    /* 1 MiB does not fit beside it: a new block of the arena's 4 MiB */
    REQUIRE(eg_buffer_create(&a, 1 * MIB, &small1, &err) == 0, "%s", err.msg);
    CHECK(eg_arena_block_bytes(&a) == after_big + 4 * MIB, "blocks %llu after a 1 MiB buffer",
          (unsigned long long)eg_arena_block_bytes(&a));

    /* another 1 MiB fits in that block's rest: no new block */
    REQUIRE(eg_buffer_create(&a, 1 * MIB, &small2, &err) == 0, "%s", err.msg);
    CHECK(eg_arena_block_bytes(&a) == after_big + 4 * MIB, "blocks %llu after a second 1 MiB",
          (unsigned long long)eg_arena_block_bytes(&a));

    /* just under half a block: into the shared block's last 2 MiB, no new block */
    REQUIRE(eg_buffer_create(&a, 2 * MIB - 64 * KIB, &small3, &err) == 0, "%s", err.msg);
    CHECK(eg_arena_block_bytes(&a) == after_big + 4 * MIB,
          "a buffer just under half a block (%llu) went to a block of its own",
          (unsigned long long)eg_arena_block_bytes(&a));
    /* half a block: a block of its own, of its size */
    REQUIRE(eg_buffer_create(&a, 2 * MIB, &big2, &err) == 0, "%s", err.msg);
    VkDeviceSize total = eg_arena_block_bytes(&a);
    CHECK(total >= after_big + 6 * MIB && total < after_big + 6 * MIB + 64 * KIB,
          "blocks %llu after a 2 MiB buffer", (unsigned long long)total);

    /* every buffer is usable memory: distinct, non-null handles */
    CHECK(big.buf && small1.buf && small2.buf && small3.buf && big2.buf, "null buffer");
    CHECK(big.size >= 3 * MIB && big2.size >= 2 * MIB, "sizes %llu %llu",
          (unsigned long long)big.size, (unsigned long long)big2.size);

    eg_arena_reset(&a);
    CHECK(device_bytes(&vk) == base, "after reset the device count is %llu, was %llu",
          device_bytes(&vk), base);
    CHECK(eg_arena_block_bytes(&a) == 0, "blocks left after reset");

    eg_vk_destroy(&vk);
    return test_finish();
}
