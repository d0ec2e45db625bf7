#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#define EG_TEXEL 1
#include "matmul_epilogue.glsl"

// W in q8 (runtime/quant.h), x and W read through texel views (CPU devices with
// vk->texel_views); see linear_quant.glsl.
#define Q_FORMAT 1
#include "linear_quant.glsl"
