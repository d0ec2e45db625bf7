/* Example sets (engine/engine.h, proto CreateExampleSet): a set named by id gives exactly the
 * answer of the same pairs sent inline; ids are content hashes (same pairs, same id, stored
 * once, also when many clients race to create it); bad sets are refused with a status naming
 * what is wrong; the set's images and prefix are kept however much other traffic churns the
 * caches; deleting a set lets the requests using it finish while new ones get NOT_FOUND; sets
 * persisted in a directory come back after a restart, corrupt and foreign files skipped with a
 * warning naming them. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "server/example_set_store.h"
#include "server/proto_request.h"
#include "test_util.h"
#include "tools/shapes_world.h"

enum { N_SHOTS = 4 };

/* REQUIRE for the void test functions: stops the function, not the program. */
#define REQUIRE_VOID(cond, ...)                                                                    \
    do {                                                                                           \
        int require_ok_ = (cond) ? 1 : 0;                                                          \
        TEST_CHECK_VALUE(require_ok_, #cond, __VA_ARGS__);                                         \
        if (!require_ok_) return;                                                                  \
    } while (0)

static TestPng shots[N_SHOTS + 8];
static char answers[N_SHOTS + 8][EG_SHAPES_TEXT_MAX];
static EgRequestExample pairs[N_SHOTS + 8];
static TestPng query;

static void make_images(void) {
    uint64_t seed = test_rng_u64();
    for (int i = 0; i < N_SHOTS + 8; i++) {
        shots[i] = test_shapes_png(seed + (uint64_t)i, 1);
        EgShapesScene scene;
        eg_shapes_scene_from_seed(seed + (uint64_t)i, 1, &scene);
        eg_shapes_answer(&scene, EG_SHAPES_TASK_COLOR, answers[i], sizeof answers[i]);
        pairs[i] = (EgRequestExample){shots[i].bytes, shots[i].len, answers[i], strlen(answers[i])};
    }
    query = test_shapes_png(seed + 1000, 1);
}

static EgRequestPart query_part(const TestPng *png) {
    return (EgRequestPart){.is_image = 1, .image = png->bytes, .image_len = png->len};
}

static EgStatus create(EgEngine *e, const EgRequestExample *p, size_t n, EgExampleSetInfo *info,
                       int *created, EgError *err) {
    return eg_engine_example_set_create(e, p, n, NULL, NULL, info, created, err);
}

static EgExampleSetInfo info_of(EgEngine *e, const char *id) {
    EgExampleSetInfo info = {0};
    EgError err = {0};
    CHECK(eg_engine_example_set_get(e, id, &info, NULL, NULL, &err) == EG_STATUS_OK, "get: %s",
          err.msg);
    return info;
}

static int same_ids(const EgGenerateResult *a, const EgGenerateResult *b) {
    return a->n_ids == b->n_ids && memcmp(a->ids, b->ids, a->n_ids * sizeof *a->ids) == 0 &&
           strcmp(a->text, b->text) == 0;
}

/* Greedy answer to the query after the set (by id) or the pairs (inline). */
static EgStatus ask(EgEngine *e, const char *id, const EgRequestExample *p, size_t n,
                    const TestPng *q, uint32_t max_new, EgGenerateResult *out, EgError *err) {
    EgRequestPart part = query_part(q);
    EgRequest req = test_greedy_request(max_new);
    req.parts = &part;
    req.n_parts = 1;
    req.examples = p;
    req.n_examples = n;
    req.example_set = id;
    return eg_engine_generate(e, &req, NULL, NULL, out, NULL, err);
}

static void warm_up(EgEngine *e, const char *id) {
    EgRequest req = test_greedy_request(1);
    req.example_set = id;
    req.example_set_warmup = 1;
    EgGenerateResult r;
    EgError err = {0};
    CHECK(eg_engine_generate(e, &req, NULL, NULL, &r, NULL, &err) == EG_STATUS_OK, "warm-up: %s",
          err.msg);
    eg_generate_result_free(&r);
}

/* ---- bad sets ---- */

static void test_bad_sets(EgEngine *e) {
    EgExampleSetInfo info;
    int created;
    EgError err = {0};
    CHECK(create(e, pairs, 0, &info, &created, &err) == EG_STATUS_INVALID_ARGUMENT &&
              strstr(err.msg, "empty"),
          "empty set: %s", err.msg);
    /* max_images 16 (the default): 16 pairs leave no room for the query */
    EgRequestExample many[16];
    for (int i = 0; i < 16; i++)
        many[i] = pairs[i % (N_SHOTS + 8)];
    err = (EgError){0};
    CHECK(create(e, many, 16, &info, &created, &err) == EG_STATUS_RESOURCE_EXHAUSTED &&
              strstr(err.msg, "max_images"),
          "16 pairs: %s", err.msg);
    EgRequestExample bad = pairs[0];
    bad.text = "caf\xc3";
    bad.text_len = 4;
    err = (EgError){0};
    CHECK(create(e, &bad, 1, &info, &created, &err) == EG_STATUS_INVALID_ARGUMENT &&
              strstr(err.msg, "example 0") && strstr(err.msg, "UTF-8"),
          "not UTF-8: %s", err.msg);
    bad.text = "red\0.";
    bad.text_len = 5;
    err = (EgError){0};
    CHECK(create(e, &bad, 1, &info, &created, &err) == EG_STATUS_INVALID_ARGUMENT &&
              strstr(err.msg, "U+0000"),
          "NUL in text: %s", err.msg);
    bad = pairs[1];
    bad.image = "not an image at all";
    bad.image_len = 19;
    EgRequestExample two[2] = {pairs[0], bad};
    err = (EgError){0};
    CHECK(create(e, two, 2, &info, &created, &err) == EG_STATUS_INVALID_ARGUMENT &&
              strstr(err.msg, "image 1"),
          "a broken image: %s", err.msg);
    err = (EgError){0};
    CHECK(eg_engine_example_set_create(e, pairs, 1, "chatml", NULL, &info, &created, &err) ==
                  EG_STATUS_INVALID_ARGUMENT &&
              strstr(err.msg, "chatml"),
          "unknown template: %s", err.msg);
    uint64_t count = 0;
    EgEngineStats st;
    eg_engine_stats(e, &st);
    count = st.example_sets;
    CHECK(count == 0, "%llu sets held after only bad ones", (unsigned long long)count);
}

/* ---- ids, answers, hits ---- */

static void test_ids_and_answers(EgEngine *e, EgEngine *plain) {
    EgExampleSetInfo a, b, c;
    int created_a, created_b, created_c;
    EgError err = {0};
    REQUIRE_VOID(create(e, pairs, N_SHOTS, &a, &created_a, &err) == EG_STATUS_OK, "create: %s",
                 err.msg);
    CHECK(create(e, pairs, N_SHOTS, &b, &created_b, &err) == EG_STATUS_OK, "again: %s", err.msg);
    CHECK(created_a && !created_b && strcmp(a.id, b.id) == 0, "created twice: %d %d, ids %s %s",
          created_a, created_b, a.id, b.id);
    CHECK(strlen(a.id) == 64 && strspn(a.id, "0123456789abcdef") == 64, "id '%s'", a.id);
    /* the id is a hash of the content: another text, another id */
    EgRequestExample other[N_SHOTS];
    memcpy(other, pairs, sizeof other);
    other[0].text = "nothing.";
    other[0].text_len = 8;
    CHECK(create(e, other, N_SHOTS, &c, &created_c, &err) == EG_STATUS_OK && created_c &&
              strcmp(c.id, a.id) != 0,
          "other pairs: %s (%s)", c.id, err.msg);
    CHECK(eg_engine_example_set_delete(e, c.id, &err) == EG_STATUS_OK, "delete: %s", err.msg);
    /* the same id as another engine (replica) computes */
    EgExampleSetInfo p;
    int created_p;
    CHECK(create(plain, pairs, N_SHOTS, &p, &created_p, &err) == EG_STATUS_OK &&
              strcmp(p.id, a.id) == 0,
          "another replica's id %s, this one's %s", p.id, a.id);

    /* By id, before and after it is kept, and inline on an engine without caches: the same. */
    EgGenerateResult cold, by_id, inline_plain, inline_here;
    CHECK(ask(e, a.id, NULL, 0, &query, 12, &cold, &err) == EG_STATUS_OK, "by id: %s", err.msg);
    EgExampleSetInfo after_first = info_of(e, a.id);
    CHECK(after_first.ready && after_first.uses == 1 && after_first.hits == 0,
          "after the first use: ready %d uses %llu hits %llu", after_first.ready,
          (unsigned long long)after_first.uses, (unsigned long long)after_first.hits);
    CHECK(ask(e, a.id, NULL, 0, &query, 12, &by_id, &err) == EG_STATUS_OK, "by id: %s", err.msg);
    CHECK(ask(plain, NULL, pairs, N_SHOTS, &query, 12, &inline_plain, &err) == EG_STATUS_OK,
          "inline: %s", err.msg);
    CHECK(ask(e, NULL, pairs, N_SHOTS, &query, 12, &inline_here, &err) == EG_STATUS_OK,
          "inline: %s", err.msg);
    CHECK(same_ids(&cold, &inline_plain) && same_ids(&by_id, &inline_plain) &&
              same_ids(&inline_here, &inline_plain),
          "answers: first by id '%s', kept by id '%s', inline '%s', inline uncached '%s'",
          cold.text, by_id.text, inline_here.text, inline_plain.text);
    EgExampleSetInfo after = info_of(e, a.id);
    CHECK(after.uses == 2 && after.hits == 1, "uses %llu hits %llu (inline requests are no use)",
          (unsigned long long)after.uses, (unsigned long long)after.hits);
    eg_generate_result_free(&cold);
    eg_generate_result_free(&by_id);
    eg_generate_result_free(&inline_plain);
    eg_generate_result_free(&inline_here);

    /* Both, an unknown id, and one that is no id at all. */
    EgRequestPart part = query_part(&query);
    EgRequest both = test_greedy_request(4);
    both.parts = &part;
    both.n_parts = 1;
    both.examples = pairs;
    both.n_examples = 1;
    both.example_set = a.id;
    EgGenerateResult r;
    err = (EgError){0};
    CHECK(eg_engine_generate(e, &both, NULL, NULL, &r, NULL, &err) == EG_STATUS_INVALID_ARGUMENT &&
              strstr(err.msg, "both"),
          "both: %s", err.msg);
    char unknown[65];
    memset(unknown, 'a', 64);
    unknown[64] = 0;
    err = (EgError){0};
    CHECK(ask(e, unknown, NULL, 0, &query, 4, &r, &err) == EG_STATUS_NOT_FOUND &&
              strstr(err.msg, unknown),
          "unknown id: %s", err.msg);
    err = (EgError){0};
    CHECK(ask(e, "red\nlight", NULL, 0, &query, 4, &r, &err) == EG_STATUS_INVALID_ARGUMENT,
          "not an id: %s", err.msg);
    CHECK(eg_engine_example_set_delete(e, a.id, &err) == EG_STATUS_OK, "delete: %s", err.msg);
    CHECK(eg_engine_example_set_delete(plain, a.id, &err) == EG_STATUS_OK, "delete: %s", err.msg);
}

/* ---- kept under pressure ---- */

/* e: an engine whose ordinary caches are off, the most pressure there is: nothing they would
 * hold survives the request that put it there. */
static void test_never_evicted(EgEngine *e) {
    EgError err = {0};
    EgExampleSetInfo set;
    int created;
    CHECK(create(e, pairs, N_SHOTS, &set, &created, &err) == EG_STATUS_OK, "create: %s", err.msg);
    warm_up(e, set.id);
    for (int round = 0; round < 4; round++) {
        /* other traffic: other pairs, other queries */
        EgGenerateResult r;
        TestPng q = test_shapes_png(test_rng_u64(), 2);
        CHECK(ask(e, NULL, pairs + N_SHOTS + 2 * (round % 4), 2, &q, 4, &r, &err) == EG_STATUS_OK,
              "other traffic: %s", err.msg);
        eg_generate_result_free(&r);
        CHECK(ask(e, set.id, NULL, 0, &q, 4, &r, &err) == EG_STATUS_OK, "by id: %s", err.msg);
        eg_generate_result_free(&r);
        free(q.bytes);
    }
    EgExampleSetInfo after = info_of(e, set.id);
    CHECK(after.uses == 4 && after.hits == 4, "under pressure: %llu uses, %llu hits",
          (unsigned long long)after.uses, (unsigned long long)after.hits);
    EgEngineStats st;
    eg_engine_stats(e, &st);
    CHECK(st.image_cache_entries == 0 && st.prefix_cache_entries == 0 &&
              st.example_set_device_bytes > 0,
          "ordinary entries %llu + %llu, pinned bytes %llu",
          (unsigned long long)st.image_cache_entries, (unsigned long long)st.prefix_cache_entries,
          (unsigned long long)st.example_set_device_bytes);
    /* what a set was charged when it was created covers what it pins once kept */
    CHECK(st.example_set_device_bytes <= after.bytes, "pinned %llu bytes, charged %llu",
          (unsigned long long)st.example_set_device_bytes, (unsigned long long)after.bytes);
    /* deleting the set gives its pinned memory back */
    CHECK(eg_engine_example_set_delete(e, set.id, &err) == EG_STATUS_OK, "delete: %s", err.msg);
    eg_engine_tidy(e);
    eg_engine_stats(e, &st);
    CHECK(st.example_sets == 0 && st.example_set_bytes == 0, "after delete: %llu sets, %llu bytes",
          (unsigned long long)st.example_sets, (unsigned long long)st.example_set_bytes);
    CHECK(st.example_set_device_bytes == 0, "%llu bytes still pinned after the delete",
          (unsigned long long)st.example_set_device_bytes);
}

/* ---- budget and count ---- */

static void test_budget(void) {
    EgEngineOptions small = {.caches = {.example_sets_mb = 1, .max_example_sets = 1}};
    EgError err = {0};
    EgEngine *e = eg_engine_open(test_model_path("shapes-idefics"), &small, &err);
    REQUIRE_VOID(e, "open: %s", err.msg);
    EgExampleSetInfo one, two;
    int created;
    CHECK(create(e, pairs, 1, &one, &created, &err) == EG_STATUS_OK, "1 pair: %s", err.msg);
    err = (EgError){0};
    CHECK(create(e, pairs + 1, 1, &two, &created, &err) == EG_STATUS_RESOURCE_EXHAUSTED &&
              strstr(err.msg, "max_example_sets"),
          "over the count: %s", err.msg);
    /* an existing set is no new set */
    CHECK(create(e, pairs, 1, &one, &created, &err) == EG_STATUS_OK && !created, "again: %s",
          err.msg);
    CHECK(eg_engine_example_set_delete(e, one.id, &err) == EG_STATUS_OK, "delete: %s", err.msg);
    /* 15 pairs: 15 images' features and a KV cache of their prefix, over 1 MiB */
    EgRequestExample fifteen[15];
    for (int i = 0; i < 15; i++)
        fifteen[i] = pairs[i % (N_SHOTS + 8)];
    err = (EgError){0};
    CHECK(create(e, fifteen, 15, &two, &created, &err) == EG_STATUS_RESOURCE_EXHAUSTED &&
              strstr(err.msg, "example_sets_mb") && strstr(err.msg, "1048576 bytes"),
          "over the budget: %s", err.msg);
    EgEngineStats st;
    eg_engine_stats(e, &st);
    CHECK(st.example_sets == 0 && st.example_set_bytes == 0, "held %llu bytes",
          (unsigned long long)st.example_set_bytes);
    CHECK(create(e, pairs, 1, &one, &created, &err) == EG_STATUS_OK && created, "again: %s",
          err.msg);
    eg_engine_stats(e, &st);
    CHECK(st.example_set_bytes == one.bytes && one.bytes <= (1u << 20), "held %llu, the set %llu",
          (unsigned long long)st.example_set_bytes, (unsigned long long)one.bytes);
    eg_engine_close(e);
}

/* ---- delete during use ---- */

static void test_delete_during_use(EgEngine *e) {
    EgExampleSetInfo set;
    int created;
    EgError err = {0};
    CHECK(create(e, pairs, N_SHOTS, &set, &created, &err) == EG_STATUS_OK, "create: %s", err.msg);
    EgRequestPart part = query_part(&query);
    EgRequest req = test_greedy_request(24);
    req.parts = &part;
    req.n_parts = 1;
    req.example_set = set.id;
    req.gen.ignore_eos = 1;
    req.gen.stop = (const char *const[]){"never stop here"};
    req.gen.n_stop = 1;
    EgEngineJob *job = NULL;
    REQUIRE_VOID(eg_engine_begin(e, &req, NULL, NULL, &job, NULL, &err) == EG_STATUS_OK,
                 "begin: %s", err.msg);
    for (int i = 0; i < 3; i++)
        eg_engine_step(e, &job, 1, &err);
    CHECK(eg_engine_example_set_delete(e, set.id, &err) == EG_STATUS_OK, "delete: %s", err.msg);
    EgGenerateResult r;
    err = (EgError){0};
    CHECK(ask(e, set.id, NULL, 0, &query, 4, &r, &err) == EG_STATUS_NOT_FOUND,
          "a new request after the delete: %s", err.msg);
    while (!eg_engine_job_finished(job))
        CHECK(eg_engine_step(e, &job, 1, &err) == 0, "step: %s", err.msg);
    CHECK(eg_engine_end(job, &r, &err) == EG_STATUS_OK && r.n_ids == 24,
          "the request using it: %zu tokens (%s)", r.n_ids, err.msg);
    eg_generate_result_free(&r);
    EgEngineStats st;
    eg_engine_stats(e, &st);
    CHECK(st.example_sets == 0 && st.example_set_bytes == 0, "%llu sets left",
          (unsigned long long)st.example_sets);
}

/* ---- over gRPC ---- */

typedef struct Reply {
    uint8_t *data;
    size_t len;
} Reply;

static int keep(void *user, const uint8_t *data, size_t len) {
    Reply *r = user;
    free(r->data);
    r->data = malloc(len + 1);
    memcpy(r->data, data, len);
    r->len = len;
    return 0;
}

static grpc_status_code rpc(const char *addr, const char *method, const uint8_t *body, size_t len,
                            Reply *reply, char *msg, size_t cap) {
    char path[128];
    snprintf(path, sizeof path, "/egret.v1.Egret/%s", method);
    return test_call(addr, NULL, path, body, len, 60, keep, reply, msg, cap);
}

static Egret__V1__ExampleSet *grpc_create(const char *addr, const EgRequestExample *p, size_t n,
                                          grpc_status_code *code, char *msg, size_t cap) {
    uint8_t *body;
    size_t len;
    EgError err = {0};
    if (eg_proto_example_set_encode(p, n, NULL, &body, &len, &err)) return NULL;
    Reply r = {0};
    *code = rpc(addr, "CreateExampleSet", body, len, &r, msg, cap);
    free(body);
    Egret__V1__ExampleSet *s =
        *code == GRPC_STATUS_OK ? egret__v1__example_set__unpack(NULL, r.len, r.data) : NULL;
    free(r.data);
    return s;
}

typedef struct Racer {
    pthread_t thread;
    const char *addr;
    grpc_status_code code;
    char id[65];
    int created;
} Racer;

static void *race(void *arg) {
    Racer *r = arg;
    char msg[256];
    Egret__V1__ExampleSet *s = grpc_create(r->addr, pairs + 2, N_SHOTS, &r->code, msg, sizeof msg);
    if (s) {
        snprintf(r->id, sizeof r->id, "%s", s->id);
        r->created = s->created;
        egret__v1__example_set__free_unpacked(s, NULL);
    }
    return NULL;
}

/* Generate over gRPC: id (or NULL) and inline pairs. */
static grpc_status_code grpc_generate(const char *addr, const char *id, const EgRequestExample *p,
                                      size_t n, uint32_t max_new, EgClientAnswer *a,
                                      size_t *request_bytes, char *msg, size_t cap) {
    EgRequestPart part = query_part(&query);
    EgRequest req = test_greedy_request(max_new);
    req.parts = &part;
    req.n_parts = 1;
    req.examples = p;
    req.n_examples = n;
    req.example_set = id;
    uint8_t *body;
    size_t len;
    EgError err = {0};
    memset(a, 0, sizeof *a);
    if (eg_proto_request_encode(&req, &body, &len, &err)) return GRPC_STATUS_INTERNAL;
    if (request_bytes) *request_bytes = len;
    Reply r = {0};
    grpc_status_code code = rpc(addr, "Generate", body, len, &r, msg, cap);
    free(body);
    Egret__V1__GenerateResponse *g =
        code == GRPC_STATUS_OK ? egret__v1__generate_response__unpack(NULL, r.len, r.data) : NULL;
    if (g) {
        a->text = strdup(g->text);
        a->n_ids = g->n_token_ids;
        a->ids = malloc((g->n_token_ids + 1) * sizeof *a->ids);
        memcpy(a->ids, g->token_ids, g->n_token_ids * sizeof *a->ids);
        egret__v1__generate_response__free_unpacked(g, NULL);
    }
    free(r.data);
    return code;
}

typedef struct LongCall {
    pthread_t thread;
    const char *addr, *id;
    grpc_status_code code;
    uint32_t n_ids;
    char msg[256];
} LongCall;

/* A long answer by id (every token up to max_new_tokens), to delete the set under. */
static void *long_call(void *arg) {
    LongCall *c = arg;
    EgRequestPart part = query_part(&query);
    EgRequest req = test_greedy_request(400);
    req.parts = &part;
    req.n_parts = 1;
    req.example_set = c->id;
    req.gen.ignore_eos = 1;
    req.gen.stop = (const char *const[]){"never stop here"};
    req.gen.n_stop = 1;
    uint8_t *body;
    size_t len;
    EgError err = {0};
    if (eg_proto_request_encode(&req, &body, &len, &err)) return NULL;
    Reply r = {0};
    c->code = rpc(c->addr, "Generate", body, len, &r, c->msg, sizeof c->msg);
    Egret__V1__GenerateResponse *g = c->code == GRPC_STATUS_OK
                                         ? egret__v1__generate_response__unpack(NULL, r.len, r.data)
                                         : NULL;
    c->n_ids = g ? (uint32_t)g->n_token_ids : 0;
    if (g) egret__v1__generate_response__free_unpacked(g, NULL);
    free(r.data);
    free(body);
    return NULL;
}

static void test_grpc(EgEngine *e) {
    TestServer srv;
    if (test_server_start(&srv, e, (EgServerOptions){0}, "sets")) return;
    char msg[512];
    grpc_status_code code;

    /* many clients racing to create the same set: one id, stored once */
    Racer racers[8];
    for (int i = 0; i < 8; i++) {
        racers[i] = (Racer){.addr = srv.addr};
        pthread_create(&racers[i].thread, NULL, race, &racers[i]);
    }
    int n_created = 0, same = 1;
    for (int i = 0; i < 8; i++) {
        pthread_join(racers[i].thread, NULL);
        n_created += racers[i].created;
        same &= racers[i].code == GRPC_STATUS_OK && strcmp(racers[i].id, racers[0].id) == 0;
    }
    CHECK(same && n_created == 1, "racing creations: same id %d, %d created", same, n_created);
    Egret__V1__ServerStats *stats = test_server_stats(srv.addr);
    CHECK(stats && stats->example_sets == 1, "sets held after the race: %u",
          stats ? stats->example_sets : 0);
    if (stats) egret__v1__server_stats__free_unpacked(stats, NULL);
    const char *id = racers[0].id;

    /* by id and inline: the same tokens, for a fraction of the bytes */
    EgClientAnswer by_id, inline_a;
    size_t id_bytes = 0, inline_bytes = 0;
    code = grpc_generate(srv.addr, id, NULL, 0, 12, &by_id, &id_bytes, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_OK, "by id: %d %s", (int)code, msg);
    code = grpc_generate(srv.addr, NULL, pairs + 2, N_SHOTS, 12, &inline_a, &inline_bytes, msg,
                         sizeof msg);
    CHECK(code == GRPC_STATUS_OK, "inline: %d %s", (int)code, msg);
    CHECK(by_id.text && inline_a.text && strcmp(by_id.text, inline_a.text) == 0 &&
              by_id.n_ids == inline_a.n_ids &&
              memcmp(by_id.ids, inline_a.ids, by_id.n_ids * sizeof *by_id.ids) == 0,
          "by id '%s', inline '%s'", by_id.text, inline_a.text);
    CHECK(id_bytes < inline_bytes / 4, "request bytes by id %zu, inline %zu", id_bytes,
          inline_bytes);
    eg_client_answer_free(&by_id);
    eg_client_answer_free(&inline_a);

    /* statuses */
    char unknown[65];
    memset(unknown, 'b', 64);
    unknown[64] = 0;
    EgClientAnswer a;
    code = grpc_generate(srv.addr, unknown, NULL, 0, 4, &a, NULL, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_NOT_FOUND && strstr(msg, unknown), "unknown id: %d %s", (int)code,
          msg);
    eg_client_answer_free(&a);
    code = grpc_generate(srv.addr, id, pairs, 1, 4, &a, NULL, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_INVALID_ARGUMENT && strstr(msg, "both"), "both: %d %s", (int)code,
          msg);
    eg_client_answer_free(&a);
    Egret__V1__ExampleSet *s = grpc_create(srv.addr, pairs, 0, &code, msg, sizeof msg);
    CHECK(!s && code == GRPC_STATUS_INVALID_ARGUMENT && strstr(msg, "empty"), "empty: %d %s",
          (int)code, msg);
    /* a NUL inside a text, which protobuf-c alone would silently cut: written on the wire */
    uint8_t wire[64 + 16384];
    size_t n = 0, img = shots[0].len;
    REQUIRE_VOID(img < 16000, "image of %zu bytes", img);
    size_t inner = 1 + 2 + img + 2 + 5;
    wire[n++] = 0x0a; /* examples, length-delimited */
    wire[n++] = (uint8_t)(0x80 | (inner & 0x7f));
    wire[n++] = (uint8_t)(inner >> 7);
    wire[n++] = 0x0a; /* image */
    wire[n++] = (uint8_t)(0x80 | (img & 0x7f));
    wire[n++] = (uint8_t)(img >> 7);
    memcpy(wire + n, shots[0].bytes, img);
    n += img;
    memcpy(wire + n, "\x12\x05red\0.", 7); /* text "red\0." */
    n += 7;
    Reply r = {0};
    code = rpc(srv.addr, "CreateExampleSet", wire, n, &r, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_INVALID_ARGUMENT && strstr(msg, "U+0000"), "NUL: %d %s", (int)code,
          msg);
    free(r.data);
    Egret__V1__GetExampleSetRequest get = EGRET__V1__GET_EXAMPLE_SET_REQUEST__INIT;
    get.id = (char *)id;
    uint8_t buf[128];
    size_t len = egret__v1__get_example_set_request__pack(&get, buf);
    r = (Reply){0};
    code = rpc(srv.addr, "GetExampleSet", buf, len, &r, msg, sizeof msg);
    s = code == GRPC_STATUS_OK ? egret__v1__example_set__unpack(NULL, r.len, r.data) : NULL;
    CHECK(s && s->n_pairs == N_SHOTS && strcmp(s->pairs[0]->text, answers[2]) == 0 &&
              s->pairs[0]->image_bytes == shots[2].len && strlen(s->pairs[0]->image_sha256) == 64 &&
              s->uses == 1,
          "get: %d %s", (int)code, msg);
    if (s) egret__v1__example_set__free_unpacked(s, NULL);
    free(r.data);

    /* deleting while a request uses the set: it finishes, the next one is NOT_FOUND */
    LongCall running = {.addr = srv.addr, .id = id};
    pthread_create(&running.thread, NULL, long_call, &running);
    test_wait_for_engine(srv.addr, 1, 0);
    Egret__V1__DeleteExampleSetRequest del = EGRET__V1__DELETE_EXAMPLE_SET_REQUEST__INIT;
    del.id = (char *)id;
    len = egret__v1__delete_example_set_request__pack(&del, buf);
    r = (Reply){0};
    code = rpc(srv.addr, "DeleteExampleSet", buf, len, &r, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_OK, "delete: %d %s", (int)code, msg);
    free(r.data);
    code = grpc_generate(srv.addr, id, NULL, 0, 4, &a, NULL, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_NOT_FOUND, "by id after the delete: %d %s", (int)code, msg);
    eg_client_answer_free(&a);
    pthread_join(running.thread, NULL);
    CHECK(running.code == GRPC_STATUS_OK && running.n_ids == 400,
          "the request using the deleted set: %d %s, %u tokens", (int)running.code, running.msg,
          running.n_ids);
    r = (Reply){0};
    code = rpc(srv.addr, "DeleteExampleSet", buf, len, &r, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_NOT_FOUND, "delete twice: %d %s", (int)code, msg);
    free(r.data);
    /* the delete was answered while the long request was still running */
    char *log = test_server_stop(&srv);
    const char *deleted = log ? strstr(log, "DeleteExampleSet") : NULL;
    const char *finished = log ? strstr(log, "generated=400") : NULL;
    CHECK(deleted && finished && deleted < finished,
          "the delete came after the request using the set ended:\n%s", log ? log : "");
    free(log);
}

/* ---- persistence ---- */

static void test_persistence(EgEngine *e) {
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/egret-test-sets-%ld", (long)getpid());
    mkdir(dir, 0755);
    TestServer srv;
    if (test_server_start(&srv, e, (EgServerOptions){.example_sets_dir = dir}, "persist")) return;
    char msg[512];
    grpc_status_code code;
    Egret__V1__ExampleSet *kept = grpc_create(srv.addr, pairs, N_SHOTS, &code, msg, sizeof msg);
    Egret__V1__ExampleSet *other = grpc_create(srv.addr, pairs + 4, 2, &code, msg, sizeof msg);
    free(test_server_stop(&srv));
    REQUIRE_VOID(kept && other, "create: %s", msg);
    /* forget them here, as a restarted process would not know them */
    EgError err = {0};
    eg_engine_example_set_delete(e, kept->id, &err);
    eg_engine_example_set_delete(e, other->id, &err);
    /* a corrupt file, a file of another format, and a set whose name says another id (made
     * for another model) */
    char path[512], foreign[512], corrupt[512], stray[512];
    snprintf(path, sizeof path, "%s/%s.egset", dir, other->id);
    snprintf(foreign, sizeof foreign, "%s/%064d.egset", dir, 7);
    snprintf(corrupt, sizeof corrupt, "%s/%064d.egset", dir, 8);
    snprintf(stray, sizeof stray, "%s/notes.txt", dir);
    CHECK(rename(path, foreign) == 0, "rename %s", path);
    FILE *f = fopen(corrupt, "wb");
    if (f) {
        fwrite("EGRETSET\x01\0\0\0\x0a\xff\xff", 1, 13, f); /* a message cut short */
        fclose(f);
    }
    f = fopen(stray, "w");
    if (f) {
        fputs("not a set\n", f);
        fclose(f);
    }
    if (test_server_start(&srv, e, (EgServerOptions){.example_sets_dir = dir}, "persist2")) return;
    Egret__V1__ListExampleSetsRequest lreq = EGRET__V1__LIST_EXAMPLE_SETS_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = egret__v1__list_example_sets_request__pack(&lreq, buf);
    Reply r = {0};
    code = rpc(srv.addr, "ListExampleSets", buf, len, &r, msg, sizeof msg);
    Egret__V1__ListExampleSetsResponse *list =
        code == GRPC_STATUS_OK ? egret__v1__list_example_sets_response__unpack(NULL, r.len, r.data)
                               : NULL;
    CHECK(list && list->n_sets == 1 && strcmp(list->sets[0]->id, kept->id) == 0,
          "after the restart: %zu sets", list ? list->n_sets : 0);
    if (list) egret__v1__list_example_sets_response__free_unpacked(list, NULL);
    free(r.data);
    EgClientAnswer a;
    code = grpc_generate(srv.addr, kept->id, NULL, 0, 4, &a, NULL, msg, sizeof msg);
    CHECK(code == GRPC_STATUS_OK, "by id after the restart: %d %s", (int)code, msg);
    eg_client_answer_free(&a);
    char *log = test_server_stop(&srv);
    CHECK(log && strstr(log, foreign) && strstr(log, "another model"), "no warning naming %s:\n%s",
          foreign, log ? log : "");
    CHECK(log && strstr(log, corrupt) && strstr(log, "skipping"), "no warning naming %s", corrupt);
    CHECK(log && !strstr(log, "notes.txt"), "a file not named *.egset was looked at");
    free(log);
    eg_engine_example_set_delete(e, kept->id, &err);
    char name[600];
    snprintf(name, sizeof name, "%s/%s.egset", dir, kept->id);
    unlink(name);
    unlink(foreign);
    unlink(corrupt);
    unlink(stray);
    CHECK(rmdir(dir) == 0, "%s holds files nobody wrote (temporary files left behind?)", dir);
    egret__v1__example_set__free_unpacked(kept, NULL);
    egret__v1__example_set__free_unpacked(other, NULL);
}

int main(void) {
    test_rng_init();
    make_images();
    EgError err = {0};
    EgEngine *e = eg_engine_open(test_model_path("shapes-idefics"), NULL, &err);
    REQUIRE(e, "open: %s", err.msg);
    EgEngineOptions off = {.caches = {.image_cache_mb = -1, .prefix_cache_entries = -1}};
    EgEngine *plain = eg_engine_open(test_model_path("shapes-idefics"), &off, &err);
    REQUIRE(plain, "open: %s", err.msg);
    test_bad_sets(e);
    test_ids_and_answers(e, plain);
    test_delete_during_use(e);
    test_never_evicted(plain);
    eg_engine_close(plain);
    test_budget();
    test_grpc(e);
    test_persistence(e);
    eg_engine_close(e);
    for (int i = 0; i < N_SHOTS + 8; i++)
        free(shots[i].bytes);
    free(query.bytes);
    return test_finish();
}
