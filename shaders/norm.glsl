// Body of norm.comp (subgroup reductions) and norm_shared.comp (shared-memory reductions, for
// devices without subgroup arithmetic).
//
// Row normalization: LayerNorm (mean and biased variance, weight and bias) or IDEFICS' RMSNorm
// (x·rsqrt(mean(x²)+eps)·weight). Statistics in float, two passes for LayerNorm so the variance
// does not lose precision to a large mean.
//
// Work split (specialization constants, runtime/ops.c picks them from the device): with
// ROWS = 1 the whole workgroup of WG invocations reduces one row (GPUs: 128 invocations); the
// subgroup variant sums within each subgroup and exchanges the subgroups' sums through shared
// memory only when there is more than one. With ROWS > 1 (subgroup variant only) each subgroup
// owns its own rows of the workgroup's ROWS and there is no barrier at all: on CPU
// implementations (lavapipe) a workgroup's subgroups are coroutines that every barrier()
// suspends and resumes, which cost the 128-invocation tree reduction (8 barriers per sum)
// nearly all its time.
layout(local_size_x_id = 0) in;                 // WG: invocations per workgroup
layout(constant_id = 1) const uint ROWS = 1u;   // rows per workgroup (> 1: one per subgroup)
// WIDE (CPU devices): each lane takes 8 consecutive elements per load and store instead of one
// (lavapipe runs every lane's load as a loop over the lanes, so the number of loads is what
// counts there). The caller (runtime/ops.c) checked that the rows and their strides are
// multiples of 8 elements, and runs a pipeline without WIDE where they are not: lavapipe would
// run an untaken path too, with its lanes masked off.
layout(constant_id = 2) const bool WIDE = false;
// Whether a workgroup may hold several subgroups (as in attention.glsl): false compiles the
// exchange through shared memory and its barriers out (lavapipe runs any shader containing a
// barrier as one coroutine per subgroup).
layout(constant_id = 3) const bool MULTI_SUBGROUP = true;

layout(std430, binding = 3) writeonly buffer Y { ACT y[]; };
// The same binding 8 elements at a time (WIDE). Stores go through ACT4 so they round exactly
// as the element-wise path does.
layout(std430, binding = 3) writeonly buffer Y4 { ACT4 y4[]; };
// x, the weight and the bias: X_AT(i) reads element i, LOAD8_X(i, a, b) elements 8i..8i+7.
#ifndef EG_TEXEL
#define EG_TEXEL 0
#endif
#if EG_TEXEL
// Through texel views (norm_texel.comp, CPU devices): on lavapipe an imageLoad is one
// vectorized gather, where a storage-buffer load loops over the lanes per 32-bit component.
#include "texel_loads.glsl"
layout(binding = 0, rgba32ui) uniform readonly uimageBuffer x_texels;
layout(binding = 1, rgba32ui) uniform readonly uimageBuffer weight_texels;
layout(binding = 2, rgba32ui) uniform readonly uimageBuffer bias_texels;
#define X_AT(i) TEXEL_AT(x_texels, i)
#define WEIGHT_AT(i) TEXEL_AT(weight_texels, i)
#define BIAS_AT(i) TEXEL_AT(bias_texels, i)
#define LOAD8_X(i, a, b) TEXEL_LOAD8(x_texels, i, a, b)
#define LOAD8_WEIGHT(i, a, b) TEXEL_LOAD8(weight_texels, i, a, b)
#define LOAD8_BIAS(i, a, b) TEXEL_LOAD8(bias_texels, i, a, b)
#else
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer Wt { WT weight[]; };
layout(std430, binding = 2) readonly buffer Bs { WT bias[]; };
layout(std430, binding = 0) readonly buffer X8 { EG_WIDE x8[]; };
layout(std430, binding = 1) readonly buffer Wt8 { EG_WIDE weight8[]; };
layout(std430, binding = 2) readonly buffer Bs8 { EG_WIDE bias8[]; };
#define X_AT(i) float(x[i])
#define WEIGHT_AT(i) float(weight[i])
#define BIAS_AT(i) float(bias[i])
#define LOAD8_X(i, a, b) EG_LOAD8(x8, i, a, b)
#define LOAD8_WEIGHT(i, a, b) EG_LOAD8(weight8, i, a, b)
#define LOAD8_BIAS(i, a, b) EG_LOAD8(bias8, i, a, b)
#endif

layout(push_constant) uniform Push {
    uint rows, dim;           // rows per batch entry, row length
    uint x_off, x_stride, x_batch_stride;
    uint y_off, y_stride, y_batch_stride;
    float eps;
    uint rms;                 // 1: RMSNorm (no mean, no bias), 0: LayerNorm
} p;

#if NORM_SUBGROUP
// One sum per subgroup (there are at most WG of them).
shared float red[gl_WorkGroupSize.x];

