/* Published AWQ int4 checkpoints loaded onto q4 (runtime/awq.h, docs/quantization.md):
 *  - one AWQ Linear(256, 16) of group 128 (tests/data/awq/linear-g128.safetensors) converted to
 *    q4 rows gives AutoAWQ's own dequantization (dequantize_gemm, fp32) within the documented
 *    rounding of m = fp16(−z·s): |error| ≤ 2^-11·|z·s| per weight, and exactly where z·s is an
 *    fp16 value;
 *  - tests/data/awq/tiny-mllama-awq (tiny-mllama-a's text projections AWQ-packed, group 32)
 *    loads with no --quant (and with --quant q4, the same load): the report says q4 for the
 *    text projections and fp32 for the vision tower the config keeps dense; its logits on
 *    tiny-mllama-a's first golden sample are HF's (the AWQ Linears replaced by their
 *    dequantized weights) within the derived bound, and its 10 greedy ids are HF's;
 *  - tests/data/awq/tiny-idefics-awq (tiny-idefics-c's decoder and cross layers) likewise
 *    through the IDEFICS loader, HF's 8 greedy ids;
 *  - refused, before any device is opened, naming what is wrong: bits 8, versions gemv, marlin
 *    and exllama, a group size not a multiple of 32 and one not dividing a layer's inputs,
 *    zero_point false, another quant_method, AWQ tensors without a config, qzeros and scales of
 *    the wrong shape, a NaN scale, --quant q8; egret quantize of an AWQ folder. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "families/family.h"
#include "families/idefics/sequence.h"
#include "runtime/awq.h"
#include "runtime/half.h"
#include "runtime/quant.h"
#include "runtime/vk_context.h"
#include "runtime/weight_loader.h"
#include "test_util.h"
#include "tools/quantize_folder.h"

/* A device the loaders cannot open: a refusal that does not name it came from the check that
 * runs before any device is touched, so nothing was loaded half. */
#define NO_DEVICE "no-such-device-for-this-test"
#define AWQ_DIR "awq/tiny-mllama-awq"
#define NEW_TOKENS 10
#define IMAGE_TOKEN 512

static char work[256]; /* this run's temporary folder */

static unsigned char *read_data(const char *rel, size_t *len) {
    unsigned char *b = test_read_file(test_data_path(rel), len);
    MUST(b, "reading %s", rel);
    return b;
}

