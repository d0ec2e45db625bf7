/* Micro-benchmark of eg_op_linear: the original simple kernels (EGRET_OPS_NAIVE) against the
 * fast ones, side by side on the same device, at decode shapes (1 and 8 rows of x: the
 * matrix-vector kernels, bound by reading W) and prefill shapes (64 and 256 rows: the tiled
 * matrix-matrix kernels, bound by arithmetic). A benchmark, never a test: it prints times, and
 * as a sanity check each kernel's relative L2 error against a double-precision reference
 * (products up to 2e8 multiply-adds; larger ones: new against old).
 *
 *   ops_bench [--quick] [--samples N] [--only decode|prefill] [--fp32|--fp16] [--big]
 *             [--shape MxNxK] [--rows]
 *             [--no-subgroup] [--mv-wg N] [--mv-rpg N] [--mv-load64 1|-1] [--vs-default]
 *             [--mm-direct 1|-1] [--md-few 1|-1] [--md-texel 1|-1] [--attn-texel 1|-1]
 *             [--norm-rows N] [--attn-queries N]
 *             [--mm|--mm-small|--mm-large BMxBNxBKxTMxTN]   (--mm: both tiles)
 *             [--quant q8|q4] [--int-dot 1|-1]
 *
 * --vs-default: "old" is the default fast kernels instead of the naive ones, so that the options
 * (--mv-rpg, --mv-load64, ...) are measured against the defaults, sample by sample.
 * --int-dot 1|-1: the new kernels' quantized products of up to 8 rows on integer dot products
 * (docs/quantization.md "Integer dot products") or never (default: EGRET_INT_DOT, else never).
 *
 * Each sample records `inner` back-to-back linear ops into one command buffer (sized so a
 * sample takes about 50 ms), submits it and waits; old and new alternate sample by sample, and
 * the fastest per-op time of each is reported (the minimum: the machine may be shared, and
 * interference only ever adds time), as wall time and as process CPU time (on lavapipe the
 * driver's worker threads: robust to other processes competing for the cores), each with
 * new/old, and for the new kernel GB/s (bytes of W, x and y moved once) and GFLOP/s
 * (2·M·N·K) from wall time. The shapes: the demo model's (K = 256 →
 * N = 256, 704, 477; 640 → 256) and, with --big or by default in fp16, IDEFICS-9B's hidden size
 * (K = 4096 → N = 4096, 11008; 11008 → 4096), which on lavapipe approach the streaming limit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/device_tensor.h"
#include "runtime/half.h"
#include "runtime/ops.h"

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const EgError *err) {
    fprintf(stderr, "ops_bench: %s: %s\n", what, err->msg);
    exit(1);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float rng_normalish(void) {
    /* Sum of 4 uniforms: cheap, roughly normal, enough for timing. */
    float s = 0;
    for (int i = 0; i < 4; i++) {
        rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
        s += (float)(rng_state >> 40) / (float)(1u << 24) - 0.5f;
    }
    return s * 1.7f;
}

typedef struct {
    uint32_t M, N, K;
} Shape;

static EgVk vk;
static EgStaging st;
/* --quant: "new" multiplies the weights quantized (docs/quantization.md), "old" the default
 * kernels with them dense; the new error is then mostly the quantization's */
static EgWeightFormat quant;

static double fastest(const double *v, int n) {
    double m = INFINITY;
    for (int i = 0; i < n; i++)
        if (v[i] < m) m = v[i];
    return m;
}

/* Wall-clock seconds for `inner` linear ops in one command buffer; *cpu: the process's CPU
 * seconds meanwhile (on a CPU device such as lavapipe, the driver's worker threads doing the
 * work: a measure that other processes competing for the cores disturb much less). */
