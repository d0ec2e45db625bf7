#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_ballot : require
#include "common.glsl"

// Attention over keys and values in bound buffers: see attention.glsl.
#define ATTN_TABLE 0
#include "attention.glsl"
