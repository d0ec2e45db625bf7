/* A request's images before it runs: their headers checked against the limits on the engine's
 * thread (cheap: nothing is decoded), then decoding, resizing and normalizing, the CPU-heavy
 * part, wherever the caller runs eg_engine_decode (the service: on its decode workers). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_internal.h"
#include "vision/image_decode.h"

EgStatus eg_engine_check_images(EgEngine *e, const Assembled *a, EgError *err) {
    uint64_t total = 0;
    uint32_t largest = 0;
    uint64_t largest_pixels = 0;
    for (uint32_t i = 0; i < a->n_images; i++) {
        uint32_t w = 0, h = 0;
        if (eg_image_probe(a->images[i], a->image_lens[i], &e->limits.image, &w, &h, err)) {
            eg_fail_prefix(err, "image %u", i);
            /* over one of decoding's limits, or not an image it reads */
            return eg_engine_status(err, EG_STATUS_INVALID_ARGUMENT);
        }
        uint64_t pixels = (uint64_t)w * h; /* each below max_pixels: the sum cannot overflow */
        total += pixels;
        if (pixels > largest_pixels) {
            largest = i;
            largest_pixels = pixels;
        }
    }
    if (total > e->limits.max_request_pixels) {
        eg_fail_kind(err, EG_ERROR_LIMIT,
                     "the request's %u images declare %" PRIu64
                     " pixels in all (the largest, image "
                     "%u, %" PRIu64 "); the limit is %" PRIu64 " per request (max_request_pixels)",
                     a->n_images, total, largest, largest_pixels, e->limits.max_request_pixels);
        return EG_STATUS_RESOURCE_EXHAUSTED;
    }
    return EG_STATUS_OK;
}

/* The caller's stop function, remembering whether it fired (a stopped resize fails like a
 * broken one, and the two must be told apart). */
typedef struct Stop {
    int (*fn)(void *user);
    void *user;
    int fired;
} Stop;

static int poll_stop(void *arg) {
    Stop *s = arg;
    if (!s->fired && s->fn && s->fn(s->user)) s->fired = 1;
    return s->fired;
}

/* Decodes and preprocesses image i into its pixel slot: 0, or -1 with j->err set. */
static int load(EgEngineJob *j, uint32_t i, Stop *s) {
    EgEngine *e = j->e;
    size_t per = e->model->info.image_floats;
    EgImage img = {0};
    int rc = eg_image_decode(j->a.images[i], j->a.image_lens[i], &e->limits.image, &img, &j->err);
    if (rc == 0)
        rc = eg_family_preprocess(e->model, &img, j->pixels + i * per, poll_stop, s, &j->err);
    eg_image_free(&img);
    return rc;
}

void eg_engine_decode(EgEngineJob *j, int (*stop)(void *user), void *stop_user) {
    EgEngine *e = j->e;
    if (j->failed || j->g) return;
    uint32_t n = j->a.n_images;
    size_t per = e->model->info.image_floats;
    if (!j->pixels) j->pixels = malloc((n ? n : 1) * per * sizeof *j->pixels);
    if (!j->pixels) {
        eg_fail(&j->err, "out of host memory");
        eg_engine_job_fail(j, EG_STATUS_INTERNAL);
        return;
    }
    Stop s = {stop, stop_user, 0};
    uint32_t decoded = 0, todo = 0;
    for (uint32_t i = 0; i < n; i++)
        todo += j->image_state[i] == IMAGE_MISSING;
    for (uint32_t i = 0; i < n; i++) {
        if (j->image_state[i] != IMAGE_MISSING) continue;
        int rc = poll_stop(&s) ? -1 : load(j, i, &s);
        if (rc && s.fired) {
            eg_fail(&j->err, "stopped while decoding images (%u of %u decoded)", decoded, todo);
            eg_engine_job_fail(j, EG_STATUS_CANCELLED);
            return;
        }
        if (rc) {
            eg_fail_prefix(&j->err, "image %u", i);
            eg_engine_job_fail(j, eg_engine_status(&j->err, EG_STATUS_INVALID_ARGUMENT));
            return;
        }
        j->image_state[i] = IMAGE_DECODED;
        decoded++;
        atomic_fetch_add(&e->images_decoded, 1);
    }
}
