/* mllama's processor rules (HF MllamaProcessor, ../shared/docs/mllama.md §7): an interleaved list
 * of text and image parts -> input ids, and per token the image it sees.
 *
 * The prompt string: each image part is "<|image|>", each text part its text (a user's text is
 * plain: special-token strings typed in it are the characters they spell; template markup,
 * EgPromptPart.markup, may spell special tokens). Then, as the processor does:
 *  - BOS at the string level (§7.1 rule 1): unless "<|begin_of_text|>" is already there, the
 *    leading images are moved in front of it: "<|image|>"×k "<|begin_of_text|>" rest;
 *  - BOS at the token level (rule 2): the tokenizer.json post-processor's BOS is prepended, as
 *    processor(text=...) does, except when the prompt's markup spells "<|begin_of_text|>" itself:
 *    a template's output gets one BOS, as apply_chat_template(tokenize=True) gives.
 *
 * image_index[t]: how many "<|image|>" tokens are at or before t, minus one (-1 before the first).
 * Which images a token sees follows from it (eg_mllama_images_seen). */
#ifndef EGRET_MLLAMA_PROMPT_H
#define EGRET_MLLAMA_PROMPT_H

#include "language/prompt.h"

int eg_mllama_prompt_build(const EgTokenizer *tok, const EgPromptPart *parts, size_t n_parts,
                           EgPrompt *out, EgError *err);

/* image_index for any ids: out[t] = the count of image_token ids at or before t, minus one; -1
 * from the (n_images + 1)-th on (an image token with no image). */
void eg_mllama_image_index(const int32_t *ids, size_t n, int32_t image_token, int n_images,
                           int32_t *out);

/* Running state of the cross-attention rule (§7.2) along a sequence: token t sees the images of
 * the run of consecutive "<|image|>" tokens that holds its most recent one. */
typedef struct EgMllamaImageRun {
    int32_t first;     /* first image of that run, -1 before any image */
    int32_t last;      /* the most recent image, -1 before any */
    int prev_is_image; /* the previous token is an "<|image|>" token */
} EgMllamaImageRun;

/* Advances the run by one token (id, image its image_index). */
void eg_mllama_image_run_step(EgMllamaImageRun *r, int32_t id, int32_t image, int32_t image_token);

#endif
