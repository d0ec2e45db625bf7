#include "runtime/ops_batch.h"

#include <string.h>

typedef struct {
    uint32_t batch, heads, head_dim, sin_off, entry0;
} KvAppendPush;

int eg_batch_ops_init(EgBatchOps *b, const EgOps *ops, EgError *err) {
    memset(b, 0, sizeof *b);
    if (!ops->vk->has_device_address) return 0;
    if (eg_pipeline_create(ops->vk, "kv_append", ops->f16, 4, 1u << 0, sizeof(KvAppendPush),
                           &b->kv_append, err))
        return -1;
    b->available = 1;
    return 0;
}

void eg_batch_ops_destroy(EgBatchOps *b, const EgOps *ops) {
    eg_pipeline_destroy(ops->vk, &b->kv_append);
    b->available = 0;
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
    const EgBuffer *bufs[4] = {a->q, a->kv, a->table, a->entries};
    uint32_t n = a->batch * a->heads * (a->head_dim / 2);
    eg_cmd_dispatch_addressed(cmd, &b->kv_append, bufs, &push, eg_groups(n, 64), 1, 1, NULL, 0,
                              a->caches, 2 * (int)a->batch);
}
