/* Every op of runtime/ops.h against a plain C reference computed in double precision, in both
 * storage precisions (fp32 and fp16), on fresh random data each run (the seed is printed;
 * EGRET_TEST_SEED replays it).
 *
 * Method: inputs are rounded on the host to the storage precision before the reference sees
 * them, so the reference computes exactly what was uploaded and the remaining error is the
 * shaders' float arithmetic plus output rounding. Outputs are poisoned (0x7fc07fc0, a NaN in
 * float32 and in float16) before each dispatch so an unwritten element fails; where an op writes
 * a strided or offset region of a bigger buffer, every element outside that region must keep
 * its previous value (the poison, or values uploaded before). Errors per output tensor: relative
 * L2 error ||out - ref|| / ||ref|| and max abs error, bounded by 1e-5 (fp32) and 2e-3 (fp16).
 * Sizes are deliberately not multiples of the shaders' tiles (matmul tiles of 16 to 128 rows and
 * columns, matvec workgroups of 8 or 32 rows, attention tiles of 8 to 128 keys and 1 to 4
 * queries, norms of 8 to 128 invocations), and the linear, norm and attention ops are also run
 * with every kernel variant a device may get (shared-memory or subgroup reductions, other tile
 * and workgroup shapes: EgOpsConfig), so one device checks them all. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/device_tensor.h"
#include "runtime/half.h"
#include "runtime/ops.h"
#include "test_util.h"

#define POISON 0x7fc07fc0u

/* ---- Shared state and helpers */

static EgVk g_vk;
static EgOps *g_ops;    /* the precision under test */
static EgStaging g_st;  /* host <-> device copies */
static EgArena g_arena; /* buffers of the current case, freed by case_end */

enum {
    OP_LINEAR,
    OP_NORM,
    OP_ATTENTION,
    OP_ROPE,
    OP_EMBED,
    OP_PATCHIFY,
    OP_VIT_EMBED,
    OP_ROWS_COMBINE,
    N_OPS
};
static const char *const OP_NAMES[N_OPS] = {"linear", "norm",     "attention", "rope",
                                            "embed",  "patchify", "vit_embed", "rows_comb"};
static int g_op;                   /* the op whose errors compare() records */
static const char *g_variant = ""; /* the linear kernels' configuration, in test names */
static struct {
    double rel, abs;
    int tensors;
    char worst[200]; /* the tensor with the largest relative error */
} g_worst[N_OPS][2];

/* Setup failures make the rest meaningless: report and stop. */
static void must(int rc, const EgError *err, const char *what) {
    if (rc == 0) return;
    fprintf(stderr, "%s failed: %s\n", what, err->msg);
    test_checks_failed++;
    exit(test_finish());
}

static double tol(void) {
    return g_ops->f16 ? 2e-3 : 1e-5;
}

static const char *prec(void) {
    return g_ops->f16 ? "fp16" : "fp32";
}

/* A value rounded to the storage precision, as eg_upload_f32 stores it. */
static float rnd(float v) {
    return g_ops->f16 ? eg_f16_to_f32(eg_f32_to_f16(v)) : v;
}

static float *host_normal(size_t n, float scale) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = rnd(scale * test_rng_normal());
    return x;
}

static float *host_uniform(size_t n, float lo, float hi) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = rnd(test_rng_uniform(lo, hi));
    return x;
}

static uint32_t rand_below(uint32_t n) {
    return (uint32_t)(test_rng_u64() % n);
}

/* A device buffer of n elements in the storage precision. */
static EgBuffer dev(size_t n) {
    EgBuffer b;
    EgError err = {0};
    must(eg_tensor_buffer(g_ops, &g_arena, n, &b, &err), &err, "eg_tensor_buffer");
    return b;
}

static EgBuffer dev_bytes(size_t bytes) {
    EgBuffer b;
    EgError err = {0};
    must(eg_buffer_create(&g_arena, bytes, &b, &err), &err, "eg_buffer_create");
    return b;
}

static void put(const EgBuffer *b, size_t off, const float *x, size_t n) {
    EgError err = {0};
    must(eg_upload_f32(g_ops, &g_st, b, off, x, n, &err), &err, "eg_upload_f32");
}

static void put_raw(const EgBuffer *b, const void *src, size_t bytes) {
    EgError err = {0};
    must(eg_upload(&g_st, b, 0, src, bytes, &err), &err, "eg_upload");
}

/* Downloads elements [0, n) of b; the caller frees. */
static float *get(const EgBuffer *b, size_t n) {
    EgError err = {0};
    float *out = malloc((n ? n : 1) * sizeof *out);
    must(eg_download_f32(g_ops, &g_st, b, 0, out, n, &err), &err, "eg_download_f32");
    return out;
}

static void begin(EgCmd *cmd) {
    EgError err = {0};
    must(eg_cmd_begin(&g_vk, cmd, &err), &err, "eg_cmd_begin");
}

static void submit(EgCmd *cmd) {
    EgError err = {0};
    must(eg_cmd_submit_wait(cmd, &err), &err, "eg_cmd_submit_wait");
}

static void case_end(void) {
    eg_arena_reset(&g_arena);
}

static void name_of(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void name_of(char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, cap, fmt, ap);
    va_end(ap);
}

/* Relative L2 and max abs error of out against ref; prints them and checks rel <= tol (an exact
 * match is required where ref is all zeros). Non-finite outputs always fail. The norm of ref is
 * taken as at least floor_rms * sqrt(n): a tensor of one or a few dot products can land near
 * zero by cancellation, where float rounding of the terms is large relative to the result. */
static void compare_floor(const char *name, const float *out, const double *ref, size_t n,
                          double tolerance, double floor_rms) {
    double e2 = 0, r2 = 0, max_abs = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) {
            bad++;
            continue;
        }
        double d = (double)out[i] - ref[i];
        e2 += d * d;
        r2 += ref[i] * ref[i];
        if (fabs(d) > max_abs) max_abs = fabs(d);
    }
    if (r2 < floor_rms * floor_rms * (double)n) r2 = floor_rms * floor_rms * (double)n;
    double rel = r2 > 0 ? sqrt(e2 / r2) : (e2 > 0 ? INFINITY : 0.0);
    if (bad) rel = INFINITY;
    printf("  [%s] %-64s rel %.2e  max %.2e%s\n", prec(), name, rel, max_abs,
           bad ? "  NON-FINITE" : "");
    CHECK(bad == 0, "%s [%s]: %zu of %zu outputs not finite (unwritten or overflow)", name, prec(),
          bad, n);
    CHECK(rel <= tolerance, "%s [%s]: relative error %.3e > %.1e (max abs %.3e)", name, prec(), rel,
          tolerance, max_abs);
    int p = g_ops->f16 ? 1 : 0;
    if (rel > g_worst[g_op][p].rel || !g_worst[g_op][p].tensors) {
        g_worst[g_op][p].rel = rel;
        snprintf(g_worst[g_op][p].worst, sizeof g_worst[g_op][p].worst, "%s", name);
    }
    if (max_abs > g_worst[g_op][p].abs) g_worst[g_op][p].abs = max_abs;
    g_worst[g_op][p].tensors++;
}

static void compare(const char *name, const float *out, const double *ref, size_t n,
                    double tolerance) {
    compare_floor(name, out, ref, n, tolerance, 0.0);
}

static int same_bits(float a, float b) {
    return isnan(a) ? isnan(b) : memcmp(&a, &b, sizeof a) == 0;
}

/* Checks a whole output buffer: elements with written[i] against ref (compare), every other
 * element unchanged from before[i] (NULL: the poison, read back as NaN). */
static void check_output_floor(const char *name, const float *got, const double *ref,
                               const unsigned char *written, const float *before, size_t n,
                               double tolerance, double floor_rms) {
    float *out = calloc(n ? n : 1, sizeof *out);
    double *want = calloc(n ? n : 1, sizeof *want);
    size_t m = 0, clobbered = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        if (written[i]) {
            out[m] = got[i];
            want[m++] = ref[i];
        } else if (!same_bits(got[i], before ? before[i] : NAN)) {
            if (!clobbered++) first = i;
        }
    }
    compare_floor(name, out, want, m, tolerance, floor_rms);
    CHECK(clobbered == 0,
          "%s [%s]: %zu elements outside the output region changed (first at %zu: %g)", name,
          prec(), clobbered, first, clobbered ? (double)got[first] : 0.0);
    free(out);
    free(want);
}

static void check_output(const char *name, const float *got, const double *ref,
                         const unsigned char *written, const float *before, size_t n,
                         double tolerance) {
    check_output_floor(name, got, ref, written, before, n, tolerance, 0.0);
}

/* ---- eg_op_linear */

static const char *act_name(EgOpAct a) {
    static const char *const names[] = {"none", "gelu", "quick_gelu", "silu", "relu", "gelu_tanh"};
    return names[a];
}

static double act_ref(double v, EgOpAct a) {
    switch (a) {
    case EG_OP_ACT_GELU:
        return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case EG_OP_ACT_QUICK_GELU:
        return v / (1.0 + exp(-1.702 * v));
    case EG_OP_ACT_SILU:
        return v / (1.0 + exp(-v));
    case EG_OP_ACT_RELU:
        return v > 0 ? v : 0.0;
    case EG_OP_ACT_GELU_TANH:
        return 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    default:
        return v;
    }
}

typedef struct LinCase {
    uint32_t M, N, K;
    EgOpAct act;
    int bias, mul, accum;
    int alpha;             /* 0 none, 1 scalar tanh(alpha[0]), 2 vector tanh(alpha[n]) */
    uint32_t x_off, x_pad; /* x rows start at x_off with ldx = K + x_pad */
    uint32_t y_off, y_pad; /* y rows start at y_off with ldy = N + y_pad */
    uint32_t chunk_rows;   /* 0: one chunk; else also checked equal to the unchunked result */
    float w_scale;         /* 0: 2/sqrt(K) (pre-activations of order 2) */
    int rms;               /* x's rows RMS-normalized within the product (rms_weight) */
    int swiglu; /* W is [gate; up] (2N rows), y = silu(x·gate)·(x·up): where the kernel fuses it */
    EgWeightFormat quant; /* W quantized: the reference multiplies the dequantized weights */
} LinCase;

#define RMS_EPS 1e-6f

/* Runs one eg_op_linear into a fresh y buffer (preloaded with y0, or poisoned) and downloads it. */
static float *run_linear(const LinCase *c, const EgBuffer *x, const EgMatrix *w,
                         const EgBuffer *bias, const EgBuffer *alpha, const EgBuffer *g,
                         const float *y0, size_t ny) {
    EgBuffer y = dev(ny);
    if (y0) put(&y, 0, y0, ny);
    EgCmd cmd;
    begin(&cmd);
    if (!y0) eg_cmd_fill(&cmd, &y, POISON);
    EgLinear a = {.x = x,
                  .x_off = c->x_off,
                  .ldx = c->x_pad ? c->K + c->x_pad : 0,
                  .w = w,
                  .bias = c->bias ? bias : NULL,
                  .alpha = c->alpha ? alpha : NULL,
                  .alpha_vector = c->alpha == 2,
                  .y = &y,
                  .y_off = c->y_off,
                  .ldy = c->y_pad ? c->N + c->y_pad : 0,
                  .rows = c->M,
                  .act = c->act,
                  .mul = c->mul,
                  .accum = c->accum,
                  .rms_weight = c->rms ? g : NULL,
                  .rms_eps = RMS_EPS,
                  .swiglu = c->swiglu};
    eg_op_linear(&cmd, g_ops, &a);
    submit(&cmd);
    return get(&y, ny);
}

