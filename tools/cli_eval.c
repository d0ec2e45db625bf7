/* egret eval: how much accuracy a precision or weight format costs, measured the way llama.cpp
 * reports its quantizations. The model is loaded in fp32 (the reference) and runs every case
 * (tools/eval_cases.h): its logits at every prompt position are kept on the host and its greedy
 * answers judged. Then, one after the other (one model on the device at a time), the model is
 * loaded in each format asked for and runs the same cases; per format:
 *   - the KL divergence KL(p_fp32 || p_format) of the next-token distribution at every prompt
 *     position (mean, median, 99th percentile, maximum; tools/eval_metrics.h),
 *   - top-1 agreement: the positions whose greedy token is fp32's,
 *   - answers right (the answer line equal to the case's expected_answer, as HF's `correct`),
 *     and answers identical to fp32's.
 * A table on stdout, or one JSON object with --json. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/generate.h"
#include "runtime/clock.h"
#include "runtime/vk_context.h"
#include "tools/cli.h"
#include "tools/eval_cases.h"
#include "tools/eval_metrics.h"

#define MAX_ROWS 8

/* One way of loading the model: a precision of the activations and dense weights (fp32, fp16),
 * or quantized projections with fp16 activations (as served) or, written "q8/fp32", fp32 ones
 * (the weights' rounding alone). */
typedef struct Format {
    char name[16];
    int fp32;
    EgWeightFormat quant;
} Format;

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: egret eval [--model DIR] [--quant LIST] [--cases shapes|FILE] [--json]\n"
        "                  [--prefill-chunk N]\n"
        "  --model DIR     checkpoint folder (default: the bundled demo model)\n"
        "  --quant LIST    formats compared with fp32, comma-separated, each one of fp32,\n"
        "                  fp16, q8, q4 (projections quantized, fp16 activations as served),\n"
        "                  q8/fp32, q4/fp32 (fp32 activations); default fp16,q8,q4\n"
        "  --cases WHAT    shapes: the demo model's 30 held-out cases (default); a cases\n"
        "                  JSON file; or a tiny model's golden.safetensors (tools/eval_cases.h)\n"
        "  --json          print one JSON object instead of the table\n"
        "  --device INDEX|NAME  Vulkan device (default: EGRET_DEVICE, else the best)\n"
        "  --prefill-chunk N    feed the compared formats' prompts N tokens per pass (the\n"
        "                  fp32 reference's in one): N <= 8 runs text products as decode does\n");
}

static int parse_formats(const char *list, Format *rows, int *n_rows) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    *n_rows = 0;
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        if (*n_rows == MAX_ROWS) {
            fprintf(stderr, "egret: --quant: at most %d formats\n", MAX_ROWS);
            return -1;
        }
        Format f = {.fp32 = 0};
        snprintf(f.name, sizeof f.name, "%s", item);
        if (strcmp(item, "fp32") == 0) {
            f.fp32 = 1;
        } else if (strcmp(item, "fp16") != 0) {
            char *slash = strchr(item, '/');
            if (slash) {
                if (strcmp(slash, "/fp32") != 0) {
                    fprintf(stderr, "egret: --quant: '%s': only /fp32 may follow a format\n", item);
                    return -1;
                }
                *slash = '\0';
                f.fp32 = 1;
            }
            EgError err = {0};
            if (eg_weight_format_parse(item, &f.quant, &err) || f.quant == EG_WEIGHTS_DENSE) {
                fprintf(stderr,
                        "egret: --quant: '%s' is not one of fp32, fp16, q8, q4, q8/fp32, "
                        "q4/fp32\n",
                        f.name);
                return -1;
            }
        }
        rows[(*n_rows)++] = f;
    }
    if (*n_rows == 0) {
        fprintf(stderr, "egret: --quant: no formats given\n");
        return -1;
    }
    return 0;
}

/* What one format did on the cases. */
typedef struct Row {
    Format format;
    EgEvalStats stats;
    int right, judged; /* answers equal to the expected answer, of the cases that have one */
    int same;          /* answers identical to the reference's */
    double load_s, run_s;
    EgGenerateResult *answers; /* per case */
} Row;

