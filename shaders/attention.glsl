// Body of attention.comp and attention_batch.comp: scaled dot-product attention with subgroup
// reductions (devices without subgroup arithmetic and ballot run attention_shared.comp, the
// same math with shared-memory reductions).
//
// A workgroup of WG invocations owns QPW consecutive queries of one head and batch entry and
// streams over the keys in tiles of WG with an online softmax (running max and sum per query,
// rescaled per tile), so any key count fits. Keys a query may see: all (mode 0), causal up to
// its absolute position q_pos0 + q (mode 1), or the range [lo, hi) read from `ranges` (mode 2,
// cross-attention to one image); an empty range writes zeros (IDEFICS' gate for tokens that
// see no image). The workgroup walks the union of its queries' ranges; each query masks the keys
// outside its own. Rows hold all heads: element d of head h of row r is at
// off + r·stride + h·head_dim + d.
//
// Per tile, invocation t scores key j0 + t against every query of the workgroup (each key row
// loaded once for QPW queries: what sharing queries saves), the tile's max and sum come from
// subgroupMax / subgroupAdd (plus an exchange through shared memory only when the workgroup
// has several subgroups), and then every invocation accumulates p·v for its own dimensions:
// d = t + WG·i, or with WIDE, 8 consecutive dimensions per chunk c = t + WG·i. A workgroup of one
// subgroup (CPU implementations: lavapipe runs a subgroup as one SIMD register and every
// barrier() as a coroutine switch) passes the probabilities by subgroupBroadcast and needs no
// barrier at all; larger ones (GPUs) publish them in shared memory.
//
// Each pass covers WG·DPL dimensions; a larger head_dim takes several passes, each recomputing
// the scores (GPU: 128·4 = 512 dims per pass; CPU: 8·8 = 64).
//
// WIDE: where every row of q, k and v starts on a multiple of 8 elements, 8 elements are read
// per load (two vec4s in fp32, 8 halves as a uvec4 in fp16): on lavapipe each lane's load is a
// scalar loop over the lanes with a bounds check per 32-bit component, so fewer, wider loads
// are what matters there. GPUs read one element per invocation as before (coalesced).
//
// ATTN_TABLE (attention_batch.comp, batched decode): batch entry b (workgroup z) is a sequence
// whose keys and values live in its own buffers, reached through the batch table
// (batch_table.glsl, binding 4 in place of the ranges) by device address: its n_keys, offsets
// and row stride come from the table instead of the push constants, and all its keys are seen
// (a decode query sees its whole cache; a cross-attention query its image's S keys; 0 keys
// writes zeros).
layout(local_size_x_id = 0) in;               // WG
layout(constant_id = 1) const uint QPW = 1u;  // queries per workgroup
layout(constant_id = 2) const uint DPL = 4u;  // dimensions per invocation and pass
layout(constant_id = 3) const bool WIDE = false; // 8-element loads where aligned (DPL % 8 == 0)

#ifndef EG_TEXEL
#define EG_TEXEL 0
#endif
layout(std430, binding = 3) writeonly buffer O { ACT o[]; };
#if ATTN_TABLE
#define BATCH_TABLE_BINDING 4
#include "batch_table.glsl"
#else
layout(std430, binding = 4) readonly buffer R { uint ranges[]; };
#endif
#if EG_TEXEL
// q, k and v through texel views (attention_texel.comp, CPU devices): texel_loads.glsl.
#include "texel_loads.glsl"
layout(binding = 0, rgba32ui) uniform readonly uimageBuffer q_texels;
layout(binding = 1, rgba32ui) uniform readonly uimageBuffer k_texels;
layout(binding = 2, rgba32ui) uniform readonly uimageBuffer v_texels;
#else
layout(std430, binding = 0) readonly buffer Q { ACT q[]; };
layout(std430, binding = 1) readonly buffer K { ACT k[]; };
layout(std430, binding = 2) readonly buffer V { ACT v[]; };
layout(std430, binding = 0) readonly buffer Q8 { EG_WIDE q8[]; };
layout(std430, binding = 1) readonly buffer K8 { EG_WIDE k8[]; };
layout(std430, binding = 2) readonly buffer V8 { EG_WIDE v8[]; };
#endif

layout(push_constant) uniform Push {
    uint n_keys, head_dim;
    uint q_off, q_stride, q_batch;
    uint k_off, k_stride, k_batch;
    uint v_off, v_stride, v_batch;
    uint o_off, o_stride, o_batch;
    uint mode, q_pos0;
    float scale;
    uint n_queries;
    uint entry0; // ATTN_TABLE: this dispatch's first entry in the batch table
} p;

