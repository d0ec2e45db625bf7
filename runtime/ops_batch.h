/* Batched decode over sequences that each own their KV cache: one dispatch for the whole batch
 * reaches every sequence's cache through a batch table of device addresses (EgBatchEntry, read
 * by shaders/batch_table.glsl). Needs bufferDeviceAddress; where the device lacks it
 * (EgBatchOps.available = 0) the caller records one dispatch per sequence instead. */
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
    EgPipeline kv_append;
} EgBatchOps;

int eg_batch_ops_init(EgBatchOps *b, const EgOps *ops, EgError *err);
void eg_batch_ops_destroy(EgBatchOps *b, const EgOps *ops);

void eg_batch_entry_set(EgBatchEntry *e, const EgBuffer *k, uint32_t k_off, const EgBuffer *v,
                        uint32_t v_off, uint32_t stride, uint32_t n_keys);

/* For each sequence b < batch (entries[entry0 + b] of the host-visible `entries` buffer):
 * rotates q row b and key row b of kv by RoPE at position n_keys − 1, and appends key row b
 * and value row b (kv rows batch + b) to the sequence's caches at that position. caches[] lists
 * the key and value buffers the entries address (2·batch), for barrier tracking. */
typedef struct EgKvAppend {
    const EgBuffer *q, *kv;
    const EgBuffer *table; /* RoPE cos/sin table (eg_rope_table) */
    uint32_t table_positions;
    const EgBuffer *entries;
    uint32_t entry0, batch, heads, head_dim;
    const EgBuffer *const *caches;
} EgKvAppend;
void eg_op_kv_append(EgCmd *cmd, const EgBatchOps *b, const EgKvAppend *a);

#endif
