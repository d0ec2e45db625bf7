/* Running requests: eg_engine_begin prepares one, eg_engine_step advances several together
 * (a chunk of a prompt, or one token each in one batched forward), eg_engine_end hands back the
 * answer and keeps the sequence for prompts that start the same way. eg_engine_generate is the
 * three in a row. */
#include <stdlib.h>
#include <string.h>

#include "engine/engine_internal.h"
#include "language/utf8.h"
#include "runtime/clock.h"

struct EgEngineJob {
    EgEngine *e;
    EgGenerateParams gen; /* the request's, with the template's stops when it has none */
    const char **stops;
    EgPrompt prompt;
    EgImageKey *keys;
    const EgImageKey **token_keys;
    EgSequence *seq;
    EgGeneration *g;
    double t0;        /* eg_now_s() when the request arrived */
    double prepare_s; /* decoding and images: part of the time to first token */
    EgError err;      /* why the job failed in a step */
    int failed;
    EgStatus fail_status;
};

/* Running out of device memory (a long context, many images) is a limit the caller can act on,
 * unlike other engine failures. */
static EgStatus engine_failure(const EgError *err) {
    return eg_engine_status(err, EG_STATUS_INTERNAL);
}

static void job_free(EgEngineJob *j) {
    if (!j) return;
    eg_generation_free(j->g);
    eg_sequence_free(j->seq);
    free(j->stops);
    eg_prompt_free(&j->prompt);
    free(j->keys);
    free(j->token_keys);
    free(j);
}

/* The prefix cache lends a kept sequence only for a real shared start: at least this many
 * tokens (a BOS alone is no reuse, and lending would take the sequence from others). */
enum { MIN_SHARED_TOKENS = 4 };

/* Sequence and images for a checked request; the prompt is fed by eg_engine_step. */
static int prepare(EgEngineJob *j, const Assembled *a, const EgBuffer *const *cached,
                   const float *pixels, EgTokenCallback cb, void *user, EgError *err) {
    EgEngine *e = j->e;
    uint32_t n_prompt = (uint32_t)j->prompt.n_tokens;
    /* capacities in steps of 64 tokens, so kept sequences fit later requests of similar size */
    uint32_t capacity = (n_prompt + j->gen.max_new_tokens + 63) / 64 * 64;
    j->token_keys = eg_engine_token_image_keys(&j->prompt, j->keys, j->gen.max_new_tokens);
    const EgBuffer **store = calloc(a->n_images + 1, sizeof *store);
    if (!j->token_keys || !store) {
        free(store);
        return eg_fail(err, "out of host memory");
    }
    uint32_t n_shared = 0;
    j->seq = eg_prefix_cache_take(e->prefix_cache, j->prompt.ids, j->token_keys, n_prompt,
                                  capacity, MIN_SHARED_TOKENS, &n_shared);
    if (!j->seq) j->seq = eg_sequence_new(e->model, capacity, err);
    for (uint32_t i = 0; j->seq && i < a->n_images; i++)
        store[i] = cached[i] ? NULL : eg_image_cache_reserve(e->image_cache, &j->keys[i]);
    int rc = !j->seq ||
             eg_sequence_set_images_cached(j->seq, a->n_images, cached, pixels, store, err);
    for (uint32_t i = 0; rc && i < a->n_images; i++)
        if (store[i]) eg_image_cache_drop(e->image_cache, &j->keys[i]);
    free(store);
    if (rc) return -1;
    j->g = eg_generation_begin(j->seq, e->tok, j->prompt.ids, j->prompt.image_index, n_prompt,
                               n_shared, &j->gen, cb, user, err);
    return j->g ? 0 : -1;
}