/* Whether two answers to case c are the same: the answer lines, or the generated ids. */
static int same_answer(const EgEvalCase *c, const EgGenerateResult *a, const EgGenerateResult *b) {
    if (c->answer_line) {
        size_t la = strcspn(a->text, "\n"), lb = strcspn(b->text, "\n");
        return la == lb && memcmp(a->text, b->text, la) == 0;
    }
    return a->n_ids == b->n_ids && memcmp(a->ids, b->ids, a->n_ids * sizeof *a->ids) == 0;
}

static int is_right(const EgEvalCase *c, const EgGenerateResult *a) {
    size_t len = strcspn(a->text, "\n");
    return c->expected && strlen(c->expected) == len && memcmp(a->text, c->expected, len) == 0;
}

/* Case c on model m: its prompt's logits at every position into logits[c->n][vocab], then the
 * greedy answer into *answer, generated from the start as a request would be (test_shapes'
 * settings: end of sequence ignored, answer-line cases stop at the newline). chunk > 0: the
 * prompt is fed `chunk` tokens per forward pass (as the engine's chunked prefill does) and the
 * answer continues from it, so that with chunk <= 8 every text product is a matrix-vector
 * one, the decode kernels (docs/quantization.md "Integer dot products"). */
static int run_case(EgFamilyModel *m, const EgTokenizer *tok, const EgEvalCase *c, float *logits,
                    uint32_t chunk, EgGenerateResult *answer, EgError *err) {
    EgFamilySeq *s = eg_fseq_new(m, c->n + c->max_new_tokens + 1, err);
    if (!s) return -1;
    static const char *const newline[] = {"\n"};
    EgGenerateParams gp = {.max_new_tokens = c->max_new_tokens, .ignore_eos = 1};
    if (c->answer_line) gp.stop = newline, gp.n_stop = 1;
    eg_sampling_params_default(&gp.sampling);
    uint32_t step = chunk ? chunk : c->n;
    int rc = eg_fseq_set_images(s, c->pixels, c->n_images, err);
    for (uint32_t t = 0; !rc && t < c->n; t += step) {
        uint32_t len = c->n - t < step ? c->n - t : step;
        rc = eg_fseq_forward(s, c->ids + t, c->image_of ? c->image_of + t : NULL, len,
                             logits + (size_t)t * m->info.vocab, 1, err);
    }
    /* n_cached 0: the prompt again, in one pass as a fresh request's prefill; chunked, the
     * prompt but its last token stays cached */
    rc = rc || eg_generate_on(s, tok, c->ids, c->image_of, c->n, chunk && c->n ? c->n - 1 : 0, &gp,
                              NULL, NULL, answer, err);
    eg_fseq_free(s);
    if (rc) eg_fail_prefix(err, "case %s", c->label);
    return rc ? -1 : 0;
}

static EgFamilyModel *load(const char *dir, const Format *f, const char *device, double *secs,
                           EgError *err) {
    EgModelOptions opt = {.fp32 = f->fp32, .quant = f->quant, .device = device};
    double t0 = eg_now_s();
    fprintf(stderr, "egret: loading %s as %s\n", dir, f->name);
    EgFamilyModel *m = eg_family_open(dir, &opt, err);
    *secs = eg_now_s() - t0;
    return m;
}

/* Runs every case on the model in row->format. ref_logits NULL: this is the reference, and
 * its logits are written to out_logits; else each position is compared with ref_logits. */