static void linear_case(const LinCase *c) {
    EgError err = {0};
    uint32_t M = c->M, N = c->N, K = c->K;
    uint32_t NW = c->swiglu ? 2 * N : N; /* rows of W */
    if (c->swiglu && !eg_ops_fuses_swiglu(g_ops, N, K)) return;
    if (c->rms) { /* only kernels that can fold the norm take it */
        EgMatrix shape = {.rows = NW, .cols = K, .format = c->quant};
        if (!eg_linear_fuses_rms(g_ops, &(EgLinear){.w = &shape, .rows = M})) return;
    }
    size_t ldx = K + c->x_pad, ldy = N + c->y_pad;
    size_t nx = c->x_off + M * ldx + 3, ny = c->y_off + M * ldy + 5;
    uint32_t n_alpha = c->alpha == 2 ? N : 1;
    float *x = host_normal(nx, 1.0f); /* the whole buffer: reading a wrong element shows */
    float *w = host_normal((size_t)NW * K, c->w_scale > 0 ? c->w_scale : 2.0f / sqrtf((float)K));
    float *bias = host_normal(N, 0.5f);
    float *alpha = host_uniform(n_alpha, -1.5f, 1.5f);
    float *y0 = c->mul || c->accum ? host_normal(ny, 1.0f) : NULL;
    float *g = host_uniform(K, 0.5f, 1.5f); /* the norm's weight */
    /* The reference's weights: w, or for a quantized matrix the weights it stands for (the
     * upload quantizes w as this does). */
    float *wq = NULL;
    if (c->quant) {
        size_t words = eg_quant_row_words(c->quant, K);
        uint32_t *q = malloc((size_t)NW * words * 4);
        wq = malloc((size_t)NW * K * sizeof *wq + 4);
        must(eg_quantize_rows(c->quant, w, NW, K, q, &err), &err, "eg_quantize_rows");
        for (uint32_t n = 0; n < NW; n++)
            eg_dequantize_row(c->quant, q + n * words, K, wq + (size_t)n * K);
        free(q);
    }
    const float *wref = wq ? wq : w;

    EgBuffer bx = dev(nx), bb = dev(N), ba = dev(n_alpha), bg = dev(K);
    put(&bx, 0, x, nx);
    put(&bb, 0, bias, N);
    put(&ba, 0, alpha, n_alpha);
    put(&bg, 0, g, K);
    EgMatrix wm;
    must(eg_matrix_create_format(g_ops, &g_arena, NW, K, c->chunk_rows, c->quant, &wm, &err),
         &err, "eg_matrix_create_format");
    must(eg_matrix_upload_f32(g_ops, &g_st, &wm, w, &err), &err, "eg_matrix_upload_f32");
    float *got = run_linear(c, &bx, &wm, &bb, &ba, &bg, y0, ny);

    double *ref = calloc(ny, sizeof *ref);
    unsigned char *written = calloc(ny, 1);
    for (uint32_t m = 0; m < M; m++) {
        const float *xr = x + c->x_off + m * ldx;
        double r = 1.0; /* RMSNorm: x·g / sqrt(mean(x²) + eps) */
        if (c->rms) {
            double ss = 0;
            for (uint32_t k = 0; k < K; k++)
                ss += (double)xr[k] * xr[k];
            r = 1.0 / sqrt(ss / K + RMS_EPS);
        }
        for (uint32_t n = 0; n < N; n++) {
            const float *wr = wref + (size_t)n * K;
            double v = 0, up = 0;
            for (uint32_t k = 0; k < K; k++)
                v += (double)xr[k] * (c->rms ? g[k] * r : 1.0) * wr[k];
            if (c->swiglu) {
                const float *ur = wref + (size_t)(N + n) * K;
                for (uint32_t k = 0; k < K; k++)
                    up += (double)xr[k] * (c->rms ? g[k] * r : 1.0) * ur[k];
                v = act_ref(v, EG_OP_ACT_SILU) * up;
            }
            if (c->bias) v += bias[n];
            v = act_ref(v, c->act);
            size_t yi = c->y_off + m * ldy + n;
            if (c->mul) v *= y0[yi];
            if (c->accum)
                v = y0[yi] + (c->alpha ? tanh((double)alpha[c->alpha == 2 ? n : 0]) : 1.0) * v;
            ref[yi] = v;
            written[yi] = 1;
        }
    }
    char name[240];
    name_of(
        name, sizeof name, "linear%s%s %s%s%s M=%u N=%u K=%u act=%s%s%s%s%s x+%u/%zu y+%u/%zu%s%s",
        g_variant, c->quant == EG_WEIGHTS_Q8 ? " q8" : c->quant == EG_WEIGHTS_Q4 ? " q4" : "",
        c->rms ? "rmsnorm+" : "", c->swiglu ? "swiglu " : "",
        M <= (g_ops->naive ? 4 : EG_MATVEC_MAX_ROWS) ? "matvec" : "matmul", M, N, K,
        act_name(c->act), c->bias ? " bias" : "", c->mul ? " mul" : "", c->accum ? " accum" : "",
        c->alpha == 1   ? " alpha"
        : c->alpha == 2 ? " alpha[n]"
                        : "",
        c->x_off, ldx, c->y_off, ldy, c->chunk_rows ? " chunked" : "",
        c->w_scale > 0 ? " |v|~60" : "");
    /* Pre-activations are ~N(0, 4) by construction; a lone output can still cancel to ~0. */
    check_output_floor(name, got, ref, written, y0, ny, tol(), 0.1);

    if (c->chunk_rows) {
        CHECK(wm.n_chunks == (N + c->chunk_rows - 1) / c->chunk_rows,
              "%s: %u chunks for chunk_rows %u", name, wm.n_chunks, c->chunk_rows);
        EgMatrix whole;
        must(eg_matrix_create_format(g_ops, &g_arena, N, K, 0, c->quant, &whole, &err), &err,
             "eg_matrix_create_format");
        must(eg_matrix_upload_f32(g_ops, &g_st, &whole, w, &err), &err, "eg_matrix_upload_f32");
        CHECK(whole.n_chunks == 1, "unchunked matrix has %u chunks", whole.n_chunks);
        float *got1 = run_linear(c, &bx, &whole, &bb, &ba, &bg, y0, ny);
        size_t diff = 0;
        for (size_t i = 0; i < ny; i++)
            diff += !same_bits(got[i], got1[i]);
        CHECK(diff == 0, "%s [%s]: %zu elements differ between %u chunks and one", name, prec(),
              diff, wm.n_chunks);
        free(got1);
        eg_matrix_release(&whole);
    }
    eg_matrix_release(&wm);
    free(x), free(w), free(wq), free(bias), free(alpha), free(y0), free(g), free(got), free(ref),
        free(written);
    case_end();
}

static void test_linear(void) {
    g_op = OP_LINEAR;
    static const uint32_t Ms[] = {1, 3, 4, 5, 37, 130}, Ns[] = {1, 7, 70, 129},
                          Ks[] = {1, 5, 53, 300};
    /* Every shape, plain (with bias on every other one). */
    int i = 0;
    for (size_t a = 0; a < sizeof Ms / sizeof Ms[0]; a++)
        for (size_t b = 0; b < sizeof Ns / sizeof Ns[0]; b++)
            for (size_t k = 0; k < sizeof Ks / sizeof Ks[0]; k++, i++)
                linear_case(&(LinCase){.M = Ms[a], .N = Ns[b], .K = Ks[k], .bias = i % 2});
    /* The epilogue on both paths (matvec: rows <= 4; matmul: rows > 4). */
    static const uint32_t shapes[][3] = {{3, 70, 53}, {37, 129, 300}};
    for (int s = 0; s < 2; s++) {
        uint32_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        for (int act = EG_OP_ACT_NONE; act <= EG_OP_ACT_GELU_TANH; act++)
            linear_case(&(LinCase){.M = M, .N = N, .K = K, .act = (EgOpAct)act, .bias = 1});
        linear_case(&(LinCase){.M = M, .N = N, .K = K, .act = EG_OP_ACT_SILU, .mul = 1});
        linear_case(&(LinCase){.M = M, .N = N, .K = K, .mul = 1, .bias = 1});
        linear_case(&(LinCase){.M = M, .N = N, .K = K, .accum = 1});
        linear_case(&(LinCase){.M = M, .N = N, .K = K, .accum = 1, .bias = 1, .alpha = 1});
        linear_case(&(LinCase){.M = M, .N = N, .K = K, .accum = 1, .alpha = 2});
        /* x rows inside a wider buffer, y rows inside a wider buffer, both with offsets. */
        linear_case(&(LinCase){.M = M, .N = N, .K = K, .x_off = 11, .x_pad = 9});
        linear_case(&(LinCase){.M = M, .N = N, .K = K, .y_off = 6, .y_pad = 13, .bias = 1});
        linear_case(&(LinCase){.M = M,
                               .N = N,
                               .K = K,
                               .x_off = 3,
                               .x_pad = 17,
                               .y_off = 5,
                               .y_pad = 4,
                               .accum = 1,
                               .alpha = 2,
                               .act = EG_OP_ACT_GELU});
        /* Chunked weights (N = 70, chunk_rows 13: 6 chunks) with the whole epilogue. */
        linear_case(&(LinCase){.M = M,
                               .N = 70,
                               .K = K,
                               .chunk_rows = 13,
                               .bias = 1,
                               .act = EG_OP_ACT_QUICK_GELU,
                               .accum = 1,
                               .alpha = 2,
                               .y_off = 2,
                               .y_pad = 5});
        linear_case(
            &(LinCase){.M = M, .N = 70, .K = K, .chunk_rows = 13, .act = EG_OP_ACT_SILU, .mul = 1});
        /* Large pre-activations (|v| up to ~60): the activations must stay finite. */
        for (int act = EG_OP_ACT_GELU; act <= EG_OP_ACT_GELU_TANH; act++)
            linear_case(&(LinCase){
                .M = M, .N = N, .K = K, .act = (EgOpAct)act, .w_scale = 15.0f / sqrtf((float)K)});
    }
}

/* Quantized weights (runtime/quant.h, shaders/linear_quant.glsl), against the reference of the
 * dequantized weights: every width of x the decode pipelines are compiled for (1, 2, 4, 8) and
 * between, more rows (9 to 37: the matrix pipeline's rows of 8 and not multiples of them), N
 * off the workgroup's columns, K within one block, whole blocks (32, 64: q8's pairs full), a
 * partial last block or pair, and x rows off 8-element alignment; then the epilogue, offsets,
 * strides and chunks. K = 300 has a partial group of blocks (q8: 10 blocks, a group of 8 and
 * one of 2; q4: 2 groups of 4 and one of 2). `all`: every size (else every other width of x and
 * one N, and the epilogue at one shape: for the other load variant). */
