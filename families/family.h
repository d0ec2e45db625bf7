/* A model family as the engine sees it: a table of functions every family (families/<name>/
 * family.c) fills, over an opaque model and opaque sequences. The engine, its caches and the
 * scheduler call only this, so adding a family adds a folder and one line to the list in
 * families/family.c, never a branch inside engine/.
 *
 * A sequence is one request's state on the device: its self-attention KV cache and its images'
 * cross-attention keys/values. Tokens come with, per token, the index of the image it attends to
 * (EgPrompt.image_index: the most recent image at or before it, -1 for none); what that means
 * for cross-attention (one image, or a run of images written together) is the family's rule.
 *
 * Images reach a family decoded (vision/image_decode.h); its preprocess writes the family's own
 * fixed-size float layout (info.image_floats per image), which set_images reads back. The image
 * cache (engine/image_cache.h) keeps, per image, the family's cross-attention entry of
 * info.image_cache_elems elements in the ops' precision. */
#ifndef EGRET_FAMILY_H
#define EGRET_FAMILY_H

#include <stdint.h>

#include "families/model_options.h"
#include "language/prompt.h"
#include "runtime/ops.h"
#include "runtime/weight_loader.h"
#include "vision/image_decode.h"

#define EG_FAMILY_MAX_EOS 4
#define EG_FAMILY_MAX_BATCH 16 /* the most any family's info.max_batch may say */

/* What a loaded model tells the engine (filled by the family's load; pointers point into the
 * model and live as long as it). */
typedef struct EgFamilyInfo {
    const char *family;       /* "idefics", "mllama" */
    const char *architecture; /* config.json's "architectures"[0] */
    const char *dir;
    uint32_t vocab;      /* logits per token */
    uint32_t image_size; /* the preprocessed side (a tile's for tiled families): keys include it */
    size_t image_floats; /* floats one preprocessed image takes (the family's layout) */
    size_t image_cache_elems; /* one image's cached cross-attention entry, in elements */
    uint32_t max_position_embeddings;
    uint32_t max_batch;  /* sequences one forward_batch may advance */
    uint32_t max_images; /* images one sequence may attend to (its scratch is sized for them) */
    /* 1: a token before the sequence's first image still reads all its images (mllama: HF adds
     * such a row's unmasked cross-attention), so its state depends on every image: the prefix
     * cache must not share it between requests with other images */
    int text_before_image_sees_images;
    int32_t eos[EG_FAMILY_MAX_EOS]; /* ids that end generation */
    uint32_t n_eos;
    const EgWeightReport *weights; /* the weights' format and device bytes by group */
    EgVk *vk;   /* the device, for the caches' buffers */
    EgOps *ops; /* the precision the caches' buffers take */
} EgFamilyInfo;

typedef struct EgFamily {
    const char *name;
    const char *const *architectures; /* NULL-terminated: the config.json classes it serves */
    void *(*load)(const char *dir, const EgModelOptions *opt, EgFamilyInfo *info, EgError *err);
    void (*free)(void *model);
    /* Every tensor load would read from dir, with the format it would go into (opt->quant and
     * the folder's own), checked as load checks them but without a device (egret quantize). */
    int (*visit_tensors)(const char *dir, const EgModelOptions *opt, EgTensorVisitor visit,
                         void *ctx, EgError *err);

    /* HF's processor rules: the parts (text and image placeholders, images numbered in order)
     * -> ids and per-token image index. */
    int (*prompt)(void *model, const EgTokenizer *tok, const EgPromptPart *parts, size_t n_parts,
                  EgPrompt *out, EgError *err);
    /* The same rule's per-token image index for ids made elsewhere (tools): out[n]. */
    void (*image_index)(void *model, const int32_t *ids, size_t n, int n_images, int32_t *out);
    /* One decoded image -> info.image_floats floats at out. stop (may be NULL) is polled during
     * the long parts; when it fires the call fails. */
    int (*preprocess)(void *model, const EgImage *img, float *out, int (*stop)(void *user),
                      void *stop_user, EgError *err);

    void *(*seq_new)(void *model, uint32_t capacity, EgError *err);
    void (*seq_free)(void *seq);
    uint32_t (*seq_n_past)(const void *seq);
    /* Forgets the tokens after the first n (n <= n_past): they are recomputed. */
    void (*seq_rewind)(void *seq, uint32_t n);
    uint32_t (*seq_capacity)(const void *seq);
    /* The device bytes the KV cache of a sequence of this capacity takes (images apart). */
    uint64_t (*seq_kv_bytes)(const void *model, uint32_t capacity);
    /* The device bytes a sequence holds now (KV cache and images). */
    uint64_t (*seq_device_bytes)(const void *seq);
    /* A new sequence of capacity holding a copy of seq's first n tokens (no images set). */
    void *(*seq_copy_prefix)(const void *seq, uint32_t n, uint32_t capacity, EgError *err);
    /* Sets n images: image i's cross-attention entry from cached[i] when that is non-NULL, the
     * others encoded from pixels (only those, in order, each info.image_floats); an encoded
     * image's entry is also copied into store[i] when that is non-NULL. */
    int (*set_images)(void *seq, uint32_t n, const EgBuffer *const *cached, const float *pixels,
                      const EgBuffer *const *store, EgError *err);
    /* Appends n tokens; image_of_token NULL: each attends as the last processed token did.
     * logits: NULL, the last token's (vocab floats), or every token's with all_logits. */
    int (*forward)(void *seq, const int32_t *ids, const int32_t *image_of_token, uint32_t n,
                   float *logits, int all_logits, EgError *err);
    /* One token for each of k sequences (k <= info.max_batch) in one pass: k × vocab logits. */
    int (*forward_batch)(void *const *seqs, uint32_t k, const int32_t *ids, float *logits,
                         EgError *err);

    /* For benchmarks (egret bench), a request without a tokenizer or a picture: ids[n] holds
     * random text ids and image random normalized pixels (info.image_floats); this puts BOS
     * and one image's placeholder tokens at the front of ids as the processor would, and fills
     * the image layout's other fields so that the image uses every tile it can. */
    void (*bench_inputs)(void *model, int32_t *ids, uint32_t n, float *image);
    /* The image stage alone (the vision encoder and what maps it to the text's width) on n
     * preprocessed images, its output discarded: what set_images costs before the
     * cross-attention keys and values. */
    int (*encode)(void *model, const float *images, uint32_t n, EgError *err);
} EgFamily;

