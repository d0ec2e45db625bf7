#include "tools/serve_warmup.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/clock.h"
#include "tools/png_encode.h"

/* Small flat-colored PNGs, a different color each (the image cache keys on the bytes). The
 * encoder resizes every image to its own size, so the size here changes nothing downstream. */
enum { IMAGE_SIDE = 24 };

typedef struct Warm {
    EgEngine *e;
    EgEngineInfo info;
    uint8_t **png;
    size_t *png_len;
    uint32_t n_png;
    char *words; /* "a a a ...": prompts of a chosen length */
    size_t words_len;
    uint32_t sets[8]; /* the numbers of images encoded together */
    uint32_t n_sets;
    uint32_t requests;
    EgError *err;
} Warm;

static int make_images(Warm *w, uint32_t n) {
    w->png = calloc(n, sizeof *w->png);
    w->png_len = calloc(n, sizeof *w->png_len);
    if (!w->png || !w->png_len) return eg_fail(w->err, "warm-up: out of host memory");
    uint8_t rgb[IMAGE_SIDE * IMAGE_SIDE * 3];
    for (uint32_t i = 0; i < n; i++) {
        for (size_t p = 0; p < sizeof rgb; p += 3) {
            rgb[p] = (uint8_t)(37 * i);
            rgb[p + 1] = (uint8_t)(101 * i + 7);
            rgb[p + 2] = (uint8_t)(p / 3 % IMAGE_SIDE * 9);
        }
        if (eg_png_encode_rgb(rgb, IMAGE_SIDE, IMAGE_SIDE, &w->png[i], &w->png_len[i], w->err))
            return -1;
        w->n_png = i + 1;
    }
    return 0;
}

/* One request's shape: `n_images` images starting at image `first`, then `n_words` words. */
typedef struct Shape {
    uint32_t first, n_images, n_words, new_tokens;
} Shape;

/* Runs these requests together, as the scheduler batches them: admitted at once, their prompts
 * fed in chunks, then decoded side by side until each has its tokens. */
static int run_batch(Warm *w, const Shape *shapes, uint32_t n) {
    EgRequestPart parts[EG_BATCH_MAX][2 * 16 + 1];
    EgRequest req[EG_BATCH_MAX];
    EgEngineJob *jobs[EG_BATCH_MAX];
    uint32_t started = 0;
    int rc = 0;
    for (uint32_t b = 0; b < n && rc == 0; b++) {
        const Shape *s = &shapes[b];
        size_t k = 0;
        for (uint32_t i = 0; i < s->n_images && k < 32; i++)
            parts[b][k++] = (EgRequestPart){.is_image = 1,
                                            .image = w->png[s->first + i],
                                            .image_len = w->png_len[s->first + i]};
        size_t len = s->n_words ? 2 * (size_t)s->n_words - 1 : 0;
        if (len > w->words_len) len = w->words_len;
        if (len) parts[b][k++] = (EgRequestPart){.text = w->words, .text_len = len};
        req[b] = (EgRequest){.parts = parts[b],
                             .n_parts = k,
                             .gen = {.max_new_tokens = s->new_tokens, .ignore_eos = 1}};
        eg_sampling_params_default(&req[b].gen.sampling);
        EgRequestStats stats;
        EgStatus st = eg_engine_begin(w->e, &req[b], NULL, NULL, &jobs[started], &stats, w->err);
        if (st == EG_STATUS_INTERNAL) {
            eg_fail_prefix(w->err, "warm-up request %u", w->requests);
            rc = -1;
        } else if (st == EG_STATUS_OK) {
            started++;
            w->requests++;
        }
        /* else over a limit this server was given (images, context, memory): no request
         * of this shape can reach the engine, so there is nothing to warm up */
    }
    for (int all_done = 0; rc == 0 && !all_done;) {
        if (eg_engine_step(w->e, jobs, started, w->err)) {
            eg_fail_prefix(w->err, "warm-up");
            rc = -1;
        }
        all_done = 1;
        for (uint32_t b = 0; b < started; b++)
            all_done &= eg_engine_job_finished(jobs[b]);
    }
    for (uint32_t b = 0; b < started; b++) {
        if (rc) eg_engine_cancel(jobs[b]);
        EgGenerateResult out = {0};
        EgError job_err = {0};
        EgStatus st = eg_engine_end(jobs[b], &out, &job_err);
        if (rc == 0 && st == EG_STATUS_INTERNAL) {
            *w->err = job_err;
            eg_fail_prefix(w->err, "warm-up");
            rc = -1;
        }
        eg_generate_result_free(&out);
    }
    return rc;
}

