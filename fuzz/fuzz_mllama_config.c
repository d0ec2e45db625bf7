/* Fuzz target: an mllama config.json through eg_mllama_config_parse (top level, vision_config and
 * the text_config shape fields). An accepted config must hold what the parser's validation
 * promised: positive sizes, heads dividing the widths, intermediate layers inside the local
 * encoder, the output width matching them, every aspect ratio within max_num_tiles, every
 * cross-attention layer inside the stack, the image token inside the embedding. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "families/mllama/model.h"

static void fail(const char *what) {
    fprintf(stderr, "fuzz_mllama_config: %s\n", what);
    abort();
}

static void check(const EgMllamaConfig *c) {
    const EgMllamaVisionConfig *v = &c->vision;
    const EgMllamaTextConfig *t = &c->text;
    if (v->hidden_size <= 0 || v->attention_heads <= 0 || v->num_hidden_layers <= 0 ||
        v->num_global_layers < 0 || v->patch_size <= 0 || v->image_size < v->patch_size ||
        v->max_num_tiles <= 0 || v->max_num_tiles > 64 || v->intermediate_size <= 0)
        fail("accepted a vision config with a bad size");
    if (v->hidden_size % v->attention_heads || v->image_size % v->patch_size)
        fail("vision sizes do not divide");
    if ((long long)v->vision_output_dim != (long long)v->hidden_size * (v->n_intermediate + 1))
        fail("vision_output_dim does not match the intermediate layers");
    for (int i = 0; i < v->n_intermediate; i++)
        if (v->intermediate_layers_indices[i] < 0 ||
            v->intermediate_layers_indices[i] >= v->num_hidden_layers)
            fail("intermediate layer outside the local encoder");
    if (v->n_aspect_ratios < 1 || v->n_aspect_ratios > EG_MLLAMA_MAX_ASPECT_RATIOS)
        fail("aspect ratio count out of range");
    for (int i = 0; i < v->n_aspect_ratios; i++)
        if (v->supported_aspect_ratios[i][0] < 1 || v->supported_aspect_ratios[i][1] < 1 ||
            (long long)v->supported_aspect_ratios[i][0] * v->supported_aspect_ratios[i][1] >
                v->max_num_tiles)
            fail("aspect ratio beyond max_num_tiles");
    if (t->hidden_size <= 0 || t->num_attention_heads <= 0 || t->num_key_value_heads <= 0 ||
        t->hidden_size % t->num_attention_heads || t->num_attention_heads % t->num_key_value_heads)
        fail("text heads do not divide");
    for (int i = 0; i < t->n_cross; i++)
        if (t->cross_attention_layers[i] < 0 ||
            t->cross_attention_layers[i] >= t->num_hidden_layers)
            fail("cross-attention layer outside the stack");
    if (c->image_token_index < 0 || c->image_token_index >= t->vocab_size + 8)
        fail("image token outside the embedding");
    if (memchr(c->dtype, 0, sizeof c->dtype) == NULL) fail("dtype is not NUL-terminated");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    EgError err;
    EgMllamaConfig cfg;
    if (eg_mllama_config_parse((const char *)data, size, "fuzz/config.json", &cfg, &err) == 0)
        check(&cfg);
    return 0;
}
