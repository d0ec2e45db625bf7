/* The quantized weight formats on the host (runtime/quant.h): their sizes and bit layout as
 * docs/quantization.md writes them down, the error of a round trip within half a step of each
 * block's scale on fresh random weights, the threaded quantization equal to row-by-row, and
 * the refusals (weights that are not finite, scales that overflow fp16, unknown format names).
 * The kernels that read these formats are checked in test_ops; here a tiny model is also loaded
 * quantized (the upload path that quantizes while loading, run under the sanitizers in CI) and
 * its text-only logits are held near HF's fp32 ones; so are the three tiny mllama checkpoints'
 * logits with images, with q8's greedy ids. The weights' report (GetModelInfo's weight groups)
 * counts every byte allocated for them, in the right group and format. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "families/family.h"
#include "families/idefics/sequence.h"
#include "families/mllama/model.h"
#include "families/mllama/text_model.h"
#include "runtime/half.h"
#include "runtime/quant.h"
#include "test_util.h"

static void test_names(void) {
    EgError err = {0};
    EgWeightFormat f = EG_WEIGHTS_DENSE;
    CHECK(eg_weight_format_parse("q8", &f, &err) == 0 && f == EG_WEIGHTS_Q8, "q8");
    CHECK(eg_weight_format_parse("q4", &f, &err) == 0 && f == EG_WEIGHTS_Q4, "q4");
    CHECK(eg_weight_format_parse("none", &f, &err) == 0 && f == EG_WEIGHTS_DENSE, "none");
    CHECK(eg_weight_format_parse("q5", &f, &err) != 0 && strstr(err.msg, "'q5'") &&
              strstr(err.msg, "q8, q4"),
          "q5 refused naming the known ones: %s", err.msg);
    CHECK(!strcmp(eg_weight_format_name(EG_WEIGHTS_Q4), "q4"), "name of q4");
}

static void test_sizes(void) {
    /* q8: a header vector (4 words) and 8 words a block, 68 per whole group of 8 blocks; q4: a
     * header vector and 4 words a block, 20 per group of 4 */
    static const uint32_t cols[] = {1, 32, 33, 64, 65, 128, 160, 4096};
    static const size_t q8[] = {12, 12, 20, 20, 28, 36, 44, 1088};
    static const size_t q4[] = {8, 8, 12, 12, 16, 20, 28, 640};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) {
        CHECK(eg_quant_row_words(EG_WEIGHTS_Q8, cols[i]) == q8[i], "q8 words of %u: %zu", cols[i],
              eg_quant_row_words(EG_WEIGHTS_Q8, cols[i]));
        CHECK(eg_quant_row_words(EG_WEIGHTS_Q4, cols[i]) == q4[i], "q4 words of %u: %zu", cols[i],
              eg_quant_row_words(EG_WEIGHTS_Q4, cols[i]));
    }
}

