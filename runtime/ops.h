/* The tensor operations of the IDEFICS forward pass, each recording one or a few dispatches of
 * a compute shader (shaders/). Activations and weights live in device buffers as float
 * (fp32 mode) or float16 (fast mode, EgOps.f16); offsets, strides and sizes are in elements.
 * Every op is a thin, checked wrapper: the math is in the shader, documented there. */
#ifndef EGRET_OPS_H
#define EGRET_OPS_H

#include <stdint.h>

#include "runtime/quant.h"
#include "runtime/vk_cmd.h"

/* Activation codes (shaders/common.glsl). */
typedef enum EgOpAct {
    EG_OP_ACT_NONE = 0,
    EG_OP_ACT_GELU = 1,
    EG_OP_ACT_QUICK_GELU = 2,
    EG_OP_ACT_SILU = 3,
    EG_OP_ACT_RELU = 4,
    EG_OP_ACT_GELU_TANH = 5
} EgOpAct;

/* eg_op_linear runs the matrix-vector kernel (shaders/matvec.glsl) for up to this many rows of
 * x (decode, batched decode), compiled for 1, 2, 4 and 8 rows; the tiled matrix-matrix kernel
 * (shaders/matmul.comp) above, in two tile shapes: one for few rows (short prompts, the
 * perceiver's latents) and one for many. */
#define EG_MATVEC_MAX_ROWS 8
#define EG_MATVEC_VARIANTS 4

/* A matmul workgroup's output tile (bm × bn, stepping through K by bk) and each invocation's
 * share of it (tm × tn outputs; 4 or 8 each): (bm/tm)·(bn/tn) invocations, bk·(bm+bn)·4 bytes
 * of shared memory. */
typedef struct EgTile {
    uint32_t bm, bn, bk, tm, tn;
} EgTile;

/* The variant compiled for the next power of two of n (n >= 1), as the pipelines for 1, 2, 4,
 * 8 rows or slots are indexed: 0 for 1, 1 for 2, 2 for 3 and 4, 3 for 5 to 8. */
static inline int eg_pow2_variant(uint32_t n) {
    int v = 0;
    while ((1u << v) < n)
        v++;
    return v;
}

/* shaders/attention.glsl's specialization constants: WG, QPW, DPL, WIDE, MULTI_SUBGROUP. */
#define EG_ATTN_SPEC 5

