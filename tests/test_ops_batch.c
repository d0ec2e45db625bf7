/* The batched decode ops (runtime/ops_batch.h) against a double-precision reference, with the
 * kernel shapes of CPUs and of GPUs (128 invocations a workgroup) forced on this device, in both
 * storage precisions, on fresh random data:
 *  - eg_op_kv_append: eleven sequences, each with its own key and value buffers and its own
 *    position, get their new [q | k | v] row rotated (RoPE) and their key and value appended;
 *    every other cache row keeps its bits, the value is copied exactly;
 *  - eg_op_batch_attention over those caches (1 to 130 keys: past the tiles of 8 and 128), by
 *    address and (CPU devices) through texel-view slots, with every slot count's pipeline
 *    (11 sequences: 8 and 4 slots, one idle; the first 1 and 2 on their own);
 *  - eg_op_batch_attention in the cross-attention layout: keys and values interleaved in one
 *    buffer ([k | v] rows) at an offset, and a sequence with no keys (exact zeros).
 * Outputs and the cache rows to be written are poisoned first. Head sizes 40 (8-element loads),
 * 6 (scalar loads) and 128 (IDEFICS-9B's: several passes over the dimensions on CPUs). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/device_tensor.h"
#include "runtime/half.h"
#include "runtime/ops_batch.h"
#include "test_util.h"

#define POISON 0x7fc07fc0u
enum { NSEQ = 11 }; /* past one dispatch of attention_slots.comp (EG_ATTN_SLOTS) */

static EgVk g_vk;
static EgStaging g_st;
static EgArena g_arena; /* device buffers of a case */
static EgArena g_host;  /* host-visible batch tables of a case */
static const EgOps *g_ops;

/* Setup failures make the rest meaningless: report and stop. */
static void must(int ok, const char *what) {
    if (ok) return;
    fprintf(stderr, "setup failed: %s\n", what);
    test_checks_failed++;
    exit(test_finish());
}

static float rnd(float v) {
    return g_ops->f16 ? eg_f16_to_f32(eg_f32_to_f16(v)) : v;
}

static EgBuffer dev(size_t n) {
    EgBuffer b;
    EgError err = {0};
    must(eg_tensor_buffer(g_ops, &g_arena, n, &b, &err) == 0, err.msg);
    return b;
}

static void put(const EgBuffer *b, const float *x, size_t n) {
    EgError err = {0};
    must(eg_upload_f32(g_ops, &g_st, b, 0, x, n, &err) == 0, err.msg);
}

static float *get(const EgBuffer *b, size_t n) {
    EgError err = {0};
    float *out = malloc(n * sizeof *out);
    must(eg_download_f32(g_ops, &g_st, b, 0, out, n, &err) == 0, err.msg);
    return out;
}

static float *random_rounded(size_t n) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = rnd(test_rng_normal());
    return x;
}

/* The same value: equal bits, or both NaN (a poisoned row read back through fp16). */
static int same_value(float a, float b) {
    return memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b));
}

