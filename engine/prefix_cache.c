#include "engine/prefix_cache.h"

#include <stdlib.h>
#include <string.h>

typedef struct Kept {
    EgFamilySeq *seq;
    int32_t *ids;
    EgImageKey *keys; /* per token; has_key says whether the token attends to an image */
    uint8_t *has_key;
    uint32_t n;
    size_t bytes;
    uint64_t last_used;
    struct Kept *next, *prev; /* prev: pinned entries only (unpinned from anywhere in the list) */
} Kept;

struct EgPrefixPin {
    Kept k;
};

struct EgPrefixCache {
    size_t max_entries, max_bytes;
    Kept *kept;
    Kept *pinned;
    uint64_t clock;
    EgPrefixCacheStats stats;
};

EgPrefixCache *eg_prefix_cache_new(size_t max_entries, size_t max_bytes) {
    EgPrefixCache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    return c;
}

static void kept_free(EgPrefixCache *c, Kept *k) {
    atomic_fetch_sub(&c->stats.entries, 1);
    atomic_fetch_sub(&c->stats.bytes, k->bytes);
    eg_fseq_free(k->seq);
    free(k->ids);
    free(k->keys);
    free(k->has_key);
    free(k);
}

void eg_prefix_cache_free(EgPrefixCache *c) {
    if (!c) return;
    while (c->kept) {
        Kept *k = c->kept;
        c->kept = k->next;
        kept_free(c, k);
    }
    while (c->pinned)
        eg_prefix_cache_unpin(c, (EgPrefixPin *)(void *)c->pinned);
    free(c);
}

const EgPrefixCacheStats *eg_prefix_cache_stats(const EgPrefixCache *c) { return &c->stats; }

static uint32_t shared_prefix(const Kept *k, const int32_t *ids,
                              const EgImageKey *const *image_keys, uint32_t n) {
    uint32_t i = 0, limit = n < k->n ? n : k->n;
    for (; i < limit; i++) {
        if (k->ids[i] != ids[i]) break;
        int has = image_keys[i] != NULL;
        if (has != k->has_key[i]) break;
        if (has && memcmp(k->keys[i].digest, image_keys[i]->digest, sizeof k->keys[i].digest))
            break;
    }
    return i;
}

EgFamilySeq *eg_prefix_cache_take(EgPrefixCache *c, const int32_t *ids,
                                 const EgImageKey *const *image_keys, uint32_t n, uint32_t capacity,
                                 uint32_t min_shared, uint32_t *n_shared) {
    *n_shared = 0;
    Kept **best = NULL;
    uint32_t best_n = min_shared ? min_shared - 1 : 0;
    for (Kept **p = &c->kept; *p; p = &(*p)->next) {
        if (eg_fseq_capacity((*p)->seq) < capacity) continue;
        uint32_t shared = shared_prefix(*p, ids, image_keys, n);
        if (shared > best_n) {
            best = p;
            best_n = shared;
        }
    }
    /* a pinned entry only when it shares more: taking a kept sequence costs no copy */
    const Kept *pinned = NULL;
    for (const Kept *k = c->pinned; k; k = k->next) {
        uint32_t shared = shared_prefix(k, ids, image_keys, n);
        if (shared > best_n && shared <= capacity) {
            pinned = k;
            best_n = shared;
        }
    }
    if (pinned) {
        EgError err;
        EgFamilySeq *copy = eg_fseq_copy_prefix(pinned->seq, best_n, capacity, &err);
        if (copy) {
            atomic_fetch_add(&c->stats.hits, 1);
            atomic_fetch_add(&c->stats.tokens_reused, best_n);
            *n_shared = best_n;
            return copy;
        }
        best = NULL; /* out of memory for the copy: computed afresh */
    }
    if (!best) {
        atomic_fetch_add(&c->stats.misses, 1);
        return NULL;
    }
    Kept *k = *best;
    *best = k->next;
    EgFamilySeq *seq = k->seq;
    k->seq = NULL;
    atomic_fetch_add(&c->stats.hits, 1);
    atomic_fetch_add(&c->stats.tokens_reused, best_n);
    atomic_fetch_sub(&c->stats.entries, 1);
    atomic_fetch_sub(&c->stats.bytes, k->bytes);
    free(k->ids);
    free(k->keys);
    free(k->has_key);
    free(k);
    *n_shared = best_n;
    return seq;
}

