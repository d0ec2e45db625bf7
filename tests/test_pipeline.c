/* Pipeline batches (runtime/vk_pipeline.c): every queued pipeline is built, on several threads,
 * into its own slot with its own bindings and specialization; a batch with a failing request
 * reports the first failure in queue order and leaves nothing built (the validation layer,
 * which tests turn on, reports objects left behind when the device is destroyed); a batch
 * that does not fit fails without building. */
#include "runtime/vk_pipeline.h"
#include "test_util.h"

#include <string.h>

static EgVk g_vk;

/* Whether none of p's Vulkan objects exist (a failed or destroyed pipeline). */
static int is_empty(const EgPipeline *p) {
    return p->pipeline == VK_NULL_HANDLE && p->layout == VK_NULL_HANDLE &&
           p->set_layout == VK_NULL_HANDLE;
}

/* Queues norm's pipelines for WG = 8, 16, ... (n of them): the same shader, differently
 * specialized, as eg_ops_init queues its variants. */
static void queue_norms(EgPipelineBatch *b, EgPipeline *out, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t spec[4] = {8u * (uint32_t)(i + 1), 1, 0, 1};
        eg_pipeline_batch_add(b, &out[i], "norm", 4, 1u << 3, 0, 64, spec, 4);
    }
}

static void builds_every_request(void) {
    enum { N = 6 };
    EgPipeline norms[N], rope;
    memset(norms, 0xA5, sizeof norms); /* poisoned: the build must set every field */
    memset(&rope, 0xA5, sizeof rope);
    EgPipelineBatch b;
    eg_pipeline_batch_init(&b, 0);
    queue_norms(&b, norms, N);
    eg_pipeline_batch_add(&b, &rope, "rope", 2, 1u << 0, 0, 32, NULL, 0);
    CHECK(b.n == N + 1, "queued %d of %d", b.n, N + 1);
    EgError err = {0};
    if (eg_pipeline_batch_build(&g_vk, &b, &err) != 0) {
        CHECK(0, "build: %s", err.msg);
        return;
    }
    for (int i = 0; i < N; i++) {
        CHECK(norms[i].pipeline != VK_NULL_HANDLE && norms[i].layout != VK_NULL_HANDLE &&
                  norms[i].set_layout != VK_NULL_HANDLE,
              "norm %d not built", i);
        CHECK(strcmp(norms[i].name, "norm") == 0 && norms[i].n_bindings == 4 &&
                  norms[i].write_mask == 1u << 3 && norms[i].texel_mask == 0 &&
                  norms[i].push_size == 64,
              "norm %d: its description was not kept", i);
        for (int j = 0; j < i; j++)
            CHECK(norms[i].pipeline != norms[j].pipeline, "norms %d and %d share a pipeline", i, j);
    }
    CHECK(rope.pipeline != VK_NULL_HANDLE && strcmp(rope.name, "rope") == 0 &&
              rope.n_bindings == 2 && rope.write_mask == 1u && rope.push_size == 32,
          "rope not built as asked");
    for (int i = 0; i < N; i++)
        eg_pipeline_destroy(&g_vk, &norms[i]);
    eg_pipeline_destroy(&g_vk, &rope);
    CHECK(is_empty(&rope), "destroy left handles behind");
}

static void a_failure_builds_nothing(void) {
    enum { N = 5 };
    EgPipeline norms[N], missing, too_wide;
    EgPipelineBatch b;
    eg_pipeline_batch_init(&b, 0);
    queue_norms(&b, norms, 2);
    eg_pipeline_batch_add(&b, &missing, "no_such_shader", 2, 1u, 0, 16, NULL, 0);
    queue_norms(&b, norms + 2, N - 2);
    eg_pipeline_batch_add(&b, &too_wide, "rope", EG_MAX_BINDINGS + 1, 1u, 0, 16, NULL, 0);
    EgError err = {0};
    CHECK(eg_pipeline_batch_build(&g_vk, &b, &err) == -1, "a batch with a missing shader built");
    CHECK(strstr(err.msg, "no_such_shader") != NULL, "the error names another request: %s",
          err.msg);
    for (int i = 0; i < N; i++)
        CHECK(is_empty(&norms[i]), "norm %d stayed built after the batch failed", i);
    CHECK(is_empty(&missing) && is_empty(&too_wide), "a failed request left handles");
}

static void an_overfull_batch_fails(void) {
    static EgPipeline many[EG_PIPELINE_BATCH_MAX + 1];
    memset(many, 0, sizeof many);
    EgPipelineBatch b;
    eg_pipeline_batch_init(&b, 0);
    for (int i = 0; i <= EG_PIPELINE_BATCH_MAX; i++)
        eg_pipeline_batch_add(&b, &many[i], "rope", 2, 1u, 0, 32, NULL, 0);
    EgError err = {0};
    CHECK(eg_pipeline_batch_build(&g_vk, &b, &err) == -1, "an overfull batch built");
    CHECK(strstr(err.msg, "more than") != NULL, "unclear error: %s", err.msg);
    for (int i = 0; i <= EG_PIPELINE_BATCH_MAX; i++)
        CHECK(is_empty(&many[i]), "pipeline %d of an overfull batch was built", i);

    uint32_t spec[EG_MAX_SPEC + 1] = {0};
    EgPipeline one = {0};
    eg_pipeline_batch_init(&b, 0);
    eg_pipeline_batch_add(&b, &one, "norm", 4, 1u << 3, 0, 64, spec, EG_MAX_SPEC + 1);
    CHECK(eg_pipeline_batch_build(&g_vk, &b, &err) == -1 && is_empty(&one),
          "a request with too many constants built");
}

static void an_empty_batch_builds(void) {
    EgPipelineBatch b;
    eg_pipeline_batch_init(&b, 0);
    EgError err = {0};
    CHECK(eg_pipeline_batch_build(&g_vk, &b, &err) == 0, "an empty batch failed: %s", err.msg);
}

int main(void) {
    EgError err = {0};
    REQUIRE(eg_vk_create(&g_vk, NULL, &err) == 0, "eg_vk_create: %s", err.msg);
    builds_every_request();
    a_failure_builds_nothing();
    an_overfull_batch_fails();
    an_empty_batch_builds();
    eg_vk_destroy(&g_vk);
    CHECK(eg_vk_validation_message_count() == 0, "the validation layer reported %d messages",
          eg_vk_validation_message_count());
    return test_finish();
}
