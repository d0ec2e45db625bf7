#include "runtime/ops.h"
#include "runtime/env.h"
#include "runtime/ops_push.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Push-constant layouts, mirrored from the shaders. */
typedef struct {
    uint32_t M, N, K, ldx, ldy, x_off, y_off, n_off, flags;
    float eps;
} MatmulPush;
typedef struct {
    uint32_t M, K, ldx, x_off, order;
} QuantizeActPush;
typedef struct {
    uint32_t rows, dim, x_off, x_stride, x_batch, y_off, y_stride, y_batch;
    float eps;
    uint32_t rms;
} NormPush;
typedef struct {
    uint32_t rows, heads, head_dim, off, stride, pos0, sin_off;
} RopePush;
typedef struct {
    uint32_t tokens, dim, row0, n_rows, out_off;
} EmbedPush;
typedef struct {
    uint32_t images, channels, size, patch_size;
} PatchifyPush;
typedef struct {
    uint32_t images, n_patches, dim;
} VitEmbedPush;

typedef struct {
    uint32_t rows, dim, o_off, o_row, o_elem, accum, s_off[4], s_row[4];
    float coef[4];
} RowsCombinePush;

/* Flag bits of shaders/matmul_epilogue.glsl. */
enum {
    MM_BIAS = 8,
    MM_MUL = 16,
    MM_ACCUM = 32,
    MM_ALPHA = 64,
    MM_ALPHA_VECTOR = 128,
    MM_RMS = 256
};

static int is_pow2(uint32_t v) {
    return v && (v & (v - 1)) == 0;
}

/* Kernel parameters of eg_op_linear for a device (overridden by cfg's nonzero fields).
 *
 * GPUs and CPU implementations (lavapipe) want different shapes of the same kernels. On a GPU a
 * load instruction serves a whole subgroup from one cache line when lanes read neighbouring
 * addresses, and memory latency is hidden by having many workgroups in flight. On a CPU
 * implementation a subgroup is one SIMD register (8 lanes on lavapipe) and each lane's load is
 * a separate scalar access with a bounds check, so what counts is how many multiply-adds every
 * loaded value feeds; its two or so threads need few workgroups. Hence:
 *
 * matvec: a group (a subgroup, with subgroup arithmetic; else LANES invocations reducing
 * through shared memory) reduces RPG rows of W. GPUs: RPG 2, 4 groups per workgroup, so a
 * 4096-row matrix spreads over 512 workgroups of 128 (32-wide subgroups); each x load feeds
 * two rows. CPUs: RPG 16, so each x load feeds 16 rows, 2 groups per workgroup (lavapipe,
 * 4096x4096 fp16: RPG 8 took 27% less time than RPG 2 for one row of x, 45% for 8; RPG 16
 * another 2-5% less for one row, 14-18% for 8, across shapes 0.82-0.99x the time of RPG 8 in
 * CPU time). 2 groups keep the 32 rows per workgroup of RPG 8 with 4: as many workgroups for
 * the driver's threads (4 groups of 16 rows took 1.15-1.23x the time at N = 477, 8 rows of x,
 * where the last of the fewer workgroups is half empty). CPUs with shaderInt64 also load the
 * vectors as 64-bit components (matvec64.comp: a u64vec2 instead of a uvec4 or vec4), since
 * lavapipe loads each component of each lane separately: fp32 at every width of x, fp16 up to 4
 * rows (lavapipe, RPG 16: 32-bit loads take 1.12-1.25x the time in fp16 at 4096 wide, 1.16-1.2x
 * in fp32, 1.05-1.15x at the demo model's 256; in fp16 with 8 rows of x 64-bit loads take
 * 1.03-1.17x instead). GPUs keep 16-byte loads of 32-bit components.
 *
 * matmul on CPU devices: matmul_direct.comp, without shared memory or barriers: each of 8
 * invocations reads its 16 rows of x and 8 rows of W straight from the buffers, 8 elements per
 * load, and keeps the 128 sums in registers (lavapipe, ops_bench --only prefill: 0.10-0.20x the
 * naive kernel's time where the tiles below take 0.37-0.40x, fp16 and fp32, M = 64 and 256;
 * with storage-buffer loads 8x8 beat 4x4, 8x4, 4x8, 4x16 and 8x16 outputs per invocation and
 * 16 or 32 invocations; through texel views 16x8 takes 0.84-0.91x the time of 8x8 at the ViT's
 * 1040 rows, 0.85-0.97x with a folded RMSNorm, 0.96-1.01x at 64 and 65 rows, fp16 and fp32). On
 * lavapipe shared memory is ordinary memory behind the same per-lane load loop as a storage
 * buffer, and each barrier() switches every subgroup's coroutine: the tiles only add work.
 * Where buffers have texel views (vk->texel_views: CPU implementations), it reads x and W
 * through them (matmul_direct_texel.comp): lavapipe turns an imageLoad into one vectorized
 * gather, where a storage-buffer load is a loop over the lanes with a bounds check per
 * component (ops_bench --vs-default --md-texel -1, the storage-buffer kernel's time over the
 * texel one: fp16 1.32-1.43x at M = 64 and 1040, 1.19-1.58x at 8 rows; fp32 1.82-1.88x).
 * The same kernel with 1, 2, 4 or 8 rows of x per invocation also takes the decode products of
 * weights up to 2^20 elements (one 8-row block of x, 8 rows of W per invocation, no subgroup
 * reduction or per-row epilogue loop): lavapipe, fp16, 256x256 to 640x256: 0.55-0.75x the
 * matvec kernel's time at 1 and 8 rows; 4096x4096 and larger: 1.05-1.25x, where the matvec
 * kernel's lanes reading neighbouring pieces of one row stream better, so those stay there.
 *
 * matmul elsewhere: two tile shapes, for few and for many rows of x. Small tiles waste less on
 * padding rows (a 65-token ViT sequence in 64-row tiles computes 128 rows); large ones reuse each
 * loaded value more. GPUs: 32x64 with 4x4 per invocation (128 invocations, 6 KiB of shared
 * memory) and 64x64 with 4x4 (256 invocations, 8 KiB), within the minimums every Vulkan device
 * guarantees (16 KiB; 128 invocations: where 256 are not available the large tile falls back
 * to the small one). CPUs: 8x8 per invocation, as each value read from shared memory then feeds
 * 8 multiply-adds instead of 4: 16x128 (32 invocations) and 64x64 (64). On lavapipe these take
 * 0.15-0.4x the time of the original kernel's 64x64 tiles of 4x4 across the demo model's
 * shapes (M = 16, 17, 33, 64, 65, 256), where 4x4 tiles take about 0.5x. */
typedef struct {
    int subgroup;
    uint32_t mv_load64; /* bit v: matvec[v] loads 64-bit components */
    uint32_t mv_wg, mv_lanes, mv_rpg;
    EgTile mm[2];
    int mm_direct;
    uint32_t md_wg, md_tm, md_tn;
    uint64_t md_few_max_weights;
    int md_texel; /* matmul_direct reads x and W through texel views */
} LinearParams;

static int tile_fits(const VkPhysicalDeviceLimits *lim, EgTile t) {
    if ((t.tm != 4 && t.tm != 8) || (t.tn != 4 && t.tn != 8) || !t.bm || !t.bn || t.bm % t.tm ||
        t.bn % t.tn || !t.bk || t.bk % 4)
        return 0;
    uint32_t wg = (t.bm / t.tm) * (t.bn / t.tn);
    return wg <= lim->maxComputeWorkGroupInvocations && wg <= lim->maxComputeWorkGroupSize[0] &&
           t.bk * (t.bm + t.bn) * 4 <= lim->maxComputeSharedMemorySize;
}

