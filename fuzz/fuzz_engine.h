/* The engine the request-shaped fuzz targets check against: the demo model's tokenizer and
 * template with the server's default limits, and no model on a device (only request checks,
 * assembly and prompt building run). Made once per process; `target` names the fuzz target in
 * the message when it cannot be made. */
#ifndef EGRET_FUZZ_ENGINE_H
#define EGRET_FUZZ_ENGINE_H

#include <stdio.h>
#include <stdlib.h>

#include "engine/engine_internal.h"
#include "language/template.h"
#include "language/tokenizer.h"

static inline EgEngine *fuzz_engine(const char *target) {
    static EgEngine e;
    static int ready;
    if (!ready) {
        EgError err;
        const char *dir = EGRET_SOURCE_DIR "/models/shapes-idefics";
        e.tok = eg_tokenizer_load(EGRET_SOURCE_DIR "/models/shapes-idefics/tokenizer.json", &err);
        e.tmpl = e.tok ? eg_template_for_model(dir, &err) : NULL;
        if (!e.tmpl) {
            fprintf(stderr, "%s: %s\n", target, err.msg);
            abort();
        }
        e.limits.max_images = 16;
        e.limits.context_length = 2048;
        e.limits.max_new_tokens = 1024;
        eg_image_limits_default(&e.limits.image);
        ready = 1;
    }
    return &e;
}

#endif
