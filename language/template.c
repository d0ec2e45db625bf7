/* egret_template.json: parsing, validation, and laying out few-shot prompts (see template.h). */
#include "language/template.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "language/tokenizer_internal.h"

static const char IMAGE_ELEM[] = "<image>";
static const char TEXT_SLOT[] = "{text}";

static const char DEFAULT_TEMPLATE[] = "{\"example\": [\"<image>\", \"Output: {text}\\n\"],"
                                       " \"query\": [\"<image>\", \"Output: {text}\"],"
                                       " \"stop\": [\"\\n\"]}";

typedef struct StrList {
    char **v;
    size_t n;
} StrList;

struct EgTemplate {
    StrList prefix, example, query, stop;
    char name[512]; /* a built-in's name, or the file it was read from */
};

static void strlist_free(StrList *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

void eg_template_free(EgTemplate *t) {
    if (!t) return;
    strlist_free(&t->prefix);
    strlist_free(&t->example);
    strlist_free(&t->query);
    strlist_free(&t->stop);
    free(t);
}

static int add_list(cJSON *root, const char *key, const StrList *l) {
    cJSON *arr = cJSON_AddArrayToObject(root, key);
    for (size_t i = 0; arr && i < l->n; i++)
        if (!cJSON_AddItemToArray(arr, cJSON_CreateString(l->v[i]))) return -1;
    return arr ? 0 : -1;
}

char *eg_template_to_json(const EgTemplate *t) {
    cJSON *root = cJSON_CreateObject();
    char *out = NULL;
    if (root && (t->prefix.n == 0 || add_list(root, "prefix", &t->prefix) == 0) &&
        add_list(root, "example", &t->example) == 0 && add_list(root, "query", &t->query) == 0 &&
        add_list(root, "stop", &t->stop) == 0)
        out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static size_t count_substr(const char *s, const char *sub) {
    size_t n = 0, sl = strlen(sub);
    for (const char *p = strstr(s, sub); p; p = strstr(p + sl, sub))
        n++;
    return n;
}

/* Reads key as a list of strings into l. Missing: ok unless required. */
static int read_list(const cJSON *root, const char *key, int required, StrList *l, const char *src,
                     EgError *err) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!arr) return required ? eg_fail(err, "%s: missing \"%s\"", src, key) : 0;
    if (!cJSON_IsArray(arr)) return eg_fail(err, "%s: \"%s\" must be a list of strings", src, key);
    size_t n = (size_t)cJSON_GetArraySize(arr);
    l->v = calloc(n ? n : 1, sizeof *l->v);
    if (!l->v) return eg_fail(err, "%s: out of memory", src);
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsString(e))
            return eg_fail(err, "%s: \"%s\" element %zu is not a string", src, key, l->n);
        l->v[l->n] = strdup(e->valuestring);
        if (!l->v[l->n]) return eg_fail(err, "%s: out of memory", src);
        l->n++;
    }
    return 0;
}

/* Checks the image / {text} counts of one section. */
static int check_section(const StrList *l, const char *key, size_t images, size_t min_slots,
                         size_t max_slots, const char *src, EgError *err) {
    size_t n_images = 0, n_slots = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i], IMAGE_ELEM) == 0) {
            n_images++;
            continue;
        }
        size_t s = count_substr(l->v[i], TEXT_SLOT);
        if (s > 1)
            return eg_fail(err, "%s: \"%s\" element %zu has {text} more than once", src, key, i);
        n_slots += s;
    }
    if (n_images != images)
        return eg_fail(err, "%s: \"%s\" must contain \"<image>\" exactly %zu time(s), found %zu",
                       src, key, images, n_images);
    if (n_slots < min_slots || n_slots > max_slots)
        return eg_fail(err, "%s: \"%s\" must contain {text} %s, found %zu", src, key,
                       min_slots == max_slots ? "exactly once" : "at most once", n_slots);
    return 0;
}