static double time_ops(const EgOps *ops, const EgLinear *a, int inner, double *cpu) {
    EgError err = {0};
    EgCmd cmd;
    if (eg_cmd_begin(&vk, &cmd, &err)) die("eg_cmd_begin", &err);
    for (int i = 0; i < inner; i++)
        eg_op_linear(&cmd, ops, a);
    double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    if (eg_cmd_submit_wait(&cmd, &err)) die("submit", &err);
    if (cpu) *cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    return clock_s(CLOCK_MONOTONIC) - t0;
}

static void bench_shape(const EgOps *old, const EgOps *fast, Shape s, int samples) {
    if (samples < 1) samples = 1;
    EgError err = {0};
    EgArena arena;
    eg_arena_init(&arena, &vk, EG_MEM_DEVICE, 64u << 20);
    size_t nx = (size_t)s.M * s.K, nw = (size_t)s.N * s.K, ny = (size_t)s.M * s.N;
    float *hx = malloc(nx * sizeof *hx), *hw = malloc(nw * sizeof *hw);
    EgBuffer x, y_old, y_new;
    EgMatrix w, wq;
    if (eg_tensor_buffer(fast, &arena, nx, &x, &err) ||
        eg_tensor_buffer(fast, &arena, ny, &y_old, &err) ||
        eg_tensor_buffer(fast, &arena, ny, &y_new, &err) ||
        eg_matrix_create(fast, &arena, s.N, s.K, 0, &w, &err) ||
        eg_matrix_create_format(fast, &arena, s.N, s.K, 0, quant, &wq, &err))
        die("allocation", &err);
    /* Values as stored (rounded to half in fp16), so the reference sees what the kernels do. */
    float scale = 1.0f / sqrtf((float)s.K);
    for (size_t i = 0; i < nx; i++)
        hx[i] = fast->f16 ? eg_f16_to_f32(eg_f32_to_f16(rng_normalish())) : rng_normalish();
    for (size_t i = 0; i < nw; i++) {
        float v = rng_normalish() * scale;
        hw[i] = fast->f16 ? eg_f16_to_f32(eg_f32_to_f16(v)) : v;
    }
    if (eg_upload_f32(fast, &st, &x, 0, hx, nx, &err)) die("upload x", &err);
    if (eg_matrix_upload_f32(fast, &st, &w, hw, &err) ||
        eg_matrix_upload_f32(fast, &st, &wq, hw, &err))
        die("upload w", &err);

    EgLinear a_old = {.x = &x, .w = &w, .y = &y_old, .rows = s.M};
    EgLinear a_new = a_old;
    a_new.y = &y_new;
    a_new.w = &wq;
    /* Sanity check of both kernels' outputs (poisoned first, so an unwritten one shows as NaN):
     * against a double-precision reference for small products, else against each other. */
    EgCmd cmd;
    if (eg_cmd_begin(&vk, &cmd, &err)) die("eg_cmd_begin", &err);
    eg_cmd_fill(&cmd, &y_old, 0x7fc07fc0u);
    eg_cmd_fill(&cmd, &y_new, 0x7fc07fc0u);
    eg_op_linear(&cmd, old, &a_old);
    eg_op_linear(&cmd, fast, &a_new);
    if (eg_cmd_submit_wait(&cmd, &err)) die("submit", &err);
    float *yo = malloc(ny * sizeof *yo), *yn = malloc(ny * sizeof *yn);
    if (eg_download_f32(fast, &st, &y_old, 0, yo, ny, &err) ||
        eg_download_f32(fast, &st, &y_new, 0, yn, ny, &err))
        die("download", &err);
    int with_ref = (double)s.M * s.N * s.K <= 2e8;
    double eo = 0, en = 0, r2 = 0;
    for (uint32_t m = 0; m < s.M; m++)
        for (uint32_t n = 0; n < s.N; n++) {
            size_t i = (size_t)m * s.N + n;
            double ref = yo[i];
            if (with_ref) {
                ref = 0;
                for (uint32_t k = 0; k < s.K; k++)
                    ref += (double)hx[(size_t)m * s.K + k] * hw[(size_t)n * s.K + k];
            }
            eo += ((double)yo[i] - ref) * ((double)yo[i] - ref);
            en += ((double)yn[i] - ref) * ((double)yn[i] - ref);
            r2 += ref * ref;
        }
    eo = sqrt(eo / r2), en = sqrt(en / r2);
    double t1 = time_ops(fast, &a_new, 1, NULL);
    int inner = (int)(0.05 / (t1 > 1e-5 ? t1 : 1e-5));
    if (inner < 1) inner = 1;
    if (inner > 200) inner = 200;

    double *to = calloc((size_t)samples, sizeof *to), *tn = calloc((size_t)samples, sizeof *tn);
    double *co = calloc((size_t)samples, sizeof *co), *cn = calloc((size_t)samples, sizeof *cn);
    for (int i = 0; i < samples; i++) {
        to[i] = time_ops(old, &a_old, inner, &co[i]) / inner;
        tn[i] = time_ops(fast, &a_new, inner, &cn[i]) / inner;
        co[i] /= inner, cn[i] /= inner;
    }
    double mo = fastest(to, samples), mn = fastest(tn, samples);
    double cpu_o = fastest(co, samples), cpu_n = fastest(cn, samples);
    double bytes = (double)(nx + ny) * fast->elem +
                   (double)s.N * (double)eg_matrix_row_bytes(fast, s.K, quant);
    double flops = 2.0 * s.M * s.N * s.K;
    char check[48];
    if (with_ref)
        snprintf(check, sizeof check, "%.1e %.1e", eo, en);
    else
        snprintf(check, sizeof check, "new-old %.1e", en);
    printf("%-5s %-7s M=%-4u K=%-6u N=%-6u %9.3f %9.3f %6.2f %9.3f %9.3f %6.2f %8.2f %8.2f   %s\n",
           fast->f16 ? "fp16" : "fp32", s.M <= EG_MATVEC_MAX_ROWS ? "decode" : "prefill", s.M, s.K,
           s.N, mo * 1e3, mn * 1e3, mn / mo, cpu_o * 1e3, cpu_n * 1e3, cpu_n / cpu_o,
           bytes / mn * 1e-9, flops / mn * 1e-9, check);
    fflush(stdout);
    free(to), free(tn), free(co), free(cn), free(yo), free(yn), free(hx), free(hw);
    eg_matrix_release(&w);
    eg_matrix_release(&wq);
    eg_arena_reset(&arena);
}