/* The documented bits of one row: 40 weights (a full block and 8 of a second). */
static void test_layout(void) {
    EgError err = {0};
    float w[40];
    for (int i = 0; i < 32; i++)
        w[i] = (float)(i - 16) * 0.25f; /* -4 .. 3.75 */
    for (int i = 32; i < 40; i++)
        w[i] = 1.0f;
    uint32_t q[20]; /* a header vector, 8 words for each of the 2 blocks */
    MUST(eg_quantize_rows(EG_WEIGHTS_Q8, w, 1, 40, q, &err) == 0, "q8: %s", err.msg);
    CHECK(q[0] == (eg_f32_to_f16(4.0f / 127.0f) | (uint32_t)eg_f32_to_f16(1.0f / 127.0f) << 16),
          "q8 header word 0: blocks 0 and 1's scales: %08x", q[0]);
    CHECK(q[1] == 0 && q[2] == 0 && q[3] == 0, "q8 header words of absent blocks: %08x %08x %08x",
          q[1], q[2], q[3]);
    CHECK((q[4] & 0xFFu) == 0x81u, "q8 weight 0 (-4 = -127 steps) in byte 0 of word 4: %08x", q[4]);
    /* weights 16..19 = 0, 0.25, 0.5, 0.75 are 0, 8, 16, 24 steps of 4/127 */
    CHECK(q[8] == 0x18100800u, "q8 weights 16..19 in word 8: %08x", q[8]);
    CHECK(q[12] == 0x7f7f7f7fu && q[13] == 0x7f7f7f7fu, "q8 block 1 in words 12, 13: %08x %08x",
          q[12], q[13]);
    for (int j = 14; j < 20; j++)
        CHECK(q[j] == 0, "q8 padding word %d: %08x", j, q[j]);

    uint32_t r[12]; /* a header vector, 4 words for each of the 2 blocks */
    MUST(eg_quantize_rows(EG_WEIGHTS_Q4, w, 1, 40, r, &err) == 0, "q4: %s", err.msg);
    CHECK((r[0] & 0xFFFFu) == eg_f32_to_f16(7.75f / 15.0f) && r[0] >> 16 == eg_f32_to_f16(-4.0f),
          "q4 block 0 scale and minimum: %08x", r[0]);
    CHECK(r[1] == ((uint32_t)eg_f32_to_f16(1.0f) << 16), "q4 constant block 1: d 0, m 1: %08x",
          r[1]);
    CHECK(r[2] == 0 && r[3] == 0, "q4 header words of absent blocks: %08x %08x", r[2], r[3]);
    CHECK((r[4] & 0xFu) == 0 && (r[7] >> 28) == 15u, "q4 weights 0 and 31: %08x %08x", r[4], r[7]);
    for (int j = 8; j < 12; j++)
        CHECK(r[j] == 0, "q4 values of a constant block, word %d: %08x", j, r[j]);
    float back[40];
    eg_dequantize_row(EG_WEIGHTS_Q4, r, 40, back);
    CHECK(back[0] == -4.0f && back[39] == 1.0f, "q4 ends exact: %g %g", (double)back[0],
          (double)back[39]);
}

/* Round trips of random rows (normal, with outliers, all zero) within half a step of the block's
 * scale, plus what rounding the scale and minimum to fp16 adds. */
static void test_round_trip(EgWeightFormat f) {
    EgError err = {0};
    const uint32_t rows = 300, cols = 1000; /* 32 blocks a row, the last of 8 */
    float *w = malloc((size_t)rows * cols * sizeof *w), *back = malloc(cols * sizeof *back);
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        w[i] = 0.02f * test_rng_normal() * (test_rng_uniform(0, 1) < 0.01f ? 30.0f : 1.0f);
    memset(w + 7 * cols, 0, cols * sizeof *w); /* a row of zeros */
    size_t words = eg_quant_row_words(f, cols);
    uint32_t *q = malloc((size_t)rows * words * 4), *q1 = malloc(words * 4);
    MUST(eg_quantize_rows(f, w, rows, cols, q, &err) == 0, "%s", err.msg);
    double worst = 0, sq = 0, ref = 0;
    for (uint32_t r = 0; r < rows; r++) {
        const float *wr = w + (size_t)r * cols;
        /* the threads' parts are the rows quantized one by one */
        MUST(eg_quantize_rows(f, wr, 1, cols, q1, &err) == 0, "%s", err.msg);
        CHECK(!memcmp(q1, q + r * words, words * 4), "%s row %u differs quantized alone",
              eg_weight_format_name(f), r);
        eg_dequantize_row(f, q + r * words, cols, back);
        for (uint32_t b = 0; b * 32 < cols; b++) {
            uint32_t k0 = b * 32, n = cols - k0 < 32 ? cols - k0 : 32;
            float lo = wr[k0], hi = wr[k0], amax = 0;
            for (uint32_t i = 0; i < n; i++) {
                lo = fminf(lo, wr[k0 + i]), hi = fmaxf(hi, wr[k0 + i]);
                amax = fmaxf(amax, fabsf(wr[k0 + i]));
            }
            double step = f == EG_WEIGHTS_Q8 ? amax / 127.0 : (hi - lo) / 15.0;
            double bound = 0.5 * step * (1 + 1e-3) + (fabs(lo) + fabs(hi)) / 1024 + 1e-9;
            for (uint32_t i = 0; i < n; i++) {
                double e = fabs((double)back[k0 + i] - wr[k0 + i]);
                if (e / bound > worst) worst = e / bound;
                sq += e * e, ref += (double)wr[k0 + i] * wr[k0 + i];
                if (e > bound) {
                    CHECK(0, "%s [%u][%u]: %g back as %g (bound %g)", eg_weight_format_name(f), r,
                          k0 + i, (double)wr[k0 + i], (double)back[k0 + i], bound);
                    break;
                }
            }
        }
    }
    eg_dequantize_row(f, q + 7 * words, cols, back); /* the zero row comes back zero */
    for (uint32_t k = 0; k < cols; k++)
        CHECK(back[k] == 0.0f, "%s zero row: [%u] = %g", eg_weight_format_name(f), k,
              (double)back[k]);
    printf("%s: worst error %.2f of the bound, relative L2 error %.2e\n", eg_weight_format_name(f),
           worst, sqrt(sq / ref));
    free(w), free(back), free(q), free(q1);
}

