#include "server/grpc_log_escape.h"

#include <stdio.h>
#include <string.h>

#include "language/utf8.h"

/* Code points written as \u{...} although they are valid: C1 controls, and those that move or
 * reorder what follows when the log is displayed (line and paragraph separators, bidirectional
 * embeddings, overrides and isolates, the byte order mark). */
static int hidden_cp(unsigned cp) {
    return (cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 ||
           (cp >= 0x200E && cp <= 0x200F) || (cp >= 0x202A && cp <= 0x202E) ||
           (cp >= 0x2066 && cp <= 0x2069) || cp == 0xFEFF;
}

/* The escaped form of the character at s[i] (at most 12 bytes into piece); sets *used to the
 * input bytes it covers. json: quotes, backslashes and C0 controls are left as they are, for a
 * JSON writer to escape in JSON's own way. */
static size_t escape_one(const char *s, size_t len, size_t i, char piece[16], size_t *used,
                         int json) {
    unsigned char c = (unsigned char)s[i];
    *used = 1;
    if (json && (c < 0x20 || c == '"' || c == '\\')) {
        piece[0] = (char)c;
        return 1;
    }
    switch (c) {
    case '"':
        return (size_t)snprintf(piece, 16, "\\\"");
    case '\\':
        return (size_t)snprintf(piece, 16, "\\\\");
    case '\n':
        return (size_t)snprintf(piece, 16, "\\n");
    case '\r':
        return (size_t)snprintf(piece, 16, "\\r");
    case '\t':
        return (size_t)snprintf(piece, 16, "\\t");
    default:
        break;
    }
    if (c < 0x20 || c == 0x7F) return (size_t)snprintf(piece, 16, "\\x%02X", c);
    if (c < 0x80) {
        piece[0] = (char)c;
        return 1;
    }
    size_t n = eg_utf8_seq_len(c);
    if (!eg_utf8_is_lead(c) || len - i < n || eg_utf8_valid_prefix(s + i, n) != n)
        return (size_t)snprintf(piece, 16, "\\x%02X", c);
    *used = n;
    unsigned cp = (unsigned)eg_utf8_decode(s + i, NULL);
    if (hidden_cp(cp)) return (size_t)snprintf(piece, 16, "\\u{%04X}", cp);
    memcpy(piece, s + i, n);
    return n;
}

static char *escape(char *out, size_t cap, const char *s, size_t len, int json) {
    static const char more[] = "...";
    size_t o = 0;
    if (!s) len = 0;
    for (size_t i = 0; i < len;) {
        char piece[16];
        size_t used;
        size_t n = escape_one(s, len, i, piece, &used, json);
        /* room for this piece, and for "..." too unless it is the last one */
        size_t need = n + (i + used < len ? sizeof more - 1 : 0);
        if (o + need >= cap) {
            memcpy(out + o, more, sizeof more - 1);
            o += sizeof more - 1;
            break;
        }
        memcpy(out + o, piece, n);
        o += n;
        i += used;
    }
    out[o] = '\0';
    return out;
}

char *eg_log_escape(char *out, size_t cap, const char *s, size_t len) {
    return escape(out, cap, s, len, 0);
}

char *eg_log_escape_str(char *out, size_t cap, const char *s) {
    return escape(out, cap, s, s ? strlen(s) : 0, 0);
}

char *eg_log_escape_json_str(char *out, size_t cap, const char *s) {
    return escape(out, cap, s, s ? strlen(s) : 0, 1);
}
