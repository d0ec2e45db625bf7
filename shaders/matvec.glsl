// Body of matvec.comp (subgroup reductions) and matvec_shared.comp (shared-memory reductions,
// for devices without subgroup arithmetic): the product of matmul.comp for few rows of X
// (decode: M ≤ COLS, at most 8), where the cost is reading W once.
//
// Work split: a workgroup owns ROWS_WG consecutive rows of W (output columns n). A "group" of
// LANES invocations (a subgroup, or LANES consecutive invocations in the shared variant) owns
// RPG of them; its lanes stride over K together, lane i reading the i-th vector of each stretch
// of LANES vectors of a row, so one load instruction of the group reads LANES·16 consecutive
// bytes of a row: coalesced on GPUs. Each x vector loaded is used for all RPG rows, and each w
// vector for all COLS rows of X. Accumulation is in float; the group then reduces its LANES
// partial sums per output (subgroupAdd, or one barrier and a serial sum from shared memory) and
// applies the fused epilogue (matmul_epilogue.glsl) once per output.
//
// Wide loads need every row of X and W to start on a vector boundary. fp32 reads vec4s (16
// bytes); fp16 reads 8 halves as a uvec4 (16 bytes) when K, ldx and x_off are multiples of 8,
// else 4 halves as a uvec2 (8 bytes) when they are multiples of 4, and unpacks them with
// unpackHalf2x16 (exact). Fewer, wider loads also matter on CPU implementations (lavapipe),
// where every lane's load is a separate scalar access with a bounds check per component: a
// uvec4 of halves costs 4 of those instead of 8, and with MV_LOAD64 (matvec64.comp, for CPU
// devices with shaderInt64; runtime/ops.c) the same 16 bytes are read as a u64vec2, 2 accesses.
// Rows that are not aligned (K odd, say) take a loop of scalar loads with the same split.
//
// Specialization constants (runtime/ops.c picks them from the device's subgroup size):
layout(local_size_x_id = 0) in;              // WG: invocations per workgroup
layout(constant_id = 1) const uint LANES = 32;  // shared variant: invocations per group
layout(constant_id = 2) const uint RPG = 2;     // rows of W per group
layout(constant_id = 3) const uint COLS = 1;    // rows of X this pipeline handles (p.M ≤ COLS)
layout(constant_id = 4) const uint ROWS_WG = 8; // rows of W per workgroup = RPG · groups

// Vector loads of x and W (load_x8, load_w4, ...), 64-bit components with MV_LOAD64.
#define EG_LOAD64 MV_LOAD64
#include "vector_loads.glsl"

#if MV_SUBGROUP
#define GROUP_LANE gl_SubgroupInvocationID
#define GROUP_SIZE gl_SubgroupSize
#define GROUP_ID gl_SubgroupID
#define GROUP_COUNT gl_NumSubgroups
#else
#define GROUP_LANE (gl_LocalInvocationID.x % LANES)
#define GROUP_SIZE LANES
#define GROUP_ID (gl_LocalInvocationID.x / LANES)
#define GROUP_COUNT (gl_WorkGroupSize.x / LANES)
// One partial sum per (output, invocation); summed by one lane per output after a barrier.
shared float partial[RPG * COLS][gl_WorkGroupSize.x];
#endif

void main() {
    // A 1-D grid dispatched in 2-D (runtime/ops.c dispatch_1d); surplus workgroups leave.
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (wg * ROWS_WG >= p.N) return;
    uint lane = GROUP_LANE, lanes = GROUP_SIZE;
    // The largest power of two dividing the start of every row of X and W (for wide loads).
    uint align = p.K | p.ldx | p.x_off;
    align &= ~(align - 1u); // lowest set bit (0 if all are 0: any alignment)
    if (align == 0u) align = 8u;
    // The subgroup variant loops in case the device runs fewer, larger subgroups than the
    // subgroupSize the host assumed; normally this is one pass.
#if MV_SUBGROUP
    for (uint g0 = GROUP_ID * RPG; g0 < ROWS_WG; g0 += GROUP_COUNT * RPG) {
#else
    {
        uint g0 = GROUP_ID * RPG;
#endif
        uint n0 = wg * ROWS_WG + g0;
        float acc[RPG][COLS];
        for (uint r = 0; r < RPG; r++)
            for (uint c = 0; c < COLS; c++) acc[r][c] = 0.0;
        // Rows past N or M read the last valid row instead (never stored): no branch in the
        // loops, every load in bounds.
        uint wrow[RPG], xrow[COLS];
        for (uint r = 0; r < RPG; r++) wrow[r] = min(n0 + r, p.N - 1u) * p.K;
        for (uint c = 0; c < COLS; c++) xrow[c] = p.x_off + min(c, p.M - 1u) * p.ldx;
#if EG_F16
        if (align % 8u == 0u) {
            for (uint i = lane; i < p.K / 8u; i += lanes) {
                vec4 xa[COLS], xb[COLS];
                for (uint c = 0; c < COLS; c++) load_x8(xrow[c] / 8u + i, xa[c], xb[c]);
                for (uint r = 0; r < RPG; r++) {
                    vec4 wa, wb;
                    load_w8(wrow[r] / 8u + i, wa, wb);
                    for (uint c = 0; c < COLS; c++) acc[r][c] += dot(wa, xa[c]) + dot(wb, xb[c]);
                }
            }
        } else
#endif
        if (align % 4u == 0u) {
            for (uint i = lane; i < p.K / 4u; i += lanes) {
                vec4 xv[COLS];
                for (uint c = 0; c < COLS; c++) xv[c] = load_x4(xrow[c] / 4u + i);
                for (uint r = 0; r < RPG; r++) {
                    vec4 wv = load_w4(wrow[r] / 4u + i);
                    for (uint c = 0; c < COLS; c++) acc[r][c] += dot(wv, xv[c]);
                }
            }
        } else {
            for (uint k = lane; k < p.K; k += lanes) {
                float xv[COLS];
                for (uint c = 0; c < COLS; c++) xv[c] = float(x[xrow[c] + k]);
                for (uint r = 0; r < RPG; r++) {
                    float wv = float(w[wrow[r] + k]);
                    for (uint c = 0; c < COLS; c++) acc[r][c] += wv * xv[c];
                }
            }
        }
#if MV_SUBGROUP
        // Every lane gets every sum; lane i stores outputs i, i + lanes, ... One call site of
        // the epilogue, in a loop: unrolled RPG·COLS times it made pipeline creation on
        // lavapipe several times slower.
        float sums[RPG * COLS];
        for (uint r = 0; r < RPG; r++)
            for (uint c = 0; c < COLS; c++) sums[r * COLS + c] = subgroupAdd(acc[r][c]);
        for (uint j = lane; j < RPG * COLS; j += lanes) {
            uint r = j / COLS, c = j % COLS;
            if (n0 + r < p.N && c < p.M) store_output(c, n0 + r, sums[j]);
        }
    }
#else
        for (uint r = 0; r < RPG; r++)
            for (uint c = 0; c < COLS; c++) partial[r * COLS + c][gl_LocalInvocationID.x] = acc[r][c];
        barrier();
        uint base = gl_LocalInvocationID.x - lane;
        for (uint j = lane; j < RPG * COLS; j += lanes) {
            uint r = j / COLS, c = j % COLS;
            if (n0 + r >= p.N || c >= p.M) continue;
            float s = 0.0;
            for (uint l = 0; l < lanes; l++) s += partial[j][base + l];
            store_output(c, n0 + r, s);
        }
    }
#endif
}
