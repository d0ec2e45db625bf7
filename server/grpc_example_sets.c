/* egret.v1.Egret CreateExampleSet, GetExampleSet, ListExampleSets, DeleteExampleSet: answered
 * on the queue thread (the engine's registry is thread-safe; creating hashes the pairs and reads
 * their image headers, a few milliseconds for megabytes of images). A set created here is
 * written to --example-sets-dir when there is one, and a warm-up request goes to the engine so
 * that its images are encoded and its prefix prefilled before the first request names it. */
#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "server/example_set_store.h"
#include "server/grpc_server_internal.h"

static grpc_status_code grpc_code(EgStatus st) {
    switch (st) {
    case EG_STATUS_OK:
        return GRPC_STATUS_OK;
    case EG_STATUS_INVALID_ARGUMENT:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case EG_STATUS_RESOURCE_EXHAUSTED:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case EG_STATUS_NOT_FOUND:
        return GRPC_STATUS_NOT_FOUND;
    case EG_STATUS_CANCELLED:
        return GRPC_STATUS_CANCELLED;
    case EG_STATUS_INTERNAL:
        break;
    }
    return GRPC_STATUS_INTERNAL;
}

/* Ends the call with a message (OK) or a status, and logs it. */
static void answer(Call *c, grpc_status_code code, const char *msg, const ProtobufCMessage *reply) {
    if (code != GRPC_STATUS_OK || !reply) {
        eg_call_fail(c, code, msg); /* logs it */
        return;
    }
    grpc_byte_buffer *bb = eg_grpc_pack(reply);
    pthread_mutex_lock(&c->mu);
    int rc = eg_call_finish_locked(c, GRPC_STATUS_OK, "", bb);
    pthread_mutex_unlock(&c->mu);
    eg_server_log(c->srv, c, GRPC_STATUS_OK, "");
    if (rc) eg_call_unref(c);
}

/* ---- warm-up: a one-token request with the set's own first image as the query ---- */

typedef struct WarmUp {
    EgJob job;
    EgRequest req;
    char id[EG_EXAMPLE_SET_ID_LEN + 1];
    EgServer *srv;
} WarmUp;

static int warm_token(void *owner, int32_t id, const char *text, size_t len) {
    (void)id, (void)text, (void)len;
    return atomic_load(&((WarmUp *)owner)->srv->cancel_all);
}

static int warm_cancelled(void *owner) {
    return atomic_load(&((WarmUp *)owner)->srv->cancel_all);
}

static void warm_done(void *owner, const EgJobResult *r) {
    WarmUp *w = owner;
    /* NOT_FOUND: deleted meanwhile; CANCELLED: shutting down. Either way the set is made ready
     * by its first request instead, so nothing is lost but a line. */
    if (r->status != EG_STATUS_OK && r->status != EG_STATUS_NOT_FOUND &&
        r->status != EG_STATUS_CANCELLED) {
        pthread_mutex_lock(&w->srv->log_mu);
        fprintf(w->srv->opt.log, "egret: example set %s: warm-up failed: %s\n", w->id,
                r->err ? r->err->msg : "?");
        fflush(w->srv->opt.log);
        pthread_mutex_unlock(&w->srv->log_mu);
    }
    free(w);
}

void eg_example_set_warm_up(EgServer *s, const char *id) {
    WarmUp *w = calloc(1, sizeof *w);
    if (!w) return;
    snprintf(w->id, sizeof w->id, "%s", id);
    w->srv = s;
    eg_sampling_params_default(&w->req.gen.sampling);
    w->req.gen.max_new_tokens = 1;
    w->req.example_set = w->id;
    w->req.example_set_warmup = 1;
    w->job = (EgJob){.req = &w->req,
                     .owner = w,
                     .on_token = warm_token,
                     .is_cancelled = warm_cancelled,
                     .on_done = warm_done};
    EgError err;
    if (eg_scheduler_submit(s->sched, &w->job, &err)) free(w); /* the first request does it */
}

/* ---- messages ---- */

static void sha256_hex(const void *data, size_t len, char out[65]) {
    uint8_t d[32];
    unsigned n = 0;
    static const char hex[] = "0123456789abcdef";
    if (!EVP_Digest(data, len, d, &n, EVP_sha256(), NULL) || n != 32) memset(d, 0, sizeof d);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[64] = 0;
}

