#include "server/proto_request.h"

#include <stdlib.h>
#include <string.h>

void eg_proto_request_free(EgProtoRequest *r) {
    if (r->msg) egret__v1__generate_request__free_unpacked(r->msg, NULL);
    free(r->parts);
    free(r->examples);
    free(r->stops);
    memset(r, 0, sizeof *r);
}

/* Frees a message's unknown fields (unpacked with the default allocator, malloc). */
static void drop_unknown_fields(ProtobufCMessage *m) {
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        free(m->unknown_fields[i].data);
    free(m->unknown_fields);
    m->unknown_fields = NULL;
    m->n_unknown_fields = 0;
}

static size_t unknown_bytes(const ProtobufCMessage *m) {
    size_t n = m->n_unknown_fields * sizeof *m->unknown_fields;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        n += m->unknown_fields[i].len;
    return n;
}

size_t eg_proto_request_held_bytes(const EgProtoRequest *r) {
    const Egret__V1__GenerateRequest *m = r->msg;
    if (!m) return 0;
    size_t n = sizeof *m + unknown_bytes(&m->base);
    n += (m->n_parts + 1) * (sizeof *m->parts + sizeof *r->parts);
    for (size_t i = 0; i < m->n_parts; i++) {
        const Egret__V1__Part *p = m->parts[i];
        n += sizeof *p + unknown_bytes(&p->base);
        if (p->kind_case == EGRET__V1__PART__KIND_IMAGE) n += p->image.len;
        if (p->kind_case == EGRET__V1__PART__KIND_TEXT) n += strlen(p->text) + 1;
    }
    n += (m->n_examples + 1) * (sizeof *m->examples + sizeof *r->examples);
    for (size_t i = 0; i < m->n_examples; i++) {
        const Egret__V1__Example *x = m->examples[i];
        n += sizeof *x + unknown_bytes(&x->base) + x->image.len + strlen(x->text) + 1;
    }
    n += strlen(m->example_set) + 1;
    n += (m->n_stop + 1) * (sizeof *m->stop + sizeof *r->stops);
    for (size_t i = 0; i < m->n_stop; i++)
        n += strlen(m->stop[i]) + 1;
    return n;
}

static int convert(EgProtoRequest *r, uint32_t default_max_new_tokens, EgError *err) {
    const Egret__V1__GenerateRequest *m = r->msg;
    r->parts = calloc(m->n_parts + 1, sizeof *r->parts);
    r->examples = calloc(m->n_examples + 1, sizeof *r->examples);
    r->stops = calloc(m->n_stop + 1, sizeof *r->stops);
    if (!r->parts || !r->examples || !r->stops) return eg_fail(err, "out of host memory");
    for (size_t i = 0; i < m->n_parts; i++) {
        const Egret__V1__Part *p = m->parts[i];
        if (p->kind_case == EGRET__V1__PART__KIND_TEXT) {
            r->parts[i] = (EgRequestPart){0, p->text, strlen(p->text), NULL, 0};
        } else if (p->kind_case == EGRET__V1__PART__KIND_IMAGE) {
            r->parts[i] = (EgRequestPart){1, NULL, 0, p->image.data, p->image.len};
        } else {
            return eg_fail(err, "part %zu has neither text nor image", i);
        }
    }
    for (size_t i = 0; i < m->n_examples; i++) {
        const Egret__V1__Example *x = m->examples[i];
        r->examples[i] = (EgRequestExample){x->image.data, x->image.len, x->text, strlen(x->text)};
    }
    for (size_t i = 0; i < m->n_stop; i++) {
        if (!m->stop[i][0]) return eg_fail(err, "stop %zu is an empty string", i);
        if (strlen(m->stop[i]) > EG_PROTO_MAX_STOP_BYTES)
            return eg_fail(err, "stop %zu is longer than %d bytes", i, EG_PROTO_MAX_STOP_BYTES);
        r->stops[i] = m->stop[i];
    }
    EgRequest *q = &r->req;
    q->parts = r->parts;
    q->n_parts = m->n_parts;
    q->examples = r->examples;
    q->n_examples = m->n_examples;
    q->use_template = m->use_template;
    q->example_set = m->example_set;
    eg_sampling_params_default(&q->gen.sampling);
    q->gen.sampling.temperature = m->temperature;
    q->gen.sampling.top_k = m->top_k;
    if (m->top_p != 0.0f) q->gen.sampling.top_p = m->top_p;
    if (m->repetition_penalty != 0.0f) q->gen.sampling.repetition_penalty = m->repetition_penalty;
    q->gen.sampling.seed = m->seed;
    q->gen.max_new_tokens = m->max_new_tokens ? m->max_new_tokens : default_max_new_tokens;
    q->gen.stop = r->stops;
    q->gen.n_stop = m->n_stop;
    q->gen.ignore_eos = m->ignore_eos;
    return 0;
}

