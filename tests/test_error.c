/* Error kinds (runtime/error.h): set where a failure starts, kept when context is prefixed, and
 * mapped to a status in one place (eg_engine_status): a message's wording never decides the
 * status. */
#include "engine/engine_internal.h"
#include "test_util.h"
#include "vision/image_internal.h"

#include <string.h>

static void kinds_travel_with_messages(void) {
    EgError err = {0};
    eg_fail_kind(&err, EG_ERROR_LIMIT, "too big: %d", 7);
    CHECK(err.kind == EG_ERROR_LIMIT && strcmp(err.msg, "too big: 7") == 0, "kind %d msg '%s'",
          err.kind, err.msg);
    eg_fail_prefix(&err, "image %d", 2);
    CHECK(err.kind == EG_ERROR_LIMIT && strcmp(err.msg, "image 2: too big: 7") == 0,
          "after the prefix: kind %d msg '%s'", err.kind, err.msg);
    eg_fail(&err, "a plain failure over the limit of words");
    CHECK(err.kind == EG_ERROR_PLAIN, "eg_fail left kind %d", err.kind);
}

static void image_limits_are_limits(void) {
    EgImageLimits limits;
    eg_image_limits_default(&limits);
    EgError err = {0};
    CHECK(eg_image_check_limits(EG_IMAGE_PNG, (uint64_t)limits.max_width + 1, 1, &limits, &err) &&
              err.kind == EG_ERROR_LIMIT,
          "too wide: kind %d '%s'", err.kind, err.msg);
    err = (EgError){0};
    CHECK(eg_image_check_limits(EG_IMAGE_JPEG, 1, (uint64_t)limits.max_height + 1, &limits, &err) &&
              err.kind == EG_ERROR_LIMIT,
          "too tall: kind %d '%s'", err.kind, err.msg);
    err = (EgError){0};
    CHECK(eg_image_check_limits(EG_IMAGE_BMP, limits.max_width, limits.max_height, &limits, &err) &&
              err.kind == EG_ERROR_LIMIT,
          "too many pixels: kind %d '%s'", err.kind, err.msg);
    eg_fail_kind(&err, EG_ERROR_LIMIT, "stale");
    CHECK(eg_image_check_limits(EG_IMAGE_GIF, 0, 5, &limits, &err) && err.kind == EG_ERROR_PLAIN,
          "an empty image is bad input, not a limit: kind %d '%s'", err.kind, err.msg);
}

static void one_mapping_to_statuses(void) {
    EgError err = {0};
    eg_fail(&err, "out of device memory, says the text, but nothing set the kind");
    CHECK(eg_engine_status(&err, EG_STATUS_INTERNAL) == EG_STATUS_INTERNAL, "plain, running");
    CHECK(eg_engine_status(&err, EG_STATUS_INVALID_ARGUMENT) == EG_STATUS_INVALID_ARGUMENT,
          "plain, reading input");
    eg_fail_kind(&err, EG_ERROR_LIMIT, "x");
    CHECK(eg_engine_status(&err, EG_STATUS_INVALID_ARGUMENT) == EG_STATUS_RESOURCE_EXHAUSTED,
          "a limit");
    eg_fail_kind(&err, EG_ERROR_DEVICE_MEMORY, "x");
    CHECK(eg_engine_status(&err, EG_STATUS_INTERNAL) == EG_STATUS_RESOURCE_EXHAUSTED,
          "device memory");
}

int main(void) {
    kinds_travel_with_messages();
    image_limits_are_limits();
    one_mapping_to_statuses();
    return test_finish();
}
