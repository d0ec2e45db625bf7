/* safetensors reader. Layout of one file: u64 little-endian header length N, N bytes of JSON
 * ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ..., "__metadata__": {...}}),
 * then the data section; offsets are relative to the start of the data section. Everything in
 * the header is checked before any view is handed out, so later code can trust data/nbytes. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "half.h"
#include "runtime/hash.h"
#include "runtime/parallel.h"
#include "runtime/quant_file.h"
#include "runtime/text.h"

/* The data is little-endian and converted with plain memcpy. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define HEADER_MAX ((uint64_t)100 << 20) /* real headers are < 1 MB; more means corruption */
#define JSON_INT_MAX 9007199254740992.0  /* 2^53: cJSON keeps numbers as doubles */

typedef struct Shard {
    char *path;
    void *map;                 /* our mmap of the file, NULL when the bytes are the caller's */
    const unsigned char *base; /* the file's bytes (map, or the caller's buffer) */
    size_t size;
} Shard;

/* Views handed out by a random checkpoint: a small ring, reused (see eg_tensors_random). */
enum { RANDOM_RING = 8 };

struct EgTensorFile {
    int random;                          /* eg_tensors_random */
    uint64_t seed;
    EgTensorView ring[RANDOM_RING];
    char ring_names[RANDOM_RING][256];
    int ring_next;
    char *source; /* folder or file given to open */
    Shard *shards;
    int nshards;
    EgTensorView *tensors;
    int count, cap;
    int *slots; /* open-addressing hash of tensor indices, -1 = empty */
    size_t nslots;
};

static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [EG_DT_F32] = {"F32", 4},   [EG_DT_F16] = {"F16", 2}, [EG_DT_BF16] = {"BF16", 2},
    [EG_DT_F64] = {"F64", 8},   [EG_DT_I64] = {"I64", 8}, [EG_DT_I32] = {"I32", 4},
    [EG_DT_I16] = {"I16", 2},   [EG_DT_I8] = {"I8", 1},   [EG_DT_U8] = {"U8", 1},
    [EG_DT_BOOL] = {"BOOL", 1},
};
#define N_DTYPES ((int)(sizeof dtype_info / sizeof dtype_info[0]))

size_t eg_dtype_size(EgDType dt) {
    return (int)dt >= 0 && (int)dt < N_DTYPES ? dtype_info[dt].size : 0;
}

const char *eg_dtype_name(EgDType dt) {
    return (int)dt >= 0 && (int)dt < N_DTYPES ? dtype_info[dt].name : "?";
}

static int dtype_from_name(const char *s, EgDType *out) {
    for (int i = 0; i < N_DTYPES; i++) {
        if (strcmp(s, dtype_info[i].name) == 0) {
            *out = (EgDType)i;
            return 0;
        }
    }
    return -1;
}

/* ---- small helpers ---- */

