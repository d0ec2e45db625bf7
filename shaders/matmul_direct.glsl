// Y = epilogue(X · Wᵀ) like matmul.comp, for CPU implementations (lavapipe): no shared memory
// and no barriers. There, shared memory is ordinary memory behind the same per-lane load loop
// as a storage buffer (every lane's load is a scalar access with a bounds check per 32-bit
// component), and every barrier() suspends and resumes each subgroup of the workgroup, so
// staging tiles in shared memory only adds work. Instead each invocation reads its TM rows of
// X and TN rows of W straight from the buffers, 8 elements per load, and accumulates the
// TM·TN outputs in registers: (TM + TN) loads per TM·TN·8 multiply-adds.
//
// Grid: workgroup (x, y) covers columns [x·WG·TN, (x+1)·WG·TN) of rows [y·TM, (y+1)·TM);
// invocation i takes columns x·WG·TN + i·TN + [0, TN). The lanes of a subgroup share their
// rows of X (the same addresses) and read neighbouring rows of W.
//
// Its loads are 32-bit components (vector_loads.glsl): unlike the matrix-vector kernel, 64-bit
// ones did not pay here (lavapipe, ops_bench --vs-default: fp16 1.02-1.36x the time, fp32
// 0.94-0.97x). The body of matmul_direct.comp (storage-buffer loads) and
// matmul_direct_texel.comp (x and W read through rgba32ui texel views: on lavapipe an
// imageLoad is one vectorized gather where a storage-buffer load loops over the lanes).
//
// MM_RMS folds IDEFICS' RMSNorm of x's rows into the product (saving the norm's dispatch and
// its trip through memory): y = r · Σ_k W[n,k]·(g[k]·x[k]) with r = rsqrt(mean_k x[k]² + eps),
// the sum of squares gathered from the same loads of x, g (the norm's weight) read at binding 2
// in place of the bias. The separate norm rounds x·r to the storage type before the weight and
// the product; this does not.
//
// SWIGLU fuses IDEFICS' SwiGLU: W holds the gate projection's N rows followed by the up
// projection's N, and y[m, n] = silu(gate[m, n]) · up[m, n]. An invocation's TN rows of W are
// then TN/2 gate rows and the up rows of the same TN/2 outputs, so both products come from one
// pass over x (and one RMSNorm of it) in one dispatch; only its first TN/2 outputs are stored.
//
// y is written (and, for MUL and ACCUM, read) 4 elements per access where an invocation's
// columns lie inside N and each row's first one starts a group of 4 (y_off, ldy and the column
// multiples of 4): otherwise one element at a time.
//
// Rows past M or N read the last valid row (never stored): no branch in the inner loop.
// Reading 8 elements at once needs K, ldx and x_off to be multiples of 8; otherwise the scalar
// loop runs. lavapipe runs every path of a shader, taken or not, with its lanes masked off
// (an if is a mask, not a jump), so each path costs its untaken callers a pass of its loop:
// dropping a middle path of 4-element loads made 1040x640x160 (fp16) 7% faster. The norm's two
// copies of the loop are the same trade made the other way (see main()).
layout(local_size_x_id = 0) in;            // WG
layout(constant_id = 1) const uint TM = 4; // rows of X per invocation
layout(constant_id = 2) const uint TN = 4; // rows of W per invocation
// The SwiGLU variant (below), a pipeline of its own: as a flag tested at run time it made the
// plain kernel 1.15x slower on lavapipe (1040x640x160 fp16).
layout(constant_id = 3) const bool SWIGLU = false;
// constant_id 4: the activation (MM_ACT, matmul_epilogue.glsl), declared before this file.

#define EG_LOAD64 0
#include "vector_loads.glsl"

// MM_RMS: the norm's weight g: 8 elements per load, or one.
layout(std430, binding = 2) readonly buffer G8 { EG_WIDE g8[]; };
void load_g8(uint i, out vec4 a, out vec4 b) { EG_LOAD8(g8, i, a, b); }
float g_at(uint k) { return float(bias[k]); }

