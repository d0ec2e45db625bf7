/* The growable buffer (runtime/buf.h): bytes and typed elements, always NUL-terminated, taken
 * or freed, and sizes that would overflow refused without touching the buffer. */
#include "runtime/buf.h"
#include "test_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void text_and_take(void) {
    EgBuf b = {0};
    char expect[5000];
    size_t n = 0;
    for (int i = 0; i < 1000; i++) {
        char piece[8];
        int k = snprintf(piece, sizeof piece, "%d,", i % 97);
        if (eg_buf_append(&b, piece, (size_t)k) != 0) {
            CHECK(0, "append %d failed", i);
            eg_buf_free(&b);
            return;
        }
        memcpy(expect + n, piece, (size_t)k);
        n += (size_t)k;
    }
    CHECK(b.len == n && memcmp(b.data, expect, n) == 0 && b.data[n] == '\0',
          "joined text: %zu of %zu bytes", b.len, n);
    char *s = eg_buf_take(&b);
    CHECK(s && strlen(s) == n && b.data == NULL && b.len == 0 && b.cap == 0,
          "take left the buffer non-empty");
    free(s);
    s = eg_buf_take(&b); /* an empty buffer gives an empty string, not NULL */
    CHECK(s && s[0] == '\0', "empty take");
    free(s);
}

static void typed_elements(void) {
    EgBuf b = {0};
    for (int32_t i = 0; i < 777; i++)
        CHECK(eg_buf_append(&b, &i, sizeof i) == 0, "append %d", i);
    const int32_t *v = (const int32_t *)b.data;
    int ok = b.len == 777 * sizeof(int32_t);
    for (int32_t i = 0; ok && i < 777; i++)
        ok = v[i] == i;
    CHECK(ok, "777 int32 read back");
    eg_buf_free(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0, "free left state");
}

static void overflow_refused(void) {
    EgBuf b = {0};
    CHECK(eg_buf_append(&b, "abc", 3) == 0, "append");
    EgBuf before = b;
    CHECK(eg_buf_reserve(&b, SIZE_MAX - 2) == -1, "a size past SIZE_MAX was granted");
    CHECK(eg_buf_reserve(&b, SIZE_MAX / 2) == -1, "a size whose doubling overflows was granted");
    CHECK(b.data == before.data && b.len == 3 && b.cap == before.cap &&
              memcmp(b.data, "abc", 4) == 0,
          "a refused reserve changed the buffer");
    eg_buf_free(&b);
}

int main(void) {
    text_and_take();
    typed_elements();
    overflow_refused();
    return test_finish();
}
