/* The host's speed at converting AWQ int4 Linears to q4 rows (runtime/awq.h): what loading a
 * published AWQ checkpoint adds to reading its files. A benchmark, never a test.
 *
 *   awq_bench [--rows N] [--cols K] [--group G] [--reps R]
 *
 * One random Linear of N outputs (default 14336) by K inputs (default 4096: Llama 3.2 11B's
 * MLP), group G (default 128); reports the check (eg_awq_check) and the conversion
 * (eg_awq_to_q4, on every core) as the best of R runs (default 3), in M weights a second. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/awq.h"
#include "runtime/clock.h"
#include "runtime/parallel.h"
#include "runtime/quant.h"

int main(int argc, char **argv) {
    uint32_t rows = 14336, cols = 4096, group = 128;
    int reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        unsigned long v = strtoul(argv[i + 1], NULL, 10);
        if (!strcmp(argv[i], "--rows"))
            rows = (uint32_t)v;
        else if (!strcmp(argv[i], "--cols"))
            cols = (uint32_t)v;
        else if (!strcmp(argv[i], "--group"))
            group = (uint32_t)v;
        else if (!strcmp(argv[i], "--reps"))
            reps = (int)v;
        else {
            fprintf(stderr, "awq_bench: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (rows % 8 || !group || cols % group || group % EG_QUANT_BLOCK) {
        fprintf(stderr, "awq_bench: rows a multiple of 8, group of 32s dividing cols\n");
        return 2;
    }
    size_t nw = (size_t)cols * rows / 8, nz = (size_t)cols / group * rows / 8,
           ns = (size_t)cols / group * rows;
    int32_t *qw = malloc(nw * 4), *qz = malloc(nz * 4);
    uint16_t *sc = malloc(ns * 2);
    uint32_t *dst = malloc((size_t)rows * eg_quant_row_words(EG_WEIGHTS_Q4, cols) * 4);
    if (!qw || !qz || !sc || !dst) {
        fprintf(stderr, "awq_bench: out of memory\n");
        return 1;
    }
    srand(1);
    for (size_t i = 0; i < nw; i++)
        qw[i] = rand();
    for (size_t i = 0; i < nz; i++)
        qz[i] = rand();
    for (size_t i = 0; i < ns; i++)
        sc[i] = (uint16_t)(0x1c00 + (rand() & 0x3ff)); /* 0.004 .. 0.008 */
    EgAwqMemory mem;
    eg_awq_memory(&mem, qw, qz, sc, rows, cols, group);
    const EgAwqLinear a = mem.linear;
    EgError err = {0};
    double check = 1e30, convert = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = eg_now_s();
        if (eg_awq_check(&a, rows, cols, (int)group, &err)) break;
        double t1 = eg_now_s();
        if (eg_awq_to_q4(&a, rows, cols, dst, &err)) break;
        double t2 = eg_now_s();
        check = t1 - t0 < check ? t1 - t0 : check;
        convert = t2 - t1 < convert ? t2 - t1 : convert;
    }
    if (err.msg[0]) {
        fprintf(stderr, "awq_bench: %s\n", err.msg);
        return 1;
    }
    double n = (double)rows * cols;
    printf("AWQ %u x %u, group %u, %d cores: check %.3f s (%.0f M weights/s), convert %.3f s "
           "(%.0f M weights/s)\n",
           rows, cols, group, eg_online_cores(EG_PARALLEL_MAX), check, n / check / 1e6, convert,
           n / convert / 1e6);
    free(qw), free(qz), free(sc), free(dst);
    return 0;
}
