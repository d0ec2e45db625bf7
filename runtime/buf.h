/* The growable buffer: bytes, text or an array of one element type (append each element with
 * its size, read it back through a cast of data). Always NUL-terminated after len, so text can
 * be used as a C string; zero-initialized ({0}) is empty and ready. */
#ifndef EGRET_BUF_H
#define EGRET_BUF_H

#include <stddef.h>

typedef struct EgBuf {
    char *data;
    size_t len, cap;
} EgBuf;

/* Room for `extra` more bytes (and the NUL). 0, or -1 when out of memory or the size would
 * overflow; b is unchanged on failure. */
int eg_buf_reserve(EgBuf *b, size_t extra);
int eg_buf_append(EgBuf *b, const void *p, size_t n);
/* Hands the (NUL-terminated) contents over, leaving b empty; NULL on out of memory. */
char *eg_buf_take(EgBuf *b);
void eg_buf_free(EgBuf *b);

#endif