static char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* A non-negative integer that a double holds exactly. */
static int json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return -1;
    double d = item->valuedouble;
    if (!(d >= 0.0) || d > JSON_INT_MAX || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* ---- hash table of names ---- */

static int *slot_for(const EgTensorFile *f, const char *name) {
    size_t mask = f->nslots - 1;
    for (size_t i = hash_name(name) & mask;; i = (i + 1) & mask) {
        int *s = &f->slots[i];
        if (*s < 0 || strcmp(f->tensors[*s].name, name) == 0) return s;
    }
}

/* Builds the table after all tensors are known; fails on a duplicate name (sets *dup). */
static int build_index(EgTensorFile *f, const EgTensorView **dup) {
    size_t n = 16;
    while (n < (size_t)f->count * 2)
        n *= 2;
    f->slots = malloc(n * sizeof *f->slots);
    if (!f->slots) return -1;
    f->nslots = n;
    for (size_t i = 0; i < n; i++)
        f->slots[i] = -1;
    for (int i = 0; i < f->count; i++) {
        int *s = slot_for(f, f->tensors[i].name);
        if (*s >= 0) {
            *dup = &f->tensors[i];
            return -1;
        }
        *s = i;
    }
    return 0;
}

/* ---- one shard ---- */

static int map_file(const char *path, Shard *sh, EgError *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return eg_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return eg_fail(err, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return eg_fail(err, "%s: not a regular file", path);
    }
    if (st.st_size == 0) { /* mmap refuses length 0; parse_shard reports the short file */
        close(fd);
        sh->base = (const unsigned char *)"";
        sh->size = 0;
        return 0;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED) return eg_fail(err, "%s: mmap failed: %s", path, strerror(e));
    sh->map = map;
    sh->base = map;
    sh->size = (size_t)st.st_size;
    return 0;
}

static int push_tensor(EgTensorFile *f, const EgTensorView *v) {
    if (f->count == f->cap) {
        int cap = f->cap ? f->cap * 2 : 64;
        EgTensorView *t = realloc(f->tensors, (size_t)cap * sizeof *t);
        if (!t) return -1;
        f->tensors = t;
        f->cap = cap;
    }
    f->tensors[f->count++] = *v;
    return 0;
}

/* Validates one header entry and fills *v (name still unset). data_len = size of data section. */
static int parse_entry(const cJSON *e, const char *path, const unsigned char *data, size_t data_len,
                       EgTensorView *v, EgError *err) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return eg_fail(err, "%s: tensor '%s': entry is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!dt || !shape || !offs)
        return eg_fail(err, "%s: tensor '%s': missing %s", path, name,
                       !dt      ? "dtype"
                       : !shape ? "shape"
                                : "data_offsets");
    if (!cJSON_IsString(dt))
        return eg_fail(err, "%s: tensor '%s': dtype is not a string", path, name);
    if (dtype_from_name(dt->valuestring, &v->dtype) != 0)
        return eg_fail(err, "%s: tensor '%s': unknown dtype '%s'", path, name, dt->valuestring);
    if (!cJSON_IsArray(shape))
        return eg_fail(err, "%s: tensor '%s': shape is not an array", path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > EG_TENSOR_MAX_DIMS)
        return eg_fail(err, "%s: tensor '%s': %d dims, at most %d supported", path, name, ndim,
                       EG_TENSOR_MAX_DIMS);
    v->ndim = ndim;
    memset(v->shape, 0, sizeof v->shape);
    const size_t esize = eg_dtype_size(v->dtype);
    uint64_t numel = 1, limit = (uint64_t)INT64_MAX / esize; /* numel*esize must fit int64 */
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        uint64_t n;
        if (json_uint(d, &n) != 0)
            return eg_fail(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", path,
                           name, i);
        if (n != 0 && numel > limit / n)
            return eg_fail(err, "%s: tensor '%s': shape overflows", path, name);
        numel *= n;
        v->shape[i] = (int64_t)n;
    }
    v->numel = (int64_t)numel;
    uint64_t b, en;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || json_uint(offs->child, &b) != 0 ||
        json_uint(offs->child->next, &en) != 0)
        return eg_fail(err, "%s: tensor '%s': data_offsets must be [begin, end] integers", path,
                       name);
    if (en < b || en - b != numel * esize) {
        char sh[160];
        format_shape(sh, sizeof sh, ndim, v->shape);
        return eg_fail(err,
                       "%s: tensor '%s': data_offsets [%llu, %llu] do not match %s %s (%llu bytes)",
                       path, name, (unsigned long long)b, (unsigned long long)en,
                       dtype_info[v->dtype].name, sh, (unsigned long long)(numel * esize));
    }
    if (en > data_len)
        return eg_fail(err,
                       "%s: tensor '%s': data_offsets end %llu is beyond the data section (%zu "
                       "bytes; truncated file?)",
                       path, name, (unsigned long long)en, data_len);
    v->data = data + b;
    v->nbytes = (size_t)(en - b);
    return 0;
}