EgStatus eg_engine_begin(EgEngine *e, const EgRequest *req, EgTokenCallback cb, void *user,
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
    EgEngineJob *j = calloc(1, sizeof *j);
    if (!j) return NO_MEMORY(err);
    j->e = e;
    j->t0 = eg_now_s();
    Assembled a = {0};
    float *pixels = NULL;
    const EgBuffer **cached = NULL;
    EgStatus st = eg_engine_assemble(e, req, &a, err);
    if (st == EG_STATUS_OK) {
        j->keys = calloc(a.n_images + 1, sizeof *j->keys);
        cached = calloc(a.n_images + 1, sizeof *cached);
        if (!j->keys || !cached) st = NO_MEMORY(err);
    }
    for (uint32_t i = 0; st == EG_STATUS_OK && i < a.n_images; i++) {
        eg_image_key(a.images[i], a.image_lens[i], (uint32_t)e->model->cfg.vision.image_size,
                     &j->keys[i]);
        cached[i] = eg_image_cache_lookup(e->image_cache, &j->keys[i]);
    }
    if (st == EG_STATUS_OK) st = eg_engine_load_pixels(e, &a, cached, &pixels, err);
    if (st == EG_STATUS_OK) {
        EgPromptOptions po = eg_prompt_default_options();
        if (eg_prompt_build(e->tok, a.list.parts, a.list.n, &po, &j->prompt, err))
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
    if (st == EG_STATUS_OK) {
        if (stats) *stats = (EgRequestStats){(uint32_t)j->prompt.n_tokens, a.n_images};
        if (prepare(j, &a, cached, pixels, cb, user, err)) st = engine_failure(err);
    }
    j->prepare_s = eg_now_s() - j->t0;
    free(cached);
    free(pixels);
    eg_part_list_free(&a.list);
    free(a.images);
    free(a.image_lens);
    if (st != EG_STATUS_OK) {
        job_free(j);
        return st;
    }
    *job = j;
    return EG_STATUS_OK;
}

int eg_engine_job_finished(const EgEngineJob *j) {
    return j->failed || eg_generation_finished(j->g);
}

void eg_engine_cancel(EgEngineJob *j) { eg_generation_cancel(j->g); }

int eg_engine_step(EgEngine *e, EgEngineJob *const *jobs, uint32_t k, EgError *err) {
    EgEngineJob *want[EG_SEQUENCE_MAX_BATCH];
    EgSequence *seqs[EG_SEQUENCE_MAX_BATCH];
    int32_t ids[EG_SEQUENCE_MAX_BATCH];
    uint32_t n = 0, max = eg_sequence_max_batch(e->model);
    if (k > max) return eg_fail(err, "%u jobs in one step; at most %u", k, max);
    /* Prompts first, at most prefill_chunk tokens in all per step (chunked prefill): a long
     * prompt takes several steps, and the jobs already decoding get a token in each of them. */
    uint32_t budget = e->prefill_chunk ? e->prefill_chunk : UINT32_MAX;
    for (uint32_t i = 0; i < k && budget; i++) {
        EgEngineJob *j = jobs[i];
        uint32_t left = eg_generation_prefill_left(j->g);
        if (eg_engine_job_finished(j) || left == 0) continue;
        uint32_t chunk = left < budget ? left : budget;
        if (eg_generation_prefill(j->g, chunk, &j->err) < 0) {
            j->failed = 1;
            j->fail_status = engine_failure(&j->err);
        }
        budget -= chunk;
    }
    /* Each job whose prompt is in takes the token its logits give (streaming it); those not
     * finished want the next forward. */
    for (uint32_t i = 0; i < k; i++) {
        EgEngineJob *j = jobs[i];
        if (eg_engine_job_finished(j) || eg_generation_prefill_left(j->g)) continue;
        int r = eg_generation_advance(j->g, &j->err);
        if (r < 0) {
            j->failed = 1;
            j->fail_status = EG_STATUS_INTERNAL;
        } else if (r == 0) {
            want[n] = j;
            seqs[n] = j->seq;
            ids[n++] = eg_generation_next_input(j->g);
        }
    }
    if (n == 0) return 0;
    if (n == 1) { /* alone, the single-sequence path (the same result, one fewer copy) */
        if (eg_sequence_forward(seqs[0], &ids[0], NULL, 1, eg_generation_logits(want[0]->g), 0,
                                &want[0]->err)) {
            want[0]->failed = 1;
            want[0]->fail_status = engine_failure(&want[0]->err);
        }
        return 0;
    }
    float *logits = e->step_logits;
    EgError ferr = {0};
    int rc = eg_sequence_forward_batch(seqs, n, ids, logits, &ferr);
    for (uint32_t b = 0; b < n; b++) {
        if (rc) {
            want[b]->failed = 1;
            want[b]->fail_status = engine_failure(&ferr);
            want[b]->err = ferr;
        } else {
            memcpy(eg_generation_logits(want[b]->g), logits + (size_t)b * e->model->vocab,
                   e->model->vocab * sizeof *logits);
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
