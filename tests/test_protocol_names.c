/* The names the server, the client and the load test print: one status-name table
 * (eg_grpc_status_name) and one spelling of each finish reason, the API's own
 * (egret.v1.FinishReason), with the conversions between the engine's reasons and the API's. */
#include "server/grpc_bytes.h"
#include "server/proto_request.h"
#include "test_util.h"

#include <ctype.h>
#include <string.h>

static void status_names(void) {
    static const struct {
        grpc_status_code code;
        const char *name;
    } known[] = {{GRPC_STATUS_OK, "OK"},
                 {GRPC_STATUS_CANCELLED, "CANCELLED"},
                 {GRPC_STATUS_INVALID_ARGUMENT, "INVALID_ARGUMENT"},
                 {GRPC_STATUS_DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"},
                 {GRPC_STATUS_RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"},
                 {GRPC_STATUS_UNIMPLEMENTED, "UNIMPLEMENTED"},
                 {GRPC_STATUS_INTERNAL, "INTERNAL"},
                 {GRPC_STATUS_UNAVAILABLE, "UNAVAILABLE"},
                 {GRPC_STATUS_UNAUTHENTICATED, "UNAUTHENTICATED"}};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        CHECK(strcmp(eg_grpc_status_name(known[i].code), known[i].name) == 0, "%d: %s, want %s",
              (int)known[i].code, eg_grpc_status_name(known[i].code), known[i].name);
    CHECK(strcmp(eg_grpc_status_name((grpc_status_code)17), "?") == 0, "code 17");
    CHECK(strcmp(eg_grpc_status_name((grpc_status_code)-1), "?") == 0, "code -1");
}

/* Every engine reason goes to the API and back unchanged, and is named as the API's enum value
 * is (FINISH_REASON_END_OF_SEQUENCE: "end_of_sequence"). */
static void finish_reasons(void) {
    const EgFinishReason all[] = {EG_FINISH_LENGTH, EG_FINISH_STOP, EG_FINISH_EOS,
                                  EG_FINISH_CANCELLED};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        Egret__V1__FinishReason p = eg_finish_reason_to_proto(all[i]);
        CHECK(eg_finish_reason_from_proto(p) == all[i], "reason %d came back as %d", (int)all[i],
              (int)eg_finish_reason_from_proto(p));
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value(&egret__v1__finish_reason__descriptor, (int)p);
        const char *prefix = "FINISH_REASON_";
        if (!v || strncmp(v->name, prefix, strlen(prefix)) != 0) {
            CHECK(0, "reason %d: no enum value", (int)all[i]);
            continue;
        }
        char want[64];
        size_t n = 0;
        for (const char *c = v->name + strlen(prefix); *c && n + 1 < sizeof want; c++)
            want[n++] = (char)tolower((unsigned char)*c);
        want[n] = '\0';
        CHECK(strcmp(eg_finish_reason_name(all[i]), want) == 0, "reason %d is named %s, want %s",
              (int)all[i], eg_finish_reason_name(all[i]), want);
    }
    CHECK(eg_finish_reason_from_proto(EGRET__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) ==
              EG_FINISH_CANCELLED,
          "UNSPECIFIED");
}

int main(void) {
    status_names();
    finish_reasons();
    return test_finish();
}