static int cmp_view_data(const void *a, const void *b) {
    const EgTensorView *x = a, *y = b;
    const char *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Validates the bytes of one shard (sh->base, sh->size; mapped or the caller's) and appends its
 * tensors to f. Files and memory buffers both come through here. */
static int parse_shard(EgTensorFile *f, Shard *sh, EgError *err) {
    const char *path = sh->path;
    const unsigned char *base = sh->base;
    if (sh->size < 8)
        return eg_fail(err, "%s: file is %zu bytes, shorter than the 8-byte safetensors header",
                       path, sh->size);
    uint64_t hlen = 0;
    memcpy(&hlen, base, 8);
    if (hlen > HEADER_MAX || hlen > sh->size - 8)
        return eg_fail(err, "%s: header length %llu is larger than the file (%zu bytes) or absurd",
                       path, (unsigned long long)hlen, sh->size);
    const char *hdr = (const char *)base + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) return eg_fail(err, "%s: header is not valid JSON", path);
    /* The writer pads the header with spaces to 8-byte alignment; anything else is garbage. */
    for (const char *p = end; p && p < hdr + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') {
            cJSON_Delete(root);
            return eg_fail(err, "%s: header is not valid JSON (trailing bytes)", path);
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return eg_fail(err, "%s: header is not a JSON object", path);
    }
    const unsigned char *data = base + 8 + hlen;
    const size_t data_len = sh->size - 8 - (size_t)hlen;
    const int first = f->count;
    const cJSON *meta = NULL;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            meta = e;
            continue;
        }
        EgTensorView v = {0};
        if (parse_entry(e, path, data, data_len, &v, err) != 0) {
            cJSON_Delete(root);
            return -1;
        }
        v.file = path;
        v.name = str_dup(e->string);
        if (!v.name || push_tensor(f, &v) != 0) {
            free((char *)v.name);
            cJSON_Delete(root);
            return eg_fail(err, "%s: out of memory", path);
        }
    }
    /* A shard of metadata only leaves f->tensors NULL: no view pointer is formed from it. */
    int n = f->count - first;
    EgTensorView *t = n > 0 ? f->tensors + first : NULL;
    /* pre-quantized tensors (egret quantize) are marked and checked with the rest of the header */
    int marked = eg_quant_file_mark(meta, path, t, n, err);
    cJSON_Delete(root);
    if (marked) return -1;
    if (n == 0) return 0;
    /* Data order makes tensors_at stable and exposes overlaps between neighbours. */
    qsort(t, (size_t)n, sizeof *t, cmp_view_data);
    const EgTensorView *prev = NULL;
    for (int i = 0; i < n; i++) {
        if (t[i].nbytes == 0) continue;
        if (prev && (const char *)prev->data + prev->nbytes > (const char *)t[i].data)
            return eg_fail(err, "%s: tensors '%s' and '%s' overlap", path, prev->name, t[i].name);
        prev = &t[i];
    }
    return 0;
}

/* Maps the shard at sh->path and appends its tensors to f. */
static int load_shard(EgTensorFile *f, Shard *sh, EgError *err) {
    if (map_file(sh->path, sh, err) != 0) return -1;
    return parse_shard(f, sh, err);
}

static EgTensorFile *file_new(const char *source, int nshards) {
    EgTensorFile *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->source = str_dup(source);
    f->shards = calloc((size_t)(nshards > 0 ? nshards : 1), sizeof *f->shards);
    if (!f->source || !f->shards) {
        free(f->source);
        free(f->shards);
        free(f);
        return NULL;
    }
    f->nshards = nshards;
    return f;
}

void eg_tensors_close(EgTensorFile *f) {
    if (!f) return;
    for (int i = 0; i < f->count; i++)
        free((char *)f->tensors[i].name);
    for (int i = 0; i < f->nshards; i++) {
        if (f->shards[i].map) munmap(f->shards[i].map, f->shards[i].size);
        free(f->shards[i].path);
    }
    free(f->shards);
    free(f->tensors);
    free(f->slots);
    free(f->source);
    free(f);
}

