/* egret bench: how fast a model of any family runs on this device, in the terms of
 * bench/torch_ref.py (same prompt, same definitions, same JSON layout) so bench/compare can put
 * the two side by side.
 *
 *   encode               the image stage for b images (IDEFICS: ViT + perceiver; mllama: the
 *                        tiled vision encoder + projector) (images/s)
 *   prefill              a T-token prompt (IDEFICS: [BOS, fake, <image>, fake, text...]; mllama:
 *                        [BOS, <|image|>, text...]) into a fresh KV cache, the image's
 *                        cross-attention states already set (tokens/s)
 *   prefill_with_encode  the same including the image stage
 *   decode               NEW greedy tokens after the prefill: NEW-1 steps with the KV cache
 *   ttft                 batch 1: image stage + prefill + the first token
 * Batch b > 1: prefill runs the b prompts one after another (the scheduler admits requests one
 * at a time), decode advances the b sequences together, one batched forward per step (as the
 * scheduler does). Every figure is the median of --reps runs after --warmup runs.
 *
 * --plan runs the same sections once on a device that allocates nothing and runs nothing
 * (EGRET_DEVICE_PLAN, runtime/vk_context.h): peak_device_bytes is then what the run would
 * allocate, computed from the very buffers the loader and the sequences create, for models
 * larger than this machine. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "families/family.h"
#include "runtime/clock.h"
#include "runtime/vk_profile.h"
#include "tools/cli.h"

typedef struct Bench {
    EgFamilyModel *m;
    uint32_t vocab, max_batch;
    size_t image_floats;
    uint32_t T, NEW, warmup, reps;
    int plan;       /* --plan: a dry run, nothing timed */
    uint32_t cache; /* --cache-tokens: each sequence's KV cache capacity (0: what it needs) */
    int32_t *ids, *img_of;
    float *pixels; /* up to 16 images */
    float *logits;
    FILE *progress;
} Bench;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, uint32_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int32_t argmax(const float *x, uint32_t n) {
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

/* A new sequence with room for `need` tokens, or --cache-tokens if that is more. */
static EgFamilySeq *new_sequence(const Bench *b, uint32_t need, EgError *err) {
    return eg_fseq_new(b->m, b->cache > need ? b->cache : need, err);
}

/* One timed unit of work; returns seconds, or -1 on failure (message in err). */
typedef double (*Work)(Bench *b, uint32_t batch, EgError *err);

static double work_encode(Bench *b, uint32_t batch, EgError *err) {
    double t = eg_now_s();
    if (eg_family_encode(b->m, b->pixels, batch, err)) return -1;
    return eg_now_s() - t;
}

/* Prefills `batch` sequences (images set first, untimed unless with_encode); returns the time,
 * leaving the sequences in seqs for decode. */
static double prefill(Bench *b, uint32_t batch, int with_encode, EgFamilySeq **seqs, EgError *err) {
    double total = 0;
    size_t per = b->image_floats;
    for (uint32_t i = 0; i < batch; i++) {
        seqs[i] = new_sequence(b, b->T + b->NEW, err);
        if (!seqs[i]) return -1;
        double t = eg_now_s();
        if (eg_fseq_set_images(seqs[i], b->pixels + (i % 16) * per, 1, err)) return -1;
        if (!with_encode) t = eg_now_s();
        if (eg_fseq_forward(seqs[i], b->ids, b->img_of, b->T, b->logits, 0, err)) return -1;
        total += eg_now_s() - t;
    }
    return total;
}

static void free_seqs(EgFamilySeq **seqs, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        eg_fseq_free(seqs[i]);
        seqs[i] = NULL;
    }
}

static double work_prefill(Bench *b, uint32_t batch, EgError *err) {
    EgFamilySeq *seqs[16] = {0};
    double t = prefill(b, batch, 0, seqs, err);
    free_seqs(seqs, batch);
    return t;
}

static double work_prefill_encode(Bench *b, uint32_t batch, EgError *err) {
    EgFamilySeq *seqs[16] = {0};
    double t = prefill(b, batch, 1, seqs, err);
    free_seqs(seqs, batch);
    return t;
}

