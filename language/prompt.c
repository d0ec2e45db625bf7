/* IdeficsProcessor's prompt building and image mask (see prompt.h for the rules). The string is
 * assembled exactly as HF does and then tokenized as a whole, rather than tokenizing the parts
 * separately and concatenating ids: that is the only way to also match HF when user text holds
 * special-token strings. */
#include "language/prompt.h"

#include <stdlib.h>
#include <string.h>

#include "language/tokenizer_internal.h"
#include "language/utf8.h"

static const char FAKE[] = "<fake_token_around_image>";
static const char IMAGE[] = "<image>";
static const char EOU[] = "<end_of_utterance>";

EgPromptOptions eg_prompt_default_options(void) {
    EgPromptOptions o = {.end_of_utterance = -1, .add_eos = 0};
    return o;
}

static int append_str(EgBuf *b, const char *s) {
    return eg_buf_append(b, s, strlen(s));
}

char *eg_prompt_text(const EgTokenizer *tok, const EgPromptPart *parts, size_t n_parts,
                     const EgPromptOptions *opt, size_t *len_out, EgError *err) {
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
    EgBuf b = {0};
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
        if (p->kind != EG_PART_TEXT) {
            free(b.data);
            eg_fail(err, "prompt: part %zu has an unknown kind %d", i, (int)p->kind);
            return NULL;
        }
        if (!p->text && p->len) {
            free(b.data);
            eg_fail(err, "prompt: part %zu: NULL text", i);
            return NULL;
        }
        size_t valid = eg_utf8_valid_prefix(p->text, p->len);
        if (valid != p->len) {
            free(b.data);
            eg_fail(err, "prompt: part %zu: invalid UTF-8 at byte offset %zu", i, valid);
            return NULL;
        }
        /* Python's str.strip(" "): spaces only */
        size_t s = 0, e = p->len;
        while (s < e && p->text[s] == ' ')
            s++;
        while (e > s && p->text[e - 1] == ' ')
            e--;
        if (use_eou && last_was_text) rc = append_str(&b, EOU);
        if (rc == 0) rc = eg_buf_append(&b, p->text + s, e - s);
        last_was_image = 0;
    }
    if (rc == 0 && o.add_eos) rc = append_str(&b, eg_tokenizer_token(tok, eos));
    size_t len = b.len;
    char *out = rc == 0 ? eg_buf_take(&b) : NULL;
    if (!out) {
        free(b.data);
        eg_fail(err, "prompt: out of memory");
        return NULL;
    }
    if (len_out) *len_out = len;
    return out;
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
    char *text = eg_prompt_text(tok, parts, n_parts, opt, &len, err);
    if (!text) return -1;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = eg_tokenizer_encode(tok, text, len, 0, &ids, &n, err);
    free(text);
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
