#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#define EG_TEXEL 0
#include "matmul_epilogue.glsl"

// W in q4 (runtime/quant.h), X in int8 blocks; see linear_quant_idot.glsl.
#define Q_FORMAT 2
#include "linear_quant_idot.glsl"
