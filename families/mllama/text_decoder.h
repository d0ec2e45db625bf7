/* One sequence through the mllama text decoder: its self-attention KV cache, and the
 * cross-attention keys and values of its images, computed once when the images' states are set
 * and read by every later step (HF caches them the same way on the first forward).
 *
 * The images come as the projector's output ("cross_attention_states"): n_tiles tiles (images ×
 * max_num_tiles, padding tiles and padding images included, image-major) of tile_tokens rows of
 * H each. Each token comes with its row of HF's cross_attention_mask: one 0/1 per tile. A token
 * whose row has no 1 (text before the first image) attends to every tile, unmasked, and its
 * MLP branch is dropped, exactly as HF's _prepare_cross_attention_mask and
 * full_text_row_masked_out_mask do (docs/mllama.md "Text model"). Without cross states the
 * cross-attention layers are skipped (a text-only prompt is plain Llama). */
#ifndef EGRET_MLLAMA_TEXT_DECODER_H
#define EGRET_MLLAMA_TEXT_DECODER_H

#include "families/mllama/text_model.h"

typedef struct EgMllamaTextSequence {
    EgMllamaText *t;
    EgArena arena;
    uint32_t capacity;           /* KV cache length in tokens */
    uint32_t n_past;             /* tokens already in the cache */
    EgBuffer *k_cache, *v_cache; /* per layer (self-attention layers'), [capacity][kv_width] */
    EgArena cross_arena;
    EgBuffer *cross_kv; /* per cross layer, [n_tiles·tile_tokens][2·kv_width]: k, v */
    uint32_t n_tiles, tile_tokens;
    uint8_t *last_tiles;        /* [n_tiles]: the last processed token's mask row */
    uint32_t cross_kv_computed; /* how many times cross keys/values were computed */
} EgMllamaTextSequence;

EgMllamaTextSequence *eg_mllama_text_sequence_new(EgMllamaText *t, uint32_t capacity, EgError *err);
void eg_mllama_text_sequence_free(EgMllamaTextSequence *s);

/* Computes every cross layer's keys (k_norm applied) and values from states
 * [n_tiles·tile_tokens][H] (float32, host) and keeps them for the sequence's later tokens.
 * Replaces states set before; n_tiles 0 clears them. */
int eg_mllama_text_set_cross_states(EgMllamaTextSequence *s, const float *states, uint32_t n_tiles,
                                    uint32_t tile_tokens, EgError *err);

/* Appends n tokens (ids < vocab + 8). tiles: [n][n_tiles] 0/1, each token's cross-attention mask
 * row; NULL: every token repeats the last processed token's row (decoding, as HF's generate).
 * logits: NULL, room for the last token's (vocab floats), or for every token's (n × vocab) when
 * all_logits is set. */
int eg_mllama_text_forward(EgMllamaTextSequence *s, const int32_t *ids, const uint8_t *tiles,
                           uint32_t n, float *logits, int all_logits, EgError *err);

/* Decoding several sequences at once: one token each (ids[b] for seqs[b], each repeating its
 * last token's mask row), one command buffer, the weights read once for all of them. logits:
 * k × vocab floats. Equal to k eg_mllama_text_forward calls up to rounding. At most the model's
 * max_chunk sequences, all of model t, each once; sequences with and without images mix (those
 * without skip the cross layers, as alone). */
int eg_mllama_text_forward_batch(EgMllamaTextSequence *const *seqs, uint32_t k, const int32_t *ids,
                                 float *logits, EgError *err);

#endif
