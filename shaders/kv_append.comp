#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require
#include "common.glsl"
#define BATCH_TABLE_BINDING 2
#include "batch_table.glsl"

// One decode step of k sequences that each have their own KV cache (batched decode): row b of
// QKV holds sequence b's new query, key and value ([q | k | v], 3·H elements); rotates the
// query (in place) and the key by the sequence's position (RoPE, exactly as rope.comp does)
// and appends the key and the value to its caches at that position, which the batch table
// gives (batch_table.glsl). One dispatch for the batch, instead of two copies and two RoPE
// dispatches per sequence.
layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer QKV { ACT qkv[]; }; // [k][3H]
layout(std430, binding = 1) readonly buffer Table { float table[]; };

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

    uint qr = 3u * b * H + h * p.head_dim + j; // its query; the key is H further, the value 2H
    float x1 = float(qkv[qr]), x2 = float(qkv[qr + half_dim]);
    qkv[qr] = ACT(x1 * c - x2 * sn);
    qkv[qr + half_dim] = ACT(x2 * c + x1 * sn);

    uint at = pos * s.stride + h * p.head_dim + j;
    ActRef kc = ActRef(s.k_addr), vc = ActRef(s.v_addr);
    x1 = float(qkv[qr + H]);
    x2 = float(qkv[qr + H + half_dim]);
    kc.e[s.k_off + at] = ACT(x1 * c - x2 * sn);
    kc.e[s.k_off + at + half_dim] = ACT(x2 * c + x1 * sn);
    vc.e[s.v_off + at] = qkv[qr + 2u * H];
    vc.e[s.v_off + at + half_dim] = qkv[qr + 2u * H + half_dim];
}
