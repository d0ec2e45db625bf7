#include "language/generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "language/sequence.h"

const char *eg_finish_reason_name(EgFinishReason r) {
    switch (r) {
    case EG_FINISH_LENGTH:
        return "length";
    case EG_FINISH_STOP:
        return "stop";
    case EG_FINISH_EOS:
        return "eos";
    case EG_FINISH_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

void eg_generate_result_free(EgGenerateResult *r) {
    free(r->text);
    free(r->ids);
    memset(r, 0, sizeof *r);
}

static double seconds_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* The generated text so far and how much of it has been handed to the callback. */
typedef struct TextState {
    char *buf;
    size_t len, cap, emitted;
} TextState;

static int text_append(TextState *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *nb = realloc(t->buf, cap);
        if (!nb) return -1;
        t->buf = nb;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
    return 0;
}

/* Earliest start of a stop string in the text (searching only where a new match can begin),
 * or -1. */
static long find_stop(const TextState *t, const EgGenerateParams *p, size_t search_from) {
    long best = -1;
    for (size_t i = 0; i < p->n_stop; i++) {
        const char *hit = strstr(t->buf + search_from, p->stop[i]);
        if (hit && (best < 0 || hit - t->buf < best)) best = hit - t->buf;
    }
    return best;
}

/* Length of the longest suffix of the text that is a proper prefix of a stop string: that part
 * must wait, it may yet become a stop. */
static size_t held_back(const TextState *t, const EgGenerateParams *p) {
    size_t hold = 0;
    for (size_t i = 0; i < p->n_stop; i++) {
        size_t sl = strlen(p->stop[i]);
        for (size_t k = sl - 1; k > hold; k--)
            if (k <= t->len && memcmp(t->buf + t->len - k, p->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

static size_t longest_stop(const EgGenerateParams *p) {
    size_t n = 0;
    for (size_t i = 0; i < p->n_stop; i++)
        if (strlen(p->stop[i]) > n) n = strlen(p->stop[i]);
    return n;
}

int eg_generate(EgModel *m, const EgTokenizer *tok, const int32_t *prompt_ids,
                const int32_t *image_of_token, uint32_t n_prompt, const float *pixels,
                uint32_t n_images, const EgGenerateParams *params, EgTokenCallback cb, void *user,
                EgGenerateResult *out, EgError *err) {
    memset(out, 0, sizeof *out);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint32_t max_new = params->max_new_tokens;
    EgSequence *seq = eg_sequence_new(m, n_prompt + (max_new ? max_new : 1), err);
    if (!seq || eg_sequence_set_images(seq, pixels, n_images, err)) {
        eg_sequence_free(seq);
        return -1;
    }
    double images_s = seconds_since(&t0);
    int rc = eg_generate_on(seq, tok, prompt_ids, image_of_token, n_prompt, 0, params, cb, user,
                            out, err);
    if (rc == 0) { /* the image stage counts toward the time to first token */
        out->prefill_s += images_s;
        out->total_s += images_s;
    }
    eg_sequence_free(seq);
    return rc;
}

int eg_generate_on(EgSequence *seq, const EgTokenizer *tok, const int32_t *prompt_ids,
                   const int32_t *image_of_token, uint32_t n_prompt, uint32_t n_cached,
                   const EgGenerateParams *params, EgTokenCallback cb, void *user,
                   EgGenerateResult *out, EgError *err) {
    memset(out, 0, sizeof *out);
    EgModel *m = seq->m;
    if (eg_sampling_params_validate(&params->sampling, err)) return -1;
    for (size_t i = 0; i < params->n_stop; i++)
        if (!params->stop[i] || !params->stop[i][0])
            return eg_fail(err, "stop string %zu is empty", i);
    if (n_prompt == 0) return eg_fail(err, "the prompt is empty");
    if (n_cached >= n_prompt) n_cached = n_prompt - 1; /* the last token yields the logits */
    if (n_cached > seq->n_past) return eg_fail(err, "the sequence holds fewer cached tokens");
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint32_t max_new = params->max_new_tokens;
    EgSampler *sampler = eg_sampler_new(&params->sampling, (int)m->vocab);
    EgDecodeStream *ds = eg_decode_stream_new(tok, 1);
    float *logits = malloc(m->vocab * sizeof *logits);
    int32_t *context = malloc((n_prompt + max_new + 1) * sizeof *context);
    TextState text = {0};
    int rc = -1;
    if (!sampler || !ds || !logits || !context) {
        eg_fail(err, "out of host memory");
        goto done;
    }
    memcpy(context, prompt_ids, n_prompt * sizeof *context);
    size_t n_context = n_prompt;
    seq->n_past = n_cached; /* what follows the shared prefix is recomputed */
    if (eg_sequence_forward(seq, prompt_ids + n_cached,
                            image_of_token ? image_of_token + n_cached : NULL, n_prompt - n_cached,
                            logits, 0, err))
        goto done;
    int32_t eos = (int32_t)m->cfg.eos_token_id;
    size_t stop_len = longest_stop(params);
    out->finish = EG_FINISH_LENGTH;
    for (uint32_t step = 0; step < max_new; step++) {
        if (step > 0 && eg_sequence_forward(seq, &context[n_context - 1], NULL, 1, logits, 0, err))
            goto done;
        int32_t id = eg_sampler_next(sampler, logits, context, n_context, err);
        if (id < 0) goto done;
        if (step == 0) out->prefill_s = seconds_since(&t0);
        context[n_context++] = id;
        if (id == eos && !params->ignore_eos) {
            out->finish = EG_FINISH_EOS;
            break;
        }
        char *piece = NULL;
        if (eg_decode_stream_push(ds, id, &piece, err)) goto done;
        size_t search_from = text.len > stop_len ? text.len - stop_len : 0;
        int failed = text_append(&text, piece, strlen(piece));
        free(piece);
        if (failed) {
            eg_fail(err, "out of host memory");
            goto done;
        }
        long stop_at = params->n_stop ? find_stop(&text, params, search_from) : -1;
        size_t final_len = stop_at >= 0 ? (size_t)stop_at : text.len - held_back(&text, params);
        if (final_len < text.emitted) final_len = text.emitted;
        int cancel = cb ? cb(user, id, text.buf + text.emitted, final_len - text.emitted) : 0;
        text.emitted = final_len;
        if (stop_at >= 0) {
            text.len = (size_t)stop_at;
            text.buf[text.len] = '\0';
            out->finish = EG_FINISH_STOP;
            break;
        }
        if (cancel) {
            out->finish = EG_FINISH_CANCELLED;
            break;
        }
    }
    if (out->finish != EG_FINISH_STOP) {
        /* Bytes the decoder still holds (an unfinished UTF-8 sequence) and held-back text. */
        char *rest = NULL;
        if (eg_decode_stream_flush(ds, &rest, err)) goto done;
        int failed = rest && text_append(&text, rest, strlen(rest));
        free(rest);
        if (failed || (!text.buf && text_append(&text, "", 0))) {
            eg_fail(err, "out of host memory");
            goto done;
        }
        if (cb && text.len > text.emitted)
            cb(user, -1, text.buf + text.emitted, text.len - text.emitted);
        text.emitted = text.len;
    }
    if (!text.buf && text_append(&text, "", 0)) {
        eg_fail(err, "out of host memory");
        goto done;
    }
    out->n_ids = n_context - n_prompt - (out->finish == EG_FINISH_EOS ? 1 : 0);
    out->ids = malloc((out->n_ids + 1) * sizeof *out->ids);
    if (!out->ids) {
        eg_fail(err, "out of host memory");
        goto done;
    }
    memcpy(out->ids, context + n_prompt, out->n_ids * sizeof *out->ids);
    out->text = text.buf;
    text.buf = NULL;
    if (out->prefill_s == 0) out->prefill_s = seconds_since(&t0);
    out->total_s = seconds_since(&t0);
    rc = 0;
done:
    if (rc) {
        free(out->ids);
        memset(out, 0, sizeof *out);
    }
    free(text.buf);
    free(context);
    free(logits);
    eg_decode_stream_free(ds);
    eg_sampler_free(sampler);
    return rc;
}