static int linear_params(const EgVk *vk, const EgOpsConfig *cfg, int f16, LinearParams *lp,
                         EgError *err) {
    const VkPhysicalDeviceLimits *lim = &vk->props.limits;
    int cpu = vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    lp->subgroup = vk->subgroup_arithmetic && !cfg->no_subgroup && is_pow2(vk->subgroup_size);
    lp->mv_lanes = lp->subgroup ? vk->subgroup_size : (cfg->mv_lanes ? cfg->mv_lanes : 32);
    lp->mv_wg = cfg->mv_wg ? cfg->mv_wg : (cpu ? 2 : 4) * lp->mv_lanes;
    lp->mv_rpg = cfg->mv_rpg ? cfg->mv_rpg : cpu ? 16 : 2;
    uint32_t all = (1u << EG_MATVEC_VARIANTS) - 1; /* bit v: the variant for 2^v rows of x */
    if (cfg->mv_load64)
        lp->mv_load64 = cfg->mv_load64 > 0 ? all : 0;
    else /* fp16: up to 4 rows of x (all but the last variant) */
        lp->mv_load64 = cpu && vk->has_int64 ? (f16 ? all >> 1 : all) : 0;
    if (lp->mv_load64 && !vk->has_int64)
        return eg_fail(err, "matvec: 64-bit loads need shaderInt64, which %s lacks",
                       vk->props.deviceName);
    /* The shared-memory variant keeps a float per output and invocation: RPG·8·WG·4 bytes. */
    while (!lp->subgroup && !cfg->mv_wg && lp->mv_wg > lp->mv_lanes &&
           lp->mv_rpg * EG_MATVEC_MAX_ROWS * lp->mv_wg * 4 > lim->maxComputeSharedMemorySize)
        lp->mv_wg /= 2;
    if (lp->mv_wg % lp->mv_lanes || lp->mv_wg > lim->maxComputeWorkGroupInvocations ||
        lp->mv_wg > lim->maxComputeWorkGroupSize[0] || !is_pow2(lp->mv_lanes) || !lp->mv_rpg ||
        (!lp->subgroup &&
         lp->mv_rpg * EG_MATVEC_MAX_ROWS * lp->mv_wg * 4 > lim->maxComputeSharedMemorySize))
        return eg_fail(err, "matvec: %u invocations in groups of %u, %u rows each, do not fit %s",
                       lp->mv_wg, lp->mv_lanes, lp->mv_rpg, vk->props.deviceName);

    EgTile gpu_small = {32, 64, 16, 4, 4}, gpu_large = {64, 64, 16, 4, 4};
    EgTile cpu_small = {16, 128, 16, 8, 8}, cpu_large = {64, 64, 16, 8, 8};
    lp->mm[0] = cfg->mm_small.bm ? cfg->mm_small : cpu ? cpu_small : gpu_small;
    lp->mm[1] = cfg->mm_large.bm ? cfg->mm_large : cpu ? cpu_large : gpu_large;
    if (!cfg->mm_large.bm && !tile_fits(lim, lp->mm[1])) lp->mm[1] = lp->mm[0];
    lp->mm_direct = cfg->mm_direct ? cfg->mm_direct > 0 : cpu;
    lp->md_wg = cfg->md_wg ? cfg->md_wg : 8;
    lp->md_tm = cfg->md_tm ? cfg->md_tm : 16;
    lp->md_tn = cfg->md_tn ? cfg->md_tn : 8;
    lp->md_few_max_weights = !lp->mm_direct || cfg->md_few < 0 ? 0
                             : cfg->md_few > 0                ? UINT64_MAX
                                                              : 1u << 20;
    lp->md_texel = cfg->md_texel ? cfg->md_texel > 0 : vk->texel_views;
    if (lp->mm_direct && lp->md_texel && !vk->texel_views)
        return eg_fail(err, "matmul_direct: texel loads need texel views, which %s lacks",
                       vk->props.deviceName);
    if (lp->mm_direct && (lp->md_wg > lim->maxComputeWorkGroupInvocations ||
                          lp->md_wg > lim->maxComputeWorkGroupSize[0] || !lp->md_tm || !lp->md_tn))
        return eg_fail(err, "matmul_direct: %u invocations of %ux%u do not fit %s", lp->md_wg,
                       lp->md_tm, lp->md_tn, vk->props.deviceName);
    for (int i = 0; i < 2; i++) {
        EgTile t = lp->mm[i];
        if (!tile_fits(lim, t))
            return eg_fail(err, "matmul tile %ux%ux%u with %ux%u per invocation does not fit %s",
                           t.bm, t.bn, t.bk, t.tm, t.tn, vk->props.deviceName);
    }
    return 0;
}

/* Kernel parameters of eg_op_norm and eg_op_attention for a device (cfg's nonzero fields
 * override them).
 *
 * Both reduce over a workgroup, and on a CPU implementation each barrier() suspends and resumes
 * every subgroup of the workgroup (lavapipe runs them as coroutines, 8 lanes each): the original
 * 128-invocation kernels spent most of their time in the 8 barriers of each tree reduction, and
 * with a 40-wide head most lanes were idle. With subgroup arithmetic the kernels reduce with
 * subgroupAdd / subgroupMax and exchange between subgroups only when a workgroup has several.
 *
 * norm: GPUs: a workgroup of 128 per row (4 subgroups of 32). CPUs: one subgroup per row, so no
 * barrier at all.
 *
 * attention (attention.comp): a workgroup scores a tile of WG keys against QPW queries and
 * accumulates p·v over DPL dimensions per invocation and pass. GPUs: 128 invocations, one
 * query, 4 dimensions (512 per pass), one element per load, as the original kernel. CPUs: one
 * subgroup (no barriers; probabilities passed by subgroupBroadcast), 4 queries sharing each
 * loaded key and value row, 8 dimensions per invocation (64 per pass with 8 lanes) and 8
 * elements per load where rows are aligned. On lavapipe (fp16, 4 heads, ops_bench --rows) that
 * takes 0.18x the original kernel's time for the ViT's 65 queries of 40 dims and 0.14x for a
 * 64-token causal prefill of 64 dims (1 query: 0.26x, 4: 0.18x, 8: 0.20x for the ViT; 8-element
 * loads halve it; 16 dimensions per invocation cost 15% more).
 *
 * Without subgroup arithmetic (or ballot, for attention) the shared-memory variants run:
 * norm_shared.comp with WG invocations (a power of two), attention_shared.comp (128, fixed). */
typedef struct {
    int norm_subgroup, attn_subgroup;
    uint32_t norm_wg, norm_rows, norm_wide;
    uint32_t attn_wg, attn_qpw, attn_dpl, attn_wide;
    int attn_texel; /* subgroup attention reads q, k and v through texel views */
    int flash;      /* EgOps.attn_flash */
    uint32_t flash_wg, flash_lanes, flash_dims, flash_keys;
} RowParams;

/* Flash attention's parameters (attention_flash.comp). GPUs: 128 invocations, 4 per query (32
 * queries per workgroup sharing each key tile), 32 dimensions each (heads up to 128: LLaMA's,
 * the ViT's 80), tiles of 32 keys (2·32·128 floats: 32 KiB of shared memory). Not tuned on a GPU
 * yet (scripts/device-check.sh measures it). CPUs (only where asked for: their subgroup kernel
 * is tuned for them): 32 invocations, 8 per query, 16 dimensions each, 16 keys. Where asked for
 * explicitly a shape that does not fit fails; the automatic choice just leaves it off. */
static int flash_params(const EgVk *vk, const EgOpsConfig *cfg, RowParams *rp, EgError *err) {
    const VkPhysicalDeviceLimits *lim = &vk->props.limits;
    int cpu = vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    const char *env = getenv("EGRET_ATTN_FLASH");
    int want = cfg->attn_flash ? cfg->attn_flash
               : env && *env   ? (eg_env_flag("EGRET_ATTN_FLASH") ? 1 : -1)
                               : 0;
    rp->flash = want > 0 ? 2 : want < 0 || cpu ? 0 : 1;
    rp->flash_wg = cfg->flash_wg ? cfg->flash_wg : cpu ? 32 : 128;
    rp->flash_lanes = cfg->flash_lanes ? cfg->flash_lanes : cpu ? 8 : 4;
    rp->flash_dims = cfg->flash_dims ? cfg->flash_dims : cpu ? 16 : 32;
    rp->flash_keys = cfg->flash_keys ? cfg->flash_keys : cpu ? 16 : 32;
    if (!rp->flash) return 0;
    uint64_t shared = 2ull * rp->flash_keys * rp->flash_lanes * rp->flash_dims * 4 + 8;
    const char *why = !vk->subgroup_shuffle ? "no subgroup shuffle"
                      : !is_pow2(rp->flash_lanes) || rp->flash_lanes > vk->subgroup_size ||
                              rp->flash_wg % rp->flash_lanes
                          ? "lanes per query not a power of two within a subgroup dividing the "
                            "workgroup"
                      : rp->flash_wg > lim->maxComputeWorkGroupInvocations ||
                              rp->flash_wg > lim->maxComputeWorkGroupSize[0]
                          ? "workgroup too large"
                      : shared > lim->maxComputeSharedMemorySize ? "key tiles exceed shared memory"
                      : !rp->flash_dims || !rp->flash_keys ? "no dimensions or keys"
                                                           : NULL;
    if (!why) return 0;
    if (want > 0)
        return eg_fail(err,
                       "flash attention: %u invocations, %u per query, %u dimensions each, %u "
                       "keys per tile do not fit %s: %s",
                       rp->flash_wg, rp->flash_lanes, rp->flash_dims, rp->flash_keys,
                       vk->props.deviceName, why);
    rp->flash = 0;
    return 0;
}

