/* Quantized checkpoint folders (egret quantize, docs/quantization.md): tiny-idefics-a written as
 * q4 and q8 loads without quantizing and gives logits bit-identical to quantizing while loading
 * (the same bytes reach the device), through one file and through shards with an index, and so
 * does tiny-mllama-a as q4; the tensor visitor enumerates what the loaders read without a
 * device; a failed quantize leaves no folder; and a damaged folder is refused naming the file
 * and the tensor, before any device is opened: an unknown format, a newer format version, a
 * truncated file, a tensor whose bytes do not match its rows and columns, a scale that is NaN or
 * infinite, a --quant other than the folder's. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "families/family.h"
#include "families/idefics/sequence.h"
#include "runtime/half.h"
#include "runtime/quant_file.h"
#include "test_util.h"
#include "tools/quantize_folder.h"

/* A device the loaders cannot open: a refusal that names the file, not the device, came from
 * the check that runs before any device is touched. */
#define NO_DEVICE "no-such-device-for-this-test"

static char work[256]; /* this run's temporary folder */

static const char *tmp_path(const char *name) {
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", work, name);
    return p;
}

/* A folder `name` holding config.json of tiny-idefics-a and the given model.safetensors. */
static const char *folder_with(const char *name, const unsigned char *st, size_t n) {
    const char *dir = tmp_path(name);
    char path[600];
    mkdir(dir, 0755);
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", test_data_path("tiny-idefics-a"));
    unsigned char *cfg = test_read_file(path, &len);
    snprintf(path, sizeof path, "%s/config.json", dir);
    MUST(cfg && test_write_file(path, cfg, len) == 0, "writing %s", path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    MUST(test_write_file(path, st, n) == 0, "writing %s", path);
    free(cfg);
    return dir;
}

/* The logits of golden row 0 (three images and text) and of the text-only prompt, on a model
 * loaded from dir with quant (fp32 activations). NULL if the load failed (err says why). */
static float *golden_logits(const char *dir, EgWeightFormat quant, size_t *n_out,
                            uint64_t *weight_bytes, EgError *err) {
    EgModelOptions opt = {.fp32 = 1, .quant = quant};
    EgModel *m = eg_model_load(dir, &opt, err);
    if (!m) return NULL;
    *weight_bytes = m->weights.bytes_used;
    char gpath[600];
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", test_data_path("tiny-idefics-a"));
    EgTensorFile *g = eg_tensors_open_file(gpath, err);
    MUST(g, "golden: %s", err->msg);
    const EgTensorView *ids_view, *text_view;
    int64_t *ids = test_tensor_i64(g, "input_ids", NULL, &ids_view);
    int64_t *mask = test_tensor_i64(g, "attention_mask", NULL, NULL);
    int64_t *img_mask = test_tensor_i64(g, "image_attention_mask", NULL, NULL);
    int64_t *text = test_tensor_i64(g, "textonly_input_ids", NULL, &text_view);
    size_t n_pix;
    float *pix = test_tensor_f32(g, "pixel_values", &n_pix, NULL);
    uint32_t T = (uint32_t)ids_view->shape[1], N = 3, V = m->vocab, start = 0;
    uint32_t tn = (uint32_t)text_view->shape[1];
    while (start < T && mask[start] == 0)
        start++;
    uint32_t n = T - start;
    int32_t row_ids[64], row_img[64], text_ids[64];
    MUST(n <= 64 && tn <= 64, "golden prompt of %u tokens", n);
    for (uint32_t t = 0; t < n; t++) {
        row_ids[t] = (int32_t)ids[start + t];
        row_img[t] = -1;
        for (uint32_t k = 0; k < N; k++)
            if (img_mask[(size_t)(start + t) * N + k]) row_img[t] = (int32_t)k;
    }
    for (uint32_t t = 0; t < tn; t++)
        text_ids[t] = (int32_t)text[t];
    float *out = malloc((size_t)(n + tn) * V * sizeof *out);
    EgSequence *s = eg_sequence_new(m, n, err), *s2 = s ? eg_sequence_new(m, tn, err) : NULL;
    int rc = s2 && eg_sequence_set_images(s, pix, N, err) == 0 &&
                     eg_sequence_forward(s, row_ids, row_img, n, out, 1, err) == 0 &&
                     eg_sequence_forward(s2, text_ids, NULL, tn, out + (size_t)n * V, 1, err) == 0
                 ? 0
                 : -1;
    eg_sequence_free(s), eg_sequence_free(s2);
    eg_tensors_close(g);
    free(ids), free(mask), free(img_mask), free(text), free(pix);
    eg_model_free(m);
    if (rc) {
        free(out);
        return NULL;
    }
    *n_out = (size_t)(n + tn) * V;
    return out;
}

/* Quantize once, load fast: the folder's logits equal quantize-on-load's bit for bit. */
static void test_same_as_on_load(EgWeightFormat f, uint64_t shard_bytes, const char *out_name) {
    EgError err = {0};
    const char *name = eg_weight_format_name(f), *out = tmp_path(out_name);
    EgQuantizeOptions qo = {.format = f, .shard_bytes = shard_bytes};
    MUST(eg_quantize_folder(test_data_path("tiny-idefics-a"), out, &qo, &err) == 0,
         "quantize %s: %s", name, err.msg);
    char index[600];
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", out);
    CHECK((access(index, F_OK) == 0) == (shard_bytes != 0), "%s: an index exactly when sharded",
          name);
    size_t n_ref = 0, n = 0;
    uint64_t bytes_ref = 0, bytes = 0;
    float *ref = golden_logits(test_data_path("tiny-idefics-a"), f, &n_ref, &bytes_ref, &err);
    MUST(ref, "quantize-on-load %s: %s", name, err.msg);
    float *got = golden_logits(out, EG_WEIGHTS_DENSE, &n, &bytes, &err);
    MUST(got, "loading the %s folder: %s", name, err.msg);
    CHECK(n == n_ref && !memcmp(got, ref, n * sizeof *got),
          "%s: the quantized folder's logits equal quantize-on-load's bit for bit", name);
    CHECK(bytes == bytes_ref, "%s: weight bytes on the device %llu, on-load %llu", name,
          (unsigned long long)bytes, (unsigned long long)bytes_ref);
    int finite = 1;
    for (size_t i = 0; i < n; i++)
        finite &= isfinite(got[i]) != 0;
    CHECK(finite, "%s logits finite", name);
    free(got), free(ref);
    /* --quant repeating the folder's format loads the same; leaving it out takes the folder's */
    EgTensorFile *tf = eg_tensors_open_dir(out, &err);
    EgWeightFormat same = EG_WEIGHTS_DENSE, none = EG_WEIGHTS_DENSE;
    CHECK(tf && eg_weight_loader_quant(tf, f, &same, &err) == 0 && same == f &&
              eg_weight_loader_quant(tf, EG_WEIGHTS_DENSE, &none, &err) == 0 && none == f,
          "%s folder loads as %s with --quant %s or none: %s", name, name, name, err.msg);
    eg_tensors_close(tf);
}

/* Golden sample 0 of tiny-mllama-a (images and text) through the family interface, loaded from
 * dir with quant (fp32 activations): every position's logits, or NULL (err says why). */
static float *mllama_logits(const char *dir, EgWeightFormat quant, size_t *n_out, EgError *err) {
    EgModelOptions opt = {.fp32 = 1, .quant = quant};
    EgFamilyModel *m = eg_family_open(dir, &opt, err);
    if (!m) return NULL;
    EgTensorFile *g =
        eg_tensors_open_file(test_data_path("mllama/tiny-mllama-a/golden.safetensors"), err);
    MUST(g, "mllama golden: %s", err->msg);
    const EgTensorView *ids_v, *px_v;
    int64_t *ids = test_tensor_i64(g, "input_ids", NULL, &ids_v);
    int64_t *mask = test_tensor_i64(g, "attention_mask", NULL, NULL);
    int64_t *ratio = test_tensor_i64(g, "aspect_ratio_ids", NULL, NULL);
    int64_t *tiles = test_tensor_i64(g, "num_tiles", NULL, NULL);
    float *pix = test_tensor_f32(g, "pixel_values", NULL, &px_v);
    uint32_t T = (uint32_t)ids_v->shape[1], N = (uint32_t)px_v->shape[1], n = 0, n_images = 0;
    size_t px = (size_t)px_v->shape[2] * 3 * px_v->shape[4] * px_v->shape[4];
    size_t per = m->info.image_floats, V = m->info.vocab;
    MUST(per == px + 2 && T <= 256, "mllama image layout %zu floats, %zu expected", per, px + 2);
    int32_t tok[256], img[256];
    for (uint32_t t = 0; t < T; t++)
        if (mask[t]) tok[n++] = (int32_t)ids[t];
    float *images = calloc(N * per, sizeof *images);
    for (uint32_t i = 0; i < N; i++) {
        if (ratio[i] == 0) continue; /* a padding image */
        float *dst = images + n_images++ * per;
        memcpy(dst, pix + i * px, px * sizeof *dst);
        dst[px] = (float)ratio[i];
        dst[px + 1] = (float)tiles[i];
    }
    eg_family_image_index(m, tok, n, (int)n_images, img);
    float *out = malloc((size_t)n * V * sizeof *out);
    EgFamilySeq *s = eg_fseq_new(m, n, err);
    int rc = s && eg_fseq_set_images(s, images, n_images, err) == 0 &&
                     eg_fseq_forward(s, tok, img, n, out, 1, err) == 0
                 ? 0
                 : -1;
    eg_fseq_free(s);
    eg_tensors_close(g);
    free(ids), free(mask), free(ratio), free(tiles), free(pix), free(images);
    eg_family_close(m);
    if (rc) {
        free(out);
        return NULL;
    }
    *n_out = (size_t)n * V;
    return out;
}

/* The same for mllama: its q4 folder's logits are --quant q4's, bit for bit. */
static void test_mllama_same_as_on_load(void) {
    EgError err = {0};
    const char *src = test_data_path("mllama/tiny-mllama-a"), *out = tmp_path("mllama-q4");
    EgQuantizeOptions qo = {.format = EG_WEIGHTS_Q4};
    MUST(eg_quantize_folder(src, out, &qo, &err) == 0, "quantize tiny-mllama-a: %s", err.msg);
    size_t n_ref = 0, n = 0;
    float *ref = mllama_logits(src, EG_WEIGHTS_Q4, &n_ref, &err);
    MUST(ref, "tiny-mllama-a --quant q4: %s", err.msg);
    float *got = mllama_logits(out, EG_WEIGHTS_DENSE, &n, &err);
    MUST(got, "loading tiny-mllama-a's q4 folder: %s", err.msg);
    CHECK(n == n_ref && n > 0 && !memcmp(got, ref, n * sizeof *got),
          "mllama: the q4 folder's logits equal quantize-on-load's bit for bit");
    free(got), free(ref);
}

typedef struct {
    int dense, quantized, other_format;
    EgWeightFormat want;
    int fail_at; /* > 0: the visitor stops at that tensor */
} Count;

static int count_visit(void *ctx, const EgTensorView *t, EgWeightFormat format, EgError *err) {
    Count *c = ctx;
    if (format == EG_WEIGHTS_DENSE)
        c->dense++;
    else if (format == c->want)
        c->quantized++;
    else
        c->other_format++;
    if (c->fail_at && c->dense + c->quantized == c->fail_at)
        return eg_fail(err, "visitor stops at %s", t->name);
    return 0;
}

/* The visitor sees every tensor a load reads, with its format, and needs no device. */
static void test_visitor(void) {
    EgError err = {0};
    const char *fam = NULL;
    EgModelOptions opt = {.quant = EG_WEIGHTS_Q4, .device = NO_DEVICE};
    Count c = {.want = EG_WEIGHTS_Q4};
    CHECK(eg_family_visit_tensors(test_data_path("tiny-idefics-a"), &opt, count_visit, &c, &fam,
                                  &err) == 0,
          "visit tiny-idefics-a: %s", err.msg);
    /* every projection of the vision encoder, perceiver, decoder and cross layers; the
     * embeddings, patch embedding, norms, biases, gates, latents dense (of the file's 131, the
     * tied LM head's two tensors are not read) */
    printf("tiny-idefics-a: %d tensors quantized, %d dense\n", c.quantized, c.dense);
    CHECK(fam && !strcmp(fam, "idefics"), "family %s", fam ? fam : "?");
    CHECK(c.quantized == 66 && c.dense == 63 && c.other_format == 0,
          "q4 visit: %d quantized, %d dense, %d other", c.quantized, c.dense, c.other_format);
    Count stop = {.want = EG_WEIGHTS_Q4, .fail_at = 3};
    CHECK(eg_family_visit_tensors(test_data_path("tiny-idefics-a"), &opt, count_visit, &stop, NULL,
                                  &err) != 0 &&
              strstr(err.msg, "visitor stops at"),
          "a visitor's error stops the walk: %s", err.msg);

    /* mllama: its vision and text loaders' tensors, the projections q4 */
    Count m = {.want = EG_WEIGHTS_Q4};
    CHECK(eg_family_visit_tensors(test_data_path("mllama/tiny-mllama-a"), &opt, count_visit, &m,
                                  &fam, &err) == 0 &&
              m.dense > 0 && m.quantized > 0 && m.other_format == 0 && !strcmp(fam, "mllama"),
          "visit tiny-mllama-a: %d q4, %d dense: %s", m.quantized, m.dense, err.msg);
    printf("tiny-mllama-a: %d tensors quantized, %d dense\n", m.quantized, m.dense);
}

/* The bytes of the q4 folder's model.safetensors, and where tensor `name`'s data starts. */
static unsigned char *q4_file(size_t *len, const char *name, size_t *data_at) {
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp_path("tiny-q4"));
    unsigned char *b = test_read_file(path, len);
    MUST(b, "reading %s", path);
    if (name) {
        EgError err = {0};
        EgTensorFile *tf = eg_tensors_open_memory(b, *len, "q4", &err);
        const EgTensorView *t = tf ? eg_tensors_find(tf, name) : NULL;
        MUST(t && t->quant == EG_WEIGHTS_Q4, "%s quantized in the q4 file: %s", name, err.msg);
        *data_at = (size_t)((const unsigned char *)t->data - b);
        eg_tensors_close(tf);
    }
    return b;
}