/* One field of the wire format at *p: its number, wire type and, for length-delimited fields,
 * its bytes. Returns 0, or -1 at the end or where the message is malformed (unpacking then
 * reports it). */
typedef struct WireField {
    uint64_t number;
    unsigned type;
    const uint8_t *data; /* type 2 */
    size_t len;
} WireField;

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

static int next_field(const uint8_t **p, const uint8_t *end, WireField *f) {
    uint64_t key, v;
    if (*p >= end || read_varint(p, end, &key)) return -1;
    f->number = key >> 3;
    f->type = (unsigned)(key & 7);
    size_t left = (size_t)(end - *p);
    switch (f->type) {
    case 0:
        return read_varint(p, end, &v);
    case 1:
    case 5:
        if (left < (f->type == 1 ? 8u : 4u)) return -1;
        *p += f->type == 1 ? 8 : 4;
        return 0;
    case 2:
        if (read_varint(p, end, &v) || v > (uint64_t)(end - *p)) return -1;
        f->data = *p;
        f->len = (size_t)v;
        *p += v;
        return 0;
    default:
        return -1;
    }
}

/* Counts the top-level occurrences of fields 1 (parts), 2 (examples) and 8 (stop). */
static void count_fields(const uint8_t *p, size_t len, size_t counts[9]) {
    const uint8_t *end = p + len;
    WireField f;
    while (next_field(&p, end, &f) == 0)
        if (f.number < 9) counts[f.number]++;
}

/* Whether the length-delimited field `number` of the message in f holds a NUL byte. */
static int inner_string_has_nul(const WireField *outer, uint64_t number) {
    const uint8_t *p = outer->data, *end = outer->data + outer->len;
    WireField f;
    while (next_field(&p, end, &f) == 0)
        if (f.number == number && f.type == 2 && memchr(f.data, 0, f.len)) return 1;
    return 0;
}

/* protobuf-c hands strings over NUL-terminated, without their length, so a U+0000 inside one
 * would silently cut it there. Such strings are found on the wire and refused instead. */
static int refuse_nul(const uint8_t *p, size_t len, EgError *err) {
    const uint8_t *end = p + len;
    size_t n_parts = 0, n_examples = 0, n_stops = 0;
    WireField f;
    while (next_field(&p, end, &f) == 0) {
        if (f.type != 2) continue;
        if (f.number == 1 && inner_string_has_nul(&f, 1))
            return eg_fail(err, "part %zu: text contains U+0000 (NUL), which is not allowed",
                           n_parts);
        if (f.number == 2 && inner_string_has_nul(&f, 2))
            return eg_fail(err, "example %zu: text contains U+0000 (NUL), which is not allowed",
                           n_examples);
        if (f.number == 8 && memchr(f.data, 0, f.len))
            return eg_fail(err, "stop %zu contains U+0000 (NUL), which is not allowed", n_stops);
        n_parts += f.number == 1;
        n_examples += f.number == 2;
        n_stops += f.number == 8;
    }
    return 0;
}

EgStatus eg_proto_request_decode(const uint8_t *data, size_t len, uint32_t default_max_new_tokens,
                                 EgProtoRequest *out, EgError *err) {
    memset(out, 0, sizeof *out);
    size_t counts[9] = {0};
    count_fields(data, len, counts);
    if (counts[1] + counts[2] > EG_PROTO_MAX_PARTS) {
        eg_fail(err, "the request has %zu parts and examples; the limit is %d", counts[1] + counts[2],
                EG_PROTO_MAX_PARTS);
        return EG_STATUS_RESOURCE_EXHAUSTED;
    }
    if (counts[8] > EG_PROTO_MAX_STOPS) {
        eg_fail(err, "the request has %zu stop strings; the limit is %d", counts[8],
                EG_PROTO_MAX_STOPS);
        return EG_STATUS_INVALID_ARGUMENT;
    }
    out->msg = egret__v1__generate_request__unpack(NULL, len, data);
    if (!out->msg) {
        eg_fail(err, "the request is not a valid egret.v1.GenerateRequest (%zu bytes)", len);
        return EG_STATUS_INVALID_ARGUMENT;
    }
    if (refuse_nul(data, len, err)) {
        eg_proto_request_free(out);
        return EG_STATUS_INVALID_ARGUMENT;
    }
    drop_unknown_fields(&out->msg->base);
    for (size_t i = 0; i < out->msg->n_parts; i++)
        drop_unknown_fields(&out->msg->parts[i]->base);
    for (size_t i = 0; i < out->msg->n_examples; i++)
        drop_unknown_fields(&out->msg->examples[i]->base);
    if (convert(out, default_max_new_tokens, err) == 0) return EG_STATUS_OK;
    eg_proto_request_free(out);
    return EG_STATUS_INVALID_ARGUMENT;
}

