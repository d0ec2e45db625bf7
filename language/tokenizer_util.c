/* Small containers used by the tokenizer: two open-addressing hash maps
 * (token string -> id, merge pair -> rank). Load time of a 32k-vocab / 61k-merge file is dominated
 * by JSON parsing, so these stay simple: linear probing, load factor <= 1/2. */
#include "language/tokenizer_internal.h"
#include "runtime/hash.h"

#include <stdlib.h>
#include <string.h>

uint64_t eg_hash_bytes(const void *p, size_t n) {
    /* FNV-1a with a final avalanche so that linear probing on the low bits behaves */
    uint64_t h = eg_fnv1a(EG_FNV1A_INIT, p, n);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

int eg_strmap_init(EgStrMap *m, size_t n_keys) {
    size_t cap = pow2_at_least(n_keys * 2 + 1);
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots) return -1;
    memset(m->slots, 0xff, cap * sizeof *m->slots); /* all -1 */
    m->mask = cap - 1;
    return 0;
}

void eg_strmap_free(EgStrMap *m) {
    free(m->slots);
    m->slots = NULL;
}

void eg_strmap_put(EgStrMap *m, const EgTokenizer *tok, int32_t id) {
    const char *key = tok->tok_str[id];
    size_t len = tok->tok_len[id];
    size_t i = eg_hash_bytes(key, len) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t cur = m->slots[i];
        if (cur < 0 || (tok->tok_len[cur] == len && memcmp(tok->tok_str[cur], key, len) == 0)) {
            m->slots[i] = id;
            return;
        }
    }
}

int32_t eg_strmap_get(const EgStrMap *m, const EgTokenizer *tok, const char *key, size_t len) {
    if (!m->slots) return -1;
    size_t i = eg_hash_bytes(key, len) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t cur = m->slots[i];
        if (cur < 0) return -1;
        if (tok->tok_len[cur] == len && memcmp(tok->tok_str[cur], key, len) == 0) return cur;
    }
}

static size_t merge_slot(const EgMergeMap *m, uint64_t key) {
    return eg_hash_bytes(&key, sizeof key) & m->mask;
}

int eg_mergemap_init(EgMergeMap *m, size_t n) {
    size_t cap = pow2_at_least(n * 2 + 1);
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots) return -1;
    for (size_t i = 0; i < cap; i++)
        m->slots[i].key = UINT64_MAX;
    m->mask = cap - 1;
    return 0;
}

void eg_mergemap_free(EgMergeMap *m) {
    free(m->slots);
    m->slots = NULL;
}

void eg_mergemap_put(EgMergeMap *m, int32_t left, int32_t right, uint32_t rank, int32_t new_id) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = merge_slot(m, key);; i = (i + 1) & m->mask) {
        if (m->slots[i].key == UINT64_MAX || m->slots[i].key == key) {
            m->slots[i].key = key;
            m->slots[i].rank = rank;
            m->slots[i].new_id = new_id;
            return;
        }
    }
}

const EgMerge *eg_merge_find(const EgMergeMap *m, int32_t left, int32_t right) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = merge_slot(m, key);; i = (i + 1) & m->mask) {
        if (m->slots[i].key == key) return &m->slots[i];
        if (m->slots[i].key == UINT64_MAX) return NULL;
    }
}
