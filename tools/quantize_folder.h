/* `egret quantize`: a checkpoint folder rewritten with its projections stored quantized
 * (runtime/quant_file.h), so that it loads without the original weights and without quantizing
 * on every start. Which tensors are quantized is what the model's loader says (the family's
 * visit_tensors); every other tensor is copied as it is. */
#ifndef EGRET_QUANTIZE_FOLDER_H
#define EGRET_QUANTIZE_FOLDER_H

#include <stdint.h>
#include <stdio.h>

#include "runtime/quant.h"

typedef struct EgQuantizeOptions {
    EgWeightFormat format; /* q8 or q4 */
    uint64_t shard_bytes;  /* the most tensor bytes a file holds before the next; 0: 4 GiB */
    FILE *progress;        /* NULL: quiet */
} EgQuantizeOptions;

/* Writes folder `out` (which must not exist) from checkpoint folder `src`: model.safetensors,
 * or shards and model.safetensors.index.json as HF writes them; config.json with an
 * "egret_quantization" record; the other files of src (tokenizer, templates, ...) but no other
 * weight files. Written in a temporary folder beside `out` and renamed: on failure no `out`. */
int eg_quantize_folder(const char *src, const char *out, const EgQuantizeOptions *opt,
                       EgError *err);

#endif
