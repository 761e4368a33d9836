/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Node metadata by (dir fd, name).  The *xattr() family has no *at()
 * variants, so nodes are named through /proc/self/fd/N/NAME: the path
 * stays short whatever the node's depth, and the l*xattr() calls never
 * follow a final symlink.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fsmeta.h"
#include "util/macro.h"

const char *fd_path(char *buf, size_t size, int dir_fd, const char *name)
{
        if (name)
                snprintf(buf, size, "/proc/self/fd/%d/%s", dir_fd, name);
        else
                snprintf(buf, size, "/proc/self/fd/%d", dir_fd);
        return buf;
}

void xattrs_free(xattr_list *l)
{
        for (size_t i = 0; i < l->n; i++)
                free(l->values ? l->values[i] : NULL);
        free(l->values);
        free(l->items);
        free(l->names);
        *l = (xattr_list) {};
}

static bool unsupported(int e)
{
        return e == ENOTSUP || e == ENOSYS;
}

/* The node is dir_fd itself when name is NULL (path is then ""), else the
 * /proc path names it without following a final symlink. */
static ssize_t list_names(int fd, const char *path, char *buf, size_t size)
{
        return *path ? llistxattr(path, buf, size) : flistxattr(fd, buf, size);
}

static ssize_t get_value(int fd, const char *path, const char *name, void *buf, size_t size)
{
        return *path ? lgetxattr(path, name, buf, size) : fgetxattr(fd, name, buf, size);
}

int xattrs_read(int dir_fd, const char *name, xattr_list *ret)
{
        char path[PATH_MAX];
        xattr_list l = {};
        ssize_t size;
        size_t n = 0;
        int r;

        *ret = (xattr_list) {};
        if (name)
                fd_path(path, sizeof(path), dir_fd, name);
        else
                path[0] = 0;
        /* The list can grow between the two calls: retry until it fits. */
        for (;;) {
                size = list_names(dir_fd, path, NULL, 0);
                if (size < 0)
                        return unsupported(errno) ? 0 : negative_errno();
                if (size == 0)
                        return 0;
                free(l.names);
                l.names = malloc((size_t) size);
                if (!l.names)
                        return -ENOMEM;
                ssize_t got = list_names(dir_fd, path, l.names, (size_t) size);
                if (got >= 0) {
                        size = got;
                        break;
                }
                if (errno != ERANGE) {
                        r = negative_errno();
                        free(l.names);
                        return r;
                }
        }

        for (ssize_t i = 0; i < size; i += (ssize_t) strlen(l.names + i) + 1)
                n++;
        l.items = calloc(n, sizeof(*l.items));
        l.values = calloc(n, sizeof(*l.values));
        if (!l.items || !l.values) {
                xattrs_free(&l);
                return -ENOMEM;
        }
        for (ssize_t i = 0; i < size; i += (ssize_t) strlen(l.names + i) + 1) {
                const char *xname = l.names + i;
                ssize_t vsize;

                for (;;) {
                        vsize = get_value(dir_fd, path, xname, NULL, 0);
                        if (vsize < 0)
                                break;
                        l.values[l.n] = malloc((size_t) MAX(vsize, 1));
                        if (!l.values[l.n]) {
                                xattrs_free(&l);
                                return -ENOMEM;
                        }
                        ssize_t got = get_value(dir_fd, path, xname, l.values[l.n], (size_t) vsize);
                        if (got >= 0) {
                                vsize = got;
                                break;
                        }
                        l.values[l.n] = mfree(l.values[l.n]);
                        if (errno != ERANGE)
                                break;
                }
                if (vsize < 0) {
                        if (errno == ENODATA)
                                continue; /* removed meanwhile */
                        r = negative_errno();
                        xattrs_free(&l);
                        return r;
                }
                l.items[l.n] = (cs_xattr) { .name = xname, .value = l.values[l.n], .size = (uint32_t) vsize };
                l.n++;
        }
        *ret = l;
        return 0;
}

/* Only root may give a file away or set trusted.* and security.*
 * attributes; anyone else restores as tar does: owned by themselves,
 * with the attributes they may set. */
static bool may_skip(int error, const char *xattr)
{
        return geteuid() != 0 && (error == EPERM || error == EACCES) &&
               (!xattr || strncmp(xattr, "user.", 5) != 0);
}

int meta_apply(int dir_fd, const char *name, const cs_entry *e)
{
        struct timespec times[2] = {
                { .tv_nsec = UTIME_OMIT },
                { .tv_sec = e->mtime_sec, .tv_nsec = e->mtime_nsec },
        };
        char path[PATH_MAX];

        if (!name) {
                /* dir_fd is the node itself. */
                if (fchown(dir_fd, e->uid, e->gid) < 0 && !may_skip(errno, NULL))
                        return negative_errno();
                for (size_t i = 0; i < e->n_xattrs; i++)
                        if (fsetxattr(dir_fd, e->xattrs[i].name, e->xattrs[i].value, e->xattrs[i].size, 0) < 0 &&
                            !may_skip(errno, e->xattrs[i].name))
                                return negative_errno();
                if (fchmod(dir_fd, e->mode & 07777) < 0 || futimens(dir_fd, times) < 0)
                        return negative_errno();
                return 0;
        }

        if (fchownat(dir_fd, name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0 && !may_skip(errno, NULL))
                return negative_errno();
        fd_path(path, sizeof(path), dir_fd, name);
        for (size_t i = 0; i < e->n_xattrs; i++)
                if (lsetxattr(path, e->xattrs[i].name, e->xattrs[i].value, e->xattrs[i].size, 0) < 0 &&
                    !may_skip(errno, e->xattrs[i].name))
                        return negative_errno();
        if (!S_ISLNK(e->mode) && fchmodat(dir_fd, name, e->mode & 07777, 0) < 0)
                return negative_errno();
        if (utimensat(dir_fd, name, times, AT_SYMLINK_NOFOLLOW) < 0)
                return negative_errno();
        return 0;
}
