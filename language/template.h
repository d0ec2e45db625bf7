/* Few-shot prompt templates: how a model wants (image, text) examples and a query laid out.
 * Templates are data, read from `egret_template.json` in the model folder (format in
 * docs/prompt-templates.md):
 *
 *   {
 *     "prefix":  ["Describe the images.\n"],       optional: text parts before everything
 *     "example": ["<image>", "Output: {text}\n"],  one per example (image, text) pair
 *     "query":   ["<image>", "Output: {text}"],    the final image and optional query text
 *     "stop":    ["\n"]                            optional: where generation should stop
 *   }
 *
 * Each element is one prompt part: the exact string "<image>" is the image placeholder, any
 * other string is a text part in which "{text}" (at most once per element) is replaced by the
 * example's / query's text. "example" and "query" each hold exactly one "<image>"; "example" holds
 * "{text}" exactly once, "query" at most once; "prefix" holds text only. Unknown keys are errors.
 *
 * Query text: the query's "{text}" gets the caller's query text, or "" without one. Because the
 * processor strips spaces at both ends of every text part (prompt.h), "Output: {text}" gives
 * exactly "Output:" with no query text (the demo model's prompt) and "Output: <text>" with one:
 * the query text is a prefix of the answer the model continues.
 *
 * The default template (models without the file, e.g. idefics-9b base) is the demo model's
 * Flamingo-paper captioning format: example ["<image>", "Output: {text}\n"], query
 * ["<image>", "Output: {text}"], stop ["\n"]. Instruct checkpoints should ship their own file. */
#ifndef EGRET_TEMPLATE_H
#define EGRET_TEMPLATE_H

#include <stddef.h>

#include "language/prompt.h"
#include "runtime/error.h"

typedef struct EgTemplate EgTemplate;

/* Parses a template; errors name source_name and the problem. */
EgTemplate *eg_template_parse(const char *json, size_t len, const char *source_name, EgError *err);
EgTemplate *eg_template_load(const char *path, EgError *err);
/* model_dir/egret_template.json when the file exists (a malformed file is an error), else the
 * default template. */
EgTemplate *eg_template_for_model(const char *model_dir, EgError *err);
EgTemplate *eg_template_default(EgError *err);
/* A built-in template by name: "idefics" (the default above), "idefics-instruct", "mllama"
 * (base: captioning and few-shot pairs), "mllama-instruct" (the Llama 3 chat format). */
EgTemplate *eg_template_builtin(const char *name, EgError *err);
/* The template a model folder gets: the file `override` when non-NULL and non-empty (--template),
 * else the folder's egret_template.json, else the built-in for `family` ("idefics", "mllama"),
 * its "-instruct" one when the folder's tokenizer carries a chat template (tokenizer_config.json
 * "chat_template", chat_template.json or chat_template.jinja). */
EgTemplate *eg_template_choose(const char *model_dir, const char *family, const char *override,
                               EgError *err);
/* Which template this is: a built-in's name, or "file:PATH". */
const char *eg_template_name(const EgTemplate *t);
void eg_template_free(EgTemplate *t);

/* The template in its file format (compact JSON, malloc'd; NULL when out of memory): what
 * GetModelInfo reports so clients can see how examples and the query are laid out. */
char *eg_template_to_json(const EgTemplate *t);

/* Stop strings ("stop"), in file order. */
size_t eg_template_stop_count(const EgTemplate *t);
const char *eg_template_stop(const EgTemplate *t, size_t i);

/* A list of prompt parts whose text the list owns. */
typedef struct EgPartList {
    EgPromptPart *parts;
    size_t n;
} EgPartList;
void eg_part_list_free(EgPartList *l);

typedef struct EgFewShotExample {
    const char *text; /* the example's answer, e.g. "a small red circle on the left." */
    size_t len;
} EgFewShotExample;

/* Lays out prefix, the examples and the query as prompt parts. Images are placeholders numbered
 * in order: image k < n_examples is example k's image, image n_examples is the query image.
 * query_text may be NULL (no query text). */
int eg_template_build(const EgTemplate *t, const EgFewShotExample *examples, size_t n_examples,
                      const char *query_text, size_t query_len, EgPartList *out, EgError *err);

#endif