/* A folder `name` under the work folder with the given config.json and model.safetensors. */
static const char *folder_with(const char *name, const char *config, const unsigned char *st,
                               size_t n) {
    static char dirs[4][512];
    static int next;
    char *dir = dirs[next++ % 4], path[700];
    snprintf(dir, sizeof dirs[0], "%s/%s", work, name);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/config.json", dir);
    MUST(test_write_file(path, config, strlen(config)) == 0, "writing %s", path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    MUST(test_write_file(path, st, n) == 0, "writing %s", path);
    return dir;
}

/* A copy of s with the first `from` replaced by `to` (which must be there). */
static char *replaced(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    MUST(at, "'%s' not in the config", from);
    size_t n = strlen(s) - strlen(from) + strlen(to);
    char *out = malloc(n + 1);
    snprintf(out, n + 1, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    return out;
}

/* In the safetensors header of b, the first `from` after tensor `name`'s entry becomes `to`
 * (same length: the header keeps its size). */
static void edit_header(unsigned char *b, const char *name, const char *from, const char *to) {
    uint64_t hlen;
    memcpy(&hlen, b, 8);
    char *h = malloc(hlen + 1);
    memcpy(h, b + 8, hlen);
    h[hlen] = 0;
    char key[300];
    snprintf(key, sizeof key, "\"%s\"", name);
    char *at = strstr(h, key), *f = at ? strstr(at, from) : NULL;
    MUST(f && strlen(from) == strlen(to), "'%s' after '%s' in the header", from, name);
    memcpy(b + 8 + (f - h), to, strlen(to));
    free(h);
}

/* The offset in b of tensor `name`'s data. */
static size_t data_offset(const unsigned char *b, size_t len, const char *name) {
    EgError err = {0};
    EgTensorFile *tf = eg_tensors_open_memory(b, len, "awq", &err);
    const EgTensorView *t = tf ? eg_tensors_find(tf, name) : NULL;
    MUST(t, "%s in the AWQ file: %s", name, err.msg);
    size_t at = (size_t)((const unsigned char *)t->data - b);
    eg_tensors_close(tf);
    return at;
}

/* AutoAWQ's group-128 Linear: q4 rows against dequantize_gemm's weights. */
static void test_linear_g128(void) {
    EgError err = {0};
    EgTensorFile *tf = eg_tensors_open_file(test_data_path("awq/linear-g128.safetensors"), &err);
    MUST(tf, "linear-g128: %s", err.msg);
    enum { ROWS = 16, COLS = 256 };
    EgAwqLinear a;
    MUST(eg_awq_find(tf, "linear.weight", &a) == 1 && a.qzeros && a.scales,
         "linear.weight found as AWQ");
    CHECK(eg_awq_find(tf, "linear.bias", &a) == 0 && eg_awq_find(tf, "reference", &a) == 0,
          "only a .weight with a .qweight is AWQ");
    MUST(eg_awq_find(tf, "linear.weight", &a) == 1, "found again");
    CHECK(eg_awq_check(&a, ROWS, COLS, 128, &err) == 0, "group 128 accepted: %s", err.msg);
    CHECK(eg_awq_check(&a, ROWS, COLS, 0, &err) == 0, "group implied by the scales: %s", err.msg);
    CHECK(eg_awq_check(&a, ROWS, COLS, 64, &err) != 0 && strstr(err.msg, "linear.scales"),
          "group 64 against scales of group 128 refused: %s", err.msg);
    CHECK(eg_awq_check(&a, 24, COLS, 0, &err) != 0 && strstr(err.msg, "linear.qweight"),
          "another output count refused, naming qweight: %s", err.msg);
    float *ref = test_tensor_f32(tf, "reference", NULL, NULL);
    size_t words = eg_quant_row_words(EG_WEIGHTS_Q4, COLS);
    uint32_t *q4 = malloc(ROWS * words * 4);
    float row[COLS];
    MUST(ref && q4, "reference read");
    MUST(eg_awq_to_q4(&a, ROWS, COLS, q4, &err) == 0, "convert: %s", err.msg);
    double worst = 0, worst_rel = 0;
    int exact = 0, within = 1;
    for (uint32_t o = 0; o < ROWS; o++) {
        eg_dequantize_row(EG_WEIGHTS_Q4, q4 + o * words, COLS, row);
        for (uint32_t k = 0; k < COLS; k++) {
            /* z·s from the q4 row itself: m is fp16(−z·s), and z·s is at most 15·65504 */
            uint32_t g = k / 128, b = k / 32;
            const uint32_t *hdr = q4 + o * words + (b / 4) * 20;
            float s = eg_f16_to_f32((uint16_t)hdr[b % 4]);
            uint16_t sf16;
            memcpy(&sf16, (const unsigned char *)a.scales->data + 2 * (g * ROWS + o), 2);
            CHECK(s == eg_f16_to_f32(sf16), "row %u block %u: d is the AWQ scale", o, b);
            double d = fabs((double)row[k] - ref[o * COLS + k]);
            /* |m − (−z·s)| ≤ half an fp16 ulp of z·s ≤ 2^-11·|z·s|, z ≤ 15; plus the fp32
             * rounding of d·q + m (2^-24 of a value below 16·|s|) */
            double bound = ldexp(15.0 * fabs(s), -11) + ldexp(16.0 * fabs(s), -24);
            within &= d <= bound;
            exact += d == 0;
            worst = d > worst ? d : worst;
            worst_rel = s != 0 && d / fabs(s) > worst_rel ? d / fabs(s) : worst_rel;
        }
    }
    printf("linear-g128: worst |q4 - AutoAWQ| %.3g (%.3g of its scale), %d of %d exact\n", worst,
           worst_rel, exact, ROWS * COLS);
    CHECK(within, "every weight within 2^-11·15·|s| of AutoAWQ's: worst %.3g", worst);
    CHECK(worst > 0 && exact > 0, "both rounded and exact m occur in the test data (%d exact)",
          exact);
    free(q4), free(ref);
    eg_tensors_close(tf);
}

/* Whether every weight of the AWQ Linear (qw, qz, sc; group G) converted to q4 is (q − z)·s,
 * read here with AutoAWQ's order (nibble i of a word holds output 8j + AWQ_ORDER[i]), within
 * the rounding of m. */
static int matches_awq(const int32_t *qw, const int32_t *qz, const uint16_t *sc, uint32_t rows,
                       uint32_t cols, uint32_t G, int group_arg) {
    static const int AWQ_ORDER[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    EgAwqMemory mem;
    eg_awq_memory(&mem, qw, qz, sc, rows, cols, G);
    const EgAwqLinear a = mem.linear;
    EgError err = {0};
    size_t words = eg_quant_row_words(EG_WEIGHTS_Q4, cols);
    uint32_t *q4 = malloc(rows * words * 4);
    float *row = malloc(cols * sizeof *row);
    MUST(q4 && row && eg_awq_check(&a, rows, cols, group_arg, &err) == 0 &&
             eg_awq_to_q4(&a, rows, cols, q4, &err) == 0,
         "AWQ %u x %u, group %d: %s", rows, cols, group_arg, err.msg);
    int within = 1;
    for (uint32_t j = 0; j < rows / 8; j++)
        for (int i = 0; i < 8; i++) {
            uint32_t o = 8 * j + (uint32_t)AWQ_ORDER[i];
            eg_dequantize_row(EG_WEIGHTS_Q4, q4 + (size_t)o * words, cols, row);
            for (uint32_t k = 0; k < cols; k++) {
                uint32_t qv = ((uint32_t)qw[(size_t)k * rows / 8 + j] >> (4 * i)) & 15u,
                         zv = ((uint32_t)qz[(size_t)k / G * rows / 8 + j] >> (4 * i)) & 15u;
                float sv = eg_f16_to_f32(sc[(size_t)k / G * rows + o]);
                double want = ((double)qv - zv) * sv;
                within &= fabs(row[k] - want) <= ldexp(zv * sv, -11) + ldexp(16.0 * sv, -24);
            }
        }
    free(q4), free(row);
    return within;
}

/* A wide random AWQ Linear (1024 outputs: several threads' parts), and the same values as
 * one group a row (AutoAWQ's group_size -1). */
static void test_linear_wide(void) {
    enum { ROWS = 1024, COLS = 96, G = 32 };
    test_rng_init();
    int32_t *qw = malloc(COLS * ROWS / 8 * 4), *qz = malloc(COLS / G * ROWS / 8 * 4);
    uint16_t *sc = malloc(COLS / G * ROWS * 2);
    for (int i = 0; i < COLS * ROWS / 8; i++)
        qw[i] = (int32_t)test_rng_u64();
    for (int i = 0; i < COLS / G * ROWS / 8; i++)
        qz[i] = (int32_t)test_rng_u64();
    for (int i = 0; i < COLS / G * ROWS; i++)
        sc[i] = eg_f32_to_f16(test_rng_uniform(1e-3f, 0.5f));
    CHECK(matches_awq(qw, qz, sc, ROWS, COLS, G, G), "wide Linear, group 32: (q - z)·s");
    CHECK(matches_awq(qw, qz, sc, ROWS, COLS, G, 0), "group implied by the scales");
    /* the first group's zeros and scales serve whole rows */
    CHECK(matches_awq(qw, qz, sc, ROWS, COLS, COLS, -1), "group_size -1: (q - z)·s");
    free(qw), free(qz), free(sc);
}

/* The report's formats: text projections q4, vision projections and the rest fp32. */
static void expect_formats(const EgWeightReport *r) {
    for (int g = 0; g < EG_WEIGHT_GROUP_COUNT; g++) {
        char format[32];
        eg_weight_group_format(r, (EgWeightGroup)g, format, sizeof format);
        const char *want = g == EG_WEIGHT_GROUP_TEXT ? "q4" : "fp32";
        CHECK(r->group[g].tensors > 0 && !strcmp(format, want), "%s: %s (want %s), %u tensors",
              eg_weight_group_name((EgWeightGroup)g), format, want, r->group[g].tensors);
    }
}

/* Sums for the bound of test_mllama_awq over n logits: out against the exact reference and the
 * reference with Egret's weights (m16). */
typedef struct Bound {
    double dmax, num, max16, den16, shift, shift2;
} Bound;

static void bound_add(Bound *b, const float *out, const float *ref, const float *ref16, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)out[i] - ref[i]), h = fabs((double)ref16[i] - ref[i]);
        b->dmax = d > b->dmax || isnan(d) ? d : b->dmax;
        b->max16 = fabs(ref16[i]) > b->max16 ? fabs(ref16[i]) : b->max16;
        b->shift = h > b->shift ? h : b->shift;
        b->num += d * d, b->den16 += (double)ref16[i] * ref16[i], b->shift2 += h * h;
    }
}

