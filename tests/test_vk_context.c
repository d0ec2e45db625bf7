/* The Vulkan context (runtime/vk_context.c): every shared object the loader brought in for an
 * instance (the driver, its compiler, the layers) is still loaded after the context is
 * destroyed, so that what a driver still holds at exit is reported by LeakSanitizer under the
 * driver's own name (.ci/lsan.supp matches library names), never as "<unknown module>". */
#include "runtime/vk_context.h"
#include "test_util.h"

#include <link.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_OBJECTS = 512 };

typedef struct Objects {
    char *names[MAX_OBJECTS];
    int n;
} Objects;

static int add_object(struct dl_phdr_info *info, size_t size, void *user) {
    (void)size;
    Objects *o = user;
    if (info->dlpi_name && info->dlpi_name[0] && o->n < MAX_OBJECTS)
        o->names[o->n++] = strdup(info->dlpi_name);
    return 0;
}

static void list_objects(Objects *o) {
    o->n = 0;
    dl_iterate_phdr(add_object, o);
}

static int contains(const Objects *o, const char *name) {
    for (int i = 0; i < o->n; i++)
        if (strcmp(o->names[i], name) == 0) return 1;
    return 0;
}

static void free_objects(Objects *o) {
    for (int i = 0; i < o->n; i++)
        free(o->names[i]);
    o->n = 0;
}

static void drivers_stay_loaded(void) {
    Objects before, during, after;
    list_objects(&before);
    EgVk vk;
    EgVkOptions opt = {0};
    EgError err = {0};
    if (eg_vk_create(&vk, &opt, &err) != 0) {
        CHECK(0, "eg_vk_create: %s", err.msg);
        free_objects(&before);
        return;
    }
    list_objects(&during);
    eg_vk_destroy(&vk);
    list_objects(&after);

    int loaded_by_instance = 0;
    for (int i = 0; i < during.n; i++) {
        if (contains(&before, during.names[i])) continue;
        loaded_by_instance++;
        CHECK(contains(&after, during.names[i]), "%s was unloaded with the instance",
              during.names[i]);
    }
    /* The loader opens every driver (ICD) with dlopen: an instance that brought in nothing
     * would mean this test checks nothing. */
    CHECK(loaded_by_instance > 0, "the instance loaded no shared object");
    free_objects(&before);
    free_objects(&during);
    free_objects(&after);
}

int main(void) {
    drivers_stay_loaded();
    return test_finish();
}
