/* The mllama text decoder (families/mllama/text_*) against HuggingFace's outputs for the tiny
 * random checkpoints (tests/data/mllama/tiny-mllama-{a,b,c}): the golden projector output
 * (cross_attention_states) is fed in, so the decoder is tested without the vision encoder.
 *
 * For each checkpoint, each of the two prompts of the golden batch (left padding, text before
 * the first image, two images, consecutive images, padding images) runs as its own sequence:
 * logits at every real position, then greedy decoding with the KV cache and the cross keys and
 * values computed once; a text-only prompt skips the cross layers. Errors per tensor: max|a−b| /
 * max|b| and ||a−b|| / ||b||, both ≤ 1e-4 (fp32) and ≤ 1e-2 (fp16); greedy ids identical in
 * fp32. Also: the llama3 RoPE frequencies against HF's (text_golden.safetensors), and configs
 * and checkpoints that must be refused, naming what is wrong. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "families/mllama/text_decoder.h"
#include "runtime/safetensors.h"
#include "runtime/vk_context.h"
#include "test_util.h"

#define NEW_TOKENS 10

static EgVk g_vk;

/* Greedy continuation of a sequence whose prompt's last logits are `last`: NEW_TOKENS ids,
 * each step one token through the KV cache (its mask row repeated), compared with want. */
static void check_greedy(const char *what, int fp32, EgMllamaTextSequence *s, const float *last,
                         const int64_t *want) {
    uint32_t V = s->t->vocab;
    float *logits = malloc(V * sizeof *logits);
    memcpy(logits, last, V * sizeof *logits);
    int same = 1;
    char got_text[256] = "", want_text[256] = "";
    for (int k = 0; k < NEW_TOKENS; k++) {
        int32_t id = test_argmax(logits, V);
        same &= id == (int32_t)want[k];
        size_t gl = strlen(got_text), wl = strlen(want_text);
        snprintf(got_text + gl, sizeof got_text - gl, " %d", id);
        snprintf(want_text + wl, sizeof want_text - wl, " %lld", (long long)want[k]);
        EgError err = {0};
        if (k + 1 < NEW_TOKENS && eg_mllama_text_forward(s, &id, NULL, 1, logits, 0, &err)) {
            CHECK(0, "%s decode step %d: %s", what, k, err.msg);
            break;
        }
    }
    printf("  %s %s greedy:%s (HF:%s)\n", fp32 ? "fp32" : "fp16", what, got_text, want_text);
    if (fp32) CHECK(same, "%s fp32 greedy ids differ:%s vs HF%s", what, got_text, want_text);
    free(logits);
}

typedef struct Golden {
    EgTensorFile *g;
    int64_t *ids, *attn_mask, *xmask, *generated, *t_ids, *t_generated;
    float *states, *logits, *t_logits;
    uint32_t B, T, N, J, P, t_len;
} Golden;

static int golden_open(Golden *gd, const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/golden.safetensors", dir);
    EgError err = {0};
    memset(gd, 0, sizeof *gd);
    gd->g = eg_tensors_open_file(path, &err);
    CHECK(gd->g != NULL, "%s", err.msg);
    if (!gd->g) return -1;
    const EgTensorView *v_ids, *v_x, *v_s, *v_t;
    gd->ids = test_tensor_i64(gd->g, "input_ids", NULL, &v_ids);
    gd->attn_mask = test_tensor_i64(gd->g, "attention_mask", NULL, NULL);
    gd->xmask = test_tensor_i64(gd->g, "cross_attention_mask", NULL, &v_x);
    gd->generated = test_tensor_i64(gd->g, "generated_ids", NULL, NULL);
    gd->states = test_tensor_f32(gd->g, "cross_attention_states", NULL, &v_s);
    gd->logits = test_tensor_f32(gd->g, "logits", NULL, NULL);
    gd->t_ids = test_tensor_i64(gd->g, "textonly_input_ids", NULL, &v_t);
    gd->t_logits = test_tensor_f32(gd->g, "textonly_logits", NULL, NULL);
    gd->t_generated = test_tensor_i64(gd->g, "textonly_generated_ids", NULL, NULL);
    int ok = gd->ids && gd->attn_mask && gd->xmask && gd->generated && gd->states && gd->logits &&
             gd->t_ids && gd->t_logits && gd->t_generated;
    CHECK(ok, "%s: a golden tensor is missing", path);
    if (!ok) return -1;
    gd->B = (uint32_t)v_ids->shape[0];
    gd->T = (uint32_t)v_ids->shape[1];
    gd->N = (uint32_t)v_x->shape[2];
    gd->J = (uint32_t)v_x->shape[3];
    gd->P = (uint32_t)v_s->shape[1];
    gd->t_len = (uint32_t)v_t->shape[1];
    return 0;
}

