/* Running requests: eg_engine_begin prepares one (eg_engine_admit, eg_engine_decode whose image
 * work engine/engine_images.c does, eg_engine_start), eg_engine_step advances several together
 * (a chunk of a prompt, or one token each in one batched forward), eg_engine_end hands back the
 * answer and keeps the sequence for prompts that start the same way. eg_engine_generate is the
 * three in a row. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine_internal.h"
#include "language/utf8.h"
#include "runtime/clock.h"

/* The image stage's state, once the job no longer needs it. */
static void free_images(EgEngineJob *j) {
    eg_part_list_free(&j->a.list);
    free(j->a.images);
    free(j->a.image_lens);
    memset(&j->a, 0, sizeof j->a);
    free(j->image_state);
    free(j->pixels);
    j->image_state = NULL;
    j->pixels = NULL;
}

static void job_free(EgEngineJob *j) {
    if (!j) return;
    free_images(j);
    eg_example_set_release(j->e->example_sets, j->set, j->e->image_cache, j->e->prefix_cache);
    eg_generation_free(j->g);
    eg_fseq_free(j->seq);
    free(j->stops);
    eg_prompt_free(&j->prompt);
    free(j->keys);
    free(j->token_keys);
    free(j);
}

/* The prefix cache lends a kept sequence only for a real shared start: at least this many
 * tokens (a BOS alone is no reuse, and lending would take the sequence from others). */
enum { MIN_SHARED_TOKENS = 4 };

/* Sequence and images for a checked request whose images are all cached or decoded; the
 * prompt is fed by eg_engine_step. */
static int prepare(EgEngineJob *j, const EgBuffer *const *cached, const float *pixels,
                   int set_images_cached, EgError *err) {
    EgEngine *e = j->e;
    uint32_t n_prompt = (uint32_t)j->prompt.n_tokens, n_images = j->a.n_images;
    /* capacities in steps of 64 tokens, so kept sequences fit later requests of similar size */
    uint32_t capacity = (n_prompt + j->gen.max_new_tokens + 63) / 64 * 64;
    /* keys[n_images] (the spare slot): all the images' keys hashed together, for the tokens
     * before the first image where the family says they read every image */
    const EgImageKey *unimaged = NULL;
    if (e->model->info.text_before_image_sees_images && n_images) {
        eg_image_key(j->keys, n_images * sizeof *j->keys, UINT32_MAX, &j->keys[n_images]);
        unimaged = &j->keys[n_images];
    }
    j->token_keys =
        eg_engine_token_image_keys(&j->prompt, j->keys, unimaged, j->gen.max_new_tokens);
    const EgBuffer **store = calloc(n_images + 1, sizeof *store);
    if (!j->token_keys || !store) {
        free(store);
        return eg_fail(err, "out of host memory");
    }
    uint32_t n_shared = 0;
    j->seq = eg_prefix_cache_take(e->prefix_cache, j->prompt.ids, j->token_keys, n_prompt,
                                  capacity, MIN_SHARED_TOKENS, &n_shared);
    if (j->set) eg_example_set_note_start(j->set, j->set_warmup, n_shared, set_images_cached);
    if (!j->seq) j->seq = eg_fseq_new(e->model, capacity, err);
    for (uint32_t i = 0; j->seq && i < n_images; i++)
        store[i] = cached[i] ? NULL : eg_image_cache_reserve(e->image_cache, &j->keys[i]);
    int rc = !j->seq || eg_fseq_set_images_cached(j->seq, n_images, cached, pixels, store, err);
    for (uint32_t i = 0; rc && i < n_images; i++)
        if (store[i]) eg_image_cache_drop(e->image_cache, &j->keys[i]);
    free(store);
    if (rc) return -1;
    j->g = eg_generation_begin(j->seq, e->tok, j->prompt.ids, j->prompt.image_index, n_prompt,
                               n_shared, &j->gen, j->cb, j->user, err);
    return j->g ? 0 : -1;
}

/* A request naming an example set: holds the set (for the job's life) and becomes *out, the
 * set's pairs followed by the request's parts (a warm-up's query: the set's first image). */
