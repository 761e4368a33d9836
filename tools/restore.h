/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Restoring a point into a directory: an exact copy of what was read.
 */
#ifndef CLONECTL_RESTORE_H
#define CLONECTL_RESTORE_H

#include "chunkstore.h"

typedef struct restore_result {
        uint64_t files;
        uint64_t bytes;
        char **errors; /* one line per node that could not be restored */
        size_t n_errors;
} restore_result;

/* Restores the point into dest, which must not exist or be an empty
 * directory.  Nodes that fail are listed in ret->errors and the rest is
 * restored; a negative errno means nothing useful could be done. */
int restore_point(cs_store *store, const cs_chunk_id *point, const char *dest, restore_result *ret);
void restore_result_free(restore_result *r);

#endif