static double work_decode(Bench *b, uint32_t batch, EgError *err) {
    EgFamilySeq *seqs[16] = {0};
    int32_t next[16];
    double t = -1;
    if (prefill(b, batch, 0, seqs, err) < 0) goto done;
    for (uint32_t i = 0; i < batch; i++)
        next[i] = argmax(b->logits, b->vocab); /* untimed: as torch_ref, from the prefill */
    t = eg_now_s();
    for (uint32_t step = 1; step < b->NEW; step++) {
        /* one batched forward for all the sequences (eg_sequence_forward for one) */
        int rc = batch == 1 ? eg_fseq_forward(seqs[0], &next[0], NULL, 1, b->logits, 0, err)
                            : eg_fseq_forward_batch(seqs, batch, next, b->logits, err);
        if (rc) {
            t = -1;
            goto done;
        }
        for (uint32_t i = 0; i < batch; i++)
            next[i] = argmax(b->logits + (size_t)i * b->vocab, b->vocab);
    }
    t = eg_now_s() - t;
done:
    free_seqs(seqs, batch);
    return t;
}

static double work_ttft(Bench *b, uint32_t batch, EgError *err) {
    (void)batch;
    double t = eg_now_s();
    EgFamilySeq *seq = new_sequence(b, b->T + 1, err);
    int rc = !seq || eg_fseq_set_images(seq, b->pixels, 1, err) ||
             eg_fseq_forward(seq, b->ids, b->img_of, b->T, b->logits, 0, err);
    if (!rc) (void)argmax(b->logits, b->vocab);
    eg_fseq_free(seq);
    return rc ? -1 : eg_now_s() - t;
}

/* "weights": each group's format and bytes (as GetModelInfo's weight_groups) and the total. */
static void print_weights(FILE *json, const EgWeightReport *r) {
    fprintf(json, " \"weights\": {\"total_bytes\": %llu, \"groups\": [",
            (unsigned long long)eg_weight_report_bytes(r));
    for (int g = 0, n = 0; g < EG_WEIGHT_GROUP_COUNT; g++) {
        if (!r->group[g].tensors) continue;
        char format[32];
        eg_weight_group_format(r, (EgWeightGroup)g, format, sizeof format);
        fprintf(json,
                "%s\n   {\"name\": \"%s\", \"format\": \"%s\", \"bytes\": %llu, "
                "\"tensors\": %u}",
                n++ ? "," : "", eg_weight_group_name((EgWeightGroup)g), format,
                (unsigned long long)r->group[g].bytes, r->group[g].tensors);
    }
    fprintf(json, "]}");
}

/* Runs work warmup + reps times; prints a JSON object of the runs' median and minimum. */
static int measure(Bench *b, FILE *json, const char *name, Work work, uint32_t batch,
                   double units, const char *unit_key, EgError *err) {
    double *runs = calloc(b->reps, sizeof *runs);
    if (!runs) return eg_fail(err, "out of host memory");
    eg_profile_reset(); /* EGRET_PROFILE: totals per phase */
    for (uint32_t r = 0; r < b->warmup + b->reps; r++) {
        fprintf(b->progress, "\regret bench: %s b%u run %u/%u   ", name, batch, r + 1,
                b->warmup + b->reps);
        fflush(b->progress);
        double t = work(b, batch, err);
        if (t < 0) {
            free(runs);
            return -1;
        }
        if (r >= b->warmup) runs[r - b->warmup] = t;
    }
    if (b->plan) { /* nothing ran: no times to report */
        fprintf(json, "\"b%u\": {}", batch);
        free(runs);
        return 0;
    }
    double mn = runs[0];
    for (uint32_t r = 1; r < b->reps; r++)
        mn = fmin(mn, runs[r]);
    double med = median(runs, b->reps);
    if (eg_profile_enabled()) {
        fprintf(stderr, "\n%s b%u (all %u runs):\n", name, batch, b->warmup + b->reps);
        eg_profile_report(stderr);
    }
    fprintf(json, "\"b%u\": {\"median_s\": %.6g, \"min_s\": %.6g, \"%s\": %.6g", batch, med, mn,
            unit_key, units / med);
    if (strcmp(name, "encode") == 0) fprintf(json, ", \"s_per_image\": %.6g", med / batch);
    if (strcmp(name, "decode") == 0)
        fprintf(json, ", \"steps\": %u, \"s_per_step\": %.6g", b->NEW - 1,
                med / ((b->NEW - 1) * batch));
    fprintf(json, "}");
    free(runs);
    return 0;
}

