/* The cooperative-matrix (tensor core) path: the choice of a matrix shape among those a device
 * reports (fabricated lists: an H200's, others without the usual shape, none usable); on the
 * device at hand, the run-time check and its fallback (on lavapipe: "not available", the tiled
 * kernels run, and asking for it fails naming why); and where the device has it and the shader
 * is built (CMake EGRET_GLSLANG / EGRET_COOPMAT_NV, the GPU check), fp16 products against a
 * double reference at sizes that are not multiples of its blocks, epilogues included, with
 * fresh random inputs and poisoned outputs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/device_tensor.h"
#include "runtime/half.h"
#include "runtime/ops.h"
#include "runtime/vk_pipeline.h"
#include "test_util.h"

#define POISON 0x7fc07fc0u

static EgCoopmatShape shape(uint32_t m, uint32_t n, uint32_t k, uint32_t a, uint32_t c,
                            uint32_t scope) {
    return (EgCoopmatShape){m, n, k, a, a, c, c, scope};
}

static void test_choose(void) {
    enum { F16 = EG_COMPONENT_FLOAT16, F32 = EG_COMPONENT_FLOAT32, SINT8 = 3, SINT32 = 9 };
    enum { BF16 = 1000141000, SG = EG_SCOPE_SUBGROUP, WG = 2 };
    /* an H200's list (../shared/docs/performance.md): 16x16x16 fp16 -> fp32 is in it */
    EgCoopmatShape h200[] = {
        shape(16, 16, 16, F16, F16, SG),      shape(16, 8, 16, F16, F16, SG),
        shape(16, 8, 8, F16, F16, SG),        shape(16, 8, 16, F16, F32, SG),
        shape(16, 8, 8, F16, F32, SG),        shape(16, 16, 16, F16, F32, SG),
        shape(16, 16, 32, SINT8, SINT32, SG), shape(16, 16, 16, BF16, F32, SG)};
    EgCoopmatShape got;
    CHECK(eg_coopmat_choose(h200, 8, &got) == 0 && got.m == 16 && got.n == 16 && got.k == 16 &&
              got.c_type == F32 && got.a_type == F16,
          "H200 list: got %ux%ux%u types %u/%u", got.m, got.n, got.k, got.a_type, got.c_type);
    /* without 16x16x16: the largest usable one (16x8x16 over 16x8x8; 64x64x64 is too large) */
    EgCoopmatShape other[] = {shape(16, 8, 8, F16, F32, SG), shape(64, 64, 64, F16, F32, SG),
                              shape(16, 8, 16, F16, F32, SG), shape(32, 32, 16, F16, F16, SG)};
    CHECK(eg_coopmat_choose(other, 4, &got) == 0 && got.m == 16 && got.n == 8 && got.k == 16,
          "no 16x16x16: got %ux%ux%u", got.m, got.n, got.k);
    /* none usable: fp16 accumulators only, integer, workgroup scope, odd sizes */
    EgCoopmatShape none[] = {shape(16, 16, 16, F16, F16, SG), shape(16, 16, 32, SINT8, SINT32, SG),
                             shape(16, 16, 16, F16, F32, WG), shape(12, 16, 16, F16, F32, SG)};
    CHECK(eg_coopmat_choose(none, 4, &got) == -1, "no usable shape: chose %ux%ux%u", got.m, got.n,
          got.k);
    CHECK(eg_coopmat_choose(NULL, 0, &got) == -1, "an empty list chose a shape");
}