static void bound_check(const char *what, const Bound *b) {
    double bound_max = 1e-4 * b->max16 + b->shift,
           bound_l2 = 1e-4 * sqrt(b->den16) + sqrt(b->shift2);
    printf("%s: max|out - HF| %.3g (bound %.3g: the m rounding moves HF's logits by %.3g), L2 "
           "%.3g (bound %.3g)\n",
           what, b->dmax, bound_max, b->shift, sqrt(b->num), bound_l2);
    CHECK(b->dmax <= bound_max, "%s: logits max error %.3g above %.3g", what, b->dmax, bound_max);
    CHECK(sqrt(b->num) <= bound_l2, "%s: logits L2 error %.3g above %.3g", what, sqrt(b->num),
          bound_l2);
}

/* tiny-mllama-awq against HF on tiny-mllama-a's first golden sample. The reference `logits`
 * uses AWQ's exact weights (q − z)·s; `logits_m16` Egret's (d·q + fp16(−z·s)). Egret in fp32
 * with Egret's weights is within test_golden's 1e-4 of max|logits_m16| (max-relative) and
 * L2-relative of HF, so by the triangle inequality
 *   max|out − logits| ≤ 1e-4·max|logits_m16| + max|logits_m16 − logits|,
 *   ||out − logits|| ≤ 1e-4·||logits_m16|| + ||logits_m16 − logits||:
 * the golden tolerance plus exactly what the m rounding moves HF's own logits. */