static void test_refusals(EgWeightFormat f) {
    EgError err = {0};
    const uint32_t rows = 200, cols = 70;
    float *w = calloc((size_t)rows * cols, sizeof *w);
    uint32_t *q = malloc((size_t)rows * eg_quant_row_words(f, cols) * 4);
    const char *name = eg_weight_format_name(f);
    w[150 * cols + 45] = NAN;
    CHECK(eg_quantize_rows(f, w, rows, cols, q, &err) != 0 && strstr(err.msg, "[150][45]") &&
              strstr(err.msg, "not finite"),
          "%s NaN refused, named: %s", name, err.msg);
    w[150 * cols + 45] = 0;
    w[3 * cols + 2] = -INFINITY;
    CHECK(eg_quantize_rows(f, w, rows, cols, q, &err) != 0 && strstr(err.msg, "[3][2]"),
          "%s infinity refused, named: %s", name, err.msg);
    w[3 * cols + 2] = 0;
    w[199 * cols + 69] = 1e7f; /* q8: 1e7/127 and q4: (1e7 - 0)/15 exceed fp16's 65504 */
    CHECK(eg_quantize_rows(f, w, rows, cols, q, &err) != 0 && strstr(err.msg, "[199][64]") &&
              strstr(err.msg, "overflows"),
          "%s overflowing scale refused, the block named: %s", name, err.msg);
    w[199 * cols + 69] = 60000.0f; /* within fp16 after dividing */
    CHECK(eg_quantize_rows(f, w, rows, cols, q, &err) == 0, "%s large weight: %s", name, err.msg);
    CHECK(eg_quantize_rows(EG_WEIGHTS_DENSE, w, rows, cols, q, &err) != 0, "dense refused");
    free(w), free(q);
}

/* The report's formats: the projections in `proj`, everything else in `dense`. */
static void expect_formats(const char *what, const EgWeightReport *r, const char *proj,
                           const char *dense) {
    for (int g = 0; g < EG_WEIGHT_GROUP_COUNT; g++) {
        if (g == EG_WEIGHT_GROUP_LM_HEAD && !r->group[g].tensors) continue; /* tied */
        char format[32];
        eg_weight_group_format(r, (EgWeightGroup)g, format, sizeof format);
        const char *want = g <= EG_WEIGHT_GROUP_TEXT ? proj : dense;
        CHECK(r->group[g].tensors > 0 && r->group[g].bytes > 0 && !strcmp(format, want),
              "%s %s: format %s (want %s), %u tensors, %llu bytes", what,
              eg_weight_group_name((EgWeightGroup)g), format, want, r->group[g].tensors,
              (unsigned long long)r->group[g].bytes);
    }
}

static uint64_t matrix_bytes(const EgMatrix *m) {
    uint64_t n = 0;
    for (uint32_t c = 0; c < m->n_chunks; c++)
        n += m->chunks[c].size;
    return n;
}

/* tiny-mllama-b loaded with q4 projections (fp16 otherwise) the way the family loads it: the
 * report's groups hold exactly the buffers of their tensors (the projections' matrices summed
 * here from the model's own structs), all of them together everything the two weight arenas
 * allocated but the RoPE table, and the formats are q4 and fp16. */