static EgStatus use_example_set(EgEngineJob *j, const EgRequest *req, EgRequest *out,
                                EgRequestPart *warm_query, EgError *err) {
    EgEngine *e = j->e;
    const char *id = req->example_set;
    if (req->n_examples)
        return INVALID(err, "the request has both example_set and examples: send one of them");
    size_t len = strlen(id);
    if (len != EG_EXAMPLE_SET_ID_LEN || strspn(id, "0123456789abcdef") != len)
        return INVALID(err, "example_set \"%.80s\" is not an example set id (%d lowercase hex "
                            "digits)",
                       id, EG_EXAMPLE_SET_ID_LEN);
    j->set = eg_example_set_acquire(e->example_sets, id);
    if (!j->set) {
        eg_fail(err, "example set %s is not held by this server (create it again: the id is a "
                     "hash of its content)",
                id);
        return EG_STATUS_NOT_FOUND;
    }
    if (eg_example_set_attach(j->set, e->image_cache)) return NO_MEMORY(err);
    j->set_warmup = req->example_set_warmup;
    *out = *req;
    out->examples = eg_example_set_pairs(j->set, &out->n_examples);
    if (j->set_warmup) {
        *warm_query = (EgRequestPart){.is_image = 1,
                                      .image = out->examples[0].image,
                                      .image_len = out->examples[0].image_len};
        out->parts = warm_query;
        out->n_parts = 1;
    }
    return EG_STATUS_OK;
}

EgStatus eg_engine_admit(EgEngine *e, const EgRequest *req, EgTokenCallback cb, void *user,
                         EgEngineJob **job, EgRequestStats *stats, EgError *err) {
    *job = NULL;
    EgGenerateParams gen = req->gen;
    if (eg_sampling_params_validate(&gen.sampling, err)) return EG_STATUS_INVALID_ARGUMENT;
    if (gen.max_new_tokens == 0) return INVALID(err, "max_new_tokens must be at least 1");
    /* A stop string that is not UTF-8 could match inside a character and cut the answer there,
     * leaving a reply that is not UTF-8 either. */
    for (size_t i = 0; i < gen.n_stop; i++) {
        size_t len = gen.stop[i] ? strlen(gen.stop[i]) : 0;
        size_t valid = eg_utf8_valid_prefix(gen.stop[i], len);
        if (valid != len) return INVALID(err, "stop %zu: not valid UTF-8 (byte %zu)", i, valid);
    }
    if (gen.max_new_tokens > e->limits.max_new_tokens) {
        eg_fail(err, "max_new_tokens %u exceeds the limit of %u", gen.max_new_tokens,
                e->limits.max_new_tokens);
        return EG_STATUS_RESOURCE_EXHAUSTED;
    }
    eg_engine_tidy(e);
    EgEngineJob *j = calloc(1, sizeof *j);
    if (!j) return NO_MEMORY(err);
    j->e = e;
    j->t0 = eg_now_s();
    j->cb = cb;
    j->user = user;
    EgRequest with_set;
    EgRequestPart warm_query;
    EgStatus st = EG_STATUS_OK;
    if (req->example_set && req->example_set[0]) {
        st = use_example_set(j, req, &with_set, &warm_query, err);
        req = &with_set;
    }
    Assembled *a = &j->a;
    if (st == EG_STATUS_OK) st = eg_engine_assemble(e, req, a, err);
    if (st == EG_STATUS_OK) {
        j->keys = calloc(a->n_images + 1, sizeof *j->keys);
        j->image_state = calloc(a->n_images + 1, sizeof *j->image_state);
        if (!j->keys || !j->image_state) st = NO_MEMORY(err);
    }
    for (uint32_t i = 0; st == EG_STATUS_OK && i < a->n_images; i++) {
        eg_image_key(a->images[i], a->image_lens[i], e->model->info.image_size,
                     &j->keys[i]);
        j->image_state[i] =
            eg_image_cache_contains(e->image_cache, &j->keys[i]) ? IMAGE_CACHED : IMAGE_MISSING;
    }
    if (st == EG_STATUS_OK) st = eg_engine_check_images(e, a, err);
    if (st == EG_STATUS_OK) {
        if (eg_family_prompt(e->model, e->tok, a->list.parts, a->list.n, &j->prompt, err))
            st = EG_STATUS_INVALID_ARGUMENT;
    }
    if (st == EG_STATUS_OK &&
        (size_t)j->prompt.n_tokens + gen.max_new_tokens > e->limits.context_length) {
        eg_fail(
            err,
            "the prompt has %zu tokens; with max_new_tokens %u it exceeds the context length %u",
            j->prompt.n_tokens, gen.max_new_tokens, e->limits.context_length);
        st = EG_STATUS_RESOURCE_EXHAUSTED;
    }
    if (st == EG_STATUS_OK && (req->n_examples > 0 || req->use_template) && gen.n_stop == 0) {
        size_t n = eg_template_stop_count(e->tmpl);
        j->stops = calloc(n + 1, sizeof *j->stops);
        for (size_t i = 0; j->stops && i < n; i++)
            j->stops[i] = eg_template_stop(e->tmpl, i);
        gen.stop = j->stops;
        gen.n_stop = j->stops ? n : 0;
    }
    j->gen = gen;
    if (st != EG_STATUS_OK) {
        job_free(j);
        return st;
    }
    if (stats) *stats = (EgRequestStats){(uint32_t)j->prompt.n_tokens, a->n_images};
    *job = j;
    return EG_STATUS_OK;
}