static void test_linear_quant(int all) {
    static const uint32_t Ms[] = {1, 2, 3, 5, 8, 9, 37}, Ns[] = {7, 70, 129},
                          Ks[] = {1, 31, 32, 40, 53, 64, 300};
    for (EgWeightFormat q = EG_WEIGHTS_Q8; q <= EG_WEIGHTS_Q4; q++) {
        int i = 0;
        for (size_t a = 0; a < sizeof Ms / sizeof Ms[0]; a += all ? 1 : 2)
            for (size_t b = all ? 0 : 2; b < sizeof Ns / sizeof Ns[0]; b++)
                for (size_t k = 0; k < sizeof Ks / sizeof Ks[0]; k++, i++)
                    linear_case(&(LinCase){
                        .M = Ms[a], .N = Ns[b], .K = Ks[k], .bias = i % 2, .quant = q});
        static const uint32_t shapes[][3] = {{3, 70, 53}, {37, 129, 96}};
        for (int s = all ? 0 : 1; s < 2; s++) {
            uint32_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            for (int act = EG_OP_ACT_NONE; act <= EG_OP_ACT_GELU_TANH; act++)
                linear_case(&(LinCase){
                    .M = M, .N = N, .K = K, .act = (EgOpAct)act, .bias = 1, .quant = q});
            linear_case(
                &(LinCase){.M = M, .N = N, .K = K, .act = EG_OP_ACT_SILU, .mul = 1, .quant = q});
            linear_case(&(LinCase){
                .M = M, .N = N, .K = K, .accum = 1, .bias = 1, .alpha = 1, .quant = q});
            linear_case(&(LinCase){.M = M, .N = N, .K = K, .accum = 1, .alpha = 2, .quant = q});
            /* x rows misaligned, and aligned inside a wider buffer (8-element loads) */
            linear_case(&(LinCase){.M = M, .N = N, .K = K, .x_off = 11, .x_pad = 9, .quant = q});
            linear_case(&(LinCase){.M = M, .N = N, .K = K, .x_off = 8, .x_pad = 16, .quant = q});
            linear_case(&(LinCase){
                .M = M, .N = N, .K = K, .y_off = 6, .y_pad = 13, .bias = 1, .quant = q});
            linear_case(&(LinCase){.M = M,
                                   .N = 70,
                                   .K = K,
                                   .chunk_rows = 13,
                                   .bias = 1,
                                   .act = EG_OP_ACT_QUICK_GELU,
                                   .accum = 1,
                                   .alpha = 2,
                                   .y_off = 2,
                                   .y_pad = 5,
                                   .quant = q});
            /* no kernel folds a norm or a SwiGLU into quantized products: these must skip */
            linear_case(&(LinCase){.M = M, .N = N, .K = K, .rms = 1, .quant = q});
        }
    }
}

/* The fast kernels' edges. matvec: every width of x (1 to 8 rows; pipelines compiled for 1, 2,
 * 4 and 8), N not a multiple of the rows per workgroup (8 to 32); matmul: 9 to 65 rows of x,
 * across both tile shapes and not multiples of them. K selects the loads: K % 8 == 0 16-byte
 * vectors (fp16: 8 halves), K % 4 == 0 4-element vectors, odd K element by element; x rows
 * misaligned by x_off or ldx force the narrower loads even for K % 8 == 0. `all`: every width
 * of x and every size (else a subset, for the other kernel variants). */
static void test_linear_edges(int all) {
    static const uint32_t Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 33, 65}, Ns[] = {33, 129},
                          Ks[] = {3, 12, 40, 261, 264};
    int i = 0;
    for (size_t a = 0; a < sizeof Ms / sizeof Ms[0]; a++) {
        uint32_t M = Ms[a];
        if (!all && M != 1 && M != 5 && M != 8 && M != 17 && M != 65) continue;
        for (size_t b = all ? 0 : 1; b < sizeof Ns / sizeof Ns[0]; b++)
            for (size_t k = 0; k < sizeof Ks / sizeof Ks[0] - (all ? 0 : 1); k++, i++)
                linear_case(&(LinCase){.M = M,
                                       .N = Ns[b],
                                       .K = Ks[k],
                                       .bias = i % 2,
                                       .act = i % 3 ? EG_OP_ACT_NONE : EG_OP_ACT_SILU});
    }
    /* Row alignment of x: 2 (element loads), 4 (4-element vectors), 8 (fp16: 8 halves). */
    static const uint32_t aligned_Ms[] = {1, 33, 6};
    for (size_t a = 0; a < (all ? 3u : 2u); a++) {
        uint32_t M = aligned_Ms[a];
        linear_case(&(LinCase){.M = M, .N = 70, .K = 264, .x_off = 2, .x_pad = 2});
        linear_case(&(LinCase){.M = M, .N = 70, .K = 264, .x_off = 4, .x_pad = 4, .bias = 1});
        linear_case(&(LinCase){.M = M, .N = 70, .K = 264, .x_off = 8, .x_pad = 8});
        if (all) linear_case(&(LinCase){.M = M, .N = 70, .K = 264, .x_off = 8, .x_pad = 6});
    }
    /* The whole epilogue on chunked weights (6 chunks of 13 rows), per path. */
    static const uint32_t epi_Ms[] = {1, 7, 65, 2, 17};
    for (size_t a = 0; a < (all ? 5u : 3u); a++) {
        linear_case(&(LinCase){.M = epi_Ms[a],
                               .N = 70,
                               .K = 40,
                               .chunk_rows = 13,
                               .bias = 1,
                               .act = EG_OP_ACT_GELU,
                               .accum = 1,
                               .alpha = 2,
                               .y_off = 3,
                               .y_pad = 7});
        linear_case(&(LinCase){.M = epi_Ms[a], .N = 70, .K = 12, .act = EG_OP_ACT_SILU, .mul = 1});
    }
    /* Rows of y starting on multiples of 8 elements (y_off and ldy), the layout a store of
     * whole 16-byte texels would take (tried; dropped, docs/engine.md), with N = 70 ending
     * mid-group and chunks of 24 rows. Every epilogue, fp16 and fp32. */
    static const uint32_t texel_Ms[] = {1, 7, 65, 3, 17};
    for (size_t a = 0; a < (all ? 5u : 3u); a++) {
        uint32_t M = texel_Ms[a];
        LinCase base = {.M = M, .N = 70, .K = 40, .y_off = 16, .y_pad = 2};
        LinCase c = base;
        c.bias = 1, c.act = EG_OP_ACT_GELU;
        linear_case(&c);
        c = base, c.act = EG_OP_ACT_SILU, c.mul = 1;
        linear_case(&c);
        c = base, c.accum = 1, c.alpha = 2, c.bias = 1;
        linear_case(&c);
        c = base, c.accum = 1, c.alpha = 1, c.mul = 1;
        linear_case(&c);
        c = base, c.chunk_rows = 24, c.accum = 1, c.alpha = 2, c.act = EG_OP_ACT_QUICK_GELU;
        linear_case(&c);
        c = base, c.K = 264, c.rms = 1, c.mul = 1, c.y_off = 8;
        linear_case(&c);
    }
    /* The SwiGLU fused into one product over [gate; up] (where the kernel can:
     * eg_ops_fuses_swiglu), with and without the RMSNorm, on each load path, N not a multiple
     * of an invocation's 4 outputs, y rows offset. */
    static const uint32_t swiglu_Ms[] = {1, 3, 8, 17, 65}, swiglu_Ks[] = {264, 40, 261, 12};
    for (size_t a = 0; a < sizeof swiglu_Ms / sizeof swiglu_Ms[0]; a++)
        for (size_t k = 0; k < (all ? 4u : 2u); k++)
            linear_case(&(LinCase){.M = swiglu_Ms[a],
                                   .N = k % 2 ? 37 : 70,
                                   .K = swiglu_Ks[k],
                                   .swiglu = 1,
                                   .rms = k != 1,
                                   .y_off = a % 2 ? 5 : 0,
                                   .y_pad = a % 2 ? 3 : 0});
    /* An RMSNorm of x folded into the product (where the kernel can: eg_linear_fuses_rms) on
     * each load path (K % 8 == 0, K % 4 == 0, odd K; x rows offset), with the epilogues the
     * model pairs it with, and over chunked weights. */
    static const uint32_t rms_Ms[] = {1, 3, 8, 17, 65}, rms_Ks[] = {264, 12, 261};
    for (size_t a = 0; a < sizeof rms_Ms / sizeof rms_Ms[0]; a++)
        for (size_t k = 0; k < (all ? 3u : 1u); k++)
            linear_case(&(LinCase){.M = rms_Ms[a],
                                   .N = 70,
                                   .K = rms_Ks[k],
                                   .rms = 1,
                                   .act = k == 0 ? EG_OP_ACT_SILU : EG_OP_ACT_NONE,
                                   .mul = k == 1,
                                   .x_off = a == 1 ? 8 : 0,
                                   .x_pad = a == 1 ? 8 : 0});
    linear_case(
        &(LinCase){.M = 5, .N = 70, .K = 40, .rms = 1, .chunk_rows = 13, .accum = 1, .alpha = 2});
    /* Long rows: many strides of the lanes over K, and a scalar tail of K. */
    linear_case(&(LinCase){.M = 1, .N = 37, .K = 4104});
    linear_case(&(LinCase){.M = 8, .N = 37, .K = 4100, .bias = 1});
    linear_case(&(LinCase){.M = 3, .N = 37, .K = 4099});
    linear_case(&(LinCase){.M = 20, .N = 37, .K = 2052});
}

/* Kernel variants other devices get by default (runtime/ops.c linear_params), forced here. */
static const struct {
    const char *name;
    EgOpsConfig cfg;
    int all; /* every width of x and size (test_linear_edges) */
} LINEAR_VARIANTS[] = {
    {" [shared-memory matvec 32x4, 2 rows, 32-bit loads; GPU tiles 32x64 64x64 4x4]",
     {.no_subgroup = 1,
      .mv_load64 = -1,
      .mv_lanes = 32,
      .mv_wg = 128,
      .mv_rpg = 2,
      .mm_small = {32, 64, 16, 4, 4},
      .mm_large = {64, 64, 16, 4, 4},
      .mm_direct = -1},
     0},
    {" [shared-memory matvec 8x4, 8 rows; tiles 16x32x8 4x8 128x128 8x8]",
     {.no_subgroup = 1,
      .mv_lanes = 8,
      .mv_wg = 32,
      .mv_rpg = 8,
      .mm_small = {16, 32, 8, 4, 8},
      .mm_large = {128, 128, 16, 8, 8},
      .mm_direct = -1},
     0},
    {" [subgroup matvec, 3 rows; tiles 32x16x4 8x4 64x32x12 4x4]",
     {.mv_rpg = 3, .mm_small = {32, 16, 4, 8, 4}, .mm_large = {64, 32, 12, 4, 4}, .mm_direct = -1},
     0},
    /* The CPU devices' matmul without shared memory, at the default and at odd sizes (3 rows
     * of x by 5 rows of W, 4 invocations), for every size and, for few rows of x, for weights
     * of any size; x and W read as storage buffers and as texel views (only on devices whose
     * buffers have those: CPU implementations). */
    {" [direct matmul 8 x 8x8, also few rows]", {.mm_direct = 1, .md_few = 1, .md_texel = -1}, 1},
    {" [direct matmul 4 x 3x5, also few rows]",
     {.mm_direct = 1, .md_few = 1, .md_wg = 4, .md_tm = 3, .md_tn = 5, .md_texel = -1},
     1},
    {" [direct matmul 8 x 8x8 from texel views, also few rows]",
     {.mm_direct = 1, .md_few = 1, .md_texel = 1},
     1},
    {" [direct matmul 4 x 3x5 from texel views, also few rows]",
     {.mm_direct = 1, .md_few = 1, .md_wg = 4, .md_tm = 3, .md_tn = 5, .md_texel = 1},
     1},
    /* The matvec loads both ways for every width of x, whichever the device's default is
     * (64-bit ones only where shaderInt64 is present). */
    {" [subgroup matvec, 32-bit loads]", {.mv_load64 = -1, .md_few = -1}, 1},
    {" [subgroup matvec, 64-bit loads]", {.mv_load64 = 1, .md_few = -1}, 1},
    {" [shared-memory matvec 8x4, 8 rows, 64-bit loads]",
     {.no_subgroup = 1, .mv_load64 = 1, .mv_lanes = 8, .mv_wg = 32, .mv_rpg = 8, .md_few = -1},
     0},
};

