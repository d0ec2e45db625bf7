#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "matmul_epilogue.glsl"

// The original simple kernel that matvec.comp (matvec.glsl) replaced, kept (built only with
// EGRET_OPS_NAIVE=1, runtime/ops.c) so bench/ops_bench.c can measure the fast one against it.

// The same product as matmul.comp for few rows of X (decode: M ≤ MV_MAX_ROWS), where the cost
// is reading W once: each workgroup owns 4 output columns, 32 invocations per column stride
// over K (consecutive invocations read consecutive weights) and reduce in shared memory.
#define MV_MAX_ROWS 4
layout(local_size_x = 128) in;

shared float partial[MV_MAX_ROWS][128];

void main() {
    uint lane = gl_LocalInvocationID.x % 32, col = gl_LocalInvocationID.x / 32;
    uint n = gl_WorkGroupID.x * 4 + col;
    float acc[MV_MAX_ROWS];
    for (int r = 0; r < MV_MAX_ROWS; r++) acc[r] = 0.0;
    if (n < p.N) {
        for (uint k = lane; k < p.K; k += 32) {
            float wv = float(w[n * p.K + k]);
            for (uint r = 0; r < p.M; r++) acc[r] += wv * float(x[p.x_off + r * p.ldx + k]);
        }
    }
    for (int r = 0; r < MV_MAX_ROWS; r++) partial[r][gl_LocalInvocationID.x] = acc[r];
    barrier();
    for (uint s = 16; s > 0; s >>= 1) {
        if (lane < s)
            for (int r = 0; r < MV_MAX_ROWS; r++)
                partial[r][gl_LocalInvocationID.x] += partial[r][gl_LocalInvocationID.x + s];
        barrier();
    }
    if (lane == 0 && n < p.N)
        for (uint r = 0; r < p.M; r++) store_output(r, n, partial[r][gl_LocalInvocationID.x]);
}
