#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_ballot : require
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require
#include "common.glsl"

// Batched decode attention on CPU devices (runtime/ops_batch.c): up to 8 batch entries per
// dispatch, entry b's keys and values read through the texel views bound at its slot, n_keys
// and offsets from the batch table; a workgroup per head attends for each entry in turn. See
// attention.glsl (ATTN_SLOTS). Bindings: 0 q, 1 and 2 slot 0's keys and values, 3 o, 4 the
// table, 5..11 slots 1..7's keys, 12..18 their values.
#define ATTN_TABLE 1
#define ATTN_SLOTS 1
#define EG_TEXEL 1
#include "attention.glsl"

#define SLOT_IMAGES(s)                                                                             \
    layout(binding = 4 + s, rgba32ui) uniform readonly uimageBuffer k_slot##s;                     \
    layout(binding = 11 + s, rgba32ui) uniform readonly uimageBuffer v_slot##s;
SLOT_IMAGES(1)
SLOT_IMAGES(2)
SLOT_IMAGES(3)
SLOT_IMAGES(4)
SLOT_IMAGES(5)
SLOT_IMAGES(6)
SLOT_IMAGES(7)

// One copy of the body per slot: attend0 reads bindings 1 and 2, attend<s> k_slot<s> and
// v_slot<s>; each takes its entry's index in the dispatch.
#undef K_IMG
#undef V_IMG
#define K_IMG k_texels
#define V_IMG v_texels
#define ATTN_MAIN attend0
#include "attention_main.glsl"
#undef K_IMG
#undef V_IMG
#undef ATTN_MAIN
#define K_IMG k_slot1
#define V_IMG v_slot1
#define ATTN_MAIN attend1
#include "attention_main.glsl"
#undef K_IMG
#undef V_IMG
#undef ATTN_MAIN
#define K_IMG k_slot2
#define V_IMG v_slot2
#define ATTN_MAIN attend2
#include "attention_main.glsl"
#undef K_IMG
#undef V_IMG
#undef ATTN_MAIN
#define K_IMG k_slot3
#define V_IMG v_slot3
#define ATTN_MAIN attend3
#include "attention_main.glsl"
#undef K_IMG
#undef V_IMG
#undef ATTN_MAIN
#define K_IMG k_slot4
#define V_IMG v_slot4
#define ATTN_MAIN attend4
#include "attention_main.glsl"
#undef K_IMG
#undef V_IMG
#undef ATTN_MAIN
#define K_IMG k_slot5
#define V_IMG v_slot5
#define ATTN_MAIN attend5
#include "attention_main.glsl"
#undef K_IMG
#undef V_IMG
#undef ATTN_MAIN
#define K_IMG k_slot6
#define V_IMG v_slot6
#define ATTN_MAIN attend6
#include "attention_main.glsl"
#undef K_IMG
#undef V_IMG
#undef ATTN_MAIN
#define K_IMG k_slot7
#define V_IMG v_slot7
#define ATTN_MAIN attend7
#include "attention_main.glsl"

// The slots compiled in (runtime/ops_batch.c builds 1, 2, 4 and 8). lavapipe runs every
// branch of a shader, taken or not, with its lanes masked off, so an unused copy costs about as
// much as a used one's setup: a decode attention dispatch with no keys (lavapipe, one thread)
// took 17 us with eight copies, one of them used, and 6.6 with one (barriers compiled out in
// both: MULTI_SUBGROUP).
layout(constant_id = 5) const uint SLOTS = 8u;

void main() {
    attend0(0u);
    if (SLOTS > 1u && p.n_entries > 1u) attend1(1u);
    if (SLOTS > 2u && p.n_entries > 2u) attend2(2u);
    if (SLOTS > 3u && p.n_entries > 3u) attend3(3u);
    if (SLOTS > 4u && p.n_entries > 4u) attend4(4u);
    if (SLOTS > 5u && p.n_entries > 5u) attend5(5u);
    if (SLOTS > 6u && p.n_entries > 6u) attend6(6u);
    if (SLOTS > 7u && p.n_entries > 7u) attend7(7u);
}