static void test_linear_variants(int f16) {
    for (size_t v = 0; v < sizeof LINEAR_VARIANTS / sizeof LINEAR_VARIANTS[0]; v++) {
        EgOps ops;
        EgError err = {0};
        EgOpsConfig cfg = LINEAR_VARIANTS[v].cfg;
        cfg.naive = -1;
        cfg.quant_kernels = -1; /* no quantized product runs here: their kernels go unbuilt */
        if (eg_ops_init_config(&ops, &g_vk, f16, &cfg, &err)) {
            /* Only a device below these tiles' needs (256 invocations, 16 KiB), without
             * shaderInt64 (64-bit loads) or without texel views (GPUs) gets here. */
            printf("  linear%s: skipped on this device: %s\n", LINEAR_VARIANTS[v].name, err.msg);
            continue;
        }
        EgOps *saved = g_ops;
        g_ops = &ops;
        g_variant = LINEAR_VARIANTS[v].name;
        test_linear_edges(LINEAR_VARIANTS[v].all);
        g_variant = "";
        g_ops = saved;
        eg_ops_destroy(&ops);
    }
}

/* ---- eg_op_norm */

typedef struct NormCase {
    uint32_t dim, rows, batches;
    int rms;
    uint32_t x_off, x_stride, x_batch; /* 0: defaults (dim, rows * stride) */
    uint32_t y_off, y_stride, y_batch;
    float center; /* inputs are center + N(0, 1) (LayerNorm with a large mean: 1000 + U(-1, 1)) */
} NormCase;

static void norm_case(const NormCase *c) {
    uint32_t dim = c->dim, rows = c->rows, batches = c->batches;
    size_t xs = c->x_stride ? c->x_stride : dim, ys = c->y_stride ? c->y_stride : dim;
    size_t xb = c->x_batch ? c->x_batch : rows * xs, yb = c->y_batch ? c->y_batch : rows * ys;
    size_t nx = c->x_off + (batches - 1) * xb + (rows - 1) * xs + dim + 3;
    size_t ny = c->y_off + (batches - 1) * yb + (rows - 1) * ys + dim + 3;
    float eps = c->rms ? 1e-6f : 1e-5f;
    float *x = malloc(nx * sizeof *x);
    for (size_t i = 0; i < nx; i++)
        x[i] = rnd(c->center != 0 ? c->center + test_rng_uniform(-1, 1) : test_rng_normal());
    float *w = malloc(dim * sizeof *w), *b = malloc(dim * sizeof *b);
    for (uint32_t i = 0; i < dim; i++) {
        w[i] = rnd(1.0f + 0.3f * test_rng_normal());
        b[i] = rnd(0.3f * test_rng_normal());
    }
    EgBuffer bx = dev(nx), bw = dev(dim), bbias = dev(dim), by = dev(ny);
    put(&bx, 0, x, nx);
    put(&bw, 0, w, dim);
    put(&bbias, 0, b, dim);
    EgCmd cmd;
    begin(&cmd);
    eg_cmd_fill(&cmd, &by, POISON);
    EgNorm a = {.x = &bx,
                .x_off = c->x_off,
                .x_stride = c->x_stride,
                .x_batch = c->x_batch,
                .weight = &bw,
                .bias = c->rms ? NULL : &bbias,
                .y = &by,
                .y_off = c->y_off,
                .y_stride = c->y_stride,
                .y_batch = c->y_batch,
                .rows = rows,
                .batches = batches,
                .dim = dim,
                .eps = eps,
                .rms = c->rms};
    eg_op_norm(&cmd, g_ops, &a);
    submit(&cmd);
    float *got = get(&by, ny);

    double *ref = calloc(ny, sizeof *ref);
    unsigned char *written = calloc(ny, 1);
    for (uint32_t bt = 0; bt < batches; bt++) {
        for (uint32_t r = 0; r < rows; r++) {
            const float *xr = x + c->x_off + bt * xb + r * xs;
            size_t yr = c->y_off + bt * yb + r * ys;
            double mean = 0, var = 0;
            if (!c->rms) {
                for (uint32_t i = 0; i < dim; i++)
                    mean += xr[i];
                mean /= dim;
            }
            for (uint32_t i = 0; i < dim; i++)
                var += (xr[i] - mean) * (xr[i] - mean);
            double inv = 1.0 / sqrt(var / dim + (double)eps);
            for (uint32_t i = 0; i < dim; i++) {
                double v = (xr[i] - mean) * inv;
                /* RMSNorm: HF rounds the normalized value to the weight dtype first. */
                ref[yr + i] = c->rms ? w[i] * (double)rnd((float)v) : v * w[i] + b[i];
                written[yr + i] = 1;
            }
        }
    }
    char name[160];
    name_of(name, sizeof name, "%s dim=%u rows=%u batches=%u x+%u/%zu/%zu y+%u/%zu/%zu%s",
            c->rms ? "rmsnorm" : "layernorm", dim, rows, batches, c->x_off, xs, xb, c->y_off, ys,
            yb, c->center != 0 ? " mean=1000" : "");
    /* Rows near 1000: even the exactly rounded float mean is off by up to half an ulp of 1000
     * (3.05e-5), and x - mean inherits that against a spread of 0.58, so a float two-pass
     * LayerNorm (like PyTorch's float LayerNorm) is good to ~1e-4 here, not 1e-5 (norm.comp
     * could do better by shifting by the row's first element). A one-pass variance
     * (E[x^2] - mean^2 in float: E[x^2] ~ 1e6 with ulp 0.06, variance 0.33) gives 1-7% output
     * error on these rows, which this 3e-4 bound catches by a factor of 40 or more. */
    double tolerance = c->center != 0 && !g_ops->f16 ? 3e-4 : tol();
    check_output(name, got, ref, written, NULL, ny, tolerance);
    free(x), free(w), free(b), free(got), free(ref), free(written);
    case_end();
}

static void test_norm(void) {
    g_op = OP_NORM;
    static const uint32_t dims[] = {1, 7, 64, 130, 160, 1000}, rows[] = {1, 5, 33};
    for (int rms = 0; rms < 2; rms++)
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
            for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
                norm_case(&(NormCase){.dim = dims[d], .rows = rows[r], .batches = 1, .rms = rms});
    /* Batches with default strides; normalized rows into every other row of a bigger buffer;
     * batches read from a gappy buffer at an offset; rows, strides and batches on multiples of
     * 8 elements (the wide loads of CPU devices). */
    static const NormCase laid_out[] = {
        {.dim = 130, .rows = 5, .batches = 3},
        {.dim = 64, .rows = 7, .batches = 1, .y_off = 64, .y_stride = 128},
        {.dim = 130,
         .rows = 5,
         .batches = 2,
         .x_off = 9,
         .x_stride = 141,
         .x_batch = 5 * 141 + 31,
         .y_off = 130,
         .y_stride = 260,
         .y_batch = 5 * 260 + 17},
        {.dim = 24,
         .rows = 3,
         .batches = 2,
         .x_off = 8,
         .x_stride = 40,
         .x_batch = 3 * 40 + 16,
         .y_off = 16,
         .y_stride = 32,
         .y_batch = 3 * 32 + 8},
    };
    for (int rms = 0; rms < 2; rms++)
        for (size_t k = 0; k < sizeof laid_out / sizeof laid_out[0]; k++) {
            NormCase c = laid_out[k];
            c.rms = rms;
            norm_case(&c);
        }
    /* LayerNorm of rows with a large mean (1000 +- 1): a one-pass variance loses it. */
    norm_case(&(NormCase){.dim = 64, .rows = 5, .batches = 1, .center = 1000});
    norm_case(&(NormCase){.dim = 1000, .rows = 5, .batches = 1, .center = 1000});
}

/* ---- eg_op_attention */

typedef struct AttnCase {
    EgAttnMode mode;
    uint32_t nq, nk, heads, hd, batches, q_pos0;
    float scale_mul; /* scale = scale_mul / sqrt(hd) (0: 1) */
    float peak;      /* > 0: q scaled so the largest |score| is this */
    int packed_kv;   /* K and V in one buffer, rows [K | V | pad] (perceiver-style) */
    uint32_t q_pad, o_pad, off;
    const uint32_t *ranges; /* ranges mode: [nq][2] lo, hi; block-mask mode: [nq][mask_words] */
    uint32_t kv_heads;      /* grouped-query attention (0: heads) */
    uint32_t mask_block, mask_words;
} AttnCase;

/* Whether query i sees key j (within [lo, hi) from attn_keys). */
static int attn_sees(const AttnCase *c, uint32_t i, uint32_t j) {
    if (c->mode != EG_ATTN_BLOCK_MASK) return 1;
    uint32_t blk = j / c->mask_block;
    return (c->ranges[(c->q_pos0 + i) * c->mask_words + blk / 32] >> (blk % 32)) & 1u;
}

/* Keys [lo, hi) that query i may see (in block-mask mode: those of its blocks, see attn_sees). */
static void attn_keys(const AttnCase *c, const uint32_t *ranges, uint32_t i, uint32_t *lo,
                      uint32_t *hi) {
    *lo = 0;
    *hi = c->nk;
    if (c->mode == EG_ATTN_CAUSAL && c->q_pos0 + i + 1 < c->nk) *hi = c->q_pos0 + i + 1;
    if (c->mode == EG_ATTN_RANGES) {
        *lo = ranges[2 * i];
        *hi = ranges[2 * i + 1];
    }
    if (c->mode == EG_ATTN_BLOCK_MASK) {
        uint32_t seen = 0;
        for (uint32_t j = 0; j < c->nk; j++)
            seen += (uint32_t)attn_sees(c, i, j);
        if (seen == 0) *hi = 0;
    }
}