typedef struct EgOps {
    EgVk *vk;
    int f16;        /* storage precision of weights and activations */
    uint32_t elem;  /* bytes per element: 4 or 2 */
    EgArena arena;  /* the dummy buffer */
    EgBuffer dummy; /* bound where an optional input is absent */
    EgPipeline rope, embed, patchify, vit_embed, rows_combine;
    /* [0]: 8-element loads where the device takes them (CPUs), else single ones; [1]: where [0]
     * has 8-element loads, single ones for dispatches whose rows are off a multiple of 8 */
    EgPipeline norm[2], attention[2];
    uint32_t norm_rows;       /* rows per norm workgroup */
    uint32_t attn_queries;    /* queries per attention workgroup */
    EgPipeline attention_one[2]; /* one query per workgroup (fewer than attn_queries); as [] */
    EgPipeline matvec[EG_MATVEC_VARIANTS]; /* for 1, 2, 4, 8 rows of x */
    uint32_t matvec_rows_wg;               /* rows of W per matvec workgroup */
    EgPipeline matmul[2];                  /* [0] few rows of x, [1] many */
    EgTile matmul_tile[2];
    /* CPU devices: matmul_direct.comp (no shared memory, no barriers) instead of the tiles:
     * md_wg invocations of md_tm rows of x by md_tn rows of W each */
    int mm_direct;
    EgPipeline matmul_direct;
    uint32_t md_wg, md_tm, md_tn;
    /* and for 1, 2, 4, 8 rows of x (decode) times weights of at most md_few_max_weights
     * elements, where it beats the matrix-vector kernel (0: never) */
    EgPipeline matmul_direct_few[EG_MATVEC_VARIANTS];
    uint64_t md_few_max_weights;
    /* the same with the SwiGLU fused (EgLinear.swiglu; where eg_ops_fuses_swiglu) */
    EgPipeline matmul_direct_swiglu, matmul_direct_few_swiglu[EG_MATVEC_VARIANTS];
    /* matmul_direct and matmul_direct_few have no activation compiled in; these take it from
     * the flags (EgLinear.act; see MM_ACT in shaders/matmul_epilogue.glsl) */
    EgPipeline matmul_direct_act, matmul_direct_few_act[EG_MATVEC_VARIANTS];
    /* EGRET_OPS_NAIVE=1 at init: the original simple kernels (a workgroup per 4 columns reducing
     * in shared memory; 64x64 tiles of scalar loads), kept to measure the fast ones against
     * (bench/ops_bench.c). */
    int naive;
    EgPipeline matmul_naive, matvec_naive;
    /* attention.comp's specialization constants (EG_ATTN_SPEC of them) for one query per
     * workgroup, and whether the subgroup variant is in use: batched decode attention
     * (runtime/ops_batch.c) follows them */
    uint32_t attention_one_spec[EG_ATTN_SPEC];
    int attention_batch_ok;
    /* Quantized weights (EgMatrix.format; shaders/linear_quant.glsl): [format - 1][v] for 1,
     * 2, 4, 8 rows of x, [format - 1][EG_MATVEC_VARIANTS] for more, q_tm at a time; q_wg
     * invocations of q_tn rows of W each */
    EgPipeline matmul_q[2][EG_MATVEC_VARIANTS + 1];
    uint32_t q_wg, q_tm, q_tn;
    /* Integer dot products for them (where eg_int_dot_choose says; docs/quantization.md
     * "Integer dot products"): x's rows quantized to int8 blocks into int_dot_x
     * (quantize_act.comp), then matmul_q_idot[format - 1][v] (v as matmul_q's), in passes of as
     * many rows as int_dot_x (int_dot_x_bytes) holds: eg_int_dot_pass_rows. Every product
     * recorded with these ops shares int_dot_x: the recorder's barriers order them within a
     * command buffer, and one command buffer with these ops is recorded and run at a time (as
     * the engine does). */
    int int_dot;
    EgPipeline quantize_act, matmul_q_idot[2][EG_MATVEC_VARIANTS + 1];
    EgBuffer int_dot_x;
    uint64_t int_dot_x_bytes;
    /* shaders/attention_flash.comp (K/V tiles in shared memory, shared by flash_queries
     * queries) for dispatches of heads up to flash_max_dim: 0 never, 1 those of at least
     * EG_FLASH_MIN_QUERIES queries, 2 every one (tests, EGRET_ATTN_FLASH=1) */
    int attn_flash;
    EgPipeline attention_flash;
    uint32_t flash_queries, flash_max_dim;
    /* fp16 products of more than EG_MATVEC_MAX_ROWS rows on tensor cores
     * (shaders/coopmat/matmul_coopmat.glsl, where vk->coopmat has a shape and the shader was
     * built), in blocks of coopmat_bm × coopmat_bn outputs */
    int coopmat;
    EgPipeline matmul_coopmat;
    uint32_t coopmat_bm, coopmat_bn;
} EgOps;

/* The fewest queries a dispatch needs for attention_flash.comp by default: decode's one query
 * per sequence gains nothing from shared key tiles. */
#define EG_FLASH_MIN_QUERIES 8

/* Builds the pipelines, with kernel parameters chosen from the device's properties. With
 * EGRET_OPS_NAIVE=1 in the environment the linear op uses the original simple kernels. */
int eg_ops_init(EgOps *ops, EgVk *vk, int f16, EgError *err);

/* Overrides of the automatic choices, for tests (to run every variant on one device) and
 * benchmarks; zero fields keep the automatic value. */
