/* The egret command's subcommands (service/cli_*.c) and the small argument helpers they share. */
#ifndef EGRET_CLI_H
#define EGRET_CLI_H

#include <stddef.h>
#include <stdint.h>

int cli_devices(int argc, char **argv);
int cli_forward(int argc, char **argv);
int cli_run(int argc, char **argv);

/* Parses "1,2,3" into a malloc'd array; returns the count or -1 (message on stderr). */
long cli_parse_int_list(const char *s, int32_t **out);
/* The model folder to use: --model's value, else the bundled demo model. */
const char *cli_default_model(void);
/* Reads a whole file; NULL on failure (message on stderr). */
void *cli_read_file(const char *path, size_t *len);

#endif
