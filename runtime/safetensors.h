/* Read-only access to safetensors checkpoints: a single file or an HF sharded folder
 * (model.safetensors.index.json + shards). Every file is mmapped (MAP_PRIVATE, read-only) and its
 * header validated up front, so a tensor view is just a pointer into the mapping; nothing is
 * copied until a caller converts a tensor (or a range of it, for chunked uploads) to f32/f16. */
#ifndef EGRET_SAFETENSORS_H
#define EGRET_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "runtime/quant.h"

typedef enum EgDType {
    EG_DT_F32,
    EG_DT_F16,
    EG_DT_BF16,
    EG_DT_F64,
    EG_DT_I64,
    EG_DT_I32,
    EG_DT_I16,
    EG_DT_I8,
    EG_DT_U8,
    EG_DT_BOOL
} EgDType;

/* Bytes per element (0 for an out-of-range value). */
size_t eg_dtype_size(EgDType dt);
/* The safetensors spelling ("F32", "BF16", ...); "?" for an out-of-range value. */
const char *eg_dtype_name(EgDType dt);

#define EG_TENSOR_MAX_DIMS 8

typedef struct EgTensorView {
    const char *name; /* owned by the EgTensorFile */
    EgDType dtype;
    int ndim; /* 0..8 */
    int64_t shape[EG_TENSOR_MAX_DIMS];
    int64_t numel;
    const void *data; /* points into the mmap */
    size_t nbytes;
    const char *file; /* path of the file that holds it (for error messages) */
    /* EG_WEIGHTS_DENSE: the elements as stored. q8/q4: a pre-quantized matrix of shape[0] rows
     * of quant_cols weights, stored as U8 [rows, row bytes] (runtime/quant_file.h); its logical
     * shape [rows, quant_cols] is what eg_tensors_expect compares. */
    EgWeightFormat quant;
    int64_t quant_cols;
    /* Generated tensors (eg_tensors_random) have no data: element i is
     * center + spread · u(seed, i), u uniform in [-1, 1). */
    int generated;
    uint64_t seed;
    float center, spread;
} EgTensorView;

typedef struct EgTensorFile EgTensorFile; /* one or several mmapped shards */

/* A model folder: model.safetensors, or model.safetensors.index.json + the shards it names
 * (HF layout: {"metadata":..., "weight_map": {"tensor": "model-00001-of-00002.safetensors", ...}}).
 * When both exist the index wins (it is what HF writes for sharded checkpoints). */
EgTensorFile *eg_tensors_open_dir(const char *dir, EgError *err);
EgTensorFile *eg_tensors_open_file(const char *path, EgError *err);
/* The same validation for a file's bytes already in memory (data[0..len)). The buffer is
 * borrowed, not copied: it must stay alive and unchanged until eg_tensors_close. source_name
 * (may be NULL) stands for the path in error messages and in the views' `file`. */
EgTensorFile *eg_tensors_open_memory(const void *data, size_t len, const char *source_name,
                                     EgError *err);
void eg_tensors_close(EgTensorFile *f); /* NULL is fine */

/* A checkpoint of random weights, for benchmarking a model's shapes without its files: every
 * name asked of eg_tensors_expect exists with the expected shape, and its values are generated
 * from the seed and the name when converted — 1 for norm weights, 0 for biases, small uniform
 * values elsewhere (so activations stay finite through any depth). The view returned by
 * eg_tensors_expect stays valid only until a few more are asked for. */
EgTensorFile *eg_tensors_random(uint64_t seed, EgError *err);
/* Whether f came from eg_tensors_random (it then finds nothing: names are asked for, not
 * listed). */
int eg_tensors_is_random(const EgTensorFile *f);

int eg_tensors_count(const EgTensorFile *f);
/* Tensors in a stable order (shard by shard, data-offset order inside a shard); NULL if out of
 * range. */
const EgTensorView *eg_tensors_at(const EgTensorFile *f, int i);
/* NULL if absent (hash lookup: real checkpoints have ~1000 tensors). */
const EgTensorView *eg_tensors_find(const EgTensorFile *f, const char *name);
/* Folder (open_dir) or file (open_file) this was opened from. */
const char *eg_tensors_source(const EgTensorFile *f);

/* Finds `name` and checks its shape (ndim dims; a pre-quantized tensor's logical shape); on
 * failure the message names the tensor, the file (or the folder when missing), and expected vs
 * actual shape. *out may be NULL. */
int eg_tensors_expect(const EgTensorFile *f, const char *name, int ndim, const int64_t *shape,
                      const EgTensorView **out, EgError *err);

/* Converts a floating tensor (F32/F16/BF16/F64) to f32 or f16 into dst (numel elements).
 * Error for non-float dtypes. */
int eg_tensor_to_f32(const EgTensorView *t, float *dst, EgError *err);
int eg_tensor_to_f16(const EgTensorView *t, uint16_t *dst, EgError *err);
/* Same but for a contiguous range of elements [first, first+count) — lets the engine upload big
 * tensors in chunks. */
int eg_tensor_range_to_f32(const EgTensorView *t, int64_t first, int64_t count, float *dst,
                           EgError *err);
int eg_tensor_range_to_f16(const EgTensorView *t, int64_t first, int64_t count, uint16_t *dst,
                           EgError *err);

/* Converts an integer tensor (I64/I32/I16/I8/U8/BOOL) to int64 (numel elements): token ids,
 * masks and positions in golden files. Error for floating dtypes. */
int eg_tensor_to_i64(const EgTensorView *t, int64_t *dst, EgError *err);

#endif
