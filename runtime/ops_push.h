/* Push-constant layouts that more than one file records: they must match the shaders' `Push`
 * blocks field for field. */
#ifndef EGRET_OPS_PUSH_H
#define EGRET_OPS_PUSH_H

#include <stdint.h>

/* shaders/attention.glsl (attention.comp, attention_batch.comp) and attention_shared.comp (which
 * ignores n_queries, entry0 and n_entries). */
typedef struct EgAttentionPush {
    uint32_t n_keys, head_dim, q_off, q_stride, q_batch, k_off, k_stride, k_batch, v_off, v_stride,
        v_batch, o_off, o_stride, o_batch, mode, q_pos0;
    float scale;
    uint32_t n_queries;  /* attention.glsl only */
    uint32_t entry0;     /* attention_batch.comp and attention_slots.comp only */
    uint32_t n_entries;  /* attention_slots.comp only (runtime/ops_batch.c) */
    uint32_t kv_group;   /* query heads per key/value head; 0 or 1: none */
    uint32_t mask_block; /* EG_ATTN_BLOCK_MASK only: keys per mask bit */
    uint32_t mask_words; /* and 32-bit words per query's mask row */
} EgAttentionPush;

#endif
