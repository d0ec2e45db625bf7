/* The text half of an mllama config.json ("text_config", HF MllamaTextConfig): a Llama 3.1
 * decoder whose layer stack also holds the cross-attention layers listed in
 * cross_attention_layers (docs/mllama.md "Text model", ../shared/docs/mllama.md §1.2, §1.4).
 * Missing keys take HF's defaults; wrong types and inconsistent sizes are errors naming the key. */
#ifndef EGRET_MLLAMA_TEXT_CONFIG_H
#define EGRET_MLLAMA_TEXT_CONFIG_H

#include <stddef.h>

#include "runtime/error.h"
#include "runtime/ops.h"

/* cross_attention_layers entries accepted (90B has 20). */
#define EG_MLLAMA_MAX_CROSS_LAYERS 64
/* eos_token_id entries kept (Instruct lists 3). */
#define EG_MLLAMA_MAX_EOS 8

typedef struct EgMllamaTextConfig {
    int vocab_size; /* lm_head rows; the embedding has vocab_size + 8 (EG_MLLAMA_EXTRA_EMBEDDINGS)
                     */
    int hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads;
    float rms_norm_eps;
    float rope_theta;
    int rope_llama3; /* rope_type "llama3": the scaling below applies; else plain RoPE */
    EgRopeLlama3 llama3;
    int max_position_embeddings;
    int tie_word_embeddings;
    int n_cross;                                            /* entries of cross_attention_layers */
    int cross_attention_layers[EG_MLLAMA_MAX_CROSS_LAYERS]; /* increasing layer indices */
    int bos_token_id, pad_token_id;
    int n_eos;
    int eos_token_id[EG_MLLAMA_MAX_EOS];
} EgMllamaTextConfig;

/* The embedding's rows past vocab_size (Meta's learnable embedding; <|image|> is the first). */
#define EG_MLLAMA_EXTRA_EMBEDDINGS 8

void eg_mllama_text_config_defaults(EgMllamaTextConfig *cfg);

/* Parses the "text_config" object of config.json (text_config: a cJSON object, or NULL for all
 * defaults); source_name names the file in messages. */
struct cJSON;
int eg_mllama_text_config_parse(const struct cJSON *text_config, const char *source_name,
                                EgMllamaTextConfig *cfg, EgError *err);

/* Reads config.json at path and parses its "text_config". */
int eg_mllama_text_config_load(const char *config_json_path, EgMllamaTextConfig *cfg, EgError *err);

/* Index of layer i among the cross-attention layers, or -1 for a self-attention layer. */
int eg_mllama_cross_index(const EgMllamaTextConfig *cfg, int layer);

#endif
