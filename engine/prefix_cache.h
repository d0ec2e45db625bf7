/* Sequences kept after their request, so a later prompt that starts the same way (the same
 * few-shot examples in front of a new query) reuses their KV cache instead of recomputing it.
 *
 * A kept sequence remembers, for every token in its KV cache, the token id and the image that
 * token attended to (by content key, engine/image_cache.h). A token's keys and values depend
 * only on the tokens before it, its position, and the image it attends to, so two prompts agreeing
 * on those for their first n tokens share the first n entries exactly.
 *
 * Bounded by entry count and device bytes; the least recently used go first. Pinned entries (an
 * example set's prefix, engine/example_sets.h) are kept apart: outside those bounds (example
 * sets have their own budget), never evicted, and lent as a copy so they stay. One thread (the
 * engine's); the counters may be read from any. */
#ifndef EGRET_PREFIX_CACHE_H
#define EGRET_PREFIX_CACHE_H

#include <stdatomic.h>

#include "engine/image_cache.h"
#include "families/family.h"

typedef struct EgPrefixCacheStats {
    atomic_ullong hits, misses, tokens_reused, entries, bytes;
    atomic_ullong pinned_entries, pinned_bytes; /* not in entries and bytes */
} EgPrefixCacheStats;

typedef struct EgPrefixCache EgPrefixCache;
typedef struct EgPrefixPin EgPrefixPin;

/* max_entries 0 disables the cache. */
EgPrefixCache *eg_prefix_cache_new(size_t max_entries, size_t max_bytes);
void eg_prefix_cache_free(EgPrefixCache *c);
const EgPrefixCacheStats *eg_prefix_cache_stats(const EgPrefixCache *c);

/* Takes out the kept sequence sharing the longest prefix with the prompt (ids[i], and the key of
 * the image token i attends to, or NULL for none) among those whose capacity is at least
 * `capacity`; *n_shared gets the length of that prefix. NULL (a miss) when none shares at least
 * min_shared tokens. A pinned entry that shares the most is not taken out: the caller gets a
 * new sequence of `capacity` holding a copy of the shared tokens. */
EgFamilySeq *eg_prefix_cache_take(EgPrefixCache *c, const int32_t *ids,
                                 const EgImageKey *const *image_keys, uint32_t n, uint32_t capacity,
                                 uint32_t min_shared, uint32_t *n_shared);

/* Keeps seq (the cache owns it from now on, and frees it when it cannot keep it) with the ids
 * and image keys of the first eg_fseq_n_past(seq) tokens of its KV cache. */
void eg_prefix_cache_put(EgPrefixCache *c, EgFamilySeq *seq, const int32_t *ids,
                         const EgImageKey *const *image_keys);

/* Pins a copy of src's first n tokens (ids and image keys as for put) until unpinned; the
 * bytes it holds in *bytes. NULL with err on failure (out of device memory:
 * EG_ERROR_DEVICE_MEMORY). */
EgPrefixPin *eg_prefix_cache_pin(EgPrefixCache *c, const EgFamilySeq *src, uint32_t n,
                                 const int32_t *ids, const EgImageKey *const *image_keys,
                                 size_t *bytes, EgError *err);
void eg_prefix_cache_unpin(EgPrefixCache *c, EgPrefixPin *pin);

#endif
