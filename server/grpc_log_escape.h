/* Client-supplied text made safe for the server's one-line logs. A client chooses method paths,
 * metadata, texts and much of what error messages quote; written raw, a newline in any of them
 * would let it forge whole log lines, a quote would end a quoted field early, terminal control
 * sequences would reach whoever reads the log, and a long value would bloat it. */
#ifndef EGRET_GRPC_LOG_ESCAPE_H
#define EGRET_GRPC_LOG_ESCAPE_H

#include <stddef.h>

/* Longest escaped field the server logs, in bytes with the NUL. */
#define EG_LOG_FIELD_MAX 512

/* Writes s[0..len) into out (cap >= 16 bytes, always NUL-terminated) as printable one-line text:
 * valid UTF-8 is kept except control and invisible-formatting characters; '"' and '\' become
 * \" and \\; \n, \r, \t become \n, \r, \t; other C0 controls, DEL and bytes that are not valid
 * UTF-8 become \xNN; C1 controls, line/paragraph separators and bidirectional overrides become
 * \u{NNNN}. Text that does not fit is cut between characters and ends in "...". Returns out. */
char *eg_log_escape(char *out, size_t cap, const char *s, size_t len);

/* The same for a NUL-terminated string (NULL gives ""). */
char *eg_log_escape_str(char *out, size_t cap, const char *s);

/* The same for a string value a JSON writer escapes next (--log-format json): '"', '\' and C0
 * controls are kept for it, so the value reads as the client sent it; what JSON cannot hold
 * (bytes that are not UTF-8) and what would hide text (C1 controls, separators, bidirectional
 * overrides) is escaped as above, and the value is cut the same way. */
char *eg_log_escape_json_str(char *out, size_t cap, const char *s);

#endif
