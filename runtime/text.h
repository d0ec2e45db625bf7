/* Small checks on C strings, shared so that each is written once. */
#ifndef EGRET_TEXT_H
#define EGRET_TEXT_H

#include <string.h>

/* Whether s ends with suffix. */
static inline int eg_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

#endif
