/* The whole IDEFICS forward pass against HuggingFace's outputs for the tiny random models
 * (tests/data/tiny-idefics-{a,b,c}/golden.safetensors): ViT output, perceiver output, logits at
 * every real (non-padding) position, text-only logits, and greedy decoding with the KV cache.
 * Relative errors max|out − ref| / max|ref| and ||out − ref|| / ||ref|| ≤ 1e-4 in fp32 mode and
 * ≤ 1e-2 in fp16 mode; greedy ids exact in fp32 mode. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "families/idefics/image_encoder.h"
#include "families/idefics/sequence.h"
#include "runtime/safetensors.h"
#include "runtime/vk_context.h"
#include "test_util.h"

static void check_golden(const char *model, const char *tensor, int fp32, const float *out,
                         const float *ref, size_t n) {
    char what[128];
    snprintf(what, sizeof what, "%s %s", model, tensor);
    test_check_close(what, fp32, out, ref, n);
}

static void run_model(const char *name, int fp32) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s", test_data_path(name));
    EgError err = {0};
    EgModelOptions opt = {.fp32 = fp32, .max_chunk = 16}; /* 16: exercises chunked prefill */
    EgModel *m = eg_model_load(dir, &opt, &err);
    CHECK(m != NULL, "load %s: %s", name, err.msg);
    if (!m) return;
    char gpath[600];
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", dir);
    EgTensorFile *g = eg_tensors_open_file(gpath, &err);
    CHECK(g != NULL, "%s", err.msg);
    if (!g) {
        eg_model_free(m);
        return;
    }
    const EgTensorView *ids_view = NULL;
    int64_t *ids = test_tensor_i64(g, "input_ids", NULL, &ids_view);
    int64_t *mask = test_tensor_i64(g, "attention_mask", NULL, NULL);
    int64_t *img_mask = test_tensor_i64(g, "image_attention_mask", NULL, NULL);
    int64_t *gen = test_tensor_i64(g, "generated_ids", NULL, NULL);
    size_t n_pix = 0, n_vit = 0, n_perc = 0, n_logits = 0;
    float *pix = test_tensor_f32(g, "pixel_values", &n_pix, NULL);
    float *vit_ref = test_tensor_f32(g, "vision_last_hidden_state", &n_vit, NULL);
    float *perc_ref = test_tensor_f32(g, "perceiver_output", &n_perc, NULL);
    float *logits_ref = test_tensor_f32(g, "logits", &n_logits, NULL);
    uint32_t B = (uint32_t)ids_view->shape[0], T = (uint32_t)ids_view->shape[1];
    uint32_t N = 3, V = m->vocab;
    size_t per_image = n_pix / (B * N);

    /* Image stage for all B·N images (padding slots included, as the reference does). */
    float *vit = malloc(n_vit * sizeof *vit), *perc = malloc(n_perc * sizeof *perc);
    int rc = eg_image_encoder_run(m, pix, B * N, vit, perc, &err);
    CHECK(rc == 0, "image encoder: %s", err.msg);
    if (rc == 0) {
        check_golden(name, "vision_last_hidden_state", fp32, vit, vit_ref, n_vit);
        check_golden(name, "perceiver_output", fp32, perc, perc_ref, n_perc);
    }

    /* Logits at every real position: each row runs alone, without its left padding. */
    float *out_all = malloc(n_logits * sizeof *out_all),
          *ref_all = malloc(n_logits * sizeof *ref_all);
    size_t n_cmp = 0;
    for (uint32_t b = 0; b < B; b++) {
        uint32_t start = 0;
        while (start < T && mask[b * T + start] == 0)
            start++;
        uint32_t n = T - start;
        int32_t *row_ids = malloc(n * sizeof *row_ids), *row_img = malloc(n * sizeof *row_img);
        for (uint32_t t = 0; t < n; t++) {
            row_ids[t] = (int32_t)ids[b * T + start + t];
            row_img[t] = -1;
            for (uint32_t k = 0; k < N; k++)
                if (img_mask[((size_t)b * T + start + t) * N + k]) row_img[t] = (int32_t)k;
        }
        EgSequence *s = eg_sequence_new(m, n + 16, &err);
        CHECK(s != NULL, "sequence: %s", err.msg);
        if (s && eg_sequence_set_images(s, pix + (size_t)b * N * per_image, N, &err) == 0 &&
            eg_sequence_forward(s, row_ids, row_img, n, out_all + n_cmp * V, 1, &err) == 0) {
            memcpy(ref_all + n_cmp * V, logits_ref + ((size_t)b * T + start) * V,
                   (size_t)n * V * sizeof(float));
            /* Greedy continuation with the KV cache, one token per step. */
            int32_t next = test_argmax(out_all + (n_cmp + n - 1) * V, V);
            float *step = malloc(V * sizeof *step);
            int match = 1;
            for (int k = 0; k < 8; k++) {
                if (next != gen[b * 8 + k]) match = 0;
                if (!fp32) break;
                if (k < 7 && eg_sequence_forward(s, &next, NULL, 1, step, 0, &err)) break;
                next = test_argmax(step, V);
            }
            if (fp32) {
                printf("  %s fp32 row %u: greedy ids %s\n", name, b, match ? "match" : "DIFFER");
                CHECK(match, "%s row %u: greedy generation differs from generated_ids", name, b);
            }
            free(step);
            n_cmp += n;
        } else {
            CHECK(0, "%s row %u forward: %s", name, b, err.msg);
        }
        eg_sequence_free(s);
        free(row_ids);
        free(row_img);
    }
    check_golden(name, "logits", fp32, out_all, ref_all, n_cmp * V);

    /* A prompt with no image at all. */
    const EgTensorView *to_view = NULL;
    int64_t *to_ids = test_tensor_i64(g, "textonly_input_ids", NULL, &to_view);
    float *to_ref = test_tensor_f32(g, "textonly_logits", NULL, NULL);
    uint32_t tn = (uint32_t)to_view->shape[1];
    int32_t to32[64];
    for (uint32_t t = 0; t < tn; t++)
        to32[t] = (int32_t)to_ids[t];
    float *to_out = malloc((size_t)tn * V * sizeof *to_out);
    EgSequence *s = eg_sequence_new(m, tn, &err);
    rc = s ? eg_sequence_forward(s, to32, NULL, tn, to_out, 1, &err) : -1;
    CHECK(rc == 0, "text-only forward: %s", err.msg);
    if (rc == 0)
        check_golden(name, "textonly_logits", fp32, to_out, to_ref, (size_t)tn * V);
    eg_sequence_free(s);

    free(to_ids), free(to_ref), free(to_out);
    free(ids), free(mask), free(img_mask), free(gen), free(pix), free(vit_ref), free(perc_ref);
    free(logits_ref), free(vit), free(perc), free(out_all), free(ref_all);
    eg_tensors_close(g);
    eg_model_free(m);
}

int main(void) {
    const char *models[] = {"tiny-idefics-a", "tiny-idefics-b", "tiny-idefics-c"};
    for (int fp32 = 1; fp32 >= 0; fp32--)
        for (int i = 0; i < 3; i++)
            run_model(models[i], fp32);
    CHECK(eg_vk_validation_message_count() == 0, "the Vulkan validation layer reported %d messages",
          eg_vk_validation_message_count());
    return test_finish();
}
