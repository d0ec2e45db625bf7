/* Example sets: few-shot pairs registered once under a content id (engine/engine.h).
 *
 * The registry (a list under a mutex: sets are few, and lookups are once per request) holds
 * copies of the pairs. What makes a set fast lives in the two caches that already serve
 * repeated prompts, pinned: its images' cross-attention keys/values in the image cache and its
 * prompt prefix in the prefix cache. Those caches belong to the engine's thread, so pins are
 * made and released there: images when a request first names the set, the prefix when that
 * request ends; a set deleted from another thread is freed by its last holder, or by
 * eg_engine_tidy when nothing holds it.
 *
 * The budget is charged when a set is created, for what it will hold once kept: its pairs, one
 * image cache entry per pair and a KV cache of its prefix. */
#include "engine/example_sets.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "engine/engine_internal.h"

struct EgExampleSet {
    char id[EG_EXAMPLE_SET_ID_LEN + 1];
    char template_name[16];
    EgRequestExample *pairs; /* each pair's image then text (NUL-terminated) in one block */
    size_t n;
    EgImageKey *keys; /* the image cache's key of each pair's image */
    uint32_t prefix_tokens;
    int32_t *prefix_ids; /* the prefix's token ids: a request's prompt must start with them */
    uint64_t charge;     /* bytes against the budget */
    double created_unix_s;
    atomic_ullong uses, hits, last_used_us;
    atomic_int ready;
    int refs; /* under the registry's lock: 1 while registered, + 1 per request holding it */
    /* the engine's thread only */
    int attached; /* images pinned */
    EgPrefixPin *prefix;
    EgExampleSet *next;
};

struct EgExampleSets {
    pthread_mutex_t mu;
    EgExampleSet *head; /* registered, newest last */
    EgExampleSet *dead; /* deleted and held by no request: their pins await the engine's thread */
    uint64_t count, bytes, max_bytes, max_sets;
    uint8_t model_id[32];
};

static double unix_now_s(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

static int sha256_init(EVP_MD_CTX **ctx) {
    *ctx = EVP_MD_CTX_new();
    return *ctx && EVP_DigestInit_ex(*ctx, EVP_sha256(), NULL) ? 0 : -1;
}

static void sha256_u64(EVP_MD_CTX *ctx, uint64_t v) {
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    EVP_DigestUpdate(ctx, le, sizeof le);
}

/* Length-prefixed, so that no two different inputs hash the same bytes. */
static void sha256_field(EVP_MD_CTX *ctx, const void *data, size_t len) {
    sha256_u64(ctx, len);
    if (len) EVP_DigestUpdate(ctx, data, len);
}

static int sha256_final(EVP_MD_CTX *ctx, uint8_t out[32]) {
    unsigned n = 0;
    int ok = EVP_DigestFinal_ex(ctx, out, &n);
    EVP_MD_CTX_free(ctx);
    return ok && n == 32 ? 0 : -1;
}

static void to_hex(const uint8_t *d, size_t n, char *out) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * n] = 0;
}

