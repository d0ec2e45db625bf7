/* Inside the load test (grpc_loadtest.h): the requests it sends (grpc_loadtest_requests.c),
 * shared by the run and its clients (grpc_loadtest.c). */
#ifndef EGRET_GRPC_LOADTEST_INTERNAL_H
#define EGRET_GRPC_LOADTEST_INTERNAL_H

#include <grpc/status.h>
#include <stdint.h>

#include "runtime/hash.h"

#include "engine/engine.h"
#include "tools/grpc_loadtest.h"
#include "tools/shapes_world.h"

/* The images requests carry: shapes-world scenes, as PNG. */
enum { LOAD_POOL = 12 };

typedef struct PoolImage {
    uint8_t *png;
    size_t len;
    int single;                         /* one object: colour and shape answers exist */
    char answer[4][EG_SHAPES_TEXT_MAX]; /* caption, count, color, shape */
} PoolImage;

/* One request of the mix, and what its call should get. */
typedef struct EgLoadReq {
    uint64_t index;
    EgLoadKind kind;
    EgRequest req;
    EgRequestPart parts[4];
    EgRequestExample ex[2];
    const char *stops[1];
    char text[96];
    uint8_t *junk;  /* malloc'd bytes a part points to */
    uint8_t *fresh; /* a scene drawn for this request alone, as PNG */
    uint32_t expect_images;
    /* the call */
    int stream;
    double timeout_s;
    int asked_deadline;
    int cancel_after;           /* 0: never */
    grpc_status_code want_code; /* bad kinds */
    const char *want_needle;
    uint8_t *bytes;
    size_t len;
    char what[200];
} EgLoadReq;

/* What requests are drawn from. */
typedef struct EgLoadMix {
    PoolImage pool[LOAD_POOL];
    uint64_t seed;
    double call_timeout_s;
    uint32_t max_new_limit; /* the server's max_new_tokens */
} EgLoadMix;

/* Draws the image pool from mix->seed. */
int eg_load_pool_build(EgLoadMix *mix, EgError *err);
void eg_load_pool_free(EgLoadMix *mix);
/* Request `index` of the mix: drawn from (seed, index) alone, so a failure names a request that
 * can be rebuilt. Returns 0, or -1 when out of memory. */
int eg_load_build_request(const EgLoadMix *mix, uint64_t index, EgLoadReq *q, EgShapesRng *rng);
/* A valid request: form 0 zero-shot caption, 1 few-shot, 2 raw parts. */
void eg_load_build_valid(const EgLoadMix *mix, EgShapesRng *rng, EgLoadReq *q, int form);
void eg_load_req_free(EgLoadReq *q);

#endif
