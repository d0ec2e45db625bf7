/* Prompt assembly: an interleaved list of text and image parts -> the exact input_ids and image
 * attention mask that HF's IdeficsProcessor builds (transformers' processing_idefics.py).
 *
 * The prompt string, per HF:
 *  - starts with the BOS token string ("<s>");
 *  - an image part appends "<fake_token_around_image><image><fake_token_around_image>", or only
 *    "<image><fake_token_around_image>" when the previous part was an image too (shared fake);
 *  - a text part is stripped of ' ' (spaces only, not tabs/newlines) at both ends; with
 *    end-of-utterance on and the previous part also text, "<end_of_utterance>" goes first;
 *  - with add_eos, the EOS string ends it.
 * It is then tokenized with add_special_tokens=False, as a whole (so text without special-token
 * strings gets HF's ids exactly). Structure comes only from the parts and the markup around them:
 * special-token strings written inside a user's text ("<image>", "<fake_token_around_image>",
 * "<s>", "</s>", "<unk>", "<end_of_utterance>") are tokenized as the plain characters they spell,
 * so typed text can neither add an image position nor end or restart the sequence. Template text
 * (EgPromptPart.markup) is trusted, and special-token strings in it are those tokens. HF's
 * processor interprets them in user text too; EgPromptOptions.special_in_text does that.
 * Unlike HF, text that looks like a URL is never fetched as an image: a text part is text.
 *
 * The image mask, per token t (HF's image_attention_mask_for_packed_input_ids): the index of the
 * most recent <image> token at or before t, counting from 0; -1 before the first one; -1 for
 * tokens strictly after an EOS token with no <image> since (the EOS itself keeps its image);
 * -1 for indices >= the number of image parts. During generation HF gives each new token the
 * mask row of the last prompt token (it does not re-apply the EOS rule).
 *
 * Images themselves are not handled here: an image part is a placeholder, and images are
 * numbered 0, 1, ... in the order their parts appear. */
#ifndef EGRET_PROMPT_H
#define EGRET_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "language/tokenizer.h"
#include "runtime/error.h"

typedef enum EgPartKind { EG_PART_TEXT = 0, EG_PART_IMAGE = 1 } EgPartKind;

typedef struct EgPromptPart {
    EgPartKind kind;
    const char *text; /* EG_PART_TEXT: UTF-8 (need not be NUL-terminated); unused for images */
    size_t len;
    /* 0 (the default): the whole text is a user's, tokenized as plain text. 1: the text is
     * markup (a template's), where special-token strings are tokens, except for the user's text
     * at [user_at, user_at + user_len), which stays plain. */
    int markup;
    size_t user_at, user_len;
} EgPromptPart;

typedef struct EgPromptOptions {
    /* -1 (auto, HF's default): on iff the tokenizer has a special "<end_of_utterance>" token (the
     * instruct checkpoints); 0 off; 1 on (error if the token does not exist). */
    int end_of_utterance;
    int add_eos; /* append the EOS string (HF add_eos_token, default off) */
    /* 1: special-token strings in user text are those tokens too, as in HF's processor (for
     * comparisons with it; never for text from a request). Default 0: plain text. */
    int special_in_text;
} EgPromptOptions;

/* { .end_of_utterance = -1, .add_eos = 0, .special_in_text = 0 } */
EgPromptOptions eg_prompt_default_options(void);

typedef struct EgPrompt {
    int32_t *ids;         /* [n_tokens] */
    int32_t *image_index; /* [n_tokens]: the image token t attends to, or -1 (engine form) */
    size_t n_tokens;
    int n_images; /* number of image parts */
} EgPrompt;

/* The prompt string HF would tokenize (malloc'd, NUL-terminated; *len_out if non-NULL).
 * opt may be NULL (defaults). Fails on invalid UTF-8 in a text part ("part N: invalid UTF-8 at
 * byte offset K", K within that part), or a tokenizer without <s>/<image>/<fake...> tokens. */
char *eg_prompt_text(const EgTokenizer *tok, const EgPromptPart *parts, size_t n_parts,
                     const EgPromptOptions *opt, size_t *len_out, EgError *err);

/* Builds ids and the per-token image index. On success fills *out (free with eg_prompt_free). */
int eg_prompt_build(const EgTokenizer *tok, const EgPromptPart *parts, size_t n_parts,
                    const EgPromptOptions *opt, EgPrompt *out, EgError *err);
void eg_prompt_free(EgPrompt *p);

/* HF's mask rule on any id sequence (also usable for packed or extended sequences): writes
 * out[n]. image_id / eos_id: the <image> and EOS ids (eos_id -1: no EOS rule). */
void eg_prompt_image_index(const int32_t *ids, size_t n, int32_t image_id, int32_t eos_id,
                           int n_images, int32_t *out);

/* The one-hot form HF returns: malloc'd int32 [n_tokens, n_cols], row t has a single 1 in column
 * image_index[t] (when 0 <= it < n_cols), else zeros. HF uses n_cols = max images in the batch,
 * or 1 when there are none. */
int32_t *eg_prompt_image_mask_onehot(const EgPrompt *p, int n_cols, EgError *err);

#endif