float row_sum(float v) {
    float s = subgroupAdd(v);
    // Uniform in the workgroup: barriers only where several subgroups share a row.
    if (ROWS == 1u && MULTI_SUBGROUP && gl_NumSubgroups > 1u) {
        if (gl_SubgroupInvocationID == 0u) red[gl_SubgroupID] = s;
        barrier();
        s = 0.0;
        for (uint i = 0; i < gl_NumSubgroups; i++) s += red[i];
        barrier();
    }
    return s;
}
#else
shared float red[gl_WorkGroupSize.x];

// Tree reduction over the workgroup (WG a power of two, runtime/ops.c checks).
float row_sum(float v) {
    uint t = gl_LocalInvocationID.x;
    red[t] = v;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1) {
        if (t < s) red[t] += red[t + s];
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}
#endif

void normalize_row(uint row, uint batch, uint lane, uint lanes) {
    uint xb = p.x_off + batch * p.x_batch_stride + row * p.x_stride;
    uint yb = p.y_off + batch * p.y_batch_stride + row * p.y_stride;
    float mean = 0.0;
    if (p.rms == 0u) {
        float s = 0.0;
        for (uint i = lane; i < p.dim; i += lanes) s += X_AT(xb + i);
        mean = row_sum(s) / float(p.dim);
    }
    float ss = 0.0;
    for (uint i = lane; i < p.dim; i += lanes) {
        float d = X_AT(xb + i) - mean;
        ss += d * d;
    }
    float inv = inversesqrt(row_sum(ss) / float(p.dim) + p.eps);
    for (uint i = lane; i < p.dim; i += lanes) {
        float v = (X_AT(xb + i) - mean) * inv;
        if (p.rms != 0u) {
            // HF casts the normalized value to the weight dtype before the multiply.
            y[yb + i] = ACT(WEIGHT_AT(i) * float(WT(v)));
        } else {
            y[yb + i] = ACT(v * WEIGHT_AT(i) + BIAS_AT(i));
        }
    }
}

// normalize_row 8 elements at a time (WIDE, every offset and stride a multiple of 8).
void normalize_row_wide(uint row, uint batch, uint lane, uint lanes) {
    uint xb = (p.x_off + batch * p.x_batch_stride + row * p.x_stride) / 8u;
    uint yb = (p.y_off + batch * p.y_batch_stride + row * p.y_stride) / 4u;
    uint chunks = p.dim / 8u;
    vec4 a, b;
    float mean = 0.0;
    if (p.rms == 0u) {
        float s = 0.0;
        for (uint c = lane; c < chunks; c += lanes) {
            LOAD8_X(xb + c, a, b);
            s += dot(a, vec4(1.0)) + dot(b, vec4(1.0));
        }
        mean = row_sum(s) / float(p.dim);
    }
    float ss = 0.0;
    for (uint c = lane; c < chunks; c += lanes) {
        LOAD8_X(xb + c, a, b);
        a -= mean;
        b -= mean;
        ss += dot(a, a) + dot(b, b);
    }
    float inv = inversesqrt(row_sum(ss) / float(p.dim) + p.eps);
    for (uint c = lane; c < chunks; c += lanes) {
        vec4 wa, wb;
        LOAD8_X(xb + c, a, b);
        LOAD8_WEIGHT(c, wa, wb);
        a = (a - mean) * inv;
        b = (b - mean) * inv;
        if (p.rms != 0u) {
            // HF casts the normalized value to the weight dtype before the multiply.
            a = wa * vec4(WT4(a));
            b = wb * vec4(WT4(b));
        } else {
            vec4 ba, bb;
            LOAD8_BIAS(c, ba, bb);
            a = a * wa + ba;
            b = b * wb + bb;
        }
        y4[yb + 2u * c] = ACT4(a);
        y4[yb + 2u * c + 1u] = ACT4(b);
    }
}

void main() {
    uint batch = gl_WorkGroupID.y;
    bool wide = WIDE;
#if NORM_SUBGROUP
    if (ROWS > 1u) {
        // Rows wg·ROWS .. wg·ROWS + ROWS - 1, one per subgroup at a time.
        uint end = min((gl_WorkGroupID.x + 1u) * ROWS, p.rows);
        for (uint r = gl_WorkGroupID.x * ROWS + gl_SubgroupID; r < end; r += gl_NumSubgroups)
            if (wide)
                normalize_row_wide(r, batch, gl_SubgroupInvocationID, gl_SubgroupSize);
            else
                normalize_row(r, batch, gl_SubgroupInvocationID, gl_SubgroupSize);
        return;
    }
#endif
    if (wide)
        normalize_row_wide(gl_WorkGroupID.x, batch, gl_LocalInvocationID.x, gl_WorkGroupSize.x);
    else
        normalize_row(gl_WorkGroupID.x, batch, gl_LocalInvocationID.x, gl_WorkGroupSize.x);
}