static void test_mllama_report(void) {
    EgError err = {0};
    char dir[512];
    snprintf(dir, sizeof dir, "%s", test_data_path("mllama/tiny-mllama-b"));
    EgMllamaOptions mo = {.quant = EG_WEIGHTS_Q4};
    EgMllamaModel *m = eg_mllama_model_load(dir, &mo, &err);
    MUST(m != NULL, "mllama q4: %s", err.msg);
    const EgMllamaTextConfig *cfg = &m->cfg.text;
    EgTensorFile *tf = NULL;
    EgMllamaText t;
    EgMllamaTextOptions to = {.quant = EG_WEIGHTS_Q4, .report = &m->weight_report};
    MUST((tf = eg_tensors_open_dir(dir, &err)) != NULL &&
             eg_mllama_text_load(&t, cfg, &m->ops, &m->staging, tf, &to, &err) == 0,
         "mllama q4 text: %s", err.msg);
    eg_tensors_close(tf);
    const EgWeightReport *r = &m->weight_report;
    uint64_t vision = matrix_bytes(&m->vision.proj), text = 0;
    for (int l = 0; l < m->cfg.vision.num_hidden_layers + m->cfg.vision.num_global_layers; l++) {
        const EgMllamaVisionLayer *x = l < m->cfg.vision.num_hidden_layers
                                           ? &m->vision.local[l]
                                           : &m->vision.global[l - m->cfg.vision.num_hidden_layers];
        vision += matrix_bytes(&x->qkv) + matrix_bytes(&x->o) + matrix_bytes(&x->fc1) +
                  matrix_bytes(&x->fc2);
    }
    for (int i = 0; i < cfg->num_hidden_layers; i++) {
        int j = eg_mllama_cross_index(cfg, i);
        if (j >= 0) {
            const EgMllamaCrossLayer *x = &t.cross[j];
            text += matrix_bytes(&x->q) + matrix_bytes(&x->kv) + matrix_bytes(&x->o) +
                    matrix_bytes(&x->gate) + matrix_bytes(&x->up) + matrix_bytes(&x->down);
        } else {
            const EgMllamaSelfLayer *x = &t.self[i];
            text += matrix_bytes(&x->qkv) + matrix_bytes(&x->o) + matrix_bytes(&x->gate) +
                    matrix_bytes(&x->up) + matrix_bytes(&x->down);
        }
    }
    CHECK(r->group[EG_WEIGHT_GROUP_VISION].bytes == vision,
          "vision projections: %llu bytes reported, %llu in the matrices",
          (unsigned long long)r->group[EG_WEIGHT_GROUP_VISION].bytes, (unsigned long long)vision);
    CHECK(r->group[EG_WEIGHT_GROUP_TEXT].bytes == text,
          "text projections: %llu bytes reported, %llu in the matrices",
          (unsigned long long)r->group[EG_WEIGHT_GROUP_TEXT].bytes, (unsigned long long)text);
    CHECK(r->group[EG_WEIGHT_GROUP_LM_HEAD].bytes == matrix_bytes(&t.lm_head),
          "lm_head: %llu bytes reported, %llu in the matrix",
          (unsigned long long)r->group[EG_WEIGHT_GROUP_LM_HEAD].bytes,
          (unsigned long long)matrix_bytes(&t.lm_head));
    uint64_t total = eg_weight_report_bytes(r);
    uint64_t allocated = m->weights.bytes_used + t.weights.bytes_used - t.rope_table.size;
    CHECK(total == allocated, "mllama: %llu bytes reported, %llu allocated",
          (unsigned long long)total, (unsigned long long)allocated);
    expect_formats("mllama", r, "q4", "fp16");
    printf("mllama tiny-mllama-b q4: %llu weight bytes (vision projections %llu, text %llu)\n",
           (unsigned long long)total, (unsigned long long)vision, (unsigned long long)text);
    eg_mllama_text_free(&t);
    eg_mllama_model_free(m);
}

/* tiny-mllama-NAME's first golden sample (its images, every real token; the one request of
 * the batch without padding) through the mllama family with the projections in format f, fp32
 * otherwise, against HF's fp32 logits: L2-relative error within `limit` and above 1e-3 (fp32
 * weights give 6e-7: the weights must really be quantized). Then HF's 10 greedy ids fed one by
 * one (teacher-forced): the quantized model's top-1 must be HF's next id at `min_agree` steps
 * or more (all of them: the same greedy ids). Measured and bounded in main. */