// Queries, keys and values: from the bindings (as buffers, or with EG_TEXEL as texel views),
// or (ATTN_TABLE) the keys and values from the sequence's buffers by address. *_AT(e) reads
// element e, LOAD8_*(i, a, b) elements 8i..8i+7.
#if ATTN_TABLE
layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer Wide8Ref { EG_WIDE e[]; };
#define K_AT(i) float(ActRef(ent.k_addr).e[i])
#define V_AT(i) float(ActRef(ent.v_addr).e[i])
#define LOAD8_K(i, a, b) EG_LOAD8(Wide8Ref(ent.k_addr).e, i, a, b)
#define LOAD8_V(i, a, b) EG_LOAD8(Wide8Ref(ent.v_addr).e, i, a, b)
#elif EG_TEXEL
#define K_AT(i) TEXEL_AT(k_texels, i)
#define V_AT(i) TEXEL_AT(v_texels, i)
#define LOAD8_K(i, a, b) TEXEL_LOAD8(k_texels, i, a, b)
#define LOAD8_V(i, a, b) TEXEL_LOAD8(v_texels, i, a, b)
#else
#define K_AT(i) float(k[i])
#define V_AT(i) float(v[i])
#define LOAD8_K(i, a, b) EG_LOAD8(k8, i, a, b)
#define LOAD8_V(i, a, b) EG_LOAD8(v8, i, a, b)
#endif
#if EG_TEXEL
#define Q_AT(i) TEXEL_AT(q_texels, i)
#define LOAD8_Q(i, a, b) TEXEL_LOAD8(q_texels, i, a, b)
#else
#define Q_AT(i) float(q[i])
#define LOAD8_Q(i, a, b) EG_LOAD8(q8, i, a, b)
#endif

#define NEG_HUGE -3.0e38
// Several subgroups: one partial max or sum per (query, subgroup), the probabilities per
// (query, key of the tile).
shared float red[QPW * gl_WorkGroupSize.x];
shared float probs[QPW * gl_WorkGroupSize.x];

// Max (take_max) or sum over the workgroup of each query's value.
void group_reduce(inout float val[QPW], bool take_max) {
    for (uint i = 0; i < QPW; i++) val[i] = take_max ? subgroupMax(val[i]) : subgroupAdd(val[i]);
    if (gl_NumSubgroups > 1u) {
        if (gl_SubgroupInvocationID == 0u)
            for (uint i = 0; i < QPW; i++) red[i * gl_WorkGroupSize.x + gl_SubgroupID] = val[i];
        barrier();
        for (uint i = 0; i < QPW; i++) {
            float r = red[i * gl_WorkGroupSize.x];
            for (uint s = 1; s < gl_NumSubgroups; s++) {
                float o = red[i * gl_WorkGroupSize.x + s];
                r = take_max ? max(r, o) : r + o;
            }
            val[i] = r;
        }
        barrier();
    }
}

