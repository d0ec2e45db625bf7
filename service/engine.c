#include "service/engine.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "language/prompt.h"
#include "language/utf8.h"
#include "vision/preprocess.h"

EgEngine *eg_engine_open(const char *model_dir, const EgEngineOptions *opt, EgError *err) {
    EgEngineOptions none = {0};
    if (!opt) opt = &none;
    EgEngine *e = calloc(1, sizeof *e);
    if (!e) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    e->limits = opt->limits;
    if (!e->limits.image.max_pixels) eg_image_limits_default(&e->limits.image);
    if (!e->limits.max_images) e->limits.max_images = 16;
    if (!e->limits.max_new_tokens) e->limits.max_new_tokens = 1024;
    char path[1200];
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    e->model = eg_model_load(model_dir, &opt->model, err);
    if (e->model) e->tok = eg_tokenizer_load(path, err);
    if (e->tok) e->tmpl = eg_template_for_model(model_dir, err);
    if (!e->tmpl) {
        eg_engine_close(e);
        return NULL;
    }
    if (!e->limits.context_length)
        e->limits.context_length = (uint32_t)e->model->cfg.max_position_embeddings;
    const EgEngineCaches *c = &opt->caches;
    size_t image_mb = c->image_cache_mb < 0 ? 0 : c->image_cache_mb ? (size_t)c->image_cache_mb : 256;
    size_t prefix_n = c->prefix_cache_entries < 0 ? 0
                      : c->prefix_cache_entries ? (size_t)c->prefix_cache_entries
                                                : 4;
    size_t prefix_mb = c->prefix_cache_mb < 0 ? 0 : c->prefix_cache_mb ? (size_t)c->prefix_cache_mb : 1024;
    e->image_cache = eg_image_cache_new(e->model, image_mb << 20);
    e->prefix_cache = eg_prefix_cache_new(prefix_n, prefix_mb << 20);
    if (!e->image_cache || !e->prefix_cache) {
        eg_fail(err, "out of host memory");
        eg_engine_close(e);
        return NULL;
    }
    return e;
}

void eg_engine_close(EgEngine *e) {
    if (!e) return;
    eg_prefix_cache_free(e->prefix_cache); /* device memory: before the model */
    eg_image_cache_free(e->image_cache);
    eg_template_free(e->tmpl);
    eg_tokenizer_free(e->tok);
    eg_model_free(e->model);
    free(e);
}

/* Fills err and evaluates to the status, for `return INVALID(err, "...", ...)`. */
#define INVALID(err, ...) (eg_fail((err), __VA_ARGS__), EG_STATUS_INVALID_ARGUMENT)
#define NO_MEMORY(err) (eg_fail((err), "out of host memory"), EG_STATUS_INTERNAL)

/* The prompt parts in order, and the encoded images they refer to. */
typedef struct Assembled {
    EgPartList list;
    const void **images;
    size_t *image_lens;
    uint32_t n_images;
} Assembled;

