/* The options a model is loaded with, the same for every model family (families/family.h). */
#ifndef EGRET_MODEL_OPTIONS_H
#define EGRET_MODEL_OPTIONS_H

#include <stdint.h>
#include <stdio.h>

#include "runtime/quant.h"

typedef struct EgModelOptions {
    int fp32;            /* 1: fp32 weights and activations (exact mode); 0: fp16 (fast) */
    uint32_t max_chunk;  /* tokens per forward call (longer prompts run in chunks); 0: 256 */
    uint32_t max_images; /* images per request the scratch is sized for; 0: 16 */
    const char *device;  /* Vulkan device choice, see runtime/vk_context.h */
    FILE *progress;      /* where to print what is loaded and how long it took; NULL: quiet */
    int random_weights;  /* 1: only config.json is read; weights are generated (benchmarks of a
                            model's shapes without its files, runtime/safetensors.h) */
    const char *pipeline_cache_dir; /* the driver's pipeline cache on disk, read before the
                                       pipelines are built and written after
                                       (runtime/vk_pipeline_cache.h); NULL: none */
    /* the projections' weights quantized while loading (docs/quantization.md); embeddings,
     * the LM head, the patch embedding, norms, biases and gates stay in fp32/fp16 */
    EgWeightFormat quant;
} EgModelOptions;

#endif
