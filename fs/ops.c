/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The FUSE operations: a thin translation of kernel requests onto nodes
 * (inode.c), the block cache (cache.c) and the chunk store.  Only this file
 * flips error signs: everything below returns negative errnos, the kernel
 * wants positive ones.
 *
 * Points are immutable, so their entries and attributes are cached by the
 * kernel for a day and file pages are kept across opens (keep_cache); the
 * virtual levels (timelines/, timelines/T/) get one-second timeouts so new
 * and forgotten points show within a second.  Writes are for clones
 * (ops-clone.c); anywhere else they are EROFS.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include "clonefs.h"
#include "ops-clone.h"
#include "util/macro.h"

#define IMMUTABLE_TIMEOUT 86400.0
#define VIRTUAL_TIMEOUT 1.0

#define DEBUG_OP(ctx, ...)                                      \
        do {                                                    \
                if (UNLIKELY((ctx)->debug))                     \
                        fuse_log(FUSE_LOG_DEBUG, __VA_ARGS__);  \
        } while (0)

static double timeout_of(const cfs_node *n)
{
        return cfs_node_immutable(n) ? IMMUTABLE_TIMEOUT : VIRTUAL_TIMEOUT;
}

/* A point's contents never change, but the point itself can be forgotten:
 * its name in timelines/T/ is revalidated like the rest of that level. */
static double entry_timeout_of(const cfs_node *n)
{
        return n->kind == CFS_NODE_POINT ? VIRTUAL_TIMEOUT : timeout_of(n);
}

/* --- Per-open state --------------------------------------------------- */

typedef struct cfs_handle {
        cfs_node *node;
        pthread_mutex_t lock;
        uint64_t next_offset;     /* where a sequential reader reads next */
        uint64_t prefetched;      /* blocks before this were asked for */
        int64_t segment;          /* the segment whose ids are loaded, or -1 */
        size_t segment_n;
        cs_chunk_id segment_ids[CS_SEGMENT_BLOCKS];
} cfs_handle;

/* Block ids [first, first + n) of the handle's file (h->lock held). */
static int handle_block_ids(cfs_context *ctx, cfs_handle *h, uint64_t first, size_t n, cs_chunk_id *out)
{
        const cs_entry *e = &h->node->entry;
        uint64_t total = cs_store_blocks_of(ctx->store, e->size);

        if (first + n > total)
                return -EINVAL;
        if (!e->content.segmented)
                return cs_content_blocks(ctx->store, &e->content, first, n, out);
        while (n > 0) {
                int64_t s = (int64_t) (first / CS_SEGMENT_BLOCKS);
                size_t offset = first % CS_SEGMENT_BLOCKS, take;
                if (h->segment != s) {
                        size_t count = (size_t) MIN((uint64_t) CS_SEGMENT_BLOCKS, total - (uint64_t) s * CS_SEGMENT_BLOCKS);
                        int r = cs_content_blocks(ctx->store, &e->content, (uint64_t) s * CS_SEGMENT_BLOCKS, count,
                                                  h->segment_ids);
                        if (r < 0) {
                                h->segment = -1;
                                return r;
                        }
                        h->segment = s;
                        h->segment_n = count;
                }
                take = MIN(n, h->segment_n - offset);
                memcpy(out, h->segment_ids + offset, take * sizeof(*out));
                out += take;
                first += take;
                n -= take;
        }
        return 0;
}

/* --- Lookups and attributes -------------------------------------------- */

static void reply_node(fuse_req_t req, cfs_context *ctx, cfs_node *n)
{
        struct fuse_entry_param e = {
                .ino = cfs_node_ino(ctx, n),
                .generation = 1,
                .attr_timeout = timeout_of(n),
                .entry_timeout = entry_timeout_of(n),
        };

        cfs_node_stat(ctx, n, &e.attr);
        if (fuse_reply_entry(req, &e) != 0)
                cfs_node_forget(ctx, n, 1); /* the kernel never saw it */
}

