#include "tools/quantize_folder.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "families/family.h"
#include "runtime/buf.h"
#include "runtime/clock.h"
#include "runtime/json_get.h"
#include "runtime/quant_file.h"
#include "runtime/safetensors.h"
#include "runtime/text.h"

enum { MAX_SHARDS = 99999 };
#define DEFAULT_SHARD_BYTES ((uint64_t)4 << 30)
#define BATCH_WEIGHTS (1u << 22) /* weights converted and quantized per round */

/* The names the loader puts into a quantized matrix (from the visitor). */
typedef struct {
    char **names;
    int n, cap;
    EgWeightFormat format;
} Plan;

static int plan_visit(void *ctx, const EgTensorView *t, EgWeightFormat format, EgError *err) {
    Plan *p = ctx;
    if (format == EG_WEIGHTS_DENSE) return 0;
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 256;
        char **names = realloc(p->names, (size_t)cap * sizeof *names);
        if (!names) return eg_fail(err, "out of host memory");
        p->names = names, p->cap = cap;
    }
    if (!(p->names[p->n] = strdup(t->name))) return eg_fail(err, "out of host memory");
    p->n++;
    p->format = format;
    return 0;
}

static int plan_has(const Plan *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->names[i], name)) return 1;
    return 0;
}

/* What one source tensor becomes in the output. */
typedef struct {
    const EgTensorView *t;
    EgWeightFormat quantize; /* dense: copied as stored (pre-quantized ones too) */
    uint64_t bytes;
    int shard;
} OutTensor;

static uint64_t quantized_bytes(EgWeightFormat f, const EgTensorView *t) {
    return (uint64_t)t->shape[0] * 4 * eg_quant_row_words(f, (uint32_t)t->shape[1]);
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int write_all(FILE *f, const void *data, size_t n, const char *path, EgError *err) {
    if (n && fwrite(data, 1, n, f) != n)
        return eg_fail(err, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

/* Flushes and syncs a file written with stdio, then closes it. */
static int close_synced(FILE *f, const char *path, EgError *err) {
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    return bad ? eg_fail(err, "%s: write failed: %s", path, strerror(errno)) : 0;
}

static void shard_name(char *out, size_t cap, int i, int n) {
    if (n == 1)
        snprintf(out, cap, "model.safetensors");
    else
        snprintf(out, cap, "model-%05d-of-%05d.safetensors", i + 1, n);
}

/* The header of shard s: its tensors in order, with data offsets, and the metadata that marks
 * the quantized ones. */
static char *shard_header(const OutTensor *ts, int n, int s, EgError *err) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "__metadata__");
    char version[16], desc[96];
    snprintf(version, sizeof version, "%d", EG_QUANT_FILE_VERSION);
    cJSON_AddStringToObject(meta, "format", "pt");
    cJSON_AddStringToObject(meta, EG_QUANT_FILE_VERSION_KEY, version);
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        if (ts[i].shard != s) continue;
        const EgTensorView *t = ts[i].t;
        EgWeightFormat f = ts[i].quantize ? ts[i].quantize : t->quant;
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        cJSON_AddStringToObject(e, "dtype", f ? "U8" : eg_dtype_name(t->dtype));
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        if (ts[i].quantize) {
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[0]));
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)(ts[i].bytes / t->shape[0])));
        } else {
            for (int d = 0; d < t->ndim; d++)
                cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        }
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + ts[i].bytes)));
        offset += ts[i].bytes;
        if (f) {
            int64_t cols = ts[i].quantize ? t->shape[1] : t->quant_cols;
            eg_quant_file_describe(f, t->shape[0], cols, desc, sizeof desc);
            char key[512];
            snprintf(key, sizeof key, "%s%s", EG_QUANT_FILE_TENSOR_PREFIX, t->name);
            cJSON_AddStringToObject(meta, key, desc);
        }
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) eg_fail(err, "out of host memory");
    return text;
}

/* Progress: a line each time another tenth of the bytes is written. */
typedef struct {
    FILE *out;
    uint64_t done, total;
    int tenths;
    double t0;
} Progress;

