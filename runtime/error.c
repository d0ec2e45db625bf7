#include "runtime/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void fill(EgError *err, EgErrorKind kind, const char *fmt, va_list ap) {
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    err->kind = kind;
}

int eg_fail(EgError *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        fill(err, EG_ERROR_PLAIN, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int eg_fail_kind(EgError *err, EgErrorKind kind, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        fill(err, kind, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int eg_fail_prefix(EgError *err, const char *fmt, ...) {
    if (err) {
        char prefix[256];
        char old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        /* Truncation is acceptable: the message stays NUL-terminated and starts with context. */
        size_t n = strlen(prefix);
        if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
        memcpy(err->msg, prefix, n);
        memcpy(err->msg + n, ": ", 2);
        size_t room = sizeof err->msg - n - 3;
        size_t m = strnlen(old, room);
        memcpy(err->msg + n + 2, old, m);
        err->msg[n + 2 + m] = '\0';
    }
    return -1;
}
