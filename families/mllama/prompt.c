#include "families/mllama/prompt.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/buf.h"

#define IMAGE "<|image|>"
#define BOS "<|begin_of_text|>"

/* Appends len bytes to the text and as many plain flags. */
static int append(EgBuf *text, EgBuf *plain, const char *s, size_t len, uint8_t is_plain) {
    if (eg_buf_append(text, s, len)) return -1;
    for (size_t i = 0; i < len; i++)
        if (eg_buf_append(plain, &is_plain, 1)) return -1;
    return 0;
}

/* Whether the parts' markup (never a user's text) spells the BOS string. */
static int markup_has_bos(const EgPromptPart *parts, size_t n_parts) {
    size_t bos_len = strlen(BOS);
    for (size_t i = 0; i < n_parts; i++) {
        const EgPromptPart *p = &parts[i];
        if (p->kind != EG_PART_TEXT || !p->markup) continue;
        for (size_t at = 0; at + bos_len <= p->len; at++)
            if (memcmp(p->text + at, BOS, bos_len) == 0 &&
                (at + bos_len <= p->user_at || at >= p->user_at + p->user_len))
                return 1;
    }
    return 0;
}

/* One text part: markup bytes flagged 0, the user's range (or all of a plain part) flagged 1. */
static int append_text(EgBuf *text, EgBuf *plain, const EgPromptPart *p) {
    if (!p->markup) return append(text, plain, p->text, p->len, 1);
    size_t at = p->user_at < p->len ? p->user_at : p->len;
    size_t end = at + p->user_len < p->len ? at + p->user_len : p->len;
    return append(text, plain, p->text, at, 0) || append(text, plain, p->text + at, end - at, 1) ||
           append(text, plain, p->text + end, p->len - end, 0);
}

int eg_mllama_prompt_build(const EgTokenizer *tok, const EgPromptPart *parts, size_t n_parts,
                           EgPrompt *out, EgError *err) {
    memset(out, 0, sizeof *out);
    int32_t image_id = eg_tokenizer_find(tok, IMAGE);
    if (image_id < 0 || eg_tokenizer_find(tok, BOS) < 0)
        return eg_fail(err, "the tokenizer has no %s or %s token: not a Llama 3 tokenizer", IMAGE,
                       BOS);
    int templated = markup_has_bos(parts, n_parts);
    EgBuf text = {0}, plain = {0};
    size_t i = 0;
    int rc = 0;
    if (!templated) { /* leading images go before the BOS the processor writes */
        for (; i < n_parts && parts[i].kind == EG_PART_IMAGE && rc == 0; i++)
            rc = append(&text, &plain, IMAGE, strlen(IMAGE), 0);
        if (rc == 0) rc = append(&text, &plain, BOS, strlen(BOS), 0);
    }
    for (; i < n_parts && rc == 0; i++)
        rc = parts[i].kind == EG_PART_IMAGE ? append(&text, &plain, IMAGE, strlen(IMAGE), 0)
                                            : append_text(&text, &plain, &parts[i]);
    int32_t *ids = NULL;
    size_t n = 0;
    if (rc == 0)
        rc = eg_tokenizer_encode_plain(tok, text.data, text.len, (const uint8_t *)plain.data, &ids,
                                       &n, err);
    else
        eg_fail(err, "out of host memory");
    eg_buf_free(&text);
    eg_buf_free(&plain);
    if (rc) return eg_fail_prefix(err, "prompt");
    int32_t bos = templated ? -1 : eg_tokenizer_template_bos(tok);
    size_t lead = bos >= 0;
    int32_t *all = malloc((n + lead + 1) * sizeof *all);
    int32_t *index = malloc((n + lead + 1) * sizeof *index);
    if (!all || !index) {
        free(ids);
        free(all);
        free(index);
        return eg_fail(err, "prompt: out of host memory");
    }
    if (lead) all[0] = bos;
    if (n) memcpy(all + lead, ids, n * sizeof *ids);
    free(ids);
    int n_images = 0, seen = 0;
    for (size_t k = 0; k < n_parts; k++)
        n_images += parts[k].kind == EG_PART_IMAGE;
    for (size_t t = 0; t < n + lead; t++) {
        seen += all[t] == image_id;
        index[t] = seen - 1;
    }
    if (seen != n_images) {
        free(all);
        free(index);
        return eg_fail(err, "prompt: %d %s tokens for %d images", seen, IMAGE, n_images);
    }
    *out = (EgPrompt){.ids = all, .image_index = index, .n_tokens = n + lead, .n_images = n_images};
    return 0;
}

void eg_mllama_image_index(const int32_t *ids, size_t n, int32_t image_token, int n_images,
                           int32_t *out) {
    int seen = 0;
    for (size_t t = 0; t < n; t++) {
        seen += ids[t] == image_token;
        out[t] = seen > n_images ? -1 : seen - 1;
    }
}

void eg_mllama_image_run_step(EgMllamaImageRun *r, int32_t id, int32_t image, int32_t image_token) {
    if (id == image_token) {
        if (!r->prev_is_image || r->first < 0) r->first = image;
        r->prev_is_image = 1;
    } else {
        r->prev_is_image = 0;
    }
    r->last = image;
    if (image < 0) r->first = -1;
}
