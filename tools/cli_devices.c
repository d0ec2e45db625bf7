#include <stdio.h>

#include "runtime/vk_context.h"
#include "tools/cli.h"

int cli_devices(int argc, char **argv) {
    (void)argc;
    (void)argv;
    EgError err;
    if (eg_vk_list_devices(&err)) {
        fprintf(stderr, "egret: %s\n", err.msg);
        return 1;
    }
    return 0;
}
