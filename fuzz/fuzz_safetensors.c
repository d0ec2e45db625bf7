/* Fuzz target: safetensors bytes -> eg_tensors_open_memory (the header and tensor-table
 * validation eg_tensors_open_file runs on the mmapped file). Every tensor of an accepted file is
 * then looked up by name, shape-checked and converted (floats to f32 and f16, whole and a sub-
 * range; integers to i64): the validation promised that its data lies inside the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "runtime/safetensors.h"

static void fail(const char *what, const char *name) {
    fprintf(stderr, "fuzz_safetensors: %s (tensor '%s')\n", what, name);
    abort();
}

static int is_float(EgDType dt) {
    return dt == EG_DT_F32 || dt == EG_DT_F16 || dt == EG_DT_BF16 || dt == EG_DT_F64;
}

static void convert(const EgTensorView *t) {
    EgError err;
    size_t n = t->numel > 0 ? (size_t)t->numel : 1;
    if (is_float(t->dtype)) {
        float *f = malloc(n * sizeof *f);
        uint16_t *h = malloc(n * sizeof *h);
        if (!f || !h) fail("out of memory", t->name);
        if (eg_tensor_to_f32(t, f, &err) != 0 || eg_tensor_to_f16(t, h, &err) != 0)
            fail("float conversion failed", t->name);
        int64_t first = t->numel / 3, count = t->numel - first - t->numel / 4;
        if (eg_tensor_range_to_f32(t, first, count, f, &err) != 0 ||
            eg_tensor_range_to_f16(t, first, count, h, &err) != 0)
            fail("range conversion failed", t->name);
        if (eg_tensor_range_to_f32(t, t->numel, 1, f, &err) == 0)
            fail("a range past the end was converted", t->name);
        if (eg_tensor_to_i64(t, (int64_t *)f, &err) == 0) fail("float converted to i64", t->name);
        free(f);
        free(h);
    } else {
        int64_t *v = malloc(n * sizeof *v);
        if (!v) fail("out of memory", t->name);
        if (eg_tensor_to_i64(t, v, &err) != 0) fail("integer conversion failed", t->name);
        if (eg_tensor_to_f32(t, (float *)v, &err) == 0) fail("integer converted to f32", t->name);
        free(v);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    EgError err;
    EgTensorFile *f = eg_tensors_open_memory(data, size, "fuzz.safetensors", &err);
    if (!f) return 0;
    const uint8_t *end = data + size;
    for (int i = 0; i < eg_tensors_count(f); i++) {
        const EgTensorView *t = eg_tensors_at(f, i);
        if (!t || !t->name) fail("no view", "?");
        if (eg_tensors_find(f, t->name) != t) fail("lookup by name finds another view", t->name);
        if (t->nbytes != (size_t)t->numel * eg_dtype_size(t->dtype))
            fail("nbytes does not match the shape", t->name);
        if (t->nbytes && ((const uint8_t *)t->data < data ||
                          (size_t)(end - (const uint8_t *)t->data) < t->nbytes))
            fail("data outside the input", t->name);
        const EgTensorView *same = NULL;
        if (eg_tensors_expect(f, t->name, t->ndim, t->shape, &same, &err) != 0 || same != t)
            fail("its own shape does not match", t->name);
        convert(t);
    }
    if (eg_tensors_at(f, eg_tensors_count(f)) != NULL) fail("view past the end", "-");
    eg_tensors_close(f);
    return 0;
}