/* Replaces the first `from` in the header (same length: the header keeps its size). */
static void edit_header(unsigned char *b, const char *from, const char *to) {
    size_t n = strlen(from);
    uint64_t hlen;
    memcpy(&hlen, b, 8);
    for (size_t i = 8; i + n <= 8 + hlen; i++)
        if (!memcmp(b + i, from, n)) {
            memcpy(b + i, to, n);
            return;
        }
    MUST(0, "'%s' not in the header", from);
}

/* A load of dir (and a visit) is refused before any device, naming each of `needles`. */
static void expect_refused(const char *what, const char *dir, EgWeightFormat quant,
                           const char *const *needles) {
    EgError err = {0};
    EgModelOptions opt = {.fp32 = 1, .quant = quant, .device = NO_DEVICE};
    EgModel *m = eg_model_load(dir, &opt, &err);
    int named = m == NULL && !strstr(err.msg, NO_DEVICE);
    for (const char *const *n = needles; *n; n++)
        named &= strstr(err.msg, *n) != NULL;
    CHECK(named, "%s: refused before the device, naming the file and tensor: %s", what, err.msg);
    eg_model_free(m);
    printf("%s: %s\n", what, err.msg);
}

static void test_refusals(void) {
    const char *tensor = "model.gated_cross_attn_layers.0.cross_attn.o_proj.weight";
    size_t len, at;
    unsigned char *b;

    b = q4_file(&len, NULL, NULL);
    edit_header(b, "\"q4 [64, 64]\"", "\"q3 [64, 64]\"");
    const char *unknown[] = {"model.safetensors", "unknown quantized format 'q3'", NULL};
    expect_refused("unknown format", folder_with("bad-format", b, len), 0, unknown);
    free(b);

    b = q4_file(&len, NULL, NULL);
    edit_header(b, "\"egret.format_version\":\"1\"", "\"egret.format_version\":\"7\"");
    const char *newer[] = {"model.safetensors", "newer Egret", "version 7", NULL};
    expect_refused("newer version", folder_with("bad-version", b, len), 0, newer);
    free(b);

    b = q4_file(&len, NULL, NULL);
    const char *truncated[] = {"model.safetensors", "truncated", NULL};
    expect_refused("truncated file", folder_with("bad-truncated", b, len - 100), 0, truncated);
    free(b);

    /* 64 columns of q4 are 48 bytes a row, 96 columns 64: the stored rows do not match */
    b = q4_file(&len, NULL, NULL);
    char from[160], to[160];
    snprintf(from, sizeof from, "\"egret.quant.%s\":\"q4 [64, 64]\"", tensor);
    snprintf(to, sizeof to, "\"egret.quant.%s\":\"q4 [64, 96]\"", tensor);
    edit_header(b, from, to);
    const char *mis_sized[] = {"model.safetensors", tensor, "U8 [64, 64]", "U8 [64, 48]", NULL};
    expect_refused("mis-sized tensor", folder_with("bad-size", b, len), 0, mis_sized);
    free(b);

    /* row 5's header vector: block 1's scale NaN; then block 0's minimum infinite */
    size_t row5 = 5 * 4 * eg_quant_row_words(EG_WEIGHTS_Q4, 64);
    uint16_t nan16 = 0x7E00, inf16 = 0x7C00;
    b = q4_file(&len, tensor, &at);
    memcpy(b + at + row5 + 4, &nan16, 2);
    const char *nan_scale[] = {"model.safetensors", tensor, "row 5, block 1", "not finite", NULL};
    expect_refused("NaN scale", folder_with("bad-nan", b, len), 0, nan_scale);
    free(b);
    b = q4_file(&len, tensor, &at);
    memcpy(b + at + row5 + 2, &inf16, 2);
    const char *inf_min[] = {"model.safetensors", tensor, "row 5, block 0", NULL};
    expect_refused("infinite minimum", folder_with("bad-inf", b, len), 0, inf_min);
    free(b);

    const char *other[] = {"quantized as q4", "--quant q8", NULL};
    expect_refused("--quant q8 on a q4 folder", tmp_path("tiny-q4"), EG_WEIGHTS_Q8, other);

    EgError err = {0};
    EgWeightFormat f;
    CHECK(eg_weight_format_parse("q5", &f, &err) != 0 && strstr(err.msg, "unknown quantization"),
          "--quant q5 refused: %s", err.msg);
    EgQuantizeOptions dense = {.format = EG_WEIGHTS_DENSE};
    CHECK(eg_quantize_folder(test_data_path("tiny-idefics-a"), tmp_path("dense"), &dense, &err) !=
                  0 &&
              strstr(err.msg, "q8 or q4"),
          "quantize to 'dense' refused: %s", err.msg);
}