static void golden_close(Golden *gd) {
    free(gd->ids), free(gd->attn_mask), free(gd->xmask), free(gd->generated);
    free(gd->states), free(gd->logits), free(gd->t_ids), free(gd->t_logits);
    free(gd->t_generated);
    eg_tensors_close(gd->g);
}

/* Sample b of the golden batch: its real tokens (left padding dropped: the golden positions
 * are generate's, so the first real token is at position 0, as in a sequence of its own). */
static void run_sample(const char *name, int fp32, EgMllamaText *t, const Golden *gd, uint32_t b) {
    uint32_t T = gd->T, NJ = gd->N * gd->J, V = t->vocab;
    int32_t ids[64];
    uint8_t tiles[64 * 64];
    uint32_t pos_of[64], n = 0;
    for (uint32_t i = 0; i < T && n < 64; i++) {
        if (!gd->attn_mask[b * T + i]) continue;
        ids[n] = (int32_t)gd->ids[b * T + i];
        for (uint32_t k = 0; k < NJ; k++)
            tiles[n * NJ + k] = (uint8_t)gd->xmask[((size_t)b * T + i) * NJ + k];
        pos_of[n++] = i;
    }
    char what[96];
    snprintf(what, sizeof what, "%s sample %u (%u tokens, %u pads)", name, b, n, T - n);
    EgError err = {0};
    EgMllamaTextSequence *s = eg_mllama_text_sequence_new(t, n + NEW_TOKENS, &err);
    CHECK(s != NULL, "%s: %s", what, err.msg);
    if (!s) return;
    const float *states = gd->states + (size_t)b * NJ * gd->P * t->H;
    CHECK(eg_mllama_text_set_cross_states(s, states, NJ, gd->P, &err) == 0, "%s: %s", what,
          err.msg);
    float *got = malloc((size_t)n * V * sizeof *got), *ref = malloc((size_t)n * V * sizeof *ref);
    for (uint32_t i = 0; i < n; i++)
        memcpy(ref + (size_t)i * V, gd->logits + ((size_t)b * T + pos_of[i]) * V, V * sizeof *ref);
    int rc = eg_mllama_text_forward(s, ids, tiles, n, got, 1, &err);
    CHECK(rc == 0, "%s: %s", what, err.msg);
    if (rc == 0) {
        char label[128];
        snprintf(label, sizeof label, "%s logits", what);
        test_check_close(label, fp32, got, ref, (size_t)n * V);
        check_greedy(what, fp32, s, got + (size_t)(n - 1) * V,
                     gd->generated + (size_t)b * NEW_TOKENS);
        /* the images' keys and values were computed once, when set: the prefill (in chunks)
         * and every decode step read them from the cache */
        CHECK(s->cross_kv_computed == 1, "%s: cross keys/values computed %u times", what,
              s->cross_kv_computed);
    }
    free(got), free(ref);
    eg_mllama_text_sequence_free(s);
}

