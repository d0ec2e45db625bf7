#include "runtime/ops_batch.h"
#include "runtime/ops_push.h"

#include <string.h>

typedef struct {
    uint32_t batch, heads, head_dim, sin_off, entry0;
} KvAppendPush; /* shaders/kv_append.comp */

int eg_batch_ops_init(EgBatchOps *b, const EgOps *ops, EgError *err) {
    memset(b, 0, sizeof *b);
    if (!ops->vk->has_device_address || !ops->attention_batch_ok) return 0;
    EgPipelineBatch queued, *batch = &queued;
    eg_pipeline_batch_init(batch, ops->f16);
    eg_pipeline_batch_add(batch, &b->kv_append, "kv_append", 3, 1u << 0, 0, sizeof(KvAppendPush),
                          NULL, 0);
    eg_pipeline_batch_add(batch, &b->attention, "attention_batch", 5, 1u << 3, 0,
                          sizeof(EgAttentionPush), ops->attention_one_spec, EG_ATTN_SPEC);
    /* On CPU devices a load by address is a loop over the lanes per 32-bit component (lavapipe:
     * 7.9 ns per 16 bytes, against 1.1 through a texel view): where the attention kernel reads
     * texel views, the batch reads each entry's through its slot. Demo model, egret bench: one
     * dispatch per sequence over its bound buffers took 0.85x the time per token of the table
     * at batch 1 and 0.93x at 8; the slots, one dispatch per 8 sequences, 0.70-0.82 ms per
     * token at 8 against 0.85-0.90 per sequence (attention 39% of its device time), the same
     * at 1. */
    b->use_slots = ops->attention[0].texel_mask != 0;
    if (b->use_slots) {
        uint32_t texels = 0x7u | (0x7fu << 5) | (0x7fu << 12); /* q, slot 0, slots 1..7 */
        uint32_t spec[EG_ATTN_SPEC + 1];                       /* attention.glsl's, then SLOTS */
        memcpy(spec, ops->attention_one_spec, sizeof ops->attention_one_spec);
        for (int i = 0; i < EG_ATTN_SLOT_VARIANTS; i++) {
            spec[EG_ATTN_SPEC] = 1u << i;
            eg_pipeline_batch_add(batch, &b->attention_slots[i], "attention_slots", 19, 1u << 3,
                                  texels, sizeof(EgAttentionPush), spec, EG_ATTN_SPEC + 1);
        }
    }
    if (eg_pipeline_batch_build(ops->vk, batch, err)) {
        b->use_slots = 0;
        return -1;
    }
    b->available = 1;
    return 0;
}

void eg_batch_ops_destroy(EgBatchOps *b, const EgOps *ops) {
    eg_pipeline_destroy(ops->vk, &b->kv_append);
    eg_pipeline_destroy(ops->vk, &b->attention);
    for (int i = 0; i < EG_ATTN_SLOT_VARIANTS; i++)
        eg_pipeline_destroy(ops->vk, &b->attention_slots[i]);
    b->available = 0;
    b->use_slots = 0;
}

void eg_batch_entry_set(EgBatchEntry *e, const EgBuffer *k, uint32_t k_off, const EgBuffer *v,
                        uint32_t v_off, uint32_t stride, uint32_t n_keys) {
    *e = (EgBatchEntry){.k_addr = {(uint32_t)k->addr, (uint32_t)(k->addr >> 32)},
                        .v_addr = {(uint32_t)v->addr, (uint32_t)(v->addr >> 32)},
                        .k_off = k_off,
                        .v_off = v_off,
                        .stride = stride,
                        .n_keys = n_keys};
}

void eg_op_kv_append(EgCmd *cmd, const EgBatchOps *b, const EgKvAppend *a) {
    KvAppendPush push = {.batch = a->batch,
                         .heads = a->heads,
                         .head_dim = a->head_dim,
                         .sin_off = a->table_positions * (a->head_dim / 2),
                         .entry0 = a->entry0};
    const EgBuffer *bufs[3] = {a->qkv, a->table, a->entries};
    uint32_t n = a->batch * a->heads * (a->head_dim / 2);
    eg_cmd_dispatch_addressed(cmd, &b->kv_append, bufs, &push, eg_groups(n, 64), 1, 1, NULL, 0,
                              a->caches, 2 * (int)a->batch);
}

void eg_op_batch_attention(EgCmd *cmd, const EgOps *ops, const EgBatchOps *b,
                           const EgBatchAttention *a) {
    uint32_t H = a->heads * a->head_dim;
    EgAttentionPush push = {.head_dim = a->head_dim,
                            .q_batch = a->q_stride ? a->q_stride : H,
                            .o_batch = H,
                            .q_stride = H,
                            .o_stride = H,
                            .scale = a->scale,
                            .n_queries = 1,
                            .entry0 = a->entry0};
    if (b->use_slots) {
        for (uint32_t g0 = 0; g0 < a->batch; g0 += EG_ATTN_SLOTS) {
            uint32_t n = a->batch - g0 < EG_ATTN_SLOTS ? a->batch - g0 : EG_ATTN_SLOTS;
            /* attention_slots.comp's bindings; unused slots repeat entry g0's buffers */
            const EgBuffer *bufs[19] = {[0] = a->q, [3] = a->o, [4] = a->entries};
            for (uint32_t s = 0; s < EG_ATTN_SLOTS; s++) {
                uint32_t e = g0 + (s < n ? s : 0);
                bufs[s ? 4 + s : 1] = a->keys_values[2 * e];
                bufs[s ? 11 + s : 2] = a->keys_values[2 * e + 1];
            }
            push.entry0 = a->entry0 + g0;
            push.n_entries = n;
            push.q_off = g0 * push.q_batch;
            push.o_off = g0 * H;
            eg_cmd_dispatch(cmd, &b->attention_slots[eg_pow2_variant(n)], bufs, &push, 1, a->heads,
                            1);
        }
        return;
    }
    /* keys and values come by address: their bindings hold the dummy */
    const EgBuffer *bufs[5] = {a->q, &ops->dummy, &ops->dummy, a->o, a->entries};
    eg_cmd_dispatch_addressed(cmd, &b->attention, bufs, &push, 1, a->heads, a->batch,
                              a->keys_values, 2 * (int)a->batch, NULL, 0);
}
