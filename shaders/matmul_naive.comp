#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "matmul_epilogue.glsl"

// The original simple kernel that matmul.comp replaced, kept (built only with
// EGRET_OPS_NAIVE=1, runtime/ops.c) so bench/ops_bench.c can measure the fast one against it.

// Y = epilogue(X · Wᵀ) for an M×K activation X and an N×K weight W (PyTorch Linear layout).
// Tiled: a 16×16 workgroup computes a 64×64 block of Y, each invocation 4×4 outputs, with
// 16-wide slices of X and W staged in shared memory.
layout(local_size_x = 16, local_size_y = 16) in;

#define BM 64
#define BN 64
#define BK 16

shared float xs[BK][BM + 1];
shared float ws[BK][BN + 1];

void main() {
    uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
    uint tid = ty * 16 + tx;
    uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0;

    for (uint k0 = 0; k0 < p.K; k0 += BK) {
        // 256 invocations load 64×16 of X and of W, four elements each.
        for (uint e = tid; e < BM * BK; e += 256) {
            uint r = e / BK, c = e % BK;
            uint m = m0 + r, k = k0 + c;
            xs[c][r] = (m < p.M && k < p.K) ? float(x[p.x_off + m * p.ldx + k]) : 0.0;
            uint n = n0 + r;
            ws[c][r] = (n < p.N && k < p.K) ? float(w[n * p.K + k]) : 0.0;
        }
        barrier();
        for (uint c = 0; c < BK; c++) {
            float a[4], b[4];
            for (int i = 0; i < 4; i++) a[i] = xs[c][ty + 16 * i];
            for (int j = 0; j < 4; j++) b[j] = ws[c][tx + 16 * j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        barrier();
    }
    for (int i = 0; i < 4; i++) {
        uint m = m0 + ty + 16 * i;
        if (m >= p.M) continue;
        for (int j = 0; j < 4; j++) {
            uint n = n0 + tx + 16 * j;
            if (n < p.N) store_output(m, n, acc[i][j]);
        }
    }
}
