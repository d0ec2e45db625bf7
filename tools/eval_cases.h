/* The prompts `egret eval` (tools/cli_eval.c) runs every model on, loaded from one of two
 * formats:
 *  - a cases JSON file (tests/data/shapes-cases/cases.json, the demo model's 30 held-out few-shot
 *    cases): an array of objects with "parts" ({"image": PATH relative to the file's folder} or
 *    {"text": ...}, in prompt order), and optionally "prompt_ids" (the reference's ids; without
 *    them the family builds the prompt from the parts, raw, without a template),
 *    "expected_answer" (the true answer line), "task" (a label), "max_new_tokens" (else the
 *    length of "greedy_ids", else 24). Their answer is the greedy text up to its first newline;
 *  - a golden file of the tiny IDEFICS models (tests/data/tiny-idefics-X/golden.safetensors):
 *    each row of input_ids without its left padding (attention_mask), its images from
 *    pixel_values (already preprocessed) and image_attention_mask, plus textonly_input_ids. Their
 *    answer is the greedy continuation of generated_ids' length, compared by ids.
 * Images are preprocessed once, by the family of the model the cases are loaded for: every
 * precision of one checkpoint reads the same pixels. */
#ifndef EGRET_EVAL_CASES_H
#define EGRET_EVAL_CASES_H

#include <stddef.h>
#include <stdint.h>

#include "families/family.h"
#include "language/tokenizer.h"

typedef struct EgEvalCase {
    char label[64];    /* "3 (color)", "row 1", "text-only" */
    int32_t *ids;      /* [n] */
    int32_t *image_of; /* [n]: the image each token attends to, -1 for none */
    uint32_t n;
    float *pixels; /* [n_images][info.image_floats] */
    uint32_t n_images;
    uint32_t max_new_tokens;
    int answer_line; /* 1: the answer is the text up to the first newline (stop there) */
    char *expected;  /* the true answer line, or NULL (not judged) */
} EgEvalCase;

typedef struct EgEvalCases {
    EgEvalCase *cases;
    size_t n;
    size_t positions; /* Σ n: the prompt positions compared */
} EgEvalCases;

/* Loads path (a golden file when it ends in ".safetensors", else cases JSON) for model m, whose
 * tokenizer is tok. Fails naming the file and, within it, the case and field. */
int eg_eval_cases_load(const char *path, EgFamilyModel *m, const EgTokenizer *tok, EgEvalCases *out,
                       EgError *err);
void eg_eval_cases_free(EgEvalCases *c);

#endif
