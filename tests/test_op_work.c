/* The bytes and floating-point operations each op declares for its dispatches (eg_cmd_work),
 * which EGRET_PROFILE=1 divides by device time to print GB/s and GFLOP/s per shader: checked
 * against figures worked out by hand for a few shapes (the op's own formula is not reused), in
 * both storage precisions; then one profiled submission shows the rates in the report. Nothing
 * here is timed. */
#include <stdlib.h>
#include <string.h>

#include "runtime/device_tensor.h"
#include "runtime/ops.h"
#include "test_util.h"

static EgVk g_vk;
static EgArena g_arena;

static EgBuffer buffer(const EgOps *ops, size_t n) {
    EgBuffer b;
    EgError err = {0};
    if (eg_tensor_buffer(ops, &g_arena, n, &b, &err)) {
        fprintf(stderr, "eg_tensor_buffer: %s\n", err.msg);
        exit(1);
    }
    return b;
}

/* Records one op into a fresh command buffer (never submitted) and returns what it declared. */
typedef void (*RecordFn)(EgCmd *cmd, const EgOps *ops, const void *arg);
static void declared(const EgOps *ops, RecordFn fn, const void *arg, uint64_t *bytes,
                     uint64_t *flops, int *dispatches) {
    EgCmd cmd;
    EgError err = {0};
    if (eg_cmd_begin(&g_vk, &cmd, &err)) {
        fprintf(stderr, "eg_cmd_begin: %s\n", err.msg);
        exit(1);
    }
    fn(&cmd, ops, arg);
    *bytes = cmd.work_bytes;
    *flops = cmd.work_flops;
    *dispatches = cmd.n_dispatches;
    eg_cmd_abandon(&cmd);
}

static void record_linear(EgCmd *cmd, const EgOps *ops, const void *arg) {
    eg_op_linear(cmd, ops, arg);
}
static void record_attention(EgCmd *cmd, const EgOps *ops, const void *arg) {
    eg_op_attention(cmd, ops, arg);
}
static void record_norm(EgCmd *cmd, const EgOps *ops, const void *arg) {
    eg_op_norm(cmd, ops, arg);
}

static void test_linear(const EgOps *ops) {
    const char *p = ops->f16 ? "fp16" : "fp32";
    uint64_t e = ops->elem, bytes, flops;
    int n;
    EgMatrix w;
    EgError err = {0};
    if (eg_matrix_create(ops, &g_arena, 5, 7, 0, &w, &err)) {
        fprintf(stderr, "eg_matrix_create: %s\n", err.msg);
        exit(1);
    }
    EgBuffer x = buffer(ops, 3 * 7), y = buffer(ops, 3 * 5), bias = buffer(ops, 5);
    /* 3 rows of 7 times 5x7 with a bias: x 21, W 35, y 15, bias 5 elements; 2·3·5·7 flops */
    declared(ops, record_linear, &(EgLinear){.x = &x, .w = &w, .bias = &bias, .y = &y, .rows = 3},
             &bytes, &flops, &n);
    CHECK(bytes == 76 * e && flops == 210 && n == 1,
          "[%s] linear 3x7x5 + bias: %llu bytes, %llu flops", p, (unsigned long long)bytes,
          (unsigned long long)flops);
    /* accumulating (y read as well), no bias: 21 + 35 + 2·15 */
    declared(ops, record_linear, &(EgLinear){.x = &x, .w = &w, .y = &y, .rows = 3, .accum = 1},
             &bytes, &flops, &n);
    CHECK(bytes == 86 * e && flops == 210, "[%s] linear accum: %llu bytes, %llu flops", p,
          (unsigned long long)bytes, (unsigned long long)flops);
    /* the same weights in three chunks of 2, 2 and 1 rows: x is read once per chunk */
    EgMatrix chunked;
    if (eg_matrix_create(ops, &g_arena, 5, 7, 2, &chunked, &err)) {
        fprintf(stderr, "eg_matrix_create: %s\n", err.msg);
        exit(1);
    }
    declared(ops, record_linear,
             &(EgLinear){.x = &x, .w = &chunked, .bias = &bias, .y = &y, .rows = 3}, &bytes, &flops,
             &n);
    CHECK(bytes == (3 * 21 + 35 + 15 + 5) * e && flops == 210 && n == 3,
          "[%s] linear in 3 chunks: %llu bytes, %llu flops, %d dispatches", p,
          (unsigned long long)bytes, (unsigned long long)flops, n);
    eg_matrix_release(&chunked);
    eg_matrix_release(&w);
}

