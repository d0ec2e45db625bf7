/* Loading an mllama checkpoint folder (families/mllama/model.h). */
#include <stdlib.h>
#include <string.h>

#include "families/mllama/text_model.h"
#include "families/mllama/vision_load.h"
#include "runtime/clock.h"
#include "runtime/vk_context.h"
#include "runtime/vk_pipeline_cache.h"
#include "runtime/weight_loader.h"

/* config.json and every tensor checked (and visited) without a device; *tf stays open. The
 * projections' format is resolved here (m->quant): --quant, or a pre-quantized folder's own. */
static int check_folder(EgMllamaModel *m, const char *dir, int random_weights,
                        EgWeightFormat requested, EgTensorFile **tf, EgTensorVisitor visit,
                        void *visit_ctx, EgError *err) {
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    char path[1200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    EgMllamaNames names;
    return eg_mllama_config_load(path, &m->cfg, err) ||
                   eg_mllama_preprocess_config_load(dir, &m->cfg, &m->preprocess, err) ||
                   !(*tf = random_weights ? eg_mllama_random_weights(err)
                                          : eg_tensors_open_dir(dir, err)) ||
                   eg_weight_loader_quant(*tf, requested, &m->quant, err) ||
                   eg_mllama_names(*tf, &names, err) ||
                   eg_mllama_vision_check(m, *tf, &names, visit, visit_ctx, err) ||
                   eg_mllama_text_check(&m->cfg.text, *tf, m->quant, visit, visit_ctx, err)
               ? -1
               : 0;
}

int eg_mllama_visit_tensors(const char *dir, EgWeightFormat quant, EgTensorVisitor visit,
                            void *visit_ctx, EgError *err) {
    EgMllamaModel *m = calloc(1, sizeof *m);
    if (!m) return eg_fail(err, "out of host memory");
    EgTensorFile *tf = NULL;
    int rc = check_folder(m, dir, 0, quant, &tf, visit, visit_ctx, err);
    eg_tensors_close(tf);
    eg_mllama_model_free(m);
    return rc ? eg_fail_prefix(err, "reading model %s", dir) : 0;
}

EgMllamaModel *eg_mllama_model_load(const char *dir, const EgMllamaOptions *opt, EgError *err) {
    EgMllamaOptions defaults = {0};
    if (!opt) opt = &defaults;
    double t0 = eg_now_s();
    EgMllamaModel *m = calloc(1, sizeof *m);
    if (!m) {
        eg_fail(err, "out of host memory");
        return NULL;
    }
    EgTensorFile *tf = NULL;
    EgMllamaNames names;
    /* the folder is checked whole before anything reaches the device */
    if (check_folder(m, dir, opt->random_weights, opt->quant, &tf, NULL, NULL, err) ||
        eg_mllama_names(tf, &names, err))
        goto fail;
    EgVkOptions vo = {.device = opt->device,
                      .verbose = opt->progress != NULL,
                      .pipeline_cache_dir = opt->pipeline_cache_dir};
    EgOpsConfig oc = {.quant_kernels = eg_ops_quant_kernels_for(m->quant)};
    if (eg_vk_create(&m->vk, &vo, err) || eg_ops_init_config(&m->ops, &m->vk, !opt->fp32, &oc, err))
        goto fail;
    /* every pipeline is built: what the driver compiled is kept for the next start */
    if (m->vk.pipeline_cache_path) eg_pipeline_cache_save(&m->vk, stderr);
    eg_arena_init(&m->weights, &m->vk, EG_MEM_DEVICE, 64u << 20);
    if (eg_staging_init(&m->staging, &m->vk, 16u << 20, err) ||
        eg_mllama_vision_load(m, tf, &names, err))
        goto fail;
    eg_tensors_close(tf);
    if (opt->progress) {
        /* as loaded: a quantized folder's own format, or dense where an AWQ folder keeps it */
        char projections[32];
        eg_weight_group_format(&m->weight_report, EG_WEIGHT_GROUP_VISION, projections,
                               sizeof projections);
        fprintf(opt->progress,
                "egret: loaded the mllama vision tower of %s (%.1f MiB as %s, projections %s) "
                "in %.2f s\n",
                dir, (double)m->weights.bytes_used / (1 << 20), opt->fp32 ? "fp32" : "fp16",
                projections, eg_now_s() - t0);
    }
    return m;
fail:
    eg_fail_prefix(err, "loading model %s", dir);
    eg_tensors_close(tf);
    eg_mllama_model_free(m);
    return NULL;
}

void eg_mllama_model_free(EgMllamaModel *m) {
    if (!m) return;
    eg_mllama_vision_release(m);
    if (m->vk.device) {
        eg_staging_destroy(&m->staging);
        eg_arena_reset(&m->weights);
        eg_ops_destroy(&m->ops);
        eg_vk_destroy(&m->vk);
    }
    free(m);
}
