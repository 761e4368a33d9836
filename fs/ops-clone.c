/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * FUSE operations on clones: clones/<name>/ and -o clone=NAME.  A thin
 * translation onto cs_clone_* (chunkstore/clone.c does the copy-on-write);
 * permissions are the kernel's (default_permissions).
 *
 * Clone files keep the kernel's page cache across opens (keep_cache):
 * everything written goes through this mount, and a rewind, refresh or
 * destroy invalidates it explicitly (control.c).  An inode unlinked
 * while open lives until its last handle is released (opens).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/capability.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/xattr.h>
#include <time.h>

#include "clonefs.h"
#include "ops-clone.h"
#include "util/macro.h"

#define CLONE_TIMEOUT 1.0

typedef struct clone_handle {
        cfs_node *node;
} clone_handle;

static void reply_clone_entry(fuse_req_t req, cfs_context *ctx, cfs_node *n, const cs_clone_attr *attr)
{
        struct fuse_entry_param e = {
                .ino = cfs_node_ino(ctx, n),
                .generation = 1,
                .attr_timeout = CLONE_TIMEOUT,
                .entry_timeout = CLONE_TIMEOUT,
        };

        cfs_stat_from_clone(ctx, attr, &e.attr);
        if (fuse_reply_entry(req, &e) != 0)
                cfs_node_forget(ctx, n, 1);
}

/* Whether the inode cino of n's clone is open through this mount. */
static bool inode_open(cfs_context *ctx, cfs_node *dir, const char *name)
{
        cs_clone_attr attr;
        cfs_node *n;
        bool open = false;

        if (cs_clone_lookup(dir->clone->clone, dir->cino, name, &attr) < 0)
                return false;
        if (cfs_node_for_clone(ctx, dir, dir->clone, &attr, name, &n) < 0)
                return false;
        pthread_mutex_lock(&ctx->table_lock);
        open = n->opens > 0;
        pthread_mutex_unlock(&ctx->table_lock);
        cfs_node_forget(ctx, n, 1);
        return open;
}

/* Replies with attributes, or with the error r of the call that made them. */
static void reply_attr(fuse_req_t req, cfs_context *ctx, int r, const cs_clone_attr *attr)
{
        struct stat st;

        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        cfs_stat_from_clone(ctx, attr, &st);
        fuse_reply_attr(req, &st, CLONE_TIMEOUT);
}

void cfs_clone_op_getattr(fuse_req_t req, cfs_context *ctx, cfs_node *n)
{
        cs_clone_attr attr;
        reply_attr(req, ctx, cs_clone_getattr(n->clone->clone, n->cino, &attr), &attr);
}

void cfs_clone_op_lookup_reply(fuse_req_t req, cfs_context *ctx, cfs_node *n)
{
        cs_clone_attr attr;
        int r = cs_clone_getattr(n->clone->clone, n->cino, &attr);

        if (r < 0) {
                cfs_node_forget(ctx, n, 1);
                fuse_reply_err(req, -r);
                return;
        }
        reply_clone_entry(req, ctx, n, &attr);
}

void cfs_clone_op_setattr(fuse_req_t req, cfs_context *ctx, cfs_node *n, struct stat *st, int to_set)
{
        cs_clone_attr in = {}, out;
        struct timespec t;
        unsigned valid = 0;

        clock_gettime(CLOCK_REALTIME, &t);
        if (to_set & FUSE_SET_ATTR_MODE) {
                valid |= CS_SET_MODE;
                in.mode = st->st_mode;
        }
        if (to_set & FUSE_SET_ATTR_UID) {
                valid |= CS_SET_UID;
                in.uid = st->st_uid;
        }
        if (to_set & FUSE_SET_ATTR_GID) {
                valid |= CS_SET_GID;
                in.gid = st->st_gid;
        }
        if (to_set & FUSE_SET_ATTR_SIZE) {
                valid |= CS_SET_SIZE;
                in.size = (uint64_t) st->st_size;
        }
        if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
                valid |= CS_SET_ATIME;
                in.atime = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? t : st->st_atim;
        }
        if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
                valid |= CS_SET_MTIME;
                in.mtime = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? t : st->st_mtim;
        }
        if (to_set & FUSE_SET_ATTR_CTIME) {
                valid |= CS_SET_CTIME;
                in.ctime = st->st_ctim;
        }
        reply_attr(req, ctx, cs_clone_setattr(n->clone->clone, n->cino, &in, valid, &out), &out);
}