static void attention_case(const AttnCase *c) {
    const uint32_t *ranges = c->ranges;
    uint32_t nq = c->nq, nk = c->nk, H = c->heads, hd = c->hd, B = c->batches;
    uint32_t KVH = c->kv_heads ? c->kv_heads : H, group = H / KVH;
    size_t width = (size_t)H * hd, kv_width = (size_t)KVH * hd;
    size_t qs = width + c->q_pad, os = width + c->o_pad;
    size_t qb = nq * qs + (B > 1 ? 7 : 0), ob = nq * os + (B > 1 ? 3 : 0);
    size_t q_off = c->off, o_off = c->off ? c->off + 1 : 0;
    size_t kvs = c->packed_kv ? 2 * kv_width + 3 : kv_width;
    size_t k_off = c->packed_kv ? 5 : 0, v_off = c->packed_kv ? 5 + kv_width : 0;
    size_t kvb = nk * kvs + (B > 1 ? 5 : 0);
    size_t nqb = q_off + (B - 1) * qb + (nq - 1) * qs + width + 2;
    size_t nob = o_off + (B - 1) * ob + (nq - 1) * os + width + 2;
    size_t nkv = (c->packed_kv ? 5 : 0) + (B - 1) * kvb + (nk - 1) * kvs + kvs + 2;
    double scale = (c->scale_mul > 0 ? c->scale_mul : 1.0) / sqrt((double)hd);

    float *q = malloc(nqb * sizeof *q);
    for (size_t i = 0; i < nqb; i++)
        q[i] = test_rng_normal();
    float *k = host_normal(nkv, 1.0f);
    float *v = c->packed_kv ? k : host_normal(nkv, 1.0f);
#define QI(b, i, h) (q_off + (b)*qb + (i)*qs + (h)*hd)
#define KI(b, j, h) (k_off + (b)*kvb + (j)*kvs + (h) / group * hd)
#define VI(b, j, h) (v_off + (b)*kvb + (j)*kvs + (h) / group * hd)
    if (c->peak > 0) {
        double top = 0;
        for (uint32_t b = 0; b < B; b++)
            for (uint32_t h = 0; h < H; h++)
                for (uint32_t i = 0; i < nq; i++)
                    for (uint32_t j = 0; j < nk; j++) {
                        double s = 0;
                        for (uint32_t d = 0; d < hd; d++)
                            s += (double)q[QI(b, i, h) + d] * k[KI(b, j, h) + d];
                        if (fabs(s * scale) > top) top = fabs(s * scale);
                    }
        for (size_t i = 0; i < nqb; i++)
            q[i] = (float)(q[i] * c->peak / top);
    }
    for (size_t i = 0; i < nqb; i++)
        q[i] = rnd(q[i]);

    EgBuffer bq = dev(nqb), bk = dev(nkv), bv = c->packed_kv ? bk : dev(nkv), bo = dev(nob);
    size_t ranges_bytes = c->mode == EG_ATTN_BLOCK_MASK
                              ? (c->q_pos0 + nq) * c->mask_words * sizeof(uint32_t)
                              : 2 * nq * sizeof(uint32_t);
    EgBuffer br = dev_bytes(ranges_bytes);
    put(&bq, 0, q, nqb);
    put(&bk, 0, k, nkv);
    if (!c->packed_kv) put(&bv, 0, v, nkv);
    if (ranges) put_raw(&br, ranges, ranges_bytes);
    EgCmd cmd;
    begin(&cmd);
    eg_cmd_fill(&cmd, &bo, POISON);
    EgAttention a = {.q = &bq,
                     .k = &bk,
                     .v = &bv,
                     .o = &bo,
                     .q_off = (uint32_t)q_off,
                     .q_stride = c->q_pad ? (uint32_t)qs : 0,
                     .q_batch = (uint32_t)qb,
                     .k_off = (uint32_t)k_off,
                     .k_stride = c->packed_kv ? (uint32_t)kvs : 0,
                     .k_batch = (uint32_t)kvb,
                     .v_off = (uint32_t)v_off,
                     .v_stride = c->packed_kv ? (uint32_t)kvs : 0,
                     .v_batch = (uint32_t)kvb,
                     .o_off = (uint32_t)o_off,
                     .o_stride = c->o_pad ? (uint32_t)os : 0,
                     .o_batch = (uint32_t)ob,
                     .n_queries = nq,
                     .n_keys = nk,
                     .heads = H,
                     .head_dim = hd,
                     .batches = B,
                     .kv_heads = c->kv_heads,
                     .mode = c->mode,
                     .q_pos0 = c->q_pos0,
                     .ranges = ranges ? &br : NULL,
                     .mask_block = c->mask_block,
                     .mask_words = c->mask_words,
                     .scale = (float)scale};
    eg_op_attention(&cmd, g_ops, &a);
    submit(&cmd);
    float *got = get(&bo, nob);

    double *ref = calloc(nob, sizeof *ref);
    unsigned char *written = calloc(nob, 1);
    double *p = malloc(nk * sizeof *p);
    double top_score = 0;
    for (uint32_t b = 0; b < B; b++) {
        for (uint32_t h = 0; h < H; h++) {
            for (uint32_t i = 0; i < nq; i++) {
                uint32_t lo, hi;
                attn_keys(c, ranges, i, &lo, &hi);
                size_t o = o_off + b * ob + i * os + h * hd;
                double mx = -INFINITY, sum = 0;
                for (uint32_t j = lo; j < hi; j++) {
                    p[j] = -INFINITY;
                    if (!attn_sees(c, i, j)) continue;
                    double s = 0;
                    for (uint32_t d = 0; d < hd; d++)
                        s += (double)q[QI(b, i, h) + d] * k[KI(b, j, h) + d];
                    p[j] = s * (double)(float)scale;
                    if (p[j] > mx) mx = p[j];
                    if (fabs(p[j]) > top_score) top_score = fabs(p[j]);
                }
                for (uint32_t j = lo; j < hi; j++)
                    sum += (p[j] = exp(p[j] - mx)); /* exactly 0 for unseen keys */
                for (uint32_t d = 0; d < hd; d++) {
                    double acc = 0;
                    for (uint32_t j = lo; j < hi; j++)
                        acc += p[j] * v[VI(b, j, h) + d];
                    ref[o + d] = hi > lo ? acc / sum : 0.0;
                    written[o + d] = 1;
                }
            }
        }
    }
    static const char *const modes[] = {"full", "causal", "ranges", "block-mask"};
    char name[160];
    name_of(name, sizeof name,
            "attention %s q=%u k=%u heads=%u/%u hd=%u batches=%u pos0=%u scale=%.3g%s%s |s|<=%.0f",
            modes[c->mode], nq, nk, H, KVH, hd, B, c->q_pos0, scale,
            c->packed_kv ? " packed-kv" : "", c->q_pad || c->o_pad || c->off ? " strided" : "",
            top_score);
    check_output(name, got, ref, written, NULL, nob, tol());
    /* Queries that see no key: exactly zero. */
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t lo, hi;
        attn_keys(c, ranges, i, &lo, &hi);
        if (hi > lo) continue;
        size_t nonzero = 0;
        for (uint32_t b = 0; b < B; b++)
            for (size_t d = 0; d < width; d++)
                nonzero += got[o_off + b * ob + i * os + d] != 0.0f;
        CHECK(nonzero == 0, "%s [%s]: query %u has an empty range but %zu nonzero outputs", name,
              prec(), i, nonzero);
    }
#undef QI
#undef KI
#undef VI
    free(q), free(k), free(got), free(ref), free(written), free(p);
    if (!c->packed_kv) free(v);
    case_end();
}

static void test_attention(void) {
    g_op = OP_ATTENTION;
    static const uint32_t hds[] = {8, 16, 80, 130, 256}, nks[] = {1, 5, 127, 128, 129, 300};
    int i = 0;
    for (size_t d = 0; d < sizeof hds / sizeof hds[0]; d++)
        for (size_t k = 0; k < sizeof nks / sizeof nks[0]; k++, i++)
            attention_case(&(AttnCase){.mode = EG_ATTN_FULL,
                                       .nq = 3,
                                       .nk = nks[k],
                                       .heads = i % 2 ? 3 : 1,
                                       .hd = hds[d],
                                       .batches = i % 3 == 0 ? 2 : 1,
                                       .packed_kv = i % 4 == 1,
                                       .q_pad = i % 5 == 2 ? 6 : 0,
                                       .o_pad = i % 5 == 3 ? 10 : 0,
                                       .off = i % 7 == 4 ? 13 : 0,
                                       .scale_mul = i % 4 == 3 ? 2.5f : 0});
    /* Causal: decoding one token at the end of a KV cache, a few tokens at its end, a prefill,
     * and a cache longer than the queries' positions. */
    attention_case(&(AttnCase){.mode = EG_ATTN_CAUSAL,
                               .nq = 1,
                               .nk = 300,
                               .heads = 3,
                               .hd = 80,
                               .batches = 1,
                               .q_pos0 = 299});
    attention_case(&(AttnCase){.mode = EG_ATTN_CAUSAL,
                               .nq = 7,
                               .nk = 129,
                               .heads = 3,
                               .hd = 16,
                               .batches = 2,
                               .q_pos0 = 122,
                               .q_pad = 5,
                               .o_pad = 3,
                               .off = 4});
    attention_case(&(AttnCase){
        .mode = EG_ATTN_CAUSAL, .nq = 130, .nk = 130, .heads = 1, .hd = 8, .batches = 1});
    attention_case(&(AttnCase){.mode = EG_ATTN_CAUSAL,
                               .nq = 5,
                               .nk = 200,
                               .heads = 3,
                               .hd = 130,
                               .batches = 2,
                               .q_pos0 = 125,
                               .packed_kv = 1});
    /* Ranges, including empty ones (lo == hi, lo > hi): those queries output exactly 0. */
    static const uint32_t ranges[] = {0,   0,   0, 128, 128, 300, 5,  6,   100, 100,
                                      299, 300, 0, 300, 7,   3,   50, 129, 127, 129};
    attention_case(&(AttnCase){.mode = EG_ATTN_RANGES,
                               .nq = 10,
                               .nk = 300,
                               .heads = 3,
                               .hd = 16,
                               .batches = 2,
                               .ranges = ranges});
    attention_case(&(AttnCase){.mode = EG_ATTN_RANGES,
                               .nq = 10,
                               .nk = 300,
                               .heads = 1,
                               .hd = 256,
                               .batches = 1,
                               .packed_kv = 1,
                               .o_pad = 7,
                               .off = 3,
                               .ranges = ranges});
    /* The ViT's and the prefill's shapes (65 queries of 40 dims; a causal 64-token prompt),
     * and a head_dim that is not a multiple of anything (5). */
    attention_case(
        &(AttnCase){.mode = EG_ATTN_FULL, .nq = 65, .nk = 65, .heads = 4, .hd = 40, .batches = 2});
    attention_case(&(AttnCase){
        .mode = EG_ATTN_CAUSAL, .nq = 64, .nk = 64, .heads = 4, .hd = 64, .batches = 1});
    attention_case(&(AttnCase){
        .mode = EG_ATTN_FULL, .nq = 6, .nk = 37, .heads = 2, .hd = 5, .batches = 1, .off = 1});
    /* Many queries (what flash attention takes): a ViT-H-like 257 queries of 80 dims, a
     * 100-token causal prefill of 128-dim heads over one key/value head, and 70 queries of
     * cross-attention ranges; none a multiple of any query or key tile. */
    attention_case(&(AttnCase){
        .mode = EG_ATTN_FULL, .nq = 257, .nk = 257, .heads = 2, .hd = 80, .batches = 1});
    attention_case(&(AttnCase){.mode = EG_ATTN_CAUSAL,
                               .nq = 100,
                               .nk = 100,
                               .heads = 2,
                               .kv_heads = 1,
                               .hd = 128,
                               .batches = 1,
                               .q_pad = 3});
    {
        uint32_t many[140];
        for (uint32_t i = 0; i < 70; i++) {
            many[2 * i] = i % 5 == 0 ? 40 : 17 * (i % 3);
            many[2 * i + 1] = i % 5 == 0 ? 40 : 17 * (i % 3) + 45 + i % 50;
        }
        attention_case(&(AttnCase){.mode = EG_ATTN_RANGES,
                                   .nq = 70,
                                   .nk = 131,
                                   .heads = 3,
                                   .hd = 40,
                                   .batches = 2,
                                   .ranges = many});
    }
    /* Large scores (up to +-50): the softmax must subtract the running max. */
    attention_case(&(AttnCase){
        .mode = EG_ATTN_FULL, .nq = 4, .nk = 300, .heads = 3, .hd = 80, .batches = 1, .peak = 50});
    attention_case(&(AttnCase){.mode = EG_ATTN_CAUSAL,
                               .nq = 3,
                               .nk = 129,
                               .heads = 1,
                               .hd = 64,
                               .batches = 2,
                               .q_pos0 = 126,
                               .peak = 50,
                               .scale_mul = 0.5f});
    attention_case(&(AttnCase){.mode = EG_ATTN_RANGES,
                               .nq = 10,
                               .nk = 300,
                               .heads = 1,
                               .hd = 8,
                               .batches = 1,
                               .peak = 50,
                               .ranges = ranges});
    /* Grouped-query attention (Llama's self-attention: 4 and 3 query heads per key/value head,
     * and one key/value head for all): causal prefill, decode, packed keys/values. */
    attention_case(&(AttnCase){.mode = EG_ATTN_CAUSAL,
                               .nq = 13,
                               .nk = 13,
                               .heads = 8,
                               .kv_heads = 2,
                               .hd = 16,
                               .batches = 1});
    attention_case(&(AttnCase){.mode = EG_ATTN_CAUSAL,
                               .nq = 1,
                               .nk = 131,
                               .heads = 6,
                               .kv_heads = 2,
                               .hd = 24,
                               .batches = 2,
                               .q_pos0 = 130,
                               .q_pad = 3});
    attention_case(&(AttnCase){.mode = EG_ATTN_FULL,
                               .nq = 5,
                               .nk = 129,
                               .heads = 3,
                               .kv_heads = 1,
                               .hd = 130,
                               .batches = 1,
                               .packed_kv = 1});
    /* Block masks (mllama's cross-attention to image tiles: blocks of 5 keys, 60 blocks in two
     * words; 300 keys in blocks of 7, the last one partial): disjoint blocks, one block, all,
     * none (exactly zero), the last partial block, bits past the keys. */
    /* [10 queries][2 words] */
    static const uint32_t masks[] = {0x5u,        0,           0,    0x8000000u,  0xFFFFFFFFu,
                                     0x0FFFFFFFu, 0,           0,    0x80000001u, 1,
                                     0xF0F0F0F0u, 0x0F0F0F0Fu, 0x2u, 0x08000000u, 0x10000u,
                                     0,           0xFFFFFFFEu, 0,    0,           0xFFFFFFFFu};
    attention_case(&(AttnCase){.mode = EG_ATTN_BLOCK_MASK,
                               .nq = 10,
                               .nk = 300,
                               .heads = 4,
                               .kv_heads = 2,
                               .hd = 16,
                               .batches = 2,
                               .ranges = masks,
                               .mask_block = 5,
                               .mask_words = 2});
    /* queries 0..6 read mask rows 3..9 (q_pos0: one mask buffer for several dispatches) */
    attention_case(&(AttnCase){.mode = EG_ATTN_BLOCK_MASK,
                               .nq = 7,
                               .q_pos0 = 3,
                               .nk = 300,
                               .heads = 6,
                               .kv_heads = 3,
                               .hd = 24,
                               .batches = 1,
                               .ranges = masks,
                               .mask_block = 5,
                               .mask_words = 2});
    attention_case(&(AttnCase){.mode = EG_ATTN_BLOCK_MASK,
                               .nq = 10,
                               .nk = 300,
                               .heads = 2,
                               .kv_heads = 1,
                               .hd = 40,
                               .batches = 1,
                               .packed_kv = 1,
                               .o_pad = 5,
                               .peak = 50,
                               .ranges = masks,
                               .mask_block = 7,
                               .mask_words = 2});
}

