/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reading and applying the metadata of filesystem nodes by (directory fd,
 * name), so that paths of any length work: extended attributes (ACLs and
 * security.* included), ownership, permission bits and nanosecond times.
 */
#ifndef CLONECTL_FSMETA_H
#define CLONECTL_FSMETA_H

#include <sys/stat.h>

#include "chunkstore.h"

/* The extended attributes of one node, owned. */
typedef struct xattr_list {
        cs_xattr *items;
        size_t n;
        char *names;  /* the name list buffer the items point into */
        void **values;
} xattr_list;

/* Reads every extended attribute of dir_fd/name (name NULL: dir_fd
 * itself) without following a final symlink.  A filesystem without xattr
 * support gives an empty list. */
int xattrs_read(int dir_fd, const char *name, xattr_list *ret);
void xattrs_free(xattr_list *l);

/* Applies ownership, xattrs, mode and mtime of e to dir_fd/name (name NULL:
 * dir_fd itself), in the order that keeps each from undoing another:
 * chown (it clears setuid), xattrs (ACLs), chmod, times.  Run by a user
 * other than root, it keeps the user as owner and skips the attributes
 * only root may set, as tar does. */
int meta_apply(int dir_fd, const char *name, const cs_entry *e);

/* "/proc/self/fd/N/name" or "/proc/self/fd/N" into buf. */
const char *fd_path(char *buf, size_t size, int dir_fd, const char *name);

#endif