void main() {
    uint q0 = gl_WorkGroupID.x * QPW, head = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
    uint t = gl_LocalInvocationID.x;
    uint hd = p.head_dim;
#if ATTN_TABLE
    BatchEntry ent = batch_entry(p.entry0 + b);
    uint n_keys = ent.n_keys, mode = 0u;
    uint k_off = ent.k_off, k_stride = ent.stride, k_batch = 0u;
    uint v_off = ent.v_off, v_stride = ent.stride, v_batch = 0u;
#else
    uint n_keys = p.n_keys, mode = p.mode;
    uint k_off = p.k_off, k_stride = p.k_stride, k_batch = p.k_batch;
    uint v_off = p.v_off, v_stride = p.v_stride, v_batch = p.v_batch;
#endif
    // Each query's keys [lo, hi) (empty past the last query) and their union.
    uint lo[QPW], hi[QPW], qb[QPW];
    uint all_lo = n_keys, all_hi = 0u;
    for (uint i = 0; i < QPW; i++) {
        uint qi = q0 + i;
        lo[i] = 0u;
        hi[i] = qi < p.n_queries ? n_keys : 0u;
        if (mode == 1u) hi[i] = min(hi[i], p.q_pos0 + qi + 1u);
#if !ATTN_TABLE
        if (mode == 2u && qi < p.n_queries) {
            lo[i] = ranges[2u * qi];
            hi[i] = min(ranges[2u * qi + 1u], n_keys);
        }
#endif
        if (hi[i] > lo[i]) {
            all_lo = min(all_lo, lo[i]);
            all_hi = max(all_hi, hi[i]);
        }
        qb[i] = p.q_off + b * p.q_batch + min(qi, p.n_queries - 1u) * p.q_stride + head * hd;
    }
    uint kb = k_off + b * k_batch + head * hd;
    uint vb = v_off + b * v_batch + head * hd;
    uint ob = p.o_off + b * p.o_batch + head * hd;
    bool wide = WIDE && ((hd | p.q_off | p.q_stride | p.q_batch | k_off | k_stride | k_batch |
                          v_off | v_stride | v_batch) & 7u) == 0u;
    bool one_subgroup = gl_NumSubgroups == 1u;

    for (uint d0 = 0; d0 < hd; d0 += gl_WorkGroupSize.x * DPL) {
        // Finite stand-ins for -inf: drivers may assume shaders never see infinities.
        float run_max[QPW], run_sum[QPW];
        float acc[QPW][DPL];
        for (uint i = 0; i < QPW; i++) {
            run_max[i] = NEG_HUGE;
            run_sum[i] = 0.0;
            for (uint e = 0; e < DPL; e++) acc[i][e] = 0.0;
        }
        for (uint j0 = all_lo; j0 < all_hi; j0 += gl_WorkGroupSize.x) {
            // Keys past the union read its last key instead (masked): every load in bounds.
            uint j = min(j0 + t, all_hi - 1u);
            uint kr = kb + j * k_stride;
            float s[QPW];
            for (uint i = 0; i < QPW; i++) s[i] = 0.0;
            if (wide) {
                for (uint c = 0; c < hd / 8u; c++) {
                    vec4 ka, kb4;
                    LOAD8_K(kr / 8u + c, ka, kb4);
                    for (uint i = 0; i < QPW; i++) {
                        vec4 qa, qb4;
                        LOAD8_Q(qb[i] / 8u + c, qa, qb4);
                        s[i] += dot(qa, ka) + dot(qb4, kb4);
                    }
                }
            } else {
                for (uint d = 0; d < hd; d++) {
                    float kv = K_AT(kr + d);
                    for (uint i = 0; i < QPW; i++) s[i] += Q_AT(qb[i] + d) * kv;
                }
            }
            bool seen[QPW];
            float m[QPW];
            for (uint i = 0; i < QPW; i++) {
                seen[i] = j0 + t >= lo[i] && j0 + t < hi[i];
                s[i] = seen[i] ? s[i] * p.scale : NEG_HUGE;
                m[i] = s[i];
            }
            group_reduce(m, true);
            float e[QPW], corr[QPW];
            for (uint i = 0; i < QPW; i++) {
                float new_max = max(run_max[i], m[i]);
                e[i] = seen[i] ? exp(s[i] - new_max) : 0.0;
                corr[i] = exp(run_max[i] - new_max);
                run_max[i] = new_max;
                if (!one_subgroup) probs[i * gl_WorkGroupSize.x + t] = e[i];
            }
            float tsum[QPW];
            for (uint i = 0; i < QPW; i++) tsum[i] = e[i];
            group_reduce(tsum, false);  // its barriers also publish probs[]
            for (uint i = 0; i < QPW; i++) {
                run_sum[i] = run_sum[i] * corr[i] + tsum[i];
                for (uint d = 0; d < DPL; d++) acc[i][d] *= corr[i];
            }
            uint n = min(gl_WorkGroupSize.x, all_hi - j0);
            // Probabilities are broadcast before any lane leaves a loop: the source lane must be
            // active.
            if (wide) {
                for (uint jj = 0; jj < n; jj++) {
                    float pr[QPW];
                    for (uint i = 0; i < QPW; i++)
                        pr[i] = one_subgroup ? subgroupBroadcast(e[i], jj)
                                             : probs[i * gl_WorkGroupSize.x + jj];
                    uint vr = (vb + (j0 + jj) * v_stride) / 8u;
                    for (uint c8 = 0; c8 < DPL / 8u; c8++) {
                        uint c = d0 / 8u + t + gl_WorkGroupSize.x * c8;
                        if (c >= hd / 8u) break;
                        vec4 va, vb4;
                        LOAD8_V(vr + c, va, vb4);
                        for (uint i = 0; i < QPW; i++) {
                            for (uint x = 0; x < 4u; x++) {
                                acc[i][8u * c8 + x] += pr[i] * va[x];
                                acc[i][8u * c8 + 4u + x] += pr[i] * vb4[x];
                            }
                        }
                    }
                }
            } else {
                for (uint jj = 0; jj < n; jj++) {
                    float pr[QPW];
                    for (uint i = 0; i < QPW; i++)
                        pr[i] = one_subgroup ? subgroupBroadcast(e[i], jj)
                                             : probs[i * gl_WorkGroupSize.x + jj];
                    uint vr = vb + (j0 + jj) * v_stride;
                    for (uint dd = 0; dd < DPL; dd++) {
                        uint d = d0 + t + gl_WorkGroupSize.x * dd;
                        if (d >= hd) break;
                        float vv = V_AT(vr + d);
                        for (uint i = 0; i < QPW; i++) acc[i][dd] += pr[i] * vv;
                    }
                }
            }
            if (!one_subgroup) barrier();  // probs[] is rewritten by the next tile
        }
        for (uint i = 0; i < QPW; i++) {
            uint qi = q0 + i;
            if (qi >= p.n_queries) break;
            uint orow = ob + qi * p.o_stride;
            // An empty range: exactly zero (acc and run_sum are both 0 there).
            bool any = hi[i] > lo[i];
            if (wide) {
                for (uint c8 = 0; c8 < DPL / 8u; c8++) {
                    uint c = d0 / 8u + t + gl_WorkGroupSize.x * c8;
                    if (c >= hd / 8u) break;
                    for (uint x = 0; x < 8u; x++) o[orow + 8u * c + x] = ACT(any ? acc[i][8u * c8 + x] / run_sum[i] : 0.0);
                }
            } else {
                for (uint dd = 0; dd < DPL; dd++) {
                    uint d = d0 + t + gl_WorkGroupSize.x * dd;
                    if (d >= hd) break;
                    o[orow + d] = ACT(any ? acc[i][dd] / run_sum[i] : 0.0);
                }
            }
        }
    }
}
