/* Typed, strict reads of config.json values (cJSON): a key that is absent or null leaves the
 * output alone (it keeps its default), a value of the wrong type is an error naming the file and
 * the key with its path ("vision_config.image_size"), so a hand-edited config fails at load rather
 * than producing a silently different model. */
#ifndef EGRET_JSON_GET_H
#define EGRET_JSON_GET_H

#include <cjson/cJSON.h>

#include "runtime/error.h"

typedef struct EgJsonCtx {
    const char *src;    /* file name for messages */
    const char *prefix; /* "" or the path of the object read, with a trailing dot */
    EgError *err;
} EgJsonCtx;

/* The value at key, NULL when absent or null. */
const cJSON *eg_json_item(const cJSON *obj, const char *key);
int eg_json_int(const EgJsonCtx *c, const cJSON *obj, const char *key, int *out);
int eg_json_float(const EgJsonCtx *c, const cJSON *obj, const char *key, float *out);
int eg_json_bool(const EgJsonCtx *c, const cJSON *obj, const char *key, int *out);
/* *out points into the cJSON tree. */
int eg_json_string(const EgJsonCtx *c, const cJSON *obj, const char *key, const char **out);
/* An object (*out NULL when absent). */
int eg_json_object(const EgJsonCtx *c, const cJSON *obj, const char *key, const cJSON **out);
/* An array of at most max integers; *n receives the count (left alone when absent). */
int eg_json_int_list(const EgJsonCtx *c, const cJSON *obj, const char *key, int *out, int max,
                     int *n);
/* The error for a key whose value has the wrong type: "SRC: key 'PREFIXKEY' must be WANT". */
int eg_json_bad(const EgJsonCtx *c, const char *key, const char *want);

/* Reads a whole (small) file into a NUL-terminated malloc'ed buffer; *len without the NUL. */
char *eg_json_read_file(const char *path, size_t *len, EgError *err);

#endif