static int run_row(const char *dir, const char *device, uint32_t chunk, const EgTokenizer *tok,
                   const EgEvalCases *cases, EgFamilyModel *m, Row *row, const float *ref_logits,
                   float *out_logits, EgError *err) {
    EgFamilyModel *own = NULL;
    if (!m) {
        m = own = load(dir, &row->format, device, &row->load_s, err);
        if (!m) return -1;
    }
    uint32_t vocab = m->info.vocab, longest = 0;
    for (size_t i = 0; i < cases->n; i++)
        if (cases->cases[i].n > longest) longest = cases->cases[i].n;
    float *scratch = ref_logits ? malloc((size_t)longest * vocab * sizeof *scratch) : NULL;
    row->answers = calloc(cases->n, sizeof *row->answers);
    int rc = (ref_logits && !scratch) || !row->answers ? eg_fail(err, "out of host memory") : 0;
    double t0 = eg_now_s();
    size_t offset = 0; /* positions before this case */
    for (size_t i = 0; !rc && i < cases->n; i++) {
        const EgEvalCase *c = &cases->cases[i];
        float *logits = ref_logits ? scratch : out_logits + offset * vocab;
        rc = run_case(m, tok, c, logits, chunk, &row->answers[i], err);
        for (uint32_t t = 0; !rc && ref_logits && t < c->n; t++) {
            eg_eval_stats_add(&row->stats, ref_logits + (offset + t) * vocab,
                              logits + (size_t)t * vocab, vocab);
            if (row->stats.failed) rc = eg_fail(err, "out of host memory");
        }
        offset += c->n;
    }
    row->run_s = eg_now_s() - t0;
    free(scratch);
    eg_family_close(own);
    return rc;
}

/* Counts the answers right and identical to the reference's. */
static void judge(const EgEvalCases *cases, Row *row, const Row *ref) {
    row->right = row->judged = row->same = 0;
    for (size_t i = 0; i < cases->n; i++) {
        const EgEvalCase *c = &cases->cases[i];
        row->judged += c->expected != NULL;
        row->right += is_right(c, &row->answers[i]);
        row->same += same_answer(c, &row->answers[i], &ref->answers[i]);
    }
}

/* An answer line in quotes, or the generated ids of a case compared by ids. */
static void print_answer(FILE *f, const EgEvalCase *c, const EgGenerateResult *a) {
    if (c->answer_line) {
        fprintf(f, "'%.*s'", (int)strcspn(a->text, "\n"), a->text);
        return;
    }
    fprintf(f, "[");
    for (size_t i = 0; i < a->n_ids; i++)
        fprintf(f, "%s%d", i ? " " : "", a->ids[i]);
    fprintf(f, "]");
}

/* "right/judged", or "-" when no case has an expected answer. */
static const char *right_text(char *buf, size_t cap, const Row *r) {
    if (r->judged)
        snprintf(buf, cap, "%d/%d", r->right, r->judged);
    else
        snprintf(buf, cap, "-");
    return buf;
}

static void print_table(const EgEvalCases *cases, const Row *ref, const Row *rows, int n_rows) {
    printf("%zu cases, %zu prompt positions; KL(fp32 || format) of the next token, in nats\n\n",
           cases->n, cases->positions);
    char right[32];
    printf("%-9s %11s %11s %11s %11s %9s %7s %12s %8s\n", "format", "mean KL", "median KL",
           "p99 KL", "max KL", "top-1", "right", "same as fp32", "time s");
    printf("%-9s %11s %11s %11s %11s %9s %7s %12s %8.1f\n", "fp32", "-", "-", "-", "-", "-",
           right_text(right, sizeof right, ref), "-", ref->load_s + ref->run_s);
    for (int r = 0; r < n_rows; r++) {
        const Row *w = &rows[r];
        char same[32];
        snprintf(same, sizeof same, "%d/%zu", w->same, cases->n);
        printf("%-9s %11.3e %11.3e %11.3e %11.3e %8.2f%% %7s %12s %8.1f\n", w->format.name,
               eg_eval_stats_mean(&w->stats), eg_eval_stats_quantile(&w->stats, 0.5),
               eg_eval_stats_quantile(&w->stats, 0.99), eg_eval_stats_max(&w->stats),
               100.0 * (double)w->stats.top1_same / (double)(w->stats.n ? w->stats.n : 1),
               right_text(right, sizeof right, w), same, w->load_s + w->run_s);
    }
    /* the cases whose answer differs, so a regression can be looked at */
    for (int r = 0; r < n_rows; r++)
        for (size_t i = 0; i < cases->n; i++) {
            const EgEvalCase *c = &cases->cases[i];
            if (same_answer(c, &rows[r].answers[i], &ref->answers[i])) continue;
            printf("%s case %s: ", rows[r].format.name, c->label);
            print_answer(stdout, c, &rows[r].answers[i]);
            printf(", fp32 ");
            print_answer(stdout, c, &ref->answers[i]);
            if (c->expected) printf(", expected '%s'", c->expected);
            printf("\n");
        }
}

