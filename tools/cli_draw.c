/* egret draw: draws fresh shapes-world scenes (tools/shapes_world.h), the kind the demo model
 * was trained on, as PNG files with their true caption and answers, so the model can be tried on
 * images with known answers. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tools/cli.h"
#include "tools/shapes_world.h"

/* More scenes than this is surely a typo (each is one file); the name format still copes. */
#define MAX_COUNT 100000

static void usage(FILE *f) {
    fprintf(f,
            "usage: egret draw --out DIR [--count N] [--seed S] [--objects 1|2|3]\n"
            "Draws N shapes-world scenes (64x64, 1-3 coloured shapes on grey, as the demo model\n"
            "was trained on) into DIR/scene-001.png, ... and writes DIR/scenes.tsv: per scene the\n"
            "file and the exact answer of each task (caption, color, shape, size, position,\n"
            "count; color..position only for single-object scenes), usable as --example text.\n"
            "  --out DIR        output folder (created, with its parents, if missing)\n"
            "  --count N        number of scenes, 1..%d (default 8)\n"
            "  --seed S         random seed, 0..2^64-1 (default 0); the same seed draws the same\n"
            "                   scenes, and a larger N only adds scenes after them\n"
            "  --objects K      objects per scene, 1..3 (default: random, 1/2/3 with\n"
            "                   probability 0.5/0.3/0.2 as in training)\n",
            MAX_COUNT);
}

/* Parses a whole decimal number in [lo, hi]; prints what was wrong, naming the option. */
/* mkdir -p: creates DIR and any missing parents. */
static int make_dir(const char *dir) {
    char *p = strdup(dir);
    if (!p) return -1;
    for (char *q = p + 1; *q; q++) {
        if (*q != '/') continue;
        *q = '\0';
        mkdir(p, 0777); /* errors show in the final mkdir or stat */
        *q = '/';
    }
    int rc = 0;
    struct stat st;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "egret draw: --out %s: %s\n", dir, strerror(errno));
        rc = -1;
    } else if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "egret draw: --out %s: not a directory\n", dir);
        rc = -1;
    }
    free(p);
    return rc;
}

static int write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "egret draw: %s: %s\n", path, strerror(errno));
        return -1;
    }
    int ok = fwrite(data, 1, len, f) == len;
    if (fclose(f) != 0) ok = 0;
    if (!ok) fprintf(stderr, "egret draw: cannot write %s\n", path);
    return ok ? 0 : -1;
}

int cli_draw(int argc, char **argv) {
    static struct option longopts[] = {
        {"out", required_argument, 0, 'o'},  {"count", required_argument, 0, 'n'},
        {"seed", required_argument, 0, 's'}, {"objects", required_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'},       {0, 0, 0, 0}};
    const char *dir = NULL;
    uint64_t count = 8, seed = 0, objects = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            dir = optarg;
            break;
        case 'n':
            if (cli_parse_u64_in("count", optarg, 1, MAX_COUNT, &count)) return 2;
            break;
        case 's':
            if (cli_parse_u64_in("seed", optarg, 0, UINT64_MAX, &seed)) return 2;
            break;
        case 'k':
            if (cli_parse_u64_in("objects", optarg, 1, EG_SHAPES_MAX_OBJECTS, &objects)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "egret draw: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!dir || !*dir) {
        fprintf(stderr, "egret draw: --out DIR is required\n");
        usage(stderr);
        return 2;
    }
    if (make_dir(dir)) return 1;

    size_t path_cap = strlen(dir) + 32;
    char *path = malloc(path_cap);
    if (!path) return 1;
    snprintf(path, path_cap, "%s/scenes.tsv", dir);
    FILE *tsv = fopen(path, "w");
    if (!tsv) {
        fprintf(stderr, "egret draw: %s: %s\n", path, strerror(errno));
        free(path);
        return 1;
    }
    fprintf(tsv, "file");
    for (int t = 0; t < EG_SHAPES_N_TASKS; t++)
        fprintf(tsv, "\t%s", eg_shapes_task_name((EgShapesTask)t));
    fprintf(tsv, "\n");

    /* One stream for all scenes, so scene k depends only on the seed and the options, not on
     * --count. */
    EgShapesRng rng;
    eg_shapes_rng_seed(&rng, seed);
    int rc = 0;
    for (uint64_t i = 0; i < count && rc == 0; i++) {
        EgShapesScene scene;
        eg_shapes_sample(&rng, (int)objects, &scene);
        uint8_t *png;
        size_t png_len;
        EgError err = {0};
        if (eg_shapes_render_png(&scene, &png, &png_len, &err)) {
            fprintf(stderr, "egret draw: %s\n", err.msg);
            rc = 1;
            break;
        }
        char name[32];
        snprintf(name, sizeof name, "scene-%03" PRIu64 ".png", i + 1);
        snprintf(path, path_cap, "%s/%s", dir, name);
        if (write_file(path, png, png_len)) rc = 1;
        free(png);
        /* Answers the scene has no value for (color..position of a multi-object scene) are left
         * empty. */
        fprintf(tsv, "%s", name);
        for (int t = 0; t < EG_SHAPES_N_TASKS; t++) {
            char text[EG_SHAPES_TEXT_MAX];
            eg_shapes_answer(&scene, (EgShapesTask)t, text, sizeof text);
            fprintf(tsv, "\t%s", text);
        }
        fprintf(tsv, "\n");
    }
    if (fclose(tsv) != 0 && rc == 0) {
        fprintf(stderr, "egret draw: cannot write %s/scenes.tsv\n", dir);
        rc = 1;
    }
    if (rc == 0)
        fprintf(stderr, "egret draw: wrote %" PRIu64 " scenes and scenes.tsv to %s\n", count, dir);
    free(path);
    return rc;
}