int eg_engine_job_needs_pixels(const EgEngineJob *j) {
    if (j->failed || j->g) return 0;
    for (uint32_t i = 0; i < j->a.n_images; i++)
        if (j->image_state[i] == IMAGE_MISSING) return 1;
    return 0;
}

void eg_engine_start(EgEngineJob *j) {
    if (j->failed || j->g) return;
    EgEngine *e = j->e;
    uint32_t n = j->a.n_images;
    size_t per = e->model->info.image_floats;
    /* The cache is asked again: entries come and go while a job's images are decoded. An image
     * cached meanwhile is taken from the cache; one evicted meanwhile must be decoded after all. */
    for (uint32_t i = 0; i < n; i++)
        if (j->image_state[i] == IMAGE_CACHED &&
            !eg_image_cache_contains(e->image_cache, &j->keys[i]))
            j->image_state[i] = IMAGE_MISSING;
    if (eg_engine_job_needs_pixels(j)) return;
    const EgBuffer **cached = calloc(n + 1, sizeof *cached);
    if (!cached) {
        eg_fail(&j->err, "out of host memory");
        eg_engine_job_fail(j, EG_STATUS_INTERNAL);
        return;
    }
    /* The encoder takes the uncached images' pixels packed, in order. */
    uint32_t k = 0;
    size_t n_set = 0;
    if (j->set) eg_example_set_pairs(j->set, &n_set);
    int set_images_cached = 1;
    for (uint32_t i = 0; i < n; i++) {
        cached[i] = eg_image_cache_lookup(e->image_cache, &j->keys[i]);
        if (i < n_set && !cached[i]) set_images_cached = 0;
        if (cached[i]) continue;
        if (k != i) memmove(j->pixels + k * per, j->pixels + i * per, per * sizeof *j->pixels);
        k++;
    }
    if (prepare(j, cached, j->pixels, set_images_cached, &j->err)) {
        eg_engine_job_fail(j, eg_engine_status(&j->err, EG_STATUS_INTERNAL));
    }
    free(cached);
    free_images(j);
    j->prepare_s = eg_now_s() - j->t0;
}

EgStatus eg_engine_begin(EgEngine *e, const EgRequest *req, EgTokenCallback cb, void *user,
                         EgEngineJob **job, EgRequestStats *stats, EgError *err) {
    EgEngineJob *j;
    EgStatus st = eg_engine_admit(e, req, cb, user, &j, stats, err);
    if (st != EG_STATUS_OK) {
        *job = NULL;
        return st;
    }
    while (!j->failed && !j->g) {
        eg_engine_decode(j, NULL, NULL);
        eg_engine_start(j);
    }
    if (j->failed) {
        *err = j->err;
        st = j->fail_status;
        job_free(j);
        *job = NULL;
        return st;
    }
    *job = j;
    return EG_STATUS_OK;
}

int eg_engine_job_finished(const EgEngineJob *j) {
    return j->failed || (j->g && eg_generation_finished(j->g));
}

void eg_engine_cancel(EgEngineJob *j) {
    if (j->g) {
        eg_generation_cancel(j->g);
    } else if (!j->failed) { /* not started: it ends here */
        eg_fail(&j->err, "cancelled before it started");
        eg_engine_job_fail(j, EG_STATUS_CANCELLED);
    }
}