static void cfs_op_lookup(fuse_req_t req, fuse_ino_t parent_ino, const char *name)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *parent = cfs_node_get(ctx, parent_ino), *n;
        int r;

        DEBUG_OP(ctx, "cfs_lookup(parent=%" PRIu64 ", name=%s)\n", (uint64_t) parent_ino, name);
        if (strlen(name) > CS_NAME_MAX) {
                fuse_reply_err(req, ENAMETOOLONG);
                return;
        }
        r = cfs_node_lookup(ctx, parent, name, &n);
        if (r == -ENOENT && cfs_node_immutable(parent)) {
                /* A name missing from a point stays missing: cache that. */
                struct fuse_entry_param e = { .ino = 0, .entry_timeout = IMMUTABLE_TIMEOUT };
                fuse_reply_entry(req, &e);
                return;
        }
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (n->kind == CFS_NODE_CLONE)
                cfs_clone_op_lookup_reply(req, ctx, n);
        else
                reply_node(req, ctx, n);
}

static void cfs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
        cfs_context *ctx = cfs_ctx(req);

        DEBUG_OP(ctx, "cfs_forget(ino=%" PRIu64 ", nlookup=%" PRIu64 ")\n", (uint64_t) ino, nlookup);
        cfs_node_forget(ctx, cfs_node_get(ctx, ino), nlookup);
        fuse_reply_none(req);
}

static void cfs_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
        cfs_context *ctx = cfs_ctx(req);

        for (size_t i = 0; i < count; i++)
                cfs_node_forget(ctx, cfs_node_get(ctx, forgets[i].ino), forgets[i].nlookup);
        fuse_reply_none(req);
}

static void cfs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);
        struct stat st;

        DEBUG_OP(ctx, "cfs_getattr(ino=%" PRIu64 ")\n", (uint64_t) ino);
        if (n->kind == CFS_NODE_CLONE) {
                cfs_clone_op_getattr(req, ctx, n);
                return;
        }
        cfs_node_stat(ctx, n, &st);
        fuse_reply_attr(req, &st, timeout_of(n));
}

static void cfs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);

        DEBUG_OP(ctx, "cfs_readlink(ino=%" PRIu64 ")\n", (uint64_t) ino);
        if (n->kind == CFS_NODE_CLONE)
                cfs_clone_op_readlink(req, ctx, n);
        else if (n->kind == CFS_NODE_LINK)
                fuse_reply_readlink(req, n->target);
        else if (cfs_node_immutable(n) && S_ISLNK(n->entry.mode))
                fuse_reply_readlink(req, n->entry.target); /* NUL-terminated by copy_entry */
        else
                fuse_reply_err(req, EINVAL);
}

/* --- Directories ------------------------------------------------------- */

static void cfs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);

        DEBUG_OP(ctx, "cfs_opendir(ino=%" PRIu64 ")\n", (uint64_t) ino);
        if (n->kind == CFS_NODE_CLONE) {
                cfs_clone_op_opendir(req, ctx, n, fi);
                return;
        }
        fi->fh = 0;
        if (cfs_node_immutable(n) && !S_ISDIR(n->entry.mode)) {
                fuse_reply_err(req, ENOTDIR);
                return;
        }
        if (cfs_node_immutable(n)) {
                fi->cache_readdir = 1;
                fi->keep_cache = 1;
        }
        fuse_reply_open(req, fi);
}

typedef struct dir_buffer {
        fuse_req_t req;
        cfs_context *ctx;
        cfs_node *dir;
        bool plus;
        char *buf;
        size_t size, used;
} dir_buffer;

/* readdirplus: an entry inside a point comes with its attributes and a
 * lookup, so "ls -l" or a stat of every file costs no round trip each. */
static size_t add_plus(dir_buffer *b, const char *name, struct stat *st, off_t next)
{
        struct fuse_entry_param e = { .attr = *st };
        cfs_node *n;

        if (cfs_node_immutable(b->dir) && cfs_node_lookup(b->ctx, b->dir, name, &n) == 0) {
                e.ino = cfs_node_ino(b->ctx, n);
                e.generation = 1;
                e.attr_timeout = timeout_of(n);
                e.entry_timeout = entry_timeout_of(n);
                cfs_node_stat(b->ctx, n, &e.attr);
                size_t need = fuse_add_direntry_plus(b->req, b->buf + b->used, b->size - b->used, name, &e, next);
                if (need > b->size - b->used)
                        cfs_node_forget(b->ctx, n, 1); /* not sent: the lookup does not count */
                return need;
        }
        return fuse_add_direntry_plus(b->req, b->buf + b->used, b->size - b->used, name, &e, next);
}