static int finish_index(EgTensorFile *f, EgError *err) {
    const EgTensorView *dup = NULL;
    if (build_index(f, &dup) != 0) {
        if (!dup) return eg_fail(err, "%s: out of memory", f->source);
        const EgTensorView *other = eg_tensors_find(f, dup->name);
        return eg_fail(err, "%s: tensor '%s' is stored twice (%s and %s)", f->source, dup->name,
                       other ? other->file : "?", dup->file);
    }
    return 0;
}

EgTensorFile *eg_tensors_open_file(const char *path, EgError *err) {
    EgTensorFile *f = file_new(path, 1);
    if (!f || !(f->shards[0].path = str_dup(path))) {
        eg_tensors_close(f);
        eg_fail(err, "%s: out of memory", path);
        return NULL;
    }
    if (load_shard(f, &f->shards[0], err) != 0 || finish_index(f, err) != 0) {
        eg_tensors_close(f);
        return NULL;
    }
    return f;
}

EgTensorFile *eg_tensors_open_memory(const void *data, size_t len, const char *source_name,
                                     EgError *err) {
    const char *name = source_name ? source_name : "(memory)";
    EgTensorFile *f = file_new(name, 1);
    if (!f || !(f->shards[0].path = str_dup(name))) {
        eg_tensors_close(f);
        eg_fail(err, "%s: out of memory", name);
        return NULL;
    }
    f->shards[0].base = data ? data : (const void *)"";
    f->shards[0].size = data ? len : 0;
    if (parse_shard(f, &f->shards[0], err) != 0 || finish_index(f, err) != 0) {
        eg_tensors_close(f);
        return NULL;
    }
    return f;
}

/* ---- sharded folders ---- */

static cJSON *read_json_file(const char *path, EgError *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        eg_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = cap <= HEADER_MAX ? realloc(buf, cap) : NULL;
            if (!nb) {
                free(buf);
                fclose(fp);
                eg_fail(err, "%s: too large or out of memory", path);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    cJSON *root = bad ? NULL : cJSON_ParseWithLength(buf, len);
    free(buf);
    if (bad)
        eg_fail(err, "%s: read error", path);
    else if (!root)
        eg_fail(err, "%s: not valid JSON", path);
    return root;
}

static EgTensorFile *open_index(const char *dir, const char *index_path, EgError *err) {
    cJSON *root = read_json_file(index_path, err);
    if (!root) return NULL;
    EgTensorFile *f = NULL;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(wm)) {
        eg_fail(err, "%s: no \"weight_map\" object", index_path);
        goto fail;
    }
    /* Distinct shard names, in order of first appearance. */
    int nmap = cJSON_GetArraySize(wm), nshards = 0;
    if (nmap == 0) {
        eg_fail(err, "%s: weight_map is empty", index_path);
        goto fail;
    }
    const char **names = calloc((size_t)nmap, sizeof *names);
    if (!names) {
        eg_fail(err, "%s: out of memory", index_path);
        goto fail;
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || e->valuestring[0] == '\0' || e->valuestring[0] == '/') {
            eg_fail(err, "%s: weight_map entry '%s' is not a relative file name", index_path,
                    e->string);
            free(names);
            goto fail;
        }
        int k = 0;
        while (k < nshards && strcmp(names[k], e->valuestring) != 0)
            k++;
        if (k == nshards) names[nshards++] = e->valuestring;
    }
    f = file_new(dir, nshards);
    for (int i = 0; f && i < nshards; i++) {
        if (!(f->shards[i].path = path_join(dir, names[i]))) {
            eg_tensors_close(f);
            f = NULL;
        }
    }
    free(names);
    if (!f) {
        eg_fail(err, "%s: out of memory", index_path);
        goto fail;
    }
    for (int i = 0; i < nshards; i++) {
        if (load_shard(f, &f->shards[i], err) != 0) {
            eg_fail_prefix(err, "shard listed in %s", index_path);
            goto fail;
        }
    }
    if (finish_index(f, err) != 0) goto fail;
    /* Each listed tensor must be in the shard the index names, exactly once. */
    char *seen = calloc((size_t)(f->count > 0 ? f->count : 1), 1);
    if (!seen) {
        eg_fail(err, "%s: out of memory", index_path);
        goto fail;
    }
    /* Shard paths are path_join(dir, name): skip the "dir/" prefix to compare names. */
    const size_t dlen = strlen(dir), prefix = dlen + (dlen > 0 && dir[dlen - 1] != '/');
    for (const cJSON *e = wm->child; e; e = e->next) {
        const EgTensorView *t = eg_tensors_find(f, e->string);
        if (!t || strcmp(t->file + prefix, e->valuestring) != 0) {
            eg_fail(err, "%s: tensor '%s' is listed in shard '%s' but not stored there", index_path,
                    e->string, e->valuestring);
        } else if (seen[t - f->tensors]++) {
            eg_fail(err, "%s: tensor '%s' is listed twice in weight_map", index_path, e->string);
        } else {
            continue;
        }
        free(seen);
        goto fail;
    }
    free(seen);
    cJSON_Delete(root);
    return f;
