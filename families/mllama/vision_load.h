/* Reading an mllama checkpoint's tensors: which of the two name layouts it uses, the vision
 * tower and projector uploaded (families/mllama/model.h). */
#ifndef EGRET_MLLAMA_VISION_LOAD_H
#define EGRET_MLLAMA_VISION_LOAD_H

#include "families/mllama/model.h"
#include "runtime/safetensors.h"
#include "runtime/weight_loader.h"

/* Tensor name prefixes. Files written by Meta's conversion and by HF's save_pretrained (v4 and
 * v5) use the legacy names; v4.52+ module paths (model.vision_model.*, ...) are accepted too. */
typedef struct EgMllamaNames {
    const char *vision;    /* "vision_model." or "model.vision_model." */
    const char *projector; /* "multi_modal_projector." or "model.multi_modal_projector." */
    const char *text;      /* "language_model.model." or "model.language_model." */
    const char *lm_head;   /* "language_model.lm_head." or "lm_head." */
} EgMllamaNames;

/* Generated weights of any mllama config's shapes (runtime/safetensors.h), for benchmarks: the
 * vision tower and the text model read the same seed. */
EgTensorFile *eg_mllama_random_weights(EgError *err);

/* Picks the layout from where the patch embedding is; error when it is in neither. */
int eg_mllama_names(const EgTensorFile *tf, EgMllamaNames *names, EgError *err);

/* Checks the names and shapes of the vision tower's and the projector's tensors against m->cfg
 * (no device needed; the gates of the embeddings are read into m->vision), passing each to visit
 * (may be NULL). */
int eg_mllama_vision_check(EgMllamaModel *m, const EgTensorFile *tf, const EgMllamaNames *names,
                           EgTensorVisitor visit, void *visit_ctx, EgError *err);
/* Uploads the vision tower and the projector into m->vision (m's ops, weights and staging set
 * up); every tensor is checked for name and shape first. */
int eg_mllama_vision_load(EgMllamaModel *m, const EgTensorFile *tf, const EgMllamaNames *names,
                          EgError *err);
void eg_mllama_vision_release(EgMllamaModel *m);

#endif
