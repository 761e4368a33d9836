/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clonectl: shared state of the command line (parsed once in main, read-only
 * afterwards) and the verbs.  Each verb takes its positional arguments
 * (argv[0] is the verb) and returns 0 or a negative errno it has already
 * reported in one line.
 */
#ifndef CLONECTL_H
#define CLONECTL_H

#include <stdbool.h>
#include <stdint.h>

#include "chunkstore.h"

extern const char *arg_store;
extern bool arg_json;
extern bool arg_data;
extern uint64_t arg_block_size;
extern int arg_lz4hc_level;

/* Opens the store named by --store, $CLONEFS_STORE or /var/lib/clonefs,
 * reporting any failure in one line that names the store. */
int open_store(unsigned flags, cs_store **ret_store);

int verb_init(int argc, char **argv);
int verb_verify(int argc, char **argv);
int verb_stats(int argc, char **argv);

#endif
