/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tar streams into a point (tar-point.h).
 *
 * Design notes
 *
 *  1. The caller's thread parses: 512-byte headers, then each member's
 *     data cut into blocks of the store's block size.  A full block (or a
 *     file's last, short one) becomes a job on a bounded queue; workers
 *     hash, compress and put it and write its id into the file's block
 *     array, which was sized from the header, so no job waits for another.
 *     The queue bounds memory to QUEUE_JOBS blocks.
 *  2. Members arrive in any order and directories may be implied by their
 *     files: the tree is kept in memory (names, metadata, block ids) and
 *     the directory objects are built bottom-up once every job is done.
 *  3. Accepted member types: regular files ('0', NUL), directories ('5'),
 *     symlinks ('2') and GNU long names ('L'); numbers in octal or base-256;
 *     ustar's name prefix.  Headers are checked against their checksum.
 *     A block of zeros ends nothing by itself (PostgreSQL omits the two
 *     trailing ones); only tar_point_end() ends an archive.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tar-point.h"
#include "util/macro.h"

#define TAR_BLOCK 512
#define QUEUE_JOBS 64
#define LONG_NAME_MAX 4096

typedef struct node {
        char *name;
        uint32_t mode, uid, gid;
        int64_t mtime;
        uint64_t size;
        char *target;
        cs_chunk_id *blocks;
        uint64_t n_blocks;
        struct node **children;
        size_t n_children, cap;
} node;

typedef struct job {
        uint8_t *buf;
        size_t size;
        cs_chunk_id *dest;
} job;

struct tar_point {
        cs_store *store;
        uint32_t block_size;
        node root;
        bool have_owner;

        /* Workers (design note 1). */
        pthread_mutex_t lock;
        pthread_cond_t not_empty, not_full, idle;
        job queue[QUEUE_JOBS];
        size_t head, count, running;
        bool stopping;
        int error;
        pthread_t *threads;
        int n_threads;

        /* The parser. */
        char *prefix;
        uint8_t header[TAR_BLOCK];
        size_t header_fill;
        node *file;          /* the regular file receiving data, or NULL */
        uint64_t remaining;  /* data bytes of the current member still to come */
        uint64_t padding;    /* bytes to skip after the data */
        uint8_t *blk;
        size_t blk_fill;
        uint64_t blk_index;
        char *long_name;     /* from an 'L' member, for the next header */
        size_t long_fill;
        bool in_long_name;

        /* The last directory a member went into, to skip the walk. */
        char *last_dir_path;
        node *last_dir;
};

/* --- Workers -------------------------------------------------------------------- */

static void *worker_main(void *userdata)
{
        tar_point *t = userdata;

        for (;;) {
                job j;
                int r;

                pthread_mutex_lock(&t->lock);
                while (t->count == 0 && !t->stopping)
                        pthread_cond_wait(&t->not_empty, &t->lock);
                if (t->count == 0) {
                        pthread_mutex_unlock(&t->lock);
                        return NULL;
                }
                j = t->queue[t->head];
                t->head = (t->head + 1) % QUEUE_JOBS;
                t->count--;
                t->running++;
                pthread_cond_signal(&t->not_full);
                pthread_mutex_unlock(&t->lock);

                r = cs_store_put(t->store, CS_KIND_DATA, j.buf, j.size, j.dest);
                free(j.buf);

                pthread_mutex_lock(&t->lock);
                if (r < 0 && t->error == 0)
                        t->error = r;
                t->running--;
                if (t->count == 0 && t->running == 0)
                        pthread_cond_broadcast(&t->idle);
                pthread_mutex_unlock(&t->lock);
        }
}

static int submit(tar_point *t, uint8_t *buf, size_t size, cs_chunk_id *dest)
{
        int r;

        pthread_mutex_lock(&t->lock);
        while (t->count == QUEUE_JOBS && t->error == 0)
                pthread_cond_wait(&t->not_full, &t->lock);
        r = t->error;
        if (r == 0) {
                t->queue[(t->head + t->count) % QUEUE_JOBS] = (job) { buf, size, dest };
                t->count++;
                pthread_cond_signal(&t->not_empty);
        }
        pthread_mutex_unlock(&t->lock);
        if (r < 0)
                free(buf);
        return r;
}

static int wait_idle(tar_point *t)
{
        int r;

        pthread_mutex_lock(&t->lock);
        while (t->count > 0 || t->running > 0)
                pthread_cond_wait(&t->idle, &t->lock);
        r = t->error;
        pthread_mutex_unlock(&t->lock);
        return r;
}