static void set_message(const EgExampleSetInfo *info, Egret__V1__ExampleSet *m) {
    egret__v1__example_set__init(m);
    m->id = (char *)info->id;
    m->pair_count = info->n_pairs;
    m->template_ = (char *)info->template_name;
    m->bytes = info->bytes;
    m->prefix_tokens = info->prefix_tokens;
    m->ready = info->ready;
    m->uses = info->uses;
    m->hits = info->hits;
    m->created_unix_s = info->created_unix_s;
    m->last_used_unix_s = info->last_used_unix_s;
}

/* Answers with the set and its pairs' texts and image digests. */
static void answer_set(Call *c, const EgExampleSetInfo *info, const EgRequestExample *pairs,
                       size_t n, int created) {
    Egret__V1__ExampleSet m;
    set_message(info, &m);
    m.created = created;
    Egret__V1__ExamplePair *p = calloc(n + 1, sizeof *p);
    Egret__V1__ExamplePair **ptrs = calloc(n + 1, sizeof *ptrs);
    char(*digests)[65] = calloc(n + 1, sizeof *digests);
    if (!p || !ptrs || !digests) {
        free(p);
        free(ptrs);
        free(digests);
        answer(c, GRPC_STATUS_INTERNAL, "out of host memory", NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        egret__v1__example_pair__init(&p[i]);
        sha256_hex(pairs[i].image, pairs[i].image_len, digests[i]);
        p[i].text = (char *)pairs[i].text; /* NUL-terminated: stored so */
        p[i].image_sha256 = digests[i];
        p[i].image_bytes = pairs[i].image_len;
        ptrs[i] = &p[i];
    }
    m.n_pairs = n;
    m.pairs = ptrs;
    answer(c, GRPC_STATUS_OK, "", &m.base);
    free(p);
    free(ptrs);
    free(digests);
}

/* The request's bytes, inflated within max_request_bytes; -1 when the call was answered. */
static int read_bytes(Call *c, grpc_slice *all) {
    EgError err = {0};
    grpc_status_code read = eg_grpc_read_message(c->payload, c->srv->opt.max_request_bytes,
                                                 "max_request_bytes", all, &err);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
    if (read == GRPC_STATUS_OK) return 0;
    answer(c, read, err.msg, NULL);
    return -1;
}

/* The request message, or NULL when the call was answered. */
static ProtobufCMessage *read_request(Call *c, const ProtobufCMessageDescriptor *desc) {
    grpc_slice all;
    if (read_bytes(c, &all)) return NULL;
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (!m) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request is not a valid %s", desc->name);
        answer(c, GRPC_STATUS_INVALID_ARGUMENT, msg, NULL);
    }
    return m;
}

static void create_set(Call *c) {
    EgServer *s = c->srv;
    grpc_slice all;
    if (read_bytes(c, &all)) return;
    EgError err = {0};
    EgProtoExampleSet set;
    EgStatus st =
        eg_proto_example_set_decode(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all), &set, &err);
    grpc_slice_unref(all);
    if (st != EG_STATUS_OK) {
        answer(c, grpc_code(st), err.msg, NULL);
        return;
    }
    EgExampleSetInfo info;
    int created = 0;
    st = eg_engine_example_set_create(s->engine, set.pairs, set.n_pairs, set.template_name, NULL,
                                      &info, &created, &err);
    if (st == EG_STATUS_OK && created && s->opt.example_sets_dir &&
        eg_example_set_store_save(s->opt.example_sets_dir, info.id, set.pairs, set.n_pairs,
                                  info.template_name, &err)) {
        /* not kept unless it survives a restart, as promised */
        EgError ignored;
        eg_engine_example_set_delete(s->engine, info.id, &ignored);
        st = EG_STATUS_INTERNAL;
    }
    if (st != EG_STATUS_OK) {
        eg_proto_example_set_free(&set);
        answer(c, grpc_code(st), err.msg, NULL);
        return;
    }
    if (created) eg_example_set_warm_up(s, info.id);
    answer_set(c, &info, set.pairs, set.n_pairs, created);
    eg_proto_example_set_free(&set);
}

