// Bindings, push constants and the fused epilogue shared by matmul.comp and matvec.comp.
// Epilogue, in order: + bias[n]; activation; if MUL: v *= Y; if ACCUM: v = Y + g·v, where
// g = tanh(alpha[n or 0]) when HAS_ALPHA (IDEFICS' gated residual) else 1.
// EG_TEXEL 1: x and W are texel views instead, declared by vector_loads.glsl.
#ifndef EG_TEXEL
#define EG_TEXEL 0
#endif
#if !EG_TEXEL
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer W { WT w[]; };
#endif
layout(std430, binding = 2) readonly buffer B { WT bias[]; };
layout(std430, binding = 3) readonly buffer Alpha { WT alpha[]; };
layout(std430, binding = 4) buffer Y { ACT y[]; };

// Flag bits, equal to EG_MM_* in runtime/ops.h.
#define MM_ACT_MASK 7u
#define MM_BIAS 8u
#define MM_MUL 16u
#define MM_ACCUM 32u
#define MM_ALPHA 64u
#define MM_ALPHA_VECTOR 128u
#define MM_RMS 256u // matmul_direct only: x's rows RMS-normalized first, the norm's weight bound
                    // in place of the bias (see matmul_direct.glsl)

layout(push_constant) uniform Push {
    uint M, N, K;   // X is M×K (row stride ldx), W is N×K
    uint ldx, ldy;  // row strides of X and Y, in elements
    uint x_off, y_off;
    uint n_off;     // column of Y (and index into bias/alpha) of this W's row 0
    uint flags;
    float eps;      // MM_RMS: the norm's epsilon
} p;

// The activation: MM_ACT, a specialization constant where the kernel defines MM_ACT_ID (its
// constant_id: matmul_direct.glsl), else from the flags. lavapipe evaluates every branch of a
// shader, taken or not, with its lanes masked off, so an activation read from the flags costs
// all five: matmul_direct at 1040x640x160 (fp16) took 5.9 ms with them, 4.7 with none.
#define MM_ACT_FROM_FLAGS 255u
#ifdef MM_ACT_ID
layout(constant_id = MM_ACT_ID) const uint MM_ACT = MM_ACT_FROM_FLAGS;
#else
const uint MM_ACT = MM_ACT_FROM_FLAGS;
#endif
uint mm_activation() { return MM_ACT == MM_ACT_FROM_FLAGS ? p.flags & MM_ACT_MASK : MM_ACT; }

// The rest of the epilogue (the product with, or the gated sum into, Y) and the store, for an
// output whose bias and activation are already applied.
// The gate g of ACCUM's sum into column col of Y: tanh(alpha[col or 0]) with MM_ALPHA, else 1.
float accum_gate(uint col) {
    if ((p.flags & MM_ALPHA) == 0u) return 1.0;
    return tanh(float(alpha[(p.flags & MM_ALPHA_VECTOR) != 0u ? col : 0u]));
}

void store_activated(uint m, uint n, float v) {
    uint col = p.n_off + n;
    uint yi = p.y_off + m * p.ldy + col;
    if ((p.flags & MM_MUL) != 0u) v *= float(y[yi]);
    if ((p.flags & MM_ACCUM) != 0u) v = float(y[yi]) + accum_gate(col) * v;
    y[yi] = ACT(v);
}

void store_output(uint m, uint n, float v) {
    if ((p.flags & MM_BIAS) != 0u) v += float(bias[p.n_off + n]);
    store_activated(m, n, eg_activate(v, mm_activation()));
}