static EgStatus assemble(EgEngine *e, const EgRequest *req, Assembled *a, EgError *err) {
    size_t n_img = req->n_examples;
    for (size_t i = 0; i < req->n_parts; i++) {
        const EgRequestPart *p = &req->parts[i];
        if (p->is_image) {
            if (!p->image || p->image_len == 0) return INVALID(err, "part %zu: empty image", i);
            n_img++;
        } else if (eg_utf8_valid_prefix(p->text, p->text_len) != p->text_len) {
            return INVALID(err, "part %zu: text is not valid UTF-8 (byte %zu)", i,
                           eg_utf8_valid_prefix(p->text, p->text_len));
        }
    }
    for (size_t i = 0; i < req->n_examples; i++) {
        const EgRequestExample *x = &req->examples[i];
        if (!x->image || x->image_len == 0) return INVALID(err, "example %zu: empty image", i);
        if (eg_utf8_valid_prefix(x->text, x->text_len) != x->text_len)
            return INVALID(err, "example %zu: text is not valid UTF-8", i);
    }
    if (req->n_parts == 0 && req->n_examples == 0) return INVALID(err, "the request has no parts");
    /* Text is bounded before it is tokenized: no token spells more than 64 bytes, so more text
     * than that per token of context cannot fit, and refusing it early keeps a huge text from
     * occupying the engine thread. */
    size_t text_bytes = 0;
    for (size_t i = 0; i < req->n_parts; i++)
        text_bytes += req->parts[i].is_image ? 0 : req->parts[i].text_len;
    for (size_t i = 0; i < req->n_examples; i++)
        text_bytes += req->examples[i].text_len;
    if (text_bytes > (size_t)e->limits.context_length * 64) {
        eg_fail(err,
                "the request has %zu bytes of text; the limit is %zu (64 bytes per token of the "
                "context length %u)",
                text_bytes, (size_t)e->limits.context_length * 64, e->limits.context_length);
        return EG_STATUS_RESOURCE_EXHAUSTED;
    }
    int has_content = n_img > 0;
    for (size_t i = 0; i < req->n_parts && !has_content; i++)
        has_content = req->parts[i].text_len > 0;
    if (!has_content) return INVALID(err, "the prompt is empty (no image and no text)");
    if (n_img > e->limits.max_images) {
        eg_fail(err, "the request has %zu images; the limit is %u (max_images)", n_img,
                e->limits.max_images);
        return EG_STATUS_RESOURCE_EXHAUSTED;
    }
    a->images = calloc(n_img + 1, sizeof *a->images);
    a->image_lens = calloc(n_img + 1, sizeof *a->image_lens);
    if (!a->images || !a->image_lens) return NO_MEMORY(err);
    if (req->n_examples == 0 && !req->use_template) {
        a->list.parts = calloc(req->n_parts, sizeof *a->list.parts);
        if (!a->list.parts) return NO_MEMORY(err);
        /* The list owns its texts (as template-built lists do), so raw texts are copied. */
        for (size_t i = 0; i < req->n_parts; i++, a->list.n++) {
            const EgRequestPart *p = &req->parts[i];
            char *text = p->is_image ? NULL : strndup(p->text ? p->text : "", p->text_len);
            if (!p->is_image && !text) return NO_MEMORY(err);
            a->list.parts[i] =
                (EgPromptPart){p->is_image ? EG_PART_IMAGE : EG_PART_TEXT, text, p->text_len};
            if (p->is_image) {
                a->images[a->n_images] = p->image;
                a->image_lens[a->n_images++] = p->image_len;
            }
        }
        return EG_STATUS_OK;
    }
    /* Few-shot: the examples, then the query (exactly one image and optional text). */
    const EgRequestPart *query_image = NULL, *query_text = NULL;
    for (size_t i = 0; i < req->n_parts; i++) {
        const EgRequestPart *p = &req->parts[i];
        const EgRequestPart **slot = p->is_image ? &query_image : &query_text;
        if (*slot)
            return INVALID(err,
                           "part %zu: with examples, parts must hold one query image and at "
                           "most one text",
                           i);
        *slot = p;
    }
    if (!query_image) return INVALID(err, "with examples, parts must hold the query image");
    EgFewShotExample *ex = calloc(req->n_examples, sizeof *ex);
    if (!ex) return NO_MEMORY(err);
    for (size_t i = 0; i < req->n_examples; i++) {
        ex[i] = (EgFewShotExample){req->examples[i].text, req->examples[i].text_len};
        a->images[a->n_images] = req->examples[i].image;
        a->image_lens[a->n_images++] = req->examples[i].image_len;
    }
    a->images[a->n_images] = query_image->image;
    a->image_lens[a->n_images++] = query_image->image_len;
    int rc = eg_template_build(e->tmpl, ex, req->n_examples, query_text ? query_text->text : NULL,
                               query_text ? query_text->text_len : 0, &a->list, err);
    free(ex);
    return rc ? EG_STATUS_INVALID_ARGUMENT : EG_STATUS_OK;
}

/* Decodes and normalizes the images that are not cached (cached[i] NULL) into one
 * [n_missing][3][S][S] array, in order. */
