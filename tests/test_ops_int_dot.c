/* The int-dot path of quantized products (EgOps.int_dot: shaders/quantize_act.comp and
 * linear_quant_idot.glsl; docs/quantization.md "Integer dot products"), forced on as
 * EGRET_INT_DOT=1 does (lavapipe supports the dot product but does not report it accelerated),
 * in both storage precisions, on fresh random data each run (EGRET_TEST_SEED replays it).
 *
 * Per product, outputs poisoned first, sizes not multiples of the blocks (32), the quantized
 * kernels' rows per workgroup or the activation groups (64):
 *  - the quantized activations, read back from EgOps.int_dot_x: each block's scale is max|x| /
 *    127, every value within half a step (plus rounding) of x / scale, the stored sum theirs,
 *    everything past K zero, in the order the weights' format reads;
 *  - the product against a double reference from the dequantized weights and exactly those
 *    quantized activations: the integer dot products are exact, so the tolerance is the dense
 *    kernels' (relative L2 1e-5 fp32, 2e-3 fp16, i.e. float accumulation and output rounding);
 *  - the product against the unquantized activations, within the bound the activation rounding
 *    allows: sum over blocks of (scale / 2) · sum |w| (plus the float rounding above).
 * Products of more rows than the activation buffer holds run in passes: with a buffer of a few
 * rows, the same bits as in one. And the policy: the kernels are chosen only where asked for
 * (off by default until measured on a GPU), only for rows that fit the buffer, and a device without the feature refuses them
 * when required. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/device_tensor.h"
#include "runtime/half.h"
#include "runtime/ops.h"
#include "test_util.h"

#define POISON 0x7fc07fc0u

static EgVk g_vk;
static EgOps *g_ops;
static EgStaging g_st;
static EgArena g_arena;
static double g_worst_exact[2], g_worst_bound[2]; /* per precision: worst error / allowed */

static void must(int rc, const EgError *err, const char *what) {
    if (rc == 0) return;
    fprintf(stderr, "%s failed: %s\n", what, err->msg);
    test_checks_failed++;
    exit(test_finish());
}

static const char *prec(void) {
    return g_ops->f16 ? "fp16" : "fp32";
}

static float rnd(float v) {
    return g_ops->f16 ? eg_f16_to_f32(eg_f32_to_f16(v)) : v;
}

static double act_ref(double v, EgOpAct a) {
    switch (a) {
    case EG_OP_ACT_SILU:
        return v / (1.0 + exp(-v));
    case EG_OP_ACT_GELU:
        return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    default:
        return v;
    }
}

typedef struct Case {
    EgWeightFormat quant;
    uint32_t M, N, K;
    int bias, accum; /* accum: y = y0 + v (the residual add) */
    EgOpAct act;
    uint32_t x_off, x_pad; /* x rows start at x_off, ldx = K + x_pad */
    uint32_t y_off, y_pad;
    uint32_t chunk_rows; /* 0: one chunk */
    /* also run with g_small_ops (int_dot_x of a few rows: several passes), which must give the
     * same bits */
    int passes;
} Case;

static EgOps g_small_ops[2]; /* per precision: int_dot_x of SMALL_X_BYTES */
#define SMALL_X_BYTES 16384

/* Byte i of the 32 int8 values of a block, as the quantizer stored them, for element e (0..31)
 * of the block: order 0 natural, 1 q4's (act_quant_layout.glsl). */
static int block_value(const uint32_t *words, int order, uint32_t e) {
    uint32_t run = e / 8, r = e % 8;
    uint32_t word = order ? 2 * run + r % 2 : e / 4, byte = order ? r / 2 : e % 4;
    return (int8_t)(words[word] >> (8 * byte) & 255u);
}

/* One eg_op_linear on ops into a poisoned y (or y0 with accum), with the activation buffer
 * poisoned too; returns y's whole buffer. */