static int row_params(const EgVk *vk, const EgOpsConfig *cfg, RowParams *rp, EgError *err) {
    const VkPhysicalDeviceLimits *lim = &vk->props.limits;
    int cpu = vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    uint32_t sg = vk->subgroup_size;
    int subgroup = vk->subgroup_arithmetic && !cfg->no_subgroup && is_pow2(sg);
    uint32_t gpu_wg = sg > 128 ? sg : 128;
    rp->norm_subgroup = subgroup;
    rp->norm_rows = cfg->norm_rows ? cfg->norm_rows : 1;
    rp->norm_wide = cfg->norm_wide ? cfg->norm_wide > 0 : cpu;
    if (subgroup)
        rp->norm_wg = cfg->norm_wg ? cfg->norm_wg : cpu ? sg * rp->norm_rows : gpu_wg;
    else
        rp->norm_wg = cfg->norm_wg ? cfg->norm_wg : cpu ? 32 : 128;
    if (rp->norm_wg > lim->maxComputeWorkGroupInvocations ||
        rp->norm_wg > lim->maxComputeWorkGroupSize[0] || !rp->norm_wg ||
        (!subgroup && (!is_pow2(rp->norm_wg) || rp->norm_rows != 1)))
        return eg_fail(err, "norm: %u invocations for %u rows do not fit %s", rp->norm_wg,
                       rp->norm_rows, vk->props.deviceName);

    rp->attn_subgroup = subgroup && vk->subgroup_ballot;
    rp->attn_wg = cfg->attn_wg ? cfg->attn_wg : cpu ? sg : gpu_wg;
    rp->attn_qpw = cfg->attn_queries ? cfg->attn_queries : cpu ? 4 : 1;
    rp->attn_dpl = cfg->attn_dims ? cfg->attn_dims : cpu ? 8 : 4;
    rp->attn_wide = cfg->attn_wide ? cfg->attn_wide > 0 : cpu;
    if (rp->attn_subgroup &&
        (rp->attn_wg > lim->maxComputeWorkGroupInvocations ||
         rp->attn_wg > lim->maxComputeWorkGroupSize[0] || !rp->attn_wg || !rp->attn_qpw ||
         !rp->attn_dpl || (rp->attn_wide && rp->attn_dpl % 8) ||
         2 * rp->attn_qpw * rp->attn_wg * 4 > lim->maxComputeSharedMemorySize))
        return eg_fail(err, "attention: %u invocations, %u queries, %u dimensions%s do not fit %s",
                       rp->attn_wg, rp->attn_qpw, rp->attn_dpl, rp->attn_wide ? " (wide)" : "",
                       vk->props.deviceName);
    if (!rp->attn_subgroup) rp->attn_qpw = 1;
    rp->attn_texel = rp->attn_subgroup && (cfg->attn_texel ? cfg->attn_texel > 0 : vk->texel_views);
    if (rp->attn_texel && !vk->texel_views)
        return eg_fail(err, "attention: texel loads need texel views, which %s lacks",
                       vk->props.deviceName);
    return flash_params(vk, cfg, rp, err);
}

/* The cooperative-matrix matmul (shaders/coopmat/): 4 subgroups of RM×RN = 2×2 matrix tiles
 * each, K in slices of 2 tiles; with 16×16×16 tiles a 64×64 block and 24 KiB of shared memory.
 * Not tuned on a GPU yet (scripts/device-check.sh measures it). */
static int coopmat_params(EgOps *ops, const EgVk *vk, const EgOpsConfig *cfg,
                          EgPipelineBatch *batch, EgError *err) {
    if (cfg->coopmat < 0 || ops->naive) return 0;
    const EgCoopmat *cm = &vk->coopmat;
    const char *name = cm->kind == EG_COOPMAT_KHR  ? "matmul_coopmat_khr"
                       : cm->kind == EG_COOPMAT_NV ? "matmul_coopmat_nv"
                                                   : NULL;
    const char *why = !ops->f16 ? "fp32 storage (tensor cores take fp16)"
                      : !name     ? cm->why
                      : !eg_shader_available(name, 1)
                          ? "its shader is not built (CMake EGRET_GLSLANG or EGRET_COOPMAT_NV)"
                          : NULL;
    uint32_t wg = 4 * vk->subgroup_size, rm = 2, rn = 2, ks = 2;
    uint32_t bm = 2 * rm * cm->shape.m, bn = 2 * rn * cm->shape.n, bk = ks * cm->shape.k;
    uint64_t shared = (uint64_t)(bm + bn) * bk * 2 + (uint64_t)bm * bn * 4;
    if (!why && (shared > vk->props.limits.maxComputeSharedMemorySize ||
                 wg > vk->props.limits.maxComputeWorkGroupInvocations))
        why = "its block does not fit the workgroup limits";
    if (why) {
        if (cfg->coopmat > 0)
            return eg_fail(err, "cooperative-matrix matmul unavailable on %s: %s",
                           vk->props.deviceName, why);
        return 0;
    }
    uint32_t spec[7] = {wg, cm->shape.m, cm->shape.n, cm->shape.k, rm, rn, ks};
    ops->coopmat = 1;
    ops->coopmat_bm = bm;
    ops->coopmat_bn = bn;
    eg_pipeline_batch_add(batch, &ops->matmul_coopmat, name, 5, 1u << 4, 0, sizeof(MatmulPush),
                          spec, 7);
    return 0;
}

static int builds_format(const EgOpsConfig *cfg, EgWeightFormat f) {
    return cfg->quant_kernels == 0 || cfg->quant_kernels == (int)f;
}

/* The int-dot kernels (shaders/quantize_act.comp, linear_quant_idot.glsl) where
 * eg_int_dot_choose says, with the float quantized kernels' work split (q_wg, q_tn; 1, 2, 4, 8
 * rows of x, and q_tm per workgroup row for more), and the buffer of x's quantized rows; only
 * for the formats whose float kernels are built (EgOpsConfig.quant_kernels: none for a dense
 * model, which gets no buffer either). */
static int int_dot_params(EgOps *ops, EgVk *vk, const EgOpsConfig *cfg, EgPipelineBatch *batch,
                          EgError *err) {
    int use = eg_int_dot_choose(&vk->int_dot, cfg->int_dot);
    if (use < 0)
        return eg_fail(err, "int-dot kernels asked for (%s) but %s lacks them: %s",
                       cfg->int_dot > 0 ? "required" : "EGRET_INT_DOT=1", vk->props.deviceName,
                       vk->int_dot.why);
    /* a model whose projections are dense has no quantized products */
    if (!use || cfg->quant_kernels < 0) return 0;
    ops->int_dot = 1;
    ops->int_dot_x_bytes = cfg->int_dot_x_bytes ? cfg->int_dot_x_bytes : EG_INT_DOT_X_BYTES;
    if (eg_buffer_create(&ops->arena, ops->int_dot_x_bytes, &ops->int_dot_x, err)) return -1;
    eg_pipeline_batch_add(batch, &ops->quantize_act, "quantize_act", 2, 1u << 1, 0,
                          sizeof(QuantizeActPush), NULL, 0);
    static const char *const names[2] = {"matmul_q8_idot", "matmul_q4_idot"};
    for (int f = 0; f < 2; f++)
        for (int v = 0; v <= EG_MATVEC_VARIANTS && builds_format(cfg, f + 1); v++) {
            uint32_t spec[3] = {ops->q_wg, v < EG_MATVEC_VARIANTS ? 1u << v : ops->q_tm, ops->q_tn};
            eg_pipeline_batch_add(batch, &ops->matmul_q_idot[f][v], names[f], 5, 1u << 4, 0,
                                  sizeof(MatmulPush), spec, 3);
        }
    return 0;
}

int eg_ops_init(EgOps *ops, EgVk *vk, int f16, EgError *err) {
    return eg_ops_init_config(ops, vk, f16, &(EgOpsConfig){0}, err);
}

