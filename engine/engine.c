#include "engine/engine.h"
#include "engine/engine_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "language/prompt.h"
#include "language/utf8.h"

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
    if (!e->limits.max_request_pixels)
        e->limits.max_request_pixels =
            e->limits.image.max_pixels > UINT64_MAX / EG_ENGINE_REQUEST_PIXELS_FACTOR
                ? UINT64_MAX
                : EG_ENGINE_REQUEST_PIXELS_FACTOR * e->limits.image.max_pixels;
    char path[1200];
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    /* the model's per-sequence scratch is sized for the request limit's image count */
    EgModelOptions mo = opt->model;
    if (!mo.max_images) mo.max_images = e->limits.max_images;
    e->model = eg_family_open(model_dir, &mo, err);
    if (e->model) e->tok = eg_tokenizer_load(path, err);
    if (e->tok) e->tmpl = eg_template_choose(model_dir, e->model->info.family, opt->template_path, err);
    if (!e->tmpl) {
        eg_engine_close(e);
        return NULL;
    }
    if (!e->limits.context_length)
        e->limits.context_length = e->model->info.max_position_embeddings;
    /* a sequence's scratch is sized for the family's image count: the limit cannot pass it */
    if (e->limits.max_images > e->model->info.max_images)
        e->limits.max_images = e->model->info.max_images;
    e->prefill_chunk = opt->prefill_chunk ? opt->prefill_chunk : 256;
    const EgEngineCaches *c = &opt->caches;
    size_t image_mb = c->image_cache_mb < 0 ? 0 : c->image_cache_mb ? (size_t)c->image_cache_mb : 256;
    size_t prefix_n = c->prefix_cache_entries < 0 ? 0
                      : c->prefix_cache_entries ? (size_t)c->prefix_cache_entries
                                                : 4;
    size_t prefix_mb = c->prefix_cache_mb < 0 ? 0 : c->prefix_cache_mb ? (size_t)c->prefix_cache_mb : 1024;
    e->image_cache_max_bytes = image_mb << 20;
    e->prefix_cache_max_entries = prefix_n;
    e->prefix_cache_max_bytes = prefix_mb << 20;
    e->image_cache = eg_image_cache_new(e->model, e->image_cache_max_bytes);
    e->prefix_cache = eg_prefix_cache_new(prefix_n, e->prefix_cache_max_bytes);
    uint64_t sets_mb = c->example_sets_mb < 0  ? 0
                       : c->example_sets_mb ? (uint64_t)c->example_sets_mb
                                            : 512;
    uint64_t max_sets = c->max_example_sets < 0  ? 0
                        : c->max_example_sets ? (uint64_t)c->max_example_sets
                                              : 64;
    e->example_sets = eg_example_sets_new(model_dir, e->tmpl, sets_mb << 20, max_sets, err);
    if (!e->example_sets) {
        eg_engine_close(e);
        return NULL;
    }
    e->step_logits = malloc((size_t)e->model->info.max_batch * e->model->info.vocab *
                            sizeof *e->step_logits);
    if (!e->image_cache || !e->prefix_cache || !e->step_logits) {
        eg_fail(err, "out of host memory");
        eg_engine_close(e);
        return NULL;
    }
    return e;
}

int eg_engine_forget(EgEngine *e, EgError *err) {
    uint64_t sets = 0, set_bytes = 0, budget = 0, max_sets = 0;
    eg_example_sets_counts(e->example_sets, &sets, &set_bytes, &budget, &max_sets);
    if (sets) /* their images and prefixes are pinned in the caches this drops */
        return eg_fail(err, "cannot empty the caches: %llu example sets are registered",
                       (unsigned long long)sets);
    eg_prefix_cache_free(e->prefix_cache);
    eg_image_cache_free(e->image_cache);
    e->image_cache = eg_image_cache_new(e->model, e->image_cache_max_bytes);
    e->prefix_cache = eg_prefix_cache_new(e->prefix_cache_max_entries, e->prefix_cache_max_bytes);
    atomic_store(&e->images_decoded, 0);
    if (!e->image_cache || !e->prefix_cache) return eg_fail(err, "out of host memory");
    return 0;
}

void eg_engine_close(EgEngine *e) {
    if (!e) return;
    /* device memory: before the model; the sets' pins before the caches holding them */
    eg_example_sets_free(e->example_sets, e->image_cache, e->prefix_cache);
    eg_prefix_cache_free(e->prefix_cache);
    eg_image_cache_free(e->image_cache);
    free(e->step_logits);
    eg_template_free(e->tmpl);
    eg_tokenizer_free(e->tok);
    eg_family_close(e->model);
    free(e);
}

EgStatus eg_engine_status(const EgError *err, EgStatus plain) {
    switch (err->kind) {
    case EG_ERROR_LIMIT:
    case EG_ERROR_DEVICE_MEMORY:
        return EG_STATUS_RESOURCE_EXHAUSTED;
    case EG_ERROR_PLAIN:
        break;
    }
    return plain;
}

void eg_engine_describe(const EgEngine *e, EgEngineInfo *out) {
    const EgFamilyInfo *info = &e->model->info;
    *out = (EgEngineInfo){
        .model_dir = info->dir,
        .architecture = info->architecture,
        .image_size = info->image_size,
        .vocab_size = info->vocab,
        .device = info->vk->props.deviceName,
        .precision = info->ops->f16 ? "fp16" : "fp32",
        .limits = e->limits,
        .prefill_chunk = e->prefill_chunk,
        .max_batch = info->max_batch,
        .prompt_template = e->tmpl,
        .weights = info->weights,
    };
}