static float *run_linear(const EgOps *ops, const EgLinear *a, const float *y0, size_t ny) {
    EgError err = {0};
    if (a->accum) must(eg_upload_f32(ops, &g_st, a->y, 0, y0, ny, &err), &err, "eg_upload_f32");
    EgCmd cmd;
    must(eg_cmd_begin(&g_vk, &cmd, &err), &err, "eg_cmd_begin");
    if (!a->accum) eg_cmd_fill(&cmd, a->y, POISON);
    eg_cmd_fill(&cmd, &ops->int_dot_x, POISON);
    eg_op_linear(&cmd, ops, a);
    must(eg_cmd_submit_wait(&cmd, &err), &err, "eg_cmd_submit_wait");
    float *got = malloc(ny * sizeof *got);
    must(eg_download_f32(ops, &g_st, a->y, 0, got, ny, &err), &err, "eg_download_f32");
    return got;
}

static void run_case(const Case *c) {
    EgError err = {0};
    uint32_t M = c->M, N = c->N, K = c->K;
    size_t ldx = K + c->x_pad, ldy = N + c->y_pad;
    size_t nx = c->x_off + M * ldx + 3, ny = c->y_off + M * ldy + 5;
    float *x = malloc(nx * sizeof *x), *w = malloc((size_t)N * K * sizeof *w);
    float *bias = malloc(N * sizeof *bias), *y0 = malloc(ny * sizeof *y0);
    for (size_t i = 0; i < nx; i++) /* a few outliers: blocks of very different scales */
        x[i] = rnd(test_rng_normal() * (test_rng_u64() % 16 == 0 ? 8.0f : 1.0f));
    for (size_t i = 0; i < (size_t)N * K; i++)
        w[i] = test_rng_normal() * 2.0f / sqrtf((float)K);
    for (uint32_t n = 0; n < N; n++)
        bias[n] = rnd(0.5f * test_rng_normal());
    for (size_t i = 0; i < ny; i++)
        y0[i] = rnd(test_rng_normal());
    size_t words = eg_quant_row_words(c->quant, K);
    uint32_t *q = malloc((size_t)N * words * 4);
    float *wq = malloc((size_t)N * K * sizeof *wq);
    must(eg_quantize_rows(c->quant, w, N, K, q, &err), &err, "eg_quantize_rows");
    for (uint32_t n = 0; n < N; n++)
        eg_dequantize_row(c->quant, q + n * words, K, wq + (size_t)n * K);

    EgBuffer bx, bb, by;
    must(eg_tensor_buffer(g_ops, &g_arena, nx, &bx, &err) ||
             eg_tensor_buffer(g_ops, &g_arena, N, &bb, &err) ||
             eg_tensor_buffer(g_ops, &g_arena, ny, &by, &err),
         &err, "eg_tensor_buffer");
    must(eg_upload_f32(g_ops, &g_st, &bx, 0, x, nx, &err) ||
             eg_upload_f32(g_ops, &g_st, &bb, 0, bias, N, &err),
         &err, "eg_upload_f32");
    EgMatrix wm;
    must(eg_matrix_create_format(g_ops, &g_arena, N, K, c->chunk_rows, c->quant, &wm, &err), &err,
         "eg_matrix_create_format");
    must(eg_matrix_upload_f32(g_ops, &g_st, &wm, w, &err), &err, "eg_matrix_upload_f32");
    EgLinear a = {.x = &bx,
                  .x_off = c->x_off,
                  .ldx = c->x_pad ? (uint32_t)ldx : 0,
                  .w = &wm,
                  .bias = c->bias ? &bb : NULL,
                  .y = &by,
                  .y_off = c->y_off,
                  .ldy = c->y_pad ? (uint32_t)ldy : 0,
                  .rows = M,
                  .act = c->act,
                  .accum = c->accum};
    char name[200];
    snprintf(name, sizeof name, "%s M=%u N=%u K=%u%s%s%s x+%u/%zu y+%u/%zu%s",
             c->quant == EG_WEIGHTS_Q8 ? "q8" : "q4", M, N, K, c->bias ? " bias" : "",
             c->act ? " act" : "", c->accum ? " accum" : "", c->x_off, ldx, c->y_off, ldy,
             c->chunk_rows ? " chunked" : "");
    CHECK(eg_linear_int_dot(g_ops, &a), "%s [%s]: not on the int-dot kernels", name, prec());
    float *got = run_linear(g_ops, &a, y0, ny);
    uint32_t row_words = 4 * eg_int_dot_row_vecs(K);
    uint32_t *xq = malloc((size_t)M * row_words * 4);
    must(eg_download(&g_st, &g_ops->int_dot_x, 0, xq, (size_t)M * row_words * 4, &err), &err,
         "eg_download");

    /* The quantized activations. */
    int order = c->quant == EG_WEIGHTS_Q4;
    uint32_t blocks = (K + 31) / 32, blocks2 = (K + 63) / 64 * 2;
    size_t bad_scale = 0, bad_value = 0, bad_sum = 0, bad_pad = 0;
    double *xdq = calloc((size_t)M * blocks * 32, sizeof *xdq); /* d · q per element */
    double *half_step = calloc((size_t)M * blocks, sizeof *half_step);
    for (uint32_t m = 0; m < M; m++) {
        const float *xr = x + c->x_off + m * ldx;
        for (uint32_t b = 0; b < blocks2; b++) {
            const uint32_t *grp = xq + (size_t)m * row_words + b / 2 * 20;
            const uint32_t *vals = grp + 4 + (b % 2) * 8;
            float d;
            memcpy(&d, &grp[2 * (b % 2)], sizeof d);
            int32_t sum = (int32_t)grp[2 * (b % 2) + 1];
            float amax = 0;
            for (uint32_t i = 0; i < 32 && 32 * b + i < K; i++)
                amax = fmaxf(amax, fabsf(xr[32 * b + i]));
            if (!(fabs((double)d - amax / 127.0) <= 1e-6 * amax / 127.0)) bad_scale++;
            int32_t s = 0;
            for (uint32_t i = 0; i < 32; i++) {
                int v = block_value(vals, order, i);
                s += v;
                uint32_t k = 32 * b + i;
                if (k >= K) {
                    bad_pad += v != 0;
                    continue;
                }
                /* round(x / d) up to the rounding of 1 / d and of the product */
                double want = d > 0 ? xr[k] / (double)d : 0.0;
                if (!(fabs(v - want) <= 0.5 + 1e-4) || v < -127 || v > 127) bad_value++;
                xdq[((size_t)m * blocks + b) * 32 + i] = (double)d * v;
            }
            if (b < blocks) half_step[(size_t)m * blocks + b] = 0.5 * d;
            if (sum != s) bad_sum++;
        }
    }
    CHECK(bad_scale == 0, "%s [%s]: %zu block scales are not max|x| / 127", name, prec(),
          bad_scale);
    CHECK(bad_value == 0, "%s [%s]: %zu int8 values are not round(x / scale)", name, prec(),
          bad_value);
    CHECK(bad_sum == 0, "%s [%s]: %zu block sums wrong", name, prec(), bad_sum);
    CHECK(bad_pad == 0, "%s [%s]: %zu values past K are not 0", name, prec(), bad_pad);

    /* The product: exact against the quantized activations, bounded against the original. */
    double tol = g_ops->f16 ? 2e-3 : 1e-5;
    double e2 = 0, r2 = 0, worst_ratio = 0;
    size_t nonfinite = 0, over_bound = 0, clobbered = 0;
    unsigned char *written = calloc(ny, 1);
    for (uint32_t m = 0; m < M; m++) {
        const float *xr = x + c->x_off + m * ldx;
        for (uint32_t n = 0; n < N; n++) {
            const float *wr = wq + (size_t)n * K;
            double v = 0, u = 0, bound = 0;
            for (uint32_t k = 0; k < K; k++) {
                v += xdq[((size_t)m * blocks) * 32 + k] * wr[k];
                u += (double)xr[k] * wr[k];
                /* |d·q − x| <= d/2 plus the rounding of 1/d and of x·(1/d) */
                bound +=
                    (half_step[(size_t)m * blocks + k / 32] + 1e-6 * fabs(xr[k])) * fabs(wr[k]);
            }
            if (c->bias) v += bias[n], u += bias[n];
            size_t yi = c->y_off + m * ldy + n;
            v = act_ref(v, c->act), u = act_ref(u, c->act);
            if (c->accum) v += y0[yi], u += y0[yi];
            written[yi] = 1;
            if (!isfinite(got[yi])) {
                nonfinite++;
                continue;
            }
            double d = got[yi] - v;
            e2 += d * d;
            r2 += v * v;
            /* SiLU and GELU have slopes below 1.1: the bound carries through them */
            double allowed = 1.1 * bound + tol * (fabs(u) + 0.1);
            double ratio = fabs(got[yi] - u) / allowed;
            if (ratio > 1) over_bound++;
            if (ratio > worst_ratio) worst_ratio = ratio;
        }
    }
    for (size_t i = 0; i < ny; i++)
        if (!written[i]) {
            float before = c->accum ? y0[i] : NAN;
            if (isnan(before) ? !isnan(got[i]) : memcmp(&before, &got[i], 4) != 0) clobbered++;
        }
    if (r2 < 0.01 * M * N) r2 = 0.01 * M * N;
    double rel = sqrt(e2 / r2);
    int p = g_ops->f16;
    if (rel > g_worst_exact[p]) g_worst_exact[p] = rel;
    if (worst_ratio > g_worst_bound[p]) g_worst_bound[p] = worst_ratio;
    printf("  [%s] %-52s exact rel %.2e  vs fp x: %.2f of the bound\n", prec(), name, rel,
           worst_ratio);
    CHECK(nonfinite == 0, "%s [%s]: %zu outputs not finite (unwritten?)", name, prec(), nonfinite);
    CHECK(rel <= tol, "%s [%s]: relative error %.3e > %.0e against the quantized activations", name,
          prec(), rel, tol);
    CHECK(over_bound == 0,
          "%s [%s]: %zu outputs beyond the activation-rounding bound (worst %.2fx)", name, prec(),
          over_bound, worst_ratio);
    CHECK(clobbered == 0, "%s [%s]: %zu elements outside the output changed", name, prec(),
          clobbered);
    if (c->passes) {
        EgOps *small = &g_small_ops[g_ops->f16];
        uint32_t pass = eg_int_dot_pass_rows(small, K);
        CHECK(pass > 0 && pass < M, "%s: %u rows per pass of the small buffer", name, pass);
        float *got2 = run_linear(small, &a, y0, ny);
        size_t diff = 0;
        for (size_t i = 0; i < ny; i++)
            diff += memcmp(&got[i], &got2[i], sizeof got[i]) != 0;
        CHECK(diff == 0, "%s [%s]: %zu elements differ between passes of %u rows and one", name,
              prec(), diff, pass);
        free(got2);
    }
    eg_matrix_release(&wm);
    eg_arena_reset(&g_arena);
    free(x), free(w), free(bias), free(y0), free(q), free(wq), free(got), free(xq), free(xdq),
        free(half_step), free(written);
}

