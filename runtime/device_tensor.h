/* Moving tensors between the host (float32, or safetensors views of any float dtype) and
 * device buffers in the ops' storage precision (float or float16). Conversion happens on the
 * host, in bounded chunks, so an 18 GB checkpoint never needs a second full copy in memory. */
#ifndef EGRET_DEVICE_TENSOR_H
#define EGRET_DEVICE_TENSOR_H

#include "runtime/ops.h"
#include "runtime/safetensors.h"
#include "runtime/vk_staging.h"

/* A device buffer of n elements in the ops' storage precision. */
int eg_tensor_buffer(const EgOps *ops, EgArena *arena, size_t n, EgBuffer *out, EgError *err);

int eg_upload_f32(const EgOps *ops, EgStaging *st, const EgBuffer *dst, size_t dst_off,
                  const float *src, size_t n, EgError *err);
int eg_download_f32(const EgOps *ops, EgStaging *st, const EgBuffer *src, size_t src_off,
                    float *dst, size_t n, EgError *err);
/* Uploads elements [first, first + n) of a safetensors tensor (converted) to dst at dst_off. */
int eg_upload_view(const EgOps *ops, EgStaging *st, const EgBuffer *dst, size_t dst_off,
                   const EgTensorView *t, int64_t first, int64_t n, EgError *err);

/* A matrix of rows × cols split into chunks of chunk_rows rows (0: as large as the device's
 * binding limit allows). Buffers belong to the arena; eg_matrix_release frees the chunk list. */
int eg_matrix_create(const EgOps *ops, EgArena *arena, uint32_t rows, uint32_t cols,
                     uint32_t chunk_rows, EgMatrix *m, EgError *err);
/* The same with rows in a weight format (runtime/quant.h; EG_WEIGHTS_DENSE: eg_matrix_create).
 * The uploads below quantize quantized matrices on the host, on every core. */
int eg_matrix_create_format(const EgOps *ops, EgArena *arena, uint32_t rows, uint32_t cols,
                            uint32_t chunk_rows, EgWeightFormat format, EgMatrix *m,
                            EgError *err);
void eg_matrix_release(EgMatrix *m);
int eg_matrix_upload_f32(const EgOps *ops, EgStaging *st, const EgMatrix *m, const float *src,
                         EgError *err);
/* Uploads a tensor of r × m->cols elements into rows [row0, row0 + r) (fused projections are
 * several tensors stacked by rows). A pre-quantized tensor (EgTensorView.quant) must be in the
 * matrix's format, and its rows are copied as they are. */
int eg_matrix_upload_view(const EgOps *ops, EgStaging *st, const EgMatrix *m, uint32_t row0,
                          const EgTensorView *t, EgError *err);

#endif