static bool add_dirent(void *userdata, const char *name, size_t name_len, uint64_t ino, uint32_t mode, off_t next)
{
        dir_buffer *b = userdata;
        struct stat st = { .st_ino = ino, .st_mode = mode & S_IFMT };
        char name_z[CS_NAME_MAX + 1];
        size_t need;

        memcpy(name_z, name, MIN(name_len, (size_t) CS_NAME_MAX));
        name_z[MIN(name_len, (size_t) CS_NAME_MAX)] = 0;
        /* Our offsets count "." and "..", which come first. */
        if (b->plus)
                need = add_plus(b, name_z, &st, next + 2);
        else
                need = fuse_add_direntry(b->req, b->buf + b->used, b->size - b->used, name_z, &st, next + 2);
        if (need > b->size - b->used)
                return false;
        b->used += need;
        return true;
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus,
                           struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);
        dir_buffer b = { .req = req, .ctx = ctx, .dir = n, .plus = plus, .size = size };
        int r = 0;

        DEBUG_OP(ctx, "cfs_readdir(ino=%" PRIu64 ", off=%lld)\n", (uint64_t) ino, (long long) off);
        if (n->kind == CFS_NODE_CLONE) {
                cfs_clone_op_readdir(req, ctx, n, size, off, plus, fi);
                return;
        }
        b.buf = malloc(size);
        if (!b.buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        for (; off < 2; off++) {
                struct stat st = { .st_ino = n->ino, .st_mode = S_IFDIR };
                const char *dot = off == 0 ? "." : "..";
                struct fuse_entry_param e = { .attr = st }; /* ino 0: "." and ".." are not looked up */
                size_t need = plus ? fuse_add_direntry_plus(req, b.buf + b.used, b.size - b.used, dot, &e, off + 1)
                                   : fuse_add_direntry(req, b.buf + b.used, b.size - b.used, dot, &st, off + 1);
                if (need > b.size - b.used)
                        break;
                b.used += need;
        }
        if (off >= 2)
                r = cfs_node_list(ctx, n, off - 2, add_dirent, &b);
        if (r < 0)
                fuse_reply_err(req, -r);
        else
                fuse_reply_buf(req, b.buf, b.used);
        free(b.buf);
}

static void cfs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
        readdir_common(req, ino, size, off, false, fi);
}

/* Clone directories answer READDIRPLUS without lookups (ops-clone.c). */
static void cfs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
        readdir_common(req, ino, size, off, true, fi);
}

static void cfs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);

        if (cfs_node_get(ctx, ino)->kind == CFS_NODE_CLONE)
                cfs_clone_op_releasedir(fi);
        fuse_reply_err(req, 0);
}

/* --- Files ------------------------------------------------------------- */

static void cfs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);
        cfs_handle *h;

        DEBUG_OP(ctx, "cfs_open(ino=%" PRIu64 ", flags=0%o)\n", (uint64_t) ino, fi->flags);
        if (n->kind == CFS_NODE_CLONE) {
                cfs_clone_op_open(req, ctx, n, fi);
                return;
        }
        if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
                fuse_reply_err(req, EROFS);
                return;
        }
        if (!cfs_node_immutable(n) || !S_ISREG(n->entry.mode)) {
                fuse_reply_err(req, n->kind == CFS_NODE_LINK ? ELOOP : EISDIR);
                return;
        }
        h = calloc(1, sizeof(*h));
        if (!h) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        h->node = n;
        h->segment = -1;
        pthread_mutex_init(&h->lock, NULL);
        cfs_node_ref(ctx, n);
        fi->fh = (uint64_t) (uintptr_t) h;
        fi->keep_cache = 1;
        if (fuse_reply_open(req, fi) != 0) {
                cfs_node_unref(ctx, n);
                pthread_mutex_destroy(&h->lock);
                free(h);
        }
}

static void cfs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_handle *h = (cfs_handle *) (uintptr_t) fi->fh;

        DEBUG_OP(ctx, "cfs_release(ino=%" PRIu64 ")\n", (uint64_t) ino);
        if (cfs_node_get(ctx, ino)->kind == CFS_NODE_CLONE) {
                cfs_clone_op_release(req, ctx, fi);
                return;
        }
        cfs_node_unref(ctx, h->node);
        pthread_mutex_destroy(&h->lock);
        free(h);
        fuse_reply_err(req, 0);
}