static void run_text_only(const char *name, int fp32, EgMllamaText *t, const Golden *gd) {
    uint32_t n = gd->t_len, V = t->vocab;
    int32_t ids[64];
    for (uint32_t i = 0; i < n && i < 64; i++)
        ids[i] = (int32_t)gd->t_ids[i];
    char what[96];
    snprintf(what, sizeof what, "%s text-only", name);
    EgError err = {0};
    EgMllamaTextSequence *s = eg_mllama_text_sequence_new(t, n + NEW_TOKENS, &err);
    CHECK(s != NULL, "%s: %s", what, err.msg);
    if (!s) return;
    float *got = malloc((size_t)n * V * sizeof *got);
    int rc = eg_mllama_text_forward(s, ids, NULL, n, got, 1, &err);
    CHECK(rc == 0, "%s: %s", what, err.msg);
    if (rc == 0) {
        char label[128];
        snprintf(label, sizeof label, "%s logits", what);
        test_check_close(label, fp32, got, gd->t_logits, (size_t)n * V);
        check_greedy(what, fp32, s, got + (size_t)(n - 1) * V, gd->t_generated);
        CHECK(s->cross_kv_computed == 0, "%s: cross keys/values computed without images", what);
    }
    free(got);
    eg_mllama_text_sequence_free(s);
}

/* Prompt p of the golden (0, 1: the batch's samples, real tokens only; 2: the text-only one)
 * into a new sequence, its last logits into last. */
static EgMllamaTextSequence *prefill(EgMllamaText *t, const Golden *gd, uint32_t p, float *last) {
    int32_t ids[64];
    uint8_t tiles[64 * 64];
    uint32_t n = 0, T = gd->T, NJ = gd->N * gd->J;
    for (uint32_t i = 0; p < 2 && i < T && n < 64; i++) {
        if (!gd->attn_mask[p * T + i]) continue;
        ids[n] = (int32_t)gd->ids[p * T + i];
        for (uint32_t k = 0; k < NJ; k++)
            tiles[n * NJ + k] = (uint8_t)gd->xmask[((size_t)p * T + i) * NJ + k];
        n++;
    }
    for (uint32_t i = 0; p == 2 && i < gd->t_len && i < 64; i++)
        ids[n++] = (int32_t)gd->t_ids[i];
    EgError err = {0};
    EgMllamaTextSequence *s = eg_mllama_text_sequence_new(t, n + NEW_TOKENS, &err);
    int rc = s ? 0 : -1;
    if (rc == 0 && p < 2)
        rc = eg_mllama_text_set_cross_states(s, gd->states + (size_t)p * NJ * gd->P * t->H, NJ,
                                             gd->P, &err);
    if (rc == 0) rc = eg_mllama_text_forward(s, ids, p < 2 ? tiles : NULL, n, last, 0, &err);
    CHECK(rc == 0, "prefill %u: %s", p, err.msg);
    if (rc) eg_mllama_text_sequence_free(s), s = NULL;
    return s;
}

/* The three prompts decoded together, one batched step per token (sequences with images and
 * one without in the same step): greedy ids as HF's, and each step's logits as those of a twin
 * sequence decoding alone. */
