/* Batched decode over sequences that each own their KV cache: one dispatch for the whole batch
 * reaches every sequence's cache through a batch table of device addresses (EgBatchEntry, read
 * by shaders/batch_table.glsl). Needs bufferDeviceAddress and the subgroup attention kernel;
 * where the device lacks them (EgBatchOps.available = 0) the caller records one dispatch per
 * sequence instead. */
#ifndef EGRET_OPS_BATCH_H
#define EGRET_OPS_BATCH_H

#include "runtime/ops.h"

/* One sequence of a step, as the shaders read it (8 words; EG_BATCH_ENTRY_WORDS). */
typedef struct EgBatchEntry {
    uint32_t k_addr[2], v_addr[2]; /* device addresses (low, high) of the key / value buffers */
    uint32_t k_off, v_off;         /* element offsets of key row 0 and value row 0 */
    uint32_t stride;               /* elements from one row to the next */
    uint32_t n_keys;               /* keys the sequence attends to; its new token's is last */
} EgBatchEntry;

/* Entries per dispatch of attention_slots.comp (its texel-view slots), and its pipelines: 1, 2,
 * 4 and 8 slots. */
#define EG_ATTN_SLOTS 8u
#define EG_ATTN_SLOT_VARIANTS 4

typedef struct EgBatchOps {
    int available;
    EgPipeline kv_append, attention;
    /* CPU devices: attention_slots.comp, which reads each entry's keys and values through the
     * texel views bound at its slot (up to 8 entries per dispatch) instead of by address; used
     * where use_slots is set (its default: where it was built). attention_slots[i] has 2^i
     * slots compiled in: a dispatch takes the fewest that hold its entries. */
    EgPipeline attention_slots[EG_ATTN_SLOT_VARIANTS];
    int use_slots;
} EgBatchOps;

int eg_batch_ops_init(EgBatchOps *b, const EgOps *ops, EgError *err);
void eg_batch_ops_destroy(EgBatchOps *b, const EgOps *ops);

void eg_batch_entry_set(EgBatchEntry *e, const EgBuffer *k, uint32_t k_off, const EgBuffer *v,
                        uint32_t v_off, uint32_t stride, uint32_t n_keys);

/* For each sequence b < batch (entries[entry0 + b] of the host-visible `entries` buffer), whose
 * new query, key and value are row b of qkv ([q | k | v], 3·heads·head_dim elements): rotates
 * the query (in place) and the key by RoPE at position n_keys − 1, and appends the key and the
 * value to the sequence's caches at that position. caches[] lists the key and value buffers
 * the entries address (2·batch), for barrier tracking. */
typedef struct EgKvAppend {
    const EgBuffer *qkv;
    const EgBuffer *table; /* RoPE cos/sin table (eg_rope_table) */
    uint32_t table_positions;
    const EgBuffer *entries;
    uint32_t entry0, batch, heads, head_dim;
    const EgBuffer *const *caches;
} EgKvAppend;
void eg_op_kv_append(EgCmd *cmd, const EgBatchOps *b, const EgKvAppend *a);

/* Attention of one query per sequence (q row b, output row b; rows of heads·head_dim) over
 * the keys and values its entry addresses (all n_keys of them; none: zeros). keys_values[2b]
 * and [2b + 1] are the key and value buffers entry b addresses (any valid buffer where it has
 * no keys): bound at its slot by attention_slots.comp, listed for barrier tracking. */
typedef struct EgBatchAttention {
    const EgBuffer *q, *o;
    uint32_t q_stride; /* elements from one sequence's query to the next; 0: heads·head_dim */
    const EgBuffer *entries;
    uint32_t entry0, batch, heads, head_dim;
    float scale;
    const EgBuffer *const *keys_values;
} EgBatchAttention;
void eg_op_batch_attention(EgCmd *cmd, const EgOps *ops, const EgBatchOps *b,
                           const EgBatchAttention *a);

#endif