/* Norm and attention kernel variants other devices get (runtime/ops.c row_params), forced
 * here: the shared-memory kernels (no subgroup arithmetic), the GPU shapes (128 invocations:
 * 16 of lavapipe's subgroups exchanging through shared memory, one query, 4 dimensions each,
 * storage-buffer loads), a mix (2 subgroups per workgroup, 3 queries, 8 dimensions each,
 * 8-element loads, through texel views where the device has them; norm: 3 subgroups, each its
 * own row), and the CPU shapes with storage-buffer loads. The default run covers the CPU
 * shapes (one subgroup; on CPU devices through texel views). */
static const struct {
    const char *name;
    EgOpsConfig cfg;
} ROW_VARIANTS[] = {
    {"shared-memory norm 128, attention", {.no_subgroup = 1, .norm_wg = 128}},
    {"subgroup norm 128, attention 128x1 queries x4 dims",
     {.norm_wg = 128,
      .attn_wg = 128,
      .attn_queries = 1,
      .attn_dims = 4,
      .attn_wide = -1,
      .attn_texel = -1}},
    {"subgroup norm 24 for 3 rows, attention 16x3 queries x8 dims wide",
     {.norm_wg = 24,
      .norm_rows = 3,
      .attn_wg = 16,
      .attn_queries = 3,
      .attn_dims = 8,
      .attn_wide = 1}},
    {"default norm, default attention from storage buffers", {.attn_texel = -1}},
    {"norm one element per load, default attention", {.norm_wide = -1}},
};

static void test_norm(void);
static void test_attention(void);

/* Flash attention (attention_flash.comp) for every attention case it can take (heads up to
 * lanes·dimensions; larger ones run attention.comp): the automatic CPU shape (8 lanes per query,
 * 16-key tiles), the GPU's lanes and dimensions (4 of 32, with tiles of 24 keys to fit a CPU
 * device's shared memory), and one invocation per query (no shuffles). */
static const struct {
    const char *name;
    EgOpsConfig cfg;
} FLASH_VARIANTS[] = {
    {"flash attention", {.attn_flash = 1}},
    {"flash attention 96 = 24 queries x 4 lanes x 32 dims, 24-key tiles",
     {.attn_flash = 1, .flash_wg = 96, .flash_lanes = 4, .flash_dims = 32, .flash_keys = 24}},
    {"flash attention 16 queries x 1 lane x 64 dims, 8-key tiles",
     {.attn_flash = 1, .flash_wg = 16, .flash_lanes = 1, .flash_dims = 64, .flash_keys = 8}},
};

static void test_flash_variants(int f16) {
    for (size_t v = 0; v < sizeof FLASH_VARIANTS / sizeof FLASH_VARIANTS[0]; v++) {
        EgOps ops;
        EgError err = {0};
        EgOpsConfig cfg = FLASH_VARIANTS[v].cfg;
        cfg.naive = -1;
        cfg.quant_kernels = -1; /* no quantized product runs here: their kernels go unbuilt */
        if (eg_ops_init_config(&ops, &g_vk, f16, &cfg, &err)) {
            printf("  attention [%s]: skipped on this device: %s\n", FLASH_VARIANTS[v].name,
                   err.msg);
            continue;
        }
        printf("  attention [%s]\n", FLASH_VARIANTS[v].name);
        CHECK(ops.attn_flash == 2, "[%s] flash attention not in use", FLASH_VARIANTS[v].name);
        EgOps *saved = g_ops;
        g_ops = &ops;
        test_attention();
        g_ops = saved;
        eg_ops_destroy(&ops);
    }
}

static void test_row_variants(int f16) {
    for (size_t v = 0; v < sizeof ROW_VARIANTS / sizeof ROW_VARIANTS[0]; v++) {
        EgOps ops;
        EgError err = {0};
        EgOpsConfig cfg = ROW_VARIANTS[v].cfg;
        cfg.naive = -1;
        cfg.quant_kernels = -1; /* no quantized product runs here: their kernels go unbuilt */
        if (eg_ops_init_config(&ops, &g_vk, f16, &cfg, &err)) {
            printf("  norm/attention [%s]: skipped on this device: %s\n", ROW_VARIANTS[v].name,
                   err.msg);
            continue;
        }
        printf("  norm/attention [%s]\n", ROW_VARIANTS[v].name);
        EgOps *saved = g_ops;
        g_ops = &ops;
        test_norm();
        test_attention();
        g_ops = saved;
        eg_ops_destroy(&ops);
    }
}

/* ---- eg_op_rope */

typedef struct RopeCase {
    uint32_t rows, heads, hd, pos0;
    uint32_t off, pad; /* rows at off with stride heads * hd + pad */
} RopeCase;

static void rope_case(const RopeCase *c) {
    uint32_t R = c->rows, H = c->heads, hd = c->hd, half = hd / 2;
    size_t width = (size_t)H * hd, stride = width + c->pad;
    size_t nx = c->off + (R - 1) * stride + width + 3;
    uint32_t positions = c->pos0 + R + 2;
    float *x = host_normal(nx, 1.0f);
    float *table = malloc((size_t)positions * hd * sizeof *table);
    eg_rope_table(table, positions, hd, 10000.0f);
    EgBuffer bx = dev(nx), bt = dev_bytes((size_t)positions * hd * sizeof(float));
    put(&bx, 0, x, nx);
    put_raw(&bt, table, (size_t)positions * hd * sizeof(float)); /* float in both precisions */
    EgCmd cmd;
    begin(&cmd);
    EgRope a = {.x = &bx,
                .x_off = c->off,
                .stride = c->pad ? (uint32_t)stride : 0,
                .rows = R,
                .heads = H,
                .head_dim = hd,
                .pos0 = c->pos0,
                .table = &bt,
                .table_positions = positions};
    eg_op_rope(&cmd, g_ops, &a);
    submit(&cmd);
    float *got = get(&bx, nx);

    /* ref: exact angles pos / 10000^(2j/hd) in double; ref_table: the table's float cos/sin,
     * which isolates the shader (indexing, pairing, arithmetic) from the angle rounding. */
    double *ref = calloc(nx, sizeof *ref), *ref_table = calloc(nx, sizeof *ref_table);
    unsigned char *written = calloc(nx, 1);
    double max_table_err = 0;
    for (uint32_t r = 0; r < R; r++) {
        uint32_t pos = c->pos0 + r;
        for (uint32_t j = 0; j < half; j++) {
            double angle = (double)pos / pow(10000.0, 2.0 * j / hd);
            double cs = cos(angle), sn = sin(angle);
            double tc = table[(size_t)pos * half + j];
            double ts = table[(size_t)positions * half + (size_t)pos * half + j];
            if (fabs(tc - cs) > max_table_err) max_table_err = fabs(tc - cs);
            if (fabs(ts - sn) > max_table_err) max_table_err = fabs(ts - sn);
            for (uint32_t h = 0; h < H; h++) {
                size_t base = c->off + r * stride + (size_t)h * hd;
                double x1 = x[base + j], x2 = x[base + j + half];
                ref[base + j] = x1 * cs - x2 * sn;
                ref[base + j + half] = x2 * cs + x1 * sn;
                ref_table[base + j] = x1 * tc - x2 * ts;
                ref_table[base + j + half] = x2 * tc + x1 * ts;
                written[base + j] = written[base + j + half] = 1;
            }
        }
    }
    /* eg_rope_table rounds inv_freq and angle to float32 as HF does: the angle is off by up to
     * ~3 * 2^-24 * angle (1.8e-4 at position 1000), which bounds the cos/sin error. */
    double angle_slack = 3.0 * ldexp(1.0, -24) * (c->pos0 + R - 1);
    CHECK(max_table_err <= angle_slack + 1e-7,
          "eg_rope_table hd=%u positions=%u: cos/sin off by %.3e (allowed %.3e)", hd, positions,
          max_table_err, angle_slack + 1e-7);
    char name[160];
    name_of(name, sizeof name, "rope rows=%u heads=%u hd=%u pos0=%u x+%u/%zu (table cos/sin)", R, H,
            hd, c->pos0, c->off, stride);
    check_output(name, got, ref_table, written, x, nx, tol());
    name_of(name, sizeof name, "rope rows=%u heads=%u hd=%u pos0=%u x+%u/%zu (exact angles)", R, H,
            hd, c->pos0, c->off, stride);
    check_output(name, got, ref, written, x, nx, tol() + angle_slack);
    free(x), free(table), free(got), free(ref), free(ref_table), free(written);
    case_end();
}