/* Asks for the blocks after a sequential read, once each. */
static void prefetch_after(cfs_context *ctx, cfs_handle *h, uint64_t next_block)
{
        uint64_t total = cs_store_blocks_of(ctx->store, h->node->entry.size), start, end;
        cs_chunk_id ids[256];

        start = MAX(next_block, h->prefetched);
        end = MIN(total, next_block + MIN(ctx->prefetch_blocks, ELEMENTSOF(ids)));
        if (start >= end)
                return;
        if (handle_block_ids(ctx, h, start, (size_t) (end - start), ids) < 0)
                return;
        h->prefetched = end;
        cfs_cache_prefetch(ctx->cache, ids, (size_t) (end - start));
}

static void log_damage(cfs_context *ctx, cfs_node *n, const cs_chunk_id *id, uint64_t block, int error)
{
        char path[1024], hex[CS_CHUNK_ID_STRING_MAX];

        fuse_log(FUSE_LOG_ERR,
                 "clonefs: %s: chunk %s (bytes %" PRIu64 "-%" PRIu64 ") is unreadable: %s; reads of it fail with EIO\n",
                 cfs_node_path(n, path, sizeof(path)), cs_chunk_id_format(id, hex), block * ctx->block_size,
                 (block + 1) * ctx->block_size - 1, strerror(-error));
}

static void cfs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_handle *h = (cfs_handle *) (uintptr_t) fi->fh;
        const cs_entry *e = &h->node->entry; /* only used for point files */
        const uint32_t bs = ctx->block_size;
        uint64_t end, first, last, n;
        cs_chunk_id ids_small[32], *ids = ids_small;
        const cfs_block *blocks_small[32], **blocks = blocks_small;
        struct iovec iov_small[32], *iov = iov_small;
        size_t acquired = 0;
        int r = 0;

        DEBUG_OP(ctx, "cfs_read(ino=%" PRIu64 ", size=%zu, off=%lld)\n", (uint64_t) ino, size, (long long) off);
        if (cfs_node_get(ctx, ino)->kind == CFS_NODE_CLONE) {
                cfs_clone_op_read(req, ctx, cfs_node_get(ctx, ino), size, off);
                return;
        }
        if ((uint64_t) off >= e->size || size == 0) {
                fuse_reply_buf(req, NULL, 0);
                return;
        }
        end = MIN((uint64_t) off + size, e->size);
        first = (uint64_t) off / bs;
        last = (end - 1) / bs;
        n = last - first + 1;
        if (n > ELEMENTSOF(ids_small)) {
                ids = malloc(n * sizeof(*ids));
                blocks = malloc(n * sizeof(*blocks));
                iov = malloc(n * sizeof(*iov));
                if (!ids || !blocks || !iov) {
                        r = -ENOMEM;
                        goto out;
                }
        }

        pthread_mutex_lock(&h->lock);
        r = handle_block_ids(ctx, h, first, (size_t) n, ids);
        if (r >= 0 && ((uint64_t) off == h->next_offset || off == 0))
                prefetch_after(ctx, h, last + 1);
        h->next_offset = end;
        pthread_mutex_unlock(&h->lock);
        if (r < 0 && r != -ENOMEM) {
                /* The file's block list (a segment object) is unreadable. */
                char path[1024];
                fuse_log(FUSE_LOG_ERR, "clonefs: %s: the block list of bytes %" PRIu64 "-%" PRIu64
                                       " is unreadable: %s; reads of it fail with EIO\n",
                         cfs_node_path(h->node, path, sizeof(path)), first * bs, end - 1, strerror(-r));
                r = -EIO;
        }
        if (r < 0)
                goto out;

        for (uint64_t i = 0; i < n; i++) {
                uint64_t k = first + i, block_start = k * bs;
                uint64_t from = MAX((uint64_t) off, block_start), to = MIN(end, block_start + bs);

                if (cs_chunk_id_is_zero(&ids[i])) {
                        iov[i] = (struct iovec) { .iov_base = (void *) ctx->zeros, .iov_len = to - from };
                        continue;
                }
                r = cfs_cache_acquire(ctx->cache, &ids[i], &blocks[acquired]);
                if (r >= 0 && blocks[acquired]->size < to - block_start) {
                        cfs_cache_release(ctx->cache, blocks[acquired]);
                        r = -EBADMSG; /* a block shorter than its file says */
                }
                if (r < 0) {
                        log_damage(ctx, h->node, &ids[i], k, r);
                        r = -EIO; /* never wrong bytes: the whole request fails */
                        goto out;
                }
                iov[i] = (struct iovec) {
                        .iov_base = (void *) (blocks[acquired]->data + (from - block_start)),
                        .iov_len = to - from,
                };
                acquired++;
        }
        fuse_reply_iov(req, iov, (int) n);