void cfs_clone_op_readlink(fuse_req_t req, cfs_context *ctx, cfs_node *n)
{
        char target[PATH_MAX + 1];
        int r = cs_clone_readlink(n->clone->clone, n->cino, target, sizeof(target));

        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_readlink(req, target);
}

/* Makes any kind of node and replies with its entry. */
static int make_node(fuse_req_t req, cfs_context *ctx, cfs_node *parent, const char *name, mode_t mode, dev_t rdev,
                     const char *target, cfs_node **ret_node)
{
        const struct fuse_ctx *caller = fuse_req_ctx(req);
        cs_clone_attr attr;
        cfs_node *n;
        int r;

        /* The kernel leaves the umask to us (FUSE_CAP_DONT_MASK): a default
         * ACL, where there is one, replaces it. */
        r = cs_clone_create_node(parent->clone->clone, parent->cino, name, mode, rdev, caller->uid, caller->gid,
                                 caller->umask, target, &attr);
        if (r < 0)
                return r;
        r = cfs_node_for_clone(ctx, parent, parent->clone, &attr, name, &n);
        if (r < 0)
                return r;
        if (ret_node) {
                *ret_node = n;
                return 0;
        }
        reply_clone_entry(req, ctx, n, &attr);
        return 0;
}

void cfs_clone_op_mknod(fuse_req_t req, cfs_context *ctx, cfs_node *parent, const char *name, mode_t mode,
                        dev_t rdev, const char *target)
{
        int r = make_node(req, ctx, parent, name, mode, rdev, target, NULL);
        if (r < 0)
                fuse_reply_err(req, -r);
}

void cfs_clone_op_unlink(fuse_req_t req, cfs_context *ctx, cfs_node *parent, const char *name, bool dir)
{
        bool open = !dir && inode_open(ctx, parent, name);
        int r = cs_clone_unlink(parent->clone->clone, parent->cino, name, dir, open, NULL);

        fuse_reply_err(req, -MIN(r, 0));
}

void cfs_clone_op_rename(fuse_req_t req, cfs_context *ctx, cfs_node *parent, const char *name, cfs_node *new_parent,
                         const char *new_name, unsigned flags)
{
        unsigned cs_flags = 0;
        int r;

        if (new_parent->kind != CFS_NODE_CLONE || new_parent->clone != parent->clone) {
                fuse_reply_err(req, EXDEV);
                return;
        }
        if (flags & RENAME_NOREPLACE)
                cs_flags |= CS_RENAME_NOREPLACE;
        if (flags & RENAME_EXCHANGE)
                cs_flags |= CS_RENAME_EXCHANGE;
        if (flags & ~(unsigned) (RENAME_NOREPLACE | RENAME_EXCHANGE)) {
                fuse_reply_err(req, EINVAL);
                return;
        }
        r = cs_clone_rename(parent->clone->clone, parent->cino, name, new_parent->cino, new_name, cs_flags,
                            inode_open(ctx, new_parent, new_name), NULL);
        /* The kernel moves its dentry: a rewind must know the new name. */
        if (r >= 0)
                cfs_node_renamed(ctx, new_parent, new_name);
        if (r >= 0 && (flags & RENAME_EXCHANGE))
                cfs_node_renamed(ctx, parent, name);
        fuse_reply_err(req, -MIN(r, 0));
}

void cfs_clone_op_link(fuse_req_t req, cfs_context *ctx, cfs_node *n, cfs_node *new_parent, const char *new_name)
{
        cs_clone_attr attr;
        cfs_node *linked;
        int r;

        if (new_parent->kind != CFS_NODE_CLONE || new_parent->clone != n->clone) {
                fuse_reply_err(req, EXDEV);
                return;
        }
        r = cs_clone_link(n->clone->clone, n->cino, new_parent->cino, new_name, &attr);
        if (r >= 0)
                r = cfs_node_for_clone(ctx, new_parent, n->clone, &attr, new_name, &linked);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        reply_clone_entry(req, ctx, linked, &attr);
}