/* y = act(x·wᵀ + bias) (+ y·gate with accum) for rows × n × k in fp16, against double. */
static void product_case(EgVk *vk, EgOps *ops, uint32_t rows, uint32_t n, uint32_t k, int bias,
                         int accum) {
    EgArena arena;
    EgStaging st;
    EgError err = {0};
    eg_arena_init(&arena, vk, EG_MEM_DEVICE, 1u << 20);
    if (eg_staging_init(&st, vk, 1u << 20, &err)) {
        CHECK(0, "staging: %s", err.msg);
        return;
    }
    size_t nx = (size_t)rows * k, nw = (size_t)n * k, ny = (size_t)rows * n;
    float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w), *b = malloc(n * sizeof *b);
    float *y0 = malloc(ny * sizeof *y0), *got = malloc(ny * sizeof *got);
    for (size_t i = 0; i < nx; i++)
        x[i] = eg_f16_to_f32(eg_f32_to_f16(test_rng_normal()));
    for (size_t i = 0; i < nw; i++)
        w[i] = eg_f16_to_f32(eg_f32_to_f16(test_rng_normal() / sqrtf((float)k)));
    for (uint32_t i = 0; i < n; i++)
        b[i] = eg_f16_to_f32(eg_f32_to_f16(test_rng_normal()));
    for (size_t i = 0; i < ny; i++)
        y0[i] = eg_f16_to_f32(eg_f32_to_f16(test_rng_normal()));
    EgMatrix wm;
    EgBuffer bx, bb, by;
    int ok = eg_matrix_create(ops, &arena, n, k, 0, &wm, &err) == 0 &&
             eg_tensor_buffer(ops, &arena, nx, &bx, &err) == 0 &&
             eg_tensor_buffer(ops, &arena, n, &bb, &err) == 0 &&
             eg_tensor_buffer(ops, &arena, ny, &by, &err) == 0 &&
             eg_matrix_upload_f32(ops, &st, &wm, w, &err) == 0 &&
             eg_upload_f32(ops, &st, &bx, 0, x, nx, &err) == 0 &&
             eg_upload_f32(ops, &st, &bb, 0, b, n, &err) == 0 &&
             eg_upload_f32(ops, &st, &by, 0, y0, ny, &err) == 0;
    EgCmd cmd;
    if (ok && eg_cmd_begin(vk, &cmd, &err) == 0) {
        if (!accum) eg_cmd_fill(&cmd, &by, POISON);
        eg_op_linear(&cmd, ops,
                     &(EgLinear){.x = &bx,
                                 .w = &wm,
                                 .bias = bias ? &bb : NULL,
                                 .y = &by,
                                 .rows = rows,
                                 .act = bias ? EG_OP_ACT_GELU : EG_OP_ACT_NONE,
                                 .accum = accum});
        ok = eg_cmd_submit_wait(&cmd, &err) == 0 &&
             eg_download_f32(ops, &st, &by, 0, got, ny, &err) == 0;
    } else {
        ok = 0;
    }
    CHECK(ok, "product %ux%ux%u: %s", rows, n, k, err.msg);
    double num = 0, den = 0, worst = 0;
    for (uint32_t m = 0; ok && m < rows; m++)
        for (uint32_t j = 0; j < n; j++) {
            double v = 0;
            for (uint32_t i = 0; i < k; i++)
                v += (double)x[(size_t)m * k + i] * w[(size_t)j * k + i];
            if (bias) {
                v += b[j];
                v = 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
            }
            if (accum) v += y0[(size_t)m * n + j];
            double d = got[(size_t)m * n + j] - v;
            num += d * d;
            den += v * v;
            if (!(fabs(d) <= worst)) worst = fabs(d); /* NaN (unwritten) sticks */
        }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    printf("  coopmat %ux%ux%u%s%s rel %.2e max %.2e\n", rows, n, k, bias ? " bias+gelu" : "",
           accum ? " accum" : "", rel, worst);
    CHECK(ok && rel <= 2e-3 && !isnan(worst), "coopmat %ux%ux%u: relative error %.3g", rows, n, k,
          rel);
    free(x), free(w), free(b), free(y0), free(got);
    eg_matrix_release(&wm);
    eg_staging_destroy(&st);
    eg_arena_reset(&arena);
}

int main(void) {
    test_rng_init();
    test_choose();
    EgVk vk;
    EgError err = {0};
    REQUIRE(eg_vk_create(&vk, NULL, &err) == 0, "eg_vk_create: %s", err.msg);
    int built =
        eg_shader_available("matmul_coopmat_khr", 1) || eg_shader_available("matmul_coopmat_nv", 1);
    printf("device: %s; cooperative matrices: %s; shaders built: %s\n", vk.props.deviceName,
           vk.coopmat.why, built ? "yes" : "no");
    CHECK(vk.coopmat.kind != EG_COOPMAT_NONE || strstr(vk.coopmat.why, "not available") ||
              strstr(vk.coopmat.why, "EGRET_COOPMAT=0") || strstr(vk.coopmat.why, "feature off") ||
              strstr(vk.coopmat.why, "no fp16"),
          "no cooperative matrices but no reason: '%s'", vk.coopmat.why);
    if (vk.has_float16) {
        EgOps ops;
        REQUIRE(eg_ops_init(&ops, &vk, 1, &err) == 0, "eg_ops_init: %s", err.msg);
        int expect = vk.coopmat.kind != EG_COOPMAT_NONE && built;
        CHECK(ops.coopmat == expect, "coopmat in use %d, expected %d", ops.coopmat, expect);
        if (!ops.coopmat) {
            /* the fallback: the tiled (or, on CPUs, direct) kernels, no coopmat pipeline */
            CHECK(ops.matmul_coopmat.pipeline == VK_NULL_HANDLE, "a coopmat pipeline was built");
            EgOps forced;
            EgError ferr = {0};
            int rc = eg_ops_init_config(&forced, &vk, 1, &(EgOpsConfig){.coopmat = 1}, &ferr);
            CHECK(rc != 0 && strstr(ferr.msg, "cooperative-matrix matmul unavailable"),
                  "requiring it where it cannot run: rc %d, '%s'", rc, ferr.msg);
            if (rc == 0) eg_ops_destroy(&forced);
            printf("  requiring it: %s\n", ferr.msg);
        } else {
            static const uint32_t cases[][5] = {{9, 37, 70, 0, 0},
                                                {65, 130, 96, 1, 0},
                                                {130, 64, 40, 0, 1},
                                                {257, 1280, 1280, 1, 1},
                                                {100, 200, 4099, 0, 0}};
            for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
                product_case(&vk, &ops, cases[c][0], cases[c][1], cases[c][2], (int)cases[c][3],
                             (int)cases[c][4]);
        }
        eg_ops_destroy(&ops);
        /* fp32 storage never takes it */
        REQUIRE(eg_ops_init(&ops, &vk, 0, &err) == 0, "eg_ops_init fp32: %s", err.msg);
        CHECK(ops.coopmat == 0, "fp32 storage uses the coopmat kernel");
        eg_ops_destroy(&ops);
    }
    eg_vk_destroy(&vk);
    CHECK(eg_vk_validation_message_count() == 0, "%d validation messages",
          eg_vk_validation_message_count());
    return test_finish();
}
