#include "engine/image_cache.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/device_tensor.h"

typedef struct Entry {
    EgImageKey key;
    EgArena arena; /* its own memory, so evicting one entry frees it */
    EgBuffer kv;
    size_t bytes; /* device memory its arena holds (entry_bytes, or a little more: alignment) */
    uint64_t last_used;
    int pinned;
    struct Entry *next;
} Entry;

typedef struct Pin {
    EgImageKey key;
    uint32_t count;
} Pin;

struct EgImageCache {
    EgFamilyModel *m;
    size_t max_bytes, entry_bytes;
    Entry *entries;
    Pin *pins;
    size_t n_pins, cap_pins;
    uint64_t clock;
    EgImageCacheStats stats;
};

void eg_image_key(const void *bytes, size_t len, uint32_t image_size, EgImageKey *out) {
    uint8_t size_le[4] = {(uint8_t)image_size, (uint8_t)(image_size >> 8),
                          (uint8_t)(image_size >> 16), (uint8_t)(image_size >> 24)};
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(ctx, size_le, sizeof size_le) || !EVP_DigestUpdate(ctx, bytes, len) ||
        !EVP_DigestFinal_ex(ctx, out->digest, &n))
        memset(out->digest, 0xff, sizeof out->digest); /* cannot happen with OpenSSL's SHA-256 */
    EVP_MD_CTX_free(ctx);
}

EgImageCache *eg_image_cache_new(EgFamilyModel *m, size_t max_bytes) {
    EgImageCache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->m = m;
    c->max_bytes = max_bytes;
    c->entry_bytes = m->info.image_cache_elems * (m->info.ops->f16 ? 2 : 4);
    return c;
}

/* The counters an entry is counted in: ordinary or pinned. */
static void count_entry(EgImageCache *c, const Entry *e, int sign) {
    atomic_ullong *entries = e->pinned ? &c->stats.pinned_entries : &c->stats.entries;
    atomic_ullong *bytes = e->pinned ? &c->stats.pinned_bytes : &c->stats.bytes;
    if (sign > 0) {
        atomic_fetch_add(entries, 1);
        atomic_fetch_add(bytes, e->bytes);
    } else {
        atomic_fetch_sub(entries, 1);
        atomic_fetch_sub(bytes, e->bytes);
    }
}

static void entry_free(EgImageCache *c, Entry *e) {
    eg_arena_reset(&e->arena);
    count_entry(c, e, -1);
    free(e);
}

void eg_image_cache_free(EgImageCache *c) {
    if (!c) return;
    while (c->entries) {
        Entry *e = c->entries;
        c->entries = e->next;
        entry_free(c, e);
    }
    free(c->pins);
    free(c);
}

const EgImageCacheStats *eg_image_cache_stats(const EgImageCache *c) { return &c->stats; }

static Entry **find(EgImageCache *c, const EgImageKey *key) {
    for (Entry **p = &c->entries; *p; p = &(*p)->next)
        if (memcmp((*p)->key.digest, key->digest, sizeof key->digest) == 0) return p;
    return NULL;
}

static Pin *find_pin(EgImageCache *c, const EgImageKey *key) {
    for (size_t i = 0; i < c->n_pins; i++)
        if (memcmp(c->pins[i].key.digest, key->digest, sizeof key->digest) == 0) return &c->pins[i];
    return NULL;
}

/* (A disabled cache holds pinned entries only, so no entry is looked up in vain.) */
const EgBuffer *eg_image_cache_lookup(EgImageCache *c, const EgImageKey *key) {
    Entry **p = find(c, key);
    if (!p) {
        atomic_fetch_add(&c->stats.misses, 1);
        return NULL;
    }
    atomic_fetch_add(&c->stats.hits, 1);
    (*p)->last_used = ++c->clock;
    return &(*p)->kv;
}

int eg_image_cache_contains(EgImageCache *c, const EgImageKey *key) {
    return find(c, key) != NULL;
}

/* Evicts the least recently used unpinned entry; 0 when there was none. */
static int evict_oldest(EgImageCache *c) {
    Entry **oldest = NULL;
    for (Entry **p = &c->entries; *p; p = &(*p)->next)
        if (!(*p)->pinned && (!oldest || (*p)->last_used < (*oldest)->last_used)) oldest = p;
    if (!oldest) return 0;
    Entry *e = *oldest;
    *oldest = e->next;
    entry_free(c, e);
    return 1;
}

const EgBuffer *eg_image_cache_reserve(EgImageCache *c, const EgImageKey *key) {
    int pinned = find_pin(c, key) != NULL;
    if (find(c, key)) return NULL;
    if (!pinned) {
        if (!c->max_bytes || c->entry_bytes > c->max_bytes) return NULL;
        while (atomic_load(&c->stats.bytes) + c->entry_bytes > c->max_bytes && evict_oldest(c)) {
        }
    }
    Entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->key = *key;
    e->pinned = pinned;
    e->last_used = ++c->clock;
    eg_arena_init(&e->arena, c->m->info.vk, EG_MEM_DEVICE, c->entry_bytes);
    EgError err;
    if (eg_tensor_buffer(c->m->info.ops, &e->arena, c->m->info.image_cache_elems, &e->kv, &err)) {
        eg_arena_reset(&e->arena);
        free(e);
        return NULL;
    }
    e->bytes = (size_t)eg_arena_block_bytes(&e->arena);
    e->next = c->entries;
    c->entries = e;
    count_entry(c, e, +1);
    return &e->kv;
}

void eg_image_cache_drop(EgImageCache *c, const EgImageKey *key) {
    Entry **p = find(c, key);
    if (!p) return;
    Entry *e = *p;
    *p = e->next;
    entry_free(c, e);
}

int eg_image_cache_pin(EgImageCache *c, const EgImageKey *key) {
    Pin *pin = find_pin(c, key);
    if (pin) {
        pin->count++;
        return 0;
    }
    if (c->n_pins == c->cap_pins) {
        size_t cap = c->cap_pins ? 2 * c->cap_pins : 16;
        Pin *grown = realloc(c->pins, cap * sizeof *grown);
        if (!grown) return -1;
        c->pins = grown;
        c->cap_pins = cap;
    }
    c->pins[c->n_pins++] = (Pin){*key, 1};
    Entry **p = find(c, key);
    if (p && !(*p)->pinned) {
        count_entry(c, *p, -1);
        (*p)->pinned = 1;
        count_entry(c, *p, +1);
    }
    return 0;
}

void eg_image_cache_unpin(EgImageCache *c, const EgImageKey *key) {
    Pin *pin = find_pin(c, key);
    if (!pin || --pin->count) return;
    *pin = c->pins[--c->n_pins];
    Entry **p = find(c, key);
    if (!p) return;
    /* an ordinary entry again, the most recently used: it goes when the cache needs room */
    count_entry(c, *p, -1);
    (*p)->pinned = 0;
    (*p)->last_used = ++c->clock;
    count_entry(c, *p, +1);
    while (atomic_load(&c->stats.bytes) > c->max_bytes && evict_oldest(c)) {
    }
}
