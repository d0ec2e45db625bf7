/* The load test's request mix (grpc_loadtest_internal.h): valid streaming and unary requests
 * (zero-shot captions, few-shot episodes, raw parts), bad requests, cancellations and short
 * deadlines, each drawn from (seed, index) alone. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/proto_request.h"
#include "tools/grpc_loadtest_internal.h"

static const EgShapesTask POOL_TASKS[4] = {EG_SHAPES_TASK_CAPTION, EG_SHAPES_TASK_COUNT,
                                           EG_SHAPES_TASK_COLOR, EG_SHAPES_TASK_SHAPE};

int eg_load_pool_build(EgLoadMix *mix, EgError *err) {
    PoolImage *pool = mix->pool;
    uint64_t seed = mix->seed;
    EgShapesRng rng;
    eg_shapes_rng_seed(&rng, eg_splitmix64(seed ^ 0x5eed));
    for (int i = 0; i < LOAD_POOL; i++) {
        EgShapesScene scene;
        /* Half the scenes have one object, so colour and shape episodes can be drawn. */
        eg_shapes_sample(&rng, i % 2 ? 0 : 1, &scene);
        if (eg_shapes_render_png(&scene, &pool[i].png, &pool[i].len, err)) return -1;
        pool[i].single = scene.n_objects == 1;
        for (int t = 0; t < 4; t++)
            if (eg_shapes_answer(&scene, POOL_TASKS[t], pool[i].answer[t], EG_SHAPES_TEXT_MAX) < 0)
                pool[i].answer[t][0] = '\0';
    }
    return 0;
}

/* How often each kind is drawn, in percent. */
static const unsigned KIND_WEIGHT[EG_LOAD_N_KINDS] = {14, 14, 10, 12, 12, 10, 5, 4, 4, 4, 4, 7};

static EgRequestPart image_part(const PoolImage *im) {
    return (EgRequestPart){.is_image = 1, .image = im->png, .image_len = im->len};
}
static EgRequestPart text_part(const char *t) {
    return (EgRequestPart){.text = t, .text_len = strlen(t)};
}

static const uint32_t MAX_NEW_CHOICES[4] = {4, 8, 12, 16};

/* Appends to q->what. */
static void describe(EgLoadReq *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void describe(EgLoadReq *q, const char *fmt, ...) {
    size_t n = strlen(q->what);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->what + n, sizeof q->what - n, fmt, ap);
    va_end(ap);
}

/* The query image: usually one of the pool, for 30% of the requests a scene drawn for this one.
 * (Falls back to the pool if encoding fails.) */
static EgRequestPart query_image(const EgLoadMix *mix, EgShapesRng *rng, EgLoadReq *q,
                                 uint32_t qi) {
    if (eg_shapes_rng_below(rng, 10) < 3) {
        EgShapesScene scene;
        size_t len = 0;
        EgError err;
        eg_shapes_sample(rng, 0, &scene);
        if (eg_shapes_render_png(&scene, &q->fresh, &len, &err) == 0) {
            describe(q, "fresh ");
            return (EgRequestPart){.is_image = 1, .image = q->fresh, .image_len = len};
        }
    }
    return image_part(&mix->pool[qi]);
}