static void test_mllama_awq(EgWeightFormat quant) {
    EgError err = {0};
    EgTensorFile *in =
        eg_tensors_open_file(test_data_path("mllama/tiny-mllama-a/golden.safetensors"), &err);
    EgTensorFile *g = eg_tensors_open_file(test_data_path(AWQ_DIR "/golden.safetensors"), &err);
    MUST(in && g, "goldens: %s", err.msg);
    const EgTensorView *ids_v = NULL, *px_v = NULL, *lg_v = NULL;
    int64_t *ids = test_tensor_i64(in, "input_ids", NULL, &ids_v);
    int64_t *mask = test_tensor_i64(in, "attention_mask", NULL, NULL);
    int64_t *ratio = test_tensor_i64(in, "aspect_ratio_ids", NULL, NULL);
    int64_t *tiles = test_tensor_i64(in, "num_tiles", NULL, NULL);
    float *pixels = test_tensor_f32(in, "pixel_values", NULL, &px_v);
    float *ref = test_tensor_f32(g, "logits", NULL, &lg_v);
    float *ref16 = test_tensor_f32(g, "logits_m16", NULL, NULL);
    int64_t *generated = test_tensor_i64(g, "generated_ids", NULL, NULL);
    MUST(ids && mask && ratio && tiles && pixels && ref && ref16 && generated, "golden tensors");
    uint32_t T = (uint32_t)ids_v->shape[1], N = (uint32_t)px_v->shape[1],
             J = (uint32_t)px_v->shape[2], S = (uint32_t)px_v->shape[4],
             V = (uint32_t)lg_v->shape[2];

    EgModelOptions opt = {.fp32 = 1, .quant = quant};
    EgFamilyModel *m = eg_family_open(test_data_path(AWQ_DIR), &opt, &err);
    MUST(m, "tiny-mllama-awq (--quant %s): %s", eg_weight_format_name(quant), err.msg);
    expect_formats(m->info.weights);
    int32_t tok[64], image[64];
    uint32_t n = 0;
    for (uint32_t t = 0, seen = 0; t < T && n < 64; t++) {
        if (!mask[t]) continue; /* sample 0 of the batch; left padding */
        tok[n] = (int32_t)ids[t];
        seen += tok[n] == IMAGE_TOKEN;
        image[n++] = (int32_t)seen - 1;
    }
    size_t px = (size_t)J * 3 * S * S, per = m->info.image_floats;
    MUST(per == px + 2, "image_floats %zu", per);
    float *images = calloc(N * per, sizeof *images);
    uint32_t n_images = 0;
    for (uint32_t i = 0; i < N; i++) {
        if (ratio[i] == 0) continue;
        float *dst = images + n_images++ * per;
        memcpy(dst, pixels + i * px, px * sizeof *dst);
        dst[px] = (float)ratio[i];
        dst[px + 1] = (float)tiles[i];
    }
    float *out = malloc((size_t)n * V * sizeof *out);
    EgFamilySeq *s = eg_fseq_new(m, n + NEW_TOKENS, &err);
    MUST(s && eg_fseq_set_images_cached(s, n_images, NULL, images, NULL, &err) == 0 &&
             eg_fseq_forward(s, tok, image, n, out, 1, &err) == 0,
         "forward: %s", err.msg);
    const float *want = ref + (size_t)(T - n) * V, *want16 = ref16 + (size_t)(T - n) * V;
    Bound b = {0};
    bound_add(&b, out, want, want16, (size_t)n * V);
    bound_check(quant ? "tiny-mllama-awq (--quant q4)" : "tiny-mllama-awq", &b);
    memmove(out, out + (size_t)(n - 1) * V, V * sizeof *out);
    int same = 1;
    for (int k = 0; k < NEW_TOKENS; k++) {
        int32_t id = test_argmax(out, V);
        if (id != (int32_t)generated[k]) {
            printf("  step %d: %d where HF chose %d\n", k, id, (int)generated[k]);
            same = 0;
            break;
        }
        if (k + 1 < NEW_TOKENS && eg_fseq_forward(s, &id, NULL, 1, out, 0, &err)) {
            CHECK(0, "decode: %s", err.msg);
            break;
        }
    }
    CHECK(same, "tiny-mllama-awq: HF's %d greedy ids", NEW_TOKENS);
    eg_fseq_free(s);
    eg_family_close(m);
    free(out), free(images), free(ids), free(mask), free(ratio), free(tiles), free(pixels);
    free(ref), free(ref16), free(generated);
    eg_tensors_close(in);
    eg_tensors_close(g);
}

