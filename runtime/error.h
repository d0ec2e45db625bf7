/* Error reporting used across Egret: a fixed-size message buffer filled by the function that
 * fails, so callers can pass it up unchanged or prefix context. Functions return 0 on success
 * and -1 on failure (or NULL for constructors), and fill *err when it is non-NULL. */
#ifndef EGRET_ERROR_H
#define EGRET_ERROR_H

#include <stddef.h>

typedef struct EgError {
    char msg[512];
} EgError;

/* Formats a message into err (if non-NULL) and returns -1 so callers can `return eg_fail(...)`. */
int eg_fail(EgError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "context: " to an existing message, keeping the original cause. Returns -1. */
int eg_fail_prefix(EgError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