// y in groups of 4 elements (binding 4 again), converted as the per-element store converts.
#if EG_F16
layout(std430, binding = 4) buffer Y4 { uvec2 y4[]; };
vec4 load_y4(uint i) { return eg_unpack_h4(y4[i]); }
void store_y4(uint i, vec4 v) { y4[i] = eg_pack_h4(v); }
#else
layout(std430, binding = 4) buffer Y4 { vec4 y4[]; };
vec4 load_y4(uint i) { return y4[i]; }
void store_y4(uint i, vec4 v) { y4[i] = v; }
#endif

// The 8-elements-per-load loop of main(); RMS a constant, so no branch is left inside.
#define ACCUMULATE8(RMS)                                                                          \
    for (uint k = 0; k < p.K; k += 8u) {                                                          \
        vec4 xa[TM], xb[TM];                                                                      \
        for (uint i = 0; i < TM; i++) load_x8((xrow[i] + k) / 8u, xa[i], xb[i]);                   \
        if (RMS) {                                                                                \
            vec4 ga, gb;                                                                          \
            load_g8(k / 8u, ga, gb);                                                              \
            for (uint i = 0; i < TM; i++) {                                                       \
                ss[i] += dot(xa[i], xa[i]) + dot(xb[i], xb[i]);                                   \
                xa[i] *= ga;                                                                      \
                xb[i] *= gb;                                                                      \
            }                                                                                     \
        }                                                                                         \
        for (uint j = 0; j < TN; j++) {                                                           \
            vec4 wa, wb;                                                                          \
            load_w8((wrow[j] + k) / 8u, wa, wb);                                                  \
            for (uint i = 0; i < TM; i++) acc[i][j] += dot(xa[i], wa) + dot(xb[i], wb);           \
        }                                                                                         \
    }

