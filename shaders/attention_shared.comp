#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

// Scaled dot-product attention for one (query, head, batch) per workgroup, streaming over the
// keys in tiles of 128 with an online softmax (running max and sum, rescaled per tile), so any
// key count fits. Keys a query may see: all (mode 0), causal up to its absolute position
// q_pos0 + q (mode 1), or the range [lo, hi) read from `ranges` (mode 2, cross-attention to
// one image), or the blocks of mask_block keys whose bit is set in the query's mask_words words
// of `ranges` (mode 3; query q's words are row q_pos0 + q); an empty range or mask writes zeros (IDEFICS' gate for tokens that see
// no image). Query head h reads key/value head h / kv_group (grouped-query attention).
// Rows hold all heads: element d of head h of row r is at off + r·stride + h·head_dim + d.
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer Q { ACT q[]; };
layout(std430, binding = 1) readonly buffer K { ACT k[]; };
layout(std430, binding = 2) readonly buffer V { ACT v[]; };
layout(std430, binding = 3) writeonly buffer O { ACT o[]; };
layout(std430, binding = 4) readonly buffer R { uint ranges[]; };

layout(push_constant) uniform Push {
    uint n_keys, head_dim;
    uint q_off, q_stride, q_batch;
    uint k_off, k_stride, k_batch;
    uint v_off, v_stride, v_batch;
    uint o_off, o_stride, o_batch;
    uint mode, q_pos0;
    float scale;
    uint n_queries, entry0, n_entries;  // unused here (runtime/ops_push.h)
    uint kv_group;                      // query heads per key/value head; 0 or 1: none
    uint mask_block, mask_words;        // mode 3: keys per mask bit, words per query
} p;

#define NEG_HUGE -3.0e38
#define MAX_DIMS_PER_INVOCATION 4  // head_dim ≤ 512
shared float qs[512];
shared float probs[128];
shared float red[128];

float block_reduce(float v, bool take_max) {
    uint t = gl_LocalInvocationID.x;
    red[t] = v;
    barrier();
    for (uint s = 64; s > 0; s >>= 1) {
        if (t < s) red[t] = take_max ? max(red[t], red[t + s]) : red[t] + red[t + s];
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

void main() {
    uint qi = gl_WorkGroupID.x, head = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
    uint t = gl_LocalInvocationID.x;
    uint hd = p.head_dim;
    uint lo = 0, hi = p.n_keys;
    if (p.mode == 1u) hi = min(p.n_keys, p.q_pos0 + qi + 1);
    if (p.mode == 2u) {
        lo = ranges[2 * qi];
        hi = min(ranges[2 * qi + 1], p.n_keys);
    }
    if (p.mode == 3u) {
        uint first = 0xFFFFFFFFu, last = 0u;
        for (uint w = 0u; w < p.mask_words; w++) {
            uint bits = ranges[(p.q_pos0 + qi) * p.mask_words + w];
            if (bits == 0u) continue;
            if (first == 0xFFFFFFFFu) first = 32u * w + uint(findLSB(bits));
            last = 32u * w + uint(findMSB(bits));
        }
        lo = first == 0xFFFFFFFFu ? 0u : min(first * p.mask_block, p.n_keys);
        hi = first == 0xFFFFFFFFu ? 0u : min((last + 1u) * p.mask_block, p.n_keys);
    }
    uint ob = p.o_off + b * p.o_batch + qi * p.o_stride + head * hd;
    if (hi <= lo) {
        for (uint d = t; d < hd; d += 128) o[ob + d] = ACT(0.0);
        return;
    }
    uint qb = p.q_off + b * p.q_batch + qi * p.q_stride + head * hd;
    for (uint d = t; d < hd; d += 128) qs[d] = float(q[qb + d]);
    barrier();

    uint kv_head = head / max(p.kv_group, 1u);
    uint kb = p.k_off + b * p.k_batch + kv_head * hd;
    uint vb = p.v_off + b * p.v_batch + kv_head * hd;
    // Finite stand-ins for -inf: drivers may assume shaders never see infinities.
    float run_max = NEG_HUGE, run_sum = 0.0;
    float acc[MAX_DIMS_PER_INVOCATION];
    for (int i = 0; i < MAX_DIMS_PER_INVOCATION; i++) acc[i] = 0.0;

    for (uint j0 = lo; j0 < hi; j0 += 128) {
        uint j = j0 + t;
        bool seen = j < hi;
        if (p.mode == 3u && seen) {
            uint blk = j / p.mask_block;
            seen = ((ranges[(p.q_pos0 + qi) * p.mask_words + blk / 32u] >> (blk % 32u)) & 1u) != 0u;
        }
        float s = NEG_HUGE;
        if (seen) {
            s = 0.0;
            uint kr = kb + j * p.k_stride;
            for (uint d = 0; d < hd; d++) s += qs[d] * float(k[kr + d]);
            s *= p.scale;
        }
        float new_max = max(run_max, block_reduce(s, true));
        float e = seen ? exp(s - new_max) : 0.0;
        probs[t] = e;
        float tile_sum = block_reduce(e, false);  // its barriers also publish probs[]
        float correction = exp(run_max - new_max);
        run_sum = run_sum * correction + tile_sum;
        uint n = min(128u, hi - j0);
        for (int i = 0; i < MAX_DIMS_PER_INVOCATION; i++) {
            uint d = t + 128u * uint(i);
            if (d >= hd) break;
            float a = acc[i] * correction;
            for (uint jj = 0; jj < n; jj++) a += probs[jj] * float(v[vb + (j0 + jj) * p.v_stride + d]);
            acc[i] = a;
        }
        run_max = new_max;
        barrier();
    }
    for (int i = 0; i < MAX_DIMS_PER_INVOCATION; i++) {
        uint d = t + 128u * uint(i);
        if (d < hd) o[ob + d] = ACT(acc[i] / run_sum);
    }
}