static void test_quantized_mllama(const char *name, EgWeightFormat f, double limit, int min_agree) {
    enum { NEW = 10, IMAGE_TOKEN = 512 };
    char rel[256];
    snprintf(rel, sizeof rel, "mllama/%s/golden.safetensors", name);
    EgError err = {0};
    EgTensorFile *g = eg_tensors_open_file(test_data_path(rel), &err);
    MUST(g != NULL, "%s: %s", name, err.msg);
    const EgTensorView *ids_v = NULL, *px_v = NULL, *lg_v = NULL;
    int64_t *ids = test_tensor_i64(g, "input_ids", NULL, &ids_v);
    int64_t *mask = test_tensor_i64(g, "attention_mask", NULL, NULL);
    int64_t *ratio = test_tensor_i64(g, "aspect_ratio_ids", NULL, NULL);
    int64_t *tiles = test_tensor_i64(g, "num_tiles", NULL, NULL);
    int64_t *generated = test_tensor_i64(g, "generated_ids", NULL, NULL);
    float *pixels = test_tensor_f32(g, "pixel_values", NULL, &px_v);
    float *ref = test_tensor_f32(g, "logits", NULL, &lg_v);
    MUST(ids && mask && ratio && tiles && generated && pixels && ref, "%s: golden unreadable",
         name);
    uint32_t T = (uint32_t)ids_v->shape[1], N = (uint32_t)px_v->shape[1],
             J = (uint32_t)px_v->shape[2], S = (uint32_t)px_v->shape[4],
             V = (uint32_t)lg_v->shape[2];
    snprintf(rel, sizeof rel, "mllama/%s", name);
    EgModelOptions opt = {.fp32 = 1, .quant = f};
    EgFamilyModel *m = eg_family_open(test_data_path(rel), &opt, &err);
    MUST(m != NULL, "%s %s: %s", name, eg_weight_format_name(f), err.msg);
    expect_formats(name, m->info.weights, eg_weight_format_name(f), "fp32");
    /* sample 0's real tokens, each with the image it follows */
    int32_t tok[256], image[256], got[NEW];
    uint32_t n = 0;
    for (uint32_t t = 0, seen = 0; t < T && n < 256; t++) {
        if (!mask[t]) continue;
        tok[n] = (int32_t)ids[t];
        seen += tok[n] == IMAGE_TOKEN;
        image[n++] = (int32_t)seen - 1;
    }
    size_t px = (size_t)J * 3 * S * S, per = m->info.image_floats;
    MUST(per == px + 2, "image_floats %zu", per);
    float *images = calloc(N * per + 1, sizeof *images);
    uint32_t n_images = 0;
    for (uint32_t i = 0; i < N; i++) {
        if (ratio[i] == 0) continue; /* a padding image */
        float *dst = images + n_images++ * per;
        memcpy(dst, pixels + i * px, px * sizeof *dst);
        dst[px] = (float)ratio[i];
        dst[px + 1] = (float)tiles[i];
    }
    float *out = malloc((size_t)n * V * sizeof *out);
    EgFamilySeq *s = eg_fseq_new(m, n + NEW, &err);
    int rc = !s || eg_fseq_set_images_cached(s, n_images, NULL, images, NULL, &err) ||
             eg_fseq_forward(s, tok, image, n, out, 1, &err);
    CHECK(rc == 0, "%s %s forward: %s", name, eg_weight_format_name(f), err.msg);
    if (rc == 0) {
        const float *want = ref + (size_t)(T - n) * V; /* left padding */
        double dmax = 0, rmax = 0, num = 0, den = 0;
        int finite = 1;
        for (size_t i = 0; i < (size_t)n * V; i++) {
            double d = fabs((double)out[i] - want[i]);
            finite &= isfinite(out[i]) != 0;
            dmax = d > dmax ? d : dmax;
            rmax = fabs(want[i]) > rmax ? fabs(want[i]) : rmax;
            num += d * d, den += (double)want[i] * want[i];
        }
        double rel_l2 = sqrt(num / den), rel_max = dmax / rmax;
        memmove(out, out + (size_t)(n - 1) * V, V * sizeof *out);
        int agree = 0;
        for (int k = 0; k < NEW; k++) {
            got[k] = test_argmax(out, V);
            int32_t hf = (int32_t)generated[k];
            agree += got[k] == hf;
            if (got[k] != hf)
                printf("    step %d: top-1 %d (logit %.4f) where HF chose %d (%.4f)\n", k, got[k],
                       (double)out[got[k]], hf, (double)out[hf]);
            if (k + 1 < NEW && eg_fseq_forward(s, &hf, NULL, 1, out, 0, &err)) break;
        }
        printf("  %s %s: logits max-relative %.3g, L2-relative %.3g of fp32 (limit %.2g); "
               "top-1 equal to HF's greedy id at %d of %d steps (at least %d)\n",
               name, eg_weight_format_name(f), rel_max, rel_l2, limit, agree, NEW, min_agree);
        CHECK(finite && rel_l2 <= limit, "%s %s logits %.3g from fp32 (limit %.2g)%s", name,
              eg_weight_format_name(f), rel_l2, limit, finite ? "" : ", non-finite");
        CHECK(rel_l2 > 1e-3, "%s %s logits equal fp32's (%.3g): the weights were not quantized",
              name, eg_weight_format_name(f), rel_l2);
        CHECK(agree >= min_agree, "%s %s: top-1 equal to HF's greedy id at %d of %d steps", name,
              eg_weight_format_name(f), agree, NEW);
    }
    eg_fseq_free(s);
    eg_family_close(m);
    free(out), free(images), free(ids), free(mask), free(ratio), free(tiles), free(generated);
    free(pixels), free(ref);
    eg_tensors_close(g);
}

