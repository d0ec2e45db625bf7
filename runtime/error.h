/* Error reporting used across Egret: a fixed-size message buffer filled by the function that
 * fails, so callers can pass it up unchanged or prefix context, and a kind set where the failure
 * starts, for the few failures a caller answers differently (engine/engine.c maps kinds to
 * statuses). Functions return 0 on success and -1 on failure (or NULL for constructors), and
 * fill *err when it is non-NULL. */
#ifndef EGRET_ERROR_H
#define EGRET_ERROR_H

#include <stddef.h>

typedef enum EgErrorKind {
    EG_ERROR_PLAIN = 0,     /* what it means depends on where it happened: bad input while a
                               request is checked, a fault while it runs */
    EG_ERROR_LIMIT,         /* over a configured limit (image size, pixels): ask for less */
    EG_ERROR_DEVICE_MEMORY, /* device memory exhausted: ask for less, or later */
} EgErrorKind;

typedef struct EgError {
    char msg[512];
    EgErrorKind kind;
} EgError;

/* Formats a message into err (if non-NULL), of kind EG_ERROR_PLAIN, and returns -1 so callers
 * can `return eg_fail(...)`. */
int eg_fail(EgError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The same with a kind. */
int eg_fail_kind(EgError *err, EgErrorKind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "context: " to an existing message, keeping the original cause and kind. Returns -1. */
int eg_fail_prefix(EgError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