int eg_engine_step(EgEngine *e, EgEngineJob *const *jobs, uint32_t k, EgError *err) {
    EgEngineJob *want[EG_FAMILY_MAX_BATCH];
    EgFamilySeq *seqs[EG_FAMILY_MAX_BATCH];
    int32_t ids[EG_FAMILY_MAX_BATCH];
    uint32_t n = 0, max = e->model->info.max_batch;
    if (k > max) return eg_fail(err, "%u jobs in one step; at most %u", k, max);
    /* Prompts first, at most prefill_chunk tokens in all per step (chunked prefill): a long
     * prompt takes several steps, and the jobs already decoding get a token in each of them. */
    uint32_t budget = e->prefill_chunk ? e->prefill_chunk : UINT32_MAX;
    for (uint32_t i = 0; i < k && budget; i++) {
        EgEngineJob *j = jobs[i];
        if (!j->g || eg_engine_job_finished(j)) continue; /* not started, or done */
        uint32_t left = eg_generation_prefill_left(j->g);
        if (left == 0) continue;
        uint32_t chunk = left < budget ? left : budget;
        if (eg_generation_prefill(j->g, chunk, &j->err) < 0) {
            eg_engine_job_fail(j, eg_engine_status(&j->err, EG_STATUS_INTERNAL));
        }
        budget -= chunk;
    }
    /* Each job whose prompt is in takes the token its logits give (streaming it); those not
     * finished want the next forward. */
    for (uint32_t i = 0; i < k; i++) {
        EgEngineJob *j = jobs[i];
        if (!j->g || eg_engine_job_finished(j) || eg_generation_prefill_left(j->g)) continue;
        int r = eg_generation_advance(j->g, &j->err);
        if (r < 0) {
            eg_engine_job_fail(j, EG_STATUS_INTERNAL);
        } else if (r == 0) {
            want[n] = j;
            seqs[n] = j->seq;
            ids[n++] = eg_generation_next_input(j->g);
        }
    }
    if (n == 0) return 0;
    if (n == 1) { /* alone, the single-sequence path (the same result, one fewer copy) */
        if (eg_fseq_forward(seqs[0], &ids[0], NULL, 1, eg_generation_logits(want[0]->g), 0,
                                &want[0]->err)) {
            eg_engine_job_fail(want[0], eg_engine_status(&want[0]->err, EG_STATUS_INTERNAL));
        }
        return 0;
    }
    float *logits = e->step_logits;
    EgError ferr = {0};
    int rc = eg_fseq_forward_batch(seqs, n, ids, logits, &ferr);
    for (uint32_t b = 0; b < n; b++) {
        if (rc) {
            eg_engine_job_fail(want[b], eg_engine_status(&ferr, EG_STATUS_INTERNAL));
            want[b]->err = ferr;
        } else {
            memcpy(eg_generation_logits(want[b]->g), logits + (size_t)b * e->model->info.vocab,
                   e->model->info.vocab * sizeof *logits);
        }
    }
    return 0;
}

EgStatus eg_engine_end(EgEngineJob *j, EgGenerateResult *out, EgError *err) {
    memset(out, 0, sizeof *out);
    EgEngine *e = j->e;
    EgStatus st = EG_STATUS_OK;
    if (j->failed) {
        *err = j->err;
        st = j->fail_status;
    } else if (!j->g) { /* ended before it started without a reason: nothing to report */
        eg_fail(err, "cancelled before it started");
        st = EG_STATUS_CANCELLED;
    } else if (eg_generation_end(j->g, out, err)) {
        st = EG_STATUS_INTERNAL;
    }
    if (st == EG_STATUS_OK) {
        /* keep the sequence: its KV cache holds the prompt, then the generated tokens fed back */
        uint32_t n_prompt = (uint32_t)j->prompt.n_tokens;
        int32_t *ids = malloc((n_prompt + out->n_ids + 1) * sizeof *ids);
        if (ids) {
            memcpy(ids, j->prompt.ids, n_prompt * sizeof *ids);
            memcpy(ids + n_prompt, out->ids, out->n_ids * sizeof *ids);
            if (j->set)
                eg_example_set_keep_prefix(j->set, e->prefix_cache, j->seq, ids, j->token_keys);
            eg_prefix_cache_put(e->prefix_cache, j->seq, ids, j->token_keys);
            j->seq = NULL;
            free(ids);
        }
        /* times count from the start of processing: decoding and images included */
        double before = j->prepare_s;
        out->prefill_s += before;
        out->total_s += before;
    }
    job_free(j);
    eg_engine_tidy(e);
    return st;
}

EgStatus eg_engine_generate(EgEngine *e, const EgRequest *req, EgTokenCallback cb, void *user,
                            EgGenerateResult *out, EgRequestStats *stats, EgError *err) {
    memset(out, 0, sizeof *out);
    EgEngineJob *j;
    EgStatus st = eg_engine_begin(e, req, cb, user, &j, stats, err);
    if (st != EG_STATUS_OK) return st;
    while (!eg_engine_job_finished(j))
        if (eg_engine_step(e, &j, 1, err)) {
            eg_engine_cancel(j);
            eg_generate_result_free(out);
            EgGenerateResult ignored;
            eg_engine_end(j, &ignored, err);
            eg_generate_result_free(&ignored);
            return EG_STATUS_INTERNAL;
        }
    return eg_engine_end(j, out, err);
}
