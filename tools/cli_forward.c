/* egret forward: runs a model of any family on raw inputs (token ids, per-token image indices,
 * preprocessed pixels) through the family interface (families/family.h) and prints logits or
 * greedy-generated ids. For checking the engine by hand. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "families/family.h"
#include "tools/cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: egret forward [--model DIR] --ids 1,475,476,... [options]\n"
            "  --model DIR        checkpoint folder (default: the bundled demo model)\n"
            "  --ids LIST         prompt token ids\n"
            "  --image-of LIST    per token, the image it attends to (-1: none); default: the\n"
            "                     processor's rule (the most recent image token at or before it)\n"
            "  --pixels FILE      float32 little-endian preprocessed images, in the family's\n"
            "                     layout: IDEFICS [N][3][S][S]; mllama per image [J][3][S][S]\n"
            "                     tiles, then its aspect-ratio id and its tile count\n"
            "  --images N         number of images in FILE\n"
            "  --generate N       greedy-decode N tokens and print their ids\n"
            "  --all-logits       print the argmax and top logit at every position\n"
            "  --logits-out FILE  write every position's logits to FILE as safetensors (one\n"
            "                     float32 tensor \"logits\" [tokens][vocab]), to compare with\n"
            "                     any reference from outside\n"
            "  --fp32             fp32 weights and activations (default: fp16 fast mode)\n"
            "  --quant q8|q4      the projections quantized while loading (docs/quantization.md)\n"
            "  --device INDEX|NAME  Vulkan device (default: EGRET_DEVICE, else the best)\n");
}

/* A safetensors file holding one float32 tensor "logits" [rows][cols] (little-endian hosts, as
 * every target is): the 8-byte header length, the JSON header padded to 8 bytes, the data. */
static int write_logits(const char *path, const float *logits, size_t rows, size_t cols) {
    char header[256];
    size_t bytes = rows * cols * sizeof *logits;
    int len = snprintf(header, sizeof header,
                       "{\"logits\":{\"dtype\":\"F32\",\"shape\":[%zu,%zu],"
                       "\"data_offsets\":[0,%zu]}}",
                       rows, cols, bytes);
    while (len % 8)
        header[len++] = ' ';
    uint64_t n = (uint64_t)len;
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(&n, 8, 1, f) == 1 && fwrite(header, 1, (size_t)len, f) == (size_t)len &&
             fwrite(logits, 1, bytes, f) == bytes;
    if (f && fclose(f)) ok = 0;
    if (!ok) fprintf(stderr, "egret: cannot write %s\n", path);
    return ok ? 0 : -1;
}

/* Greedy choice: the highest logit, the lowest id on ties. */
static int32_t argmax(const float *logits, uint32_t n) {
    uint32_t best = 0;
    for (uint32_t v = 1; v < n; v++)
        if (logits[v] > logits[best]) best = v;
    return (int32_t)best;
}