/* Queues one matmul_direct pipeline (spec: WG, TM, TN, SWIGLU, MM_ACT); the texel variant reads
 * x and W through texel views. */
static void queue_direct(EgPipelineBatch *b, int texel, const uint32_t *spec, EgPipeline *out) {
    eg_pipeline_batch_add(b, out, texel ? "matmul_direct_texel" : "matmul_direct", 5, 1u << 4,
                          texel ? 3u : 0u, sizeof(MatmulPush), spec, 5);
}

int eg_ops_init_config(EgOps *ops, EgVk *vk, int f16, const EgOpsConfig *cfg, EgError *err) {
    memset(ops, 0, sizeof *ops);
    if (f16 && !vk->has_float16)
        return eg_fail(err, "device %s lacks shaderFloat16, needed by the fp16 mode: use fp32",
                       vk->props.deviceName);
    LinearParams lp;
    RowParams rp = {0};
    if (linear_params(vk, cfg, f16, &lp, err) || row_params(vk, cfg, &rp, err)) return -1;
    ops->vk = vk;
    ops->f16 = f16;
    ops->elem = f16 ? 2 : 4;
    ops->naive = cfg->naive > 0 || (cfg->naive == 0 && eg_env_flag("EGRET_OPS_NAIVE"));
    eg_arena_init(&ops->arena, vk, EG_MEM_DEVICE, 4096);
    if (eg_buffer_create(&ops->arena, 16, &ops->dummy, err)) return -1;
    struct {
        EgPipeline *p;
        const char *name;
        int bindings;
        uint32_t writes;
        uint32_t push;
    } table[] = {
        {&ops->rope, "rope", 2, 1u << 0, sizeof(RopePush)},
        {&ops->embed, "embed", 3, 1u << 2, sizeof(EmbedPush)},
        {&ops->patchify, "patchify", 2, 1u << 1, sizeof(PatchifyPush)},
        {&ops->vit_embed, "vit_embed", 4, 1u << 3, sizeof(VitEmbedPush)},
        {&ops->rows_combine, "rows_combine", 6, 1u << 5, sizeof(RowsCombinePush)},
        /* The last two only in the naive mode. */
        {&ops->matmul_naive, "matmul_naive", 5, 1u << 4, sizeof(MatmulPush)},
        {&ops->matvec_naive, "matvec_naive", 5, 1u << 4, sizeof(MatmulPush)},
    };
    /* every pipeline is queued here and built at the end, concurrently */
    EgPipelineBatch queued, *batch = &queued;
    eg_pipeline_batch_init(batch, f16);
    size_t n_table = sizeof table / sizeof table[0] - (ops->naive ? 0 : 2);
    for (size_t i = 0; i < n_table; i++)
        eg_pipeline_batch_add(batch, table[i].p, table[i].name, table[i].bindings, table[i].writes,
                              0, table[i].push, NULL, 0);
    /* shaders/norm.glsl's specialization constants: WG, ROWS, WIDE, MULTI_SUBGROUP; with 8
     * element loads, a pipeline with only those and one with only single ones (as attention's
     * below). With texel views (CPU devices) x, the weight and the bias are read through them. */
    ops->norm_rows = rp.norm_rows;
    int norm_texel = rp.norm_subgroup && vk->texel_views;
    for (uint32_t narrow = 0; narrow <= rp.norm_wide; narrow++) {
        uint32_t spec[4] = {rp.norm_wg, rp.norm_rows, rp.norm_wide && !narrow,
                            rp.norm_wg > vk->subgroup_size};
        eg_pipeline_batch_add(batch, &ops->norm[narrow],
                              !rp.norm_subgroup ? "norm_shared"
                              : norm_texel      ? "norm_texel"
                                                : "norm",
                              4, 1u << 3, norm_texel ? 7u : 0u, sizeof(NormPush), spec, 4);
    }
    /* shaders/attention.glsl's (EG_ATTN_SPEC); attention_shared.comp has none. Our SPIR-V
     * (1.0) runs with the device's subgroup size, so WG within it is one subgroup. */
    ops->attn_queries = rp.attn_qpw;
    uint32_t multi_subgroup = rp.attn_wg > vk->subgroup_size;
    const char *attn_name = !rp.attn_subgroup ? "attention_shared"
                            : rp.attn_texel   ? "attention_texel"
                                              : "attention";
    uint32_t attn_texels = rp.attn_texel ? 7u : 0u; /* q, k, v */
    /* Decode (one query) would waste the other queries' share of every tile: a one-query
     * pipeline for dispatches with fewer queries than a workgroup takes (lavapipe, 128 keys:
     * 0.6x the time of the 4-query one). With 8-element loads, each comes with only those
     * (WIDE 2) and, for dispatches with rows off a multiple of 8, only single ones (0). */
    for (int one = 0; one <= (rp.attn_qpw > 1); one++)
        for (uint32_t narrow = 0; narrow <= rp.attn_wide; narrow++) {
            uint32_t spec[EG_ATTN_SPEC] = {rp.attn_wg, one ? 1 : rp.attn_qpw, rp.attn_dpl,
                                           rp.attn_wide && !narrow ? 2 : 0, multi_subgroup};
            EgPipeline *p = one ? &ops->attention_one[narrow] : &ops->attention[narrow];
            eg_pipeline_batch_add(batch, p, attn_name, 5, 1u << 3, attn_texels,
                                  sizeof(EgAttentionPush), spec,
                                  rp.attn_subgroup ? EG_ATTN_SPEC : 0);
        }
    /* runtime/ops_batch.c builds attention_batch.comp (one query) with the same choices, its
     * loads chosen per dispatch (the batch table holds the offsets) */
    ops->attention_batch_ok = rp.attn_subgroup;
    uint32_t one_spec[EG_ATTN_SPEC] = {rp.attn_wg, 1, rp.attn_dpl, rp.attn_wide ? 1 : 0,
                                       multi_subgroup};
    memcpy(ops->attention_one_spec, one_spec, sizeof one_spec);
    if (coopmat_params(ops, vk, cfg, batch, err)) {
        eg_ops_destroy(ops);
        return -1;
    }
    ops->attn_flash = rp.flash;
    if (rp.flash) {
        uint32_t spec[4] = {rp.flash_wg, rp.flash_lanes, rp.flash_dims, rp.flash_keys};
        ops->flash_queries = rp.flash_wg / rp.flash_lanes;
        ops->flash_max_dim = rp.flash_lanes * rp.flash_dims;
        eg_pipeline_batch_add(batch, &ops->attention_flash, "attention_flash", 5, 1u << 3, 0,
                              sizeof(EgAttentionPush), spec, 4);
    }
    /* shaders/matvec.glsl's specialization constants: WG, LANES, RPG, COLS, ROWS_WG. */
    ops->matvec_rows_wg = lp.mv_rpg * (lp.mv_wg / lp.mv_lanes);
    for (int v = 0; v < EG_MATVEC_VARIANTS; v++) {
        uint32_t spec[5] = {lp.mv_wg, lp.mv_lanes, lp.mv_rpg, 1u << v, ops->matvec_rows_wg};
        int load64 = (lp.mv_load64 >> v) & 1;
        const char *name = lp.subgroup ? (load64 ? "matvec64" : "matvec")
                                       : (load64 ? "matvec_shared64" : "matvec_shared");
        eg_pipeline_batch_add(batch, &ops->matvec[v], name, 5, 1u << 4, 0, sizeof(MatmulPush), spec,
                              5);
    }
    /* shaders/matmul_direct.comp's: WG, TM, TN, SWIGLU; the SwiGLU variants where every MLP
     * product can take them (eg_ops_fuses_swiglu: the few-rows kernel exists too) */
    ops->mm_direct = lp.mm_direct;
    ops->md_wg = lp.md_wg;
    ops->md_tm = lp.md_tm;
    ops->md_tn = lp.md_tn;
    ops->md_few_max_weights = lp.md_few_max_weights;
    int swiglu = lp.mm_direct && lp.md_few_max_weights && lp.md_tn % 2 == 0;
    /* Per SwiGLU or not, and (without it) with no activation or the flags': 255 is
     * MM_ACT_FROM_FLAGS, the SwiGLU's SiLU is compiled in. */
    for (int fused = 0; fused <= swiglu && lp.mm_direct; fused++)
        for (int act = 0; act <= !fused; act++) {
            EgPipeline *many = fused ? &ops->matmul_direct_swiglu
                               : act ? &ops->matmul_direct_act
                                     : &ops->matmul_direct;
            EgPipeline *few = fused ? ops->matmul_direct_few_swiglu
                              : act ? ops->matmul_direct_few_act
                                    : ops->matmul_direct_few;
            for (int v = -1; v < (lp.md_few_max_weights ? EG_MATVEC_VARIANTS : 0); v++) {
                uint32_t spec[5] = {lp.md_wg, v < 0 ? lp.md_tm : 1u << v, lp.md_tn, (uint32_t)fused,
                                    act ? 255u : EG_OP_ACT_NONE};
                queue_direct(batch, lp.md_texel, spec, v < 0 ? many : &few[v]);
            }
        }
    /* shaders/matmul.comp's: WG, BM, BN, BK, TM, TN; not built where matmul_direct takes every
     * product of more rows (CPU devices) */
    for (int i = 0; i < 2; i++) {
        EgTile t = lp.mm[i];
        uint32_t spec[6] = {(t.bm / t.tm) * (t.bn / t.tn), t.bm, t.bn, t.bk, t.tm, t.tn};
        ops->matmul_tile[i] = t;
        if (!lp.mm_direct)
            eg_pipeline_batch_add(batch, &ops->matmul[i], "matmul", 5, 1u << 4, 0,
                                  sizeof(MatmulPush), spec, 6);
    }
    /* shaders/linear_quant.glsl's: WG, TM, TN. CPUs: one subgroup of 8 rows of W each (as
     * matmul_direct); GPUs: 64 invocations of 4. Not yet tuned: see docs/quantization.md. */
    int cpu = vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    ops->q_wg = cpu ? 8 : 64;
    ops->q_tn = cpu ? 8 : 4;
    ops->q_tm = 8;
    /* With texel views (CPU devices) x and W are read through them, as matmul_direct_texel
     * (EgOpsConfig.md_texel chooses for both). */
    static const char *const q_names[2][2] = {{"matmul_q8", "matmul_q4"},
                                              {"matmul_q8_texel", "matmul_q4_texel"}};
    int q_texel = lp.md_texel && vk->texel_views;
    for (int f = 0; f < 2; f++)
        for (int v = 0; v <= EG_MATVEC_VARIANTS && builds_format(cfg, f + 1); v++) {
            uint32_t spec[3] = {ops->q_wg, v < EG_MATVEC_VARIANTS ? 1u << v : ops->q_tm, ops->q_tn};
            eg_pipeline_batch_add(batch, &ops->matmul_q[f][v], q_names[q_texel][f], 5, 1u << 4,
                                  q_texel ? 3u : 0u, sizeof(MatmulPush), spec, 3);
        }
    if (int_dot_params(ops, vk, cfg, batch, err) == 0 &&
        eg_pipeline_batch_build(vk, batch, err) == 0)
        return 0;
    eg_ops_destroy(ops);
    return -1;
}