/* --rows: eg_op_norm and eg_op_attention at the demo model's shapes, the shared-memory kernels
 * (the original ones: 128 invocations, tree reductions) against the default ones. Times only,
 * as for the linear shapes (tests/test_ops.c checks the results). */
typedef struct {
    const char *name;
    int attention;
    uint32_t rows, dim; /* norm: rows x dim; attention: queries x keys */
    int rms;            /* norm: RMSNorm; attention: causal */
    uint32_t heads, hd, stride;
} RowShape;

static double time_rows(const EgOps *ops, const RowShape *r, const EgBuffer *a, const EgBuffer *b,
                        const EgBuffer *c, int inner) {
    EgError err = {0};
    EgCmd cmd;
    if (eg_cmd_begin(&vk, &cmd, &err)) die("eg_cmd_begin", &err);
    for (int i = 0; i < inner; i++) {
        if (r->attention) {
            uint32_t w = r->heads * r->hd;
            eg_op_attention(&cmd, ops,
                            &(EgAttention){.q = a,
                                           .k = a,
                                           .v = a,
                                           .o = c,
                                           .q_stride = r->stride,
                                           .k_off = w,
                                           .k_stride = r->stride,
                                           .v_off = 2 * w,
                                           .v_stride = r->stride,
                                           .n_queries = r->rows,
                                           .n_keys = r->dim,
                                           .heads = r->heads,
                                           .head_dim = r->hd,
                                           .mode = r->rms ? EG_ATTN_CAUSAL : EG_ATTN_FULL,
                                           .q_pos0 = r->dim - r->rows,
                                           .scale = 1.0f / sqrtf((float)r->hd)});
        } else {
            eg_op_norm(&cmd, ops,
                       &(EgNorm){.x = a,
                                 .weight = b,
                                 .bias = r->rms ? NULL : b,
                                 .y = c,
                                 .rows = r->rows,
                                 .dim = r->dim,
                                 .eps = 1e-5f,
                                 .rms = r->rms});
        }
    }
    double t0 = clock_s(CLOCK_MONOTONIC);
    if (eg_cmd_submit_wait(&cmd, &err)) die("submit", &err);
    return clock_s(CLOCK_MONOTONIC) - t0;
}

