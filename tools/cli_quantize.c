/* egret quantize: a checkpoint folder rewritten with its projections stored quantized, which
 * then loads without quantizing (tools/quantize_folder.h, docs/quantization.md). */
#include <getopt.h>
#include <stdio.h>

#include "runtime/clock.h"
#include "runtime/parallel.h"
#include "tools/cli.h"
#include "tools/quantize_folder.h"

static void usage(FILE *f) {
    fprintf(f, "usage: egret quantize --model DIR --quant q8|q4 --out DIR2 [options]\n"
               "  --model DIR      checkpoint folder to read (default: the bundled demo model)\n"
               "  --quant q8|q4    format of the projections (docs/quantization.md)\n"
               "  --out DIR2       folder to write; must not exist (written whole, or not at all)\n"
               "  --threads N      threads quantizing (default: every core)\n"
               "  --shard-mb N     most MiB of tensors in one file before the next (default 4096)\n"
               "Load DIR2 as any checkpoint (egret serve --model DIR2): it loads in its own\n"
               "format; a different --quant is refused.\n");
}

int cli_quantize(int argc, char **argv) {
    static struct option longopts[] = {{"model", required_argument, 0, 'm'},
                                       {"quant", required_argument, 0, 'q'},
                                       {"out", required_argument, 0, 'o'},
                                       {"threads", required_argument, 0, 't'},
                                       {"shard-mb", required_argument, 0, 's'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    const char *model = cli_default_model(), *out = NULL;
    EgQuantizeOptions opt = {.progress = stderr};
    uint64_t threads = 0, shard_mb = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'q':
            if (cli_parse_quant(optarg, &opt.format)) return 2;
            break;
        case 'o':
            out = optarg;
            break;
        case 't':
            if (cli_parse_u64_in("threads", optarg, 1, 1024, &threads)) return 2;
            break;
        case 's':
            if (cli_parse_u64_in("shard-mb", optarg, 1, 1 << 20, &shard_mb)) return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || !out || opt.format == EG_WEIGHTS_DENSE) {
        fprintf(stderr, "egret quantize: %s\n",
                optind < argc ? "unexpected argument"
                : !out        ? "--out is required"
                              : "--quant q8 or --quant q4 is required");
        usage(stderr);
        return 2;
    }
    eg_parallel_limit((int)threads);
    opt.shard_bytes = shard_mb << 20;
    double t0 = eg_now_s();
    EgError err = {0};
    if (eg_quantize_folder(model, out, &opt, &err)) {
        fprintf(stderr, "egret: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "egret: quantize: wrote %s in %.2f s\n", out, eg_now_s() - t0);
    return 0;
}