/* Whether the comma-separated list names `name` exactly. */
static int list_has(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, name, n) == 0) return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: egret bench [options]\n"
               "Times the image stage, prefill, decode and the time to first token, with the\n"
               "definitions and JSON layout of bench/torch_ref.py (see bench/compare).\n"
               "  --model DIR            checkpoint folder (default: the bundled demo model)\n"
               "  --random-weights DIR   a folder with only a config.json (e.g. idefics-9b's or\n"
               "                         llama-3.2-11b-vision's): its shapes with generated\n"
               "                         weights, no download\n"
               "  --fp32                 fp32 weights and activations (default fp16)\n"
               "  --quant q8|q4          quantize the projections' weights while loading\n"
               "  --device INDEX|NAME    Vulkan device\n"
               "  --prompt-tokens T      default 64\n"
               "  --new-tokens N         default 64\n"
               "  --warmup N --reps N    default 2 and 5\n"
               "  --cache-tokens N       each sequence's KV cache holds N tokens (default: the\n"
               "                         prompt and new tokens); with --only ttft,\n"
               "                         peak_device_bytes is one request's with that cache\n"
               "  --only LIST            only these sections, comma-separated: encode, prefill,\n"
               "                         prefill_with_encode, decode, ttft (profiling one phase)\n"
               "  --plan                 a dry run: load and run each section once on a device\n"
               "                         that allocates and runs nothing; peak_device_bytes is\n"
               "                         what the run would allocate (models too large here)\n"
               "  --json                 print one JSON object on stdout\n");
}