EgTemplate *eg_template_parse(const char *json, size_t len, const char *src, EgError *err) {
    if (!src) src = "egret_template.json";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json && end <= json + len ? (size_t)(end - json) : len;
        eg_fail(err, "%s: invalid JSON (parse error at byte %zu)", src, at);
        return NULL;
    }
    EgTemplate *t = calloc(1, sizeof *t);
    int rc = t ? 0 : eg_fail(err, "%s: out of memory", src);
    if (rc == 0 && !cJSON_IsObject(root)) rc = eg_fail(err, "%s: not a JSON object", src);
    for (const cJSON *e = rc == 0 ? root->child : NULL; e && rc == 0; e = e->next) {
        static const char *const known[] = {"prefix", "example", "query", "stop"};
        int ok = 0;
        for (size_t k = 0; k < 4; k++)
            ok |= strcmp(e->string, known[k]) == 0;
        if (!ok) rc = eg_fail(err, "%s: unknown key \"%s\"", src, e->string);
    }
    if (rc == 0) rc = read_list(root, "prefix", 0, &t->prefix, src, err);
    if (rc == 0) rc = read_list(root, "example", 1, &t->example, src, err);
    if (rc == 0) rc = read_list(root, "query", 1, &t->query, src, err);
    if (rc == 0) rc = read_list(root, "stop", 0, &t->stop, src, err);
    if (rc == 0) rc = check_section(&t->prefix, "prefix", 0, 0, 0, src, err);
    if (rc == 0) rc = check_section(&t->example, "example", 1, 1, 1, src, err);
    if (rc == 0) rc = check_section(&t->query, "query", 1, 0, 1, src, err);
    for (size_t i = 0; rc == 0 && i < t->stop.n; i++)
        if (t->stop.v[i][0] == 0) rc = eg_fail(err, "%s: empty stop string", src);
    cJSON_Delete(root);
    if (rc) {
        eg_template_free(t);
        return NULL;
    }
    return t;
}

static int read_whole(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    EgBuf b = {0};
    char chunk[4096];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        rc = eg_buf_append(&b, chunk, n);
    if (ferror(f)) rc = -1;
    fclose(f);
    if (rc == 0 && eg_buf_reserve(&b, 0)) rc = -1;
    if (rc) {
        free(b.data);
        return -1;
    }
    *len = b.len;
    *data = b.data;
    return 0;
}

EgTemplate *eg_template_load(const char *path, EgError *err) {
    char *data = NULL;
    size_t len = 0;
    if (read_whole(path, &data, &len)) {
        eg_fail(err, "%s: cannot read file", path);
        return NULL;
    }
    EgTemplate *t = eg_template_parse(data, len, path, err);
    free(data);
    if (t) snprintf(t->name, sizeof t->name, "file:%s", path);
    return t;
}

/* The built-in templates. Text elements are markup (special-token strings in them are tokens).
 * IDEFICS instruct: HF's "User:<image>...<end_of_utterance>\nAssistant:" turns; the processor
 * inserts <end_of_utterance> between two text parts itself (language/prompt.h), so each example
 * ends with the next turn's "\nUser:". Llama 3.2 Vision Instruct: its chat format (one user turn
 * per image with the query text, the answer in the assistant turn; ../shared/docs/mllama.md
 * §7.3), ending at <|eot_id|>, which the model's end-of-sequence ids hold. */
static const struct {
    const char *name, *json;
} BUILTIN[] = {
    {"idefics", DEFAULT_TEMPLATE},
    {"idefics-instruct", "{\"prefix\": [\"User:\"],"
                         " \"example\": [\"<image>\", \"Assistant: {text}\", \"\\nUser:\"],"
                         " \"query\": [\"<image>\", \"Assistant: {text}\"],"
                         " \"stop\": [\"\\nUser:\"]}"},
    {"mllama", "{\"example\": [\"<image>\", \"Caption: {text}\\n\"],"
               " \"query\": [\"<image>\", \"Caption: {text}\"], \"stop\": [\"\\n\"]}"},
    {"mllama-instruct",
     "{\"prefix\": [\"<|begin_of_text|>\"],"
     " \"example\": [\"<|start_header_id|>user<|end_header_id|>\\n\\n\", \"<image>\","
     " \"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n{text}<|eot_id|>\"],"
     " \"query\": [\"<|start_header_id|>user<|end_header_id|>\\n\\n\", \"<image>\","
     " \"{text}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n\"]}"},
};

EgTemplate *eg_template_builtin(const char *name, EgError *err) {
    for (size_t i = 0; i < sizeof BUILTIN / sizeof BUILTIN[0]; i++) {
        if (strcmp(BUILTIN[i].name, name) != 0) continue;
        EgTemplate *t = eg_template_parse(BUILTIN[i].json, strlen(BUILTIN[i].json), name, err);
        if (t) snprintf(t->name, sizeof t->name, "%s", name);
        return t;
    }
    eg_fail(err, "no built-in template named \"%s\"", name);
    return NULL;
}

const char *eg_template_name(const EgTemplate *t) {
    return t->name;
}

static int file_exists(const char *dir, const char *name) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* Whether the folder's tokenizer carries a chat template: what tells an Instruct checkpoint
 * from its base model when both share an architecture. */
static int has_chat_template(const char *model_dir) {
    if (file_exists(model_dir, "chat_template.json") || file_exists(model_dir, "chat_template.jinja"))
        return 1;
    char path[1200];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
    char *data = NULL;
    size_t len = 0;
    if (read_whole(path, &data, &len)) return 0;
    cJSON *root = cJSON_ParseWithLength(data, len);
    free(data);
    const cJSON *chat = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    int has = (cJSON_IsString(chat) && chat->valuestring[0]) ||
              (cJSON_IsArray(chat) && cJSON_GetArraySize(chat) > 0);
    cJSON_Delete(root);
    return has;
}