/* A valid request: form 0 zero-shot caption, 1 few-shot, 2 raw parts. */
void eg_load_build_valid(const EgLoadMix *mix, EgShapesRng *rng, EgLoadReq *q, int form) {
    EgRequest *r = &q->req;
    eg_sampling_params_default(&r->gen.sampling);
    r->gen.max_new_tokens = MAX_NEW_CHOICES[eg_shapes_rng_below(rng, 4)];
    r->parts = q->parts;
    uint32_t qi = eg_shapes_rng_below(rng, LOAD_POOL);
    if (form == 0) {
        /* Few variants, so that identical requests recur and their answers can be compared. */
        r->gen.max_new_tokens = 8u << eg_shapes_rng_below(rng, 2);
        describe(q, "caption ");
        q->parts[0] = query_image(mix, rng, q, qi);
        r->n_parts = 1;
        r->use_template = 1;
        q->expect_images = 1;
        describe(q, "image %u", qi);
    } else if (form == 1) {
        size_t n_ex = 1 + eg_shapes_rng_below(rng, 2);
        uint32_t pick[3] = {qi, 0, 0};
        int all_single = mix->pool[qi].single;
        for (size_t i = 1; i <= n_ex; i++) {
            do
                pick[i] = eg_shapes_rng_below(rng, LOAD_POOL);
            while (pick[i] == pick[0] || (i == 2 && pick[2] == pick[1]));
            all_single &= mix->pool[pick[i]].single;
        }
        uint32_t task = eg_shapes_rng_below(rng, all_single ? 4 : 2);
        for (size_t i = 0; i < n_ex; i++) {
            const PoolImage *im = &mix->pool[pick[i + 1]];
            q->ex[i] =
                (EgRequestExample){im->png, im->len, im->answer[task], strlen(im->answer[task])};
        }
        r->examples = q->ex;
        r->n_examples = n_ex;
        r->n_parts = 1;
        q->expect_images = (uint32_t)n_ex + 1;
        describe(q, "few-shot %s, example images %u", eg_shapes_task_name(POOL_TASKS[task]),
                 pick[1]);
        if (n_ex > 1) describe(q, ",%u", pick[2]);
        describe(q, ", query ");
        q->parts[0] = query_image(mix, rng, q, qi);
        describe(q, "image %u", qi);
    } else {
        static const char *const PROMPTS[3] = {"Output:", "Output: a", "Output: the"};
        uint32_t v = eg_shapes_rng_below(rng, 4);
        const char *after = PROMPTS[v % 3];
        describe(q, "raw variant %u ", v);
        EgRequestPart image = query_image(mix, rng, q, qi);
        if (v == 3) {
            q->parts[0] = text_part("Look at this picture. ");
            q->parts[1] = image;
            q->parts[2] = text_part(after);
            r->n_parts = 3;
        } else {
            q->parts[0] = image;
            q->parts[1] = text_part(after);
            r->n_parts = 2;
        }
        if (eg_shapes_rng_below(rng, 2)) {
            q->stops[0] = "\n";
            r->gen.stop = q->stops;
            r->gen.n_stop = 1;
        }
        q->expect_images = 1;
        describe(q, "image %u%s", qi, r->gen.n_stop ? " stop \\n" : "");
    }
    /* A third of the valid requests sample (seeded: the answer is still reproducible). */
    if (eg_shapes_rng_below(rng, 3) == 0) {
        EgSamplingParams *s = &r->gen.sampling;
        s->temperature = 0.3f + 0.1f * (float)eg_shapes_rng_below(rng, 10);
        s->top_k = (uint32_t[]){0, 5, 50}[eg_shapes_rng_below(rng, 3)];
        s->top_p = eg_shapes_rng_below(rng, 2) ? 1.0f : 0.9f;
        s->seed = eg_shapes_rng_below(rng, 4);
        describe(q, ", sampled t=%.1f k=%u p=%.1f seed=%llu", (double)s->temperature, s->top_k,
                 (double)s->top_p, (unsigned long long)s->seed);
    }
    describe(q, ", max_new_tokens %u", r->gen.max_new_tokens);
}

static EgLoadKind draw_kind(EgShapesRng *rng) {
    uint32_t x = eg_shapes_rng_below(rng, 100);
    for (int k = 0; k < EG_LOAD_N_KINDS; k++) {
        if (x < KIND_WEIGHT[k]) return (EgLoadKind)k;
        x -= KIND_WEIGHT[k];
    }
    return EG_LOAD_CAPTION;
}

/* Request `index` of the mix: drawn from (seed, index) alone, so a failure names a request that
 * can be rebuilt. Returns 0, or -1 when out of memory. */