static void test_attention(const EgOps *ops) {
    const char *p = ops->f16 ? "fp16" : "fp32";
    uint64_t e = ops->elem, bytes, flops;
    int n;
    EgBuffer q = buffer(ops, 2 * 4 * 32), kv = buffer(ops, 2 * 10 * 16),
             o = buffer(ops, 2 * 4 * 32);
    /* causal, 4 queries at positions 6..9 over 10 keys: they see 7 + 8 + 9 + 10 = 34 keys; 4
     * heads over 2 key/value heads of 8 dims, 2 batches: 34·4·8·4·2 flops. Bytes per batch: q
     * and o 2·4·4·8 = 256 elements, k and v of the 10 keys 2·10·2·8 = 320. */
    EgAttention a = {.q = &q,
                     .k = &kv,
                     .v = &kv,
                     .o = &o,
                     .q_batch = 128,
                     .k_batch = 160,
                     .v_batch = 160,
                     .o_batch = 128,
                     .n_queries = 4,
                     .n_keys = 10,
                     .heads = 4,
                     .kv_heads = 2,
                     .head_dim = 8,
                     .batches = 2,
                     .mode = EG_ATTN_CAUSAL,
                     .q_pos0 = 6,
                     .scale = 0.3f};
    declared(ops, record_attention, &a, &bytes, &flops, &n);
    CHECK(flops == 8704 && bytes == 2 * 576 * e, "[%s] causal attention: %llu bytes, %llu flops", p,
          (unsigned long long)bytes, (unsigned long long)flops);
    /* every query sees every key: 4·10·4·8·4·2 flops; k and v all 10 keys */
    a.mode = EG_ATTN_FULL;
    declared(ops, record_attention, &a, &bytes, &flops, &n);
    CHECK(flops == 10240 && bytes == 2 * 576 * e, "[%s] full attention: %llu bytes, %llu flops", p,
          (unsigned long long)bytes, (unsigned long long)flops);
    /* a decode step: one query at position 3 of the 10-key buffer sees 4 keys; one batch */
    a.mode = EG_ATTN_CAUSAL;
    a.n_queries = 1;
    a.q_pos0 = 3;
    a.batches = 1;
    declared(ops, record_attention, &a, &bytes, &flops, &n);
    CHECK(flops == 4 * 4 * 8 * 4 && bytes == (2 * 32 + 2 * 4 * 16) * e,
          "[%s] decode attention: %llu bytes, %llu flops", p, (unsigned long long)bytes,
          (unsigned long long)flops);
}

static void test_norm(const EgOps *ops) {
    const char *p = ops->f16 ? "fp16" : "fp32";
    uint64_t e = ops->elem, bytes, flops;
    int n;
    EgBuffer x = buffer(ops, 60), wt = buffer(ops, 10), b = buffer(ops, 10), y = buffer(ops, 60);
    /* RMSNorm of 2 batches of 3 rows of 10: x and y 60 elements each, the weight 10; 4 per
     * element. LayerNorm: the bias too; 7 per element. */
    EgNorm a = {.x = &x, .weight = &wt, .y = &y, .rows = 3, .batches = 2, .dim = 10, .rms = 1};
    declared(ops, record_norm, &a, &bytes, &flops, &n);
    CHECK(bytes == 130 * e && flops == 240, "[%s] rms norm: %llu bytes, %llu flops", p,
          (unsigned long long)bytes, (unsigned long long)flops);
    a.rms = 0;
    a.bias = &b;
    declared(ops, record_norm, &a, &bytes, &flops, &n);
    CHECK(bytes == 140 * e && flops == 420, "[%s] layer norm: %llu bytes, %llu flops", p,
          (unsigned long long)bytes, (unsigned long long)flops);
}

/* One profiled submission of a product: the report's line for its kernel has a rate in both the
 * GB/s and the GFLOP/s column, the fill's line a rate for bytes only. */
static void test_report(const EgOps *ops) {
    EgMatrix w;
    EgError err = {0};
    if (eg_matrix_create(ops, &g_arena, 64, 96, 0, &w, &err)) return;
    EgBuffer x = buffer(ops, 20 * 96), y = buffer(ops, 20 * 64);
    EgCmd cmd;
    if (eg_cmd_begin(&g_vk, &cmd, &err)) return;
    eg_cmd_fill(&cmd, &x, 0);
    eg_op_linear(&cmd, ops, &(EgLinear){.x = &x, .w = &w, .y = &y, .rows = 20});
    CHECK(eg_cmd_submit_wait(&cmd, &err) == 0, "submit: %s", err.msg);
    FILE *f = tmpfile();
    eg_profile_report(f);
    rewind(f);
    char line[256];
    int header = 0, linear_rates = 0, fill_rates = 0;
    while (fgets(line, sizeof line, f)) {
        char label[64], gbs[32], gflops[32];
        unsigned long count;
        double total, mean, share;
        if (strstr(line, "GB/s") && strstr(line, "GFLOP/s")) header = 1;
        if (sscanf(line, " %63s %lu %lf %lf %lf%% %31s %31s", label, &count, &total, &mean, &share,
                   gbs, gflops) != 7)
            continue;
        if (strcmp(label, "fill") == 0) fill_rates = atof(gbs) > 0 && strcmp(gflops, "-") == 0;
        if (strncmp(label, "matmul", 6) == 0) linear_rates = atof(gbs) > 0 && atof(gflops) > 0;
    }
    fclose(f);
    CHECK(header && linear_rates && fill_rates,
          "profile report: header %d, product's rates %d, fill's bytes only %d", header,
          linear_rates, fill_rates);
    eg_matrix_release(&w);
}

int main(void) {
    setenv("EGRET_PROFILE", "1", 1); /* before the first eg_profile_enabled() reads it */
    EgError err = {0};
    REQUIRE(eg_vk_create(&g_vk, NULL, &err) == 0, "eg_vk_create: %s", err.msg);
    eg_arena_init(&g_arena, &g_vk, EG_MEM_DEVICE, 1u << 20);
    for (int f16 = 0; f16 < 2; f16++) {
        EgOps ops;
        if (f16 && !g_vk.has_float16) continue;
        REQUIRE(eg_ops_init(&ops, &g_vk, f16, &err) == 0, "eg_ops_init: %s", err.msg);
        test_linear(&ops);
        test_attention(&ops);
        test_norm(&ops);
        eg_profile_reset();
        if (g_vk.props.limits.timestampPeriod > 0) test_report(&ops);
        eg_arena_reset(&g_arena);
        eg_ops_destroy(&ops);
    }
    eg_vk_destroy(&g_vk);
    CHECK(eg_vk_validation_message_count() == 0, "%d validation messages",
          eg_vk_validation_message_count());
    return test_finish();
}