fail:
    eg_tensors_close(f);
    cJSON_Delete(root);
    return NULL;
}

EgTensorFile *eg_tensors_open_dir(const char *dir, EgError *err) {
    char *index = path_join(dir, "model.safetensors.index.json");
    char *single = path_join(dir, "model.safetensors");
    EgTensorFile *f = NULL;
    if (!index || !single)
        eg_fail(err, "%s: out of memory", dir);
    else if (access(index, F_OK) == 0)
        f = open_index(dir, index, err);
    else if (access(single, F_OK) == 0) {
        /* Report missing tensors against the folder the caller named. */
        if ((f = eg_tensors_open_file(single, err)) != NULL) {
            char *src = str_dup(dir);
            if (src) {
                free(f->source);
                f->source = src;
            }
        }
    } else
        eg_fail(err, "%s: no model.safetensors or model.safetensors.index.json in the folder", dir);
    free(index);
    free(single);
    return f;
}

/* ---- lookup ---- */

int eg_tensors_count(const EgTensorFile *f) {
    return f ? f->count : 0;
}

const EgTensorView *eg_tensors_at(const EgTensorFile *f, int i) {
    return f && i >= 0 && i < f->count ? &f->tensors[i] : NULL;
}

const EgTensorView *eg_tensors_find(const EgTensorFile *f, const char *name) {
    if (!f || !f->slots || !name) return NULL;
    int s = *slot_for(f, name);
    return s >= 0 ? &f->tensors[s] : NULL;
}

const char *eg_tensors_source(const EgTensorFile *f) {
    return f ? f->source : NULL;
}

EgTensorFile *eg_tensors_random(uint64_t seed, EgError *err) {
    EgTensorFile *f = calloc(1, sizeof *f);
    if (!f || !(f->source = str_dup("(random weights)"))) {
        free(f);
        eg_fail(err, "out of memory");
        return NULL;
    }
    f->random = 1;
    f->seed = seed;
    return f;
}

int eg_tensors_is_random(const EgTensorFile *f) {
    return f && f->random;
}

/* A generated view of `name` with `shape`, in the random checkpoint's ring. */
static const EgTensorView *random_view(const EgTensorFile *cf, const char *name, int ndim,
                                       const int64_t *shape) {
    EgTensorFile *f = (EgTensorFile *)cf; /* the ring is scratch, not the file's contents */
    int slot = f->ring_next++ % RANDOM_RING;
    EgTensorView *t = &f->ring[slot];
    memset(t, 0, sizeof *t);
    snprintf(f->ring_names[slot], sizeof f->ring_names[slot], "%s", name);
    t->name = f->ring_names[slot];
    t->file = f->source;
    t->dtype = EG_DT_F32;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    t->nbytes = (size_t)t->numel * 4;
    t->generated = 1;
    uint64_t h = f->seed;
    for (const char *p = name; *p; p++)
        h = eg_splitmix64(h ^ (unsigned char)*p);
    t->seed = h;
    int norm = strstr(name, "norm") && eg_ends_with(name, ".weight");
    t->center = norm ? 1.0f : 0.0f;
    t->spread = eg_ends_with(name, ".bias") ? 0.0f : norm ? 0.05f : 0.02f;
    return t;
}