static int handle_new(cfs_context *ctx, cfs_node *n, struct fuse_file_info *fi)
{
        clone_handle *h = calloc(1, sizeof(*h));

        if (!h)
                return -ENOMEM;
        h->node = n;
        pthread_mutex_lock(&ctx->table_lock);
        n->refs++;
        n->opens++;
        pthread_mutex_unlock(&ctx->table_lock);
        fi->fh = (uint64_t) (uintptr_t) h;
        fi->keep_cache = 1; /* see cfs_op_init: the kernel's pages stay true */
        return 0;
}

void cfs_clone_op_open(fuse_req_t req, cfs_context *ctx, cfs_node *n, struct fuse_file_info *fi)
{
        cs_clone_attr attr;
        int r = cs_clone_getattr(n->clone->clone, n->cino, &attr);

        if (r >= 0 && S_ISDIR(attr.mode))
                r = -EISDIR;
        /* The kernel leaves O_TRUNC to us (atomic_o_trunc): it has checked
         * write permission, and the truncation moves mtime and ctime. */
        if (r >= 0 && (fi->flags & O_TRUNC) && S_ISREG(attr.mode) && attr.size > 0) {
                cs_clone_attr empty = { .size = 0 };
                r = cs_clone_setattr(n->clone->clone, n->cino, &empty, CS_SET_SIZE, &attr);
        }
        if (r >= 0)
                r = handle_new(ctx, n, fi);
        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_open(req, fi);
}

void cfs_clone_op_create(fuse_req_t req, cfs_context *ctx, cfs_node *parent, const char *name, mode_t mode,
                         struct fuse_file_info *fi)
{
        struct fuse_entry_param e = { .generation = 1, .attr_timeout = CLONE_TIMEOUT, .entry_timeout = CLONE_TIMEOUT };
        cs_clone_attr attr;
        cfs_node *n;
        int r;

        r = make_node(req, ctx, parent, name, S_IFREG | (mode & 07777), 0, NULL, &n);
        if (r >= 0)
                r = cs_clone_getattr(n->clone->clone, n->cino, &attr);
        if (r >= 0)
                r = handle_new(ctx, n, fi);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        e.ino = cfs_node_ino(ctx, n);
        cfs_stat_from_clone(ctx, &attr, &e.attr);
        fuse_reply_create(req, &e, fi);
}

void cfs_clone_op_release(fuse_req_t req, cfs_context *ctx, struct fuse_file_info *fi)
{
        clone_handle *h = (clone_handle *) (uintptr_t) fi->fh;
        cfs_node *n = h->node;
        bool last;

        pthread_mutex_lock(&ctx->table_lock);
        last = --n->opens == 0;
        pthread_mutex_unlock(&ctx->table_lock);
        if (last)
                (void) cs_clone_release_inode(n->clone->clone, n->cino); /* an unlinked inode goes now */
        cfs_node_unref(ctx, n);
        free(h);
        fuse_reply_err(req, 0);
}

void cfs_clone_op_read(fuse_req_t req, cfs_context *ctx, cfs_node *n, size_t size, off_t off)
{
        uint8_t *buf = malloc(MAX(size, 1u));
        ssize_t got;

        if (!buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        got = cs_clone_read(n->clone->clone, n->cino, buf, size, (uint64_t) off);
        if (got < 0)
                fuse_reply_err(req, (int) -got);
        else
                fuse_reply_buf(req, (const char *) buf, (size_t) got);
        free(buf);
}

void cfs_clone_op_write(fuse_req_t req, cfs_context *ctx, cfs_node *n, const char *buf, size_t size, off_t off)
{
        ssize_t done = cs_clone_write(n->clone->clone, n->cino, buf, size, (uint64_t) off);

        if (done < 0)
                fuse_reply_err(req, (int) -done);
        else
                fuse_reply_write(req, (size_t) done);
}

void cfs_clone_op_fsync(fuse_req_t req, cfs_context *ctx, cfs_node *n, int datasync)
{
        int r = cs_clone_fsync(n->clone->clone, n->cino, datasync != 0);
        fuse_reply_err(req, -MIN(r, 0));
}

void cfs_clone_op_fallocate(fuse_req_t req, cfs_context *ctx, cfs_node *n, int mode, off_t offset, off_t length)
{
        int cs_mode = 0, r;

        if (mode & FALLOC_FL_KEEP_SIZE)
                cs_mode |= CS_FALLOC_KEEP_SIZE;
        if (mode & FALLOC_FL_PUNCH_HOLE)
                cs_mode |= CS_FALLOC_PUNCH_HOLE;
        if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) {
                fuse_reply_err(req, EOPNOTSUPP);
                return;
        }
        r = cs_clone_fallocate(n->clone->clone, n->cino, cs_mode, (uint64_t) offset, (uint64_t) length);
        fuse_reply_err(req, -MIN(r, 0));
}