void eg_engine_tidy(EgEngine *e) {
    eg_example_sets_tidy(e->example_sets, e->image_cache, e->prefix_cache);
}

void eg_engine_set_limits(EgEngine *e, const EgEngineLimits *l) {
    if (l->max_images)
        e->limits.max_images =
            l->max_images < e->model->info.max_images ? l->max_images : e->model->info.max_images;
    if (l->context_length) e->limits.context_length = l->context_length;
    if (l->max_new_tokens) e->limits.max_new_tokens = l->max_new_tokens;
    if (l->image.max_pixels) e->limits.image = l->image;
    if (l->max_request_pixels) e->limits.max_request_pixels = l->max_request_pixels;
}

void eg_engine_stats(const EgEngine *e, EgEngineStats *out) {
    const EgImageCacheStats *ic = eg_image_cache_stats(e->image_cache);
    const EgPrefixCacheStats *pc = eg_prefix_cache_stats(e->prefix_cache);
    *out = (EgEngineStats){
        .device_memory_bytes = atomic_load(&e->model->info.vk->device_bytes),
        .device_memory_is_host = e->model->info.vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU,
        .images_decoded = atomic_load(&e->images_decoded),
        .image_cache_hits = atomic_load(&ic->hits),
        .image_cache_misses = atomic_load(&ic->misses),
        .image_cache_entries = atomic_load(&ic->entries),
        .image_cache_bytes = atomic_load(&ic->bytes),
        .prefix_cache_hits = atomic_load(&pc->hits),
        .prefix_cache_misses = atomic_load(&pc->misses),
        .prefix_cache_tokens_reused = atomic_load(&pc->tokens_reused),
        .prefix_cache_entries = atomic_load(&pc->entries),
        .prefix_cache_bytes = atomic_load(&pc->bytes),
        .example_set_device_bytes = atomic_load(&ic->pinned_bytes) + atomic_load(&pc->pinned_bytes),
        .pipelines_first_used = atomic_load(&e->model->info.vk->pipelines_first_used),
    };
    eg_example_sets_counts(e->example_sets, &out->example_sets, &out->example_set_bytes,
                           &out->example_sets_budget, &out->max_example_sets);
}

EgStatus eg_engine_assemble(EgEngine *e, const EgRequest *req, Assembled *a, EgError *err) {
    size_t n_img = req->n_examples;
    for (size_t i = 0; i < req->n_parts; i++) {
        const EgRequestPart *p = &req->parts[i];
        if (p->is_image) {
            if (!p->image || p->image_len == 0) return INVALID(err, "part %zu: empty image", i);
            n_img++;
        } else if (eg_utf8_valid_prefix(p->text, p->text_len) != p->text_len) {
            return INVALID(err, "part %zu: text is not valid UTF-8 (byte %zu)", i,
                           eg_utf8_valid_prefix(p->text, p->text_len));
        } else if (p->text_len && memchr(p->text, 0, p->text_len)) {
            return INVALID(err, "part %zu: text contains U+0000 (NUL), which is not allowed", i);
        }
    }
    for (size_t i = 0; i < req->n_examples; i++) {
        const EgRequestExample *x = &req->examples[i];
        if (!x->image || x->image_len == 0) return INVALID(err, "example %zu: empty image", i);
        if (eg_utf8_valid_prefix(x->text, x->text_len) != x->text_len)
            return INVALID(err, "example %zu: text is not valid UTF-8", i);
        if (x->text_len && memchr(x->text, 0, x->text_len))
            return INVALID(err, "example %zu: text contains U+0000 (NUL), which is not allowed", i);
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
            /* a request's text is the user's: plain text, not markup (language/prompt.h) */
            a->list.parts[i] = (EgPromptPart){.kind = p->is_image ? EG_PART_IMAGE : EG_PART_TEXT,
                                              .text = text,
                                              .len = p->text_len};
            if (p->is_image) {
                a->images[a->n_images] = p->image;
                a->image_lens[a->n_images++] = p->image_len;
            }
        }
        return EG_STATUS_OK;
    }
    /* Few-shot: the examples, then the query (exactly one image and optional text). */
    const char *why = req->n_examples ? "with examples" : "with use_template";
    const EgRequestPart *query_image = NULL, *query_text = NULL;
    for (size_t i = 0; i < req->n_parts; i++) {
        const EgRequestPart *p = &req->parts[i];
        const EgRequestPart **slot = p->is_image ? &query_image : &query_text;
        if (*slot)
            return INVALID(
                err, "part %zu: %s, parts must hold one query image and at most one text", i, why);
        *slot = p;
    }
    if (!query_image) return INVALID(err, "%s, parts must hold the query image", why);
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

const EgImageKey **eg_engine_token_image_keys(const EgPrompt *prompt, const EgImageKey *keys,
                                              const EgImageKey *unimaged, size_t n_extra) {
    const EgImageKey **tk = calloc(prompt->n_tokens + n_extra + 1, sizeof *tk);
    for (size_t t = 0; tk && t < prompt->n_tokens + n_extra; t++) {
        int32_t img = prompt->image_index[t < prompt->n_tokens ? t : prompt->n_tokens - 1];
        tk[t] = img >= 0 ? &keys[img] : unimaged;
    }
    return tk;
}