static size_t sequence_bytes(const EgFamilySeq *s) {
    return (size_t)eg_fseq_device_bytes(s);
}

void eg_prefix_cache_put(EgPrefixCache *c, EgFamilySeq *seq, const int32_t *ids,
                         const EgImageKey *const *image_keys) {
    size_t bytes = sequence_bytes(seq);
    if (!c->max_entries || bytes > c->max_bytes || eg_fseq_n_past(seq) == 0) {
        eg_fseq_free(seq);
        return;
    }
    Kept *k = calloc(1, sizeof *k);
    uint32_t n = eg_fseq_n_past(seq);
    if (k) {
        k->ids = malloc(n * sizeof *k->ids);
        k->keys = calloc(n, sizeof *k->keys);
        k->has_key = calloc(n, 1);
    }
    if (!k || !k->ids || !k->keys || !k->has_key) {
        if (k) {
            free(k->ids);
            free(k->keys);
            free(k->has_key);
        }
        free(k);
        eg_fseq_free(seq);
        return;
    }
    memcpy(k->ids, ids, n * sizeof *ids);
    for (uint32_t i = 0; i < n; i++)
        if (image_keys[i]) {
            k->keys[i] = *image_keys[i];
            k->has_key[i] = 1;
        }
    k->seq = seq;
    k->n = n;
    k->bytes = bytes;
    k->last_used = ++c->clock;
    /* make room: the least recently kept go first */
    for (;;) {
        size_t count = 0, total = bytes;
        Kept **oldest = NULL;
        for (Kept **p = &c->kept; *p; p = &(*p)->next) {
            count++;
            total += (*p)->bytes;
            if (!oldest || (*p)->last_used < (*oldest)->last_used) oldest = p;
        }
        if (!oldest || (count < c->max_entries && total <= c->max_bytes)) break;
        Kept *old = *oldest;
        *oldest = old->next;
        kept_free(c, old);
    }
    k->next = c->kept;
    c->kept = k;
    atomic_fetch_add(&c->stats.entries, 1);
    atomic_fetch_add(&c->stats.bytes, bytes);
}

EgPrefixPin *eg_prefix_cache_pin(EgPrefixCache *c, const EgFamilySeq *src, uint32_t n,
                                 const int32_t *ids, const EgImageKey *const *image_keys,
                                 size_t *bytes, EgError *err) {
    EgPrefixPin *pin = calloc(1, sizeof *pin);
    Kept *k = pin ? &pin->k : NULL;
    if (k) {
        k->ids = malloc((n + 1) * sizeof *k->ids);
        k->keys = calloc(n + 1, sizeof *k->keys);
        k->has_key = calloc(n + 1, 1);
    }
    if (!k || !k->ids || !k->keys || !k->has_key) {
        eg_fail(err, "out of host memory");
        goto fail;
    }
    k->seq = eg_fseq_copy_prefix(src, n, n, err);
    if (!k->seq) goto fail;
    memcpy(k->ids, ids, n * sizeof *ids);
    for (uint32_t i = 0; i < n; i++)
        if (image_keys[i]) {
            k->keys[i] = *image_keys[i];
            k->has_key[i] = 1;
        }
    k->n = n;
    k->bytes = sequence_bytes(k->seq);
    k->next = c->pinned;
    if (c->pinned) c->pinned->prev = k;
    c->pinned = k;
    atomic_fetch_add(&c->stats.pinned_entries, 1);
    atomic_fetch_add(&c->stats.pinned_bytes, k->bytes);
    *bytes = k->bytes;
    return pin;
fail:
    if (k) {
        free(k->ids);
        free(k->keys);
        free(k->has_key);
    }
    free(pin);
    return NULL;
}

void eg_prefix_cache_unpin(EgPrefixCache *c, EgPrefixPin *pin) {
    if (!pin) return;
    Kept *k = &pin->k;
    if (k->prev)
        k->prev->next = k->next;
    else
        c->pinned = k->next;
    if (k->next) k->next->prev = k->prev;
    atomic_fetch_sub(&c->stats.pinned_entries, 1);
    atomic_fetch_sub(&c->stats.pinned_bytes, k->bytes);
    eg_fseq_free(k->seq);
    free(k->ids);
    free(k->keys);
    free(k->has_key);
    free(pin);
}
