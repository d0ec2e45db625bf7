/* The egret command's subcommands (tools/cli_*.c) and the small argument helpers they share. */
#ifndef EGRET_CLI_H
#define EGRET_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/quant.h"

int cli_devices(int argc, char **argv);
int cli_forward(int argc, char **argv);
int cli_run(int argc, char **argv);
int cli_serve(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_caption(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_draw(int argc, char **argv);
int cli_loadtest(int argc, char **argv);
int cli_examples(int argc, char **argv);
int cli_quantize(int argc, char **argv);
int cli_eval(int argc, char **argv);

/* Parses "1,2,3" into a malloc'd array; returns the count or -1 (message on stderr). */
long cli_parse_int_list(const char *s, int32_t **out);
/* The model folder to use: --model's value, else the bundled demo model. */
const char *cli_default_model(void);
/* Strict option values: the whole argument, in range; else -1 with a message naming --opt. */
int cli_parse_u32(const char *opt, const char *s, uint32_t *out);
/* The same within [lo, hi] (the message names the range when it is narrower than 32 bits). */
int cli_parse_u64_in(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out);
int cli_parse_u64(const char *opt, const char *s, uint64_t *out);
int cli_parse_float(const char *opt, const char *s, float *out);
/* --quant's value: q8, q4 or none (runtime/quant.h); else -1 with a message. */
int cli_parse_quant(const char *s, EgWeightFormat *out);
/* A secret (API key) from a file, without trailing newlines; NULL if unreadable or empty. */
char *cli_read_secret(const char *path);
/* Reads a whole file; NULL on failure (message on stderr). */
void *cli_read_file(const char *path, size_t *len);

#endif