static void progress_add(Progress *p, uint64_t bytes, const char *name) {
    p->done += bytes;
    int tenths = p->total ? (int)(p->done * 10 / p->total) : 10;
    if (!p->out || tenths == p->tenths) return;
    p->tenths = tenths;
    fprintf(p->out, "egret: quantize: %3d%% (%.1f of %.1f MiB written, %.1f s), at %s\n",
            tenths * 10, (double)p->done / (1 << 20), (double)p->total / (1 << 20),
            eg_now_s() - p->t0, name);
}

/* Rows of t converted to float and quantized in batches, written to f. */
static int write_quantized(FILE *f, const char *path, const EgTensorView *t, EgWeightFormat fmt,
                           EgError *err) {
    uint32_t rows = (uint32_t)t->shape[0], cols = (uint32_t)t->shape[1];
    uint32_t batch = BATCH_WEIGHTS / cols ? BATCH_WEIGHTS / cols : 1;
    if (batch > rows) batch = rows;
    size_t words = eg_quant_row_words(fmt, cols);
    float *w = malloc((size_t)batch * cols * sizeof *w + 4);
    uint32_t *q = malloc((size_t)batch * words * 4 + 4);
    int rc = w && q ? 0 : eg_fail(err, "out of host memory");
    for (uint32_t r = 0; r < rows && rc == 0; r += batch) {
        uint32_t k = rows - r < batch ? rows - r : batch;
        rc = eg_tensor_range_to_f32(t, (int64_t)r * cols, (int64_t)k * cols, w, err) ||
                     eg_quantize_rows(fmt, w, k, cols, q, err)
                 ? eg_fail_prefix(err, "tensor '%s' in %s, from its row %u", t->name, t->file, r)
                 : write_all(f, q, (size_t)k * words * 4, path, err);
    }
    free(w), free(q);
    return rc;
}

static int write_shard(const char *dir, const OutTensor *ts, int n, int s, int n_shards,
                       Progress *prog, EgError *err) {
    char name[64];
    shard_name(name, sizeof name, s, n_shards);
    char *path = join(dir, name), *header = shard_header(ts, n, s, err);
    FILE *f = path && header ? fopen(path, "wb") : NULL;
    int rc = 0;
    if (!path || !header)
        rc = path ? -1 : eg_fail(err, "out of host memory");
    else if (!f)
        rc = eg_fail(err, "%s: cannot create: %s", path, strerror(errno));
    if (rc == 0) {
        /* the header padded with spaces so that the data starts 16-byte aligned */
        size_t len = strlen(header);
        uint64_t hlen = (uint64_t)((len + 8 + 15) / 16 * 16 - 8);
        char pad[16] = "               ";
        rc = write_all(f, &hlen, 8, path, err) || write_all(f, header, len, path, err) ||
             write_all(f, pad, (size_t)hlen - len, path, err);
    }
    for (int i = 0; i < n && rc == 0; i++) {
        if (ts[i].shard != s) continue;
        rc = ts[i].quantize ? write_quantized(f, path, ts[i].t, ts[i].quantize, err)
                            : write_all(f, ts[i].t->data, ts[i].t->nbytes, path, err);
        if (rc == 0) progress_add(prog, ts[i].bytes, ts[i].t->name);
    }
    if (f && (rc ? fclose(f) : close_synced(f, path, err))) rc = -1;
    free(path), free(header);
    return rc;
}

static int write_index(const char *dir, const OutTensor *ts, int n, int n_shards, EgError *err) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "metadata"),
          *map = cJSON_AddObjectToObject(root, "weight_map");
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        char name[64];
        shard_name(name, sizeof name, ts[i].shard, n_shards);
        cJSON_AddStringToObject(map, ts[i].t->name, name);
        total += ts[i].bytes;
    }
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    char *text = cJSON_Print(root), *path = join(dir, "model.safetensors.index.json");
    cJSON_Delete(root);
    FILE *f = text && path ? fopen(path, "wb") : NULL;
    int rc = !f ? eg_fail(err, "%s: cannot create: %s", path ? path : dir, strerror(errno))
                : write_all(f, text, strlen(text), path, err) || close_synced(f, path, err);
    if (rc && f) remove(path);
    free(text), free(path);
    return rc ? -1 : 0;
}