/* tiny-idefics-awq (tiny-idefics-c's decoder and cross layers AWQ-packed, the cross layers' k
 * and v two AWQ Linears stacked into one matrix) through the IDEFICS loader: row 0 of
 * tiny-idefics-c's golden, the same bound as test_mllama_awq, HF's 8 greedy ids. */
static void test_idefics_awq(void) {
    EgError err = {0};
    EgTensorFile *in =
        eg_tensors_open_file(test_data_path("tiny-idefics-c/golden.safetensors"), &err);
    EgTensorFile *g =
        eg_tensors_open_file(test_data_path("awq/tiny-idefics-awq/golden.safetensors"), &err);
    MUST(in && g, "goldens: %s", err.msg);
    const EgTensorView *ids_v = NULL, *px_v = NULL;
    int64_t *ids = test_tensor_i64(in, "input_ids", NULL, &ids_v);
    int64_t *mask = test_tensor_i64(in, "attention_mask", NULL, NULL);
    int64_t *img_mask = test_tensor_i64(in, "image_attention_mask", NULL, NULL);
    float *pix = test_tensor_f32(in, "pixel_values", NULL, &px_v);
    float *ref = test_tensor_f32(g, "logits", NULL, NULL);
    float *ref16 = test_tensor_f32(g, "logits_m16", NULL, NULL);
    int64_t *gen = test_tensor_i64(g, "generated_ids", NULL, NULL);
    MUST(ids && mask && img_mask && pix && ref && ref16 && gen, "idefics golden tensors");
    uint32_t T = (uint32_t)ids_v->shape[1], N = (uint32_t)px_v->shape[1];

    EgModelOptions opt = {.fp32 = 1};
    EgModel *m = eg_model_load(test_data_path("awq/tiny-idefics-awq"), &opt, &err);
    MUST(m, "tiny-idefics-awq: %s", err.msg);
    expect_formats(&m->weight_report);
    uint32_t V = m->vocab, start = 0;
    while (start < T && mask[start] == 0)
        start++;
    uint32_t n = T - start;
    int32_t tok[128], image[128];
    MUST(n <= 128, "row 0: %u tokens", n);
    for (uint32_t t = 0; t < n; t++) {
        tok[t] = (int32_t)ids[start + t];
        image[t] = -1;
        for (uint32_t k = 0; k < N; k++)
            if (img_mask[(size_t)(start + t) * N + k]) image[t] = (int32_t)k;
    }
    float *out = malloc((size_t)n * V * sizeof *out);
    EgSequence *s = eg_sequence_new(m, n + 8, &err);
    MUST(s && eg_sequence_set_images(s, pix, N, &err) == 0 &&
             eg_sequence_forward(s, tok, image, n, out, 1, &err) == 0,
         "idefics forward: %s", err.msg);
    Bound b = {0};
    bound_add(&b, out, ref + (size_t)start * V, ref16 + (size_t)start * V, (size_t)n * V);
    bound_check("tiny-idefics-awq", &b);
    int32_t next = test_argmax(out + (size_t)(n - 1) * V, V);
    int same = 1;
    for (int k = 0; k < 8 && same; k++) {
        same = next == (int32_t)gen[k];
        if (k < 7 && eg_sequence_forward(s, &next, NULL, 1, out, 0, &err)) same = 0;
        next = test_argmax(out, V);
    }
    CHECK(same, "tiny-idefics-awq: HF's 8 greedy ids (%s)", err.msg);
    eg_sequence_free(s);
    eg_model_free(m);
    free(out), free(ids), free(mask), free(img_mask), free(pix), free(ref), free(ref16), free(gen);
    eg_tensors_close(in);
    eg_tensors_close(g);
}