void main() {
    bool swiglu = SWIGLU;
    uint cols = swiglu ? TN / 2u : TN; // outputs per row of this invocation
    uint n0 = (gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x) * cols;
    uint m0 = gl_WorkGroupID.y * TM;
    if (n0 >= p.N || m0 >= p.M) return;
    uint xrow[TM], wrow[TN];
    for (uint i = 0; i < TM; i++) xrow[i] = p.x_off + min(m0 + i, p.M - 1u) * p.ldx;
    for (uint j = 0; j < TN; j++) {
        uint up = swiglu && j >= cols ? p.N : 0u; // the up projection's rows follow the gate's
        wrow[j] = (up + min(n0 + j % cols, p.N - 1u)) * p.K;
    }
    float acc[TM][TN], ss[TM];
    for (uint i = 0; i < TM; i++) {
        ss[i] = 0.0;
        for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;
    }
    bool rms = (p.flags & MM_RMS) != 0u;
    uint align = p.K | p.ldx | p.x_off;
    if ((align & 7u) == 0u) {
        // Two copies of the loop, with and without the norm: a branch inside it, even one
        // every lane takes the same way, cost 12% at K = 160 on lavapipe (where the untaken
        // copy costs one masked pass).
        if (rms)
            ACCUMULATE8(true)
        else
            ACCUMULATE8(false)
    } else {
        for (uint k = 0; k < p.K; k++) {
            float xv[TM];
            for (uint i = 0; i < TM; i++) xv[i] = x_at(xrow[i] + k);
            if (rms) {
                float g = g_at(k);
                for (uint i = 0; i < TM; i++) {
                    ss[i] += xv[i] * xv[i];
                    xv[i] *= g;
                }
            }
            for (uint j = 0; j < TN; j++) {
                float wv = w_at(wrow[j] + k);
                for (uint i = 0; i < TM; i++) acc[i][j] += xv[i] * wv;
            }
        }
    }
    float r[TM];
    for (uint i = 0; i < TM; i++) r[i] = rms ? inversesqrt(ss[i] / float(p.K) + p.eps) : 1.0;
    float out_v[TM * TN]; // with the SwiGLU, row i's outputs are out_v[i * TN + j], j < TN / 2
    if (swiglu) {
        // constant indices into acc: a variable one would keep it in memory
        for (uint i = 0; i < TM; i++)
            for (uint j = 0; j < TN / 2u; j++)
                out_v[i * TN + j] =
                    eg_activate(acc[i][j] * r[i], uint(ACT_SILU)) * (acc[i][j + TN / 2u] * r[i]);
    } else if (TN % 4u == 0u) {
        // Bias and activation on vec4s here (each bias loaded once for the TM rows, the
        // activation tested once per four outputs), the rest in the loop below: per element,
        // the untaken activations alone cost 14% of the kernel at K = 160 (lavapipe).
        float bj[TN];
        for (uint j = 0; j < TN; j++) bj[j] = 0.0;
        if ((p.flags & MM_BIAS) != 0u)
            for (uint j = 0; j < TN; j++) bj[j] = float(bias[p.n_off + min(n0 + j, p.N - 1u)]);
        uint act = mm_activation();
        for (uint i = 0; i < TM; i++)
            for (uint q = 0; q < TN; q += 4u) {
                vec4 v = vec4(acc[i][q], acc[i][q + 1u], acc[i][q + 2u], acc[i][q + 3u]) * r[i] +
                         vec4(bj[q], bj[q + 1u], bj[q + 2u], bj[q + 3u]);
                v = eg_activate4(v, act);
                for (uint c = 0; c < 4u; c++) out_v[i * TN + q + c] = v[c];
            }
    } else {
        for (uint i = 0; i < TM; i++)
            for (uint j = 0; j < TN; j++) out_v[i * TN + j] = acc[i][j] * r[i];
    }
    // Where this invocation's columns lie inside N and start a group of 4 elements of y, each
    // group is read (MUL, ACCUM) and written with one access: on lavapipe a storage-buffer
    // access is a loop over the lanes per 32-bit component, and per element those loops cost
    // a quarter of the kernel at K = 160 (1040x640x160 fp16: 7.1 -> 5.8 ms).
    if (cols % 4u == 0u && n0 + cols <= p.N && ((p.y_off | p.ldy | (p.n_off + n0)) & 3u) == 0u) {
        bool mul = (p.flags & MM_MUL) != 0u, accum = (p.flags & MM_ACCUM) != 0u;
        float g[TN];
        for (uint j = 0; j < cols; j++) g[j] = accum ? accum_gate(p.n_off + n0 + j) : 1.0;
        for (uint i = 0; i < TM; i++) {
            if (m0 + i >= p.M) break;
            uint g0 = (p.y_off + (m0 + i) * p.ldy + p.n_off + n0) / 4u;
            for (uint q = 0; q < cols / 4u; q++) {
                uint e = i * TN + 4u * q;
                vec4 v = vec4(out_v[e], out_v[e + 1u], out_v[e + 2u], out_v[e + 3u]);
                if (mul || accum) {
                    vec4 y_old = load_y4(g0 + q);
                    if (mul) v *= y_old;
                    if (accum) v = y_old + vec4(g[4u * q], g[4u * q + 1u], g[4u * q + 2u], g[4u * q + 3u]) * v;
                }
                store_y4(g0 + q, v);
            }
        }
        return;
    }
    // One call site for the rest, in a loop that is not unrolled (see matmul.comp).
    [[dont_unroll]] for (uint e = 0; e < TM * TN; e++) {
        uint m = m0 + e / TN, j = e % TN, n = n0 + j;
        if (j < cols && m < p.M && n < p.N) {
            if (TN % 4u == 0u || swiglu)
                store_activated(m, n, out_v[e]);
            else
                store_output(m, n, out_v[e]);
        }
    }
}
