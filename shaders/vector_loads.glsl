// Loads of 8 and 4 consecutive elements of x (binding 0) and W (binding 1) as vec4s, for the
// linear kernels (matvec.glsl, matmul_direct.comp): load_x8(i, a, b) reads elements 8i..8i+7,
// load_x4(i) elements 4i..4i+3 (fp16: 16 and 8 bytes; fp32: 32 and 16). The caller defines
// EG_LOAD64: 1 reads them as 64-bit components (shaderInt64), 0 as 32-bit ones. x_at(e) and
// w_at(e) read single elements. With EG_TEXEL (see matmul_epilogue.glsl) x and W are bound as
// rgba32ui texel views and every load is an imageLoad of 16-byte texels.
#if EG_TEXEL
#include "texel_loads.glsl"
layout(binding = 0, rgba32ui) uniform readonly uimageBuffer x_texels;
layout(binding = 1, rgba32ui) uniform readonly uimageBuffer w_texels;
void load_x8(uint i, out vec4 a, out vec4 b) { TEXEL_LOAD8(x_texels, i, a, b); }
void load_w8(uint i, out vec4 a, out vec4 b) { TEXEL_LOAD8(w_texels, i, a, b); }
vec4 load_x4(uint i) {
    vec4 r;
    TEXEL_LOAD4(x_texels, i, r);
    return r;
}
vec4 load_w4(uint i) {
    vec4 r;
    TEXEL_LOAD4(w_texels, i, r);
    return r;
}
float x_at(uint e) { return TEXEL_AT(x_texels, e); }
float w_at(uint e) { return TEXEL_AT(w_texels, e); }
#elif EG_LOAD64
// The same 16- and 8-byte vectors read as 64-bit components (needs shaderInt64:
// matvec64.comp, matvec_shared64.comp): lavapipe loads every component
// of a per-lane address separately, lane by lane with a bounds check each, so a u64vec2 costs
// 2 such loads where a uvec4 costs 4. The halves are split off with a shift and a truncation:
// unpackUint2x32 made the fp16 kernel slower than the 32-bit loads on lavapipe.
uvec2 split64(uint64_t u) { return uvec2(uint(u), uint(u >> 32)); }
#if EG_F16
layout(std430, binding = 0) readonly buffer X8 { u64vec2 x8[]; };
layout(std430, binding = 1) readonly buffer W8 { u64vec2 w8[]; };
layout(std430, binding = 0) readonly buffer X4 { uint64_t x4[]; };
layout(std430, binding = 1) readonly buffer W4 { uint64_t w4[]; };
vec4 unpack_h4(uint64_t u) {
    uvec2 v = split64(u);
    return vec4(unpackHalf2x16(v.x), unpackHalf2x16(v.y));
}
void load_x8(uint i, out vec4 a, out vec4 b) {
    u64vec2 u = x8[i];
    a = unpack_h4(u.x);
    b = unpack_h4(u.y);
}
void load_w8(uint i, out vec4 a, out vec4 b) {
    u64vec2 u = w8[i];
    a = unpack_h4(u.x);
    b = unpack_h4(u.y);
}
vec4 load_x4(uint i) { return unpack_h4(x4[i]); }
vec4 load_w4(uint i) { return unpack_h4(w4[i]); }
#else
layout(std430, binding = 0) readonly buffer X4 { u64vec2 x4[]; };
layout(std430, binding = 1) readonly buffer W4 { u64vec2 w4[]; };
vec4 unpack_f4(u64vec2 u) { return uintBitsToFloat(uvec4(split64(u.x), split64(u.y))); }
vec4 load_x4(uint i) { return unpack_f4(x4[i]); }
vec4 load_w4(uint i) { return unpack_f4(w4[i]); }
#endif
#else
#if EG_F16
layout(std430, binding = 0) readonly buffer X8 { uvec4 x8[]; };
layout(std430, binding = 1) readonly buffer W8 { uvec4 w8[]; };
layout(std430, binding = 0) readonly buffer X4 { uvec2 x4[]; };
layout(std430, binding = 1) readonly buffer W4 { uvec2 w4[]; };
void load_x8(uint i, out vec4 a, out vec4 b) { eg_unpack_h8(x8[i], a, b); }
void load_w8(uint i, out vec4 a, out vec4 b) { eg_unpack_h8(w8[i], a, b); }
vec4 load_x4(uint i) { return eg_unpack_h4(x4[i]); }
vec4 load_w4(uint i) { return eg_unpack_h4(w4[i]); }
#else
layout(std430, binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer W4 { vec4 w4[]; };
vec4 load_x4(uint i) { return x4[i]; }
vec4 load_w4(uint i) { return w4[i]; }
#endif
#endif
#if !EG_F16 && !EG_TEXEL
void load_x8(uint i, out vec4 a, out vec4 b) {
    a = load_x4(2u * i);
    b = load_x4(2u * i + 1u);
}
void load_w8(uint i, out vec4 a, out vec4 b) {
    a = load_w4(2u * i);
    b = load_w4(2u * i + 1u);
}
#endif
#if !EG_TEXEL
float x_at(uint e) { return float(x[e]); }
float w_at(uint e) { return float(w[e]); }
#endif