/* tiny-idefics-a loaded with its projections in format f (fp32 activations): the text-only
 * prompt's logits stay within `limit` (L2-relative) of HF's fp32 logits. Measured with correct
 * kernels: q8 0.021, q4 0.42 (random weights spread far from their init quantize poorly: their
 * round trip alone loses 1.2% and 12%); logits unrelated to the reference give about 1.4, a
 * wrong scale or layout more. Deterministic: the weights and their quantization are fixed. */
static void test_quantized_model(EgWeightFormat f, double limit) {
    EgError err = {0};
    EgModelOptions opt = {.fp32 = 1, .quant = f};
    EgModel *m = eg_model_load(test_data_path("tiny-idefics-a"), &opt, &err);
    CHECK(m != NULL, "load with %s: %s", eg_weight_format_name(f), err.msg);
    if (m) {
        /* every weight counted: the arena holds the weights and the RoPE table */
        const EgWeightReport *r = &m->weight_report;
        uint64_t total = eg_weight_report_bytes(r);
        CHECK(total + m->rope_table.size == m->weights.bytes_used,
              "IDEFICS %s: %llu bytes reported, %llu allocated besides the RoPE table",
              eg_weight_format_name(f), (unsigned long long)total,
              (unsigned long long)(m->weights.bytes_used - m->rope_table.size));
        expect_formats("IDEFICS", r, eg_weight_format_name(f), "fp32");
        /* only its own format's kernels were built: a matrix in the other is refused, named */
        EgWeightFormat other = f == EG_WEIGHTS_Q8 ? EG_WEIGHTS_Q4 : EG_WEIGHTS_Q8;
        EgMatrix mat;
        EgError merr = {0};
        CHECK(eg_matrix_create_format(&m->ops, &m->weights, 64, 64, 0, other, &mat, &merr) != 0 &&
                  strstr(merr.msg, eg_weight_format_name(other)),
              "a %s model's ops took a %s matrix (%s)", eg_weight_format_name(f),
              eg_weight_format_name(other), merr.msg);
        CHECK(m->ops.matmul_q[f - 1][0].pipeline && !m->ops.matmul_q[other - 1][0].pipeline,
              "a %s model built the %s kernels", eg_weight_format_name(f),
              eg_weight_format_name(other));
    }
    char gpath[600];
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", test_data_path("tiny-idefics-a"));
    EgTensorFile *g = m ? eg_tensors_open_file(gpath, &err) : NULL;
    const EgTensorView *view = NULL;
    int64_t *ids = g ? test_tensor_i64(g, "textonly_input_ids", NULL, &view) : NULL;
    float *ref = g ? test_tensor_f32(g, "textonly_logits", NULL, NULL) : NULL;
    if (!ids || !ref) {
        CHECK(0, "golden text-only prompt unreadable");
    } else {
        uint32_t n = (uint32_t)view->shape[1], V = m->vocab;
        int32_t ids32[64];
        for (uint32_t t = 0; t < n && t < 64; t++)
            ids32[t] = (int32_t)ids[t];
        float *out = malloc((size_t)n * V * sizeof *out);
        EgSequence *s = eg_sequence_new(m, n, &err);
        int rc = s ? eg_sequence_forward(s, ids32, NULL, n, out, 1, &err) : -1;
        CHECK(rc == 0, "%s forward: %s", eg_weight_format_name(f), err.msg);
        if (rc == 0) {
            double num = 0, den = 0;
            int finite = 1;
            for (size_t i = 0; i < (size_t)n * V; i++) {
                finite &= isfinite(out[i]) != 0;
                num += ((double)out[i] - ref[i]) * ((double)out[i] - ref[i]);
                den += (double)ref[i] * ref[i];
            }
            double rel = sqrt(num / (den > 0 ? den : 1));
            printf("  %s tiny-idefics-a text-only logits: L2-relative %.3g of fp32 (limit %.2g)\n",
                   eg_weight_format_name(f), rel, limit);
            CHECK(finite && rel <= limit, "%s logits %.3g from fp32 (limit %.2g)%s",
                  eg_weight_format_name(f), rel, limit, finite ? "" : ", non-finite");
        }
        eg_sequence_free(s);
        free(out);
    }
    free(ids);
    free(ref);
    if (g) eg_tensors_close(g);
    eg_model_free(m);
}

