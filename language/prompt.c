/* IdeficsProcessor's prompt building and image mask (see prompt.h for the rules). The string is
 * assembled exactly as HF does and then tokenized as a whole, rather than tokenizing the parts
 * separately and concatenating ids: two text parts in a row, or a template's text around a
 * user's, are one stretch of text for the tokenizer, as in HF. Which bytes of it are a user's
 * plain text is tracked alongside, so that only markup can spell special tokens. */
#include "language/prompt.h"

#include <stdlib.h>
#include <string.h>

#include "language/tokenizer_internal.h"
#include "language/utf8.h"

static const char FAKE[] = "<fake_token_around_image>";
static const char IMAGE[] = "<image>";
static const char EOU[] = "<end_of_utterance>";

EgPromptOptions eg_prompt_default_options(void) {
    EgPromptOptions o = {.end_of_utterance = -1, .add_eos = 0, .special_in_text = 0};
    return o;
}

static int append_str(EgBuf *b, const char *s) {
    return eg_buf_append(b, s, strlen(s));
}

/* Marks b's bytes [from, to) as plain text in *plain (one flag per byte of b, grown to b->len,
 * new bytes markup). */
static int mark_plain(EgBuf *plain, const EgBuf *b, size_t from, size_t to) {
    size_t had = plain->len;
    if (b->len > had) {
        if (eg_buf_reserve(plain, b->len - had)) return -1;
        memset(plain->data + had, 0, b->len - had);
        plain->len = b->len;
    }
    if (to > from) memset(plain->data + from, 1, to - from);
    return 0;
}

/* The prompt string, and where plain_out is non-NULL one flag per byte of it: 1 where the byte
 * is a user's text (malloc'd). */
static char *prompt_text(const EgTokenizer *tok, const EgPromptPart *parts, size_t n_parts,
                         const EgPromptOptions *opt, size_t *len_out, uint8_t **plain_out,
                         EgError *err) {
    EgPromptOptions o = opt ? *opt : eg_prompt_default_options();
    int32_t bos = eg_tokenizer_bos(tok), eos = eg_tokenizer_eos(tok);
    if (bos < 0) {
        eg_fail(err, "prompt: the tokenizer has no BOS token");
        return NULL;
    }
    if (eg_tokenizer_find(tok, IMAGE) < 0 || eg_tokenizer_find(tok, FAKE) < 0) {
        eg_fail(err, "prompt: the tokenizer lacks the %s / %s tokens", IMAGE, FAKE);
        return NULL;
    }
    int32_t eou = eg_tokenizer_find(tok, EOU);
    int use_eou =
        o.end_of_utterance < 0 ? eou >= 0 && eg_tokenizer_is_special(tok, eou) : o.end_of_utterance;
    if (use_eou && eou < 0) {
        eg_fail(err, "prompt: end_of_utterance requested but the tokenizer has no %s", EOU);
        return NULL;
    }
    if (o.add_eos && eos < 0) {
        eg_fail(err, "prompt: add_eos requested but the tokenizer has no EOS token");
        return NULL;
    }
    EgBuf b = {0}, plain = {0};
    int rc = append_str(&b, eg_tokenizer_token(tok, bos));
    int last_was_image = 0, last_was_text = 0;
    for (size_t i = 0; i < n_parts && rc == 0; i++) {
        const EgPromptPart *p = &parts[i];
        /* HF updates this flag before looking at the item (and never for the first one) */
        if (i > 0) last_was_text = !last_was_image;
        if (p->kind == EG_PART_IMAGE) {
            if (!last_was_image) rc = append_str(&b, FAKE);
            if (rc == 0) rc = append_str(&b, IMAGE);
            if (rc == 0) rc = append_str(&b, FAKE);
            last_was_image = 1;
            continue;
        }
        const char *bad = NULL;
        size_t valid = 0;
        if (p->kind != EG_PART_TEXT)
            bad = "has an unknown kind";
        else if (!p->text && p->len)
            bad = "NULL text";
        else if ((valid = eg_utf8_valid_prefix(p->text, p->len)) != p->len)
            bad = "invalid UTF-8";
        else if (p->markup && (p->user_at > p->len || p->user_len > p->len - p->user_at))
            bad = "user text outside the text";
        if (bad) {
            free(b.data);
            free(plain.data);
            if (valid != p->len && p->kind == EG_PART_TEXT && p->text)
                eg_fail(err, "prompt: part %zu: %s at byte offset %zu", i, bad, valid);
            else
                eg_fail(err, "prompt: part %zu: %s", i, bad);
            return NULL;
        }
        /* Python's str.strip(" "): spaces only */
        size_t s = 0, e = p->len;
        while (s < e && p->text[s] == ' ')
            s++;
        while (e > s && p->text[e - 1] == ' ')
            e--;
        if (use_eou && last_was_text) rc = append_str(&b, EOU);
        size_t at = b.len;
        if (rc == 0) rc = eg_buf_append(&b, p->text + s, e - s);
        /* the user's bytes that survived the strip, where they landed */
        size_t u0 = p->markup ? p->user_at : 0, u1 = p->markup ? p->user_at + p->user_len : p->len;
        u0 = u0 < s ? s : u0;
        u1 = u1 > e ? e : u1;
        if (rc == 0 && plain_out && u1 > u0)
            rc = mark_plain(&plain, &b, at + (u0 - s), at + (u1 - s));
        last_was_image = 0;
    }
    if (rc == 0 && o.add_eos) rc = append_str(&b, eg_tokenizer_token(tok, eos));
    if (rc == 0 && plain_out) rc = mark_plain(&plain, &b, 0, 0);
    size_t len = b.len;
    char *out = rc == 0 ? eg_buf_take(&b) : NULL;
    if (!out) {
        free(b.data);
        free(plain.data);
        eg_fail(err, "prompt: out of memory");
        return NULL;
    }
    if (len_out) *len_out = len;
    if (plain_out) *plain_out = (uint8_t *)plain.data;
    return out;
}

