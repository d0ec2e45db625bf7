/* One sequence being generated: its self-attention KV cache and its images' cross-attention
 * keys and values, computed once when the images are set and reused by every later step
 * (the reference recomputes them each step; the result is the same).
 *
 * Forward calls take token ids and, per token, the index of the image it attends to (the most
 * recent <image> at or before it, see language/prompt.h) or -1 for none. Long inputs run in
 * chunks of the model's max_chunk tokens. */
#ifndef EGRET_SEQUENCE_H
#define EGRET_SEQUENCE_H

#include "families/idefics/model.h"

typedef struct EgSequence {
    EgModel *m;
    EgArena arena;
    uint32_t capacity;           /* KV cache length in tokens */
    uint32_t n_past;             /* tokens already in the cache */
    EgBuffer *k_cache, *v_cache; /* per decoder layer, [capacity][H] */
    uint32_t n_images;
    EgArena image_arena;
    EgBuffer *cross_kv; /* per cross layer, [n_images·S][2H]: keys then values per row */
    int32_t last_image; /* image the last processed token attends to, -1 for none */
} EgSequence;

EgSequence *eg_sequence_new(EgModel *m, uint32_t capacity, EgError *err);
void eg_sequence_free(EgSequence *s);
/* The device memory the KV cache of a sequence of this capacity takes (its images apart). */
uint64_t eg_sequence_kv_bytes(const EgModel *m, uint32_t capacity);
/* A new sequence of `capacity` tokens whose KV cache holds a copy of src's first n tokens (no
 * images set): a kept prefix lent to a request while the original stays kept. */
EgSequence *eg_sequence_copy_prefix(const EgSequence *src, uint32_t n, uint32_t capacity,
                                    EgError *err);

/* Encodes n images (normalized pixels [n][C][S][S], S = the model's image_size) and stores the
 * cross-attention keys/values of every cross layer. Replaces images set before. */
int eg_sequence_set_images(EgSequence *s, const float *pixels, uint32_t n, EgError *err);

/* The same with cached keys/values (engine/image_cache.h): image i's come from cached[i] when
 * cached and cached[i] are non-NULL (a copy on the device); the others are encoded from pixels,
 * which then holds only those images, in order. For an encoded image i, store[i] (when store and
 * store[i] are non-NULL) receives a copy of its keys/values, laid out as the cache keeps them:
 * [cross layer][S][2H]. */
int eg_sequence_set_images_cached(EgSequence *s, uint32_t n, const EgBuffer *const *cached,
                                  const float *pixels, const EgBuffer *const *store,
                                  EgError *err);

/* Appends n tokens. image_of_token[t] is the image token t attends to (-1: none); NULL means
 * every token attends to the image the last processed token attended to (decoding). logits:
 * NULL, or room for the last token's logits (vocab floats), or for every token's (n × vocab)
 * when all_logits is set. */
int eg_sequence_forward(EgSequence *s, const int32_t *ids, const int32_t *image_of_token,
                        uint32_t n, float *logits, int all_logits, EgError *err);

/* Decoding several sequences at once: one token each (ids[b] for seqs[b], each attending to the
 * image its last token attended to), one command buffer, the weights read once for all of
 * them. logits: k × vocab floats. The result equals k separate eg_sequence_forward calls up to
 * rounding. At most eg_sequence_max_batch(m) sequences, all of model m, each once. */
#define EG_SEQUENCE_MAX_BATCH EG_BATCH_MAX
uint32_t eg_sequence_max_batch(const EgModel *m);
int eg_sequence_forward_batch(EgSequence *const *seqs, uint32_t k, const int32_t *ids,
                              float *logits, EgError *err);

#endif
