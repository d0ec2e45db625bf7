#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#define EG_TEXEL 1
#define MM_ACT_ID 4 // see matmul_direct.glsl
#include "matmul_epilogue.glsl"

// x and W through texel views (CPU devices with vk->texel_views); see matmul_direct.glsl.
#include "matmul_direct.glsl"