char *eg_prompt_text(const EgTokenizer *tok, const EgPromptPart *parts, size_t n_parts,
                     const EgPromptOptions *opt, size_t *len_out, EgError *err) {
    return prompt_text(tok, parts, n_parts, opt, len_out, NULL, err);
}

void eg_prompt_image_index(const int32_t *ids, size_t n, int32_t image_id, int32_t eos_id,
                           int n_images, int32_t *out) {
    int32_t count = -1;
    int seen_eos = 0;
    for (size_t t = 0; t < n; t++) {
        if (ids[t] == image_id) {
            count++;
            seen_eos = 0;
        }
        out[t] = seen_eos || count >= n_images ? -1 : count;
        if (eos_id >= 0 && ids[t] == eos_id) seen_eos = 1;
    }
}

int eg_prompt_build(const EgTokenizer *tok, const EgPromptPart *parts, size_t n_parts,
                    const EgPromptOptions *opt, EgPrompt *out, EgError *err) {
    memset(out, 0, sizeof *out);
    size_t len = 0;
    uint8_t *plain = NULL;
    int special_in_text = opt && opt->special_in_text;
    char *text = prompt_text(tok, parts, n_parts, opt, &len, special_in_text ? NULL : &plain, err);
    if (!text) return -1;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = eg_tokenizer_encode_plain(tok, text, len, plain, &ids, &n, err);
    free(text);
    free(plain);
    if (rc) return eg_fail_prefix(err, "prompt");
    int n_images = 0;
    for (size_t i = 0; i < n_parts; i++)
        n_images += parts[i].kind == EG_PART_IMAGE;
    int32_t *index = malloc((n ? n : 1) * sizeof *index);
    if (!index) {
        free(ids);
        return eg_fail(err, "prompt: out of memory");
    }
    eg_prompt_image_index(ids, n, eg_tokenizer_find(tok, IMAGE), eg_tokenizer_eos(tok), n_images,
                          index);
    out->ids = ids;
    out->image_index = index;
    out->n_tokens = n;
    out->n_images = n_images;
    return 0;
}

void eg_prompt_free(EgPrompt *p) {
    if (!p) return;
    free(p->ids);
    free(p->image_index);
    memset(p, 0, sizeof *p);
}

int32_t *eg_prompt_image_mask_onehot(const EgPrompt *p, int n_cols, EgError *err) {
    if (n_cols < 1) {
        eg_fail(err, "image mask: n_cols must be >= 1 (got %d)", n_cols);
        return NULL;
    }
    int32_t *m = calloc(p->n_tokens ? p->n_tokens * (size_t)n_cols : 1, sizeof *m);
    if (!m) {
        eg_fail(err, "image mask: out of memory");
        return NULL;
    }
    for (size_t t = 0; t < p->n_tokens; t++) {
        int32_t k = p->image_index[t];
        if (k >= 0 && k < n_cols) m[t * (size_t)n_cols + (size_t)k] = 1;
    }
    return m;
}