void eg_ops_destroy(EgOps *ops) {
    if (!ops->vk) return;
    EgPipeline *all[] = {&ops->matmul[0],
                         &ops->matmul[1],
                         &ops->norm[0],
                         &ops->norm[1],
                         &ops->attention[0],
                         &ops->attention[1],
                         &ops->rope,
                         &ops->embed,
                         &ops->patchify,
                         &ops->vit_embed,
                         &ops->rows_combine,
                         &ops->matmul_naive,
                         &ops->matvec_naive,
                         &ops->attention_one[0],
                         &ops->attention_flash,
                         &ops->matmul_coopmat,
                         &ops->attention_one[1],
                         &ops->matmul_direct,
                         &ops->matmul_direct_swiglu,
                         &ops->matmul_direct_act,
                         &ops->quantize_act};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        eg_pipeline_destroy(ops->vk, all[i]);
    for (int v = 0; v < EG_MATVEC_VARIANTS; v++) {
        eg_pipeline_destroy(ops->vk, &ops->matvec[v]);
        eg_pipeline_destroy(ops->vk, &ops->matmul_direct_few[v]);
        eg_pipeline_destroy(ops->vk, &ops->matmul_direct_few_swiglu[v]);
        eg_pipeline_destroy(ops->vk, &ops->matmul_direct_few_act[v]);
    }
    for (int f = 0; f < 2; f++)
        for (int v = 0; v <= EG_MATVEC_VARIANTS; v++) {
            eg_pipeline_destroy(ops->vk, &ops->matmul_q[f][v]);
            eg_pipeline_destroy(ops->vk, &ops->matmul_q_idot[f][v]);
        }
    eg_arena_reset(&ops->arena);
    ops->vk = NULL;
}

uint64_t eg_matrix_row_bytes(const EgOps *ops, uint32_t cols, EgWeightFormat format) {
    return format == EG_WEIGHTS_DENSE ? (uint64_t)cols * ops->elem
                                      : 4 * (uint64_t)eg_quant_row_words(format, cols);
}

uint32_t eg_matrix_chunk_rows_format(const EgOps *ops, uint32_t cols, EgWeightFormat format) {
    uint64_t row_bytes = eg_matrix_row_bytes(ops, cols, format);
    VkDeviceSize rows = row_bytes ? ops->vk->max_storage_range / row_bytes : 0;
    return rows > UINT32_MAX ? UINT32_MAX : (uint32_t)rows;
}

uint32_t eg_matrix_chunk_rows(const EgOps *ops, uint32_t cols) {
    return eg_matrix_chunk_rows_format(ops, cols, EG_WEIGHTS_DENSE);
}

/* Dispatches `groups` workgroups of a 1-D problem as a 2-D grid within the 65535-per-axis limit
 * every Vulkan device guarantees (the shaders use eg_flat_index()). */
static void dispatch_1d(EgCmd *cmd, const EgPipeline *p, const EgBuffer *const *bufs,
                        const void *push, uint32_t groups) {
    uint32_t gx = groups < 65535 ? groups : 65535;
    eg_cmd_dispatch(cmd, p, bufs, push, gx, eg_groups(groups, gx ? gx : 1), 1);
}

/* Which of a pair of pipelines (EgOps.norm, .attention) serves a dispatch whose row offsets and
 * strides, or-ed together, are `rows`: [0] (8-element loads where it has them) needs them all
 * multiples of 8, [1] (built only where [0] has them) takes the rest. */
static int load_variant(const EgPipeline pair[2], uint32_t rows) {
    return (rows & 7u) && pair[1].pipeline;
}

static const EgBuffer *or_dummy(const EgOps *ops, const EgBuffer *b) {
    return b ? b : &ops->dummy;
}

/* The kernel eg_op_linear runs for `rows` rows of x times w. */
typedef enum {
    LINEAR_MATVEC_NAIVE,
    LINEAR_MATMUL_NAIVE,
    LINEAR_MATVEC,     /* ops->matvec[v] */
    LINEAR_DIRECT_FEW, /* ops->matmul_direct_few[v] */
    LINEAR_DIRECT,     /* ops->matmul_direct */
    LINEAR_TILED,      /* ops->matmul[0 or 1] */
    LINEAR_COOPMAT,    /* ops->matmul_coopmat */
    LINEAR_QUANT,      /* ops->matmul_q[w->format - 1][v or EG_MATVEC_VARIANTS] */
    LINEAR_QUANT_IDOT  /* ops->quantize_act, then ops->matmul_q_idot[w->format - 1][v] */
} LinearKernel;

/* Few rows of x: the variant v compiled for the next power of two of rows, the matrix-vector
 * kernel's (or on CPU devices, for small weights, matmul_direct's); more: the matrix kernels. */
static LinearKernel linear_kernel(const EgOps *ops, uint32_t rows, const EgMatrix *w, int *v) {
    *v = 0;
    if (w->format != EG_WEIGHTS_DENSE) {
        *v = rows <= EG_MATVEC_MAX_ROWS ? eg_pow2_variant(rows) : EG_MATVEC_VARIANTS;
        return ops->int_dot && eg_int_dot_pass_rows(ops, w->cols) ? LINEAR_QUANT_IDOT
                                                                  : LINEAR_QUANT;
    }
    if (ops->naive) return rows <= 4 ? LINEAR_MATVEC_NAIVE : LINEAR_MATMUL_NAIVE;
    if (rows <= EG_MATVEC_MAX_ROWS) {
        *v = eg_pow2_variant(rows);
        return (uint64_t)w->rows * w->cols <= ops->md_few_max_weights ? LINEAR_DIRECT_FEW
                                                                      : LINEAR_MATVEC;
    }
    if (ops->coopmat) return LINEAR_COOPMAT;
    return ops->mm_direct ? LINEAR_DIRECT : LINEAR_TILED;
}