/* Files of a checkpoint folder that hold weights: not copied (the output has its own). */
static int is_weight_file(const char *name) {
    static const char *const ext[] = {".safetensors", ".safetensors.index.json",
                                      ".bin",         ".pt",
                                      ".pth",         ".ckpt",
                                      ".h5",          ".msgpack",
                                      ".gguf",        ".onnx"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (eg_ends_with(name, ext[i])) return 1;
    return 0;
}

static int copy_file(const char *from, const char *to, EgError *err) {
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    int rc = in && out ? 0
                       : eg_fail(err, "%s: cannot %s: %s", in ? to : from, in ? "create" : "open",
                                 strerror(errno));
    char buf[1 << 16];
    for (size_t got; rc == 0 && (got = fread(buf, 1, sizeof buf, in)) > 0;)
        rc = write_all(out, buf, got, to, err);
    if (rc == 0 && ferror(in)) rc = eg_fail(err, "%s: read error", from);
    if (in) fclose(in);
    if (out && (rc ? fclose(out) : close_synced(out, to, err))) rc = -1;
    return rc;
}

/* config.json with "egret_quantization": what was quantized, for people and tools reading the
 * folder (the loader goes by the tensors' own metadata). */
static int write_config(const char *src, const char *dir, const EgQuantizeOptions *opt,
                        int quantized, EgError *err) {
    char *from = join(src, "config.json"), *to = join(dir, "config.json");
    size_t len = 0;
    char *text = from ? eg_json_read_file(from, &len, err) : NULL;
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    int rc = 0;
    if (!root || !cJSON_IsObject(root)) {
        rc = eg_fail(err, "%s: not a JSON object", from ? from : src);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "egret_quantization");
        cJSON *q = cJSON_AddObjectToObject(root, "egret_quantization");
        cJSON_AddStringToObject(q, "format", eg_weight_format_name(opt->format));
        cJSON_AddNumberToObject(q, "format_version", EG_QUANT_FILE_VERSION);
        cJSON_AddNumberToObject(q, "quantized_tensors", quantized);
        cJSON_AddStringToObject(q, "description",
                                "projections stored pre-quantized by egret quantize "
                                "(docs/quantization.md); other tensors as in the source");
        char *out_text = cJSON_Print(root);
        FILE *f = out_text ? fopen(to, "wb") : NULL;
        rc = !f ? eg_fail(err, "%s: cannot create: %s", to, strerror(errno))
             : write_all(f, out_text, strlen(out_text), to, err) ||
                     write_all(f, "\n", 1, to, err) || close_synced(f, to, err)
                 ? -1
                 : 0;
        free(out_text);
    }
    cJSON_Delete(root);
    free(text), free(from), free(to);
    return rc;
}

/* Every regular file of src but config.json and the weight files, copied into dir. */
static int copy_other_files(const char *src, const char *dir, FILE *progress, EgError *err) {
    DIR *d = opendir(src);
    if (!d) return eg_fail(err, "%s: cannot list: %s", src, strerror(errno));
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "config.json")) continue;
        char *from = join(src, e->d_name), *to = join(dir, e->d_name);
        struct stat st;
        if (!from || !to) {
            rc = eg_fail(err, "out of host memory");
        } else if (stat(from, &st) == 0 && S_ISREG(st.st_mode)) {
            if (is_weight_file(e->d_name)) {
                if (progress)
                    fprintf(progress, "egret: quantize: not copying %s (weights)\n", e->d_name);
            } else {
                rc = copy_file(from, to, err);
            }
        }
        free(from), free(to);
    }
    closedir(d);
    return rc;
}

