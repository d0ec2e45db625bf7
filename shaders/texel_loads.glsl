// Reads from an rgba32ui texel view of a buffer of ACT/WT elements (runtime/vk_memory.c: CPU
// devices give every buffer one): a 16-byte texel holds 8 halves (fp16) or 4 floats (fp32).
// On lavapipe an imageLoad is one vectorized gather across the lanes, where a storage-buffer
// load is a loop over the lanes with a bounds check per 32-bit component.
//   TEXEL_LOAD8(img, i, a, b): elements 8i..8i+7 as two vec4s
//   TEXEL_LOAD4(img, i, r):    elements 4i..4i+3 as a vec4
//   TEXEL_AT(img, e):          element e as a float
#if EG_F16
#define TEXEL_LOAD8(img, i, a, b) eg_unpack_h8(imageLoad(img, int(i)), a, b)
#define TEXEL_LOAD4(img, i, r)                                                                     \
    {                                                                                              \
        uvec4 u_ = imageLoad(img, int((i) >> 1u));                                                 \
        r = eg_unpack_h4(((i) & 1u) != 0u ? u_.zw : u_.xy);                                        \
    }
#define TEXEL_AT(img, e) unpackHalf2x16(imageLoad(img, int((e) >> 3u))[((e) >> 1u) & 3u])[(e) & 1u]
#else
#define TEXEL_LOAD8(img, i, a, b)                                                                  \
    {                                                                                              \
        a = uintBitsToFloat(imageLoad(img, int(2u * (i))));                                        \
        b = uintBitsToFloat(imageLoad(img, int(2u * (i) + 1u)));                                   \
    }
#define TEXEL_LOAD4(img, i, r) r = uintBitsToFloat(imageLoad(img, int(i)))
#define TEXEL_AT(img, e) uintBitsToFloat(imageLoad(img, int((e) >> 2u))[(e) & 3u])
#endif