static float generated_value(const EgTensorView *t, int64_t i) {
    uint64_t r = eg_splitmix64(t->seed + (uint64_t)i);
    return t->center + t->spread * (float)((double)(r >> 11) * 0x1.0p-52 - 1.0);
}

/* Elements [first, first + count) of a generated tensor into dst as floats or halves, on every
 * core for large ranges: each value depends on its index alone, and generating IDEFICS-9B's
 * 8.9 billion took 137 s of one core. */
typedef struct {
    const EgTensorView *t;
    int64_t first, count;
    void *dst;
    int f16;
} GenerateJob;

static void *generate_part(void *arg) {
    const GenerateJob *j = arg;
    if (j->f16)
        for (int64_t i = 0; i < j->count; i++)
            ((uint16_t *)j->dst)[i] = eg_f32_to_f16(generated_value(j->t, j->first + i));
    else
        for (int64_t i = 0; i < j->count; i++)
            ((float *)j->dst)[i] = generated_value(j->t, j->first + i);
    return NULL;
}

static void generate_range(const EgTensorView *t, int64_t first, int64_t count, void *dst,
                           int f16) {
    enum { MAX_THREADS = 32, MIN_PER_THREAD = 1 << 18 };
    int n = eg_online_cores(MAX_THREADS);
    if (count / MIN_PER_THREAD < n) n = (int)(count / MIN_PER_THREAD) + 1;
    GenerateJob jobs[MAX_THREADS];
    size_t elem = f16 ? 2 : 4;
    for (int k = 0; k < n; k++) {
        int64_t a = count * k / n, b = count * (k + 1) / n;
        jobs[k] = (GenerateJob){t, first + a, b - a, (char *)dst + (size_t)a * elem, f16};
    }
    eg_parallel_run(generate_part, jobs, sizeof jobs[0], n);
}

int eg_tensors_expect(const EgTensorFile *f, const char *name, int ndim, const int64_t *shape,
                      const EgTensorView **out, EgError *err) {
    if (out) *out = NULL;
    if (f && f->random) {
        if (ndim < 0 || ndim > EG_TENSOR_MAX_DIMS)
            return eg_fail(err, "tensor '%s': %d dimensions", name, ndim);
        const EgTensorView *t = random_view(f, name, ndim, shape);
        if (out) *out = t;
        return 0;
    }
    const EgTensorView *t = eg_tensors_find(f, name);
    if (!t) return eg_fail(err, "tensor '%s' not found in %s", name, f ? f->source : "(null)");
    int64_t logical[2] = {t->shape[0], t->quant_cols};
    const int64_t *has = t->quant != EG_WEIGHTS_DENSE ? logical : t->shape;
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = has[i] == shape[i];
    if (!ok) {
        char want[160], got[160];
        format_shape(want, sizeof want, ndim < 0 ? 0 : ndim > 8 ? 8 : ndim, shape);
        format_shape(got, sizeof got, t->ndim, has);
        return eg_fail(err, "tensor '%s' in %s has shape %s%s%s, expected %s", name, t->file, got,
                       t->quant != EG_WEIGHTS_DENSE ? " quantized as " : "",
                       t->quant != EG_WEIGHTS_DENSE ? eg_weight_format_name(t->quant) : "", want);
    }
    if (out) *out = t;
    return 0;
}

/* ---- conversion ---- */

static int check_range(const EgTensorView *t, int64_t first, int64_t count, EgError *err) {
    if (t->dtype != EG_DT_F32 && t->dtype != EG_DT_F16 && t->dtype != EG_DT_BF16 &&
        t->dtype != EG_DT_F64)
        return eg_fail(err, "tensor '%s' in %s: dtype %s is not a floating type", t->name, t->file,
                       eg_dtype_name(t->dtype));
    if (first < 0 || count < 0 || first > t->numel || count > t->numel - first)
        return eg_fail(err, "tensor '%s' in %s: range [%lld, +%lld) outside its %lld elements",
                       t->name, t->file, (long long)first, (long long)count, (long long)t->numel);
    return 0;
}

