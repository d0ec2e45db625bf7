#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "common.glsl"

// Flash-style attention for many queries (ViT, perceiver, prefill, cross-attention): the same
// math, push constants and modes as attention.glsl (see there: full, causal, ranges, block
// mask; grouped-query heads; an empty range writes zeros), organised for reuse of K and V.
//
// A workgroup owns QPW = WG / LANES consecutive queries of one head and batch entry; LANES
// consecutive invocations (one power of two within a subgroup) share a query, each holding the
// query's dimensions d = lane + LANES·i (i < DPL) in registers, with its share of the output
// accumulator. The workgroup walks the union of its queries' key ranges in tiles of BK keys:
// the whole workgroup copies the tile's key and value rows into shared memory (coalesced, once
// for all QPW queries), then each query scores the BK keys (partial dot products summed across
// its LANES by subgroupShuffleXor), updates its running max and sum once per tile (online
// softmax: the accumulator is rescaled by exp(old max - new max)), and adds p·v from shared
// memory. Scores live only in registers: nothing of size [queries, keys] touches device memory.
//
// head_dim is at most LANES·DPL (runtime/ops.c sends larger heads to attention.comp).
layout(local_size_x_id = 0) in;                // WG: QPW · LANES
layout(constant_id = 1) const uint LANES = 4u; // invocations per query (a power of two)
layout(constant_id = 2) const uint DPL = 32u;  // dimensions per invocation: head_dim ≤ LANES·DPL
layout(constant_id = 3) const uint BK = 32u;   // keys per tile

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
    uint n_queries;
    uint entry0, n_entries; // attention.glsl's batch-table fields, unused here
    uint kv_group;
    uint mask_block, mask_words;
} p;

#define NEG_HUGE -3.0e38
// A key tile's rows, head_dim apart (float: exact for either storage precision).
shared float ks[BK * LANES * DPL];
shared float vs[BK * LANES * DPL];
shared uint union_lo, union_hi;

void main() {
    uint t = gl_LocalInvocationID.x;
    uint lane = t % LANES, qpw = gl_WorkGroupSize.x / LANES;
    uint qi = gl_WorkGroupID.x * qpw + t / LANES;
    uint head = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
    uint hd = p.head_dim;
    bool valid = qi < p.n_queries;

    // This query's keys [lo, hi); in block-mask mode from its first to its last visible block.
    uint lo = 0u, hi = valid ? p.n_keys : 0u;
    if (p.mode == 1u) hi = min(hi, p.q_pos0 + qi + 1u);
    if (p.mode == 2u && valid) {
        lo = ranges[2u * qi];
        hi = min(ranges[2u * qi + 1u], p.n_keys);
    }
    uint mask_row = (p.q_pos0 + qi) * p.mask_words;
    if (p.mode == 3u && valid) {
        uint first = 0xFFFFFFFFu, last = 0u;
        for (uint w = 0u; w < p.mask_words; w++) {
            uint bits = ranges[mask_row + w];
            if (bits == 0u) continue;
            if (first == 0xFFFFFFFFu) first = 32u * w + uint(findLSB(bits));
            last = 32u * w + uint(findMSB(bits));
        }
        lo = first == 0xFFFFFFFFu ? 0u : min(first * p.mask_block, p.n_keys);
        hi = first == 0xFFFFFFFFu ? 0u : min((last + 1u) * p.mask_block, p.n_keys);
    }
    // The union of the workgroup's ranges: the tiles it walks.
    if (t == 0u) {
        union_lo = 0xFFFFFFFFu;
        union_hi = 0u;
    }
    barrier();
    if (hi > lo) {
        atomicMin(union_lo, lo);
        atomicMax(union_hi, hi);
    }
    barrier();
    uint all_lo = union_lo, all_hi = union_hi;

    uint kv_head = head / max(p.kv_group, 1u);
    uint kb = p.k_off + b * p.k_batch + kv_head * hd;
    uint vb = p.v_off + b * p.v_batch + kv_head * hd;
    uint qb = p.q_off + b * p.q_batch + min(qi, p.n_queries - 1u) * p.q_stride + head * hd;
    float qv[DPL], acc[DPL];
    for (uint i = 0u; i < DPL; i++) {
        uint d = lane + LANES * i;
        qv[i] = d < hd ? float(q[qb + d]) : 0.0;
        acc[i] = 0.0;
    }
    // Finite stand-ins for -inf: drivers may assume shaders never see infinities.
    float run_max = NEG_HUGE, run_sum = 0.0;
    for (uint j0 = all_lo; j0 < all_hi; j0 += BK) {
        uint n = min(BK, all_hi - j0);
        for (uint e = t; e < n * hd; e += gl_WorkGroupSize.x) {
            uint j = e / hd, d = e % hd;
            ks[e] = float(k[kb + (j0 + j) * p.k_stride + d]);
            vs[e] = float(v[vb + (j0 + j) * p.v_stride + d]);
        }
        barrier();
        float s[BK];
        float tile_max = NEG_HUGE;
        for (uint jj = 0u; jj < BK; jj++) {
            s[jj] = NEG_HUGE;
            if (jj >= n) continue; // n is the same for the whole workgroup
            float part = 0.0;
            for (uint i = 0u; i < DPL; i++) {
                uint d = lane + LANES * i;
                if (d < hd) part += qv[i] * ks[jj * hd + d];
            }
            for (uint x = LANES / 2u; x > 0u; x >>= 1u) part += subgroupShuffleXor(part, x);
            uint j = j0 + jj;
            bool seen = j >= lo && j < hi;
            if (p.mode == 3u && seen) {
                uint blk = j / p.mask_block;
                seen = ((ranges[mask_row + blk / 32u] >> (blk % 32u)) & 1u) != 0u;
            }
            if (seen) {
                s[jj] = part * p.scale;
                tile_max = max(tile_max, s[jj]);
            }
        }
        float new_max = max(run_max, tile_max);
        float corr = exp(run_max - new_max);
        run_sum *= corr;
        for (uint i = 0u; i < DPL; i++) acc[i] *= corr;
        for (uint jj = 0u; jj < n; jj++) {
            // unseen keys keep NEG_HUGE: exactly 0
            float pr = s[jj] > 0.5 * NEG_HUGE ? exp(s[jj] - new_max) : 0.0;
            run_sum += pr;
            for (uint i = 0u; i < DPL; i++) {
                uint d = lane + LANES * i;
                if (d < hd) acc[i] += pr * vs[jj * hd + d];
            }
        }
        run_max = new_max;
        barrier(); // the next tile overwrites ks and vs
    }
    if (!valid) return;
    uint orow = p.o_off + b * p.o_batch + qi * p.o_stride + head * hd;
    bool any = hi > lo; // an empty range: exactly zero
    for (uint i = 0u; i < DPL; i++) {
        uint d = lane + LANES * i;
        if (d < hd) o[orow + d] = ACT(any ? acc[i] / run_sum : 0.0);
    }
}