static int run_one(Warm *w, uint32_t first, uint32_t n_images, uint32_t n_words) {
    Shape s = {first, n_images, n_words, 2};
    return run_batch(w, &s, 1);
}

static int warm_up(Warm *w, uint32_t max_batch) {
    /* images encoded together: sets of n new images, then the same from the cache. The
     * kernels depend on the rows of x (n x the encoder's tokens: never few) through tile
     * padding and through rows off a multiple of 8, so powers of two, an odd count and the
     * largest set reach every one without encoding 1 + 2 + ... + 16 images */
    uint32_t next = 0;
    for (uint32_t i = 0; i < w->n_sets; i++) {
        if (run_one(w, next, w->sets[i], 3)) return -1;
        next += w->sets[i];
    }
    for (uint32_t i = 0; i < w->n_sets; i++)
        if (run_one(w, 0, w->sets[i], 3)) return -1;
    /* prompts of 1 to 17 words (rows of x in every kernel variant, on and off a multiple of 8),
     * then one longer than a prefill chunk, then one that extends it (a prefix cache hit) */
    for (uint32_t k = 1; k <= 17; k++)
        if (run_one(w, 0, 0, k)) return -1;
    uint32_t ctx = w->info.limits.context_length;
    uint32_t long_words = w->info.prefill_chunk + 9;
    if (long_words + 16 > ctx) long_words = ctx > 32 ? ctx - 32 : 1;
    if (run_one(w, 0, 0, long_words) || run_one(w, 0, 1, long_words + 5)) return -1;
    /* decode batches of 1..max_batch sequences, with and without images, prompts of
     * different lengths fed together */
    Shape shapes[EG_BATCH_MAX];
    for (uint32_t b = 1; b <= max_batch; b++) {
        for (uint32_t i = 0; i < b; i++)
            shapes[i] = (Shape){.first = i % 2,
                                .n_images = i % 3 == 1 ? 0 : 1 + i % 2,
                                .n_words = 2 + i,
                                .new_tokens = 4};
        if (run_batch(w, shapes, b)) return -1;
    }
    return 0;
}

int eg_serve_warmup(EgEngine *e, uint32_t max_batch, EgWarmupReport *report, EgError *err) {
    double t0 = eg_now_s();
    EgEngineStats before;
    eg_engine_stats(e, &before);
    Warm w = {.e = e, .err = err};
    eg_engine_describe(e, &w.info);
    if (max_batch == 0) max_batch = 1;
    if (max_batch > w.info.max_batch) max_batch = w.info.max_batch;
    if (max_batch > EG_BATCH_MAX) max_batch = EG_BATCH_MAX;
    uint32_t max_images = w.info.limits.max_images < 16 ? w.info.limits.max_images : 16;
    static const uint32_t sets[] = {1, 2, 3, 4, 8, 16};
    uint32_t n_images = 0;
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++)
        if (sets[i] < max_images) {
            w.sets[w.n_sets++] = sets[i];
            n_images += sets[i];
        }
    w.sets[w.n_sets++] = max_images;
    n_images += max_images;
    int rc = make_images(&w, n_images > 2 ? n_images : 2);
    uint32_t n_words = w.info.prefill_chunk + 32;
    w.words = malloc(2 * (size_t)n_words);
    if (rc == 0 && !w.words) rc = eg_fail(err, "warm-up: out of host memory");
    if (rc == 0) {
        for (uint32_t i = 0; i < n_words; i++) {
            w.words[2 * i] = 'a';
            w.words[2 * i + 1] = ' ';
        }
        w.words_len = 2 * (size_t)n_words - 1;
        rc = warm_up(&w, max_batch);
    }
    /* what the warm-up cached and counted is not traffic */
    if (rc == 0) rc = eg_engine_forget(e, err);
    for (uint32_t i = 0; i < w.n_png; i++)
        free(w.png[i]);
    free(w.png);
    free(w.png_len);
    free(w.words);
    EgEngineStats after;
    eg_engine_stats(e, &after);
    if (report)
        *report =
            (EgWarmupReport){.requests = w.requests,
                             .pipelines = after.pipelines_first_used - before.pipelines_first_used,
                             .seconds = eg_now_s() - t0};
    return rc;
}