int eg_proto_request_encode(const EgRequest *r, uint8_t **out, size_t *len, EgError *err) {
    Egret__V1__GenerateRequest m = EGRET__V1__GENERATE_REQUEST__INIT;
    Egret__V1__Part *parts = calloc(r->n_parts + 1, sizeof *parts);
    Egret__V1__Part **part_ptrs = calloc(r->n_parts + 1, sizeof *part_ptrs);
    Egret__V1__Example *ex = calloc(r->n_examples + 1, sizeof *ex);
    Egret__V1__Example **ex_ptrs = calloc(r->n_examples + 1, sizeof *ex_ptrs);
    /* proto strings are NUL-terminated; request texts are (pointer, length) */
    char **texts = calloc(r->n_parts + r->n_examples + 1, sizeof *texts);
    int rc = -1;
    *out = NULL;
    if (!parts || !part_ptrs || !ex || !ex_ptrs || !texts) goto done;
    size_t n_texts = 0;
    for (size_t i = 0; i < r->n_parts; i++) {
        const EgRequestPart *p = &r->parts[i];
        egret__v1__part__init(&parts[i]);
        if (p->is_image) {
            parts[i].kind_case = EGRET__V1__PART__KIND_IMAGE;
            parts[i].image.data = (uint8_t *)p->image;
            parts[i].image.len = p->image_len;
        } else {
            if (!(texts[n_texts] = strndup(p->text ? p->text : "", p->text_len))) goto done;
            parts[i].kind_case = EGRET__V1__PART__KIND_TEXT;
            parts[i].text = texts[n_texts++];
        }
        part_ptrs[i] = &parts[i];
    }
    for (size_t i = 0; i < r->n_examples; i++) {
        const EgRequestExample *x = &r->examples[i];
        egret__v1__example__init(&ex[i]);
        ex[i].image.data = (uint8_t *)x->image;
        ex[i].image.len = x->image_len;
        if (!(texts[n_texts] = strndup(x->text ? x->text : "", x->text_len))) goto done;
        ex[i].text = texts[n_texts++];
        ex_ptrs[i] = &ex[i];
    }
    m.n_parts = r->n_parts;
    m.parts = part_ptrs;
    m.n_examples = r->n_examples;
    m.examples = ex_ptrs;
    m.max_new_tokens = r->gen.max_new_tokens;
    m.temperature = r->gen.sampling.temperature;
    m.top_k = r->gen.sampling.top_k;
    m.top_p = r->gen.sampling.top_p;
    m.seed = r->gen.sampling.seed;
    m.n_stop = r->gen.n_stop;
    m.stop = (char **)r->gen.stop;
    m.repetition_penalty = r->gen.sampling.repetition_penalty;
    m.use_template = r->use_template;
    m.ignore_eos = r->gen.ignore_eos;
    if (r->example_set) m.example_set = (char *)r->example_set;
    *len = egret__v1__generate_request__get_packed_size(&m);
    if (!(*out = malloc(*len + 1))) goto done;
    egret__v1__generate_request__pack(&m, *out);
    rc = 0;
done:
    if (rc) eg_fail(err, "out of host memory");
    for (size_t i = 0; texts && texts[i]; i++)
        free(texts[i]);
    free(texts);
    free(parts);
    free(part_ptrs);
    free(ex);
    free(ex_ptrs);
    return rc;
}

void eg_proto_example_set_free(EgProtoExampleSet *s) {
    if (s->msg) egret__v1__create_example_set_request__free_unpacked(s->msg, NULL);
    free(s->pairs);
    memset(s, 0, sizeof *s);
}

