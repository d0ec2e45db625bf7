/* Strict config.json reads (runtime/json_get.h). */
#include "runtime/json_get.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_BYTES (64u << 20) /* configs are kilobytes; this refuses a wrong file early */

const cJSON *eg_json_item(const cJSON *obj, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return it && !cJSON_IsNull(it) ? it : NULL;
}

int eg_json_bad(const EgJsonCtx *c, const char *key, const char *want) {
    return eg_fail(c->err, "%s: key '%s%s' must be %s", c->src, c->prefix, key, want);
}

static int as_int(const cJSON *it, int *out) {
    double d = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!(d == floor(d)) || d < -2147483648.0 || d > 2147483647.0) return -1;
    *out = (int)d;
    return 0;
}

int eg_json_int(const EgJsonCtx *c, const cJSON *obj, const char *key, int *out) {
    const cJSON *it = eg_json_item(obj, key);
    if (it && as_int(it, out)) return eg_json_bad(c, key, "an integer");
    return 0;
}

int eg_json_float(const EgJsonCtx *c, const cJSON *obj, const char *key, float *out) {
    const cJSON *it = eg_json_item(obj, key);
    if (!it) return 0;
    if (!cJSON_IsNumber(it)) return eg_json_bad(c, key, "a number");
    *out = (float)it->valuedouble;
    return 0;
}

int eg_json_bool(const EgJsonCtx *c, const cJSON *obj, const char *key, int *out) {
    const cJSON *it = eg_json_item(obj, key);
    if (!it) return 0;
    if (!cJSON_IsBool(it)) return eg_json_bad(c, key, "true or false");
    *out = cJSON_IsTrue(it);
    return 0;
}

int eg_json_string(const EgJsonCtx *c, const cJSON *obj, const char *key, const char **out) {
    const cJSON *it = eg_json_item(obj, key);
    if (!it) return 0;
    if (!cJSON_IsString(it)) return eg_json_bad(c, key, "a string");
    *out = it->valuestring;
    return 0;
}

int eg_json_object(const EgJsonCtx *c, const cJSON *obj, const char *key, const cJSON **out) {
    const cJSON *it = eg_json_item(obj, key);
    *out = NULL;
    if (!it) return 0;
    if (!cJSON_IsObject(it)) return eg_json_bad(c, key, "an object");
    *out = it;
    return 0;
}

int eg_json_int_list(const EgJsonCtx *c, const cJSON *obj, const char *key, int *out, int max,
                     int *n) {
    const cJSON *it = eg_json_item(obj, key);
    if (!it) return 0;
    if (!cJSON_IsArray(it)) return eg_json_bad(c, key, "an array of integers");
    int count = cJSON_GetArraySize(it);
    if (count > max)
        return eg_fail(c->err, "%s: key '%s%s' has %d entries, more than the %d supported", c->src,
                       c->prefix, key, count, max);
    int i = 0;
    for (const cJSON *e = it->child; e; e = e->next, i++)
        if (as_int(e, &out[i])) return eg_json_bad(c, key, "an array of integers");
    *n = count;
    return 0;
}

char *eg_json_read_file(const char *path, size_t *len, EgError *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        eg_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int bad = 0;
    for (;;) {
        if (cap - n < 2) {
            cap = cap ? cap * 2 : 16384;
            char *nb = cap <= CONFIG_MAX_BYTES ? realloc(buf, cap) : NULL;
            if (!nb) {
                bad = 1;
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0) break;
    }
    bad = bad || ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        eg_fail(err, "%s: cannot read (or too large)", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}
