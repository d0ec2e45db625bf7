/* The request log line (server/request_log.c): as JSON (--log-format json) it is one valid
 * object on one line whatever the client's text holds (quotes, backslashes, newlines, control
 * characters, bytes that are not UTF-8, bidirectional overrides, a value far over the field
 * limit), with the text line's fields and values; as text it is the line it always was. The
 * hostile strings are built from random bytes each run, plus fixed worst cases. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "language/utf8.h"
#include "server/request_log.h"
#include "test_util.h"

/* Writes the line to a temporary file and returns what was written (malloc'd). */
static char *render(int json, const EgRequestLogLine *l) {
    FILE *f = tmpfile();
    eg_request_log_write(f, json, l);
    long n = ftell(f);
    char *out = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
    rewind(f);
    if (n > 0 && fread(out, 1, (size_t)n, f) != (size_t)n) out[0] = '\0';
    fclose(f);
    return out;
}

static const char *str_field(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num_field(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static void check_json(const char *peer, const char *error, const char *what) {
    EgRequestLogLine l = {.id = 42,
                          .method = "GenerateStream",
                          .peer = peer,
                          .status = error ? "INVALID_ARGUMENT" : "OK",
                          .images = 3,
                          .prompt_tokens = 15,
                          .generated = 2,
                          .ttft_s = 0.4123,
                          .total_s = 0.4891,
                          .queue_s = 0.0004,
                          .error = error};
    char *line = render(1, &l);
    size_t len = strlen(line);
    CHECK(len > 0 && line[len - 1] == '\n' && strchr(line, '\n') == line + len - 1,
          "%s: one line: %s", what, line);
    CHECK(eg_utf8_valid_prefix(line, len) == len, "%s: valid UTF-8 (JSON text must be)", what);
    cJSON *o = cJSON_Parse(line);
    CHECK(cJSON_IsObject(o), "%s: parses as a JSON object: %s", what, line);
    if (cJSON_IsObject(o)) {
        CHECK(num_field(o, "request") == 42 && num_field(o, "images") == 3 &&
                  num_field(o, "prompt_tokens") == 15 && num_field(o, "generated") == 2,
              "%s: counts", what);
        CHECK(num_field(o, "ttft") == 0.412 && num_field(o, "total") == 0.489 &&
                  num_field(o, "queue") == 0.0,
              "%s: times in seconds, to the millisecond as in the text line", what);
        const char *method = str_field(o, "method"), *status = str_field(o, "status");
        const char *time = str_field(o, "time");
        CHECK(method && strcmp(method, "GenerateStream") == 0, "%s: method", what);
        CHECK(status && strcmp(status, l.status) == 0, "%s: status", what);
        CHECK(time && strlen(time) == 24 && time[10] == 'T' && time[23] == 'Z',
              "%s: time is ISO 8601 UTC with milliseconds: %s", what, time ? time : "(none)");
        const char *p = str_field(o, "peer"), *e = str_field(o, "error");
        CHECK(p && strlen(p) < 512, "%s: peer present and cut to the field limit", what);
        CHECK(error ? e != NULL : e == NULL, "%s: error only when there is one", what);
    }
    cJSON_Delete(o);
    free(line);
}

int main(void) {
    test_rng_init();
    /* fixed worst cases: JSON's own specials survive as the client wrote them */
    EgRequestLogLine plain = {.id = 1,
                              .method = "Generate",
                              .peer = "ipv4:1.2.3.4:5",
                              .status = "INVALID_ARGUMENT",
                              .error = "part 2: \"quoted\" \\ back\nslash\ttab\x01"};
    char *line = render(1, &plain);
    cJSON *o = cJSON_Parse(line);
    const char *e = o ? str_field(o, "error") : NULL;
    CHECK(e && strcmp(e, "part 2: \"quoted\" \\ back\nslash\ttab\x01") == 0,
          "quotes, backslashes and controls round-trip through JSON: %s", line);
    cJSON_Delete(o);
    free(line);
    /* the text line is unchanged: escaped in place, no JSON */
    line = render(0, &plain);
    CHECK(strcmp(line,
                 "egret: request 1 Generate peer=ipv4:1.2.3.4:5 status=INVALID_ARGUMENT "
                 "images=0 prompt_tokens=0 generated=0 ttft=0.000s total=0.000s "
                 "queue=0.000s error=\"part 2: \\\"quoted\\\" \\\\ back\\nslash\\ttab\\x01\"\n") ==
              0,
          "text line: %s", line);
    free(line);

    check_json("unix:", NULL, "ok");
    check_json("ipv6:[::1]:1", "not UTF-8 \xff\xfe and an override \xe2\x80\xae end",
               "invalid UTF-8");
    char big[4096];
    memset(big, '"', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    check_json(big, big, "4 KiB of quotes");
    /* random bytes: every value 1..255, any order */
    for (int round = 0; round < 200; round++) {
        char peer[300], err[700];
        for (size_t i = 0; i + 1 < sizeof peer; i++)
            peer[i] = (char)(1 + test_rng_u64() % 255);
        for (size_t i = 0; i + 1 < sizeof err; i++)
            err[i] = (char)(1 + test_rng_u64() % 255);
        peer[sizeof peer - 1] = err[sizeof err - 1] = '\0';
        check_json(peer, err, "random bytes");
    }
    return test_finish();
}