/* Whether kernel k can fold an RMSNorm into product a (the norm's weight takes the bias's
 * binding). */
static int kernel_fuses_rms(LinearKernel k, const EgLinear *a) {
    return !a->bias && (k == LINEAR_DIRECT_FEW || k == LINEAR_DIRECT);
}

int eg_linear_fuses_rms(const EgOps *ops, const EgLinear *a) {
    int v;
    return kernel_fuses_rms(linear_kernel(ops, a->rows, a->w, &v), a);
}

uint32_t eg_int_dot_pass_rows(const EgOps *ops, uint32_t k) {
    uint64_t rows = ops->int_dot_x_bytes / (eg_int_dot_row_vecs(k) * 16ull);
    return rows > UINT32_MAX ? UINT32_MAX : (uint32_t)rows;
}

int eg_linear_int_dot(const EgOps *ops, const EgLinear *a) {
    int v;
    return linear_kernel(ops, a->rows, a->w, &v) == LINEAR_QUANT_IDOT;
}

int eg_ops_fuses_swiglu(const EgOps *ops, uint32_t n, uint32_t k) {
    /* matmul_direct for every number of rows: the many-rows kernel, and the few-rows one for
     * weights of this size; one chunk; TN/2 gate rows and TN/2 up rows per invocation */
    uint64_t weights = 2 * (uint64_t)n * k;
    return !ops->naive && ops->matmul_direct_swiglu.pipeline &&
           weights <= ops->md_few_max_weights && 2 * n <= eg_matrix_chunk_rows(ops, k);
}

/* The device-memory traffic of one chunk of w_rows rows of a product (eg_cmd_work): x once,
 * the chunk's weights, its outputs written (and read first with mul or accum), the bias or the
 * fused norm's weight. */
static uint64_t linear_bytes(const EgOps *ops, const EgLinear *a, uint32_t w_rows) {
    uint64_t e = ops->elem, rows = a->rows, k = a->w->cols;
    uint64_t n = a->swiglu ? w_rows / 2 : w_rows;
    uint64_t bytes = rows * k * e + w_rows * eg_matrix_row_bytes(ops, a->w->cols, a->w->format);
    bytes += rows * n * e * (a->mul || a->accum ? 2 : 1);
    if (a->bias) bytes += n * e;
    if (a->rms_weight) bytes += k * e;
    return bytes;
}

/* x's rows (a->rows of w->cols) into ops->int_dot_x as int8 blocks, in the order the weights'
 * format reads them (shaders/act_quant_layout.glsl). */
static void quantize_x(EgCmd *cmd, const EgOps *ops, const EgLinear *a, uint32_t row0,
                       uint32_t rows) {
    uint32_t K = a->w->cols, ldx = a->ldx ? a->ldx : K;
    QuantizeActPush push = {.M = rows,
                            .K = K,
                            .ldx = ldx,
                            .x_off = a->x_off + row0 * ldx,
                            .order = a->w->format == EG_WEIGHTS_Q4};
    /* x read once, its quantized rows written; per element a compare, a multiply, a round */
    eg_cmd_work(cmd, (uint64_t)rows * (K * ops->elem + eg_int_dot_row_vecs(K) * 16ull),
                3ull * rows * K);
    const EgBuffer *bufs[2] = {a->x, &ops->int_dot_x};
    /* one invocation per block of 32, the padding block of an odd count included */
    eg_cmd_dispatch(cmd, &ops->quantize_act, bufs, &push, eg_groups((K + 63) / 64 * 2, 64), rows,
                    1);
}

/* eg_op_linear on the int-dot kernels (variant v, epilogue flags): per pass of as many rows of
 * x as ops->int_dot_x holds, those rows quantized, then every chunk of w times them. */
static void linear_int_dot(EgCmd *cmd, const EgOps *ops, const EgLinear *a, uint32_t flags, int v) {
    const EgMatrix *w = a->w;
    uint32_t pass = eg_int_dot_pass_rows(ops, w->cols);
    uint32_t ldy = a->ldy ? a->ldy : w->rows;
    for (uint32_t r0 = 0; r0 < a->rows; r0 += pass) {
        uint32_t rows = a->rows - r0 < pass ? a->rows - r0 : pass;
        quantize_x(cmd, ops, a, r0, rows);
        for (uint32_t c = 0; c < w->n_chunks; c++) {
            uint32_t n = eg_matrix_chunk_len(w, c);
            /* x_off and ldx are unused: x's rows are int_dot_x's */
            MatmulPush push = {.M = rows,
                               .N = n,
                               .K = w->cols,
                               .ldy = ldy,
                               .y_off = a->y_off + r0 * ldy,
                               .n_off = c * w->chunk_rows,
                               .flags = flags};
            EgLinear part = *a;
            part.rows = rows;
            eg_cmd_work(cmd, linear_bytes(ops, &part, n), 2 * (uint64_t)rows * n * w->cols);
            const EgBuffer *bufs[5] = {&ops->int_dot_x, &w->chunks[c], or_dummy(ops, a->bias),
                                       or_dummy(ops, a->alpha), a->y};
            eg_cmd_dispatch(cmd, &ops->matmul_q_idot[w->format - 1][v], bufs, &push,
                            eg_groups(n, ops->q_wg * ops->q_tn),
                            v < EG_MATVEC_VARIANTS ? 1 : eg_groups(rows, ops->q_tm), 1);
        }
    }
}