out:
        if (r < 0)
                fuse_reply_err(req, -r);
        for (size_t i = 0; i < acquired; i++)
                cfs_cache_release(ctx->cache, blocks[i]);
        if (ids != ids_small) {
                free(ids);
                free(blocks);
                free(iov);
        }
}

static void cfs_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_handle *h = (cfs_handle *) (uintptr_t) fi->fh;
        uint64_t size = h->node->entry.size, total, k;
        int r = 0;

        DEBUG_OP(ctx, "cfs_lseek(ino=%" PRIu64 ", off=%lld, whence=%d)\n", (uint64_t) ino, (long long) off, whence);
        if (cfs_node_get(ctx, ino)->kind == CFS_NODE_CLONE) {
                cfs_clone_op_lseek(req, ctx, cfs_node_get(ctx, ino), off, whence);
                return;
        }
        if (whence != SEEK_DATA && whence != SEEK_HOLE) {
                fuse_reply_err(req, EINVAL);
                return;
        }
        if (off < 0 || (uint64_t) off >= size) {
                fuse_reply_err(req, ENXIO);
                return;
        }
        total = cs_store_blocks_of(ctx->store, size);
        pthread_mutex_lock(&h->lock);
        for (k = (uint64_t) off / ctx->block_size; k < total; k++) {
                cs_chunk_id id;
                r = handle_block_ids(ctx, h, k, 1, &id);
                if (r < 0 || cs_chunk_id_is_zero(&id) == (whence == SEEK_HOLE))
                        break;
        }
        pthread_mutex_unlock(&h->lock);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (k >= total)
                /* No data after off; the end of the file is a hole. */
                whence == SEEK_DATA ? fuse_reply_err(req, ENXIO) : fuse_reply_lseek(req, (off_t) size);
        else
                fuse_reply_lseek(req, (off_t) MIN(size, MAX((uint64_t) off, k * ctx->block_size)));
}

/* --- Extended attributes, statfs --------------------------------------- */

static void cfs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);

        DEBUG_OP(ctx, "cfs_getxattr(ino=%" PRIu64 ", name=%s)\n", (uint64_t) ino, name);
        if (n->kind == CFS_NODE_CLONE) {
                cfs_clone_op_getxattr(req, ctx, n, name, size);
                return;
        }
        if (cfs_node_immutable(n))
                for (size_t i = 0; i < n->entry.n_xattrs; i++) {
                        const cs_xattr *x = &n->entry.xattrs[i];
                        if (strcmp(x->name, name) != 0)
                                continue;
                        if (size == 0)
                                fuse_reply_xattr(req, x->size);
                        else if (size < x->size)
                                fuse_reply_err(req, ERANGE);
                        else
                                fuse_reply_buf(req, x->value, x->size);
                        return;
                }
        fuse_reply_err(req, ENODATA);
}

static void cfs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);
        size_t total = 0;
        char *buf, *p;

        DEBUG_OP(ctx, "cfs_listxattr(ino=%" PRIu64 ")\n", (uint64_t) ino);
        if (n->kind == CFS_NODE_CLONE) {
                cfs_clone_op_listxattr(req, ctx, n, size);
                return;
        }
        if (cfs_node_immutable(n))
                for (size_t i = 0; i < n->entry.n_xattrs; i++)
                        total += strlen(n->entry.xattrs[i].name) + 1;
        if (size == 0) {
                fuse_reply_xattr(req, total);
                return;
        }
        if (size < total) {
                fuse_reply_err(req, ERANGE);
                return;
        }
        p = buf = malloc(MAX(total, 1u));
        if (!buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        for (size_t i = 0; total && i < n->entry.n_xattrs; i++) {
                size_t len = strlen(n->entry.xattrs[i].name) + 1;
                memcpy(p, n->entry.xattrs[i].name, len);
                p += len;
        }
        fuse_reply_buf(req, buf, total);
        free(buf);
}