/* Relative L2 error of got against ref over n values. */
static double rel_error(const float *got, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        num += isnan(got[i]) ? 1e30 : d * d;
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Attention of query q (double, hd) over n keys/values at k[j·ks], v[j·ks] (floats). */
static void attend(const double *q, const float *k, const float *v, size_t ks, uint32_t n,
                   uint32_t hd, double scale, double *out) {
    double *p = malloc((n ? n : 1) * sizeof *p), mx = -INFINITY, sum = 0;
    for (uint32_t j = 0; j < n; j++) {
        double s = 0;
        for (uint32_t d = 0; d < hd; d++)
            s += q[d] * k[j * ks + d];
        p[j] = s * scale;
        if (p[j] > mx) mx = p[j];
    }
    for (uint32_t j = 0; j < n; j++)
        sum += (p[j] = exp(p[j] - mx));
    for (uint32_t d = 0; d < hd; d++) {
        double acc = 0;
        for (uint32_t j = 0; j < n; j++)
            acc += p[j] * v[j * ks + d];
        out[d] = n ? acc / sum : 0.0;
    }
    free(p);
}

static void self_attention_case(const EgBatchOps *bo, int nseq, uint32_t heads, uint32_t hd,
                                const char *variant) {
    const uint32_t n_keys[NSEQ] = {130, 7, 1, 33, 9, 2, 64, 17, 5, 129, 8};
    uint32_t H = heads * hd, half = hd / 2, positions = 140;
    double tol = g_ops->f16 ? 2e-3 : 1e-5, scale = 1.0 / sqrt((double)hd);
    float *table = malloc((size_t)positions * hd * sizeof *table);
    eg_rope_table(table, positions, hd, 10000.0f);
    EgBuffer btable;
    EgError err = {0};
    must(eg_buffer_create(&g_arena, (size_t)positions * hd * sizeof(float), &btable, &err) == 0 &&
             eg_upload(&g_st, &btable, 0, table, (size_t)positions * hd * 4, &err) == 0,
         err.msg);
    float *qkv = random_rounded((size_t)nseq * 3 * H);
    EgBuffer bqkv = dev((size_t)nseq * 3 * H), bo_out = dev((size_t)nseq * H);
    put(&bqkv, qkv, (size_t)nseq * 3 * H);
    /* caches: capacity n + 2 rows; rows before the new one random, the rest poisoned */
    EgBuffer kc[NSEQ], vc[NSEQ];
    float *kh[NSEQ], *vh[NSEQ];
    EgBuffer entries;
    must(eg_buffer_create(&g_host, nseq * sizeof(EgBatchEntry), &entries, &err) == 0, err.msg);
    EgBatchEntry *e = entries.mapped;
    const EgBuffer *caches[2 * NSEQ];
    for (int b = 0; b < nseq; b++) {
        size_t cap = (size_t)(n_keys[b] + 2) * H;
        kh[b] = random_rounded(cap);
        vh[b] = random_rounded(cap);
        uint32_t poison_bits = POISON;
        float poison;
        memcpy(&poison, &poison_bits, sizeof poison);
        for (size_t i = (size_t)(n_keys[b] - 1) * H; i < cap; i++)
            kh[b][i] = vh[b][i] = poison;
        kc[b] = dev(cap);
        vc[b] = dev(cap);
        put(&kc[b], kh[b], cap);
        put(&vc[b], vh[b], cap);
        eg_batch_entry_set(&e[b], &kc[b], 0, &vc[b], 0, H, n_keys[b]);
        caches[2 * b] = &kc[b];
        caches[2 * b + 1] = &vc[b];
    }
    EgCmd cmd;
    must(eg_cmd_begin(&g_vk, &cmd, &err) == 0, err.msg);
    eg_cmd_fill(&cmd, &bo_out, POISON);
    eg_op_kv_append(&cmd, bo,
                    &(EgKvAppend){.qkv = &bqkv,
                                  .table = &btable,
                                  .table_positions = positions,
                                  .entries = &entries,
                                  .batch = nseq,
                                  .heads = heads,
                                  .head_dim = hd,
                                  .caches = caches});
    eg_op_batch_attention(&cmd, g_ops, bo,
                          &(EgBatchAttention){.q = &bqkv,
                                              .q_stride = 3 * H,
                                              .o = &bo_out,
                                              .entries = &entries,
                                              .batch = nseq,
                                              .heads = heads,
                                              .head_dim = hd,
                                              .scale = (float)scale,
                                              .keys_values = caches});
    must(eg_cmd_submit_wait(&cmd, &err) == 0, err.msg);

    float *got_qkv = get(&bqkv, (size_t)nseq * 3 * H), *got_o = get(&bo_out, (size_t)nseq * H);
    double *ref_q = malloc(H * sizeof *ref_q), *ref_k = malloc(H * sizeof *ref_k);
    double *ref_o = malloc(H * sizeof *ref_o);
    double worst_q = 0, worst_k = 0, worst_o = 0;
    int cache_ok = 1;
    for (int b = 0; b < nseq; b++) {
        uint32_t pos = n_keys[b] - 1;
        const float *row = qkv + (size_t)b * 3 * H;
        for (uint32_t h = 0; h < heads; h++)
            for (uint32_t j = 0; j < half; j++) {
                double c = table[pos * half + j], s = table[positions * half + pos * half + j];
                uint32_t i = h * hd + j;
                ref_q[i] = row[i] * c - row[i + half] * s;
                ref_q[i + half] = row[i + half] * c + row[i] * s;
                ref_k[i] = row[H + i] * c - row[H + i + half] * s;
                ref_k[i + half] = row[H + i + half] * c + row[H + i] * s;
            }
        worst_q = fmax(worst_q, rel_error(got_qkv + (size_t)b * 3 * H, ref_q, H));
        size_t cap = (size_t)(n_keys[b] + 2) * H;
        float *k = get(&kc[b], cap), *v = get(&vc[b], cap);
        worst_k = fmax(worst_k, rel_error(k + (size_t)pos * H, ref_k, H));
        for (size_t i = 0; i < cap; i++) {
            int new_row = i / H == pos;
            if (!new_row && !same_value(k[i], kh[b][i])) cache_ok = 0;
            if (!same_value(v[i], new_row ? row[2 * H + i % H] : vh[b][i])) cache_ok = 0;
        }
        /* the reference attends with the kernel's own rotated key (checked above) */
        for (uint32_t h = 0; h < heads; h++)
            attend(ref_q + h * hd, k + h * hd, v + h * hd, H, n_keys[b], hd, scale, ref_o + h * hd);
        worst_o = fmax(worst_o, rel_error(got_o + (size_t)b * H, ref_o, H));
        free(k);
        free(v);
    }
    printf("  [%s %s] heads %u x %u: query RoPE %.2e, key RoPE %.2e, attention %.2e\n",
           g_ops->f16 ? "fp16" : "fp32", variant, heads, hd, worst_q, worst_k, worst_o);
    CHECK(worst_q <= tol && worst_k <= tol, "%s %s hd %u: RoPE error q %.3g k %.3g", variant,
          g_ops->f16 ? "fp16" : "fp32", hd, worst_q, worst_k);
    CHECK(cache_ok,
          "%s hd %u: a cache row other than the new one changed, or the value was not "
          "copied exactly",
          variant, hd);
    CHECK(worst_o <= tol, "%s %s hd %u: attention error %.3g", variant,
          g_ops->f16 ? "fp16" : "fp32", hd, worst_o);
    for (int b = 0; b < nseq; b++) {
        free(kh[b]);
        free(vh[b]);
    }
    free(ref_q);
    free(ref_k);
    free(ref_o);
    free(got_qkv);
    free(got_o);
    free(qkv);
    free(table);
    eg_arena_reset(&g_arena);
    eg_arena_reset(&g_host);
}

/* Cross-attention layout: [k | v] rows of two images in one buffer; sequence b attends to
 * image b % 2 at an offset (its S keys), sequence 2 to none (zeros). */
static void cross_attention_case(const EgBatchOps *bo, int nseq, uint32_t heads, uint32_t hd,
                                 const char *variant) {
    uint32_t H = heads * hd, S = 11;
    double tol = g_ops->f16 ? 2e-3 : 1e-5, scale = 1.0 / sqrt((double)hd);
    size_t nkv = (size_t)2 * S * 2 * H + 3;
    float *q = random_rounded((size_t)nseq * H), *kv = random_rounded(nkv);
    EgBuffer bq = dev((size_t)nseq * H), bkv = dev(nkv), bo_out = dev((size_t)nseq * H);
    put(&bq, q, (size_t)nseq * H);
    put(&bkv, kv, nkv);
    EgBuffer entries;
    EgError err = {0};
    must(eg_buffer_create(&g_host, nseq * sizeof(EgBatchEntry), &entries, &err) == 0, err.msg);
    EgBatchEntry *e = entries.mapped;
    for (int b = 0; b < nseq; b++) {
        uint32_t first = (uint32_t)(b % 2) * S * 2 * H;
        eg_batch_entry_set(&e[b], &bkv, first, &bkv, first + H, 2 * H, b == 2 ? 0 : S);
    }
    const EgBuffer *kvs[2 * NSEQ];
    for (int i = 0; i < 2 * nseq; i++)
        kvs[i] = &bkv;
    EgCmd cmd;
    must(eg_cmd_begin(&g_vk, &cmd, &err) == 0, err.msg);
    eg_cmd_fill(&cmd, &bo_out, POISON);
    eg_op_batch_attention(&cmd, g_ops, bo,
                          &(EgBatchAttention){.q = &bq,
                                              .o = &bo_out,
                                              .entries = &entries,
                                              .batch = nseq,
                                              .heads = heads,
                                              .head_dim = hd,
                                              .scale = (float)scale,
                                              .keys_values = kvs});
    must(eg_cmd_submit_wait(&cmd, &err) == 0, err.msg);
    float *got = get(&bo_out, (size_t)nseq * H);
    double *ref = malloc(H * sizeof *ref), *qd = malloc(hd * sizeof *qd), worst = 0;
    int zeros = 1;
    for (int b = 0; b < nseq; b++) {
        uint32_t first = (uint32_t)(b % 2) * S * 2 * H, n = b == 2 ? 0 : S;
        for (uint32_t h = 0; h < heads; h++) {
            for (uint32_t d = 0; d < hd; d++)
                qd[d] = q[(size_t)b * H + h * hd + d];
            attend(qd, kv + first + h * hd, kv + first + H + h * hd, 2 * H, n, hd, scale,
                   ref + h * hd);
        }
        if (n == 0)
            for (uint32_t i = 0; i < H; i++)
                zeros &= got[(size_t)b * H + i] == 0.0f && !signbit(got[(size_t)b * H + i]);
        else
            worst = fmax(worst, rel_error(got + (size_t)b * H, ref, H));
    }
    printf("  [%s %s] cross layout, heads %u x %u: attention %.2e\n", g_ops->f16 ? "fp16" : "fp32",
           variant, heads, hd, worst);
    CHECK(worst <= tol, "%s cross hd %u: attention error %.3g", variant, hd, worst);
    CHECK(zeros, "%s cross hd %u: a sequence without keys did not get exact zeros", variant, hd);
    free(got);
    free(ref);
    free(qd);
    free(q);
    free(kv);
    eg_arena_reset(&g_arena);
    eg_arena_reset(&g_host);
}

/* The attention kernel shapes runtime/ops.c picks for CPUs (the default here) and GPUs. */
static const struct {
    const char *name;
    EgOpsConfig cfg;
} VARIANTS[] = {
    {"default", {0}},
    {"attention 128 x 1 query x 4 dims (GPU)",
     {.attn_wg = 128, .attn_queries = 1, .attn_dims = 4, .attn_wide = -1}},
    {"attention 16 x 8 dims wide", {.attn_wg = 16, .attn_dims = 8, .attn_wide = 1}},
};

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_rng_init();
    EgError err = {0};
    REQUIRE(eg_vk_create(&g_vk, NULL, &err) == 0, "eg_vk_create: %s", err.msg);
    REQUIRE(eg_staging_init(&g_st, &g_vk, 1u << 20, &err) == 0, "staging: %s", err.msg);
    for (int f16 = 0; f16 < 2; f16++)
        for (size_t v = 0; v < sizeof VARIANTS / sizeof VARIANTS[0]; v++) {
            EgOps ops;
            EgBatchOps bo;
            EgOpsConfig cfg = VARIANTS[v].cfg;
            cfg.quant_kernels = -1; /* no quantized product runs here: their kernels go unbuilt */
            if (eg_ops_init_config(&ops, &g_vk, f16, &cfg, &err)) {
                printf("  [%s] skipped on this device: %s\n", VARIANTS[v].name, err.msg);
                continue;
            }
            g_ops = &ops;
            eg_arena_init(&g_arena, &g_vk, EG_MEM_DEVICE, 1u << 20);
            eg_arena_init(&g_host, &g_vk, EG_MEM_HOST, 1u << 16);
            REQUIRE(eg_batch_ops_init(&bo, &ops, &err) == 0, "batch ops: %s", err.msg);
            if (!bo.available) {
                printf("  [%s] no batch table on this device (bufferDeviceAddress)\n",
                       VARIANTS[v].name);
            } else {
                /* through the texel-view slots where built (CPU devices), and by address */
                for (int slots = bo.use_slots; slots >= 0; slots--) {
                    char name[160];
                    snprintf(name, sizeof name, "%s, %s", VARIANTS[v].name,
                             slots ? "slots" : "by address");
                    bo.use_slots = slots;
                    self_attention_case(&bo, NSEQ, 3, 40, name);
                    self_attention_case(&bo, NSEQ, 2, 6, name);
                    self_attention_case(&bo, NSEQ, 2, 128, name); /* IDEFICS-9B's heads */
                    cross_attention_case(&bo, NSEQ, 3, 40, name);
                    cross_attention_case(&bo, NSEQ, 2, 6, name);
                    cross_attention_case(&bo, NSEQ, 2, 128, name);
                    /* 11 sequences take the 8- and 4-slot pipelines; 1 and 2 their own */
                    for (int nseq = 1; slots && nseq <= 2; nseq++) {
                        char small[200];
                        snprintf(small, sizeof small, "%s, batch %d", name, nseq);
                        self_attention_case(&bo, nseq, 3, 40, small);
                        cross_attention_case(&bo, nseq, 2, 128, small);
                    }
                }
            }
            eg_batch_ops_destroy(&bo, &ops);
            eg_arena_reset(&g_arena);
            eg_arena_reset(&g_host);
            eg_ops_destroy(&ops);
        }
    eg_staging_destroy(&g_st);
    eg_vk_destroy(&g_vk);
    return test_finish();
}