EgTemplate *eg_template_choose(const char *model_dir, const char *family, const char *override,
                               EgError *err) {
    if (override && override[0]) return eg_template_load(override, err);
    char path[1200];
    snprintf(path, sizeof path, "%s/egret_template.json", model_dir);
    FILE *f = fopen(path, "rb");
    int missing = !f && errno == ENOENT;
    if (f) fclose(f);
    if (!missing) return eg_template_load(path, err);
    char name[64];
    snprintf(name, sizeof name, "%s%s", family, has_chat_template(model_dir) ? "-instruct" : "");
    return eg_template_builtin(name, err);
}

EgTemplate *eg_template_default(EgError *err) {
    return eg_template_builtin("idefics", err);
}

EgTemplate *eg_template_for_model(const char *model_dir, EgError *err) {
    size_t dl = strlen(model_dir);
    char *path = malloc(dl + sizeof "/egret_template.json");
    if (!path) {
        eg_fail(err, "template: out of memory");
        return NULL;
    }
    memcpy(path, model_dir, dl);
    memcpy(path + dl, "/egret_template.json", sizeof "/egret_template.json");
    FILE *f = fopen(path, "rb");
    int missing = !f && errno == ENOENT;
    if (f) fclose(f);
    EgTemplate *t = missing ? eg_template_default(err) : eg_template_load(path, err);
    free(path);
    return t;
}

size_t eg_template_stop_count(const EgTemplate *t) {
    return t->stop.n;
}

const char *eg_template_stop(const EgTemplate *t, size_t i) {
    return i < t->stop.n ? t->stop.v[i] : NULL;
}

void eg_part_list_free(EgPartList *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++)
        free((char *)l->parts[i].text);
    free(l->parts);
    l->parts = NULL;
    l->n = 0;
}

/* Appends the parts of one section, with {text} -> text. */
static int add_section(EgPartList *out, const StrList *sec, const char *text, size_t text_len) {
    for (size_t i = 0; i < sec->n; i++) {
        EgPromptPart *p = &out->parts[out->n];
        if (strcmp(sec->v[i], IMAGE_ELEM) == 0) {
            *p = (EgPromptPart){.kind = EG_PART_IMAGE, .text = NULL, .len = 0};
            out->n++;
            continue;
        }
        const char *elem = sec->v[i];
        const char *slot = strstr(elem, TEXT_SLOT);
        EgBuf b = {0};
        int rc;
        if (slot) {
            rc =
                eg_buf_append(&b, elem, (size_t)(slot - elem)) ||
                eg_buf_append(&b, text ? text : "", text ? text_len : 0) ||
                eg_buf_append(&b, slot + sizeof TEXT_SLOT - 1, strlen(slot + sizeof TEXT_SLOT - 1));
        } else {
            rc = eg_buf_append(&b, elem, strlen(elem));
        }
        size_t len = b.len;
        char *s = rc == 0 ? eg_buf_take(&b) : NULL;
        if (!s) {
            free(b.data);
            return -1;
        }
        /* The template's own text is trusted markup; the example's or query's text is not. */
        *p = (EgPromptPart){.kind = EG_PART_TEXT,
                            .text = s,
                            .len = len,
                            .markup = 1,
                            .user_at = slot ? (size_t)(slot - elem) : 0,
                            .user_len = slot && text ? text_len : 0};
        out->n++;
    }
    return 0;
}

int eg_template_build(const EgTemplate *t, const EgFewShotExample *examples, size_t n_examples,
                      const char *query_text, size_t query_len, EgPartList *out, EgError *err) {
    out->parts = NULL;
    out->n = 0;
    if (query_text && query_len) {
        size_t slots = 0;
        for (size_t i = 0; i < t->query.n; i++)
            slots += count_substr(t->query.v[i], TEXT_SLOT);
        if (slots == 0)
            return eg_fail(err, "template: query text given but \"query\" has no {text}");
    }
    size_t total = t->prefix.n + n_examples * t->example.n + t->query.n;
    out->parts = malloc((total ? total : 1) * sizeof *out->parts);
    if (!out->parts) return eg_fail(err, "template: out of memory");
    int rc = add_section(out, &t->prefix, NULL, 0);
    for (size_t k = 0; rc == 0 && k < n_examples; k++)
        rc = add_section(out, &t->example, examples[k].text, examples[k].len);
    if (rc == 0) rc = add_section(out, &t->query, query_text, query_text ? query_len : 0);
    if (rc) {
        eg_part_list_free(out);
        return eg_fail(err, "template: out of memory");
    }
    return 0;
}
