#include "runtime/buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int eg_buf_reserve(EgBuf *b, size_t extra) {
    if (extra > SIZE_MAX / 2 - 1 - b->len) return -1;
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int eg_buf_append(EgBuf *b, const void *p, size_t n) {
    if (eg_buf_reserve(b, n)) return -1;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

char *eg_buf_take(EgBuf *b) {
    if (eg_buf_reserve(b, 0)) return NULL;
    b->data[b->len] = 0;
    char *p = b->data;
    *b = (EgBuf){0};
    return p;
}

void eg_buf_free(EgBuf *b) {
    free(b->data);
    *b = (EgBuf){0};
}
