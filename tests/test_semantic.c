/* Are the demo model's answers right when it is served? Freshly drawn shapes-world scenes
 * (tools/shapes_world.h, the C port of the generator the model was trained on) go through the
 * gRPC service, and the answers are compared with the scenes' true ones:
 *   - 100 single-object scenes asked for their colour with two example pairs: at least 95 right
 *   - 100 asked for their shape the same way: at least 90 right
 *   - 50 scenes of 1-3 objects captioned with no examples: at least 35 exactly right
 * (the model's own held-out accuracy is 100%, 95% and 76-86%). Each query has its own freshly
 * drawn examples. The scenes come from EGRET_SEMANTIC_SEED (default 2026, printed): a fixed
 * default keeps CI deterministic, other seeds draw other scenes. */
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "tools/grpc_client.h"
#include "tools/shapes_world.h"

typedef struct Drawn {
    EgShapesScene scene;
    uint8_t *png;
    size_t png_len;
} Drawn;

static int draw(EgShapesRng *rng, int n_objects, Drawn *d) {
    EgError err = {0};
    if (eg_shapes_sample(rng, n_objects, &d->scene)) return -1;
    int rc = eg_shapes_render_png(&d->scene, &d->png, &d->png_len, &err);
    CHECK(rc == 0, "png: %s", err.msg);
    return rc;
}

/* Asks `n` questions of one task and returns how many answers were exactly right. */
static int ask(EgClient *client, EgShapesRng *rng, EgShapesTask task, int shots, int n,
               int n_objects) {
    int right = 0;
    for (int q = 0; q < n; q++) {
        Drawn d[3];
        memset(d, 0, sizeof d);
        char truth[3][EG_SHAPES_TEXT_MAX];
        int ok = 1;
        for (int i = 0; i <= shots; i++)
            ok = ok && draw(rng, n_objects, &d[i]) == 0 &&
                 eg_shapes_answer(&d[i].scene, task, truth[i], sizeof truth[i]) >= 0;
        if (!ok) {
            CHECK(0, "could not draw scene %d", q);
            break;
        }
        EgRequestExample ex[2];
        for (int i = 0; i < shots; i++)
            ex[i] = (EgRequestExample){d[i].png, d[i].png_len, truth[i], strlen(truth[i])};
        EgRequestPart query = {.is_image = 1, .image = d[shots].png, .image_len = d[shots].png_len};
        EgRequest req = {.parts = &query,
                         .n_parts = 1,
                         .examples = ex,
                         .n_examples = (size_t)shots,
                         .use_template = 1,
                         .gen = {.max_new_tokens = 32}};
        eg_sampling_params_default(&req.gen.sampling);
        EgClientAnswer a;
        EgCallStatus st;
        EgError err = {0};
        int rc = eg_client_generate(client, &req, q % 2, 0, NULL, NULL, &a, &st, &err);
        CHECK(rc == 0 && st.code == GRPC_STATUS_OK, "%s %d: %s%s",
              eg_shapes_task_name(task), q, err.msg, st.message);
        if (rc == 0 && st.code == GRPC_STATUS_OK && strcmp(a.text, truth[shots]) == 0)
            right++;
        else if (rc == 0)
            printf("  %s %d: answered '%s', truth '%s'\n", eg_shapes_task_name(task), q, a.text,
                   truth[shots]);
        eg_client_answer_free(&a);
        for (int i = 0; i <= shots; i++)
            free(d[i].png);
    }
    return right;
}

int main(void) {
    const char *env = getenv("EGRET_SEMANTIC_SEED");
    uint64_t seed = env && *env ? strtoull(env, NULL, 10) : 2026;
    printf("scenes from EGRET_SEMANTIC_SEED=%llu\n", (unsigned long long)seed);
    EgError err = {0};
    EgEngine *engine = eg_engine_open(test_model_path("shapes-idefics"), NULL, &err);
    REQUIRE(engine != NULL, "open: %s", err.msg);
    TestServer server;
    REQUIRE(test_server_start(&server, engine, (EgServerOptions){0}, "semantic") == 0, "server");
    EgClient *client = eg_client_connect(server.addr, NULL, &err);
    REQUIRE(client != NULL, "client: %s", err.msg);

    EgShapesRng rng;
    eg_shapes_rng_seed(&rng, seed);
    int colour = ask(client, &rng, EG_SHAPES_TASK_COLOR, 2, 100, 1);
    printf("colour, 2 examples: %d/100 right\n", colour);
    CHECK(colour >= 95, "colour: %d/100 right, want at least 95", colour);
    int shape = ask(client, &rng, EG_SHAPES_TASK_SHAPE, 2, 100, 1);
    printf("shape, 2 examples: %d/100 right\n", shape);
    CHECK(shape >= 90, "shape: %d/100 right, want at least 90", shape);
    int caption = ask(client, &rng, EG_SHAPES_TASK_CAPTION, 0, 50, 0);
    printf("captions, no examples: %d/50 exactly right\n", caption);
    CHECK(caption >= 35, "captions: %d/50 right, want at least 35", caption);

    eg_client_close(client);
    free(test_server_stop(&server));
    eg_engine_close(engine);
    return test_finish();
}
