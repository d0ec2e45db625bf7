/* Environment switches (EGRET_VALIDATION, EGRET_OPS_NAIVE, ...): on when set to anything but
 * empty or "0". */
#ifndef EGRET_ENV_H
#define EGRET_ENV_H

#include <stdlib.h>
#include <string.h>

static inline int eg_env_flag(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

#endif