typedef struct EgOpsConfig {
    int naive;         /* 1: the original simple kernels; -1: not even with EGRET_OPS_NAIVE */
    int no_subgroup;   /* 1: matvec, norm and attention reduce in shared memory despite subgroup
                          arithmetic (norm_shared.comp, attention_shared.comp) */
    uint32_t mv_wg;    /* matvec invocations per workgroup (a multiple of the group size) */
    uint32_t mv_rpg;   /* matvec rows of W per group */
    uint32_t mv_lanes; /* shared-memory matvec: invocations per group (a power of two) */
    int mv_load64;     /* matvec 64-bit loads (shaderInt64): 1 every variant, -1 none, 0 auto */
    EgTile mm_small, mm_large; /* matmul tiles (all five fields, or zero) */
    int mm_direct; /* many rows of x: 1 matmul_direct.comp, -1 the tiled matmul, 0 auto (CPUs:
                      direct) */
    uint32_t md_wg, md_tm, md_tn; /* matmul_direct: invocations, rows of x and of W each */
    int md_few; /* few rows of x by matmul_direct: 1 any weights, -1 never, 0 auto (CPUs: small
                   weights) */
    int md_texel;              /* matmul_direct and the quantized kernels read x and W through
                                  texel views: 1 yes (needs vk->texel_views), -1 no, 0 auto (where
                                  the buffers have them) */
    uint32_t norm_wg;          /* norm invocations per workgroup */
    uint32_t norm_rows;        /* norm rows per workgroup (> 1: one subgroup per row) */
    int norm_wide; /* norm: 1 8 elements per load where aligned, -1 not, 0 auto (CPUs) */
    uint32_t attn_wg;          /* subgroup attention: invocations per workgroup (= key tile) */
    uint32_t attn_queries;     /* subgroup attention: queries per workgroup */
    uint32_t attn_dims;        /* subgroup attention: dimensions per invocation and pass */
    int attn_wide;             /* subgroup attention: 1 8-element loads, -1 not, 0 automatic */
    int attn_texel;            /* subgroup attention reads q, k, v through texel views: 1 yes (needs
                                  vk->texel_views), -1 no, 0 auto (where the buffers have them) */
    /* flash attention (attention_flash.comp): 1 every dispatch it can take, -1 none, 0 auto
     * (EGRET_ATTN_FLASH=1 every dispatch, =0 none; unset: GPUs, dispatches of at least
     * EG_FLASH_MIN_QUERIES queries); its invocations per workgroup, per query (a power of two
     * within a subgroup), dimensions per invocation and keys per tile */
    int attn_flash;
    uint32_t flash_wg, flash_lanes, flash_dims, flash_keys;
    /* cooperative-matrix matmul (fp16 only): 1 required (init fails naming why where it cannot
     * run), -1 never, 0 where available */
    int coopmat;
    /* the quantized kernels built: 0 every format's; -1 none (a model whose projections are
     * dense); EG_WEIGHTS_Q8 or EG_WEIGHTS_Q4 that format's alone. A model builds only what its
     * weights can reach: each kernel is a pipeline the driver compiles at every start. */
    int quant_kernels;
    /* int-dot kernels for quantized products (eg_int_dot_choose): 1 required (init fails where
     * the device lacks the feature), -1 never, 0 automatic (EGRET_INT_DOT=1 on, else off
     * until measured on a GPU) */
    int int_dot;
    uint64_t int_dot_x_bytes; /* int-dot: bytes of quantized x rows (0: EG_INT_DOT_X_BYTES) */
} EgOpsConfig;
int eg_ops_init_config(EgOps *ops, EgVk *vk, int f16, const EgOpsConfig *cfg, EgError *err);
/* EgOpsConfig.quant_kernels for a model whose projections are all in `projections` */
static inline int eg_ops_quant_kernels_for(EgWeightFormat projections) {
    return projections == EG_WEIGHTS_DENSE ? -1 : (int)projections;
}
void eg_ops_destroy(EgOps *ops);

/* Bytes of x's quantized rows the int-dot kernels hold at once (EgOps.int_dot_x): 819 rows of
 * 4096 elements; more rows run in passes. */
#define EG_INT_DOT_X_BYTES (4u << 20)
/* 16-byte vectors of one row of K elements in EgOps.int_dot_x (shaders/act_quant_layout.glsl:
 * groups of 2 blocks of 32, a header vector and 4 of int8 values). */
static inline uint32_t eg_int_dot_row_vecs(uint32_t K) {
    return (K + 63) / 64 * 5;
}

/* A weight matrix [rows][cols] (PyTorch Linear layout: out × in), split by rows into chunks
 * that each fit in one storage-buffer binding (maxStorageBufferRange). Its rows are in the
 * ops' storage precision (EG_WEIGHTS_DENSE, the zero value) or quantized (runtime/quant.h). */
typedef struct EgMatrix {
    uint32_t rows, cols;
    EgWeightFormat format;
    uint32_t chunk_rows; /* rows per chunk (the last may have fewer) */
    uint32_t n_chunks;
    EgBuffer *chunks;
} EgMatrix;

/* Rows held by chunk c. */
static inline uint32_t eg_matrix_chunk_len(const EgMatrix *m, uint32_t c) {
    uint32_t left = m->rows - c * m->chunk_rows;
    return left < m->chunk_rows ? left : m->chunk_rows;
}

/* Rows per chunk for a matrix of `cols` columns on this device, dense or in a format. */
uint32_t eg_matrix_chunk_rows(const EgOps *ops, uint32_t cols);
uint32_t eg_matrix_chunk_rows_format(const EgOps *ops, uint32_t cols, EgWeightFormat format);
/* Bytes of one row of `cols` weights, dense or in a format. */
uint64_t eg_matrix_row_bytes(const EgOps *ops, uint32_t cols, EgWeightFormat format);