static void get_set(Call *c) {
    Egret__V1__GetExampleSetRequest *req = (Egret__V1__GetExampleSetRequest *)read_request(
        c, &egret__v1__get_example_set_request__descriptor);
    if (!req) return;
    EgError err = {0};
    EgExampleSetInfo info;
    EgRequestExample *pairs = NULL;
    size_t n = 0;
    EgStatus st = eg_engine_example_set_get(c->srv->engine, req->id, &info, &pairs, &n, &err);
    protobuf_c_message_free_unpacked(&req->base, NULL);
    if (st == EG_STATUS_OK)
        answer_set(c, &info, pairs, n, 0);
    else
        answer(c, grpc_code(st), err.msg, NULL);
    eg_example_pairs_free(pairs, n);
}

static void list_sets(Call *c) {
    ProtobufCMessage *req = read_request(c, &egret__v1__list_example_sets_request__descriptor);
    if (!req) return;
    protobuf_c_message_free_unpacked(req, NULL);
    EgError err = {0};
    EgExampleSetInfo *infos = NULL;
    size_t n = 0;
    Egret__V1__ExampleSet *sets = NULL;
    Egret__V1__ExampleSet **ptrs = NULL;
    if (eg_engine_example_sets_list(c->srv->engine, &infos, &n, &err) ||
        !(sets = calloc(n + 1, sizeof *sets)) || !(ptrs = calloc(n + 1, sizeof *ptrs))) {
        answer(c, GRPC_STATUS_INTERNAL, "out of host memory", NULL);
    } else {
        EgEngineStats es;
        eg_engine_stats(c->srv->engine, &es);
        Egret__V1__ListExampleSetsResponse r = EGRET__V1__LIST_EXAMPLE_SETS_RESPONSE__INIT;
        for (size_t i = 0; i < n; i++) {
            set_message(&infos[i], &sets[i]);
            ptrs[i] = &sets[i];
        }
        r.n_sets = n;
        r.sets = ptrs;
        r.bytes = es.example_set_bytes;
        r.budget_bytes = es.example_sets_budget;
        r.max_sets = (uint32_t)es.max_example_sets;
        answer(c, GRPC_STATUS_OK, "", &r.base);
    }
    free(infos);
    free(sets);
    free(ptrs);
}

static void delete_set(Call *c) {
    EgServer *s = c->srv;
    Egret__V1__DeleteExampleSetRequest *req = (Egret__V1__DeleteExampleSetRequest *)read_request(
        c, &egret__v1__delete_example_set_request__descriptor);
    if (!req) return;
    EgError err = {0};
    EgStatus st = eg_engine_example_set_delete(s->engine, req->id, &err);
    /* the registry forgets it first: a file left behind by a failed removal comes back at the
     * next start, which is said here */
    if (st == EG_STATUS_OK && s->opt.example_sets_dir &&
        eg_example_set_store_remove(s->opt.example_sets_dir, req->id, &err))
        st = EG_STATUS_INTERNAL;
    protobuf_c_message_free_unpacked(&req->base, NULL);
    if (st == EG_STATUS_OK) {
        eg_scheduler_tidy(s->sched); /* its device memory, unless requests still use it */
        Egret__V1__DeleteExampleSetResponse r = EGRET__V1__DELETE_EXAMPLE_SET_RESPONSE__INIT;
        answer(c, GRPC_STATUS_OK, "", &r.base);
    } else {
        answer(c, grpc_code(st), err.msg, NULL);
    }
}

void eg_example_sets_call(Call *c) {
    switch (c->method) {
    case M_CREATE_SET:
        create_set(c);
        return;
    case M_GET_SET:
        get_set(c);
        return;
    case M_LIST_SETS:
        list_sets(c);
        return;
    case M_DELETE_SET:
        delete_set(c);
        return;
    default:
        answer(c, GRPC_STATUS_INTERNAL, "not an example set method", NULL);
    }
}

static void warm_loaded(void *user, const char *id) {
    eg_example_set_warm_up(user, id);
}

int eg_example_sets_load(EgServer *s, EgError *err) {
    const char *dir = s->opt.example_sets_dir;
    if (!dir) return 0;
    if (mkdir(dir, 0755) && errno != EEXIST)
        return eg_fail(err, "cannot create the example sets directory %s: %s", dir,
                       strerror(errno));
    int n = eg_example_set_store_load(dir, s->engine, s->opt.log, warm_loaded, s, err);
    if (n < 0) return -1;
    fprintf(s->opt.log, "egret: %d example set%s registered from %s\n", n, n == 1 ? "" : "s", dir);
    return 0;
}