int main(void) {
    /* The figures and limits here are the float kernels' (docs/quantization.md): on a device
     * whose integer dot products are accelerated those would be chosen by default, with int8
     * activations and their own figures ("Integer dot products"; EGRET_INT_DOT=1 measures
     * them: q8 misses tiny-mllama-b's greedy id at one more step, a near tie). */
    setenv("EGRET_INT_DOT", "0", 0);
    test_rng_init();
    test_names();
    test_sizes();
    test_layout();
    for (EgWeightFormat f = EG_WEIGHTS_Q8; f <= EG_WEIGHTS_Q4; f++) {
        test_round_trip(f);
        test_refusals(f);
    }
    test_quantized_model(EG_WEIGHTS_Q8, 0.05);
    test_quantized_model(EG_WEIGHTS_Q4, 0.6);
    test_mllama_report();
    /* Measured (fp32 activations): L2-relative q8 0.017, 0.018, 0.018 (IDEFICS' 0.021); q4
     * 0.26, 0.30, 0.22: the round trip of these far-from-init random weights alone loses 1.2%
     * and 12%, and logits unrelated to HF's give about 1.4. The limits leave 1.5x of margin.
     * q8's greedy ids are HF's on a and c; on b its top-1 differs at step 6 only, where HF's own
     * top two logits are 0.039 apart (q8's logit errors are about 0.05 there). q4's top-1
     * agrees at 8, 4 and 8 of the 10 steps: not held (docs/quantization.md). */
    test_quantized_mllama("tiny-mllama-a", EG_WEIGHTS_Q8, 0.03, 10);
    test_quantized_mllama("tiny-mllama-b", EG_WEIGHTS_Q8, 0.03, 9);
    test_quantized_mllama("tiny-mllama-c", EG_WEIGHTS_Q8, 0.03, 10);
    test_quantized_mllama("tiny-mllama-a", EG_WEIGHTS_Q4, 0.45, 0);
    test_quantized_mllama("tiny-mllama-b", EG_WEIGHTS_Q4, 0.45, 0);
    test_quantized_mllama("tiny-mllama-c", EG_WEIGHTS_Q4, 0.45, 0);
    return test_finish();
}