void cfs_clone_op_lseek(fuse_req_t req, cfs_context *ctx, cfs_node *n, off_t off, int whence)
{
        cs_clone_attr attr;
        int r = cs_clone_getattr(n->clone->clone, n->cino, &attr);

        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (off < 0 || (uint64_t) off >= attr.size) {
                fuse_reply_err(req, ENXIO);
                return;
        }
        /* Clone files are reported as all data: holes are an optimization,
         * never a promise. */
        if (whence == SEEK_DATA)
                fuse_reply_lseek(req, off);
        else if (whence == SEEK_HOLE)
                fuse_reply_lseek(req, (off_t) attr.size);
        else
                fuse_reply_err(req, EINVAL);
}

/* A clone directory's listing, taken at opendir: a readdir that pages
 * through a changing directory would skip or repeat entries otherwise. */
typedef struct dir_listing {
        size_t n, capacity;
        struct listing_entry {
                char *name;
                uint64_t ino;
                uint32_t mode;
        } *entries;
} dir_listing;

static void listing_free(dir_listing *l)
{
        if (!l)
                return;
        for (size_t i = 0; i < l->n; i++)
                free(l->entries[i].name);
        free(l->entries);
        free(l);
}

static bool collect_entry(void *userdata, const void *name, size_t name_len, uint64_t ino, uint32_t mode,
                          uint64_t next)
{
        dir_listing *l = userdata;

        if (l->n == l->capacity) {
                size_t cap = l->capacity ? 2 * l->capacity : 64;
                struct listing_entry *e = reallocarray(l->entries, cap, sizeof(*e));
                if (!e)
                        return false;
                l->entries = e;
                l->capacity = cap;
        }
        l->entries[l->n].name = strndup(name, MIN(name_len, (size_t) CS_NAME_MAX));
        if (!l->entries[l->n].name)
                return false;
        l->entries[l->n].ino = ino;
        l->entries[l->n].mode = mode;
        l->n++;
        return true;
}

void cfs_clone_op_opendir(fuse_req_t req, cfs_context *ctx, cfs_node *n, struct fuse_file_info *fi)
{
        dir_listing *l = calloc(1, sizeof(*l));
        int r;

        if (!l) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        r = cs_clone_readdir(n->clone->clone, n->cino, 0, collect_entry, l);
        if (r < 0) {
                listing_free(l);
                fuse_reply_err(req, -r);
                return;
        }
        fi->fh = (uint64_t) (uintptr_t) l;
        if (fuse_reply_open(req, fi) != 0)
                listing_free(l);
}

void cfs_clone_op_releasedir(struct fuse_file_info *fi)
{
        listing_free((dir_listing *) (uintptr_t) fi->fh);
}

void cfs_clone_op_readdir(fuse_req_t req, cfs_context *ctx, cfs_node *n, size_t size, off_t off, bool plus,
                          struct fuse_file_info *fi)
{
        dir_listing *l = (dir_listing *) (uintptr_t) fi->fh;
        char *buf = malloc(size);
        size_t used = 0;

        if (!buf || !l) {
                free(buf);
                fuse_reply_err(req, buf ? EBADF : ENOMEM);
                return;
        }
        /* Offsets: 0 ".", 1 "..", then the listing; plus entries carry no
         * lookup (ino 0 in the entry parameters). */
        for (; off < 2 + (off_t) l->n; off++) {
                struct stat st = { .st_ino = n->ino, .st_mode = S_IFDIR };
                const char *name = off == 0 ? "." : "..";
                if (off >= 2) {
                        const struct listing_entry *e = &l->entries[off - 2];
                        st = (struct stat) { .st_ino = e->ino, .st_mode = e->mode & S_IFMT };
                        name = e->name;
                }
                struct fuse_entry_param ep = { .attr = st };
                size_t need = plus ? fuse_add_direntry_plus(req, buf + used, size - used, name, &ep, off + 1)
                                   : fuse_add_direntry(req, buf + used, size - used, name, &st, off + 1);
                if (need > size - used)
                        break;
                used += need;
        }
        fuse_reply_buf(req, buf, used);
        free(buf);
}