static EgStatus load_pixels(EgEngine *e, const Assembled *a, const EgBuffer *const *cached,
                            float **out, EgError *err) {
    uint32_t size = (uint32_t)e->model->cfg.vision.image_size;
    size_t per = 3 * (size_t)size * size;
    float *pixels = malloc((a->n_images ? a->n_images : 1) * per * sizeof *pixels);
    if (!pixels) return NO_MEMORY(err);
    for (uint32_t i = 0, k = 0; i < a->n_images; i++) {
        if (cached[i]) continue;
        EgImage img = {0};
        if (eg_image_decode(a->images[i], a->image_lens[i], &e->limits.image, &img, err) ||
            eg_preprocess_image(&img, (int)size, pixels + k++ * per, err)) {
            eg_image_free(&img);
            free(pixels);
            eg_fail_prefix(err, "image %u", i);
            return strstr(err->msg, "limit") ? EG_STATUS_RESOURCE_EXHAUSTED
                                             : EG_STATUS_INVALID_ARGUMENT;
        }
        eg_image_free(&img);
    }
    *out = pixels;
    return EG_STATUS_OK;
}

/* Per token, the key of the image it attends to (NULL: none); n_prompt prompt tokens, then
 * n_extra generated ones, which attend to the last image the prompt's last token saw. */
static const EgImageKey **token_image_keys(const EgPrompt *prompt, const EgImageKey *keys,
                                           size_t n_extra) {
    const EgImageKey **tk = calloc(prompt->n_tokens + n_extra + 1, sizeof *tk);
    for (size_t t = 0; tk && t < prompt->n_tokens + n_extra; t++) {
        int32_t img = prompt->image_index[t < prompt->n_tokens ? t : prompt->n_tokens - 1];
        tk[t] = img >= 0 ? &keys[img] : NULL;
    }
    return tk;
}

/* Runs a validated request: the sequence comes from the prefix cache when one shares the
 * prompt's start, images from the image cache when seen before; afterwards the sequence is
 * kept for the next request. */
static int run(EgEngine *e, const Assembled *a, const EgImageKey *keys,
               const EgBuffer *const *cached, const float *pixels, const EgPrompt *prompt,
               const EgGenerateParams *gen, EgTokenCallback cb, void *user, EgGenerateResult *out,
               EgError *err) {
    EgModel *m = e->model;
    uint32_t n_prompt = (uint32_t)prompt->n_tokens;
    /* capacities in steps of 64 tokens, so kept sequences fit later requests of similar size */
    uint32_t capacity = (n_prompt + gen->max_new_tokens + 63) / 64 * 64;
    const EgImageKey **tk = token_image_keys(prompt, keys, gen->max_new_tokens);
    const EgBuffer **store = calloc(a->n_images + 1, sizeof *store);
    int32_t *ids = malloc((n_prompt + gen->max_new_tokens + 1) * sizeof *ids);
    if (!tk || !store || !ids) {
        free(tk);
        free(store);
        free(ids);
        return eg_fail(err, "out of host memory");
    }
    uint32_t n_shared = 0;
    EgSequence *seq = eg_prefix_cache_take(e->prefix_cache, prompt->ids, tk, n_prompt, capacity,
                                           &n_shared);
    if (!seq) seq = eg_sequence_new(m, capacity, err);
    for (uint32_t i = 0; seq && i < a->n_images; i++)
        store[i] = cached[i] ? NULL : eg_image_cache_reserve(e->image_cache, &keys[i]);
    int rc = !seq || eg_sequence_set_images_cached(seq, a->n_images, cached, pixels, store, err);
    for (uint32_t i = 0; rc && i < a->n_images; i++)
        if (store[i]) eg_image_cache_drop(e->image_cache, &keys[i]);
    if (rc == 0)
        rc = eg_generate_on(seq, e->tok, prompt->ids, prompt->image_index, n_prompt, n_shared, gen,
                            cb, user, out, err);
    if (rc == 0) {
        /* what the KV cache holds: the prompt, then the generated tokens fed back */
        memcpy(ids, prompt->ids, n_prompt * sizeof *ids);
        memcpy(ids + n_prompt, out->ids, out->n_ids * sizeof *ids);
        eg_prefix_cache_put(e->prefix_cache, seq, ids, tk);
    } else {
        eg_sequence_free(seq);
    }
    free(tk);
    free(store);
    free(ids);
    return rc;
}