static void cfs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
        cfs_context *ctx = cfs_ctx(req);
        struct statvfs st;

        DEBUG_OP(ctx, "cfs_statfs(ino=%" PRIu64 ")\n", (uint64_t) ino);
        /* Space is the store's filesystem's: that is what clones will use. */
        if (statvfs(ctx->store_path, &st) < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        st.f_namemax = CS_NAME_MAX;
        fuse_reply_statfs(req, &st);
}

/* --- Everything that writes: clones only ---------------------------------- */

#define CLONE_OR_EROFS(n)                               \
        do {                                            \
                if ((n)->kind != CFS_NODE_CLONE) {      \
                        fuse_reply_err(req, EROFS);     \
                        return;                         \
                }                                       \
        } while (0)

static void cfs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);

        DEBUG_OP(ctx, "cfs_setattr(ino=%" PRIu64 ", to_set=0x%x)\n", (uint64_t) ino, to_set);
        CLONE_OR_EROFS(n);
        cfs_clone_op_setattr(req, ctx, n, attr, to_set);
}

static void cfs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *p = cfs_node_get(ctx, parent);

        DEBUG_OP(ctx, "cfs_mknod(parent=%" PRIu64 ", name=%s, mode=0%o)\n", (uint64_t) parent, name, mode);
        CLONE_OR_EROFS(p);
        cfs_clone_op_mknod(req, ctx, p, name, mode, rdev, NULL);
}

static void cfs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *p = cfs_node_get(ctx, parent);

        DEBUG_OP(ctx, "cfs_mkdir(parent=%" PRIu64 ", name=%s)\n", (uint64_t) parent, name);
        CLONE_OR_EROFS(p);
        cfs_clone_op_mknod(req, ctx, p, name, S_IFDIR | (mode & 07777), 0, NULL);
}

static void cfs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *p = cfs_node_get(ctx, parent);

        DEBUG_OP(ctx, "cfs_unlink(parent=%" PRIu64 ", name=%s)\n", (uint64_t) parent, name);
        CLONE_OR_EROFS(p);
        cfs_clone_op_unlink(req, ctx, p, name, false);
}

static void cfs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *p = cfs_node_get(ctx, parent);

        DEBUG_OP(ctx, "cfs_rmdir(parent=%" PRIu64 ", name=%s)\n", (uint64_t) parent, name);
        CLONE_OR_EROFS(p);
        cfs_clone_op_unlink(req, ctx, p, name, true);
}

static void cfs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *p = cfs_node_get(ctx, parent);

        DEBUG_OP(ctx, "cfs_symlink(parent=%" PRIu64 ", name=%s)\n", (uint64_t) parent, name);
        CLONE_OR_EROFS(p);
        cfs_clone_op_mknod(req, ctx, p, name, S_IFLNK | 0777, 0, link);
}

static void cfs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                          const char *newname, unsigned int flags)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *p = cfs_node_get(ctx, parent), *np = cfs_node_get(ctx, newparent);

        DEBUG_OP(ctx, "cfs_rename(%s -> %s, flags=%u)\n", name, newname, flags);
        if (p->kind != CFS_NODE_CLONE && np->kind == CFS_NODE_CLONE) {
                fuse_reply_err(req, EXDEV);
                return;
        }
        CLONE_OR_EROFS(p);
        cfs_clone_op_rename(req, ctx, p, name, np, newname, flags);
}

static void cfs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino), *np = cfs_node_get(ctx, newparent);

        DEBUG_OP(ctx, "cfs_link(ino=%" PRIu64 ", name=%s)\n", (uint64_t) ino, newname);
        if (n->kind != CFS_NODE_CLONE && np->kind == CFS_NODE_CLONE) {
                fuse_reply_err(req, EXDEV);
                return;
        }
        CLONE_OR_EROFS(n);
        cfs_clone_op_link(req, ctx, n, np, newname);
}