void cfs_clone_op_getxattr(fuse_req_t req, cfs_context *ctx, cfs_node *n, const char *name, size_t size)
{
        char *buf = size ? malloc(size) : NULL;
        int r;

        if (size && !buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        r = cs_clone_getxattr(n->clone->clone, n->cino, name, buf, size);
        if (r < 0)
                fuse_reply_err(req, -r);
        else if (size == 0)
                fuse_reply_xattr(req, (size_t) r);
        else
                fuse_reply_buf(req, buf, (size_t) r);
        free(buf);
}

void cfs_clone_op_listxattr(fuse_req_t req, cfs_context *ctx, cfs_node *n, size_t size)
{
        char *buf = size ? malloc(size) : NULL;
        int r;

        if (size && !buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        r = cs_clone_listxattr(n->clone->clone, n->cino, buf, size);
        if (r < 0)
                fuse_reply_err(req, -r);
        else if (size == 0)
                fuse_reply_xattr(req, (size_t) r);
        else
                fuse_reply_buf(req, buf, (size_t) r);
        free(buf);
}

/* Whether the caller may keep a file's set-group-ID bit when it sets its
 * ACL: its fsgid or one of its groups is gid, or it has CAP_FSETID (the
 * kernel's in_group_or_capable()).  One read of /proc/PID/status gives
 * both its groups (what fuse_req_getgroups() reads) and its capabilities.
 * When that cannot be read, yes: the file keeps its mode, as before. */
static bool caller_in_group_or_capable(fuse_req_t req, gid_t gid)
{
        const struct fuse_ctx *caller = fuse_req_ctx(req);
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        size_t line_size = 0;
        char path[64];

        if (caller->gid == gid)
                return true;
        snprintf(path, sizeof(path), "/proc/%d/status", (int) caller->pid);
        f = caller->pid > 0 ? fopen(path, "re") : NULL;
        if (!f)
                return true;
        while (getline(&line, &line_size, f) > 0) {
                unsigned long long caps;

                if (sscanf(line, "CapEff: %llx", &caps) == 1)
                        return caps & (1ull << CAP_FSETID);
                if (strncmp(line, "Groups:", 7) != 0)
                        continue;
                for (char *p = line + 7, *end;; p = end) {
                        unsigned long g = strtoul(p, &end, 10);
                        if (end == p)
                                break;
                        if (g == gid)
                                return true;
                }
        }
        return false;
}

void cfs_clone_op_setxattr(fuse_req_t req, cfs_context *ctx, cfs_node *n, const char *name, const char *value,
                           size_t size, int flags)
{
        int cs_flags = (flags & XATTR_CREATE ? CS_XATTR_CREATE : 0) | (flags & XATTR_REPLACE ? CS_XATTR_REPLACE : 0);
        cs_clone_attr attr;
        int r;

        /* setfacl by someone outside the file's group drops its
         * set-group-ID bit (posix_acl_update_mode()).  The kernel would
         * say so with FUSE_SETXATTR_ACL_KILL_SGID, which needs
         * FUSE_SETXATTR_EXT, which libfuse 3.14 does not negotiate. */
        if (strcmp(name, "system.posix_acl_access") == 0 &&
            cs_clone_getattr(n->clone->clone, n->cino, &attr) >= 0 && (attr.mode & S_ISGID) &&
            !caller_in_group_or_capable(req, attr.gid))
                cs_flags |= CS_XATTR_KILL_SGID;
        r = cs_clone_setxattr(n->clone->clone, n->cino, name, value, size, cs_flags);
        fuse_reply_err(req, -MIN(r, 0));
}

void cfs_clone_op_removexattr(fuse_req_t req, cfs_context *ctx, cfs_node *n, const char *name)
{
        int r = cs_clone_removexattr(n->clone->clone, n->cino, name);
        fuse_reply_err(req, -MIN(r, 0));
}