EgStatus eg_engine_generate(EgEngine *e, const EgRequest *req, EgTokenCallback cb, void *user,
                            EgGenerateResult *out, EgRequestStats *stats, EgError *err) {
    memset(out, 0, sizeof *out);
    EgGenerateParams gen = req->gen;
    if (eg_sampling_params_validate(&gen.sampling, err)) return EG_STATUS_INVALID_ARGUMENT;
    if (gen.max_new_tokens == 0) return INVALID(err, "max_new_tokens must be at least 1");
    if (gen.max_new_tokens > e->limits.max_new_tokens) {
        eg_fail(err, "max_new_tokens %u exceeds the limit of %u", gen.max_new_tokens,
                e->limits.max_new_tokens);
        return EG_STATUS_RESOURCE_EXHAUSTED;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    Assembled a = {0};
    float *pixels = NULL;
    EgPrompt prompt = {0};
    const char **stops = NULL;
    EgImageKey *keys = NULL;
    const EgBuffer **cached = NULL;
    EgStatus st = assemble(e, req, &a, err);
    if (st == EG_STATUS_OK) {
        keys = calloc(a.n_images + 1, sizeof *keys);
        cached = calloc(a.n_images + 1, sizeof *cached);
        if (!keys || !cached) st = NO_MEMORY(err);
    }
    for (uint32_t i = 0; st == EG_STATUS_OK && i < a.n_images; i++) {
        eg_image_key(a.images[i], a.image_lens[i], (uint32_t)e->model->cfg.vision.image_size,
                     &keys[i]);
        cached[i] = eg_image_cache_lookup(e->image_cache, &keys[i]);
    }
    if (st == EG_STATUS_OK) st = load_pixels(e, &a, cached, &pixels, err);
    if (st == EG_STATUS_OK) {
        EgPromptOptions po = eg_prompt_default_options();
        if (eg_prompt_build(e->tok, a.list.parts, a.list.n, &po, &prompt, err))
            st = EG_STATUS_INVALID_ARGUMENT;
    }
    if (st == EG_STATUS_OK &&
        (size_t)prompt.n_tokens + gen.max_new_tokens > e->limits.context_length) {
        eg_fail(
            err,
            "the prompt has %zu tokens; with max_new_tokens %u it exceeds the context length %u",
            prompt.n_tokens, gen.max_new_tokens, e->limits.context_length);
        st = EG_STATUS_RESOURCE_EXHAUSTED;
    }
    if (st == EG_STATUS_OK && (req->n_examples > 0 || req->use_template) && gen.n_stop == 0) {
        size_t n = eg_template_stop_count(e->tmpl);
        stops = calloc(n + 1, sizeof *stops);
        for (size_t i = 0; stops && i < n; i++)
            stops[i] = eg_template_stop(e->tmpl, i);
        gen.stop = stops;
        gen.n_stop = stops ? n : 0;
    }
    if (st == EG_STATUS_OK) {
        if (stats) *stats = (EgRequestStats){(uint32_t)prompt.n_tokens, a.n_images};
        /* Running out of device memory (a long context, many images) is a resource limit the
         * caller can act on, unlike other engine failures. */
        if (run(e, &a, keys, cached, pixels, &prompt, &gen, cb, user, out, err))
            st = strstr(err->msg, "out of device memory") ? EG_STATUS_RESOURCE_EXHAUSTED
                                                          : EG_STATUS_INTERNAL;
    }
    if (st == EG_STATUS_OK) { /* times count from the start of processing: decoding included */
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double before = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9 -
                        out->total_s;
        out->prefill_s += before;
        out->total_s += before;
    }
    free(keys);
    free(cached);
    free(stops);
    eg_prompt_free(&prompt);
    free(pixels);
    eg_part_list_free(&a.list);
    free(a.images);
    free(a.image_lens);
    return st;
}
