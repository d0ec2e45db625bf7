/* Fuzz target: an example set file as --example-sets-dir holds it (server/example_set_store.h):
 * the header, then a CreateExampleSetRequest decoded as the server decodes one off the wire
 * (eg_proto_example_set_decode), then the engine's checks of the pairs as a request's examples
 * with the demo model's tokenizer and template. No device is needed.
 *
 * Checked promises: a decoded set mirrors its message (as many pairs, texts without NUL); it
 * encodes back to a message that decodes to the same pairs (what the store writes is what it
 * reads); a refused file says why and leaves nothing allocated (LSan). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_internal.h"
#include "fuzz/fuzz_engine.h"
#include "language/template.h"
#include "language/tokenizer.h"
#include "server/example_set_store.h"
#include "server/proto_request.h"

static void fail(const char *what) {
    fprintf(stderr, "fuzz_example_set: %s\n", what);
    abort();
}

static int same_pairs(const EgProtoExampleSet *a, const EgProtoExampleSet *b) {
    if (a->n_pairs != b->n_pairs || strcmp(a->template_name, b->template_name) != 0) return 0;
    for (size_t i = 0; i < a->n_pairs; i++) {
        const EgRequestExample *x = &a->pairs[i], *y = &b->pairs[i];
        if (x->image_len != y->image_len || x->text_len != y->text_len ||
            (x->image_len && memcmp(x->image, y->image, x->image_len)) ||
            memcmp(x->text, y->text, x->text_len))
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    EgEngine *e = fuzz_engine("fuzz_example_set");
    const uint8_t *msg;
    size_t len;
    EgError err = {0};
    if (eg_example_set_file_parse(data, size, &msg, &len, &err)) {
        if (!err.msg[0]) fail("a refused file without a message");
        return 0;
    }
    if (msg < data || msg + len != data + size) fail("the message lies outside the file");
    EgProtoExampleSet set;
    if (eg_proto_example_set_decode(msg, len, &set, &err) != EG_STATUS_OK) {
        if (!err.msg[0]) fail("a refused set without a message");
        return 0;
    }
    if (set.n_pairs != set.msg->n_examples) fail("the decoded set does not mirror its message");
    /* written back, it reads the same */
    uint8_t *again = NULL;
    size_t again_len = 0;
    if (eg_proto_example_set_encode(set.pairs, set.n_pairs, set.template_name, &again, &again_len,
                                    &err) == 0) {
        EgProtoExampleSet reread;
        if (eg_proto_example_set_decode(again, again_len, &reread, &err) != EG_STATUS_OK)
            fail("an encoded set does not decode");
        if (!same_pairs(&set, &reread)) fail("an encoded set decodes to other pairs");
        eg_proto_example_set_free(&reread);
        free(again);
    }
    /* the engine's checks, with the first pair's image standing in for the query */
    if (set.n_pairs) {
        EgRequestPart query = {
            .is_image = 1, .image = set.pairs[0].image, .image_len = set.pairs[0].image_len};
        EgRequest req = {
            .parts = &query, .n_parts = 1, .examples = set.pairs, .n_examples = set.n_pairs};
        Assembled a = {0};
        if (eg_engine_assemble(e, &req, &a, &err) == EG_STATUS_OK) {
            if (a.n_images != set.n_pairs + 1) fail("the prompt's images do not match the set's");
        } else if (!err.msg[0]) {
            fail("refused pairs without a message");
        }
        eg_part_list_free(&a.list);
        free(a.images);
        free(a.image_lens);
    }
    eg_proto_example_set_free(&set);
    return 0;
}