static void test_rope(void) {
    g_op = OP_ROPE;
    static const uint32_t rows[] = {1, 7}, heads[] = {1, 3}, hds[] = {8, 64, 128},
                          pos0s[] = {0, 5, 1000};
    for (size_t r = 0; r < 2; r++)
        for (size_t h = 0; h < 2; h++)
            for (size_t d = 0; d < 3; d++)
                for (size_t p = 0; p < 3; p++)
                    rope_case(&(RopeCase){
                        .rows = rows[r], .heads = heads[h], .hd = hds[d], .pos0 = pos0s[p]});
    /* Queries and keys of a fused QKV buffer: rows 3 * width apart, k at offset width. */
    rope_case(&(RopeCase){.rows = 7, .heads = 3, .hd = 64, .pos0 = 5, .off = 0, .pad = 2 * 3 * 64});
    rope_case(
        &(RopeCase){.rows = 7, .heads = 3, .hd = 64, .pos0 = 5, .off = 3 * 64, .pad = 2 * 3 * 64});
    rope_case(&(RopeCase){.rows = 5, .heads = 1, .hd = 8, .pos0 = 1000, .off = 7, .pad = 3});
}

/* ---- eg_op_embed */

/* Token ids over a main table [0, V) and an additional one [V, V + A); the main table is
 * optionally split into two chunks (row0/n_rows). The output starts at out_off in a poisoned
 * buffer; after the main table(s) only, the additional-table tokens must still be poison. */
static void embed_case(uint32_t tokens, uint32_t dim, uint32_t V, uint32_t A, int split,
                       uint32_t out_off) {
    uint32_t *ids = malloc(tokens * sizeof *ids);
    for (uint32_t t = 0; t < tokens; t++)
        ids[t] = rand_below(V + A);
    ids[0] = 0, ids[1] = V - 1, ids[2] = V, ids[tokens - 1] = V + A - 1; /* the edges */
    float *main_t = host_normal((size_t)V * dim, 1.0f), *add_t = host_normal((size_t)A * dim, 1.0f);
    uint32_t split_row = split ? V / 2 + 1 : V;
    size_t nout = out_off + (size_t)tokens * dim + 4;
    EgBuffer bids = dev_bytes(tokens * sizeof(uint32_t)), bout = dev(nout);
    EgBuffer bm0 = dev((size_t)split_row * dim), bm1 = dev((size_t)(V - split_row) * dim + 1);
    EgBuffer badd = dev((size_t)A * dim);
    put_raw(&bids, ids, tokens * sizeof(uint32_t));
    put(&bm0, 0, main_t, (size_t)split_row * dim);
    if (split) put(&bm1, 0, main_t + (size_t)split_row * dim, (size_t)(V - split_row) * dim);
    put(&badd, 0, add_t, (size_t)A * dim);

    EgCmd cmd;
    begin(&cmd);
    eg_cmd_fill(&cmd, &bout, POISON);
    EgEmbed a = {.ids = &bids,
                 .table = &bm0,
                 .row0 = 0,
                 .n_rows = split_row,
                 .out = &bout,
                 .out_off = out_off,
                 .tokens = tokens,
                 .dim = dim};
    eg_op_embed(&cmd, g_ops, &a);
    if (split) {
        a.table = &bm1, a.row0 = split_row, a.n_rows = V - split_row;
        eg_op_embed(&cmd, g_ops, &a);
    }
    submit(&cmd);
    float *got_main = get(&bout, nout);

    begin(&cmd);
    a.table = &badd, a.row0 = V, a.n_rows = A;
    eg_op_embed(&cmd, g_ops, &a);
    submit(&cmd);
    float *got = get(&bout, nout);

    double *ref = calloc(nout, sizeof *ref);
    unsigned char *written = calloc(nout, 1);
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t t = 0; t < tokens; t++) {
            int in_main = ids[t] < V;
            if (pass == 0 && !in_main) continue;
            const float *row =
                in_main ? main_t + (size_t)ids[t] * dim : add_t + (size_t)(ids[t] - V) * dim;
            for (uint32_t d = 0; d < dim; d++) {
                ref[out_off + (size_t)t * dim + d] = row[d];
                written[out_off + (size_t)t * dim + d] = 1;
            }
        }
        char name[160];
        name_of(name, sizeof name, "embed tokens=%u dim=%u main=%u%s add=%u out+%u, %s", tokens,
                dim, V, split ? " (2 chunks)" : "", A, out_off,
                pass ? "both tables" : "main table only");
        check_output(name, pass ? got : got_main, ref, written, NULL, nout, 0.0);
    }
    free(ids), free(main_t), free(add_t), free(got_main), free(got), free(ref), free(written);
    case_end();
}

static void test_embed(void) {
    g_op = OP_EMBED;
    embed_case(20, 40, 50, 7, 0, 0);
    embed_case(33, 67, 101, 3, 1, 5);
    embed_case(4, 1, 9, 2, 1, 3);
}

/* ---- eg_op_patchify + eg_op_linear (the patch conv) + eg_op_vit_embed */

static void vit_case(uint32_t images, uint32_t size, uint32_t patch) {
    EgError err = {0};
    const uint32_t C = 3, E = 24;
    uint32_t grid = size / patch, np = grid * grid, row = C * patch * patch;
    size_t npix = (size_t)images * C * size * size, npatch = (size_t)images * np * row;
    size_t nemb = (size_t)images * np * E, nout = (size_t)images * (np + 1) * E;
    float *pix = host_uniform(npix, -1, 1);
    float *w = host_normal((size_t)E * row, 1.0f / sqrtf((float)row));
    float *cls = host_normal(E, 1.0f), *pos = host_normal((size_t)(np + 1) * E, 1.0f);
    EgBuffer bpix = dev(npix), bpatch = dev(npatch), bemb = dev(nemb), bcls = dev(E);
    EgBuffer bpos = dev((size_t)(np + 1) * E), bout = dev(nout);
    put(&bpix, 0, pix, npix);
    put(&bcls, 0, cls, E);
    put(&bpos, 0, pos, (size_t)(np + 1) * E);
    EgMatrix wm;
    must(eg_matrix_create(g_ops, &g_arena, E, row, 0, &wm, &err), &err, "eg_matrix_create");
    must(eg_matrix_upload_f32(g_ops, &g_st, &wm, w, &err), &err, "eg_matrix_upload_f32");

    EgCmd cmd;
    begin(&cmd);
    eg_cmd_fill(&cmd, &bpatch, POISON);
    eg_cmd_fill(&cmd, &bemb, POISON);
    eg_cmd_fill(&cmd, &bout, POISON);
    eg_op_patchify(&cmd, g_ops, &bpix, &bpatch, images, C, size, patch);
    eg_op_linear(&cmd, g_ops, &(EgLinear){.x = &bpatch, .w = &wm, .y = &bemb, .rows = images * np});
    eg_op_vit_embed(&cmd, g_ops, &bemb, &bcls, &bpos, &bout, images, np, E);
    submit(&cmd);
    float *got_patch = get(&bpatch, npatch), *got_emb = get(&bemb, nemb), *got = get(&bout, nout);

    /* Patchify: a pure rearrangement, exact. */
    double *ref_patch = malloc(npatch * sizeof *ref_patch);
    for (uint32_t n = 0; n < images; n++)
        for (uint32_t pi = 0; pi < np; pi++)
            for (uint32_t c = 0; c < C; c++)
                for (uint32_t py = 0; py < patch; py++)
                    for (uint32_t px = 0; px < patch; px++) {
                        size_t src =
                            (((size_t)n * C + c) * size + (pi / grid) * patch + py) * size +
                            (pi % grid) * patch + px;
                        ref_patch[((size_t)n * np + pi) * row + (c * patch + py) * patch + px] =
                            pix[src];
                    }
    char name[160];
    g_op = OP_PATCHIFY;
    name_of(name, sizeof name, "patchify images=%u C=%u size=%u patch=%u", images, C, size, patch);
    compare(name, got_patch, ref_patch, npatch, 0.0);

    /* The ViT input from the conv2d (kernel = stride = patch) computed directly on the image:
     * [cls; patches] + pos. In fp16 the patch embeddings are rounded to half in between. */
    double *ref = malloc(nout * sizeof *ref), *ref_vit = malloc(nout * sizeof *ref_vit);
    for (uint32_t n = 0; n < images; n++) {
        for (uint32_t t = 0; t <= np; t++) {
            for (uint32_t e = 0; e < E; e++) {
                size_t o = ((size_t)n * (np + 1) + t) * E + e;
                double conv = cls[e], emb = cls[e];
                if (t > 0) {
                    uint32_t gy = (t - 1) / grid, gx = (t - 1) % grid;
                    conv = 0;
                    for (uint32_t c = 0; c < C; c++)
                        for (uint32_t py = 0; py < patch; py++)
                            for (uint32_t px = 0; px < patch; px++)
                                conv += (double)w[(size_t)e * row + (c * patch + py) * patch + px] *
                                        pix[(((size_t)n * C + c) * size + gy * patch + py) * size +
                                            gx * patch + px];
                    emb = got_emb[((size_t)n * np + t - 1) * E + e];
                }
                ref[o] = conv + pos[(size_t)t * E + e];
                ref_vit[o] = emb + pos[(size_t)t * E + e];
            }
        }
    }
    g_op = OP_VIT_EMBED;
    name_of(name, sizeof name, "vit_embed images=%u patches=%u dim=%u (of the GPU embeddings)",
            images, np, E);
    compare(name, got, ref_vit, nout, tol());
    name_of(name, sizeof name, "vit_embed images=%u size=%u patch=%u (from conv2d on the image)",
            images, size, patch);
    /* Two output roundings in fp16 (embedding and sum). */
    compare(name, got, ref, nout, g_ops->f16 ? 2 * tol() : tol());
    eg_matrix_release(&wm);
    free(pix), free(w), free(cls), free(pos), free(got_patch), free(got_emb), free(got);
    free(ref_patch), free(ref), free(ref_vit);
    case_end();
}

static void test_vit(void) {
    for (uint32_t images = 1; images <= 2; images++) {
        vit_case(images, 24, 8);
        vit_case(images, 28, 14);
    }
}

/* ---- eg_op_rows_combine: gathered rows of four sources, scaled and summed, written strided
 * (or added to what is there), against a double reference; unwritten elements must keep their
 * values. */