static void cfs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                          struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *p = cfs_node_get(ctx, parent);

        DEBUG_OP(ctx, "cfs_create(parent=%" PRIu64 ", name=%s)\n", (uint64_t) parent, name);
        CLONE_OR_EROFS(p);
        cfs_clone_op_create(req, ctx, p, name, mode, fi);
}

static void cfs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                         struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);

        DEBUG_OP(ctx, "cfs_write(ino=%" PRIu64 ", size=%zu, off=%lld)\n", (uint64_t) ino, size, (long long) off);
        CLONE_OR_EROFS(n);
        cfs_clone_op_write(req, ctx, n, buf, size, off);
}

static void cfs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);

        DEBUG_OP(ctx, "cfs_fsync(ino=%" PRIu64 ")\n", (uint64_t) ino);
        if (n->kind != CFS_NODE_CLONE) {
                fuse_reply_err(req, 0); /* points are always durable */
                return;
        }
        cfs_clone_op_fsync(req, ctx, n, datasync);
}

static void cfs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
        fuse_reply_err(req, 0);
}

static void cfs_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                             struct fuse_file_info *fi)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);

        CLONE_OR_EROFS(n);
        cfs_clone_op_fallocate(req, ctx, n, mode, offset, length);
}

static void cfs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
                            int flags)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);

        CLONE_OR_EROFS(n);
        cfs_clone_op_setxattr(req, ctx, n, name, value, size, flags);
}

static void cfs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
        cfs_context *ctx = cfs_ctx(req);
        cfs_node *n = cfs_node_get(ctx, ino);

        CLONE_OR_EROFS(n);
        cfs_clone_op_removexattr(req, ctx, n, name);
}

static void cfs_op_init(void *userdata, struct fuse_conn_info *conn)
{
        /* Large reads: the kernel asks for up to 1 MiB at a time. */
        conn->max_readahead = 1024 * 1024;
        if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
                conn->want |= FUSE_CAP_CACHE_SYMLINKS;
        if (conn->capable & FUSE_CAP_ASYNC_READ)
                conn->want |= FUSE_CAP_ASYNC_READ;
        /* POSIX ACLs: the kernel enforces them; clones inherit default
         * ACLs themselves, so they also get the umask to apply. */
        if (conn->capable & FUSE_CAP_POSIX_ACL)
                conn->want |= FUSE_CAP_POSIX_ACL;
        if (conn->capable & FUSE_CAP_DONT_MASK)
                conn->want |= FUSE_CAP_DONT_MASK;
        /* Writes go straight to the clone: its fsync is what makes them
         * durable, and a write-back cache would delay them past it. */
        conn->want &= ~(unsigned) FUSE_CAP_WRITEBACK_CACHE;
        /* Large writes: a 1 MiB write is one request, not eight of the
         * default 128 KiB (libfuse's buffer holds 256 pages). */
        conn->max_write = 1024 * 1024;
}

const struct fuse_lowlevel_ops cfs_ops = {
        .init = cfs_op_init,
        .lookup = cfs_op_lookup,
        .forget = cfs_op_forget,
        .forget_multi = cfs_op_forget_multi,
        .getattr = cfs_op_getattr,
        .readlink = cfs_op_readlink,
        .opendir = cfs_op_opendir,
        .readdir = cfs_op_readdir,
        .readdirplus = cfs_op_readdirplus,
        .releasedir = cfs_op_releasedir,
        .open = cfs_op_open,
        .read = cfs_op_read,
        .release = cfs_op_release,
        .lseek = cfs_op_lseek,
        .getxattr = cfs_op_getxattr,
        .listxattr = cfs_op_listxattr,
        .statfs = cfs_op_statfs,
        .setattr = cfs_op_setattr,
        .mknod = cfs_op_mknod,
        .mkdir = cfs_op_mkdir,
        .unlink = cfs_op_unlink,
        .rmdir = cfs_op_rmdir,
        .symlink = cfs_op_symlink,
        .rename = cfs_op_rename,
        .link = cfs_op_link,
        .create = cfs_op_create,
        .write = cfs_op_write,
        .fsync = cfs_op_fsync,
        .flush = cfs_op_flush,
        .fallocate = cfs_op_fallocate,
        .setxattr = cfs_op_setxattr,
        .removexattr = cfs_op_removexattr,
};