static void run_batch(const char *name, int fp32, EgMllamaText *t, const Golden *gd) {
    uint32_t V = t->vocab;
    EgMllamaTextSequence *seqs[3] = {0}, *twins[3] = {0};
    float *logits = malloc((size_t)3 * V * sizeof *logits), *alone = malloc(V * sizeof *alone);
    int ok = 1;
    for (uint32_t p = 0; p < 3; p++) {
        seqs[p] = prefill(t, gd, p, logits + (size_t)p * V);
        twins[p] = prefill(t, gd, p, alone);
        ok &= seqs[p] && twins[p];
    }
    int same = ok;
    double worst = 0;
    for (int step = 0; ok && step < NEW_TOKENS; step++) {
        int32_t ids[3];
        for (uint32_t p = 0; p < 3; p++) {
            ids[p] = test_argmax(logits + (size_t)p * V, V);
            const int64_t *want = p < 2 ? gd->generated + (size_t)p * NEW_TOKENS : gd->t_generated;
            same &= ids[p] == (int32_t)want[step];
        }
        if (step + 1 == NEW_TOKENS) break;
        EgError err = {0};
        ok = eg_mllama_text_forward_batch(seqs, 3, ids, logits, &err) == 0;
        CHECK(ok, "%s batched step %d: %s", name, step, err.msg);
        for (uint32_t p = 0; ok && p < 3; p++) {
            ok = eg_mllama_text_forward(twins[p], &ids[p], NULL, 1, alone, 0, &err) == 0;
            CHECK(ok, "%s twin %u step %d: %s", name, p, step, err.msg);
            double dmax = 0, rmax = 0;
            for (uint32_t v = 0; ok && v < V; v++) {
                double d = fabs((double)logits[(size_t)p * V + v] - alone[v]);
                if (!(d <= dmax)) dmax = d;
                if (fabs(alone[v]) > rmax) rmax = fabs(alone[v]);
            }
            if (dmax / rmax > worst || dmax != dmax) worst = dmax / rmax;
        }
    }
    double tol = fp32 ? 1e-5 : 1e-2;
    printf("  %s %s batched decode of 3: greedy ids %s HF's, logits within %.3g of decoding "
           "alone\n",
           fp32 ? "fp32" : "fp16", name, same ? "equal" : "differ from", worst);
    if (fp32) CHECK(same, "%s fp32 batched greedy ids differ from HF's", name);
    CHECK(worst <= tol, "%s batched logits %.3g from decoding alone (limit %.0e)", name, worst,
          tol);
    for (uint32_t p = 0; p < 3; p++) {
        eg_mllama_text_sequence_free(seqs[p]);
        eg_mllama_text_sequence_free(twins[p]);
    }
    free(logits), free(alone);
}

/* HF's llama3-scaled inverse frequencies, for this config and for 11B's. */
static void check_rope(const char *name, const char *dir, const EgMllamaText *t) {
    char path[600];
    snprintf(path, sizeof path, "%s/text_golden.safetensors", dir);
    EgError err = {0};
    EgTensorFile *g = eg_tensors_open_file(path, &err);
    CHECK(g != NULL, "%s", err.msg);
    if (!g) return;
    const EgTensorView *v;
    float *want = test_tensor_f32(g, "rope_inv_freq", NULL, &v);
    CHECK(want && v->numel == t->head_dim / 2, "%s: rope_inv_freq", path);
    for (uint32_t j = 0; want && j < t->head_dim / 2; j++)
        CHECK(fabsf(t->inv_freq[j] - want[j]) <= 1.2e-7f * want[j],
              "%s inv_freq[%u] = %.9g, HF %.9g", name, j, t->inv_freq[j], want[j]);
    free(want);
    want = test_tensor_f32(g, "rope_inv_freq_11b", NULL, &v);
    CHECK(want && v->numel == 64, "%s: rope_inv_freq_11b", path);
    float got[64];
    eg_rope_inv_freq(got, 128, 500000.0f, &(EgRopeLlama3){8.0f, 1.0f, 4.0f, 8192.0f});
    int bad = 0;
    for (uint32_t j = 0; want && j < 64; j++)
        bad += !(fabsf(got[j] - want[j]) <= 1.2e-7f * want[j]);
    CHECK(want && bad == 0, "11B llama3 inv_freq: %d of 64 differ from HF", bad);
    free(want);
    eg_tensors_close(g);
}

static void run_model(const char *name, EgOps *ops, EgStaging *st, int fp32) {
    char dir[512], cfg_path[600];
    snprintf(dir, sizeof dir, "%s", test_data_path(name));
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    EgError err = {0};
    EgMllamaTextConfig cfg;
    int rc = eg_mllama_text_config_load(cfg_path, &cfg, &err);
    CHECK(rc == 0, "%s: %s", name, err.msg);
    if (rc) return;
    EgTensorFile *tf = eg_tensors_open_dir(dir, &err);
    CHECK(tf != NULL, "%s: %s", name, err.msg);
    if (!tf) return;
    EgMllamaText t;
    /* 5 tokens per chunk: the prompts (6 to 13 tokens) run in 2 or 3 chunks */
    EgMllamaTextOptions opt = {.max_chunk = 5, .max_tiles = 16};
    rc = eg_mllama_text_load(&t, &cfg, ops, st, tf, &opt, &err);
    eg_tensors_close(tf);
    CHECK(rc == 0, "%s: %s", name, err.msg);
    if (rc) return;
    if (fp32) check_rope(name, dir, &t);
    Golden gd;
    if (golden_open(&gd, dir) == 0) {
        for (uint32_t b = 0; b < gd.B; b++)
            run_sample(name, fp32, &t, &gd, b);
        run_text_only(name, fp32, &t, &gd);
        run_batch(name, fp32, &t, &gd);
    }
    golden_close(&gd);
    eg_mllama_text_free(&t);
}