static cJSON *answer_json(const EgEvalCase *c, const EgGenerateResult *a) {
    if (c->answer_line) {
        char *line = strndup(a->text, strcspn(a->text, "\n"));
        cJSON *s = cJSON_CreateString(line ? line : "");
        free(line);
        return s;
    }
    return cJSON_CreateIntArray(a->ids, (int)a->n_ids);
}

static int print_json(const char *dir, const char *cases_path, const char *device_name,
                      const EgEvalCases *cases, const Row *ref, const Row *rows, int n_rows) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", dir);
    cJSON_AddStringToObject(root, "cases", cases_path);
    cJSON_AddStringToObject(root, "device", device_name);
    cJSON_AddNumberToObject(root, "n_cases", (double)cases->n);
    cJSON_AddNumberToObject(root, "positions", (double)cases->positions);
    cJSON *jr = cJSON_AddObjectToObject(root, "reference");
    cJSON_AddStringToObject(jr, "format", "fp32");
    cJSON_AddNumberToObject(jr, "answers_right", ref->right);
    cJSON_AddNumberToObject(jr, "answers_judged", ref->judged);
    cJSON_AddNumberToObject(jr, "seconds", ref->load_s + ref->run_s);
    cJSON *ja = cJSON_AddArrayToObject(jr, "answers");
    for (size_t i = 0; i < cases->n; i++)
        cJSON_AddItemToArray(ja, answer_json(&cases->cases[i], &ref->answers[i]));
    cJSON *jf = cJSON_AddArrayToObject(root, "formats");
    for (int r = 0; r < n_rows; r++) {
        const Row *w = &rows[r];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "format", w->format.name);
        cJSON_AddStringToObject(o, "weights",
                                w->format.quant  ? eg_weight_format_name(w->format.quant)
                                : w->format.fp32 ? "fp32"
                                                 : "fp16");
        cJSON_AddStringToObject(o, "activations", w->format.fp32 ? "fp32" : "fp16");
        cJSON_AddNumberToObject(o, "mean_kl", eg_eval_stats_mean(&w->stats));
        cJSON_AddNumberToObject(o, "median_kl", eg_eval_stats_quantile(&w->stats, 0.5));
        cJSON_AddNumberToObject(o, "p99_kl", eg_eval_stats_quantile(&w->stats, 0.99));
        cJSON_AddNumberToObject(o, "max_kl", eg_eval_stats_max(&w->stats));
        cJSON_AddNumberToObject(o, "positions", (double)w->stats.n);
        cJSON_AddNumberToObject(o, "top1_same", (double)w->stats.top1_same);
        cJSON_AddNumberToObject(o, "top1_agreement",
                                (double)w->stats.top1_same / (double)(w->stats.n ? w->stats.n : 1));
        cJSON_AddNumberToObject(o, "answers_right", w->right);
        cJSON_AddNumberToObject(o, "answers_judged", w->judged);
        cJSON_AddNumberToObject(o, "answers_same_as_reference", w->same);
        cJSON_AddNumberToObject(o, "seconds", w->load_s + w->run_s);
        cJSON *answers = cJSON_AddArrayToObject(o, "answers");
        for (size_t i = 0; i < cases->n; i++)
            cJSON_AddItemToArray(answers, answer_json(&cases->cases[i], &w->answers[i]));
        cJSON_AddItemToArray(jf, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return -1;
    printf("%s\n", text);
    free(text);
    return 0;
}

static void free_row(Row *row, size_t n_cases) {
    for (size_t i = 0; row->answers && i < n_cases; i++)
        eg_generate_result_free(&row->answers[i]);
    free(row->answers);
    eg_eval_stats_free(&row->stats);
}