static void bench_rows(const EgOps *old, const EgOps *fast, int samples) {
    static const RowShape shapes[] = {
        {"layernorm (ViT)", 0, 65, 160, 0, 0, 0, 0},
        {"rmsnorm (prefill)", 0, 64, 256, 1, 0, 0, 0},
        {"rmsnorm (decode)", 0, 1, 256, 1, 0, 0, 0},
        {"attention (ViT, 4x40)", 1, 65, 65, 0, 4, 40, 480},
        {"attention (prefill causal, 4x64)", 1, 64, 64, 1, 4, 64, 768},
        {"attention (decode, 4x64)", 1, 1, 128, 1, 4, 64, 768},
    };
    EgError err = {0};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const RowShape *r = &shapes[i];
        EgArena arena;
        eg_arena_init(&arena, &vk, EG_MEM_DEVICE, 16u << 20);
        size_t n = r->attention ? (size_t)r->dim * r->stride : (size_t)r->rows * r->dim;
        EgBuffer a, b, c;
        if (eg_tensor_buffer(fast, &arena, n, &a, &err) ||
            eg_tensor_buffer(fast, &arena, r->attention ? 1 : r->dim, &b, &err) ||
            eg_tensor_buffer(fast, &arena, n, &c, &err))
            die("allocation", &err);
        float *h = malloc(n * sizeof *h);
        for (size_t j = 0; j < n; j++)
            h[j] = rng_normalish();
        if (eg_upload_f32(fast, &st, &a, 0, h, n, &err)) die("upload", &err);
        if (!r->attention && eg_upload_f32(fast, &st, &b, 0, h, r->dim, &err)) die("upload", &err);
        double t1 = time_rows(fast, r, &a, &b, &c, 1);
        int inner = (int)(0.05 / (t1 > 1e-5 ? t1 : 1e-5));
        if (inner < 1) inner = 1;
        if (inner > 200) inner = 200;
        double mo = INFINITY, mn = INFINITY;
        for (int k = 0; k < samples; k++) {
            double to = time_rows(old, r, &a, &b, &c, inner) / inner;
            double tn = time_rows(fast, r, &a, &b, &c, inner) / inner;
            if (to < mo) mo = to;
            if (tn < mn) mn = tn;
        }
        printf("%-5s %-34s %9.1f %9.1f %6.2f\n", fast->f16 ? "fp16" : "fp32", r->name, mo * 1e6,
               mn * 1e6, mn / mo);
        fflush(stdout);
        free(h);
        eg_arena_reset(&arena);
    }
}

static int parse_u32(const char *s, uint32_t *out) {
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    *out = (uint32_t)v;
    return *end == '\0' && v > 0;
}