/* ---- transformers 4.52+'s in-memory names ---- */

/* The safetensors file at path with every "language_model.model." name renamed to
 * "model.language_model." and "language_model.lm_head." to "lm_head." (malloc'd bytes). */
static unsigned char *renamed_checkpoint(const char *path, size_t *len) {
    size_t n = 0;
    unsigned char *in = test_read_file(path, &n);
    if (!in || n < 8) return free(in), NULL;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | in[i];
    char *text = malloc(hlen + 1);
    memcpy(text, in + 8, hlen);
    text[hlen] = 0;
    cJSON *h = cJSON_Parse(text), *renamed = cJSON_CreateObject();
    free(text);
    while (h && h->child) {
        cJSON *e = cJSON_DetachItemViaPointer(h, h->child);
        static const char *const from[] = {"language_model.model.", "language_model.lm_head."};
        static const char *const to[] = {"model.language_model.", "lm_head."};
        char name[256];
        snprintf(name, sizeof name, "%s", e->string);
        for (int k = 0; k < 2; k++)
            if (strncmp(e->string, from[k], strlen(from[k])) == 0)
                snprintf(name, sizeof name, "%s%s", to[k], e->string + strlen(from[k]));
        cJSON_AddItemToObject(renamed, name, e);
    }
    cJSON_Delete(h);
    h = renamed;
    char *out_h = h ? cJSON_PrintUnformatted(h) : NULL;
    cJSON_Delete(h);
    if (!out_h) return free(in), NULL;
    size_t olen = strlen(out_h), data = n - 8 - hlen;
    unsigned char *out = malloc(8 + olen + data);
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)((uint64_t)olen >> (8 * i));
    memcpy(out + 8, out_h, olen);
    memcpy(out + 8 + olen, in + 8 + hlen, data);
    free(out_h);
    free(in);
    *len = 8 + olen + data;
    return out;
}