/* A loaded model of some family. */
typedef struct EgFamilyModel {
    const EgFamily *family;
    void *impl;
    EgFamilyInfo info;
} EgFamilyModel;

/* A sequence of some family's model. */
typedef struct EgFamilySeq {
    const EgFamilyModel *m;
    void *impl;
} EgFamilySeq;

/* The family whose architectures list names `architecture`, or NULL. */
const EgFamily *eg_family_find(const char *architecture);
/* Reads dir/config.json's "architectures", picks the family and loads the model. Fails naming
 * the architecture when no family serves it. */
EgFamilyModel *eg_family_open(const char *dir, const EgModelOptions *opt, EgError *err);
void eg_family_close(EgFamilyModel *m);
/* The folder's family's visit_tensors (picked as eg_family_open picks it); *family (may be NULL)
 * its name. */
int eg_family_visit_tensors(const char *dir, const EgModelOptions *opt, EgTensorVisitor visit,
                            void *ctx, const char **family, EgError *err);

int eg_family_prompt(EgFamilyModel *m, const EgTokenizer *tok, const EgPromptPart *parts,
                     size_t n_parts, EgPrompt *out, EgError *err);
void eg_family_image_index(EgFamilyModel *m, const int32_t *ids, size_t n, int n_images,
                           int32_t *out);
int eg_family_preprocess(EgFamilyModel *m, const EgImage *img, float *out, int (*stop)(void *user),
                         void *stop_user, EgError *err);
int eg_family_is_eos(const EgFamilyModel *m, int32_t id);
void eg_family_bench_inputs(EgFamilyModel *m, int32_t *ids, uint32_t n, float *image);
int eg_family_encode(EgFamilyModel *m, const float *images, uint32_t n, EgError *err);

EgFamilySeq *eg_fseq_new(EgFamilyModel *m, uint32_t capacity, EgError *err);
void eg_fseq_free(EgFamilySeq *s);
uint32_t eg_fseq_n_past(const EgFamilySeq *s);
void eg_fseq_rewind(EgFamilySeq *s, uint32_t n);
uint32_t eg_fseq_capacity(const EgFamilySeq *s);
uint64_t eg_fseq_kv_bytes(const EgFamilyModel *m, uint32_t capacity);
uint64_t eg_fseq_device_bytes(const EgFamilySeq *s);
EgFamilySeq *eg_fseq_copy_prefix(const EgFamilySeq *s, uint32_t n, uint32_t capacity, EgError *err);
/* Images from pixels only (nothing cached, nothing stored). */
int eg_fseq_set_images(EgFamilySeq *s, const float *pixels, uint32_t n, EgError *err);
int eg_fseq_set_images_cached(EgFamilySeq *s, uint32_t n, const EgBuffer *const *cached,
                              const float *pixels, const EgBuffer *const *store, EgError *err);
int eg_fseq_forward(EgFamilySeq *s, const int32_t *ids, const int32_t *image_of_token, uint32_t n,
                    float *logits, int all_logits, EgError *err);
/* All k of one model. */
int eg_fseq_forward_batch(EgFamilySeq *const *seqs, uint32_t k, const int32_t *ids, float *logits,
                          EgError *err);

#endif