int eg_load_build_request(const EgLoadMix *mix, uint64_t index, EgLoadReq *q, EgShapesRng *rng) {
    memset(q, 0, sizeof *q);
    q->index = index;
    eg_shapes_rng_seed(rng,
                       eg_splitmix64(mix->seed) ^ eg_splitmix64(index * 0x9e3779b97f4a7c15ull + 1));
    q->kind = draw_kind(rng);
    q->stream = 1;
    q->timeout_s = mix->call_timeout_s;
    EgRequest *r = &q->req;
    switch (q->kind) {
    case EG_LOAD_CAPTION:
    case EG_LOAD_FEW_SHOT:
    case EG_LOAD_RAW:
        eg_load_build_valid(mix, rng, q, (int)q->kind);
        break;
    case EG_LOAD_UNARY:
        eg_load_build_valid(mix, rng, q, (int)eg_shapes_rng_below(rng, 3));
        q->stream = 0;
        break;
    case EG_LOAD_CANCEL:
        /* Mostly raw parts past the end of sequence, so there are messages to cancel after. */
        eg_load_build_valid(mix, rng, q, eg_shapes_rng_below(rng, 4) ? 2 : 0);
        r->gen.max_new_tokens = 12 + eg_shapes_rng_below(rng, 5);
        r->gen.ignore_eos = 1;
        q->cancel_after = 1 + (int)eg_shapes_rng_below(rng, 3);
        describe(q, " -> %u, ignore_eos, cancel after %d messages", r->gen.max_new_tokens,
                 q->cancel_after);
        break;
    case EG_LOAD_DEADLINE:
        eg_load_build_valid(mix, rng, q, (int)eg_shapes_rng_below(rng, 3));
        q->stream = (int)eg_shapes_rng_below(rng, 2);
        q->timeout_s = 0.05 + 0.45 * eg_shapes_rng_uniform(rng);
        q->asked_deadline = 1;
        describe(q, ", deadline %.3f s", q->timeout_s);
        break;
    case EG_LOAD_BAD_IMAGE: {
        eg_load_build_valid(mix, rng, q, eg_shapes_rng_below(rng, 2));
        uint32_t v = eg_shapes_rng_below(rng, 2);
        size_t n;
        if (v == 0) { /* not an image format at all */
            n = 16 + eg_shapes_rng_below(rng, 200);
            if (!(q->junk = malloc(n))) return -1;
            for (size_t i = 0; i < n; i++)
                q->junk[i] = (uint8_t)eg_shapes_rng_next(rng);
            memcpy(q->junk, "NOTANIMAGE", 10);
        } else { /* a PNG cut in the middle of its pixel data */
            const PoolImage *im = &mix->pool[eg_shapes_rng_below(rng, LOAD_POOL)];
            n = im->len / 2;
            if (!(q->junk = malloc(n))) return -1;
            memcpy(q->junk, im->png, n);
        }
        /* The bad bytes replace the query image, or an example's image. */
        if (r->n_examples && eg_shapes_rng_below(rng, 2)) {
            q->ex[0].image = q->junk;
            q->ex[0].image_len = n;
            describe(q, "; example 0's image: %s (%zu bytes)", v ? "truncated PNG" : "junk", n);
        } else {
            q->parts[0].image = q->junk;
            q->parts[0].image_len = n;
            describe(q, "; query image: %s (%zu bytes)", v ? "truncated PNG" : "junk", n);
        }
        q->want_code = GRPC_STATUS_INVALID_ARGUMENT;
        q->want_needle = "image";
        break;
    }
    case EG_LOAD_BAD_UTF8: {
        static const char *const BAD[4] = {"caf\xc3(", "\xff", "red\x80", "a \xe2\x82 b"};
        uint32_t v = eg_shapes_rng_below(rng, 4);
        snprintf(q->text, sizeof q->text, "Output: %s", BAD[v]);
        if (eg_shapes_rng_below(rng, 2)) {
            eg_load_build_valid(mix, rng, q, 1); /* few-shot: the first example's text */
            q->ex[0].text = q->text + 8;
            q->ex[0].text_len = strlen(q->text + 8);
            describe(q, "; example 0's text is invalid UTF-8 (%u)", v);
        } else {
            eg_load_build_valid(mix, rng, q, 2); /* raw: the text part */
            EgRequestPart *t = &q->parts[q->req.n_parts - 1];
            t->text = q->text;
            t->text_len = strlen(q->text);
            describe(q, "; last part's text is invalid UTF-8 (%u)", v);
        }
        q->want_code = GRPC_STATUS_INVALID_ARGUMENT;
        q->want_needle = "UTF-8";
        break;
    }
    case EG_LOAD_BAD_TEMPERATURE: {
        eg_load_build_valid(mix, rng, q, (int)eg_shapes_rng_below(rng, 3));
        static const float T[3] = {NAN, -0.5f, INFINITY};
        uint32_t v = eg_shapes_rng_below(rng, 3);
        r->gen.sampling.temperature = T[v];
        describe(q, "; temperature %g", (double)T[v]);
        q->want_code = GRPC_STATUS_INVALID_ARGUMENT;
        q->want_needle = "temperature";
        break;
    }
    case EG_LOAD_BAD_MAX_NEW:
        eg_load_build_valid(mix, rng, q, (int)eg_shapes_rng_below(rng, 3));
        r->gen.max_new_tokens = mix->max_new_limit + 1 + eg_shapes_rng_below(rng, 100000);
        describe(q, "; max_new_tokens %u over the limit %u", r->gen.max_new_tokens,
                 mix->max_new_limit);
        q->want_code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        q->want_needle = "max_new_tokens";
        break;
    case EG_LOAD_BAD_EMPTY:
        eg_sampling_params_default(&r->gen.sampling);
        r->gen.max_new_tokens = 8;
        r->parts = q->parts;
        q->want_code = GRPC_STATUS_INVALID_ARGUMENT;
        if (eg_shapes_rng_below(rng, 2)) {
            r->n_parts = 0;
            q->want_needle = "no parts";
            describe(q, "no parts");
        } else {
            q->parts[0] = text_part("");
            r->n_parts = 1;
            q->want_needle = "empty";
            describe(q, "one empty text part");
        }
        break;
    case EG_LOAD_GARBAGE: {
        uint32_t v = eg_shapes_rng_below(rng, 3);
        size_t n = v == 0 ? 6 : v == 1 ? 3 : 3 + eg_shapes_rng_below(rng, 200);
        if (!(q->bytes = malloc(n))) return -1;
        if (v == 0) { /* an unterminated varint */
            memcpy(q->bytes, (const uint8_t[]){0xff, 0xff, 0xff, 0xff, 0x0f, 0x12}, 6);
        } else if (v == 1) { /* examples: 16 bytes announced, 1 there */
            memcpy(q->bytes, (const uint8_t[]){0x12, 0x10, 'x'}, 3);
        } else { /* parts: 255 bytes announced, fewer there */
            memcpy(q->bytes, (const uint8_t[]){0x0a, 0xff, 0x01}, 3);
            for (size_t i = 3; i < n; i++)
                q->bytes[i] = (uint8_t)eg_shapes_rng_next(rng);
        }
        q->len = n;
        describe(q, "garbage pattern %u (%zu bytes)", v, n);
        q->want_code = GRPC_STATUS_INVALID_ARGUMENT;
        q->want_needle = "GenerateRequest";
        break;
    }
    case EG_LOAD_N_KINDS:
        break;
    }
    if (q->kind >= EG_LOAD_BAD_IMAGE) q->stream = (int)eg_shapes_rng_below(rng, 2);
    if (!q->bytes) {
        EgError err;
        if (eg_proto_request_encode(r, &q->bytes, &q->len, &err)) return -1;
    }
    return 0;
}

void eg_load_req_free(EgLoadReq *q) {
    free(q->junk);
    free(q->fresh);
    free(q->bytes);
}

void eg_load_pool_free(EgLoadMix *mix) {
    for (int i = 0; i < LOAD_POOL; i++) {
        free(mix->pool[i].png);
        mix->pool[i].png = NULL;
    }
}
