/* Batched decode (eg_sequence_forward_batch) against one sequence at a time: five sequences of
 * different shapes — one image, two images, no image at all, images but a last token that sees
 * none, and a longer prompt — decode together, and every step's logits equal those of separate
 * forward calls (fp32: to rounding; fp16: within its tolerance) with the same greedy tokens.
 * Inputs are fresh random token ids and pixels each run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "families/idefics/sequence.h"
#include "test_util.h"

enum { N_SEQ = 5, STEPS = 6 };

static int32_t argmax(const float *x, uint32_t n) {
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

/* How the batch reaches each sequence's cache (runtime/ops_batch.h): the device's default; new
 * keys appended through the batch table and attention through it too (GPUs' default); or the
 * per-sequence dispatches of devices without buffer device addresses. */
typedef enum { PATHS_DEFAULT, PATHS_TABLE, PATHS_PER_SEQUENCE } Paths;

static void run(int fp32, Paths paths) {
    EgError err = {0};
    EgModelOptions mo = {.fp32 = fp32};
    EgModel *m = eg_model_load(test_model_path("shapes-idefics"), &mo, &err);
    CHECK(m != NULL, "load: %s", err.msg);
    if (!m) return;
    if (paths == PATHS_PER_SEQUENCE) m->batch_ops.available = 0;
    if (paths == PATHS_TABLE) m->batch_ops.use_slots = 0;
    printf("%s, %s\n", fp32 ? "fp32" : "fp16",
           !m->batch_ops.available ? "per-sequence dispatches"
           : m->batch_ops.use_slots
               ? "keys appended through the batch table, attention through texel-view slots"
               : "keys appended and attention through the batch table (by address)");
    uint32_t V = m->vocab, S = (uint32_t)m->cfg.vision.image_size;
    size_t per = 3 * (size_t)S * S;
    float *pixels = malloc(2 * per * sizeof *pixels);
    for (size_t i = 0; i < 2 * per; i++)
        pixels[i] = test_rng_uniform(-1.7f, 1.7f);
    /* prompt length, images, and where the image-attending part starts / which image */
    const uint32_t len[N_SEQ] = {9, 14, 7, 6, 23};
    const uint32_t n_img[N_SEQ] = {1, 2, 0, 1, 1};
    EgSequence *single[N_SEQ], *batched[N_SEQ];
    float *ref = malloc((size_t)N_SEQ * V * sizeof *ref), *got = malloc((size_t)N_SEQ * V * sizeof *got);
    int32_t next_ref[N_SEQ], next_got[N_SEQ];
    for (int b = 0; b < N_SEQ; b++) {
        int32_t ids[32], img_of[32];
        for (uint32_t t = 0; t < len[b]; t++) {
            ids[t] = 3 + (int32_t)(test_rng_u64() % (uint64_t)(m->cfg.vocab_size - 3));
            /* seq 1 switches to its second image halfway; seq 3 never attends its image */
            img_of[t] = n_img[b] == 0 || b == 3 || t < 2 ? -1 : (b == 1 && t >= 7 ? 1 : 0);
        }
        EgSequence **pair[2] = {&single[b], &batched[b]};
        for (int k = 0; k < 2; k++) {
            *pair[k] = eg_sequence_new(m, len[b] + STEPS + 1, &err);
            CHECK(*pair[k] && eg_sequence_set_images(*pair[k], pixels, n_img[b], &err) == 0 &&
                      eg_sequence_forward(*pair[k], ids, img_of, len[b], ref + (size_t)b * V, 0,
                                          &err) == 0,
                  "prefill %d: %s", b, err.msg);
        }
        next_ref[b] = next_got[b] = argmax(ref + (size_t)b * V, V);
    }
    double worst = 0;
    int ids_equal = 1;
    for (int step = 0; step < STEPS; step++) {
        for (int b = 0; b < N_SEQ; b++)
            CHECK(eg_sequence_forward(single[b], &next_ref[b], NULL, 1, ref + (size_t)b * V, 0,
                                      &err) == 0,
                  "single %d: %s", b, err.msg);
        for (size_t i = 0; i < (size_t)N_SEQ * V; i++)
            got[i] = NAN; /* poison */
        CHECK(eg_sequence_forward_batch(batched, N_SEQ, next_got, got, &err) == 0, "batch: %s",
              err.msg);
        for (int b = 0; b < N_SEQ; b++) {
            double maxref = 0, maxdiff = 0;
            for (uint32_t v = 0; v < V; v++) {
                maxref = fmax(maxref, fabs(ref[(size_t)b * V + v]));
                double d = fabs((double)got[(size_t)b * V + v] - ref[(size_t)b * V + v]);
                maxdiff = isnan(d) ? INFINITY : fmax(maxdiff, d);
            }
            worst = fmax(worst, maxdiff / maxref);
            next_ref[b] = argmax(ref + (size_t)b * V, V);
            next_got[b] = argmax(got + (size_t)b * V, V);
            ids_equal &= next_ref[b] == next_got[b];
        }
    }
    double limit = fp32 ? 1e-5 : 1e-2;
    printf("%s: batched vs single decode, worst relative logit error %.2e over %d steps\n",
           fp32 ? "fp32" : "fp16", worst, STEPS);
    CHECK(worst <= limit, "%s: relative error %.3g > %.0e", fp32 ? "fp32" : "fp16", worst, limit);
    CHECK(!fp32 || ids_equal, "fp32: greedy tokens differ between batched and single decode");

    /* Bad batches are refused. */
    EgSequence *twice[2] = {batched[0], batched[0]};
    CHECK(eg_sequence_forward_batch(twice, 2, next_got, got, &err) != 0 &&
              strstr(err.msg, "twice"),
          "the same sequence twice: '%s'", err.msg);
    int32_t bad[1] = {(int32_t)V};
    CHECK(eg_sequence_forward_batch(batched, 1, bad, got, &err) != 0 &&
              strstr(err.msg, "vocabulary"),
          "bad token: '%s'", err.msg);
    while (batched[2]->n_past < batched[2]->capacity)
        CHECK(eg_sequence_forward_batch(&batched[2], 1, next_got, got, &err) == 0, "fill: %s",
              err.msg);
    CHECK(eg_sequence_forward_batch(&batched[2], 1, next_got, got, &err) != 0 &&
              strstr(err.msg, "full"),
          "a full sequence: '%s'", err.msg);
    for (int b = 0; b < N_SEQ; b++) {
        eg_sequence_free(single[b]);
        eg_sequence_free(batched[b]);
    }
    free(pixels);
    free(ref);
    free(got);
    eg_model_free(m);
}

int main(void) {
    test_rng_init();
    run(1, PATHS_DEFAULT);
    run(0, PATHS_DEFAULT);
    run(1, PATHS_TABLE);
    run(0, PATHS_TABLE);
    run(1, PATHS_PER_SEQUENCE);
    return test_finish();
}