int cli_forward(int argc, char **argv) {
    static struct option longopts[] = {
        {"model", required_argument, 0, 'm'},    {"ids", required_argument, 0, 'i'},
        {"image-of", required_argument, 0, 'o'}, {"pixels", required_argument, 0, 'p'},
        {"images", required_argument, 0, 'n'},   {"generate", required_argument, 0, 'g'},
        {"all-logits", no_argument, 0, 'a'},     {"logits-out", required_argument, 0, 'L'},
        {"fp32", no_argument, 0, 'f'},           {"device", required_argument, 0, 'D'},
        {"quant", required_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    const char *model_dir = cli_default_model(), *ids_s = NULL, *img_s = NULL, *pix_path = NULL;
    long n_images = 0, n_generate = 0;
    const char *device = NULL, *logits_out = NULL;
    int all_logits = 0, fp32 = 0, c;
    EgWeightFormat quant = EG_WEIGHTS_DENSE;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model_dir = optarg;
            break;
        case 'i':
            ids_s = optarg;
            break;
        case 'o':
            img_s = optarg;
            break;
        case 'p':
            pix_path = optarg;
            break;
        case 'n':
            n_images = strtol(optarg, NULL, 10);
            break;
        case 'g':
            n_generate = strtol(optarg, NULL, 10);
            break;
        case 'a':
            all_logits = 1;
            break;
        case 'L':
            logits_out = optarg;
            break;
        case 'f':
            fp32 = 1;
            break;
        case 'D':
            device = optarg;
            break;
        case 'q':
            if (cli_parse_quant(optarg, &quant)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!ids_s || n_images < 0 || n_generate < 0 || (n_images > 0) != (pix_path != NULL)) {
        usage(stderr);
        return 2;
    }
    int32_t *ids = NULL, *img = NULL;
    long n = cli_parse_int_list(ids_s, &ids);
    if (n <= 0) return 2;
    EgError err = {0};
    EgModelOptions opt = {.fp32 = fp32, .device = device, .progress = stderr, .quant = quant};
    EgFamilyModel *m = eg_family_open(model_dir, &opt, &err);
    if (!m) {
        fprintf(stderr, "egret: %s\n", err.msg);
        free(ids);
        return 1;
    }
    int rc = 1;
    float *pixels = NULL, *logits = NULL;
    EgFamilySeq *s = NULL;
    uint32_t vocab = m->info.vocab;
    img = malloc((size_t)n * sizeof *img);
    if (img_s) {
        int32_t *given;
        long k = cli_parse_int_list(img_s, &given);
        if (k != n) {
            fprintf(stderr, "egret: --image-of has %ld entries for %ld tokens\n", k, n);
            if (k >= 0) free(given);
            goto done;
        }
        memcpy(img, given, (size_t)n * sizeof *img);
        free(given);
    } else {
        eg_family_image_index(m, ids, (size_t)n, (int)n_images, img);
    }
    if (pix_path) {
        size_t len;
        pixels = cli_read_file(pix_path, &len);
        size_t want = (size_t)n_images * m->info.image_floats * sizeof(float);
        if (!pixels) goto done;
        if (len != want) {
            fprintf(stderr, "egret: %s has %zu bytes, %ld images need %zu\n", pix_path, len,
                    n_images, want);
            goto done;
        }
    }
    s = eg_fseq_new(m, (uint32_t)(n + n_generate + 1), &err);
    logits = malloc((size_t)n * vocab * sizeof *logits);
    if (!s || !logits || eg_fseq_set_images(s, pixels, (uint32_t)n_images, &err) ||
        eg_fseq_forward(s, ids, img, (uint32_t)n, logits, all_logits || logits_out, &err)) {
        fprintf(stderr, "egret: %s\n", err.msg);
        goto done;
    }
    if (logits_out && write_logits(logits_out, logits, (size_t)n, vocab)) goto done;
    if (logits_out && !all_logits) /* the rows below read the last position's */
        memmove(logits, logits + (size_t)(n - 1) * vocab, vocab * sizeof *logits);
    for (long t = 0; t < (all_logits ? n : 1); t++) {
        const float *row = logits + (size_t)t * vocab;
        int32_t best = argmax(row, vocab);
        printf("position %ld: argmax %d (logit %.6f)\n", all_logits ? t : n - 1, best, row[best]);
    }
    if (n_generate > 0) {
        printf("generated:");
        for (long k = 0; k < n_generate; k++) {
            int32_t best = argmax(logits, vocab);
            printf(" %d", best);
            if (k + 1 < n_generate && eg_fseq_forward(s, &best, NULL, 1, logits, 0, &err)) {
                fprintf(stderr, "\negret: %s\n", err.msg);
                goto done;
            }
        }
        printf("\n");
    }
    rc = 0;
done:
    eg_fseq_free(s);
    free(logits);
    free(pixels);
    free(img);
    free(ids);
    eg_family_close(m);
    return rc;
}
