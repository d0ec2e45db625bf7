// Body of attention.comp and attention_batch.comp: scaled dot-product attention with subgroup
// reductions (devices without subgroup arithmetic and ballot run attention_shared.comp, the
// same math with shared-memory reductions).
//
// A workgroup of WG invocations owns QPW consecutive queries of one head and batch entry and
// streams over the keys in tiles of WG with an online softmax (running max and sum per query,
// rescaled per tile), so any key count fits. Keys a query may see: all (mode 0), causal up to
// its absolute position q_pos0 + q (mode 1), or the range [lo, hi) read from `ranges` (mode 2,
// cross-attention to one image), or the blocks of mask_block keys whose bit is set in the
// query's mask_words words of `ranges` (mode 3, block mask: mllama's cross-attention to the
// tiles of several images; bit j%32 of word j/32 is block j; query q's words are row q_pos0 + q
// of `ranges`, so dispatches can share one mask buffer); an empty range or mask writes
// zeros (IDEFICS' gate for tokens that see no image). The workgroup walks the union of its
// queries' ranges; each query masks the keys outside its own. Rows hold all heads: element d of
// head h of row r is at off + r·stride + h·head_dim + d; keys and values of query head h are
// those of head h / kv_group (grouped-query attention).
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
// WIDE: where every row of q, k and v starts on a multiple of 8 elements (see WIDE below for
// who checks), 8 elements are read per load (two vec4s in fp32, 8 halves as a uvec4 in fp16):
// on lavapipe each lane's load is a scalar loop over the lanes with a bounds check per 32-bit
// component, so fewer, wider loads are what matters there. GPUs read one element per invocation as before (coalesced).
//
// ATTN_TABLE (attention_batch.comp, batched decode): batch entry b (workgroup z) is a sequence
// whose keys and values live in its own buffers, reached through the batch table
// (batch_table.glsl, binding 4 in place of the ranges) by device address: its n_keys, offsets
// and row stride come from the table instead of the push constants, and all its keys are seen
// (a decode query sees its whole cache; a cross-attention query its image's S keys; 0 keys
// writes zeros).
//
// ATTN_SLOTS (attention_slots.comp, batched decode on CPU devices): the batch table as above
// for n_keys and the offsets, but the keys and values of entry b are read through texel views
// bound at fixed slots (K_IMG, V_IMG): lavapipe has no dynamic indexing of texel-buffer arrays
// and loads by address are slow there, so that shader includes attention_main.glsl once per
// slot, each copy reading its own bindings, and a workgroup (one head) runs the copies of the
// dispatch's entries in turn.
layout(local_size_x_id = 0) in;               // WG
layout(constant_id = 1) const uint QPW = 1u;  // queries per workgroup
layout(constant_id = 2) const uint DPL = 4u;  // dimensions per invocation and pass
// 8-element loads (DPL % 8 == 0): 0 never; 1 where every row of q, k and v starts on a multiple
// of 8 elements, checked per dispatch (both paths compiled: batched decode, whose offsets are
// in the batch table); 2 always (the caller checked: eg_op_attention). lavapipe runs an untaken
// path with its lanes masked off, once per tile, so eg_op_attention's CPU pipelines are built
// with 2 and 0 instead of 1 (ViT attention, 16 images, one thread: 10.7 -> 9.0-9.3 ms).
layout(constant_id = 3) const uint WIDE = 0u;
// Whether a workgroup may hold several subgroups (runtime/ops.c: WG exceeds the device's
// subgroup size). False compiles the exchange through shared memory and every barrier() out:
// lavapipe runs any shader that contains a barrier as one coroutine per subgroup, which cost
// 8 of a decode attention dispatch's 38 us there even though no barrier ever executed.
layout(constant_id = 4) const bool MULTI_SUBGROUP = true;

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
#ifndef ATTN_SLOTS
#define ATTN_SLOTS 0
#endif
#if EG_TEXEL
// q, k and v through texel views (attention_texel.comp, CPU devices): texel_loads.glsl.
#include "texel_loads.glsl"
layout(binding = 0, rgba32ui) uniform readonly uimageBuffer q_texels;
layout(binding = 1, rgba32ui) uniform readonly uimageBuffer k_texels;
layout(binding = 2, rgba32ui) uniform readonly uimageBuffer v_texels;
#define K_IMG k_texels
#define V_IMG v_texels
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
    uint n_entries; // ATTN_SLOTS: entries from entry0 in this dispatch (slots past them idle)
    uint kv_group; // query heads per key/value head (grouped-query attention); 0 or 1: none
    uint mask_block, mask_words; // mode 3: keys per mask bit, uint words of bits per query
} p;

// Queries, keys and values: from the bindings (as buffers, or with EG_TEXEL as texel views),
// or (ATTN_TABLE) the keys and values from the sequence's buffers by address. *_AT(e) reads
// element e, LOAD8_*(i, a, b) elements 8i..8i+7.
#if ATTN_SLOTS
// K_IMG and V_IMG are defined before each inclusion of attention_main.glsl.
#define K_AT(i) TEXEL_AT(K_IMG, i)
#define V_AT(i) TEXEL_AT(V_IMG, i)
#define LOAD8_K(i, a, b) TEXEL_LOAD8(K_IMG, i, a, b)
#define LOAD8_V(i, a, b) TEXEL_LOAD8(V_IMG, i, a, b)
#elif ATTN_TABLE
layout(buffer_reference, std430, buffer_reference_align = 16) readonly buffer Wide8Ref { EG_WIDE e[]; };
#define K_AT(i) float(ActRef(ent.k_addr).e[i])
#define V_AT(i) float(ActRef(ent.v_addr).e[i])
#define LOAD8_K(i, a, b) EG_LOAD8(Wide8Ref(ent.k_addr).e, i, a, b)
#define LOAD8_V(i, a, b) EG_LOAD8(Wide8Ref(ent.v_addr).e, i, a, b)
#elif EG_TEXEL
#define K_AT(i) TEXEL_AT(K_IMG, i)
#define V_AT(i) TEXEL_AT(V_IMG, i)
#define LOAD8_K(i, a, b) TEXEL_LOAD8(K_IMG, i, a, b)
#define LOAD8_V(i, a, b) TEXEL_LOAD8(V_IMG, i, a, b)
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
    if (MULTI_SUBGROUP && gl_NumSubgroups > 1u) {
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

#if !ATTN_SLOTS
#define ATTN_MAIN attend
#include "attention_main.glsl"
void main() { attend(gl_WorkGroupID.z); }
#endif
