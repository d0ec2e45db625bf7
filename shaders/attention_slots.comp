#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_ballot : require
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require
#include "common.glsl"

// Batched decode attention on CPU devices (runtime/ops_batch.c): up to 8 batch entries per
// dispatch, entry b's keys and values read through the texel views bound at its slot, n_keys
// and offsets from the batch table; see attention.glsl (ATTN_SLOTS). Bindings: 0 q, 1 and 2
// slot 0's keys and values, 3 o, 4 the table, 5..11 slots 1..7's keys, 12..18 their values.
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
// v_slot<s>.
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

void main() {
    switch (gl_WorkGroupID.z) {
    case 0u: attend0(); break;
    case 1u: attend1(); break;
    case 2u: attend2(); break;
    case 3u: attend3(); break;
    case 4u: attend4(); break;
    case 5u: attend5(); break;
    case 6u: attend6(); break;
    default: attend7(); break;
    }
}