EgStatus eg_proto_example_set_decode(const uint8_t *data, size_t len, EgProtoExampleSet *out,
                                     EgError *err) {
    memset(out, 0, sizeof *out);
    size_t counts[9] = {0};
    count_fields(data, len, counts);
    if (counts[1] > EG_PROTO_MAX_PARTS) {
        eg_fail(err, "the set has %zu examples; the limit is %d", counts[1], EG_PROTO_MAX_PARTS);
        return EG_STATUS_RESOURCE_EXHAUSTED;
    }
    out->msg = egret__v1__create_example_set_request__unpack(NULL, len, data);
    if (!out->msg) {
        eg_fail(err, "not a valid egret.v1.CreateExampleSetRequest (%zu bytes)", len);
        return EG_STATUS_INVALID_ARGUMENT;
    }
    const uint8_t *p = data, *end = data + len;
    size_t n_examples = 0;
    WireField f;
    while (next_field(&p, end, &f) == 0) {
        if (f.number == 1 && f.type == 2 && inner_string_has_nul(&f, 2)) {
            eg_fail(err, "example %zu: text contains U+0000 (NUL), which is not allowed",
                    n_examples);
            eg_proto_example_set_free(out);
            return EG_STATUS_INVALID_ARGUMENT;
        }
        n_examples += f.number == 1;
    }
    const Egret__V1__CreateExampleSetRequest *m = out->msg;
    out->pairs = calloc(m->n_examples + 1, sizeof *out->pairs);
    if (!out->pairs) {
        eg_fail(err, "out of host memory");
        eg_proto_example_set_free(out);
        return EG_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < m->n_examples; i++) {
        const Egret__V1__Example *x = m->examples[i];
        out->pairs[i] = (EgRequestExample){x->image.data, x->image.len, x->text, strlen(x->text)};
    }
    out->n_pairs = m->n_examples;
    out->template_name = m->template_;
    return EG_STATUS_OK;
}

int eg_proto_example_set_encode(const EgRequestExample *pairs, size_t n, const char *template_name,
                                uint8_t **out, size_t *len, EgError *err) {
    Egret__V1__CreateExampleSetRequest m = EGRET__V1__CREATE_EXAMPLE_SET_REQUEST__INIT;
    Egret__V1__Example *ex = calloc(n + 1, sizeof *ex);
    Egret__V1__Example **ptrs = calloc(n + 1, sizeof *ptrs);
    char **texts = calloc(n + 1, sizeof *texts);
    int rc = -1;
    *out = NULL;
    if (!ex || !ptrs || !texts) goto done;
    for (size_t i = 0; i < n; i++) {
        egret__v1__example__init(&ex[i]);
        ex[i].image.data = (uint8_t *)pairs[i].image;
        ex[i].image.len = pairs[i].image_len;
        if (!(texts[i] = strndup(pairs[i].text ? pairs[i].text : "", pairs[i].text_len)))
            goto done;
        ex[i].text = texts[i];
        ptrs[i] = &ex[i];
    }
    m.n_examples = n;
    m.examples = ptrs;
    if (template_name) m.template_ = (char *)template_name;
    *len = egret__v1__create_example_set_request__get_packed_size(&m);
    if (!(*out = malloc(*len + 1))) goto done;
    egret__v1__create_example_set_request__pack(&m, *out);
    rc = 0;
done:
    if (rc) eg_fail(err, "out of host memory");
    for (size_t i = 0; texts && i < n; i++)
        free(texts[i]);
    free(texts);
    free(ex);
    free(ptrs);
    return rc;
}

Egret__V1__FinishReason eg_finish_reason_to_proto(EgFinishReason r) {
    switch (r) {
    case EG_FINISH_LENGTH:
        return EGRET__V1__FINISH_REASON__FINISH_REASON_LENGTH;
    case EG_FINISH_STOP:
        return EGRET__V1__FINISH_REASON__FINISH_REASON_STOP;
    case EG_FINISH_EOS:
        return EGRET__V1__FINISH_REASON__FINISH_REASON_END_OF_SEQUENCE;
    case EG_FINISH_CANCELLED:
        break;
    }
    return EGRET__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
}

EgFinishReason eg_finish_reason_from_proto(Egret__V1__FinishReason r) {
    switch (r) {
    case EGRET__V1__FINISH_REASON__FINISH_REASON_LENGTH:
        return EG_FINISH_LENGTH;
    case EGRET__V1__FINISH_REASON__FINISH_REASON_STOP:
        return EG_FINISH_STOP;
    case EGRET__V1__FINISH_REASON__FINISH_REASON_END_OF_SEQUENCE:
        return EG_FINISH_EOS;
    default:
        break;
    }
    return EG_FINISH_CANCELLED;
}