void eg_op_linear(EgCmd *cmd, const EgOps *ops, const EgLinear *a) {
    const EgMatrix *w = a->w;
    if (a->rows == 0) return;
    uint32_t flags = (uint32_t)a->act;
    if (a->bias) flags |= MM_BIAS;
    if (a->mul) flags |= MM_MUL;
    if (a->accum) flags |= MM_ACCUM;
    if (a->alpha) flags |= MM_ALPHA | (a->alpha_vector ? MM_ALPHA_VECTOR : 0);
    int v;
    LinearKernel kernel = linear_kernel(ops, a->rows, w, &v);
    if (a->rms_weight) {
        if (!kernel_fuses_rms(kernel, a)) { /* a caller's bug: they check first */
            fprintf(stderr, "egret: eg_op_linear: this kernel cannot fold an RMSNorm\n");
            abort();
        }
        flags |= MM_RMS;
    }
    /* outputs per invocation: TN, or with the SwiGLU fused TN/2 (and N is half of w's rows) */
    uint32_t md_cols = ops->md_tn;
    if (a->swiglu) {
        if ((kernel != LINEAR_DIRECT && kernel != LINEAR_DIRECT_FEW) || w->n_chunks != 1 ||
            w->rows % 2 || !ops->matmul_direct_swiglu.pipeline || a->bias || a->act || a->mul ||
            a->accum) {
            /* a caller's bug: they check eg_ops_fuses_swiglu first */
            fprintf(stderr, "egret: eg_op_linear: this product cannot fuse the SwiGLU\n");
            abort();
        }
        md_cols /= 2;
    }
    if (kernel == LINEAR_QUANT_IDOT) {
        linear_int_dot(cmd, ops, a, flags, v);
        return;
    }
    /* The tiled kernel: the small tile unless it pads to nearly as many rows as the large one: its
     * lower reuse costs about half again per row (lavapipe), so it wins while the large tile
     * would compute over 1.5x the small one's rows. */
    uint32_t bm0 = ops->matmul_tile[0].bm, bm1 = ops->matmul_tile[1].bm;
    int mm =
        3 * (uint64_t)eg_groups(a->rows, bm0) * bm0 >= 2 * (uint64_t)eg_groups(a->rows, bm1) * bm1;
    const EgTile *tile = &ops->matmul_tile[mm];
    for (uint32_t c = 0; c < w->n_chunks; c++) {
        uint32_t n0 = c * w->chunk_rows;
        uint32_t n = eg_matrix_chunk_len(w, c) / (a->swiglu ? 2 : 1);
        MatmulPush push = {.M = a->rows,
                           .N = n,
                           .K = w->cols,
                           .ldx = a->ldx ? a->ldx : w->cols,
                           .ldy = a->ldy ? a->ldy : w->rows / (a->swiglu ? 2 : 1),
                           .x_off = a->x_off,
                           .y_off = a->y_off,
                           .n_off = n0,
                           .flags = flags,
                           .eps = a->rms_eps};
        eg_cmd_work(cmd, linear_bytes(ops, a, eg_matrix_chunk_len(w, c)),
                    2 * (uint64_t)a->rows * eg_matrix_chunk_len(w, c) * w->cols);
        const EgBuffer *bufs[5] = {a->x, &w->chunks[c],
                                   or_dummy(ops, a->rms_weight ? a->rms_weight : a->bias),
                                   or_dummy(ops, a->alpha), a->y};
        switch (kernel) {
        case LINEAR_MATVEC_NAIVE:
            eg_cmd_dispatch(cmd, &ops->matvec_naive, bufs, &push, eg_groups(n, 4), 1, 1);
            break;
        case LINEAR_MATMUL_NAIVE:
            eg_cmd_dispatch(cmd, &ops->matmul_naive, bufs, &push, eg_groups(n, 64),
                            eg_groups(a->rows, 64), 1);
            break;
        case LINEAR_MATVEC:
            dispatch_1d(cmd, &ops->matvec[v], bufs, &push, eg_groups(n, ops->matvec_rows_wg));
            break;
        case LINEAR_DIRECT_FEW:
            eg_cmd_dispatch(cmd,
                            a->swiglu ? &ops->matmul_direct_few_swiglu[v]
                            : a->act  ? &ops->matmul_direct_few_act[v]
                                      : &ops->matmul_direct_few[v],
                            bufs, &push, eg_groups(n, ops->md_wg * md_cols), 1, 1);
            break;
        case LINEAR_DIRECT:
            eg_cmd_dispatch(cmd,
                            a->swiglu ? &ops->matmul_direct_swiglu
                            : a->act  ? &ops->matmul_direct_act
                                      : &ops->matmul_direct,
                            bufs, &push, eg_groups(n, ops->md_wg * md_cols),
                            eg_groups(a->rows, ops->md_tm), 1);
            break;
        case LINEAR_QUANT:
            eg_cmd_dispatch(cmd, &ops->matmul_q[w->format - 1][v], bufs, &push,
                            eg_groups(n, ops->q_wg * ops->q_tn),
                            v < EG_MATVEC_VARIANTS ? 1 : eg_groups(a->rows, ops->q_tm), 1);
            break;
        case LINEAR_QUANT_IDOT: /* linear_int_dot, above */
            break;
        case LINEAR_COOPMAT:
            eg_cmd_dispatch(cmd, &ops->matmul_coopmat, bufs, &push, eg_groups(n, ops->coopmat_bn),
                            eg_groups(a->rows, ops->coopmat_bm), 1);
            break;
        case LINEAR_TILED:
            eg_cmd_dispatch(cmd, &ops->matmul[mm], bufs, &push, eg_groups(n, tile->bn),
                            eg_groups(a->rows, tile->bm), 1);
            break;
        }
    }
}

void eg_op_norm(EgCmd *cmd, const EgOps *ops, const EgNorm *a) {
    uint32_t xs = a->x_stride ? a->x_stride : a->dim;
    uint32_t ys = a->y_stride ? a->y_stride : a->dim;
    NormPush push = {.rows = a->rows,
                     .dim = a->dim,
                     .x_off = a->x_off,
                     .x_stride = xs,
                     .x_batch = a->x_batch ? a->x_batch : a->rows * xs,
                     .y_off = a->y_off,
                     .y_stride = ys,
                     .y_batch = a->y_batch ? a->y_batch : a->rows * ys,
                     .eps = a->eps,
                     .rms = a->rms ? 1u : 0u};
    /* x read and y written once, the weight (and bias) once; per element RMSNorm squares and
     * adds, scales and weighs (4 operations), LayerNorm also subtracts the mean and adds the
     * bias (7) */
    uint64_t elements = (uint64_t)a->rows * (a->batches ? a->batches : 1) * a->dim;
    eg_cmd_work(cmd, (2 * elements + (a->bias ? 2u : 1u) * (uint64_t)a->dim) * ops->elem,
                elements * (a->rms ? 4u : 7u));
    const EgBuffer *bufs[4] = {a->x, a->weight, or_dummy(ops, a->bias), a->y};
    uint32_t rows = push.dim | push.x_off | push.x_stride | push.x_batch | push.y_off |
                    push.y_stride | push.y_batch;
    eg_cmd_dispatch(cmd, &ops->norm[load_variant(ops->norm, rows)], bufs, &push,
                    eg_groups(a->rows, ops->norm_rows), a->batches ? a->batches : 1, 1);
}

/* Keys query i sees (causal: up to its position; ranges and block masks live on the device,
 * so those count every key: an upper bound). */
static uint64_t attention_keys_seen(const EgAttention *a, uint32_t i) {
    if (a->mode != EG_ATTN_CAUSAL) return a->n_keys;
    uint64_t hi = (uint64_t)a->q_pos0 + i + 1;
    return hi < a->n_keys ? hi : a->n_keys;
}

uint64_t eg_attention_flops(const EgAttention *a) {
    /* per query, head and key seen: the score (hd multiply-adds) and p·v (hd more); the
     * softmax's few operations per score are left out */
    uint64_t keys = 0;
    if (a->mode == EG_ATTN_CAUSAL) {
        for (uint32_t i = 0; i < a->n_queries; i++)
            keys += attention_keys_seen(a, i);
    } else {
        keys = (uint64_t)a->n_queries * a->n_keys;
    }
    return keys * 4u * a->head_dim * a->heads * (a->batches ? a->batches : 1);
}

uint64_t eg_attention_bytes(const EgOps *ops, const EgAttention *a) {
    /* q read and o written once; of k and v the keys the last query sees, once per key/value
     * head (what a kernel that keeps them on chip reads) */
    uint64_t kv_heads = a->kv_heads ? a->kv_heads : a->heads;
    uint64_t keys = a->n_queries ? attention_keys_seen(a, a->n_queries - 1) : 0;
    uint64_t per_batch = 2 * (uint64_t)a->n_queries * a->heads * a->head_dim +
                         2 * keys * kv_heads * a->head_dim;
    return per_batch * (a->batches ? a->batches : 1) * ops->elem;
}

void eg_op_attention(EgCmd *cmd, const EgOps *ops, const EgAttention *a) {
    uint32_t width = a->heads * a->head_dim;
    uint32_t kv_heads = a->kv_heads ? a->kv_heads : a->heads;
    uint32_t kv_width = kv_heads * a->head_dim;
    if (a->heads % kv_heads ||
        (a->mode == EG_ATTN_BLOCK_MASK && (!a->mask_block || !a->mask_words || !a->ranges))) {
        /* a caller's bug: the shader would read the wrong heads or divide by zero */
        fprintf(stderr,
                "egret: eg_op_attention: %u heads over %u key/value heads, mode %d with mask "
                "blocks of %u keys in %u words\n",
                a->heads, kv_heads, (int)a->mode, a->mask_block, a->mask_words);
        abort();
    }
    EgAttentionPush push = {.n_keys = a->n_keys,
                            .head_dim = a->head_dim,
                            .q_off = a->q_off,
                            .q_stride = a->q_stride ? a->q_stride : width,
                            .q_batch = a->q_batch,
                            .k_off = a->k_off,
                            .k_stride = a->k_stride ? a->k_stride : kv_width,
                            .k_batch = a->k_batch,
                            .v_off = a->v_off,
                            .v_stride = a->v_stride ? a->v_stride : kv_width,
                            .v_batch = a->v_batch,
                            .o_off = a->o_off,
                            .o_stride = a->o_stride ? a->o_stride : width,
                            .o_batch = a->o_batch,
                            .mode = (uint32_t)a->mode,
                            .q_pos0 = a->q_pos0,
                            .scale = a->scale,
                            .n_queries = a->n_queries,
                            .kv_group = a->heads / kv_heads,
                            .mask_block = a->mask_block,
                            .mask_words = a->mask_words};
    eg_cmd_work(cmd, eg_attention_bytes(ops, a), eg_attention_flops(a));
    const EgBuffer *bufs[5] = {a->q, a->k, a->v, a->o, or_dummy(ops, a->ranges)};
    if (ops->attn_flash && a->head_dim <= ops->flash_max_dim &&
        (ops->attn_flash == 2 || a->n_queries >= EG_FLASH_MIN_QUERIES)) {
        eg_cmd_dispatch(cmd, &ops->attention_flash, bufs, &push,
                        eg_groups(a->n_queries, ops->flash_queries), a->heads,
                        a->batches ? a->batches : 1);
        return;
    }
    int many = ops->attn_queries == 1 || a->n_queries >= ops->attn_queries;
    uint32_t rows = push.head_dim | push.q_off | push.q_stride | push.q_batch | push.k_off |
                    push.k_stride | push.k_batch | push.v_off | push.v_stride | push.v_batch;
    int narrow = load_variant(ops->attention, rows); /* attention_one's pair is built alike */
    eg_cmd_dispatch(cmd, many ? &ops->attention[narrow] : &ops->attention_one[narrow], bufs, &push,
                    many ? eg_groups(a->n_queries, ops->attn_queries) : a->n_queries, a->heads,
                    a->batches ? a->batches : 1);
}

