/* Published AWQ int4 checkpoints (AutoAWQ's "gemm" packing; docs/quantization.md) read onto
 * Egret's q4 format: a third source of q4 rows beside quantizing at load and `egret quantize`.
 *
 * AutoAWQ stores a Linear(in, out) as three tensors instead of `<prefix>.weight`:
 *   <prefix>.qweight I32 [in, out/8]          4-bit q, 8 outputs a word
 *   <prefix>.qzeros  I32 [in/group, out/8]    4-bit zero points z, packed the same way
 *   <prefix>.scales  F16 [in/group, out]      scales s
 * Word j of a row holds outputs 8j..8j+7 in the interleaved order AWQ_ORDER = [0, 2, 4, 6, 1, 3,
 * 5, 7]: bits 4i..4i+3 hold output 8j + AWQ_ORDER[i]. Weight (o, k) = (q - z) · s, with z and s
 * those of o's column in k's group. config.json says so:
 *   "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128,
 *                           "zero_point": true, "version": "gemm", "modules_to_not_convert": [...]}
 *
 * Egret's q4 weight is d · q + m per block of 32 inputs: a group (a multiple of 32) maps onto its
 * blocks with d = s and m = fp16(−z · s), q unchanged. Only m is rounded (docs/quantization.md). */
#ifndef EGRET_AWQ_H
#define EGRET_AWQ_H

#include <stdint.h>

#include "runtime/error.h"
#include "runtime/safetensors.h"

typedef struct EgAwqConfig {
    int present;    /* config.json has an AWQ quantization_config */
    int group_size; /* inputs a scale; -1: a whole row (AutoAWQ's "group_size": -1) */
} EgAwqConfig;

/* config.json's quantization_config: absent leaves *out zeroed; an AWQ one that Egret reads
 * (4 bits, zero points, "gemm", a group of a multiple of 32 or -1) fills it; anything else is
 * refused naming what (another quant_method, bits, version, group size, zero_point false). */
int eg_awq_config_read(const char *config_path, EgAwqConfig *out, EgError *err);

/* The three tensors of one AWQ Linear. */
typedef struct EgAwqLinear {
    const EgTensorView *qweight, *qzeros, *scales;
} EgAwqLinear;

/* Whether the projection `weight_name` ("<prefix>.weight") is stored as AWQ: 1 with *out set
 * when `<prefix>.qweight` exists (its qzeros and scales are then looked up, possibly NULL),
 * 0 otherwise. */
int eg_awq_find(const EgTensorFile *tf, const char *weight_name, EgAwqLinear *out);

/* An AWQ Linear held in memory (rows × cols, groups of `group` inputs), as a benchmark or a test
 * builds one: views named w.qweight, w.qzeros, w.scales over the caller's arrays. */
typedef struct EgAwqMemory {
    EgTensorView qweight, qzeros, scales;
    EgAwqLinear linear; /* points at the three views above */
} EgAwqMemory;
void eg_awq_memory(EgAwqMemory *m, const int32_t *qweight, const int32_t *qzeros,
                   const uint16_t *scales, uint32_t rows, uint32_t cols, uint32_t group);

/* Whether any tensor of tf is an AWQ qweight. */
int eg_awq_any(const EgTensorFile *tf);

/* Checks an AWQ Linear meant as a rows (out) × cols (in) projection: the three tensors exist,
 * with their dtypes and consistent shapes, a group that is a multiple of 32 and divides cols
 * (group_size 0: the one the scales' shape implies), rows a multiple of 8; every scale finite
 * and every m = fp16(−z · s) finite. Errors name the tensor and its file, and for a scale the
 * output row and group. */
int eg_awq_check(const EgAwqLinear *a, uint32_t rows, uint32_t cols, int group_size, EgError *err);

/* Every AWQ Linear of tf checked against the folder's config (eg_awq_check with its group
 * size, shapes only: the loader checks each again, values too, with its expected shape): AWQ
 * tensors without an AWQ config, or an AWQ config without them, are refused. */
int eg_awq_folder_check(const EgTensorFile *tf, const EgAwqConfig *cfg, EgError *err);

/* Writes a checked AWQ Linear as rows × eg_quant_row_words(EG_WEIGHTS_Q4, cols) words of q4
 * rows (the device layout; runtime/quant.h), on every core. Fails only out of host memory. */
int eg_awq_to_q4(const EgAwqLinear *a, uint32_t rows, uint32_t cols, uint32_t *dst, EgError *err);

#endif