int cli_eval(int argc, char **argv) {
    static struct option longopts[] = {
        {"model", required_argument, 0, 'm'},  {"quant", required_argument, 0, 'q'},
        {"cases", required_argument, 0, 'c'},  {"json", no_argument, 0, 'j'},
        {"device", required_argument, 0, 'D'}, {"prefill-chunk", required_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    const char *dir = cli_default_model(), *cases_arg = "shapes", *device = NULL;
    const char *formats = "fp16,q8,q4";
    int json = 0, c;
    uint32_t chunk = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            dir = optarg;
            break;
        case 'q':
            formats = optarg;
            break;
        case 'c':
            cases_arg = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'D':
            device = optarg;
            break;
        case 'p': {
            uint64_t v;
            if (cli_parse_u64_in("prefill-chunk", optarg, 1, 1u << 20, &v)) return 2;
            chunk = (uint32_t)v;
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    Format fmts[MAX_ROWS];
    int n_rows;
    if (optind < argc) {
        fprintf(stderr, "egret: eval: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (parse_formats(formats, fmts, &n_rows)) return 2;
    const char *cases_path = strcmp(cases_arg, "shapes") == 0 ? EGRET_SHAPES_CASES : cases_arg;

    /* before a model that may take minutes to load */
    if (access(cases_path, R_OK)) {
        fprintf(stderr, "egret: --cases %s: %s\n", cases_path, strerror(errno));
        return 1;
    }
    EgError err = {0};
    char tok_path[1200];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", dir);
    EgTokenizer *tok = eg_tokenizer_load(tok_path, &err);
    if (!tok) {
        fprintf(stderr, "egret: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    EgEvalCases cases = {0};
    Row ref = {.format = {.name = "fp32", .fp32 = 1}}, rows[MAX_ROWS] = {0};
    float *ref_logits = NULL;
    char device_name[256] = "";
    EgFamilyModel *m = load(dir, &ref.format, device, &ref.load_s, &err);
    if (!m) goto done;
    snprintf(device_name, sizeof device_name, "%s", m->info.vk->props.deviceName);
    if (eg_eval_cases_load(cases_path, m, tok, &cases, &err)) goto done;
    ref_logits = malloc(cases.positions * m->info.vocab * sizeof *ref_logits);
    if (!ref_logits) {
        eg_fail(&err, "out of host memory for %zu positions' logits", cases.positions);
        goto done;
    }
    if (run_row(dir, device, 0, tok, &cases, m, &ref, NULL, ref_logits, &err)) goto done;
    eg_family_close(m); /* one model on the device at a time */
    m = NULL;
    judge(&cases, &ref, &ref);
    if (ref.judged)
        fprintf(stderr, "egret: fp32: %d of %d answers right (%.1f s)\n", ref.right, ref.judged,
                ref.load_s + ref.run_s);
    else
        fprintf(stderr, "egret: fp32: %zu cases (%.1f s)\n", cases.n, ref.load_s + ref.run_s);
    for (int r = 0; r < n_rows; r++) {
        rows[r].format = fmts[r];
        if (run_row(dir, device, chunk, tok, &cases, NULL, &rows[r], ref_logits, NULL, &err))
            goto done;
        judge(&cases, &rows[r], &ref);
        fprintf(stderr, "egret: %s: mean KL %.3e, top-1 %zu of %zu (%.1f s)\n", rows[r].format.name,
                eg_eval_stats_mean(&rows[r].stats), rows[r].stats.top1_same, rows[r].stats.n,
                rows[r].load_s + rows[r].run_s);
    }
    if (json)
        rc = print_json(dir, cases_path, device_name, &cases, &ref, rows, n_rows) ? 1 : 0;
    else
        print_table(&cases, &ref, rows, n_rows), rc = 0;
done:
    if (rc) fprintf(stderr, "egret: %s\n", err.msg);
    eg_family_close(m);
    free(ref_logits);
    free_row(&ref, cases.n);
    for (int r = 0; r < n_rows; r++)
        free_row(&rows[r], cases.n);
    eg_eval_cases_free(&cases);
    eg_tokenizer_free(tok);
    return rc;
}