EgExampleSets *eg_example_sets_new(const char *model_dir, const EgTemplate *tmpl,
                                   uint64_t max_bytes, uint64_t max_sets, EgError *err) {
    EgExampleSets *r = calloc(1, sizeof *r);
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    FILE *f = fopen(path, "rb");
    char *tjson = eg_template_to_json(tmpl);
    EVP_MD_CTX *ctx = NULL;
    int rc = !r || !f || !tjson || sha256_init(&ctx) ? -1 : 0;
    if (rc == 0) {
        /* the model's identity: its configuration and prompt template (weights would take
         * minutes to hash; a set names pairs, and any replica of the same model agrees) */
        EVP_DigestUpdate(ctx, "egret model v1", 15);
        char buf[8192];
        size_t got;
        while ((got = fread(buf, 1, sizeof buf, f)) > 0)
            EVP_DigestUpdate(ctx, buf, got);
        sha256_field(ctx, tjson, strlen(tjson));
        rc = ferror(f) ? -1 : 0;
    }
    uint8_t id[32];
    if (ctx && sha256_final(ctx, id)) rc = -1;
    if (rc == 0) memcpy(r->model_id, id, sizeof id);
    if (f) fclose(f);
    free(tjson);
    if (rc) {
        eg_fail(err, "example sets: cannot read %s for the model's identity", path);
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    r->max_bytes = max_bytes;
    r->max_sets = max_sets;
    return r;
}

static void set_free(EgExampleSet *s, EgImageCache *ic, EgPrefixCache *pc) {
    if (s->attached)
        for (size_t i = 0; i < s->n; i++)
            eg_image_cache_unpin(ic, &s->keys[i]);
    eg_prefix_cache_unpin(pc, s->prefix);
    eg_example_pairs_free(s->pairs, s->n);
    free(s->keys);
    free(s->prefix_ids);
    free(s);
}

void eg_example_sets_free(EgExampleSets *r, EgImageCache *ic, EgPrefixCache *pc) {
    if (!r) return;
    eg_example_sets_tidy(r, ic, pc);
    while (r->head) {
        EgExampleSet *s = r->head;
        r->head = s->next;
        set_free(s, ic, pc);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void eg_example_sets_counts(EgExampleSets *r, uint64_t *count, uint64_t *bytes, uint64_t *max_bytes,
                            uint64_t *max_sets) {
    pthread_mutex_lock(&r->mu);
    *count = r->count;
    *bytes = r->bytes;
    *max_bytes = r->max_bytes;
    *max_sets = r->max_sets;
    pthread_mutex_unlock(&r->mu);
}

void eg_example_pairs_free(EgRequestExample *pairs, size_t n) {
    if (!pairs) return;
    for (size_t i = 0; i < n; i++)
        free((void *)pairs[i].image);
    free(pairs);
}

/* Copies of the pairs, each image and its text in one block. */
static EgRequestExample *pairs_copy(const EgRequestExample *src, size_t n) {
    EgRequestExample *p = calloc(n + 1, sizeof *p);
    for (size_t i = 0; p && i < n; i++) {
        uint8_t *block = malloc(src[i].image_len + src[i].text_len + 1);
        if (!block) {
            eg_example_pairs_free(p, i);
            return NULL;
        }
        memcpy(block, src[i].image, src[i].image_len);
        if (src[i].text_len) memcpy(block + src[i].image_len, src[i].text, src[i].text_len);
        block[src[i].image_len + src[i].text_len] = 0;
        p[i] = (EgRequestExample){block, src[i].image_len, (char *)block + src[i].image_len,
                                  src[i].text_len};
    }
    return p;
}

static void info_of(const EgExampleSet *s, EgExampleSetInfo *out) {
    *out = (EgExampleSetInfo){.n_pairs = (uint32_t)s->n,
                              .prefix_tokens = s->prefix_tokens,
                              .bytes = s->charge,
                              .ready = atomic_load(&s->ready),
                              .uses = atomic_load(&s->uses),
                              .hits = atomic_load(&s->hits),
                              .created_unix_s = s->created_unix_s,
                              .last_used_unix_s = atomic_load(&s->last_used_us) * 1e-6};
    memcpy(out->id, s->id, sizeof out->id);
    memcpy(out->template_name, s->template_name, sizeof out->template_name);
}

static EgExampleSet *find_locked(EgExampleSets *r, const char *id) {
    for (EgExampleSet *s = r->head; s; s = s->next)
        if (strcmp(s->id, id) == 0) return s;
    return NULL;
}

/* The checks a request with these pairs as inline examples gets, and the number of prompt
 * tokens before the query (the prefix a set keeps). Any thread: the tokenizer, template and
 * limits are only read. */
static EgStatus check_pairs(EgEngine *e, const EgRequestExample *pairs, size_t n,
                            uint32_t *prefix_tokens, int32_t **prefix_ids, EgError *err) {
    if (n == 0) return INVALID(err, "the example set is empty: give at least one pair");
    if (n + 1 > e->limits.max_images) {
        eg_fail(err,
                "the set has %zu pairs: with the query image a request would hold %zu images; the "
                "limit is %u (max_images)",
                n, n + 1, e->limits.max_images);
        return EG_STATUS_RESOURCE_EXHAUSTED;
    }
    /* the query: the first pair's image stands in for it (its tokens are not the prefix's) */
    EgRequestPart query = {.is_image = 1, .image = pairs[0].image, .image_len = pairs[0].image_len};
    EgRequest req = {.parts = &query, .n_parts = 1, .examples = pairs, .n_examples = n};
    Assembled a = {0};
    EgPrompt prompt = {0};
    EgStatus st = eg_engine_assemble(e, &req, &a, err);
    if (st == EG_STATUS_OK) st = eg_engine_check_images(e, &a, err);
    if (st == EG_STATUS_OK) {
        if (eg_family_prompt(e->model, e->tok, a.list.parts, a.list.n, &prompt, err))
            st = EG_STATUS_INVALID_ARGUMENT;
    }
    if (st == EG_STATUS_OK) {
        size_t t = 0;
        while (t < prompt.n_tokens && prompt.image_index[t] != (int32_t)n)
            t++;
        *prefix_tokens = (uint32_t)t;
        *prefix_ids = malloc((t + 1) * sizeof **prefix_ids);
        if (!*prefix_ids)
            st = NO_MEMORY(err);
        else
            memcpy(*prefix_ids, prompt.ids, t * sizeof **prefix_ids);
        if (st == EG_STATUS_OK && prompt.n_tokens + 1 > e->limits.context_length) {
            eg_fail(err,
                    "the set's prompt takes %zu tokens with a query image; the context length is "
                    "%u",
                    prompt.n_tokens, e->limits.context_length);
            st = EG_STATUS_RESOURCE_EXHAUSTED;
        }
    }
    eg_prompt_free(&prompt);
    eg_part_list_free(&a.list);
    free(a.images);
    free(a.image_lens);
    return st;
}

static int set_id(const EgExampleSets *r, const char *template_name, const EgRequestExample *pairs,
                  size_t n, char *id) {
    EVP_MD_CTX *ctx;
    if (sha256_init(&ctx)) {
        EVP_MD_CTX_free(ctx);
        return -1;
    }
    EVP_DigestUpdate(ctx, "egret example set v1", 21);
    EVP_DigestUpdate(ctx, r->model_id, sizeof r->model_id);
    sha256_field(ctx, template_name, strlen(template_name));
    sha256_u64(ctx, n);
    for (size_t i = 0; i < n; i++) {
        sha256_field(ctx, pairs[i].image, pairs[i].image_len);
        sha256_field(ctx, pairs[i].text, pairs[i].text_len);
    }
    uint8_t d[32];
    if (sha256_final(ctx, d)) return -1;
    to_hex(d, sizeof d, id);
    return 0;
}

EgStatus eg_engine_example_set_create(EgEngine *e, const EgRequestExample *pairs, size_t n,
                                      const char *template_name, const char *expect_id,
                                      EgExampleSetInfo *info, int *created, EgError *err) {
    EgExampleSets *r = e->example_sets;
    *created = 0;
    if (!template_name || !template_name[0]) template_name = "model";
    if (strcmp(template_name, "model") != 0)
        return INVALID(err,
                       "unknown template \"%.32s\": the model's own (\"model\") is the only one",
                       template_name);
    uint32_t prefix_tokens = 0;
    int32_t *prefix_ids = NULL;
    EgStatus st = check_pairs(e, pairs, n, &prefix_tokens, &prefix_ids, err);
    char id[EG_EXAMPLE_SET_ID_LEN + 1];
    if (st == EG_STATUS_OK && set_id(r, template_name, pairs, n, id)) st = NO_MEMORY(err);
    if (st == EG_STATUS_OK && expect_id && strcmp(expect_id, id) != 0)
        st = INVALID(err,
                     "the pairs make the id %s, not %.64s: made for another model or "
                     "template",
                     id, expect_id);
    if (st != EG_STATUS_OK) {
        free(prefix_ids);
        return st;
    }
    /* what the set will hold: the pairs, one image entry each, its prefix's KV cache */
    uint64_t charge = sizeof(EgExampleSet) + n * (sizeof(EgRequestExample) + sizeof(EgImageKey));
    for (size_t i = 0; i < n; i++)
        charge += pairs[i].image_len + pairs[i].text_len + 1;
    charge += n * (uint64_t)e->model->info.image_cache_elems * (e->model->info.ops->f16 ? 2 : 4);
    charge += eg_fseq_kv_bytes(e->model, prefix_tokens) + prefix_tokens * sizeof(int32_t);

    /* Made whole before the lock (copying and hashing megabytes of images there would stall
     * the engine's lookups); a client that loses a race to create the same set throws its
     * copy away, so the set is stored once. */
    EgExampleSet *made = calloc(1, sizeof *made);
    if (made) made->pairs = pairs_copy(pairs, n);
    if (made) made->keys = calloc(n, sizeof *made->keys);
    if (!made || !made->pairs || !made->keys) {
        if (made) eg_example_pairs_free(made->pairs, n);
        if (made) free(made->keys);
        free(made);
        free(prefix_ids);
        return NO_MEMORY(err);
    }
    memcpy(made->id, id, sizeof made->id);
    snprintf(made->template_name, sizeof made->template_name, "%s", template_name);
    made->n = n;
    for (size_t i = 0; i < n; i++)
        eg_image_key(pairs[i].image, pairs[i].image_len, e->model->info.image_size,
                     &made->keys[i]);
    made->prefix_tokens = prefix_tokens;
    made->prefix_ids = prefix_ids;
    made->charge = charge;
    made->created_unix_s = unix_now_s();
    made->refs = 1;

    pthread_mutex_lock(&r->mu);
    EgExampleSet *s = find_locked(r, id);
    if (s) {
        info_of(s, info);
    } else if (r->count >= r->max_sets) {
        eg_fail_kind(err, EG_ERROR_LIMIT,
                     "%llu example sets are held; the limit is %llu (max_example_sets): delete "
                     "one first",
                     (unsigned long long)r->count, (unsigned long long)r->max_sets);
        st = EG_STATUS_RESOURCE_EXHAUSTED;
    } else if (charge > r->max_bytes || r->bytes > r->max_bytes - charge) {
        eg_fail_kind(err, EG_ERROR_LIMIT,
                     "this set needs %llu bytes and the %llu sets held take %llu: over the "
                     "example set budget of %llu bytes (example_sets_mb)",
                     (unsigned long long)charge, (unsigned long long)r->count,
                     (unsigned long long)r->bytes, (unsigned long long)r->max_bytes);
        st = EG_STATUS_RESOURCE_EXHAUSTED;
    } else {
        EgExampleSet **tail = &r->head;
        while (*tail)
            tail = &(*tail)->next;
        *tail = made;
        r->count++;
        r->bytes += charge;
        *created = 1;
        info_of(made, info);
        made = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    if (made) set_free(made, NULL, NULL); /* never attached: nothing pinned */
    return st;
}

EgStatus eg_engine_example_set_get(EgEngine *e, const char *id, EgExampleSetInfo *info,
                                   EgRequestExample **pairs, size_t *n_pairs, EgError *err) {
    EgExampleSets *r = e->example_sets;
    EgStatus st = EG_STATUS_OK;
    pthread_mutex_lock(&r->mu);
    EgExampleSet *s = find_locked(r, id);
    if (!s) {
        eg_fail(err, "example set %.64s is not held here", id);
        st = EG_STATUS_NOT_FOUND;
    } else {
        info_of(s, info);
        if (pairs) {
            *pairs = pairs_copy(s->pairs, s->n);
            *n_pairs = s->n;
            if (!*pairs) st = NO_MEMORY(err);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return st;
}

int eg_engine_example_sets_list(EgEngine *e, EgExampleSetInfo **out, size_t *n, EgError *err) {
    EgExampleSets *r = e->example_sets;
    pthread_mutex_lock(&r->mu);
    *out = calloc(r->count + 1, sizeof **out);
    *n = 0;
    for (EgExampleSet *s = r->head; *out && s; s = s->next)
        info_of(s, &(*out)[(*n)++]);
    pthread_mutex_unlock(&r->mu);
    return *out ? 0 : eg_fail(err, "out of host memory");
}

EgStatus eg_engine_example_set_delete(EgEngine *e, const char *id, EgError *err) {
    EgExampleSets *r = e->example_sets;
    pthread_mutex_lock(&r->mu);
    EgExampleSet **p = &r->head;
    while (*p && strcmp((*p)->id, id) != 0)
        p = &(*p)->next;
    EgExampleSet *s = *p;
    if (s) {
        *p = s->next;
        r->count--;
        r->bytes -= s->charge;
        if (--s->refs == 0) { /* no request holds it: the engine's thread frees its pins */
            s->next = r->dead;
            r->dead = s;
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (!s) {
        eg_fail(err, "example set %.64s is not held here", id);
        return EG_STATUS_NOT_FOUND;
    }
    return EG_STATUS_OK;
}

EgExampleSet *eg_example_set_acquire(EgExampleSets *r, const char *id) {
    pthread_mutex_lock(&r->mu);
    EgExampleSet *s = find_locked(r, id);
    if (s) s->refs++;
    pthread_mutex_unlock(&r->mu);
    return s;
}

void eg_example_set_release(EgExampleSets *r, EgExampleSet *s, EgImageCache *ic,
                            EgPrefixCache *pc) {
    if (!s) return;
    pthread_mutex_lock(&r->mu);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) set_free(s, ic, pc); /* deleted while this request used it */
}

const EgRequestExample *eg_example_set_pairs(const EgExampleSet *s, size_t *n) {
    *n = s->n;
    return s->pairs;
}

int eg_example_set_attach(EgExampleSet *s, EgImageCache *ic) {
    if (s->attached) return 0;
    for (size_t i = 0; i < s->n; i++)
        if (eg_image_cache_pin(ic, &s->keys[i])) {
            while (i--)
                eg_image_cache_unpin(ic, &s->keys[i]);
            return -1;
        }
    s->attached = 1;
    return 0;
}

void eg_example_set_note_start(EgExampleSet *s, int warmup, uint32_t n_shared, int images_cached) {
    if (warmup) return;
    atomic_fetch_add(&s->uses, 1);
    atomic_store(&s->last_used_us, (unsigned long long)(unix_now_s() * 1e6));
    if (images_cached && n_shared >= s->prefix_tokens) atomic_fetch_add(&s->hits, 1);
}

void eg_example_set_keep_prefix(EgExampleSet *s, EgPrefixCache *pc, const EgFamilySeq *seq,
                                const int32_t *ids, const EgImageKey *const *image_keys) {
    /* the request's prompt must start with the set's own prefix: a template may put query text
     * before the query image, and that text is no part of the set */
    if (s->prefix || eg_fseq_n_past(seq) < s->prefix_tokens ||
        memcmp(ids, s->prefix_ids, s->prefix_tokens * sizeof *ids) != 0)
        return;
    size_t bytes = 0;
    EgError err;
    /* on failure (out of device memory) the set stays unready: a later request tries again */
    s->prefix = eg_prefix_cache_pin(pc, seq, s->prefix_tokens, ids, image_keys, &bytes, &err);
    if (s->prefix) atomic_store(&s->ready, 1);
}

void eg_example_sets_tidy(EgExampleSets *r, EgImageCache *ic, EgPrefixCache *pc) {
    pthread_mutex_lock(&r->mu);
    EgExampleSet *dead = r->dead;
    r->dead = NULL;
    pthread_mutex_unlock(&r->mu);
    while (dead) {
        EgExampleSet *next = dead->next;
        set_free(dead, ic, pc);
        dead = next;
    }
}
