// Shared by every Egret compute shader. Each shader is compiled twice (CMakeLists.txt):
// EG_F16=0 stores weights and activations as float; EG_F16=1 stores them as float16_t.
// Arithmetic and accumulation are always float: values are widened on load and narrowed on store.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require

#if EG_F16
#define ACT float16_t
#define WT float16_t
#define ACT4 f16vec4
#define WT4 f16vec4
#else
#define ACT float
#define WT float
#define ACT4 vec4
#define WT4 vec4
#endif

#if EG_F16
// 8 (4) halves packed in a uvec4 (uvec2) as float vec4s: the fp16 kernels' wide loads.
void eg_unpack_h8(uvec4 u, out vec4 a, out vec4 b) {
    a = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
    b = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
}
vec4 eg_unpack_h4(uvec2 u) { return vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y)); }
// And back, converted as a float16_t store converts: wide stores write the same bits as
// per-element ones.
uvec2 eg_pack_h4(vec4 v) {
    return uvec2(packFloat2x16(f16vec2(v.xy)), packFloat2x16(f16vec2(v.zw)));
}
#endif

// Arrays read 8 elements at a time: EG_WIDE is their element type (fp16: a uvec4 of 8 halves;
// fp32: a vec4, two per 8 elements) and EG_LOAD8(arr, i, a, b) reads elements 8i..8i+7.
#if EG_F16
#define EG_WIDE uvec4
#define EG_LOAD8(arr, i, a, b) eg_unpack_h8(arr[i], a, b)
#else
#define EG_WIDE vec4
#define EG_LOAD8(arr, i, a, b)    \
    {                             \
        a = arr[2u * (i)];        \
        b = arr[2u * (i) + 1u];   \
    }
#endif

// Index of this invocation in a 1-D problem dispatched as a 2-D grid of workgroups (Vulkan only
// guarantees 65535 workgroups per axis; see dispatch_1d in runtime/ops.c).
// (A macro, not a function: gl_WorkGroupSize is only known after the shader's local_size layout.)
#define eg_flat_index() \
    ((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + \
     gl_LocalInvocationID.x)

// Activation codes, equal to EgOpAct in runtime/ops.h.
#define ACT_NONE 0
#define ACT_GELU 1
#define ACT_QUICK_GELU 2
#define ACT_SILU 3
#define ACT_RELU 4
#define ACT_GELU_TANH 5

// erf by Abramowitz & Stegun 7.1.26 is only good to 1.5e-7 absolute; this uses the
// rational approximation of erfc with |relative error| < 1.2e-7 (Numerical Recipes' erfcc),
// which keeps exact-GELU models within fp32 rounding of the reference.
//
// eg_erf and eg_activate are defined for float, and as eg_erf4 and eg_activate4 for vec4, from
// one text: the vec4 forms let a kernel test the activation once for four outputs.
#define EG_DEFINE_ACTIVATION(T, ERF, ACTIVATE)                                                     \
    T ERF(T x) {                                                                                   \
        T z = abs(x);                                                                              \
        T t = 1.0 / (1.0 + 0.5 * z);                                                               \
        T r = t * exp(-z * z - 1.26551223 +                                                        \
                      t * (1.00002368 +                                                            \
                           t * (0.37409196 +                                                       \
                                t * (0.09678418 +                                                  \
                                     t * (-0.18628806 +                                            \
                                          t * (0.27886807 +                                        \
                                               t * (-1.13520398 +                                  \
                                                    t * (1.48851587 +                              \
                                                         t * (-0.82215223 + t * 0.17087277)))))))));\
        return mix(r - 1.0, 1.0 - r, step(T(0.0), x)); /* 1 - r where x >= 0, exactly */        \
    }                                                                                              \
    T ACTIVATE(T v, uint act) {                                                                    \
        if (act == ACT_GELU) return 0.5 * v * (1.0 + ERF(v * 0.70710678118654752));                \
        if (act == ACT_QUICK_GELU) return v / (1.0 + exp(-1.702 * v));                             \
        if (act == ACT_SILU) return v / (1.0 + exp(-v));                                           \
        if (act == ACT_RELU) return max(v, T(0.0));                                                \
        if (act == ACT_GELU_TANH) {                                                                \
            T u = 0.7978845608028654 * (v + 0.044715 * v * v * v);                                 \
            return 0.5 * v * (1.0 + tanh(u));                                                      \
        }                                                                                          \
        return v;                                                                                  \
    }
EG_DEFINE_ACTIVATION(float, eg_erf, eg_activate)
EG_DEFINE_ACTIVATION(vec4, eg_erf4, eg_activate4)