void eg_op_rope(EgCmd *cmd, const EgOps *ops, const EgRope *a) {
    RopePush push = {.rows = a->rows,
                     .heads = a->heads,
                     .head_dim = a->head_dim,
                     .off = a->x_off,
                     .stride = a->stride ? a->stride : a->heads * a->head_dim,
                     .pos0 = a->pos0,
                     .sin_off = a->table_positions * (a->head_dim / 2)};
    /* each pair read and written, its cos and sin (float) read; a rotation is 6 operations */
    uint64_t pairs = (uint64_t)a->rows * a->heads * (a->head_dim / 2);
    eg_cmd_work(cmd, pairs * 4 * ops->elem + (uint64_t)a->rows * a->head_dim * sizeof(float),
                pairs * 6);
    const EgBuffer *bufs[2] = {a->x, a->table};
    dispatch_1d(cmd, &ops->rope, bufs, &push,
                eg_groups(a->rows * a->heads * (a->head_dim / 2), 64));
}

/* torch: inv_freq = 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32. */
static float rope_base_freq(uint32_t j, uint32_t head_dim, float theta) {
    float exponent = (float)(2 * j) / (float)head_dim;
    return 1.0f / powf(theta, exponent);
}

/* Column j of the cos and sin tables: angle = pos·inv_freq rounded to float, as torch. */
static void rope_table_column(float *out, uint32_t positions, uint32_t half, uint32_t j,
                              float inv_freq) {
    for (uint32_t pos = 0; pos < positions; pos++) {
        float angle = (float)pos * inv_freq;
        out[pos * half + j] = (float)cos((double)angle);
        out[(size_t)positions * half + pos * half + j] = (float)sin((double)angle);
    }
}

void eg_rope_inv_freq(float *inv_freq, uint32_t head_dim, float theta, const EgRopeLlama3 *llama3) {
    uint32_t half = head_dim / 2;
    for (uint32_t j = 0; j < half; j++)
        inv_freq[j] = rope_base_freq(j, head_dim, theta);
    if (!llama3) return;
    /* torch computes each line below in float32 with the Python scalars rounded to float32;
     * `2 * math.pi / inv_freq` is Tensor.__rdiv__: reciprocal, then the product. */
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    float factor = llama3->factor, low = llama3->low_freq_factor, high = llama3->high_freq_factor;
    float old_len = llama3->original_max_position_embeddings;
    float low_wavelen = old_len / low, high_wavelen = old_len / high;
    for (uint32_t j = 0; j < half; j++) {
        float f = inv_freq[j];
        float wavelen = (1.0f / f) * two_pi;
        if (wavelen > low_wavelen) {
            f = f / factor;
        } else if (!(wavelen < high_wavelen)) { /* the medium band: interpolated */
            float smooth = ((1.0f / wavelen) * old_len - low) / (high - low);
            f = (1.0f - smooth) * f / factor + smooth * f;
        }
        inv_freq[j] = f;
    }
}

void eg_rope_table_freqs(float *out, uint32_t positions, uint32_t head_dim, const float *inv_freq) {
    for (uint32_t j = 0; j < head_dim / 2; j++)
        rope_table_column(out, positions, head_dim / 2, j, inv_freq[j]);
}

void eg_rope_table(float *out, uint32_t positions, uint32_t head_dim, float theta) {
    for (uint32_t j = 0; j < head_dim / 2; j++)
        rope_table_column(out, positions, head_dim / 2, j, rope_base_freq(j, head_dim, theta));
}

void eg_op_embed(EgCmd *cmd, const EgOps *ops, const EgEmbed *a) {
    EmbedPush push = {.tokens = a->tokens,
                      .dim = a->dim,
                      .row0 = a->row0,
                      .n_rows = a->n_rows,
                      .out_off = a->out_off};
    /* the ids, and each token's row read and written */
    uint64_t row_elements = (uint64_t)a->tokens * a->dim;
    eg_cmd_work(cmd, (uint64_t)a->tokens * sizeof(uint32_t) + 2 * row_elements * ops->elem, 0);
    const EgBuffer *bufs[3] = {a->ids, a->table, a->out};
    dispatch_1d(cmd, &ops->embed, bufs, &push, eg_groups(a->tokens * a->dim, 64));
}

void eg_op_patchify(EgCmd *cmd, const EgOps *ops, const EgBuffer *pixels, const EgBuffer *patches,
                    uint32_t images, uint32_t channels, uint32_t size, uint32_t patch_size) {
    PatchifyPush push = {images, channels, size, patch_size};
    /* every pixel read and written once */
    eg_cmd_work(cmd, 2 * (uint64_t)images * channels * size * size * ops->elem, 0);
    const EgBuffer *bufs[2] = {pixels, patches};
    /* one invocation per row of a patch, channel and image (shaders/patchify.comp) */
    eg_cmd_dispatch(cmd, &ops->patchify, bufs, &push, eg_groups(size * (size / patch_size), 64),
                    channels, images);
}

void eg_op_vit_embed(EgCmd *cmd, const EgOps *ops, const EgBuffer *patches, const EgBuffer *cls,
                     const EgBuffer *pos, const EgBuffer *out, uint32_t images, uint32_t n_patches,
                     uint32_t dim) {
    VitEmbedPush push = {images, n_patches, dim};
    /* patches and the position embeddings read, the output written; one add per element */
    uint64_t out_elements = (uint64_t)images * (n_patches + 1) * dim;
    eg_cmd_work(cmd,
                ((uint64_t)images * n_patches * dim + (uint64_t)(n_patches + 2) * dim +
                 out_elements) *
                    ops->elem,
                out_elements);
    const EgBuffer *bufs[4] = {patches, cls, pos, out};
    /* one invocation per element, token and image (shaders/vit_embed.comp) */
    eg_cmd_dispatch(cmd, &ops->vit_embed, bufs, &push, eg_groups(dim, 64), n_patches + 1, images);
}

void eg_op_rows_combine(EgCmd *cmd, const EgOps *ops, const EgRowsCombine *a) {
    RowsCombinePush push = {.rows = a->rows,
                            .dim = a->dim,
                            .o_off = a->o_off,
                            .o_row = a->o_row ? a->o_row : a->dim,
                            .o_elem = a->o_elem ? a->o_elem : 1,
                            .accum = a->accum != 0};
    const EgBuffer *bufs[6] = {a->idx, NULL, NULL, NULL, NULL, a->out};
    for (int s = 0; s < 4; s++) {
        bufs[1 + s] = or_dummy(ops, a->s[s].src);
        push.s_off[s] = a->s[s].off;
        push.s_row[s] = a->s[s].row ? a->s[s].row : a->dim;
        push.coef[s] = a->s[s].coef;
    }
    /* the index rows, each present source's row, the output (read too with accum); a
     * multiply-add per source and element */
    int sources = 0;
    for (int s = 0; s < 4; s++)
        sources += a->s[s].src != NULL;
    uint64_t elements = (uint64_t)a->rows * a->dim;
    eg_cmd_work(cmd,
                (uint64_t)a->rows * 4 * sizeof(uint32_t) +
                    elements * ops->elem * (uint64_t)(sources + (a->accum ? 2 : 1)),
                elements * 2 * (uint64_t)sources);
    /* one invocation per element and row (shaders/rows_combine.comp): rows over y and z */
    uint32_t gy = a->rows < 65535 ? a->rows : 65535;
    eg_cmd_dispatch(cmd, &ops->rows_combine, bufs, &push, eg_groups(a->dim, 64), gy,
                    eg_groups(a->rows, 65535));
}
