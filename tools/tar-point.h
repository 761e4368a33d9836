/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tar streams into a point: a ustar stream (as PostgreSQL's BASE_BACKUP
 * sends it) is parsed as it arrives and its files are put into the store
 * block by block, by a pool of worker threads; finishing builds the
 * directory objects and the point object.  Nothing touches the disk but
 * the store.
 */
#ifndef CLONECTL_TAR_POINT_H
#define CLONECTL_TAR_POINT_H

#include <stddef.h>
#include <stdint.h>

#include "chunkstore.h"

typedef struct tar_point tar_point;

/* threads: workers that hash, compress and put (0: one per core). */
int tar_point_new(cs_store *store, int threads, tar_point **ret);
tar_point *tar_point_free(tar_point *t);
void tar_point_freep(tar_point **t);

/* Starts an archive whose members go under prefix ("" for the root, or a
 * relative directory path such as "pg_tblspc/16385"). */
int tar_point_begin(tar_point *t, const char *prefix);
/* Feeds tar bytes, in pieces of any size.  -EBADMSG for a malformed
 * stream or an unsupported member type. */
int tar_point_feed(tar_point *t, const void *data, size_t size);
/* Ends the archive: -EBADMSG if it stopped inside a member. */
int tar_point_end(tar_point *t);

/* Adds a regular file (mode 0600) with the given bytes at path. */
int tar_point_add_file(tar_point *t, const char *path, const void *data, size_t size);

/* Waits for the workers and builds the point; the builder is spent. */
int tar_point_finish(tar_point *t, cs_chunk_id *ret_point, uint64_t *ret_files, uint64_t *ret_bytes);

#endif
