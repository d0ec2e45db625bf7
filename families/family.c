#include "families/family.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/json_get.h"

extern const EgFamily eg_family_idefics;
extern const EgFamily eg_family_mllama;

/* Every family Egret serves. The first is also the one a folder naming no known architecture
 * goes to, so that its loader's messages say what is wrong with the folder. */
static const EgFamily *const families[] = {&eg_family_idefics, &eg_family_mllama};
enum { N_FAMILIES = sizeof families / sizeof families[0] };

const EgFamily *eg_family_find(const char *architecture) {
    for (int f = 0; f < N_FAMILIES; f++)
        for (const char *const *a = families[f]->architectures; *a; a++)
            if (strcmp(*a, architecture) == 0) return families[f];
    return NULL;
}

/* The family that config.json's "architectures" names, else the one its "model_type" names;
 * NULL when neither says (or the file cannot be read: the loader then says why). */
static const EgFamily *family_of_folder(const char *dir) {
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    EgError ignored = {0};
    size_t len = 0;
    char *text = eg_json_read_file(path, &len, &ignored);
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    const EgFamily *found = NULL;
    const cJSON *archs = root ? eg_json_item(root, "architectures") : NULL;
    for (const cJSON *a = cJSON_IsArray(archs) ? archs->child : NULL; a && !found; a = a->next)
        if (cJSON_IsString(a)) found = eg_family_find(a->valuestring);
    const cJSON *type = root ? eg_json_item(root, "model_type") : NULL;
    for (int f = 0; f < N_FAMILIES && !found && cJSON_IsString(type); f++)
        if (strcmp(families[f]->name, type->valuestring) == 0) found = families[f];
    cJSON_Delete(root);
    return found;
}

EgFamilyModel *eg_family_open(const char *dir, const EgModelOptions *opt, EgError *err) {
    const EgFamily *f = family_of_folder(dir);
    if (!f) f = families[0];
    EgFamilyModel *m = calloc(1, sizeof *m);
    if (!m) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    m->family = f;
    m->impl = f->load(dir, opt, &m->info, err);
    if (!m->impl) {
        free(m);
        return NULL;
    }
    return m;
}

int eg_family_visit_tensors(const char *dir, const EgModelOptions *opt, EgTensorVisitor visit,
                            void *ctx, const char **family, EgError *err) {
    const EgFamily *f = family_of_folder(dir);
    if (!f) f = families[0];
    if (family) *family = f->name;
    return f->visit_tensors(dir, opt, visit, ctx, err);
}

void eg_family_close(EgFamilyModel *m) {
    if (!m) return;
    m->family->free(m->impl);
    free(m);
}

int eg_family_prompt(EgFamilyModel *m, const EgTokenizer *tok, const EgPromptPart *parts,
                     size_t n_parts, EgPrompt *out, EgError *err) {
    return m->family->prompt(m->impl, tok, parts, n_parts, out, err);
}

void eg_family_image_index(EgFamilyModel *m, const int32_t *ids, size_t n, int n_images,
                           int32_t *out) {
    m->family->image_index(m->impl, ids, n, n_images, out);
}

int eg_family_preprocess(EgFamilyModel *m, const EgImage *img, float *out, int (*stop)(void *user),
                         void *stop_user, EgError *err) {
    return m->family->preprocess(m->impl, img, out, stop, stop_user, err);
}

int eg_family_is_eos(const EgFamilyModel *m, int32_t id) {
    for (uint32_t i = 0; i < m->info.n_eos; i++)
        if (m->info.eos[i] == id) return 1;
    return 0;
}

void eg_family_bench_inputs(EgFamilyModel *m, int32_t *ids, uint32_t n, float *image) {
    m->family->bench_inputs(m->impl, ids, n, image);
}

int eg_family_encode(EgFamilyModel *m, const float *images, uint32_t n, EgError *err) {
    return m->family->encode(m->impl, images, n, err);
}

EgFamilySeq *eg_fseq_new(EgFamilyModel *m, uint32_t capacity, EgError *err) {
    EgFamilySeq *s = calloc(1, sizeof *s);
    if (!s) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    s->m = m;
    s->impl = m->family->seq_new(m->impl, capacity, err);
    if (!s->impl) {
        free(s);
        return NULL;
    }
    return s;
}

void eg_fseq_free(EgFamilySeq *s) {
    if (!s) return;
    s->m->family->seq_free(s->impl);
    free(s);
}

uint32_t eg_fseq_n_past(const EgFamilySeq *s) {
    return s->m->family->seq_n_past(s->impl);
}

void eg_fseq_rewind(EgFamilySeq *s, uint32_t n) {
    s->m->family->seq_rewind(s->impl, n);
}

uint32_t eg_fseq_capacity(const EgFamilySeq *s) {
    return s->m->family->seq_capacity(s->impl);
}

uint64_t eg_fseq_kv_bytes(const EgFamilyModel *m, uint32_t capacity) {
    return m->family->seq_kv_bytes(m->impl, capacity);
}

uint64_t eg_fseq_device_bytes(const EgFamilySeq *s) {
    return s->m->family->seq_device_bytes(s->impl);
}

EgFamilySeq *eg_fseq_copy_prefix(const EgFamilySeq *s, uint32_t n, uint32_t capacity,
                                 EgError *err) {
    EgFamilySeq *c = calloc(1, sizeof *c);
    if (!c) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    c->m = s->m;
    c->impl = s->m->family->seq_copy_prefix(s->impl, n, capacity, err);
    if (!c->impl) {
        free(c);
        return NULL;
    }
    return c;
}

int eg_fseq_set_images(EgFamilySeq *s, const float *pixels, uint32_t n, EgError *err) {
    return s->m->family->set_images(s->impl, n, NULL, pixels, NULL, err);
}

int eg_fseq_set_images_cached(EgFamilySeq *s, uint32_t n, const EgBuffer *const *cached,
                              const float *pixels, const EgBuffer *const *store, EgError *err) {
    return s->m->family->set_images(s->impl, n, cached, pixels, store, err);
}

int eg_fseq_forward(EgFamilySeq *s, const int32_t *ids, const int32_t *image_of_token, uint32_t n,
                    float *logits, int all_logits, EgError *err) {
    return s->m->family->forward(s->impl, ids, image_of_token, n, logits, all_logits, err);
}

int eg_fseq_forward_batch(EgFamilySeq *const *seqs, uint32_t k, const int32_t *ids, float *logits,
                          EgError *err) {
    if (k == 0) return 0;
    const EgFamilyModel *m = seqs[0]->m;
    if (k > m->info.max_batch || k > EG_FAMILY_MAX_BATCH)
        return eg_fail(err, "%u sequences in one batch; at most %u", k, m->info.max_batch);
    void *impls[EG_FAMILY_MAX_BATCH];
    for (uint32_t b = 0; b < k; b++) {
        if (seqs[b]->m != m) return eg_fail(err, "a batch mixes sequences of two models");
        impls[b] = seqs[b]->impl;
    }
    return m->family->forward_batch(impls, k, ids, logits, err);
}