/* Elements are read with memcpy: data offsets carry no alignment guarantee. */
int eg_tensor_range_to_f32(const EgTensorView *t, int64_t first, int64_t count, float *dst,
                           EgError *err) {
    if (check_range(t, first, count, err) != 0) return -1;
    if (t->generated) {
        generate_range(t, first, count, dst, 0);
        return 0;
    }
    const unsigned char *src = (const unsigned char *)t->data + first * eg_dtype_size(t->dtype);
    switch (t->dtype) {
    case EG_DT_F32:
        memcpy(dst, src, (size_t)count * 4);
        break;
    case EG_DT_F16:
    case EG_DT_BF16:
        for (int64_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = t->dtype == EG_DT_F16 ? eg_f16_to_f32(h) : eg_bf16_to_f32(h);
        }
        break;
    default: /* F64 */
        for (int64_t i = 0; i < count; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    }
    return 0;
}

int eg_tensor_range_to_f16(const EgTensorView *t, int64_t first, int64_t count, uint16_t *dst,
                           EgError *err) {
    if (check_range(t, first, count, err) != 0) return -1;
    if (t->generated) {
        generate_range(t, first, count, dst, 1);
        return 0;
    }
    const unsigned char *src = (const unsigned char *)t->data + first * eg_dtype_size(t->dtype);
    switch (t->dtype) {
    case EG_DT_F16:
        memcpy(dst, src, (size_t)count * 2);
        break;
    case EG_DT_F32:
    case EG_DT_BF16:
        for (int64_t i = 0; i < count; i++) {
            float x;
            if (t->dtype == EG_DT_F32) {
                memcpy(&x, src + 4 * i, 4);
            } else {
                uint16_t b;
                memcpy(&b, src + 2 * i, 2);
                x = eg_bf16_to_f32(b); /* exact: bf16 is a truncated f32 */
            }
            dst[i] = eg_f32_to_f16(x);
        }
        break;
    default: /* F64: via f32 (a double rounding, below f16 precision in practice) */
        for (int64_t i = 0; i < count; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            dst[i] = eg_f32_to_f16((float)d);
        }
        break;
    }
    return 0;
}

int eg_tensor_to_f32(const EgTensorView *t, float *dst, EgError *err) {
    return eg_tensor_range_to_f32(t, 0, t->numel, dst, err);
}

int eg_tensor_to_f16(const EgTensorView *t, uint16_t *dst, EgError *err) {
    return eg_tensor_range_to_f16(t, 0, t->numel, dst, err);
}

int eg_tensor_to_i64(const EgTensorView *t, int64_t *dst, EgError *err) {
    if (t->dtype != EG_DT_I64 && t->dtype != EG_DT_I32 && t->dtype != EG_DT_I16 &&
        t->dtype != EG_DT_I8 && t->dtype != EG_DT_U8 && t->dtype != EG_DT_BOOL)
        return eg_fail(err, "tensor '%s' in %s: dtype %s is not an integer type", t->name, t->file,
                       eg_dtype_name(t->dtype));
    const unsigned char *src = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        switch (t->dtype) {
        case EG_DT_I64:
            memcpy(&dst[i], src + 8 * i, 8);
            break;
        case EG_DT_I32: {
            int32_t v;
            memcpy(&v, src + 4 * i, 4);
            dst[i] = v;
            break;
        }
        case EG_DT_I16: {
            int16_t v;
            memcpy(&v, src + 2 * i, 2);
            dst[i] = v;
            break;
        }
        case EG_DT_I8:
            dst[i] = (int8_t)src[i];
            break;
        default: /* U8, BOOL */
            dst[i] = src[i];
            break;
        }
    }
    return 0;
}
