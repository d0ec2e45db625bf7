/* Fuzz target: model folder JSON. The same bytes go to both parsers, so one corpus of config.json
 * and egret_template.json files serves both: eg_model_config_parse (config.json) and
 * eg_template_parse (egret_template.json). An accepted config must hold what the parser's
 * validation promised (positive sizes, heads dividing the width); an accepted template lays out a
 * two-example prompt with and without query text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "families/idefics/model_config.h"
#include "language/template.h"

static void fail(const char *what) {
    fprintf(stderr, "fuzz_config: %s\n", what);
    abort();
}

static void check_config(const EgModelConfig *c) {
    if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->num_hidden_layers <= 0 ||
        c->num_attention_heads <= 0 || c->intermediate_size <= 0)
        fail("accepted a config with a non-positive size");
    if (c->hidden_size % c->num_attention_heads != 0) fail("heads do not divide hidden_size");
    if (c->vision.embed_dim <= 0 || c->vision.num_attention_heads <= 0 ||
        c->vision.embed_dim % c->vision.num_attention_heads != 0 || c->vision.patch_size <= 0 ||
        c->vision.image_size < c->vision.patch_size)
        fail("accepted a config with an inconsistent vision encoder");
    if (memchr(c->dtype, 0, sizeof c->dtype) == NULL) fail("dtype is not NUL-terminated");
}

static void check_template(const EgTemplate *t) {
    static const EgFewShotExample examples[2] = {{"a red circle.", 13}, {"", 0}};
    EgError err;
    for (int with_query = 0; with_query < 2; with_query++) {
        EgPartList parts;
        if (eg_template_build(t, examples, 2, with_query ? "a" : NULL, with_query, &parts, &err) !=
            0) {
            /* query text for a query without {text} is refused (template.h); nothing else is */
            if (with_query && strstr(err.msg, "has no {text}")) continue;
            fail("an accepted template failed to build a prompt");
        }
        size_t images = 0;
        for (size_t i = 0; i < parts.n; i++) {
            if (parts.parts[i].kind == EG_PART_IMAGE)
                images++;
            else if (!parts.parts[i].text)
                fail("text part without text");
        }
        if (images != 3) fail("two examples and a query did not give three images");
        eg_part_list_free(&parts);
    }
    for (size_t i = 0; i < eg_template_stop_count(t); i++)
        if (!eg_template_stop(t, i) || !eg_template_stop(t, i)[0]) fail("empty stop string");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *json = (const char *)data;
    EgError err;
    EgModelConfig cfg;
    if (eg_model_config_parse(json, size, "fuzz/config.json", &cfg, &err) == 0) check_config(&cfg);
    EgTemplate *t = eg_template_parse(json, size, "fuzz/egret_template.json", &err);
    if (t) {
        check_template(t);
        eg_template_free(t);
    }
    return 0;
}
