/* The cross-attention keys and values of recently seen images, by content.
 *
 * Few-shot serving sends the same example images again and again. An image's cross-attention
 * keys/values depend only on its bytes and the preprocessing (everything after it is fixed
 * weights), so they are kept on the device under a SHA-256 of the encoded bytes plus the image
 * size: a hit skips decoding, preprocessing, the ViT, the perceiver and the K/V projections.
 * A cryptographic hash, because the cache is shared between clients: a collision would hand one
 * client's request another's image.
 *
 * Bounded by bytes; the least recently used entries go first. Pinned keys (an example set's
 * images, engine/example_sets.h) are the exception: their entries are never evicted and are
 * counted apart (pinned_bytes, outside max_bytes: example sets have their own budget). Used by
 * one thread (the engine's); the counters may be read from any. */
#ifndef EGRET_IMAGE_CACHE_H
#define EGRET_IMAGE_CACHE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "families/family.h"

typedef struct EgImageKey {
    uint8_t digest[32];
} EgImageKey;

/* SHA-256 over the image size (4 bytes, little-endian) and the encoded bytes. */
void eg_image_key(const void *bytes, size_t len, uint32_t image_size, EgImageKey *out);

typedef struct EgImageCacheStats {
    atomic_ullong hits, misses, entries, bytes;
    atomic_ullong pinned_entries, pinned_bytes; /* not in entries and bytes */
} EgImageCacheStats;

typedef struct EgImageCache EgImageCache;

/* max_bytes 0 disables the cache (lookups miss, inserts do nothing). */
EgImageCache *eg_image_cache_new(EgFamilyModel *m, size_t max_bytes);
void eg_image_cache_free(EgImageCache *c);
const EgImageCacheStats *eg_image_cache_stats(const EgImageCache *c);

/* The cached buffer for key, or NULL. Counts a hit or a miss. */
const EgBuffer *eg_image_cache_lookup(EgImageCache *c, const EgImageKey *key);
/* Whether key is cached, counting nothing and touching nothing: a look ahead (may the image's
 * decoding be skipped?) before the lookup that uses the entry. */
int eg_image_cache_contains(EgImageCache *c, const EgImageKey *key);
/* A new buffer for key, to be filled by the caller (evicting older entries to make room), or
 * NULL when the cache is disabled, the entry is larger than the whole cache, or allocation
 * fails (caching is then skipped, not an error). */
const EgBuffer *eg_image_cache_reserve(EgImageCache *c, const EgImageKey *key);
/* Drops a reserved entry that could not be filled. */
void eg_image_cache_drop(EgImageCache *c, const EgImageKey *key);

/* Pins key (counted: each pin wants one unpin), whether or not its entry exists yet: the entry,
 * now or once reserved, is kept until the last unpin, even when the cache is disabled; it then
 * becomes an ordinary entry. -1 when out of host memory. */
int eg_image_cache_pin(EgImageCache *c, const EgImageKey *key);
void eg_image_cache_unpin(EgImageCache *c, const EgImageKey *key);

#endif