/* The same weights under the other naming load to the same logits. */
static void test_v5_names(EgOps *ops, EgStaging *st) {
    const char *dir = test_data_path("mllama/tiny-mllama-a");
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    EgMllamaTextConfig cfg;
    EgError err = {0};
    CHECK(eg_mllama_text_config_load(path, &cfg, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t len = 0;
    unsigned char *bytes = renamed_checkpoint(path, &len);
    CHECK(bytes != NULL, "renaming %s", path);
    if (!bytes) return;
    EgTensorFile *tf[2] = {eg_tensors_open_file(path, &err),
                           eg_tensors_open_memory(bytes, len, "renamed", &err)};
    CHECK(tf[0] && tf[1] && eg_tensors_find(tf[1], "model.language_model.norm.weight") &&
              eg_tensors_find(tf[1], "lm_head.weight"),
          "renamed checkpoint: %s", err.msg);
    static const int32_t ids[] = {500, 7, 33, 200};
    float logits[2][512];
    for (int k = 0; k < 2 && tf[0] && tf[1]; k++) {
        EgMllamaText t;
        int rc = eg_mllama_text_load(&t, &cfg, ops, st, tf[k], NULL, &err);
        CHECK(rc == 0, "naming %d: %s", k, err.msg);
        if (rc) continue;
        EgMllamaTextSequence *s = eg_mllama_text_sequence_new(&t, 4, &err);
        CHECK(s && eg_mllama_text_forward(s, ids, NULL, 4, logits[k], 0, &err) == 0, "%s", err.msg);
        eg_mllama_text_sequence_free(s);
        eg_mllama_text_free(&t);
    }
    CHECK(memcmp(logits[0], logits[1], sizeof logits[0]) == 0,
          "the two namings give different logits");
    eg_tensors_close(tf[0]);
    eg_tensors_close(tf[1]);
    free(bytes);
}

/* ---- refusals ---- */

/* Bad inputs are answered with an error naming them, and leave the sequence usable. */
static void test_bad_inputs(EgOps *ops, EgStaging *st) {
    const char *dir = test_data_path("mllama/tiny-mllama-a");
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    EgMllamaTextConfig cfg;
    EgError err = {0};
    if (eg_mllama_text_config_load(path, &cfg, &err)) return;
    EgTensorFile *tf = eg_tensors_open_dir(dir, &err);
    EgMllamaText t;
    int rc = tf ? eg_mllama_text_load(&t, &cfg, ops, st, tf, &(EgMllamaTextOptions){.max_tiles = 8},
                                      &err)
                : -1;
    eg_tensors_close(tf);
    CHECK(rc == 0, "%s", err.msg);
    if (rc) return;
    EgMllamaTextSequence *s = eg_mllama_text_sequence_new(&t, 4, &err);
    CHECK(s != NULL, "%s", err.msg);
    if (s) {
        float *states = calloc((size_t)9 * 5 * t.H, sizeof *states);
        int32_t ids[5] = {500, 7, 520, 8, 9};
        uint8_t tiles[2] = {1, 2};
        float logits[512];
        rc = eg_mllama_text_set_cross_states(s, states, 9, 5, &err);
        CHECK(rc != 0 && strstr(err.msg, "9 image tiles"), "9 tiles of 8: %s",
              rc ? err.msg : "accepted");
        rc = eg_mllama_text_forward(s, ids, NULL, 3, logits, 0, &err);
        CHECK(rc != 0 && strstr(err.msg, "token id 520"), "id 520 of 520 rows: %s",
              rc ? err.msg : "accepted");
        rc = eg_mllama_text_forward(s, ids, NULL, 5, logits, 0, &err);
        CHECK(rc != 0 && strstr(err.msg, "context of 4"), "5 tokens in 4: %s",
              rc ? err.msg : "accepted");
        CHECK(eg_mllama_text_set_cross_states(s, states, 2, 5, &err) == 0, "%s", err.msg);
        rc = eg_mllama_text_forward(s, ids, tiles, 1, logits, 0, &err);
        CHECK(rc != 0 && strstr(err.msg, "tile 1 is 2"), "mask value 2: %s",
              rc ? err.msg : "accepted");
        CHECK(s->n_past == 0, "a refused call advanced the sequence to %u", s->n_past);
        tiles[1] = 1;
        CHECK(eg_mllama_text_forward(s, ids, tiles, 1, logits, 0, &err) == 0 && s->n_past == 1,
              "after the refusals: %s", err.msg);
        free(states);
    }
    eg_mllama_text_sequence_free(s);
    eg_mllama_text_free(&t);
}

static void expect_config_error(const char *json, const char *needle) {
    cJSON *root = cJSON_Parse(json);
    EgMllamaTextConfig cfg;
    EgError err = {0};
    int rc = eg_mllama_text_config_parse(root, "test.json", &cfg, &err);
    CHECK(rc != 0 && strstr(err.msg, needle), "config %s: wanted an error naming '%s', got %s",
          json, needle, rc ? err.msg : "success");
    cJSON_Delete(root);
}

static void test_config(void) {
    const char *base = "{\"hidden_size\":64,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
                       "\"num_hidden_layers\":5,\"cross_attention_layers\":[1,4]";
    char json[512];
    snprintf(json, sizeof json, "%s}", base);
    cJSON *root = cJSON_Parse(json);
    EgMllamaTextConfig cfg;
    EgError err = {0};
    CHECK(eg_mllama_text_config_parse(root, "t", &cfg, &err) == 0, "%s", err.msg);
    CHECK(cfg.n_cross == 2 && eg_mllama_cross_index(&cfg, 4) == 1 &&
              eg_mllama_cross_index(&cfg, 2) == -1 && !cfg.rope_llama3 && cfg.rope_theta == 5e5f,
          "parsed config");
    cJSON_Delete(root);
    /* v4's spelling: rope_theta beside rope_scaling, "type" for the type */
    snprintf(json, sizeof json,
             "%s,\"rope_theta\":1000.0,\"rope_scaling\":{\"type\":\"llama3\",\"factor\":8.0,"
             "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
             "\"original_max_position_embeddings\":64},\"eos_token_id\":[1,2,3]}",
             base);
    root = cJSON_Parse(json);
    CHECK(eg_mllama_text_config_parse(root, "t", &cfg, &err) == 0, "%s", err.msg);
    CHECK(cfg.rope_llama3 && cfg.rope_theta == 1000.0f && cfg.llama3.factor == 8.0f &&
              cfg.llama3.original_max_position_embeddings == 64.0f && cfg.n_eos == 3,
          "v4 rope_scaling parsed");
    cJSON_Delete(root);
    expect_config_error("{\"num_hidden_layers\":4,\"cross_attention_layers\":[1,4]}",
                        "cross_attention_layers[1] = 4");
    expect_config_error("{\"cross_attention_layers\":[3,3]}", "increasing");
    expect_config_error("{\"num_attention_heads\":32,\"num_key_value_heads\":5}",
                        "num_key_value_heads");
    expect_config_error("{\"hidden_size\":100,\"num_attention_heads\":3}", "num_attention_heads");
    expect_config_error("{\"rope_parameters\":{\"rope_type\":\"yarn\"}}", "yarn");
    expect_config_error("{\"rope_parameters\":{\"rope_type\":\"llama3\",\"factor\":8}}",
                        "high_freq_factor");
    expect_config_error("{\"hidden_act\":\"gelu\"}", "hidden_act");
    expect_config_error("{\"vocab_size\":\"many\"}", "vocab_size");
}

/* A checkpoint without one of the text tensors is refused, naming it. */
static void test_missing_tensor(EgOps *ops, EgStaging *st) {
    const char *dir = test_data_path("mllama/tiny-mllama-c");
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    EgMllamaTextConfig cfg;
    EgError err = {0};
    if (eg_mllama_text_config_load(path, &cfg, &err)) return;
    cfg.num_hidden_layers = 5; /* asks for layers.4.*, which the file lacks */
    EgTensorFile *tf = eg_tensors_open_dir(dir, &err);
    if (!tf) return;
    EgMllamaText t;
    int rc = eg_mllama_text_load(&t, &cfg, ops, st, tf, NULL, &err);
    CHECK(rc != 0 && strstr(err.msg, "language_model.model.layers.4."),
          "missing layer 4: wanted an error naming it, got %s", rc ? err.msg : "success");
    if (rc == 0) eg_mllama_text_free(&t);
    eg_tensors_close(tf);
}

int main(void) {
    EgError err = {0};
    REQUIRE(eg_vk_create(&g_vk, &(EgVkOptions){0}, &err) == 0, "%s", err.msg);
    test_config();
    static const char *const models[] = {"mllama/tiny-mllama-a", "mllama/tiny-mllama-b",
                                         "mllama/tiny-mllama-c"};
    for (int fp32 = 1; fp32 >= 0; fp32--) {
        EgOps ops;
        EgStaging st;
        REQUIRE(eg_ops_init(&ops, &g_vk, !fp32, &err) == 0, "%s", err.msg);
        REQUIRE(eg_staging_init(&st, &g_vk, 4u << 20, &err) == 0, "%s", err.msg);
        for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
            run_model(models[i], &ops, &st, fp32);
        if (fp32) {
            test_missing_tensor(&ops, &st);
            test_v5_names(&ops, &st);
            test_bad_inputs(&ops, &st);
        }
        eg_staging_destroy(&st);
        eg_ops_destroy(&ops);
    }
    CHECK(eg_vk_validation_message_count() == 0, "the Vulkan validation layer reported %d messages",
          eg_vk_validation_message_count());
    eg_vk_destroy(&g_vk);
    return test_finish();
}
