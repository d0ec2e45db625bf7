#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require
#include "common.glsl"
#define BATCH_TABLE_BINDING 3
#include "batch_table.glsl"

// One decode step of k sequences that each have their own KV cache (batched decode): rotates
// query row b and key row b by sequence b's position (RoPE, exactly as rope.comp does) and
// appends key and value row b to sequence b's caches at that position, which the batch table
// gives (batch_table.glsl). One dispatch for the batch, instead of two copies and two RoPE
// dispatches per sequence.
layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer Q { ACT q[]; };            // [k][H], rotated in place
layout(std430, binding = 1) readonly buffer KV { ACT kv[]; }; // new keys [k][H], values [k][H]
layout(std430, binding = 2) readonly buffer Table { float table[]; };

layout(push_constant) uniform Push {
    uint batch, heads, head_dim;
    uint sin_off;  // where the sin half of the RoPE table starts
    uint entry0;   // this step's first entry in the table
} p;

void main() {
    uint half_dim = p.head_dim / 2u;
    uint idx = eg_flat_index();
    if (idx >= p.batch * p.heads * half_dim) return;
    uint j = idx % half_dim;
    uint h = (idx / half_dim) % p.heads;
    uint b = idx / (half_dim * p.heads);
    uint H = p.heads * p.head_dim;
    BatchEntry s = batch_entry(p.entry0 + b);
    uint pos = s.n_keys - 1u; // the new token's position: the last key
    uint ti = pos * half_dim + j;
    float c = table[ti], sn = table[p.sin_off + ti];

    uint qr = b * H + h * p.head_dim + j;
    float x1 = float(q[qr]), x2 = float(q[qr + half_dim]);
    q[qr] = ACT(x1 * c - x2 * sn);
    q[qr + half_dim] = ACT(x2 * c + x1 * sn);

    uint at = pos * s.stride + h * p.head_dim + j;
    ActRef kc = ActRef(s.k_addr), vc = ActRef(s.v_addr);
    x1 = float(kv[qr]);
    x2 = float(kv[qr + half_dim]);
    kc.e[s.k_off + at] = ACT(x1 * c - x2 * sn);
    kc.e[s.k_off + at + half_dim] = ACT(x2 * c + x1 * sn);
    uint vr = (p.batch + b) * H + h * p.head_dim + j;
    vc.e[s.v_off + at] = kv[vr];
    vc.e[s.v_off + at + half_dim] = kv[vr + half_dim];
}