int cli_bench(int argc, char **argv) {
    enum {
        O_MODEL = 256,
        O_RANDOM,
        O_FP32,
        O_QUANT,
        O_DEVICE,
        O_T,
        O_NEW,
        O_WARMUP,
        O_REPS,
        O_CACHE,
        O_ONLY,
        O_JSON,
        O_PLAN,
        O_HELP
    };
    static const struct option longopts[] = {{"model", required_argument, 0, O_MODEL},
                                             {"random-weights", required_argument, 0, O_RANDOM},
                                             {"fp32", no_argument, 0, O_FP32},
                                             {"quant", required_argument, 0, O_QUANT},
                                             {"device", required_argument, 0, O_DEVICE},
                                             {"prompt-tokens", required_argument, 0, O_T},
                                             {"new-tokens", required_argument, 0, O_NEW},
                                             {"warmup", required_argument, 0, O_WARMUP},
                                             {"reps", required_argument, 0, O_REPS},
                                             {"cache-tokens", required_argument, 0, O_CACHE},
                                             {"only", required_argument, 0, O_ONLY},
                                             {"json", no_argument, 0, O_JSON},
                                             {"plan", no_argument, 0, O_PLAN},
                                             {"help", no_argument, 0, O_HELP},
                                             {0, 0, 0, 0}};
    const char *model_dir = cli_default_model();
    EgModelOptions mo = {0};
    Bench b = {.T = 64, .NEW = 64, .warmup = 2, .reps = 5, .progress = stderr};
    const char *only = NULL; /* NULL: every section */
    int json_out = 0, c, bad = 0;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_MODEL:
            model_dir = optarg;
            break;
        case O_RANDOM:
            model_dir = optarg;
            mo.random_weights = 1;
            break;
        case O_FP32:
            mo.fp32 = 1;
            break;
        case O_QUANT:
            bad = cli_parse_quant(optarg, &mo.quant);
            break;
        case O_DEVICE:
            mo.device = optarg;
            break;
        case O_T:
            bad = cli_parse_u32("prompt-tokens", optarg, &b.T) || b.T < 5;
            break;
        case O_NEW:
            bad = cli_parse_u32("new-tokens", optarg, &b.NEW) || b.NEW < 2;
            break;
        case O_WARMUP:
            bad = cli_parse_u32("warmup", optarg, &b.warmup);
            break;
        case O_REPS:
            bad = cli_parse_u32("reps", optarg, &b.reps) || b.reps == 0;
            break;
        case O_CACHE:
            bad = cli_parse_u32("cache-tokens", optarg, &b.cache);
            break;
        case O_ONLY:
            only = optarg;
            break;
        case O_JSON:
            json_out = 1;
            break;
        case O_PLAN:
            b.plan = 1;
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            bad = 1;
        }
    }
    if (bad || optind < argc) {
        usage(stderr);
        return 2;
    }
    if (b.plan) {
        b.warmup = 0;
        b.reps = 1;
        /* read by eg_vk_create: this process's devices size and count, and run nothing */
        setenv("EGRET_DEVICE_PLAN", "1", 1);
    }
    EgError err = {0};
    mo.progress = stderr;
    mo.max_images = 16;
    b.m = eg_family_open(model_dir, &mo, &err);
    if (!b.m) {
        fprintf(stderr, "egret: %s\n", err.msg);
        return 1;
    }
    EgFamilyModel *m = b.m;
    const EgFamilyInfo *info = &m->info;
    /* what the weights and the model's scratch hold, before any sequence */
    unsigned long long load_bytes = atomic_load(&info->vk->device_bytes);
    b.vocab = info->vocab;
    b.image_floats = info->image_floats;
    size_t per = b.image_floats;
    b.ids = malloc(b.T * sizeof *b.ids);
    b.img_of = malloc(b.T * sizeof *b.img_of);
    b.pixels = malloc(16 * per * sizeof *b.pixels);
    b.logits = malloc((size_t)EG_FAMILY_MAX_BATCH * b.vocab * sizeof *b.logits);
    int rc = 1;
    if (!b.ids || !b.img_of || !b.pixels || !b.logits) goto done;
    /* Random text, then the family puts BOS and the image's placeholders in front (IDEFICS:
     * torch_ref.py's bench_prompt); the family's rule says which tokens see the image. */
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (uint32_t t = 0; t < b.T; t++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b.ids[t] = 3 + (int32_t)(x % (uint64_t)(b.vocab - 3));
    }
    for (size_t i = 0; i < 16 * per; i++) { /* normalized pixels, roughly N(0, 1) */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b.pixels[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 3.46 - 1.73);
    }
    for (size_t i = 0; i < 16; i++)
        eg_family_bench_inputs(m, b.ids, b.T, b.pixels + i * per);
    eg_family_image_index(m, b.ids, b.T, 1, b.img_of);
    FILE *json = json_out ? stdout : tmpfile();
    if (!json) goto done;
    fprintf(json,
            "{\"tool\": \"egret bench\", \"model\": \"%s%s\", \"device\": \"%s\", "
            "\"dtype\": \"%s\", \"prompt_tokens\": %u, \"new_tokens\": %u, \"warmup\": %u, "
            "\"reps\": %u, \"cache_tokens\": %u, \"batched_decode\": true, \"family\": \"%s\", "
            "\"quant\": \"%s\", \"int_dot\": %s, \"plan\": %s,\n \"results\": {",
            mo.random_weights ? "random:" : "", model_dir, info->vk->props.deviceName,
            info->ops->f16 ? "float16" : "float32", b.T, b.NEW, b.warmup, b.reps, b.cache,
            info->family, eg_weight_format_name(mo.quant), info->ops->int_dot ? "true" : "false",
            b.plan ? "true" : "false");
    struct {
        const char *name;
        Work work;
        uint32_t batches[2];
        const char *unit_key;
    } sections[] = {{"encode", work_encode, {1, 16}, "images_per_s"},
                    {"prefill", work_prefill, {1, 8}, "tokens_per_s"},
                    {"prefill_with_encode", work_prefill_encode, {1, 8}, "tokens_per_s"},
                    {"decode", work_decode, {1, 8}, "tokens_per_s"},
                    {"ttft", work_ttft, {1, 0}, "per_s"}};
    rc = 0;
    int n_done = 0;
    for (size_t s = 0; s < sizeof sections / sizeof *sections && rc == 0; s++) {
        if (only && !list_has(only, sections[s].name)) continue;
        fprintf(json, "%s\n  \"%s\": {", n_done++ ? "," : "", sections[s].name);
        for (int k = 0; k < 2 && rc == 0 && sections[s].batches[k]; k++) {
            uint32_t batch = sections[s].batches[k];
            double units = s == 0 ? batch : s == 3 ? (double)batch * (b.NEW - 1)
                                      : s == 4 ? 1
                                               : (double)batch * b.T;
            if (k) fprintf(json, ", ");
            rc = measure(&b, json, sections[s].name, sections[s].work, batch, units,
                         sections[s].unit_key, &err);
        }
        fprintf(json, "}");
    }
    /* the KV cache of one sequence of the cache size the sections used */
    uint32_t kv_tokens = b.cache > b.T + b.NEW ? b.cache : b.T + b.NEW;
    fprintf(json,
            "},\n \"load_device_bytes\": %llu, \"kv_cache_bytes_per_sequence\": %llu, "
            "\"peak_device_bytes\": %llu,\n",
            load_bytes, (unsigned long long)eg_fseq_kv_bytes(m, kv_tokens),
            (unsigned long long)atomic_load(&info->vk->device_bytes_peak));
    print_weights(json, info->weights);
    fprintf(json, "}\n");
    fprintf(stderr, "\n");
    if (rc) fprintf(stderr, "egret: %s\n", err.msg);
    if (!json_out) { /* a readable summary of the same figures */
        long n = ftell(json);
        char *text = calloc((size_t)n + 1, 1);
        rewind(json);
        if (text && fread(text, 1, (size_t)n, json) == (size_t)n) fputs(text, stdout);
        free(text);
        fclose(json);
    }
done:
    free(b.ids);
    free(b.img_of);
    free(b.pixels);
    free(b.logits);
    eg_family_close(m);
    return rc ? 1 : 0;
}
