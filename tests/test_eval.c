/* `egret eval`'s arithmetic (tools/eval_metrics.h, tools/cli_eval.c) against computations made
 * here independently:
 * - the KL divergence on distributions whose KL is known in closed form, invariant to a shift of
 *   the logits and exactly 0 for equal ones; argmax ties; the quantiles;
 * - the built binary on tiny-idefics-a's golden (two image rows and a text-only prompt): fp32
 *   against a second fp32 load has a mean KL of exactly 0, top-1 at every position and every
 *   answer the same; q8's mean KL and top-1 count equal (to 1e-9 relative) the ones this test
 *   computes in long double, with its own formula, from every position's logits of the same
 *   prompts on fp32 and q8 models it loads itself (what `egret forward --logits-out` writes);
 * - --prefill-chunk 3 against the whole prompt, in fp32: the same up to summation order;
 * - bad input: an unknown format, a missing cases file, an id outside the vocabulary, a chunk
 *   of 0 tokens. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "families/family.h"
#include "runtime/safetensors.h"
#include "runtime/vk_context.h"
#include "test_util.h"
#include "tools/eval_metrics.h"

#define MODEL "tiny-idefics-a"

static char egret_bin[PATH_MAX], tmp_dir[PATH_MAX];

/* Runs a shell command; returns its exit code (-1 when it did not exit normally). */
static int run(const char *cmd) {
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- the arithmetic on known values */

static void test_kl_known(void) {
    /* p = (1/2, 1/2), q = (3/4, 1/4): KL = ½ ln(2/3) + ½ ln 2 = ½ ln(4/3) */
    float p[2] = {0.0f, 0.0f}, q[2] = {logf(3.0f), 0.0f};
    double kl = eg_eval_kl(p, q, 2), want = 0.5 * log(4.0 / 3.0);
    CHECK(fabs(kl - want) < 1e-7 * want, "KL of (1/2,1/2) from (3/4,1/4): %.12g, want %.12g", kl,
          want);
    /* the logits of each distribution shifted: the same distributions (max subtraction keeps
     * logits of 1e4 from overflowing) */
    float p2[2] = {1e4f, 1e4f}, q2[2] = {-1023.0f, -1024.0f}; /* q = (e, 1) / (e + 1) */
    double e = exp(1.0), q0 = e / (e + 1), want2 = 0.5 * log(0.5 / q0) + 0.5 * log(0.5 / (1 - q0));
    double shifted = eg_eval_kl(p2, q2, 2);
    CHECK(fabs(shifted - want2) < 1e-12 * want2, "KL of shifted logits: %.15g, want %.15g", shifted,
          want2);
    /* random logits: 0 against themselves exactly, positive against others, asymmetric */
    enum { V = 477 };
    float a[V], b[V];
    for (int i = 0; i < V; i++)
        a[i] = 8.0f * test_rng_normal(), b[i] = a[i] + 0.3f * test_rng_normal();
    CHECK(eg_eval_kl(a, a, V) == 0.0, "KL of equal logits: %g", eg_eval_kl(a, a, V));
    double ab = eg_eval_kl(a, b, V), ba = eg_eval_kl(b, a, V);
    CHECK(ab > 0 && ba > 0 && ab != ba, "KL(a||b) %g and KL(b||a) %g: positive and different", ab,
          ba);
    a[7] = NAN;
    CHECK(isnan(eg_eval_kl(a, b, V)), "a NaN logit gives NaN");
    float tie[4] = {1.0f, 3.0f, 3.0f, 2.0f};
    CHECK(eg_eval_argmax(tie, 4) == 1, "argmax takes the lowest id on ties");

    EgEvalStats s = {0};
    float same[2] = {0.0f, 0.0f}, flipped[2] = {0.0f, logf(3.0f)}; /* KL ½ ln(4/3) too */
    for (int i = 0; i < 300; i++) /* 300 positions: the stats grow past their first capacity */
        eg_eval_stats_add(&s, same, i == 299 ? flipped : same, 2);
    CHECK(s.n == 300 && s.top1_same == 299, "300 positions, 299 with the same argmax: %zu, %zu",
          s.n, s.top1_same);
    CHECK(fabs(eg_eval_stats_mean(&s) - want / 300) < 1e-9 * want, "mean KL %.12g",
          eg_eval_stats_mean(&s));
    CHECK(eg_eval_stats_quantile(&s, 0.99) == 0.0 &&
              fabs(eg_eval_stats_max(&s) - want) < 1e-7 * want,
          "p99 0 (one outlier in 300) and max the outlier: %g, %g",
          eg_eval_stats_quantile(&s, 0.99), eg_eval_stats_max(&s));
    eg_eval_stats_free(&s);
}

/* ---- independent figures from `egret forward` */

/* KL(p || q) in long double from normalized probabilities: another formula than the tool's. */
static long double kl_long(const float *ref, const float *out, uint32_t n) {
    long double mr = ref[0], mo = out[0], zr = 0, zo = 0, kl = 0;
    for (uint32_t i = 1; i < n; i++)
        mr = fmaxl(mr, ref[i]), mo = fmaxl(mo, out[i]);
    for (uint32_t i = 0; i < n; i++)
        zr += expl(ref[i] - mr), zo += expl(out[i] - mo);
    for (uint32_t i = 0; i < n; i++) {
        long double p = expl(ref[i] - mr) / zr, q = expl(out[i] - mo) / zo;
        if (p > 0) kl += p * logl(p / q);
    }
    return kl;
}

typedef struct Figures {
    long double kl_sum;
    size_t positions, top1_same;
} Figures;

/* Every position's logits of one prompt on model m (malloc'd [n][vocab]; NULL after a failed
 * check): a fresh sequence, as `egret forward --logits-out` computes them. */
static float *forward_logits(EgFamilyModel *m, const int32_t *ids, const int32_t *img, uint32_t n,
                             const float *pixels, uint32_t n_images) {
    EgError err = {0};
    float *logits = malloc((size_t)n * m->info.vocab * sizeof *logits);
    EgFamilySeq *s = eg_fseq_new(m, n, &err);
    int ok = logits && s && eg_fseq_set_images(s, pixels, n_images, &err) == 0 &&
             eg_fseq_forward(s, ids, img, n, logits, 1, &err) == 0;
    CHECK(ok, "forward of %u tokens: %s", n, err.msg);
    eg_fseq_free(s);
    if (!ok) free(logits);
    return ok ? logits : NULL;
}

/* One prompt on both models; adds its positions' KL and top-1. */
static void add_prompt(Figures *fig, EgFamilyModel *const models[2], const int32_t *ids,
                       const int32_t *img, uint32_t n, const float *pixels, uint32_t n_images) {
    float *ref = forward_logits(models[0], ids, img, n, pixels, n_images);
    float *out = forward_logits(models[1], ids, img, n, pixels, n_images);
    uint32_t vocab = models[0]->info.vocab;
    for (uint32_t t = 0; ref && out && t < n; t++) {
        const float *r = ref + (size_t)t * vocab, *o = out + (size_t)t * vocab;
        fig->kl_sum += kl_long(r, o, vocab);
        uint32_t br = 0, bo = 0;
        for (uint32_t v = 1; v < vocab; v++) {
            if (r[v] > r[br]) br = v;
            if (o[v] > o[bo]) bo = v;
        }
        fig->top1_same += br == bo;
        fig->positions++;
    }
    free(ref), free(out);
}

/* The golden's prompts as test_golden reads them: each row without its left padding, its
 * images and per-token image, then the text-only prompt. */
static Figures forward_figures(void) {
    Figures fig = {0};
    /* fp32, and q8 with fp16 activations: the reference and the format `egret eval` loads */
    EgModelOptions f32 = {.fp32 = 1}, q8 = {.quant = EG_WEIGHTS_Q8};
    EgError err = {0};
    EgFamilyModel *models[2] = {eg_family_open(test_data_path(MODEL), &f32, &err), NULL};
    CHECK(models[0] != NULL, "load fp32: %s", err.msg);
    models[1] = models[0] ? eg_family_open(test_data_path(MODEL), &q8, &err) : NULL;
    CHECK(models[1] != NULL, "load q8: %s", err.msg);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/golden.safetensors", test_data_path(MODEL));
    EgTensorFile *g = models[1] ? eg_tensors_open_file(path, &err) : NULL;
    CHECK(g != NULL, "%s", err.msg);
    if (!g) {
        eg_family_close(models[0]), eg_family_close(models[1]);
        return fig;
    }
    const EgTensorView *ids_v, *img_v, *text_v;
    int64_t *ids = test_tensor_i64(g, "input_ids", NULL, &ids_v);
    int64_t *mask = test_tensor_i64(g, "attention_mask", NULL, NULL);
    int64_t *img_mask = test_tensor_i64(g, "image_attention_mask", NULL, &img_v);
    int64_t *text = test_tensor_i64(g, "textonly_input_ids", NULL, &text_v);
    size_t n_pix = 0;
    float *pix = test_tensor_f32(g, "pixel_values", &n_pix, NULL);
    int64_t B = ids_v->shape[0], T = ids_v->shape[1], N = img_v->shape[2];
    int32_t row_ids[256], row_img[256];
    for (int64_t b = 0; b < B; b++) {
        int64_t start = 0;
        while (start < T && mask[b * T + start] == 0)
            start++;
        uint32_t n = (uint32_t)(T - start);
        for (uint32_t t = 0; t < n; t++) {
            row_ids[t] = (int32_t)ids[b * T + start + t];
            row_img[t] = -1;
            for (int64_t k = 0; k < N; k++)
                if (img_mask[(b * T + start + t) * N + k]) row_img[t] = (int32_t)k;
        }
        size_t per_row = n_pix / (size_t)B;
        add_prompt(&fig, models, row_ids, row_img, n, pix + (size_t)b * per_row, (uint32_t)N);
    }
    uint32_t tn = (uint32_t)text_v->shape[1];
    for (uint32_t t = 0; t < tn; t++)
        row_ids[t] = (int32_t)text[t], row_img[t] = -1;
    add_prompt(&fig, models, row_ids, row_img, tn, NULL, 0);
    free(ids), free(mask), free(img_mask), free(text), free(pix);
    eg_tensors_close(g);
    eg_family_close(models[0]), eg_family_close(models[1]);
    return fig;
}

static double number(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void test_cli(void) {
    char json_path[PATH_MAX + 32], cmd[4 * PATH_MAX];
    snprintf(json_path, sizeof json_path, "%s/eval.json", tmp_dir);
    snprintf(cmd, sizeof cmd,
             "%s eval --model %s --cases %s/golden.safetensors --quant fp32,q8 --json > %s "
             "2> %s/eval.log",
             egret_bin, test_data_path(MODEL), test_data_path(MODEL), json_path, tmp_dir);
    int rc = run(cmd);
    CHECK(rc == 0, "egret eval exited %d (log in %s/eval.log)", rc, tmp_dir);
    size_t len;
    char *text = (char *)test_read_file(json_path, &len);
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    const cJSON *formats = cJSON_GetObjectItem(root, "formats");
    CHECK(cJSON_GetArraySize(formats) == 2, "two formats in the JSON");
    if (cJSON_GetArraySize(formats) != 2) {
        cJSON_Delete(root);
        return;
    }
    const cJSON *f32 = cJSON_GetArrayItem(formats, 0), *q8 = cJSON_GetArrayItem(formats, 1);
    double positions = number(root, "positions"), n_cases = number(root, "n_cases");
    CHECK(n_cases == 3 && positions > 40, "3 prompts, their positions: %g", positions);
    /* fp32 against fp32: the same logits bit for bit, so KL exactly 0 */
    CHECK(number(f32, "mean_kl") == 0.0 && number(f32, "max_kl") == 0.0,
          "fp32 vs fp32: mean KL %g, max %g (exactly 0)", number(f32, "mean_kl"),
          number(f32, "max_kl"));
    CHECK(number(f32, "top1_same") == positions && number(f32, "top1_agreement") == 1.0,
          "fp32 vs fp32: top-1 at %g of %g positions", number(f32, "top1_same"), positions);
    CHECK(number(f32, "answers_same_as_reference") == n_cases, "fp32 vs fp32: answers the same");

    Figures fig = forward_figures();
    CHECK(eg_vk_validation_message_count() == 0, "the Vulkan validation layer reported %d messages",
          eg_vk_validation_message_count());
    double want = fig.positions ? (double)(fig.kl_sum / (long double)fig.positions) : NAN;
    double got = number(q8, "mean_kl");
    printf("q8 mean KL: egret eval %.10g, computed here %.10g (%zu positions); top-1 %g and "
           "%zu\n",
           got, want, fig.positions, number(q8, "top1_same"), fig.top1_same);
    CHECK((double)fig.positions == positions, "positions: eval %g, here %zu", positions,
          fig.positions);
    CHECK(want > 0 && fabs(got - want) <= 1e-9 * want, "q8 mean KL %.12g, want %.12g", got, want);
    CHECK(number(q8, "top1_same") == (double)fig.top1_same, "q8 top-1 %g, want %zu",
          number(q8, "top1_same"), fig.top1_same);
    cJSON_Delete(root);
}

/* --prefill-chunk: the compared model's prompts fed 3 tokens per pass (the engine's chunked
 * prefill; the reference's in one) give the same distributions up to float summation order
 * (the matrix-vector kernels instead of the matrix ones): in fp32, far below any format's KL,
 * the same greedy tokens and answers. */
static void test_cli_chunked(void) {
    char json_path[PATH_MAX + 32], cmd[4 * PATH_MAX];
    snprintf(json_path, sizeof json_path, "%s/eval_chunked.json", tmp_dir);
    snprintf(cmd, sizeof cmd,
             "%s eval --model %s --cases %s/golden.safetensors --quant fp32 --prefill-chunk 3 "
             "--json > %s 2> %s/eval_chunked.log",
             egret_bin, test_data_path(MODEL), test_data_path(MODEL), json_path, tmp_dir);
    int rc = run(cmd);
    CHECK(rc == 0, "egret eval --prefill-chunk 3 exited %d (log in %s/eval_chunked.log)", rc,
          tmp_dir);
    size_t len;
    char *text = (char *)test_read_file(json_path, &len);
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    const cJSON *f32 = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "formats"), 0);
    double positions = number(root, "positions"), kl = number(f32, "mean_kl");
    printf("fp32 chunked by 3 vs fp32: mean KL %.3g, top-1 %g of %g\n", kl,
           number(f32, "top1_same"), positions);
    CHECK(kl >= 0 && kl < 1e-9, "fp32 chunked vs whole: mean KL %g (< 1e-9)", kl);
    CHECK(positions > 40 && number(f32, "top1_same") == positions,
          "fp32 chunked vs whole: top-1 at %g of %g positions", number(f32, "top1_same"),
          positions);
    CHECK(number(f32, "answers_same_as_reference") == 3, "fp32 chunked vs whole: answers %g of 3",
          number(f32, "answers_same_as_reference"));
    cJSON_Delete(root);
}

