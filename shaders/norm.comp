#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

// Row normalization, one workgroup per row: LayerNorm (mean and biased variance, weight and
// bias) or IDEFICS' RMSNorm (x·rsqrt(mean(x²)+eps)·weight). Statistics in float, two passes
// for LayerNorm so the variance does not lose precision to a large mean.
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer Wt { WT weight[]; };
layout(std430, binding = 2) readonly buffer Bs { WT bias[]; };
layout(std430, binding = 3) writeonly buffer Y { ACT y[]; };

layout(push_constant) uniform Push {
    uint rows, dim;           // rows per batch entry (grid x), row length
    uint x_off, x_stride, x_batch_stride;
    uint y_off, y_stride, y_batch_stride;
    float eps;
    uint rms;                 // 1: RMSNorm (no mean, no bias), 0: LayerNorm
} p;

shared float red[128];

float block_sum(float v) {
    uint t = gl_LocalInvocationID.x;
    red[t] = v;
    barrier();
    for (uint s = 64; s > 0; s >>= 1) {
        if (t < s) red[t] += red[t + s];
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

void main() {
    uint row = gl_WorkGroupID.x, batch = gl_WorkGroupID.y;
    uint t = gl_LocalInvocationID.x;
    uint xb = p.x_off + batch * p.x_batch_stride + row * p.x_stride;
    uint yb = p.y_off + batch * p.y_batch_stride + row * p.y_stride;
    float mean = 0.0;
    if (p.rms == 0u) {
        float s = 0.0;
        for (uint i = t; i < p.dim; i += 128) s += float(x[xb + i]);
        mean = block_sum(s) / float(p.dim);
    }
    float ss = 0.0;
    for (uint i = t; i < p.dim; i += 128) {
        float d = float(x[xb + i]) - mean;
        ss += d * d;
    }
    float inv = inversesqrt(block_sum(ss) / float(p.dim) + p.eps);
    for (uint i = t; i < p.dim; i += 128) {
        float v = (float(x[xb + i]) - mean) * inv;
        if (p.rms != 0u) {
            // HF casts the normalized value to the weight dtype before the multiply.
            y[yb + i] = ACT(float(weight[i]) * float(WT(v)));
        } else {
            y[yb + i] = ACT(v * float(weight[i]) + float(bias[i]));
        }
    }
}
