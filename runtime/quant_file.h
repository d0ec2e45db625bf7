/* Pre-quantized tensors in safetensors files (`egret quantize`, docs/quantization.md): how a
 * q8/q4 matrix is stored and recognised, and the checks a loader makes before trusting one.
 *
 * A quantized matrix of rows × cols weights keeps its checkpoint name and is stored as dtype U8
 * of shape [rows, row bytes] (row bytes = 4 · eg_quant_row_words: the device layout, row by row,
 * uploaded as it is). The file's "__metadata__" (string values only, as safetensors wants) says
 * which tensors these are:
 *   "egret.format_version": "1"
 *   "egret.quant.<tensor name>": "q4 [rows, cols]"
 * A reader refuses a newer format version, an unknown format name, a tensor that is not U8 of
 * exactly [rows, row bytes], and an entry naming no tensor of the file. */
#ifndef EGRET_QUANT_FILE_H
#define EGRET_QUANT_FILE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/quant.h"
#include "runtime/safetensors.h"

#define EG_QUANT_FILE_VERSION 1
#define EG_QUANT_FILE_VERSION_KEY "egret.format_version"
#define EG_QUANT_FILE_TENSOR_PREFIX "egret.quant." /* + the tensor's name */

/* Marks the pre-quantized tensors among a shard's views (views[0..n), all of file `path`) as its
 * "__metadata__" object `meta` (may be NULL) says, after checking each as above. */
int eg_quant_file_mark(const cJSON *meta, const char *path, EgTensorView *views, int n,
                       EgError *err);

/* Checks every block's scale (and q4's minimum) of a pre-quantized tensor is finite: a NaN or
 * infinite scale would turn every product it enters into NaN. Names the tensor, row and block. */
int eg_quant_file_check_scales(const EgTensorView *t, EgError *err);

/* The metadata value for a tensor of rows × cols in format f ("q4 [rows, cols]"). */
void eg_quant_file_describe(EgWeightFormat f, int64_t rows, int64_t cols, char *out, size_t cap);

#endif