int main(int argc, char **argv) {
    uint32_t samples = 7;
    int quick = 0, big = -1, want_f16 = -1;
    const char *only = NULL;
    Shape one = {0, 0, 0};
    int rows = 0, vs_default = 0;
    EgOpsConfig cfg = {.naive = -1};
    EgTile t;
    EgError err = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--quick")) {
            quick = 1, samples = 3;
        } else if (!strcmp(a, "--samples") && parse_u32(v, &samples)) {
            i++;
        } else if (!strcmp(a, "--only")) {
            only = v, i++;
        } else if (!strcmp(a, "--fp32")) {
            want_f16 = 0;
        } else if (!strcmp(a, "--fp16")) {
            want_f16 = 1;
        } else if (!strcmp(a, "--shape") && sscanf(v, "%ux%ux%u", &one.M, &one.N, &one.K) == 3) {
            i++;
        } else if (!strcmp(a, "--rows")) {
            rows = 1;
        } else if (!strcmp(a, "--big")) {
            big = 1;
        } else if (!strcmp(a, "--no-subgroup")) {
            cfg.no_subgroup = 1;
        } else if (!strcmp(a, "--mv-wg") && parse_u32(v, &cfg.mv_wg)) {
            i++;
        } else if (!strcmp(a, "--mv-rpg") && parse_u32(v, &cfg.mv_rpg)) {
            i++;
        } else if (!strcmp(a, "--mv-load64") && (!strcmp(v, "1") || !strcmp(v, "-1"))) {
            cfg.mv_load64 = atoi(v), i++;
        } else if (!strcmp(a, "--mm-direct") && (!strcmp(v, "1") || !strcmp(v, "-1"))) {
            cfg.mm_direct = atoi(v), i++;
        } else if (!strcmp(a, "--md-few") && (!strcmp(v, "1") || !strcmp(v, "-1"))) {
            cfg.md_few = atoi(v), i++;
        } else if (!strcmp(a, "--md-texel") && (!strcmp(v, "1") || !strcmp(v, "-1"))) {
            cfg.md_texel = atoi(v), i++;
        } else if (!strcmp(a, "--norm-rows") && parse_u32(v, &cfg.norm_rows)) {
            i++;
        } else if (!strcmp(a, "--attn-queries") && parse_u32(v, &cfg.attn_queries)) {
            i++;
        } else if (!strcmp(a, "--attn-texel") && (!strcmp(v, "1") || !strcmp(v, "-1"))) {
            cfg.attn_texel = atoi(v), i++;
        } else if (!strcmp(a, "--vs-default")) {
            vs_default = 1;
        } else if ((!strcmp(a, "--mm") || !strcmp(a, "--mm-small") || !strcmp(a, "--mm-large")) &&
                   sscanf(v, "%ux%ux%ux%ux%u", &t.bm, &t.bn, &t.bk, &t.tm, &t.tn) == 5) {
            if (strcmp(a, "--mm-large")) cfg.mm_small = t;
            if (strcmp(a, "--mm-small")) cfg.mm_large = t;
            i++;
        } else if (!strcmp(a, "--quant") && eg_weight_format_parse(v, &quant, &err) == 0) {
            vs_default = 1;
            i++;
        } else if (!strcmp(a, "--int-dot") && (!strcmp(v, "1") || !strcmp(v, "-1"))) {
            cfg.int_dot = atoi(v), i++;
        } else {
            fprintf(stderr,
                    "usage: ops_bench [--quick] [--samples N] [--only decode|prefill] "
                    "[--fp32|--fp16] [--big] [--shape MxNxK] [--rows] [--no-subgroup] [--mv-wg N] "
                    "[--mv-rpg N] [--mv-load64 1|-1] [--vs-default] [--mm-direct 1|-1] "
                    "[--md-few 1|-1] [--md-texel 1|-1] [--attn-texel 1|-1] [--norm-rows N] "
                    "[--attn-queries N] "
                    "[--mm|--mm-small|--mm-large BMxBNxBKxTMxTN] [--quant q8|q4] "
                    "[--int-dot 1|-1]\n");
            return 2;
        }
    }
    if (eg_vk_create(&vk, &(EgVkOptions){.verbose = 1}, &err)) die("eg_vk_create", &err);
    if (eg_staging_init(&st, &vk, 16u << 20, &err)) die("eg_staging_init", &err);
    printf("device: %s, subgroup size %u%s\n", vk.props.deviceName, vk.subgroup_size,
           vk.subgroup_arithmetic ? " (arithmetic)" : "");
    printf("old: %s; new: the default ones with the options given. Fastest of %u samples; ms:\n"
           "wall time per op, cpu: process CPU ms per op (the driver's threads on a CPU device);\n"
           "ratio: new/old; GB/s and GFLOP/s of the new kernel, from wall time.\n",
           vs_default ? "the default kernels (--vs-default)" : "EGRET_OPS_NAIVE kernels", samples);
    printf("%-5s %-7s %-25s %9s %9s %6s %9s %9s %6s %8s %8s   %s\n", "prec", "kind", "shape",
           "old ms", "new ms", "ratio", "old cpu", "new cpu", "ratio", "new GB/s", "GFLOP/s",
           "rel. error old new");

    static const Shape small[] = {
        {1, 256, 256},   {1, 704, 256},   {1, 477, 256},   {1, 256, 640},
        {8, 256, 256},   {8, 704, 256},   {8, 477, 256},   {8, 256, 640},
        {64, 256, 256},  {64, 704, 256},  {64, 477, 256},  {64, 256, 640},
        {256, 256, 256}, {256, 704, 256}, {256, 477, 256}, {256, 1024, 1024}};
    static const Shape large[] = {{1, 4096, 4096}, {1, 11008, 4096}, {1, 4096, 11008},
                                  {8, 4096, 4096}, {8, 11008, 4096}, {64, 4096, 4096}};
    for (int f16 = 0; f16 < 2; f16++) {
        if (want_f16 >= 0 && f16 != want_f16) continue;
        if (f16 && !vk.has_float16) continue;
        EgOps old, fast;
        EgOpsConfig oc = cfg;
        oc.naive = 1;
        if (vs_default) oc = (EgOpsConfig){.naive = -1};
        if (eg_ops_init_config(&old, &vk, f16, &oc, &err)) die("eg_ops_init (old)", &err);
        if (eg_ops_init_config(&fast, &vk, f16, &cfg, &err)) die("eg_ops_init (new)", &err);
        if (rows) {
            /* Old: the shared-memory norm and attention kernels with 128 invocations. */
            EgOps shared;
            EgOpsConfig sc = cfg;
            sc.no_subgroup = 1;
            sc.norm_wg = 128;
            sc.norm_rows = 1; /* the options shape the new kernels only */
            sc.attn_queries = 0;
            if (eg_ops_init_config(&shared, &vk, f16, &sc, &err)) die("eg_ops_init (shared)", &err);
            printf("%-5s %-34s %9s %9s %6s   (us per op; old: shared-memory kernels, 128 "
                   "invocations)\n",
                   "prec", "op", "old us", "new us", "ratio");
            bench_rows(&shared, &fast, (int)samples);
            eg_ops_destroy(&shared);
            eg_ops_destroy(&fast);
            eg_ops_destroy(&old);
            continue;
        }
        if (one.M) {
            bench_shape(&old, &fast, one, (int)samples);
            eg_ops_destroy(&fast);
            eg_ops_destroy(&old);
            continue;
        }
        int with_big = big >= 0 ? big : f16;
        for (int set = 0; set < 2; set++) {
            if (set == 1 && (!with_big || quick)) continue;
            const Shape *shapes = set ? large : small;
            size_t n = set ? sizeof large / sizeof large[0] : sizeof small / sizeof small[0];
            for (size_t i = 0; i < n; i++) {
                int decode = shapes[i].M <= EG_MATVEC_MAX_ROWS;
                if (only && strcmp(only, decode ? "decode" : "prefill")) continue;
                if (quick && shapes[i].M > 64) continue;
                bench_shape(&old, &fast, shapes[i], (int)samples);
            }
        }
        eg_ops_destroy(&fast);
        eg_ops_destroy(&old);
    }
    eg_staging_destroy(&st);
    eg_vk_destroy(&vk);
    return 0;
}