static void test_bad_input(void) {
    char cmd[4 * PATH_MAX], log_path[PATH_MAX + 32];
    snprintf(log_path, sizeof log_path, "%s/bad.log", tmp_dir);
    size_t len;
    snprintf(cmd, sizeof cmd, "%s eval --model %s --quant q8,q5 > /dev/null 2> %s", egret_bin,
             test_data_path(MODEL), log_path);
    int rc = run(cmd);
    char *log = (char *)test_read_file(log_path, &len);
    CHECK(rc == 2 && log && strstr(log, "'q5'"), "--quant q8,q5: exit %d, '%s'", rc, log);
    free(log);

    snprintf(cmd, sizeof cmd, "%s eval --model %s --prefill-chunk 0 > /dev/null 2> %s", egret_bin,
             test_data_path(MODEL), log_path);
    rc = run(cmd);
    log = (char *)test_read_file(log_path, &len);
    CHECK(rc == 2 && log && strstr(log, "--prefill-chunk") && strstr(log, "'0'"),
          "--prefill-chunk 0: exit %d, '%s'", rc, log);
    free(log);

    snprintf(cmd, sizeof cmd, "%s eval --model %s --cases %s/none.json > /dev/null 2> %s",
             egret_bin, test_data_path(MODEL), tmp_dir, log_path);
    rc = run(cmd);
    log = (char *)test_read_file(log_path, &len);
    CHECK(rc == 1 && log && strstr(log, "none.json"), "missing cases: exit %d, '%s'", rc, log);
    free(log);

    char cases_path[PATH_MAX + 32];
    snprintf(cases_path, sizeof cases_path, "%s/bad.json", tmp_dir);
    FILE *f = fopen(cases_path, "w");
    if (f) {
        fputs("[{\"task\": \"odd\", \"parts\": [{\"text\": \"x\"}], \"prompt_ids\": [1, 99999]}]",
              f);
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "%s eval --model %s --cases %s > /dev/null 2> %s", egret_bin,
             test_data_path(MODEL), cases_path, log_path);
    rc = run(cmd);
    log = (char *)test_read_file(log_path, &len);
    CHECK(rc == 1 && log && strstr(log, "99999") && strstr(log, "0 (odd)"),
          "an id outside the vocabulary: exit %d, '%s'", rc, log);
    free(log);
}

int main(void) {
    test_rng_init();
    snprintf(egret_bin, sizeof egret_bin, "%s", test_egret_binary());
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/egret-test-eval-%d", (int)getpid());
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tmp_dir);
    REQUIRE(run(cmd) == 0, "mkdir %s", tmp_dir);
    REQUIRE(access(egret_bin, X_OK) == 0, "no egret binary at %s (set EGRET_BIN)", egret_bin);
    test_kl_known();
    test_bad_input();
    test_cli();
    test_cli_chunked();
    int failed = test_finish();
    if (!failed) { /* kept on failure: the logs say why */
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
        run(cmd);
    }
    return failed;
}