static void test_cases(void) {
    static const uint32_t Ms[] = {1, 2, 3, 5, 8}, Ns[] = {7, 70, 129},
                          Ks[] = {7, 32, 39, 64, 71, 295, 300};
    int i = 0;
    for (EgWeightFormat f = EG_WEIGHTS_Q8; f <= EG_WEIGHTS_Q4; f++) {
        for (size_t a = 0; a < sizeof Ms / sizeof Ms[0]; a++)
            for (size_t k = 0; k < sizeof Ks / sizeof Ks[0]; k++, i++)
                run_case(&(Case){.quant = f,
                                 .M = Ms[a],
                                 .N = Ns[i % 3],
                                 .K = Ks[k],
                                 .bias = i % 2,
                                 .x_off = i % 4 == 3 ? 5 : 0,
                                 .x_pad = i % 4 == 3 ? 3 : 0});
        /* the epilogue, strided y and chunks of 13 rows of W */
        run_case(&(Case){.quant = f, .M = 3, .N = 70, .K = 103, .act = EG_OP_ACT_SILU, .bias = 1});
        run_case(&(Case){.quant = f, .M = 5, .N = 70, .K = 103, .act = EG_OP_ACT_GELU});
        run_case(&(Case){.quant = f,
                         .M = 2,
                         .N = 70,
                         .K = 167,
                         .accum = 1,
                         .bias = 1,
                         .y_off = 6,
                         .y_pad = 13,
                         .chunk_rows = 13});
        /* matrix-matrix: rows of x past the decode variants, 8 per workgroup row and not a
         * multiple of it; in several passes (the small buffer) giving the same bits */
        run_case(&(Case){.quant = f, .M = 9, .N = 129, .K = 71, .bias = 1});
        run_case(&(Case){.quant = f, .M = 37, .N = 70, .K = 295, .x_off = 5, .x_pad = 3});
        run_case(&(Case){.quant = f,
                         .M = 130,
                         .N = 33,
                         .K = 300,
                         .accum = 1,
                         .act = EG_OP_ACT_SILU,
                         .y_off = 2,
                         .y_pad = 3,
                         .chunk_rows = 13,
                         .passes = 1});
        run_case(&(Case){.quant = f, .M = 5, .N = 40, .K = 3000, .bias = 1, .passes = 1});
        /* a model's width (IDEFICS-9B's 4096 plus a partial block) */
        run_case(&(Case){.quant = f, .M = 1, .N = 37, .K = 4103, .bias = 1});
    }
}

