/* Reading a checkpoint's tensors onto the device by name and expected shape. Every model
 * family's loader goes through these, so each tensor's name and shape are checked the same way,
 * an error names the tensor, and the projections are quantized (or not) in one place. */
#ifndef EGRET_WEIGHT_LOADER_H
#define EGRET_WEIGHT_LOADER_H

#include "runtime/device_tensor.h"

/* The groups a model's weights are reported in (GetModelInfo, egret bench --json), each with its
 * format and the device bytes its tensors took where they were allocated. */
typedef enum EgWeightGroup {
    EG_WEIGHT_GROUP_VISION,     /* the vision side's projections (encoder, resampler, projector) */
    EG_WEIGHT_GROUP_TEXT,       /* the text decoder's projections */
    EG_WEIGHT_GROUP_EMBEDDINGS, /* token, patch, class and position embeddings, latents */
    EG_WEIGHT_GROUP_LM_HEAD,    /* absent when tied to the token embeddings */
    EG_WEIGHT_GROUP_OTHER,      /* norms, biases, gates: the small tensors */
    EG_WEIGHT_GROUP_COUNT
} EgWeightGroup;

typedef struct EgWeightReport {
    struct {
        uint64_t bytes;   /* device bytes allocated for the group's tensors */
        uint32_t tensors; /* checkpoint tensors read into them */
        uint32_t formats; /* bit f: some of them are in EgWeightFormat f */
    } group[EG_WEIGHT_GROUP_COUNT];
    int fp32; /* the storage precision of the dense tensors: fp32, else fp16 */
} EgWeightReport;

/* "vision projections", "text projections", "embeddings", "lm_head", "norms/biases/gates". */
const char *eg_weight_group_name(EgWeightGroup g);
/* The group's format: "fp16", "fp32", "q8", "q4", or several joined by '+' when mixed. */
void eg_weight_group_format(const EgWeightReport *r, EgWeightGroup g, char *out, size_t cap);
uint64_t eg_weight_report_bytes(const EgWeightReport *r);

/* Called for every tensor a loader reads, with the format it goes into on the device
 * (EG_WEIGHTS_DENSE: the storage precision); the view is valid during the call only. Nonzero
 * stops the loading (the visitor sets err). With check_only, this enumerates a checkpoint's
 * tensors without a device (`egret quantize`). */
typedef int (*EgTensorVisitor)(void *ctx, const EgTensorView *t, EgWeightFormat format,
                               EgError *err);

typedef struct EgWeightLoader {
    const EgOps *ops;
    EgArena *arena; /* the weights' arena */
    EgStaging *staging;
    const EgTensorFile *tf;
    EgError *err;
    EgWeightFormat quant; /* the projections' format (eg_load_matrix, eg_load_stacked) */
    int check_only;       /* names and shapes only: nothing is created or uploaded (no device) */
    int n_tensors;        /* tensors read so far */
    /* Where what is allocated is counted (NULL: nowhere). Matrices count in `group`, which the
     * caller sets for each part of the model; buffers and vectors count as
     * EG_WEIGHT_GROUP_OTHER unless group is EG_WEIGHT_GROUP_EMBEDDINGS (position tables). */
    EgWeightReport *report;
    EgWeightGroup group;
    EgTensorVisitor visit; /* may be NULL */
    void *visit_ctx;
} EgWeightLoader;

/* The projections' format for a checkpoint: a folder of pre-quantized tensors (egret quantize)
 * loads in its own format, which `requested` (--quant) may repeat but not contradict; any other
 * folder in `requested`. Refuses a folder whose tensors mix q8 and q4. */
int eg_weight_loader_quant(const EgTensorFile *tf, EgWeightFormat requested, EgWeightFormat *out,
                           EgError *err);

/* The tensor `name` (printf-style), which must have exactly `shape`; counted as read. Every
 * tensor read is checked here: a pre-quantized one must be going into a matrix of its format
 * (never into a dense buffer) and have finite scales. */
int eg_load_expect(EgWeightLoader *L, const EgTensorView **t, int ndim, const int64_t *shape,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* A tensor of exactly `shape`, uploaded whole into a fresh buffer in the storage precision. */
int eg_load_buffer(EgWeightLoader *L, EgBuffer *out, int ndim, const int64_t *shape,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int eg_load_vector(EgWeightLoader *L, EgBuffer *out, int64_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A [rows, n] table uploaded as one buffer per row, rows[0 .. shape[0]): a table larger than a
 * binding of which each dispatch reads one row. */
int eg_load_row_buffers(EgWeightLoader *L, EgBuffer *rows, const int64_t *shape, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));
/* Vectors prefix + suffixes[i] of n_each elements, one after another in one buffer (biases of
 * projections that are stacked into one matrix). */
int eg_load_vectors(EgWeightLoader *L, EgBuffer *out, int64_t n_each, int n,
                    const char *const *suffixes, const char *prefix);
/* A [1] tensor read on the host. */
int eg_load_scalar(EgWeightLoader *L, float *out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A projection [rows, cols], in L->quant. */
int eg_load_matrix(EgWeightLoader *L, EgMatrix *m, uint32_t rows, uint32_t cols, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));
/* Projections prefix + suffixes[i], each [rows_each, cols], stacked by rows into one matrix in
 * L->quant: one product instead of one per tensor (q, k and v; gate and up). */
int eg_load_stacked(EgWeightLoader *L, EgMatrix *m, uint32_t rows_each, uint32_t cols, int n,
                    const char *const *suffixes, const char *prefix);
/* Tensors names[i] of rows[i] × cols (rows[i] 0: none), stacked by rows into one matrix in
 * `format`: tables whose rows are looked up or whose products must stay exact (embeddings, the
 * LM head) are loaded with EG_WEIGHTS_DENSE. */
int eg_load_rows(EgWeightLoader *L, EgMatrix *m, EgWeightFormat format, uint32_t cols, int n,
                 const uint32_t *rows, const char *const *names);
/* A tensor of `shape` (e.g. a convolution's [out, channels, p, p]) used as a dense rows × cols
 * matrix, rows × cols being its element count. */
int eg_load_matrix_shaped(EgWeightLoader *L, EgMatrix *m, uint32_t rows, uint32_t cols, int ndim,
                          const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

#endif
