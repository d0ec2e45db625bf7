#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_ballot : require
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference_uvec2 : require
#include "common.glsl"

// Batched decode attention: each batch entry's keys and values in its own buffers, reached
// through the batch table (runtime/ops_batch.h); see attention.glsl.
#define ATTN_TABLE 1
#include "attention.glsl"
