/* Device memory arenas (runtime/vk_memory.c): how buffers are packed into blocks. A buffer of
 * an eighth of a block or more gets a block of its own, of its size; smaller ones share blocks
 * of the arena's size, first fit across every block; resetting returns everything to the
 * device's count. IDEFICS-9B's weights once took 22.0 GiB of 256 MiB blocks for 16.6 GiB of
 * tensors, because each large tensor that missed the current block's rest opened a new one; and
 * with half a block as the limit its q4 projections (28 MB each, two to a 64 MiB block) still
 * left 486 MB of blocks unused. */
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

    /* 3 MiB: a block of about 3 MiB (its alignment aside) */
    REQUIRE(eg_buffer_create(&a, 3 * MIB, &big, &err) == 0, "%s", err.msg);
    VkDeviceSize after_big = eg_arena_block_bytes(&a);
    CHECK(after_big >= 3 * MIB && after_big < 3 * MIB + 64 * KIB,
          "a 3 MiB buffer took %llu bytes of blocks", (unsigned long long)after_big);
    CHECK(device_bytes(&vk) - base == after_big, "device count %llu, blocks %llu",
          device_bytes(&vk) - base, (unsigned long long)after_big);

    /* 256 KiB, under an eighth of 4 MiB: a new shared block of the arena's 4 MiB */
    REQUIRE(eg_buffer_create(&a, 256 * KIB, &small1, &err) == 0, "%s", err.msg);
    CHECK(eg_arena_block_bytes(&a) == after_big + 4 * MIB, "blocks %llu after a 256 KiB buffer",
          (unsigned long long)eg_arena_block_bytes(&a));

    /* another 256 KiB fits in that block's rest: no new block */
    REQUIRE(eg_buffer_create(&a, 256 * KIB, &small2, &err) == 0, "%s", err.msg);
    CHECK(eg_arena_block_bytes(&a) == after_big + 4 * MIB, "blocks %llu after a second 256 KiB",
          (unsigned long long)eg_arena_block_bytes(&a));

    /* just under an eighth of a block: into the shared block, no new block */
    REQUIRE(eg_buffer_create(&a, 512 * KIB - 64 * KIB, &small3, &err) == 0, "%s", err.msg);
    CHECK(eg_arena_block_bytes(&a) == after_big + 4 * MIB,
          "a buffer just under an eighth of a block (%llu) went to a block of its own",
          (unsigned long long)eg_arena_block_bytes(&a));
    /* a buffer that fits in a block's rest goes there, whatever its size: 256 KiB are left */
    EgBuffer fill;
    REQUIRE(eg_buffer_create(&a, 2880 * KIB, &fill, &err) == 0, "%s", err.msg);
    CHECK(eg_arena_block_bytes(&a) == after_big + 4 * MIB,
          "a buffer that fits the shared block's rest went to a block of its own (%llu)",
          (unsigned long long)eg_arena_block_bytes(&a));
    /* an eighth of a block that fits nowhere: a block of its own, of its size */
    REQUIRE(eg_buffer_create(&a, 512 * KIB, &big2, &err) == 0, "%s", err.msg);
    VkDeviceSize total = eg_arena_block_bytes(&a);
    CHECK(total >= after_big + 4 * MIB + 512 * KIB && total < after_big + 4 * MIB + 576 * KIB,
          "blocks %llu after a 512 KiB buffer", (unsigned long long)total);

    /* every buffer is usable memory: distinct, non-null handles */
    CHECK(big.buf && small1.buf && small2.buf && small3.buf && big2.buf, "null buffer");
    CHECK(big.size >= 3 * MIB && big2.size >= 512 * KIB, "sizes %llu %llu",
          (unsigned long long)big.size, (unsigned long long)big2.size);

    /* Projections of 7/16 of a block each (as IDEFICS-9B's q4 MLP matrices in 64 MiB blocks),
     * none fitting a block's rest: blocks of their size, not one of 4 MiB per pair with half a
     * MiB unused. */
    VkDeviceSize before = eg_arena_block_bytes(&a), sum = 0;
    for (int i = 0; i < 6; i++) {
        EgBuffer p;
        REQUIRE(eg_buffer_create(&a, 7 * MIB / 4, &p, &err) == 0, "%s", err.msg);
        sum += 7 * MIB / 4;
    }
    VkDeviceSize spent = eg_arena_block_bytes(&a) - before;
    CHECK(spent >= sum && spent < sum + 6 * 64 * KIB,
          "six 1.75 MiB buffers took %llu bytes of blocks for %llu", (unsigned long long)spent,
          (unsigned long long)sum);

    eg_arena_reset(&a);
    CHECK(device_bytes(&vk) == base, "after reset the device count is %llu, was %llu",
          device_bytes(&vk), base);
    CHECK(eg_arena_block_bytes(&a) == 0, "blocks left after reset");

    eg_vk_destroy(&vk);
    return test_finish();
}