/* A quantize that fails leaves no folder (and no temporary one); an existing one is kept. */
static void test_atomic(void) {
    EgError err = {0};
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", test_data_path("tiny-idefics-a"));
    size_t len;
    unsigned char *b = test_read_file(path, &len);
    EgTensorFile *tf = eg_tensors_open_memory(b, len, "src", &err);
    const char *tensor = "model.layers.1.mlp.down_proj.weight";
    const EgTensorView *t = tf ? eg_tensors_find(tf, tensor) : NULL;
    MUST(t && t->dtype == EG_DT_F32, "%s in tiny-idefics-a", tensor);
    float nan = NAN;
    memcpy((unsigned char *)t->data + 4 * 100, &nan, 4); /* the buffer is ours */
    eg_tensors_close(tf);
    const char *src = folder_with("src-nan", b, len), *out = tmp_path("out-nan");
    free(b);
    EgQuantizeOptions qo = {.format = EG_WEIGHTS_Q8};
    CHECK(eg_quantize_folder(src, out, &qo, &err) != 0 && strstr(err.msg, tensor) &&
              strstr(err.msg, "not finite"),
          "a NaN weight stops quantize, naming the tensor: %s", err.msg);
    CHECK(access(out, F_OK) != 0, "no folder after a failed quantize");
    int leftovers = 0;
    DIR *d = opendir(work);
    for (struct dirent *e; d && (e = readdir(d));)
        leftovers += strstr(e->d_name, ".tmp-") != NULL;
    if (d) closedir(d);
    CHECK(leftovers == 0, "no temporary folder left (%d)", leftovers);
    CHECK(eg_quantize_folder(test_data_path("tiny-idefics-a"), tmp_path("tiny-q4"), &qo, &err) !=
                  0 &&
              strstr(err.msg, "already exists"),
          "an existing folder is not overwritten: %s", err.msg);
}

int main(void) {
    test_rng_init();
    snprintf(work, sizeof work, "/tmp/egret_test_quant_file.%d", (int)getpid());
    MUST(mkdir(work, 0755) == 0, "creating %s", work);
    test_visitor();
    test_same_as_on_load(EG_WEIGHTS_Q4, 0, "tiny-q4");
    test_same_as_on_load(EG_WEIGHTS_Q8, 64 << 10, "tiny-q8-shards"); /* several files */
    test_mllama_same_as_on_load();
    test_refusals();
    test_atomic();
    test_remove_tree(work);
    return test_finish();
}