static void rows_combine_case(uint32_t rows, uint32_t dim, uint32_t o_elem, int accum) {
    const uint32_t src_rows[4] = {7, 1, 13, 29}, src_off[4] = {0, 3, 5, 11};
    const float coef[4] = {1.0f, -0.5f, 0.25f, 2.0f};
    uint32_t o_off = 2, o_row = dim * o_elem + 3;
    size_t n_out = (size_t)rows * o_row + o_off;
    float *src[4];
    EgBuffer bsrc[4];
    for (int s = 0; s < 4; s++) {
        size_t n = src_off[s] + (size_t)src_rows[s] * (dim + 1); /* rows of dim + 1: a stride */
        src[s] = host_normal(n, 1.0f);
        bsrc[s] = dev(n);
        put(&bsrc[s], 0, src[s], n);
    }
    /* each source left out of about a third of the rows */
    uint32_t *idx = malloc((size_t)rows * 4 * sizeof *idx);
    for (size_t i = 0; i < (size_t)rows * 4; i++)
        idx[i] = rand_below(3) == 0 ? EG_ROWS_NONE : rand_below(src_rows[i % 4]);
    EgBuffer bidx = dev_bytes((size_t)rows * 4 * sizeof *idx), bout = dev(n_out);
    put_raw(&bidx, idx, (size_t)rows * 4 * sizeof *idx);
    float *before = host_normal(n_out, 1.0f);
    put(&bout, 0, before, n_out);

    EgRowsCombine a = {.out = &bout,
                       .o_off = o_off,
                       .o_row = o_row,
                       .o_elem = o_elem,
                       .accum = accum,
                       .rows = rows,
                       .dim = dim,
                       .idx = &bidx};
    for (int s = 0; s < 4; s++)
        a.s[s] = (EgRowsSource){&bsrc[s], src_off[s], dim + 1, coef[s]};
    EgCmd cmd;
    begin(&cmd);
    eg_op_rows_combine(&cmd, g_ops, &a);
    submit(&cmd);
    float *got = get(&bout, n_out);

    double *ref = calloc(n_out, sizeof *ref);
    unsigned char *written = calloc(n_out, 1);
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t e = 0; e < dim; e++) {
            size_t o = o_off + (size_t)r * o_row + (size_t)e * o_elem;
            double v = accum ? before[o] : 0.0;
            for (int s = 0; s < 4; s++) {
                uint32_t i = idx[(size_t)r * 4 + s];
                if (i != EG_ROWS_NONE)
                    v += coef[s] * src[s][src_off[s] + (size_t)i * (dim + 1) + e];
            }
            ref[o] = v;
            written[o] = 1;
        }
    char name[160];
    g_op = OP_ROWS_COMBINE;
    name_of(name, sizeof name, "rows_combine rows=%u dim=%u o_elem=%u%s", rows, dim, o_elem,
            accum ? " accum" : "");
    check_output(name, got, ref, written, before, n_out, tol());
    for (int s = 0; s < 4; s++)
        free(src[s]);
    free(idx), free(before), free(got), free(ref), free(written);
    case_end();
}

static void test_rows_combine(void) {
    rows_combine_case(53, 37, 1, 0);
    rows_combine_case(29, 70, 3, 1);
    rows_combine_case(65541, 2, 2, 0); /* rows past one dispatch dimension (65535) */
}

/* ---- Model-sized launches. A dispatch may not exceed maxComputeWorkGroupCount (65535 per
 * dimension on lavapipe and on many GPUs; the validation layer reports it). These sizes are
 * IDEFICS-9B's (hidden 4096, 32 heads of 128, context 2048; ViT-H/14: 1280 wide, 224 px). */

static void check_launch(const char *what, int before) {
    const uint32_t *lim = g_vk.props.limits.maxComputeWorkGroupCount;
    int n = eg_vk_validation_message_count() - before;
    CHECK(n == 0, "%s [%s]: %d validation messages (maxComputeWorkGroupCount %u x %u x %u)", what,
          prec(), n, lim[0], lim[1], lim[2]);
}

static void patchify_case(uint32_t images, uint32_t size, uint32_t patch) {
    const uint32_t C = 3;
    uint32_t grid = size / patch, np = grid * grid, row = C * patch * patch;
    size_t n = (size_t)images * C * size * size;
    float *pix = host_uniform(n, -1, 1);
    EgBuffer bpix = dev(n), bpatch = dev(n);
    put(&bpix, 0, pix, n);
    EgCmd cmd;
    begin(&cmd);
    eg_cmd_fill(&cmd, &bpatch, POISON);
    eg_op_patchify(&cmd, g_ops, &bpix, &bpatch, images, C, size, patch);
    submit(&cmd);
    float *got = get(&bpatch, n);
    double *ref = malloc(n * sizeof *ref);
    for (uint32_t i = 0; i < images; i++)
        for (uint32_t c = 0; c < C; c++)
            for (uint32_t y = 0; y < size; y++)
                for (uint32_t x = 0; x < size; x++)
                    ref[((size_t)i * np + (y / patch) * grid + x / patch) * row +
                        (c * patch + y % patch) * patch + x % patch] =
                        pix[(((size_t)i * C + c) * size + y) * size + x];
    char name[160];
    name_of(name, sizeof name, "patchify images=%u C=%u size=%u patch=%u", images, C, size, patch);
    compare(name, got, ref, n, 0.0);
    free(pix), free(got), free(ref);
    case_end();
}

static void vit_embed_case(uint32_t images, uint32_t np, uint32_t dim) {
    size_t nin = (size_t)images * np * dim, nout = (size_t)images * (np + 1) * dim;
    float *patches = host_normal(nin, 1.0f), *cls = host_normal(dim, 1.0f);
    float *pos = host_normal((size_t)(np + 1) * dim, 1.0f);
    EgBuffer bp = dev(nin), bc = dev(dim), bpos = dev((size_t)(np + 1) * dim), bo = dev(nout);
    put(&bp, 0, patches, nin);
    put(&bc, 0, cls, dim);
    put(&bpos, 0, pos, (size_t)(np + 1) * dim);
    EgCmd cmd;
    begin(&cmd);
    eg_cmd_fill(&cmd, &bo, POISON);
    eg_op_vit_embed(&cmd, g_ops, &bp, &bc, &bpos, &bo, images, np, dim);
    submit(&cmd);
    float *got = get(&bo, nout);
    double *ref = malloc(nout * sizeof *ref);
    for (uint32_t i = 0; i < images; i++)
        for (uint32_t t = 0; t <= np; t++)
            for (uint32_t e = 0; e < dim; e++)
                ref[((size_t)i * (np + 1) + t) * dim + e] =
                    (double)(t ? patches[((size_t)i * np + t - 1) * dim + e] : cls[e]) +
                    pos[(size_t)t * dim + e];
    char name[160];
    name_of(name, sizeof name, "vit_embed images=%u patches=%u dim=%u", images, np, dim);
    compare(name, got, ref, nout, tol());
    free(patches), free(cls), free(pos), free(got), free(ref);
    case_end();
}

static void test_model_sized(void) {
    int before = eg_vk_validation_message_count();
    g_op = OP_EMBED; /* 1040 prompt tokens x 4096: 66560 workgroups of 64 */
    embed_case(1040, 4096, 3, 2, 0, 0);
    check_launch("embed tokens=1040 dim=4096", before);
    before = eg_vk_validation_message_count();
    g_op = OP_ROPE; /* a 2048-token prefill, 32 heads of 128: 65536 workgroups of 64 */
    rope_case(&(RopeCase){.rows = 2048, .heads = 32, .hd = 128, .pos0 = 0});
    check_launch("rope rows=2048 heads=32 hd=128", before);
    before = eg_vk_validation_message_count();
    g_op = OP_PATCHIFY; /* 28 images of 3 x 224 x 224: 65856 workgroups of 64 */
    patchify_case(28, 224, 14);
    check_launch("patchify images=28 size=224 patch=14", before);
    before = eg_vk_validation_message_count();
    g_op = OP_VIT_EMBED; /* 13 images x 257 tokens x 1280: 66820 workgroups of 64 */
    vit_embed_case(13, 256, 1280);
    check_launch("vit_embed images=13 patches=256 dim=1280", before);
}

/* ---- Driver */

/* `test_ops [fp32|fp16]`: one precision's kernels (ctest runs the two as test_ops_fp32 and
 * test_ops_fp16, side by side); both without an argument. */
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep results and CHECK messages in order */
    int first = 0, last = 1;
    if (argc > 1) {
        if (strcmp(argv[1], "fp32") != 0 && strcmp(argv[1], "fp16") != 0) {
            fprintf(stderr, "usage: %s [fp32|fp16]\n", argv[0]);
            return 2;
        }
        first = last = strcmp(argv[1], "fp16") == 0;
    }
    test_rng_init();
    clock_t t0 = clock();
    EgError err = {0};
    must(eg_vk_create(&g_vk, NULL, &err), &err, "eg_vk_create");
    printf("device: %s, validation %s\n", g_vk.props.deviceName, g_vk.validation ? "on" : "off");
    EgOps ops[2]; /* fp32, fp16: each init builds every pipeline of its precision */
    for (int p = first; p <= last; p++)
        must(eg_ops_init(&ops[p], &g_vk, p, &err), &err,
             p ? "eg_ops_init (fp16)" : "eg_ops_init (fp32)");
    must(eg_staging_init(&g_st, &g_vk, 1u << 20, &err), &err, "eg_staging_init");
    eg_arena_init(&g_arena, &g_vk, EG_MEM_DEVICE, 4u << 20);

    for (int p = first; p <= last; p++) {
        g_ops = &ops[p];
        test_linear();
        test_linear_quant(1);
        if (g_vk.texel_views) { /* the quantized kernels' storage-buffer loads (GPUs') too */
            EgOps sb;
            EgError err = {0};
            must(eg_ops_init_config(&sb, &g_vk, p, &(EgOpsConfig){.naive = -1, .md_texel = -1},
                                    &err),
                 &err, "eg_ops_init_config (storage-buffer loads)");
            g_ops = &sb;
            g_variant = " [storage-buffer loads]";
            test_linear_quant(0);
            g_variant = "";
            g_ops = &ops[p];
            eg_ops_destroy(&sb);
        }
        test_linear_edges(1);
        test_linear_variants(p);
        test_norm();
        test_attention();
        test_row_variants(p);
        test_flash_variants(p);
        test_rope();
        test_embed();
        test_vit();
        test_rows_combine();
        test_model_sized();
    }

    printf(
        "\nworst errors per op: relative L2 / max abs (tensors). Tolerance fp32 1e-5, fp16 2e-3;\n"
        "fp32 LayerNorm of rows near 1000: 3e-4; RoPE against exact angles: + float32 angle "
        "rounding.\n");
    printf("  %-10s %-28s %-28s\n", "op", "fp32", "fp16");
    for (int o = 0; o < N_OPS; o++)
        printf("  %-10s %.2e / %.2e (%3d)       %.2e / %.2e (%3d)\n", OP_NAMES[o],
               g_worst[o][0].rel, g_worst[o][0].abs, g_worst[o][0].tensors, g_worst[o][1].rel,
               g_worst[o][1].abs, g_worst[o][1].tensors);
    printf("the tensor with the worst relative error, per op:\n");
    for (int o = 0; o < N_OPS; o++)
        for (int p = 0; p < 2; p++)
            printf("  [%s] %s\n", p ? "fp16" : "fp32", g_worst[o][p].worst);

    eg_arena_reset(&g_arena);
    eg_staging_destroy(&g_st);
    for (int p = first; p <= last; p++)
        eg_ops_destroy(&ops[p]);
    eg_vk_destroy(&g_vk);
    CHECK(eg_vk_validation_message_count() == 0, "%d validation messages",
          eg_vk_validation_message_count());
    printf("cpu time %.1f s\n", (double)(clock() - t0) / CLOCKS_PER_SEC);
    return test_finish();
}