/* The choice: any number of rows; rows longer than the activation buffer and dense weights stay
 * on the float kernels; ops with the kernels off never take them. */
static void test_choice(EgOps *on, EgOps *off) {
    EgMatrix q8 = {.rows = 64, .cols = 300, .format = EG_WEIGHTS_Q8};
    EgMatrix q4 = {.rows = 64, .cols = 300, .format = EG_WEIGHTS_Q4};
    EgMatrix dense = {.rows = 64, .cols = 300};
    /* a row larger than the whole buffer */
    EgMatrix wide = {.rows = 4, .cols = EG_INT_DOT_X_BYTES / 80 * 64 + 64, .format = EG_WEIGHTS_Q4};
    CHECK(eg_linear_int_dot(on, &(EgLinear){.w = &q8, .rows = 1}), "q8, 1 row: int-dot");
    CHECK(eg_linear_int_dot(on, &(EgLinear){.w = &q4, .rows = EG_MATVEC_MAX_ROWS}),
          "q4, %d rows: int-dot", EG_MATVEC_MAX_ROWS);
    CHECK(eg_linear_int_dot(on, &(EgLinear){.w = &q4, .rows = 1000}), "q4, 1000 rows: int-dot");
    CHECK(!eg_linear_int_dot(on, &(EgLinear){.w = &dense, .rows = 1}), "dense: not int-dot");
    CHECK(eg_int_dot_pass_rows(on, wide.cols - 64) == 1 && eg_int_dot_pass_rows(on, wide.cols) == 0,
          "rows per pass at the buffer's size");
    CHECK(!eg_linear_int_dot(on, &(EgLinear){.w = &wide, .rows = 1}), "K > buffer: float kernels");
    CHECK(!eg_linear_int_dot(off, &(EgLinear){.w = &q8, .rows = 1}), "int-dot off: float kernels");
    /* the automatic choice is off until measured on a GPU (EGRET_INT_DOT unset under ctest) */
    if (!getenv("EGRET_INT_DOT"))
        CHECK(eg_int_dot_choose(&g_vk.int_dot, 0) == 0,
              "automatic: int-dot on, on a device where it is %s", g_vk.int_dot.why);
    /* a model builds only its projections' format's kernels (EgOpsConfig.quant_kernels) */
    EgError err = {0};
    EgOps q8_only, dense_only;
    if (eg_ops_init_config(&q8_only, &g_vk, 0,
                           &(EgOpsConfig){.int_dot = 1, .quant_kernels = EG_WEIGHTS_Q8},
                           &err) == 0) {
        CHECK(q8_only.int_dot && q8_only.matmul_q_idot[0][0].pipeline &&
                  !q8_only.matmul_q_idot[1][0].pipeline,
              "a q8 model's ops: q8's int-dot kernels alone");
        eg_ops_destroy(&q8_only);
    } else {
        CHECK(0, "eg_ops_init_config (q8 kernels alone): %s", err.msg);
    }
    if (eg_ops_init_config(&dense_only, &g_vk, 0, &(EgOpsConfig){.int_dot = 1, .quant_kernels = -1},
                           &err) == 0) {
        CHECK(!dense_only.int_dot && !dense_only.int_dot_x.buf && !dense_only.quantize_act.pipeline,
              "a dense model's ops: no int-dot kernels, no activation buffer");
        eg_ops_destroy(&dense_only);
    } else {
        CHECK(0, "eg_ops_init_config (dense): %s", err.msg);
    }
    EgIntDot none = {0};
    CHECK(eg_int_dot_choose(&none, 1) == -1, "required without the feature: refused");
    CHECK(eg_int_dot_choose(&none, 0) == 0, "automatic without the feature: off");
    EgIntDot slow = {.supported = 1}, fast = {.supported = 1, .accelerated = 1};
    CHECK(eg_int_dot_choose(&slow, 1) == 1 && eg_int_dot_choose(&fast, -1) == 0,
          "config overrides the report");
    if (!getenv("EGRET_INT_DOT"))
        CHECK(eg_int_dot_choose(&fast, 0) == 0, "automatic on an accelerated device: off");
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_rng_init();
    clock_t t0 = clock();
    EgError err = {0};
    must(eg_vk_create(&g_vk, NULL, &err), &err, "eg_vk_create");
    printf("device: %s, validation %s, integer dot product: %s\n", g_vk.props.deviceName,
           g_vk.validation ? "on" : "off", g_vk.int_dot.why);
    EgOps ops[2], off;
    if (!g_vk.int_dot.supported) {
        CHECK(eg_ops_init_config(&ops[0], &g_vk, 0, &(EgOpsConfig){.int_dot = 1}, &err) != 0 &&
                  strstr(err.msg, "int-dot"),
              "int-dot required on a device without it: refused naming it (%s)", err.msg);
        printf("the device lacks shaderIntegerDotProduct: only the refusal is tested\n");
        eg_vk_destroy(&g_vk);
        return test_finish();
    }
    for (int p = 0; p < 2; p++)
        must(eg_ops_init_config(&ops[p], &g_vk, p, &(EgOpsConfig){.int_dot = 1}, &err), &err,
             "eg_ops_init_config (int-dot)");
    must(eg_ops_init_config(&off, &g_vk, 0, &(EgOpsConfig){.int_dot = -1}, &err), &err,
         "eg_ops_init_config (int-dot off)");
    for (int p = 0; p < 2; p++)
        must(eg_ops_init_config(&g_small_ops[p], &g_vk, p,
                                &(EgOpsConfig){.int_dot = 1, .int_dot_x_bytes = SMALL_X_BYTES},
                                &err),
             &err, "eg_ops_init_config (int-dot, small buffer)");
    must(eg_staging_init(&g_st, &g_vk, 1u << 20, &err), &err, "eg_staging_init");
    eg_arena_init(&g_arena, &g_vk, EG_MEM_DEVICE, 4u << 20);
    test_choice(&ops[0], &off);
    for (int p = 0; p < 2; p++) {
        g_ops = &ops[p];
        test_cases();
    }
    printf("worst: against the quantized activations rel %.2e (fp32), %.2e (fp16); against fp "
           "activations %.2f, %.2f of the rounding bound\n",
           g_worst_exact[0], g_worst_exact[1], g_worst_bound[0], g_worst_bound[1]);
    eg_arena_reset(&g_arena);
    eg_staging_destroy(&g_st);
    eg_ops_destroy(&off);
    eg_ops_destroy(&g_small_ops[1]);
    eg_ops_destroy(&g_small_ops[0]);
    eg_ops_destroy(&ops[1]);
    eg_ops_destroy(&ops[0]);
    eg_vk_destroy(&g_vk);
    CHECK(eg_vk_validation_message_count() == 0, "%d validation messages",
          eg_vk_validation_message_count());
    printf("cpu time %.1f s\n", (double)(clock() - t0) / CLOCKS_PER_SEC);
    return test_finish();
}