/* Opening dir (config, tensors) is refused before any device, naming each of `needles`. */
static void expect_refused(const char *what, const char *dir, EgWeightFormat quant,
                           const char *const *needles) {
    EgError err = {0};
    EgModelOptions opt = {.fp32 = 1, .quant = quant, .device = NO_DEVICE};
    EgFamilyModel *m = eg_family_open(dir, &opt, &err);
    int named = m == NULL && !strstr(err.msg, NO_DEVICE);
    for (const char *const *n = needles; *n; n++)
        named &= strstr(err.msg, *n) != NULL;
    CHECK(named, "%s: refused before the device, naming what: %s", what, err.msg);
    if (m) eg_family_close(m);
    printf("%s: %s\n", what, err.msg);
}

static void refused_config(const char *what, const char *config, const char *from, const char *to,
                           const unsigned char *st, size_t len, const char *needle) {
    char *c = replaced(config, from, to);
    const char *needles[] = {"config.json", needle, NULL};
    expect_refused(what, folder_with("bad-config", c, st, len), 0, needles);
    free(c);
}

static void test_refusals(void) {
    size_t len, clen;
    unsigned char *st = read_data(AWQ_DIR "/model.safetensors", &len);
    unsigned char *raw = read_data(AWQ_DIR "/config.json", &clen);
    char *config = malloc(clen + 1); /* as a string */
    MUST(config, "out of memory");
    memcpy(config, raw, clen);
    config[clen] = 0;
    free(raw);
    refused_config("bits 8", config, "\"bits\": 4", "\"bits\": 8", st, len, "8 bits");
    const char *versions[] = {"gemv", "marlin", "exllama"};
    for (int i = 0; i < 3; i++) {
        char to[64], needle[64];
        snprintf(to, sizeof to, "\"version\": \"%s\"", versions[i]);
        snprintf(needle, sizeof needle, "version '%s'", versions[i]);
        refused_config(versions[i], config, "\"version\": \"gemm\"", to, st, len, needle);
    }
    refused_config("group 48", config, "\"group_size\": 32", "\"group_size\": 48", st, len,
                   "group_size 48");
    refused_config("zero_point false", config, "\"zero_point\": true", "\"zero_point\": false", st,
                   len, "zero_point false");
    refused_config("gptq", config, "\"quant_method\": \"awq\"", "\"quant_method\": \"gptq\"", st,
                   len, "quant_method 'gptq'");

    /* group 64 is a multiple of 32 but does not divide down_proj's 96 inputs */
    char *c = replaced(config, "\"group_size\": 32", "\"group_size\": 64");
    const char *g64[] = {"group size 64", "mlp.down_proj.scales", "model.safetensors", NULL};
    expect_refused("group 64", folder_with("g64", c, st, len), 0, g64);
    free(c);
    c = replaced(config, "\"quantization_config\"", "\"no_quantization_config\"");
    const char *none[] = {".qweight", "no AWQ quantization_config", NULL};
    expect_refused("no config", folder_with("no-config", c, st, len), 0, none);
    free(c);

    const char *o = "language_model.model.layers.0.self_attn.o_proj.";
    char name[200];
    unsigned char *b = malloc(len);
    memcpy(b, st, len);
    snprintf(name, sizeof name, "%sscales", o);
    edit_header(b, name, "[2,64]", "[4,32]");
    const char *scales[] = {name, "model.safetensors", "F16 [2, 64]", NULL};
    expect_refused("scales shape", folder_with("scales", config, b, len), 0, scales);
    memcpy(b, st, len);
    char zname[200];
    snprintf(zname, sizeof zname, "%sqzeros", o);
    edit_header(b, zname, "[2,8]", "[4,4]");
    const char *zeros[] = {zname, "model.safetensors", "I32 [2, 8]", NULL};
    expect_refused("qzeros shape", folder_with("qzeros", config, b, len), 0, zeros);

    /* a NaN scale: down_proj of layer 2 (scales [3, 64]), group 1, output row 5 */
    memcpy(b, st, len);
    const char *down = "language_model.model.layers.2.mlp.down_proj.scales";
    size_t at = data_offset(b, len, down) + 2 * (1 * 64 + 5);
    b[at] = 0x00, b[at + 1] = 0x7e;
    const char *nan[] = {down, "model.safetensors", "output row 5, group 1", "not finite", NULL};
    expect_refused("NaN scale", folder_with("nan", config, b, len), 0, nan);
    free(b);

    const char *q8[] = {"AWQ", "--quant q8", NULL};
    expect_refused("--quant q8", test_data_path(AWQ_DIR), EG_WEIGHTS_Q8, q8);

    /* egret quantize would keep AWQ's tensors as they are: it refuses, writing nothing */
    EgError err = {0};
    char out[600];
    snprintf(out, sizeof out, "%s/quantized", work);
    EgQuantizeOptions qo = {.format = EG_WEIGHTS_Q4};
    CHECK(eg_quantize_folder(test_data_path(AWQ_DIR), out, &qo, &err) != 0 &&
              strstr(err.msg, "AWQ") && access(out, F_OK) != 0,
          "egret quantize of an AWQ folder refused, nothing written: %s", err.msg);
    printf("quantize: %s\n", err.msg);
    free(st), free(config);
}

int main(void) {
    snprintf(work, sizeof work, "/tmp/egret_test_awq.%d", (int)getpid());
    MUST(mkdir(work, 0755) == 0, "creating %s", work);
    test_linear_g128();
    test_linear_wide();
    test_refusals();
    test_mllama_awq(EG_WEIGHTS_DENSE);
    test_mllama_awq(EG_WEIGHTS_Q4); /* accepted, the same load */
    test_idefics_awq();
    CHECK(eg_vk_validation_message_count() == 0, "the Vulkan validation layer reported %d messages",
          eg_vk_validation_message_count());
    test_remove_tree(work);
    return test_finish();
}