static void stop_workers(tar_point *t)
{
        pthread_mutex_lock(&t->lock);
        t->stopping = true;
        pthread_cond_broadcast(&t->not_empty);
        pthread_mutex_unlock(&t->lock);
        for (int i = 0; i < t->n_threads; i++)
                pthread_join(t->threads[i], NULL);
        t->n_threads = 0;
        /* Jobs left behind by an error. */
        while (t->count > 0) {
                free(t->queue[t->head].buf);
                t->head = (t->head + 1) % QUEUE_JOBS;
                t->count--;
        }
}

/* --- The tree -------------------------------------------------------------------- */

static void node_free_children(node *n)
{
        for (size_t i = 0; i < n->n_children; i++) {
                node *c = n->children[i];
                node_free_children(c);
                free(c->name);
                free(c->target);
                free(c->blocks);
                free(c);
        }
        n->children = mfree(n->children);
        n->n_children = n->cap = 0;
}

static node *child_find(node *dir, const char *name, size_t len)
{
        for (size_t i = dir->n_children; i > 0; i--) {
                node *c = dir->children[i - 1];
                if (strlen(c->name) == len && memcmp(c->name, name, len) == 0)
                        return c;
        }
        return NULL;
}

static node *child_add(node *dir, const char *name, size_t len, uint32_t mode, uint32_t uid, uint32_t gid)
{
        node *c;

        if (dir->n_children == dir->cap) {
                size_t cap = dir->cap ? 2 * dir->cap : 8;
                node **l = reallocarray(dir->children, cap, sizeof(*l));
                if (!l)
                        return NULL;
                dir->children = l;
                dir->cap = cap;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->name = strndup(name, len);
        if (!c->name) {
                free(c);
                return NULL;
        }
        c->mode = mode;
        c->uid = uid;
        c->gid = gid;
        c->mtime = (int64_t) time(NULL);
        dir->children[dir->n_children++] = c;
        return c;
}

/* Finds (or makes, as 0700 directories) the directory holding the last
 * component of path; returns that component in *ret_name. */
static int walk_to_parent(tar_point *t, const char *path, uint32_t uid, uint32_t gid, node **ret_dir,
                          const char **ret_name)
{
        const char *slash = strrchr(path, '/');
        size_t dir_len = slash ? (size_t) (slash - path) : 0;
        node *dir = &t->root;

        *ret_name = slash ? slash + 1 : path;
        if (t->last_dir && strlen(t->last_dir_path) == dir_len && memcmp(t->last_dir_path, path, dir_len) == 0) {
                *ret_dir = t->last_dir;
                return 0;
        }
        for (const char *p = path; p < path + dir_len;) {
                const char *end = memchr(p, '/', (size_t) (path + dir_len - p));
                size_t len = end ? (size_t) (end - p) : (size_t) (path + dir_len - p);
                node *c = child_find(dir, p, len);

                if (!c) {
                        c = child_add(dir, p, len, S_IFDIR | 0700, uid, gid);
                        if (!c)
                                return -ENOMEM;
                } else if (!S_ISDIR(c->mode))
                        return -EBADMSG; /* a file used as a directory */
                dir = c;
                p += len + 1;
        }
        free(t->last_dir_path);
        t->last_dir_path = strndup(path, dir_len);
        t->last_dir = t->last_dir_path ? dir : NULL;
        *ret_dir = dir;
        return 0;
}

/* Cleans a member name: no leading "./" or "/", no trailing "/", no empty,
 * "." or ".." components.  Returns the joined path with t->prefix. */
static int member_path(tar_point *t, const char *name, char **ret)
{
        _cleanup_free_ char *path = NULL;
        size_t len;

        while (name[0] == '.' && name[1] == '/')
                name += 2;
        while (name[0] == '/')
                name++;
        if (asprintf(&path, "%s%s%s", t->prefix, t->prefix[0] && name[0] ? "/" : "", name) < 0)
                return -ENOMEM;
        len = strlen(path);
        while (len > 0 && path[len - 1] == '/')
                path[--len] = 0;
        if (len == 0) {
                *ret = TAKE_PTR(path);
                return 0;
        }
        for (const char *p = path;;) {
                const char *end = strchr(p, '/');
                size_t n = end ? (size_t) (end - p) : strlen(p);
                if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.') || n > CS_NAME_MAX)
                        return -EBADMSG;
                if (!end)
                        break;
                p = end + 1;
        }
        *ret = TAKE_PTR(path);
        return 0;
}

/* --- Headers ------------------------------------------------------------------ */

static int parse_number(const uint8_t *field, size_t size, uint64_t *ret)
{
        uint64_t v = 0;
        size_t i = 0;

        if (field[0] & 0x80) {
                /* base-256: big-endian, the top bit of the first byte set */
                v = field[0] & 0x7f;
                for (i = 1; i < size; i++) {
                        if (v >> 56)
                                return -EBADMSG;
                        v = (v << 8) | field[i];
                }
                *ret = v;
                return 0;
        }
        while (i < size && (field[i] == ' ' || field[i] == 0))
                i++;
        for (; i < size && field[i] >= '0' && field[i] <= '7'; i++)
                v = (v << 3) | (uint64_t) (field[i] - '0');
        for (; i < size; i++)
                if (field[i] != ' ' && field[i] != 0)
                        return -EBADMSG;
        *ret = v;
        return 0;
}

static bool header_is_zero(const uint8_t *h)
{
        for (size_t i = 0; i < TAR_BLOCK; i++)
                if (h[i])
                        return false;
        return true;
}

static int check_sum(const uint8_t *h)
{
        uint64_t want, sum = 0;
        int r = parse_number(h + 148, 8, &want);

        if (r < 0)
                return r;
        for (size_t i = 0; i < TAR_BLOCK; i++)
                sum += (i >= 148 && i < 156) ? ' ' : h[i];
        return sum == want ? 0 : -EBADMSG;
}

static char *field_string(const uint8_t *field, size_t size)
{
        return strndup((const char *) field, size);
}

/* Sizes a regular file's block array from its size, known up front. */
static int file_init(tar_point *t, node *n, uint64_t size)
{
        n->size = size;
        n->n_blocks = cs_store_blocks_of(t->store, size);
        n->blocks = calloc(MAX(n->n_blocks, 1u), sizeof(cs_chunk_id));
        return n->blocks ? 0 : -ENOMEM;
}

static int start_member(tar_point *t)
{
        const uint8_t *h = t->header;
        uint64_t mode, uid, gid, size, mtime;
        _cleanup_free_ char *name = NULL, *path = NULL;
        char type = (char) h[156];
        const char *base;
        node *dir, *n;
        int r;

        if (header_is_zero(h))
                return 0;
        r = check_sum(h);
        if (r >= 0)
                r = parse_number(h + 100, 8, &mode);
        if (r >= 0)
                r = parse_number(h + 108, 8, &uid);
        if (r >= 0)
                r = parse_number(h + 116, 8, &gid);
        if (r >= 0)
                r = parse_number(h + 124, 12, &size);
        if (r >= 0)
                r = parse_number(h + 136, 12, &mtime);
        if (r < 0)
                return r;

        t->remaining = size;
        t->padding = (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK;

        if (type == 'L') {
                if (size == 0 || size > LONG_NAME_MAX)
                        return -EBADMSG;
                free(t->long_name);
                t->long_name = calloc(1, size + 1);
                if (!t->long_name)
                        return -ENOMEM;
                t->long_fill = 0;
                t->in_long_name = true;
                return 0;
        }

        if (t->long_name) {
                name = TAKE_PTR(t->long_name);
        } else if (memcmp(h + 257, "ustar", 5) == 0 && h[345]) {
                _cleanup_free_ char *prefix = field_string(h + 345, 155), *last = field_string(h, 100);
                if (!prefix || !last || asprintf(&name, "%s/%s", prefix, last) < 0)
                        return -ENOMEM;
        } else {
                name = field_string(h, 100);
                if (!name)
                        return -ENOMEM;
        }
        r = member_path(t, name, &path);
        if (r < 0)
                return r;

        if (!t->have_owner) {
                t->root.uid = (uint32_t) uid;
                t->root.gid = (uint32_t) gid;
                t->have_owner = true;
        }
        if (!path[0]) {
                /* The archive's own root ("./"): only a directory fits. */
                if (type != '5')
                        return -EBADMSG;
                t->root.mode = S_IFDIR | (uint32_t) (mode & 07777);
                return 0;
        }

        r = walk_to_parent(t, path, (uint32_t) uid, (uint32_t) gid, &dir, &base);
        if (r < 0)
                return r;

        switch (type) {
        case '5':
                n = child_find(dir, base, strlen(base));
                if (n && !S_ISDIR(n->mode))
                        return -EBADMSG;
                if (!n)
                        n = child_add(dir, base, strlen(base), 0, 0, 0);
                if (!n)
                        return -ENOMEM;
                n->mode = S_IFDIR | (uint32_t) (mode & 07777);
                break;
        case '2':
                n = child_add(dir, base, strlen(base), S_IFLNK | 0777, 0, 0);
                if (!n)
                        return -ENOMEM;
                n->target = field_string(h + 157, 100);
                if (!n->target)
                        return -ENOMEM;
                if (!n->target[0])
                        return -EBADMSG;
                n->size = strlen(n->target);
                break;
        case '0':
        case 0:
                /* Appended unchecked: the directory builder refuses a
                 * duplicate name (-EEXIST) at the end. */
                n = child_add(dir, base, strlen(base), S_IFREG | (uint32_t) (mode & 07777), 0, 0);
                if (!n)
                        return -ENOMEM;
                r = file_init(t, n, size);
                if (r < 0)
                        return r;
                t->file = size ? n : NULL;
                t->blk_fill = 0;
                t->blk_index = 0;
                break;
        default:
                return -EBADMSG;
        }
        n->uid = (uint32_t) uid;
        n->gid = (uint32_t) gid;
        n->mtime = (int64_t) mtime;
        if (type != '0' && type != 0 && size != 0)
                return -EBADMSG; /* directories and links carry no data */
        return 0;
}

/* --- Feeding ------------------------------------------------------------------- */

static int file_data(tar_point *t, const uint8_t *p, size_t n)
{
        int r;

        while (n > 0) {
                size_t take;

                if (!t->blk) {
                        t->blk = malloc(t->block_size);
                        if (!t->blk)
                                return -ENOMEM;
                }
                take = MIN(n, (size_t) t->block_size - t->blk_fill);
                memcpy(t->blk + t->blk_fill, p, take);
                t->blk_fill += take;
                p += take;
                n -= take;
                t->remaining -= take;
                if (t->blk_fill == t->block_size || t->remaining == 0) {
                        r = submit(t, TAKE_PTR(t->blk), t->blk_fill, &t->file->blocks[t->blk_index++]);
                        t->blk_fill = 0;
                        if (r < 0)
                                return r;
                }
        }
        if (t->remaining == 0)
                t->file = NULL;
        return 0;
}

int tar_point_feed(tar_point *t, const void *data, size_t size)
{
        const uint8_t *p = data;
        int r;

        while (size > 0) {
                if (t->remaining > 0) {
                        size_t n = (size_t) MIN((uint64_t) size, t->remaining);
                        if (t->in_long_name) {
                                memcpy(t->long_name + t->long_fill, p, n);
                                t->long_fill += n;
                                t->remaining -= n;
                                if (t->remaining == 0)
                                        t->in_long_name = false;
                        } else if (t->file) {
                                r = file_data(t, p, n);
                                if (r < 0)
                                        return r;
                        } else
                                t->remaining -= n;
                        p += n;
                        size -= n;
                        continue;
                }
                if (t->padding > 0) {
                        size_t n = (size_t) MIN((uint64_t) size, t->padding);
                        t->padding -= n;
                        p += n;
                        size -= n;
                        continue;
                }
                size_t n = MIN(size, TAR_BLOCK - t->header_fill);
                memcpy(t->header + t->header_fill, p, n);
                t->header_fill += n;
                p += n;
                size -= n;
                if (t->header_fill == TAR_BLOCK) {
                        t->header_fill = 0;
                        r = start_member(t);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int tar_point_begin(tar_point *t, const char *prefix)
{
        char *p = strdup(prefix);

        if (!p)
                return -ENOMEM;
        free(t->prefix);
        t->prefix = p;
        t->header_fill = 0;
        t->remaining = t->padding = 0;
        t->file = NULL;
        t->last_dir = NULL;
        return 0;
}

int tar_point_end(tar_point *t)
{
        if (t->remaining > 0 || t->header_fill > 0 || t->in_long_name)
                return -EBADMSG;
        return 0;
}

int tar_point_add_file(tar_point *t, const char *path, const void *data, size_t size)
{
        node *dir, *n;
        const char *base;
        int r;

        r = walk_to_parent(t, path, t->root.uid, t->root.gid, &dir, &base);
        if (r < 0)
                return r;
        n = child_add(dir, base, strlen(base), S_IFREG | 0600, t->root.uid, t->root.gid);
        if (!n)
                return -ENOMEM;
        r = file_init(t, n, size);
        if (r < 0)
                return r;
        for (uint64_t k = 0; k < n->n_blocks; k++) {
                size_t len = (size_t) MIN((uint64_t) t->block_size, size - k * t->block_size);
                uint8_t *buf = malloc(len);
                if (!buf)
                        return -ENOMEM;
                memcpy(buf, (const uint8_t *) data + k * t->block_size, len);
                r = submit(t, buf, len, &n->blocks[k]);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* --- Building -------------------------------------------------------------------- */

static void entry_of(const node *n, cs_entry *e)
{
        *e = (cs_entry) {
                .name = n->name,
                .name_len = n->name ? strlen(n->name) : 0,
                .mode = n->mode,
                .uid = n->uid,
                .gid = n->gid,
                .nlink = 1,
                .size = n->size,
                .mtime_sec = n->mtime,
                .ctime_sec = n->mtime,
                .target = n->target,
        };
}

static int build_dir(tar_point *t, node *dir, cs_chunk_id *ret_id, uint64_t *files, uint64_t *bytes)
{
        _cleanup_(cs_dir_builder_freep) cs_dir_builder *b = NULL;
        int r;

        r = cs_dir_builder_new(t->store, &b);
        if (r < 0)
                return r;
        for (size_t i = 0; i < dir->n_children; i++) {
                node *c = dir->children[i];
                _cleanup_free_ cs_chunk_id *storage = NULL;
                cs_entry e;

                entry_of(c, &e);
                if (S_ISDIR(c->mode)) {
                        uint32_t subdirs = 0;
                        for (size_t k = 0; k < c->n_children; k++)
                                subdirs += S_ISDIR(c->children[k]->mode);
                        e.nlink = 2 + subdirs;
                        r = build_dir(t, c, &e.subdir, files, bytes);
                } else if (S_ISREG(c->mode)) {
                        r = cs_content_build(t->store, c->blocks, c->n_blocks, &e.content, &storage);
                        *bytes += c->size;
                } else
                        r = 0;
                if (r >= 0)
                        r = cs_dir_builder_add(b, &e);
                if (r < 0)
                        return r;
                (*files)++;
        }
        return cs_dir_builder_finish(b, ret_id);
}

int tar_point_finish(tar_point *t, cs_chunk_id *ret_point, uint64_t *ret_files, uint64_t *ret_bytes)
{
        uint64_t files = 0, bytes = 0;
        uint32_t subdirs = 0;
        cs_entry root;
        int r;

        r = wait_idle(t);
        if (r < 0)
                return r;
        entry_of(&t->root, &root);
        for (size_t k = 0; k < t->root.n_children; k++)
                subdirs += S_ISDIR(t->root.children[k]->mode);
        root.nlink = 2 + subdirs;
        r = build_dir(t, &t->root, &root.subdir, &files, &bytes);
        if (r < 0)
                return r;
        r = cs_point_build(t->store, &root, ret_point);
        if (r < 0)
                return r;
        *ret_files = files;
        *ret_bytes = bytes;
        return 0;
}

/* --- Life cycle -------------------------------------------------------------------- */

int tar_point_new(cs_store *store, int threads, tar_point **ret)
{
        _cleanup_(tar_point_freep) tar_point *t = NULL;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->store = store;
        t->block_size = cs_store_block_size(store);
        t->root.mode = S_IFDIR | 0700;
        t->root.mtime = (int64_t) time(NULL);
        t->prefix = strdup("");
        pthread_mutex_init(&t->lock, NULL);
        pthread_cond_init(&t->not_empty, NULL);
        pthread_cond_init(&t->not_full, NULL);
        pthread_cond_init(&t->idle, NULL);
        if (threads <= 0) {
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                threads = cpus > 0 ? (int) MIN(cpus, 64L) : 1;
        }
        t->threads = calloc((size_t) threads, sizeof(pthread_t));
        if (!t->prefix || !t->threads)
                return -ENOMEM;
        for (int i = 0; i < threads; i++) {
                int e = pthread_create(&t->threads[i], NULL, worker_main, t);
                if (e != 0)
                        return -e;
                t->n_threads++;
        }
        *ret = TAKE_PTR(t);
        return 0;
}

tar_point *tar_point_free(tar_point *t)
{
        if (!t)
                return NULL;
        stop_workers(t);
        node_free_children(&t->root);
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->not_empty);
        pthread_cond_destroy(&t->not_full);
        pthread_cond_destroy(&t->idle);
        free(t->threads);
        free(t->prefix);
        free(t->blk);
        free(t->long_name);
        free(t->last_dir_path);
        return mfree(t);
}

void tar_point_freep(tar_point **t)
{
        tar_point_free(*t);
}
