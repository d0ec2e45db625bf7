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

typedef struct EgBatchOps {
    int available;
    EgPipeline kv_append, attention;
    /* Batches of up to this many sequences attend with one eg_op_attention per sequence over
     * its bound buffers instead of one dispatch through the table (runtime/ops_batch.c). */
    uint32_t bound_attention_max;
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
 * the keys and values its entry addresses (all n_keys of them; none: zeros). keys_values[]
 * lists the buffers the entries address, for barrier tracking. */
typedef struct EgBatchAttention {
    const EgBuffer *q, *o;
    uint32_t q_stride; /* elements from one sequence's query to the next; 0: heads·head_dim */
    const EgBuffer *entries;
    uint32_t entry0, batch, heads, head_dim;
    float scale;
    const EgBuffer *const *keys_values;
    int n_keys_values;
} EgBatchAttention;
void eg_op_batch_attention(EgCmd *cmd, const EgOps *ops, const EgBatchOps *b,
                           const EgBatchAttention *a);

#endif
