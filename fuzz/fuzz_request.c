/* Fuzz target: a GenerateRequest as it arrives off the wire, decoded and checked the way the
 * server does before the engine runs anything: eg_proto_request_decode (wire limits, unpacking,
 * proto3 defaults), then the engine's request assembly (UTF-8, parts, image count, template
 * layout, text limits) and prompt building with the demo model's tokenizer and template. No
 * device is needed: images are not decoded here (fuzz_image does that).
 *
 * Checked promises: a decoded request mirrors its message (same parts, examples and stops,
 * max_new_tokens never 0 after defaults); a refused one leaves nothing allocated (LSan);
 * an assembled prompt has as many image placeholders as the request has images. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_internal.h"
#include "fuzz/fuzz_engine.h"
#include "language/template.h"
#include "language/tokenizer.h"
#include "server/proto_request.h"

static void fail(const char *what) {
    fprintf(stderr, "fuzz_request: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    EgEngine *e = fuzz_engine("fuzz_request");
    EgProtoRequest r;
    EgError err = {0};
    EgStatus st = eg_proto_request_decode(data, size, 128, &r, &err);
    if (st != EG_STATUS_OK) {
        if (!err.msg[0]) fail("a refused request without a message");
        return 0;
    }
    const Egret__V1__GenerateRequest *m = r.msg;
    if (r.req.n_parts != m->n_parts || r.req.n_examples != m->n_examples ||
        r.req.gen.n_stop != m->n_stop)
        fail("the decoded request does not mirror its message");
    if (r.req.gen.max_new_tokens == 0) fail("max_new_tokens 0 after defaults");
    if (m->n_parts + m->n_examples > EG_PROTO_MAX_PARTS || m->n_stop > EG_PROTO_MAX_STOPS)
        fail("a request over the wire limits was decoded");
    size_t n_images = m->n_examples;
    for (size_t i = 0; i < r.req.n_parts; i++)
        n_images += r.req.parts[i].is_image;
    Assembled a = {0};
    if (eg_engine_assemble(e, &r.req, &a, &err) == EG_STATUS_OK) {
        size_t placeholders = 0;
        for (size_t i = 0; i < a.list.n; i++)
            placeholders += a.list.parts[i].kind == EG_PART_IMAGE;
        if (placeholders != a.n_images || a.n_images != n_images)
            fail("the prompt's image placeholders do not match the request's images");
        EgPromptOptions po = eg_prompt_default_options();
        EgPrompt prompt = {0};
        if (eg_prompt_build(e->tok, a.list.parts, a.list.n, &po, &prompt, &err) == 0 &&
            prompt.n_tokens == 0)
            fail("a built prompt with no tokens");
        eg_prompt_free(&prompt);
    } else if (!err.msg[0]) {
        fail("a refused request without a message");
    }
    eg_part_list_free(&a.list);
    free(a.images);
    free(a.image_lens);
    eg_proto_request_free(&r);
    return 0;
}