/* Removes the temporary folder's files and the folder (it has no subfolders). */
static void remove_folder(const char *dir) {
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = join(dir, e->d_name);
        if (p) unlink(p);
        free(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static int sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Assigns each tensor its shard, in order, starting a new one where the next tensor would take
 * the current past shard_bytes; the number of shards. */
static int assign_shards(OutTensor *ts, int n, uint64_t shard_bytes) {
    int s = 0;
    uint64_t used = 0;
    for (int i = 0; i < n; i++) {
        if (used > 0 && used + ts[i].bytes > shard_bytes && s + 1 < MAX_SHARDS) s++, used = 0;
        ts[i].shard = s;
        used += ts[i].bytes;
    }
    return s + 1;
}

/* The folder's files written into tmp. */
static int write_folder(const char *src, const char *tmp, const EgQuantizeOptions *opt,
                        EgTensorFile *tf, const Plan *plan, EgError *err) {
    int n = eg_tensors_count(tf), quantized = 0;
    OutTensor *ts = calloc((size_t)(n ? n : 1), sizeof *ts);
    if (!ts) return eg_fail(err, "out of host memory");
    Progress prog = {.out = opt->progress, .t0 = eg_now_s()};
    for (int i = 0; i < n; i++) {
        const EgTensorView *t = eg_tensors_at(tf, i);
        ts[i].t = t;
        /* already quantized in the source (in this format: the visit checked): copied */
        ts[i].quantize = t->quant == EG_WEIGHTS_DENSE && plan_has(plan, t->name) ? plan->format
                                                                                 : EG_WEIGHTS_DENSE;
        ts[i].bytes = ts[i].quantize ? quantized_bytes(ts[i].quantize, t) : t->nbytes;
        quantized += ts[i].quantize != EG_WEIGHTS_DENSE || t->quant != EG_WEIGHTS_DENSE;
        prog.total += ts[i].bytes;
    }
    int n_shards = assign_shards(ts, n, opt->shard_bytes ? opt->shard_bytes : DEFAULT_SHARD_BYTES);
    if (opt->progress)
        fprintf(opt->progress,
                "egret: quantize: %s: %d tensors, %d of them %s, %.1f MiB in %d file%s\n", src, n,
                quantized, eg_weight_format_name(opt->format), (double)prog.total / (1 << 20),
                n_shards, n_shards > 1 ? "s" : "");
    int rc = 0;
    for (int s = 0; s < n_shards && rc == 0; s++)
        rc = write_shard(tmp, ts, n, s, n_shards, &prog, err);
    if (rc == 0 && n_shards > 1) rc = write_index(tmp, ts, n, n_shards, err);
    if (rc == 0) rc = write_config(src, tmp, opt, quantized, err);
    if (rc == 0) rc = copy_other_files(src, tmp, opt->progress, err);
    free(ts);
    return rc;
}

int eg_quantize_folder(const char *src, const char *out, const EgQuantizeOptions *opt,
                       EgError *err) {
    if (opt->format != EG_WEIGHTS_Q8 && opt->format != EG_WEIGHTS_Q4)
        return eg_fail(err, "egret quantize: the format must be q8 or q4, not %s",
                       eg_weight_format_name(opt->format));
    struct stat st;
    if (lstat(out, &st) == 0)
        return eg_fail(err, "%s already exists: choose a new folder (nothing is overwritten)", out);
    /* the loader names the tensors it would quantize, checking the folder as a load does */
    Plan plan = {.format = opt->format};
    EgModelOptions mo = {.quant = opt->format};
    const char *family = NULL;
    EgTensorFile *tf = NULL;
    char *tmp = NULL;
    int rc = eg_family_visit_tensors(src, &mo, plan_visit, &plan, &family, err);
    if (rc == 0 && !(tf = eg_tensors_open_dir(src, err))) rc = -1;
    if (rc == 0) {
        size_t n = strlen(out) + 32;
        if (!(tmp = malloc(n)))
            rc = eg_fail(err, "out of host memory");
        else
            snprintf(tmp, n, "%s.tmp-%ld", out, (long)getpid());
    }
    if (rc == 0 && mkdir(tmp, 0755) != 0)
        rc = eg_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    else if (rc == 0) {
        if (opt->progress) fprintf(opt->progress, "egret: quantize: %s model\n", family);
        rc = write_folder(src, tmp, opt, tf, &plan, err);
        /* the files are synced; the rename makes the folder appear whole, or not at all */
        if (rc == 0 && (sync_dir(tmp) != 0 || rename(tmp, out) != 0))
            rc = eg_fail(err, "%s: cannot rename to %s: %s", tmp, out, strerror(errno));
        if (rc) remove_folder(tmp);
    }
    eg_tensors_close(tf);
    for (int i = 0; i < plan.n; i++)
        free(plan.names[i]);
    free(plan.names);
    free(tmp);
    return rc ? eg_fail_prefix(err, "quantizing %s", src) : 0;
}