/* y[m, n] = epilogue(sum_k x[m, k] · w[n, k]) for m < rows, n < w->rows; see
 * shaders/matmul_epilogue.glsl. */
typedef struct EgLinear {
    const EgBuffer *x;
    uint32_t x_off, ldx; /* ldx 0: w->cols */
    const EgMatrix *w;
    const EgBuffer *bias;  /* [w->rows] or NULL */
    const EgBuffer *alpha; /* gate for accum: tanh(alpha[0]) or tanh(alpha[n]); or NULL */
    int alpha_vector;
    const EgBuffer *y;
    uint32_t y_off, ldy; /* ldy 0: w->rows */
    uint32_t rows;
    EgOpAct act;
    int mul;   /* y = y · v (SwiGLU's up projection times the activated gate) */
    int accum; /* y = y + g · v (residual add) */
    /* x's rows RMS-normalized first (IDEFICS' RMSNorm with this weight and epsilon), within the
     * product: only where eg_linear_fuses_rms says the kernel can */
    const EgBuffer *rms_weight;
    float rms_eps;
    /* w is [gate; up] (2N rows) and y[m, n] = silu(x·gate[n]) · (x·up[n]) for n < N: IDEFICS'
     * SwiGLU in one product, only where eg_ops_fuses_swiglu says so (no bias, activation, mul or
     * accum with it) */
    int swiglu;
} EgLinear;
void eg_op_linear(EgCmd *cmd, const EgOps *ops, const EgLinear *a);
/* Whether the kernel for this product (its rows and w) can fold an RMSNorm of x into it
 * (rms_weight): matmul_direct's, on CPU devices; elsewhere the norm is its own op. */
int eg_linear_fuses_rms(const EgOps *ops, const EgLinear *a);
/* Whether this product (its rows and w) runs the int-dot kernels (EgOps.int_dot): x's rows are
 * then quantized to int8 into EgOps.int_dot_x first, eg_int_dot_pass_rows at a time; the last
 * pass's stay there until the next such product (the tests read them back). */
int eg_linear_int_dot(const EgOps *ops, const EgLinear *a);
/* Rows of k elements per int-dot pass (0: a row does not fit EgOps.int_dot_x). */
uint32_t eg_int_dot_pass_rows(const EgOps *ops, uint32_t k);
/* Whether products of [gate; up] (2n rows of k) can fuse the SwiGLU (EgLinear.swiglu) for any
 * number of rows of x: matmul_direct's kernels, on CPU devices, for small enough weights. */
int eg_ops_fuses_swiglu(const EgOps *ops, uint32_t n, uint32_t k);

/* LayerNorm (weight and bias) or RMSNorm (weight only) over rows of `dim`, for `batches`
 * groups of `rows` rows. Strides 0 default to dim (rows) and rows·stride (batches). */
typedef struct EgNorm {
    const EgBuffer *x;
    uint32_t x_off, x_stride, x_batch;
    const EgBuffer *weight, *bias; /* bias NULL for RMSNorm */
    const EgBuffer *y;
    uint32_t y_off, y_stride, y_batch;
    uint32_t rows, batches, dim;
    float eps;
    int rms;
} EgNorm;
void eg_op_norm(EgCmd *cmd, const EgOps *ops, const EgNorm *a);

/* Attention per (query, head, batch); see shaders/attention.glsl. Strides 0 default to
 * heads·head_dim for q and o, kv_heads·head_dim for k and v. */
typedef enum EgAttnMode {
    EG_ATTN_FULL = 0,
    EG_ATTN_CAUSAL = 1,
    EG_ATTN_RANGES = 2,
    EG_ATTN_BLOCK_MASK = 3
} EgAttnMode;
typedef struct EgAttention {
    const EgBuffer *q, *k, *v, *o;
    uint32_t q_off, q_stride, q_batch;
    uint32_t k_off, k_stride, k_batch;
    uint32_t v_off, v_stride, v_batch;
    uint32_t o_off, o_stride, o_batch;
    uint32_t n_queries, n_keys, heads, head_dim, batches;
    /* grouped-query attention: key/value heads (0: heads), heads a multiple of it; query head h
     * reads key/value head h / (heads / kv_heads) */
    uint32_t kv_heads;
    EgAttnMode mode;
    uint32_t q_pos0; /* causal: absolute position of query 0; block mask: query 0's mask row */
    /* ranges mode: uint32 [n_queries][2] = lo, hi. Block-mask mode: uint32 rows of mask_words,
     * query i's at row q_pos0 + i, bit b%32 of word b/32 set where it sees keys
     * [b·mask_block, (b+1)·mask_block) */
    const EgBuffer *ranges;
    uint32_t mask_block, mask_words;
    float scale;
} EgAttention;
void eg_op_attention(EgCmd *cmd, const EgOps *ops, const EgAttention *a);
/* What eg_op_attention declares for the profile (eg_cmd_work): floating-point operations
 * (4·head_dim per query, head and key seen) and bytes (q and o once, the keys and values the last
 * query sees once per key/value head). Ranges and block masks count every key. */
