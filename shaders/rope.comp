#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

// Rotary position embedding, GPT-NeoX "rotate half" form, in place on rows of heads:
// x'[j] = x[j]·cos − x[j+hd/2]·sin, x'[j+hd/2] = x[j+hd/2]·cos + x[j]·sin, for the position
// pos0 + row. cos/sin come from a host-built table (float, [positions][hd/2] each) matching
// the reference's float32 angles.
layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer Table { float table[]; };

layout(push_constant) uniform Push {
    uint rows, heads, head_dim;
    uint off, stride;
    uint pos0;
    uint sin_off;  // where the sin half of the table starts
} p;

void main() {
    uint half_dim = p.head_dim / 2;
    uint idx = eg_flat_index();
    if (idx >= p.rows * p.heads * half_dim) return;
    uint j = idx % half_dim;
    uint h = (idx / half_dim) % p.heads;
    uint r = idx / (half_dim * p.heads);
    uint base = p.off + r * p.stride + h * p.head_dim;
    uint ti = (p.pos0 + r) * half_dim + j;
    float c = table[ti], s = table[p.sin_off + ti];
    float x1 = float(x[base + j]), x2 = float(x[base + j + half_dim]);
    x[base + j] = ACT(x1 * c - x2 * s);
    x[base + j + half_dim] = ACT(x2 * c + x1 * s);
}
