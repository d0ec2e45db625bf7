#include "engine/generate.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/buf.h"
#include "runtime/clock.h"

const char *eg_finish_reason_name(EgFinishReason r) {
    switch (r) {
    case EG_FINISH_LENGTH:
        return "length";
    case EG_FINISH_STOP:
        return "stop";
    case EG_FINISH_EOS:
        return "end_of_sequence";
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

/* The generated text so far and how much of it has been handed to the callback. */
typedef struct TextState {
    EgBuf b;
    size_t emitted;
} TextState;

/* Earliest start of a stop string in the text (searching only where a new match can begin),
 * or -1. */
static long find_stop(const TextState *t, const EgGenerateParams *p, size_t search_from) {
    long best = -1;
    for (size_t i = 0; i < p->n_stop; i++) {
        const char *hit = strstr(t->b.data + search_from, p->stop[i]);
        if (hit && (best < 0 || hit - t->b.data < best)) best = hit - t->b.data;
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
            if (k <= t->b.len && memcmp(t->b.data + t->b.len - k, p->stop[i], k) == 0) {
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

int eg_generate(EgFamilyModel *m, const EgTokenizer *tok, const int32_t *prompt_ids,
                const int32_t *image_of_token, uint32_t n_prompt, const float *pixels,
                uint32_t n_images, const EgGenerateParams *params, EgTokenCallback cb, void *user,
                EgGenerateResult *out, EgError *err) {
    memset(out, 0, sizeof *out);
    double t0 = eg_now_s();
    uint32_t max_new = params->max_new_tokens;
    EgFamilySeq *seq = eg_fseq_new(m, n_prompt + (max_new ? max_new : 1), err);
    if (!seq || eg_fseq_set_images(seq, pixels, n_images, err)) {
        eg_fseq_free(seq);
        return -1;
    }
    double images_s = eg_now_s() - t0;
    int rc = eg_generate_on(seq, tok, prompt_ids, image_of_token, n_prompt, 0, params, cb, user,
                            out, err);
    if (rc == 0) { /* the image stage counts toward the time to first token */
        out->prefill_s += images_s;
        out->total_s += images_s;
    }
    eg_fseq_free(seq);
    return rc;
}

struct EgGeneration {
    EgFamilySeq *seq;
    const EgGenerateParams *params;
    EgTokenCallback cb;
    void *user;
    EgSampler *sampler;
    EgDecodeStream *ds;
    float *logits;    /* the logits of the last token fed */
    int32_t *context; /* prompt + generated ids */
    size_t n_context, n_prompt;
    /* what the repetition penalty sees: the context without input-only ids past the logits
     * (mllama's <|image|> is the embedding row after the vocabulary: it has no logit) */
    int32_t *seen;
    size_t n_seen;
    int32_t *image_of_token; /* the prompt's (NULL: text only) */
    size_t n_prefilled;      /* prompt tokens in the KV cache (eg_generation_prefill) */
    uint32_t step;
    const EgFamilyModel *m; /* which ids end the generation */
    size_t stop_len;
    TextState text;
    int finished;
    EgFinishReason finish;
    double t0; /* eg_now_s() at the start */
    double prefill_s;
};

void eg_generation_free(EgGeneration *g) {
    if (!g) return;
    eg_buf_free(&g->text.b);
    free(g->context);
    free(g->seen);
    free(g->image_of_token);
    free(g->logits);
    eg_decode_stream_free(g->ds);
    eg_sampler_free(g->sampler);
    free(g);
}

EgGeneration *eg_generation_begin(EgFamilySeq *seq, const EgTokenizer *tok,
                                  const int32_t *prompt_ids, const int32_t *image_of_token,
                                  uint32_t n_prompt, uint32_t n_cached,
                                  const EgGenerateParams *params, EgTokenCallback cb, void *user,
                                  EgError *err) {
    const EgFamilyModel *m = seq->m;
    if (eg_sampling_params_validate(&params->sampling, err)) return NULL;
    for (size_t i = 0; i < params->n_stop; i++)
        if (!params->stop[i] || !params->stop[i][0]) {
            eg_fail(err, "stop string %zu is empty", i);
            return NULL;
        }
    if (n_prompt == 0) {
        eg_fail(err, "the prompt is empty");
        return NULL;
    }
    if (n_cached >= n_prompt) n_cached = n_prompt - 1; /* the last token yields the logits */
    if (n_cached > eg_fseq_n_past(seq)) {
        eg_fail(err, "the sequence holds fewer cached tokens");
        return NULL;
    }
    EgGeneration *g = calloc(1, sizeof *g);
    if (!g) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    g->t0 = eg_now_s();
    g->seq = seq;
    g->params = params;
    g->cb = cb;
    g->user = user;
    g->sampler = eg_sampler_new(&params->sampling, (int)m->info.vocab);
    g->ds = eg_decode_stream_new(tok, 1);
    g->logits = malloc(m->info.vocab * sizeof *g->logits);
    g->context = malloc((n_prompt + params->max_new_tokens + 1) * sizeof *g->context);
    g->seen = malloc((n_prompt + params->max_new_tokens + 1) * sizeof *g->seen);
    g->image_of_token = image_of_token ? malloc(n_prompt * sizeof *g->image_of_token) : NULL;
    if (!g->sampler || !g->ds || !g->logits || !g->context || !g->seen ||
        (image_of_token && !g->image_of_token)) {
        eg_fail(err, "out of host memory");
        eg_generation_free(g);
        return NULL;
    }
    memcpy(g->context, prompt_ids, n_prompt * sizeof *g->context);
    for (uint32_t t = 0; t < n_prompt; t++)
        if (prompt_ids[t] < (int32_t)m->info.vocab) g->seen[g->n_seen++] = prompt_ids[t];
    if (image_of_token)
        memcpy(g->image_of_token, image_of_token, n_prompt * sizeof *g->image_of_token);
    g->n_context = g->n_prompt = n_prompt;
    g->m = m;
    g->stop_len = longest_stop(params);
    g->finish = EG_FINISH_LENGTH;
    g->finished = params->max_new_tokens == 0;
    eg_fseq_rewind(seq, n_cached); /* what follows the shared prefix is recomputed */
    g->n_prefilled = n_cached;
    return g;
}

int eg_generation_prefill(EgGeneration *g, uint32_t max_tokens, EgError *err) {
    size_t left = g->n_prompt - g->n_prefilled;
    if (left == 0) return 1;
    uint32_t n = max_tokens && max_tokens < left ? max_tokens : (uint32_t)left;
    size_t at = g->n_prefilled;
    /* Only the last chunk's logits are used; the earlier ones' are computed and overwritten
     * (one row of the LM head per chunk). */
    if (eg_fseq_forward(g->seq, g->context + at,
                            g->image_of_token ? g->image_of_token + at : NULL, n, g->logits, 0,
                            err))
        return -1;
    g->n_prefilled += n;
    return g->n_prefilled == g->n_prompt;
}

uint32_t eg_generation_prefill_left(const EgGeneration *g) {
    return (uint32_t)(g->n_prompt - g->n_prefilled);
}

EgFamilySeq *eg_generation_sequence(const EgGeneration *g) {
    return g->seq;
}
int eg_generation_finished(const EgGeneration *g) {
    return g->finished;
}
int32_t eg_generation_next_input(const EgGeneration *g) {
    return g->context[g->n_context - 1];
}
float *eg_generation_logits(EgGeneration *g) {
    return g->logits;
}

int eg_generation_advance(EgGeneration *g, EgError *err) {
    if (g->finished) return 1;
    if (g->n_prefilled < g->n_prompt) return eg_fail(err, "the prompt is not prefilled yet");
    const EgGenerateParams *params = g->params;
    TextState *text = &g->text;
    int32_t id = eg_sampler_next(g->sampler, g->logits, g->seen, g->n_seen, err);
    if (id < 0) return -1;
    if (g->step++ == 0) g->prefill_s = eg_now_s() - g->t0;
    g->context[g->n_context++] = id;
    g->seen[g->n_seen++] = id;
    if (eg_family_is_eos(g->m, id) && !params->ignore_eos) {
        g->finish = EG_FINISH_EOS;
        return g->finished = 1;
    }
    char *piece = NULL;
    if (eg_decode_stream_push(g->ds, id, &piece, err)) return -1;
    size_t search_from = text->b.len > g->stop_len ? text->b.len - g->stop_len : 0;
    int failed = eg_buf_append(&text->b, piece, strlen(piece));
    free(piece);
    if (failed) return eg_fail(err, "out of host memory");
    long stop_at = params->n_stop ? find_stop(text, params, search_from) : -1;
    size_t final_len = stop_at >= 0 ? (size_t)stop_at : text->b.len - held_back(text, params);
    if (final_len < text->emitted) final_len = text->emitted;
    int cancel =
        g->cb ? g->cb(g->user, id, text->b.data + text->emitted, final_len - text->emitted) : 0;
    text->emitted = final_len;
    if (stop_at >= 0) {
        text->b.len = (size_t)stop_at;
        text->b.data[text->b.len] = '\0';
        g->finish = EG_FINISH_STOP;
        return g->finished = 1;
    }
    if (cancel) {
        g->finish = EG_FINISH_CANCELLED;
        return g->finished = 1;
    }
    if (g->step >= params->max_new_tokens) return g->finished = 1; /* EG_FINISH_LENGTH */
    return 0;
}

void eg_generation_cancel(EgGeneration *g) {
    if (g->finished) return;
    g->finish = EG_FINISH_CANCELLED;
    g->finished = 1;
}

int eg_generation_end(EgGeneration *g, EgGenerateResult *out, EgError *err) {
    memset(out, 0, sizeof *out);
    TextState *text = &g->text;
    if (g->finish != EG_FINISH_STOP) {
        /* Bytes the decoder still holds (an unfinished UTF-8 sequence) and held-back text. */
        char *rest = NULL;
        if (eg_decode_stream_flush(g->ds, &rest, err)) return -1;
        int failed = rest && eg_buf_append(&text->b, rest, strlen(rest));
        free(rest);
        if (failed) return eg_fail(err, "out of host memory");
        if (g->cb && text->b.len > text->emitted)
            g->cb(g->user, -1, text->b.data + text->emitted, text->b.len - text->emitted);
        text->emitted = text->b.len;
    }
    out->n_ids = g->n_context - g->n_prompt - (g->finish == EG_FINISH_EOS ? 1 : 0);
    out->ids = malloc((out->n_ids + 1) * sizeof *out->ids);
    out->text = eg_buf_take(&text->b);
    if (!out->ids || !out->text) {
        eg_generate_result_free(out);
        return eg_fail(err, "out of host memory");
    }
    memcpy(out->ids, g->context + g->n_prompt, out->n_ids * sizeof *out->ids);
    out->finish = g->finish;
    out->prefill_s = g->step ? g->prefill_s : eg_now_s() - g->t0;
    out->total_s = eg_now_s() - g->t0;
    return 0;
}

int eg_generate_on(EgFamilySeq *seq, const EgTokenizer *tok, const int32_t *prompt_ids,
                   const int32_t *image_of_token, uint32_t n_prompt, uint32_t n_cached,
                   const EgGenerateParams *params, EgTokenCallback cb, void *user,
                   EgGenerateResult *out, EgError *err) {
    memset(out, 0, sizeof *out);
    EgGeneration *g = eg_generation_begin(seq, tok, prompt_ids, image_of_token, n_prompt, n_cached,
                                          params, cb, user, err);
    if (!g) return -1;
    int rc = eg_generation_prefill(g, 0, err) < 0 ? -1 : 0;
    while (rc == 0 && (rc = eg_generation_advance(g, err)) == 0) {
        int32_t next = eg_generation_next_input(g);
        if (eg_fseq_forward(seq, &next, NULL, 1, g->logits, 0, err)) {
            rc = -1;
            break;
        }
    }
    if (rc >= 0) rc = eg_generation_end(g, out, err);
    eg_generation_free(g);
    return rc < 0 ? -1 : 0;
}