uint64_t eg_attention_flops(const EgAttention *a);
uint64_t eg_attention_bytes(const EgOps *ops, const EgAttention *a);

/* In-place RoPE on rows [heads][head_dim] at positions pos0 + row; table from eg_rope_table. */
typedef struct EgRope {
    const EgBuffer *x;
    uint32_t x_off, stride, rows, heads, head_dim, pos0;
    const EgBuffer *table;
    uint32_t table_positions; /* rows of the table */
} EgRope;
void eg_op_rope(EgCmd *cmd, const EgOps *ops, const EgRope *a);

/* Host-side RoPE table: cos then sin, each [positions][head_dim/2], computed as the reference
 * does in float32 (inv_freq = 1/theta^(2j/hd), angle = pos·inv_freq rounded to float). */
void eg_rope_table(float *out, uint32_t positions, uint32_t head_dim, float theta);

/* RoPE frequency scaling, HF rope_type "llama3" (Llama 3.1 and later): frequencies whose
 * wavelength exceeds original_max_position_embeddings / low_freq_factor are divided by factor,
 * those below original / high_freq_factor kept, the band between interpolated. */
typedef struct EgRopeLlama3 {
    float factor, low_freq_factor, high_freq_factor, original_max_position_embeddings;
} EgRopeLlama3;

/* The head_dim/2 inverse frequencies 1/theta^(2j/hd), then (llama3 non-NULL) scaled, each step
 * a float32 operation in the order of HF's _compute_llama3_parameters, so the table matches
 * HF's bit for bit where the libm agrees. */
void eg_rope_inv_freq(float *inv_freq, uint32_t head_dim, float theta, const EgRopeLlama3 *llama3);

/* eg_rope_table from given inverse frequencies (eg_rope_inv_freq). */
void eg_rope_table_freqs(float *out, uint32_t positions, uint32_t head_dim, const float *inv_freq);

/* out[t] = table row ids[t] − row0 for ids within [row0, row0 + n_rows). */
typedef struct EgEmbed {
    const EgBuffer *ids; /* uint32 [tokens] */
    const EgBuffer *table;
    uint32_t row0, n_rows;
    const EgBuffer *out;
    uint32_t out_off, tokens, dim;
} EgEmbed;
void eg_op_embed(EgCmd *cmd, const EgOps *ops, const EgEmbed *a);

/* [images][C][S][S] → [images][Np][C·p·p]. */
void eg_op_patchify(EgCmd *cmd, const EgOps *ops, const EgBuffer *pixels, const EgBuffer *patches,
                    uint32_t images, uint32_t channels, uint32_t size, uint32_t patch_size);
/* [images][Np][E] patch embeddings → [images][Np+1][E] with class and position embeddings. */
void eg_op_vit_embed(EgCmd *cmd, const EgOps *ops, const EgBuffer *patches, const EgBuffer *cls,
                     const EgBuffer *pos, const EgBuffer *out, uint32_t images, uint32_t n_patches,
                     uint32_t dim);

/* Rows gathered from up to four sources, scaled and summed (shaders/rows_combine.comp):
 * out[o_off + r·o_row + e·o_elem] = (accum ? itself : 0) + Σ_s coef·src[off + idx[r][s]·row + e]
 * for r < rows, e < dim. idx is uint32 [rows][4]; EG_ROWS_NONE leaves a source out (a source
 * with src NULL must have it in every row). o_row 0 defaults to dim, o_elem 0 to 1. */
#define EG_ROWS_NONE 0xFFFFFFFFu
typedef struct EgRowsSource {
    const EgBuffer *src;
    uint32_t off, row; /* row 0: dim */
    float coef;
} EgRowsSource;
typedef struct EgRowsCombine {
    const EgBuffer *out;
    uint32_t o_off, o_row, o_elem;
    int accum;
    uint32_t rows, dim;
    const EgBuffer *idx;
    EgRowsSource s[4];
} EgRowsCombine;
void eg_op_rows_combine(EgCmd *cmd, const EgOps *ops, const EgRowsCombine *a);

#endif
