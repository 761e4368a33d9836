/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The directory source: a walker and a pool of workers.
 *
 * The walker (the calling thread) lists each directory, stats every entry
 * and decides what must be read: a regular file whose size, mtime, ctime,
 * inode and device match the previous point keeps its block list unread.
 * The rest is cut into jobs of up to JOB_BLOCKS blocks that the workers
 * read, hash, compress and put in parallel, so every core is busy whatever
 * the mix of large and small files.  A directory object is built once all
 * its files are done (post-order), which is what a Merkle tree needs.
 *
 * Everything is addressed by (directory fd, name): paths of any length and
 * names of any bytes work.  A file is checked after reading (size, mtime
 * and ctime against the stat taken before): if it changed it is read
 * again, at most MAX_REREADS times, then reported.
 *
 * "Racily clean" files: a file whose ctime is not older than the previous
 * point's start may have changed after that point read it within one
 * timestamp tick, so matching metadata proves nothing; it is read again.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "fsmeta.h"
#include "source-dir.h"
#include "util/json.h"
#include "util/log.h"
#include "util/size.h"

#define JOB_BLOCKS 256
#define QUEUE_JOBS 64
/* Jobs whose bytes are asked of the disk before a worker takes them:
 * a worker that starts a job finds it read, or on its way. */
#define READ_AHEAD_JOBS 4
#define MAX_REREADS 2 /* so a file is read at most 3 times: the message says so */

/* --- Work shared with the workers --------------------------------------- */

typedef struct file_task {
        int fd;
        struct stat before;
        uint64_t n_blocks;
        cs_chunk_id *blocks;
        int jobs_left;     /* under the pool lock */
        bool complete;     /* under the pool lock */
        int error;         /* first failure reading the file, a negative errno */
        int store_error;   /* first failure storing it: fatal for the snapshot */
        bool changed;      /* the file changed while being read */
} file_task;

typedef struct job {
        file_task *f;
        uint64_t first;
        uint32_t n;
} job;

typedef struct pool {
        cs_store *store;
        uint32_t block_size;
        const volatile sig_atomic_t *cancel;

        pthread_mutex_t lock;
        pthread_cond_t not_empty, not_full, done;
        job queue[QUEUE_JOBS];
        size_t head, count;
        bool stopping;

        pthread_t *threads;
        int n_threads;
        _Atomic uint64_t bytes_read;
} pool;

static bool canceled(const pool *p)
{
        return p->cancel && *p->cancel;
}

static int read_fully(int fd, void *buf, size_t size, off_t offset, size_t *ret_got)
{
        size_t got = 0;

        while (got < size) {
                ssize_t n = pread(fd, (uint8_t *) buf + got, size - got, offset + (off_t) got);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;
                got += (size_t) n;
        }
        *ret_got = got;
        return 0;
}

/* Asks the kernel to read a job's whole range: one large request in
 * flight instead of block-sized reads, started before the job runs. */
static void read_ahead(const pool *p, const job *j)
{
        (void) posix_fadvise(j->f->fd, (off_t) (j->first * p->block_size), (off_t) ((uint64_t) j->n * p->block_size),
                             POSIX_FADV_WILLNEED);
}

static int run_job(pool *p, const job *j, uint8_t *buf, bool *ret_store_failed)
{
        file_task *f = j->f;

        for (uint64_t k = j->first; k < j->first + j->n; k++) {
                uint64_t offset = k * p->block_size;
                size_t want = (size_t) MIN((uint64_t) p->block_size, (uint64_t) f->before.st_size - offset);
                size_t got;
                int r;

                if (canceled(p))
                        return -ECANCELED;
                r = read_fully(f->fd, buf, want, (off_t) offset, &got);
                if (r < 0)
                        return r;
                atomic_fetch_add(&p->bytes_read, got);
                if (got < want)
                        return -ESTALE; /* it shrank under us */
                r = cs_store_put(p->store, CS_KIND_DATA, buf, want, &f->blocks[k]);
                if (r < 0) {
                        *ret_store_failed = true;
                        return r;
                }
        }
        return 0;
}

/* The last job of a file checks that it did not change while read. */
static void finish_file(file_task *f)
{
        struct stat after;

        if (f->error == 0 && fstat(f->fd, &after) == 0 &&
            (after.st_size != f->before.st_size || after.st_mtim.tv_sec != f->before.st_mtim.tv_sec ||
             after.st_mtim.tv_nsec != f->before.st_mtim.tv_nsec || after.st_ctim.tv_sec != f->before.st_ctim.tv_sec ||
             after.st_ctim.tv_nsec != f->before.st_ctim.tv_nsec))
                f->changed = true;
        if (f->error == -ESTALE) {
                f->error = 0;
                f->changed = true;
        }
        f->fd = safe_close(f->fd);
}

static void *worker_main(void *userdata)
{
        pool *p = userdata;
        uint8_t *buf = malloc(p->block_size);

        for (;;) {
                job j;
                int r;

                pthread_mutex_lock(&p->lock);
                while (p->count == 0 && !p->stopping)
                        pthread_cond_wait(&p->not_empty, &p->lock);
                if (p->count == 0) {
                        pthread_mutex_unlock(&p->lock);
                        break;
                }
                j = p->queue[p->head];
                p->head = (p->head + 1) % QUEUE_JOBS;
                p->count--;
                /* The job that has just come within the read-ahead window
                 * (its file stays open while it is queued). */
                job next = {};
                if (p->count >= READ_AHEAD_JOBS)
                        next = p->queue[(p->head + READ_AHEAD_JOBS - 1) % QUEUE_JOBS];
                pthread_cond_signal(&p->not_full);
                pthread_mutex_unlock(&p->lock);
                if (next.f)
                        read_ahead(p, &next);

                bool store_failed = !buf;
                r = buf ? run_job(p, &j, buf, &store_failed) : -ENOMEM;

                pthread_mutex_lock(&p->lock);
                if (r < 0 && store_failed && j.f->store_error == 0)
                        j.f->store_error = r;
                else if (r < 0 && j.f->error == 0)
                        j.f->error = r;
                bool last = --j.f->jobs_left == 0;
                pthread_mutex_unlock(&p->lock);
                if (!last)
                        continue;
                finish_file(j.f);
                pthread_mutex_lock(&p->lock);
                j.f->complete = true;
                pthread_cond_broadcast(&p->done);
                pthread_mutex_unlock(&p->lock);
        }
        free(buf);
        return NULL;
}

static int pool_start(pool *p, cs_store *store, int n_threads, const volatile sig_atomic_t *cancel)
{
        *p = (pool) { .store = store, .block_size = cs_store_block_size(store), .cancel = cancel };
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->not_empty, NULL);
        pthread_cond_init(&p->not_full, NULL);
        pthread_cond_init(&p->done, NULL);
        p->threads = calloc((size_t) n_threads, sizeof(*p->threads));
        if (!p->threads)
                return -ENOMEM;
        for (int i = 0; i < n_threads; i++) {
                int r = pthread_create(&p->threads[i], NULL, worker_main, p);
                if (r != 0)
                        return -r;
                p->n_threads++;
        }
        return 0;
}

static void pool_stop(pool *p)
{
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->not_empty);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < p->n_threads; i++)
                pthread_join(p->threads[i], NULL);
        free(p->threads);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->not_empty);
        pthread_cond_destroy(&p->not_full);
        pthread_cond_destroy(&p->done);
}

static void pool_submit_file(pool *p, file_task *f)
{
        uint64_t n_jobs = DIV_ROUND_UP(f->n_blocks, JOB_BLOCKS);

        pthread_mutex_lock(&p->lock);
        f->jobs_left = (int) n_jobs;
        f->complete = false;
        f->error = 0;
        f->store_error = 0;
        f->changed = false;
        for (uint64_t i = 0; i < n_jobs; i++) {
                while (p->count == QUEUE_JOBS)
                        pthread_cond_wait(&p->not_full, &p->lock);
                job *j = &p->queue[(p->head + p->count) % QUEUE_JOBS];
                *j = (job) {
                        .f = f,
                        .first = i * JOB_BLOCKS,
                        .n = (uint32_t) MIN((uint64_t) JOB_BLOCKS, f->n_blocks - i * JOB_BLOCKS),
                };
                /* Within the window already: nobody else will ask for it.
                 * (The workers take and run jobs at the head meanwhile.) */
                if (p->count < READ_AHEAD_JOBS)
                        read_ahead(p, j);
                p->count++;
                pthread_cond_signal(&p->not_empty);
        }
        pthread_mutex_unlock(&p->lock);
}

static void pool_wait_file(pool *p, file_task *f)
{
        pthread_mutex_lock(&p->lock);
        while (!f->complete)
                pthread_cond_wait(&p->done, &p->lock);
        pthread_mutex_unlock(&p->lock);
}

/* --- The walk ----------------------------------------------------------- */

/* Content of a hardlinked file once known, so later links need no read. */
typedef struct link_info {
        dev_t dev;
        ino_t ino;
        uint64_t group;
        bool known;
        cs_content content; /* its ids are ids */
        cs_chunk_id *ids;
} link_info;

typedef struct walker {
        cs_store *store;
        const ingest_options *o;
        pool pool;
        ingest_result *result;
        link_info *links;
        size_t n_links, links_capacity;
        char *path; /* of the directory being walked, for messages */
        size_t path_len, path_capacity;
        _Atomic uint64_t files_seen;
} walker;

typedef struct node {
        cs_entry e;
        char *name;
        char *target;
        xattr_list xattrs;
        file_task *task;
        size_t link; /* index + 1 into walker.links, 0 for none */
        cs_chunk_id *content_storage;
        bool omit;
} node;

static void node_clear(node *n)
{
        free(n->name);
        free(n->target);
        xattrs_free(&n->xattrs);
        if (n->task) {
                safe_close(n->task->fd);
                free(n->task->blocks);
                free(n->task);
        }
        free(n->content_storage);
}

const char *escape_name(char *buf, size_t size, const char *name, size_t len)
{
        const unsigned char *p = (const unsigned char *) name;
        size_t o = 0;

        for (size_t i = 0; i < len && o + 5 < size;) {
                size_t n = utf8_sequence(p + i, len - i);
                /* Printable ASCII and valid UTF-8 as they are, but not
                 * the C1 controls (U+0080..U+009F), which terminals obey. */
                bool c1 = n == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0;
                if (n > 1 && !c1) {
                        memcpy(buf + o, p + i, n);
                        o += n;
                        i += n;
                        continue;
                }
                if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
                        buf[o++] = (char) p[i];
                else
                        o += (size_t) snprintf(buf + o, size - o, "\\x%02x", p[i]);
                i++;
        }
        buf[o] = 0;
        return buf;
}

/* "dir/name" for messages, escaped. */
static const char *display(walker *w, const char *name, char *buf, size_t size)
{
        char escaped[1024];
        escape_name(escaped, sizeof(escaped), name, strlen(name));
        if (w->path_len > 0)
                snprintf(buf, size, "%.*s/%s", (int) MIN(w->path_len, 2048u), w->path, escaped);
        else
                snprintf(buf, size, "%s", escaped);
        return buf;
}

static int add_error(walker *w, const char *name, int error, const char *what)
{
        char where[4096], *line;
        char **errors;

        display(w, name, where, sizeof(where));
        errno = -error;
        if (asprintf(&line, "%s: %s: %m", where, what) < 0)
                return -ENOMEM;
        errors = reallocarray(w->result->errors, w->result->n_errors + 1, sizeof(*errors));
        if (!errors) {
                free(line);
                return -ENOMEM;
        }
        w->result->errors = errors;
        w->result->errors[w->result->n_errors++] = line;
        return 0;
}

static void warn_vanished(walker *w, const char *name)
{
        char where[4096];
        log_warning("%s vanished while being read; skipped", display(w, name, where, sizeof(where)));
        w->result->n_warnings++;
}

static int path_push(walker *w, const char *name, size_t *ret_saved)
{
        size_t len = strlen(name), need = w->path_len + 1 + len + 1;

        if (need > w->path_capacity) {
                char *p = realloc(w->path, MAX(need, 2 * w->path_capacity));
                if (!p)
                        return -ENOMEM;
                w->path = p;
                w->path_capacity = MAX(need, 2 * w->path_capacity);
        }
        *ret_saved = w->path_len;
        if (w->path_len)
                w->path[w->path_len++] = '/';
        memcpy(w->path + w->path_len, name, len + 1);
        w->path_len += len;
        return 0;
}

/* The link_info of a hardlinked inode, as an index + 1 (the array moves
 * as it grows), or 0 when out of memory. */
static size_t link_find(walker *w, const struct stat *st)
{
        for (size_t i = 0; i < w->n_links; i++)
                if (w->links[i].dev == st->st_dev && w->links[i].ino == st->st_ino)
                        return i + 1;
        if (w->n_links == w->links_capacity) {
                size_t cap = w->links_capacity ? 2 * w->links_capacity : 64;
                link_info *l = reallocarray(w->links, cap, sizeof(*l));
                if (!l)
                        return 0;
                w->links = l;
                w->links_capacity = cap;
        }
        w->links[w->n_links] = (link_info) { .dev = st->st_dev, .ino = st->st_ino, .group = w->n_links + 1 };
        return ++w->n_links;
}

static link_info *node_link(walker *w, const node *n)
{
        return n->link ? &w->links[n->link - 1] : NULL;
}

static void entry_from_stat(cs_entry *e, const struct stat *st)
{
        e->mode = st->st_mode;
        e->uid = st->st_uid;
        e->gid = st->st_gid;
        e->nlink = (uint32_t) st->st_nlink;
        e->size = S_ISREG(st->st_mode) || S_ISLNK(st->st_mode) ? (uint64_t) st->st_size : 0;
        e->mtime_sec = st->st_mtim.tv_sec;
        e->mtime_nsec = (uint32_t) st->st_mtim.tv_nsec;
        e->ctime_sec = st->st_ctim.tv_sec;
        e->ctime_nsec = (uint32_t) st->st_ctim.tv_nsec;
        e->source_dev = st->st_dev;
        e->source_ino = st->st_ino;
        e->rdev = S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode) ? st->st_rdev : 0;
}

static bool unchanged(const cs_entry *prev, const cs_entry *now, int64_t prev_created)
{
        return prev && S_ISREG(prev->mode) && S_ISREG(now->mode) && now->ctime_sec < prev_created &&
               prev->size == now->size &&
               prev->mtime_sec == now->mtime_sec && prev->mtime_nsec == now->mtime_nsec &&
               prev->ctime_sec == now->ctime_sec && prev->ctime_nsec == now->ctime_nsec &&
               prev->source_ino == now->source_ino && prev->source_dev == now->source_dev;
}

/* Opens a regular file and starts reading it. */
static int start_read(walker *w, int dir_fd, node *n, const struct stat *st)
{
        _cleanup_close_ int fd = -1;
        file_task *f;
        struct stat now;

        fd = openat(dir_fd, n->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NOATIME);
        if (fd < 0 && errno == EPERM)
                fd = openat(dir_fd, n->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &now) < 0)
                return negative_errno();
        if (now.st_ino != st->st_ino || now.st_dev != st->st_dev)
                return -ENOENT; /* replaced between stat and open: it vanished */
        (void) posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        f->before = now;
        f->n_blocks = cs_store_blocks_of(w->store, (uint64_t) now.st_size);
        f->blocks = calloc(MAX(f->n_blocks, 1u), sizeof(*f->blocks));
        if (!f->blocks) {
                free(f);
                return -ENOMEM;
        }
        f->fd = TAKE_FD(fd);
        n->task = f;
        /* The entry describes what was read, not what lstat saw first. */
        entry_from_stat(&n->e, &now);
        if (f->n_blocks == 0) {
                f->complete = true;
                f->fd = safe_close(f->fd);
        } else {
                pool_submit_file(&w->pool, f);
        }
        w->result->files_read++;
        return 0;
}

/* Reopens a file that changed while it was read. */
static int reread(walker *w, int dir_fd, node *n)
{
        struct stat st;
        file_task *old = n->task;

        if (fstatat(dir_fd, n->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -ENOENT;
        n->task = NULL;
        int r = start_read(w, dir_fd, n, &st);
        w->result->files_read--;
        if (r < 0) {
                n->task = old;
                return r;
        }
        free(old->blocks);
        free(old);
        return 0;
}

static int walk_dir(walker *w, int dir_fd, const cs_dir *prev, cs_chunk_id *ret_id);

static int read_names(int dir_fd, char ***ret, size_t *ret_n)
{
        _cleanup_close_ int fd = -1;
        char **names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        DIR *d;

        fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        d = fdopendir(fd);
        if (!d)
                return negative_errno();
        fd = -1;
        errno = 0;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (n == cap) {
                        cap = cap ? 2 * cap : 64;
                        char **p = reallocarray(names, cap, sizeof(*p));
                        if (!p)
                                goto oom;
                        names = p;
                }
                names[n] = strdup(de->d_name);
                if (!names[n])
                        goto oom;
                n++;
                errno = 0;
        }
        if (errno) {
                int r = negative_errno();
                closedir(d);
                for (size_t i = 0; i < n; i++)
                        free(names[i]);
                free(names);
                return r;
        }
        closedir(d);
        *ret = names;
        *ret_n = n;
        return 0;
oom:
        closedir(d);
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        return -ENOMEM;
}

/* Stats one name and fills its node; starts reading it if it is a
 * regular file that changed.  Returns 0, or 1 if the node is to be left
 * out (reported already). */
static int prepare_node(walker *w, int dir_fd, const cs_dir *prev, node *n)
{
        const cs_entry *before = prev ? cs_dir_find(prev, n->name, strlen(n->name)) : NULL;
        struct stat st;
        int r;

        n->e.name = n->name;
        n->e.name_len = strlen(n->name);
        if (fstatat(dir_fd, n->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                r = negative_errno();
                if (r == -ENOENT) {
                        warn_vanished(w, n->name);
                        return 1;
                }
                return add_error(w, n->name, r, "cannot stat") < 0 ? -ENOMEM : 1;
        }
        entry_from_stat(&n->e, &st);

        r = xattrs_read(dir_fd, n->name, &n->xattrs);
        if (r == -ENOENT) {
                warn_vanished(w, n->name);
                return 1;
        }
        if (r < 0)
                return add_error(w, n->name, r, "cannot read extended attributes") < 0 ? -ENOMEM : 1;
        n->e.xattrs = n->xattrs.items;
        n->e.n_xattrs = n->xattrs.n;

        if (S_ISLNK(st.st_mode)) {
                n->target = malloc((size_t) st.st_size + 1);
                if (!n->target)
                        return -ENOMEM;
                ssize_t len = readlinkat(dir_fd, n->name, n->target, (size_t) st.st_size + 1);
                if (len < 0 || len > st.st_size) {
                        r = len < 0 ? negative_errno() : -ESTALE;
                        if (r == -ENOENT) {
                                warn_vanished(w, n->name);
                                return 1;
                        }
                        return add_error(w, n->name, r, "cannot read symlink") < 0 ? -ENOMEM : 1;
                }
                n->e.target = n->target;
                n->e.size = (uint64_t) len;
                return 0;
        }
        if (!S_ISREG(st.st_mode))
                return 0;

        if (st.st_nlink > 1) {
                n->link = link_find(w, &st);
                if (!n->link)
                        return -ENOMEM;
                n->e.link_group = node_link(w, n)->group;
                if (node_link(w, n)->known)
                        return 0; /* its content is known from an earlier link */
        }
        if (!w->o->full && unchanged(before, &n->e, w->o->prev_created)) {
                n->e.content = before->content;
                w->result->files_reused++;
                return 0;
        }
        r = start_read(w, dir_fd, n, &st);
        if (r == -ENOENT || r == -ELOOP) {
                warn_vanished(w, n->name);
                return 1;
        }
        if (r < 0)
                return r == -ENOMEM ? r : (add_error(w, n->name, r, "cannot read") < 0 ? -ENOMEM : 1);
        return 0;
}

static int descend(walker *w, int dir_fd, const cs_dir *prev, node *n)
{
        const cs_entry *before = prev ? cs_dir_find(prev, n->name, strlen(n->name)) : NULL;
        _cleanup_close_ int fd = -1;
        cs_dir *prev_sub = NULL;
        size_t saved;
        int r;

        fd = openat(dir_fd, n->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                r = negative_errno();
                if (r == -ENOENT || r == -ENOTDIR || r == -ELOOP) {
                        warn_vanished(w, n->name);
                        return 1;
                }
                return add_error(w, n->name, r, "cannot open directory") < 0 ? -ENOMEM : 1;
        }
        if (before && S_ISDIR(before->mode) && cs_dir_load(w->store, &before->subdir, &prev_sub) < 0)
                prev_sub = NULL; /* an unreadable old point only costs a full read */

        r = path_push(w, n->name, &saved);
        if (r >= 0) {
                r = walk_dir(w, fd, prev_sub, &n->e.subdir);
                w->path_len = saved;
                w->path[saved] = 0;
        }
        cs_dir_free(prev_sub);
        return r;
}

/* Waits for a file's read and turns its block list into content. */
static int complete_file(walker *w, int dir_fd, node *n)
{
        file_task *f = n->task;
        int r;

        for (int attempt = 0;; attempt++) {
                pool_wait_file(&w->pool, f);
                if (f->store_error < 0)
                        return f->store_error; /* the store's trouble, not the file's */
                if (f->error == -ECANCELED)
                        return -ECANCELED;
                if (f->error < 0) {
                        n->omit = true;
                        return add_error(w, n->name, f->error, "cannot read");
                }
                if (!f->changed)
                        break;
                if (attempt == MAX_REREADS) {
                        r = add_error(w, n->name, -EBUSY, "kept changing while being read (read 3 times; --ignore-errors stores the last read)");
                        if (r < 0)
                                return r;
                        break;
                }
                r = reread(w, dir_fd, n);
                if (r == -ENOENT) {
                        warn_vanished(w, n->name);
                        n->omit = true;
                        return 0;
                }
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        n->omit = true;
                        return add_error(w, n->name, r, "cannot read again after it changed");
                }
                f = n->task;
        }

        r = cs_content_build(w->store, f->blocks, f->n_blocks, &n->e.content, &n->content_storage);
        if (r < 0)
                return r;
        return 0;
}

/* Remembers the content of a hardlinked file, so later links need no read. */
static int remember_link(walker *w, const node *n)
{
        link_info *l = node_link(w, n);

        if (!l || l->known)
                return 0;
        l->ids = malloc(MAX(n->e.content.n, 1u) * sizeof(cs_chunk_id));
        if (!l->ids)
                return -ENOMEM;
        memcpy(l->ids, n->e.content.ids, n->e.content.n * sizeof(cs_chunk_id));
        l->content = n->e.content;
        l->content.ids = l->ids;
        l->known = true;
        return 0;
}

static int walk_dir(walker *w, int dir_fd, const cs_dir *prev, cs_chunk_id *ret_id)
{
        _cleanup_(cs_dir_builder_freep) cs_dir_builder *b = NULL;
        node *nodes = NULL;
        char **names = NULL;
        size_t n = 0;
        int r;

        r = read_names(dir_fd, &names, &n);
        if (r < 0)
                return r;
        nodes = calloc(MAX(n, 1u), sizeof(*nodes));
        if (!nodes) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n; i++)
                nodes[i].name = TAKE_PTR(names[i]);

        /* Pass 1: stat everything, start reading what changed. */
        for (size_t i = 0; i < n && r >= 0; i++) {
                if (w->o->cancel && *w->o->cancel) {
                        r = -ECANCELED;
                        break;
                }
                r = prepare_node(w, dir_fd, prev, &nodes[i]);
                if (r == 1) {
                        nodes[i].omit = true;
                        r = 0;
                }
        }
        /* Pass 2: subdirectories, while the workers read this one's files. */
        for (size_t i = 0; i < n && r >= 0; i++) {
                if (nodes[i].omit || !S_ISDIR(nodes[i].e.mode))
                        continue;
                r = descend(w, dir_fd, prev, &nodes[i]);
                if (r == 1) {
                        nodes[i].omit = true;
                        r = 0;
                }
        }
        /* Pass 3: collect the files, build the directory. */
        if (r >= 0)
                r = cs_dir_builder_new(w->store, &b);
        for (size_t i = 0; i < n && r >= 0; i++) {
                node *nd = &nodes[i];
                if (nd->omit)
                        continue;
                if (S_ISREG(nd->e.mode)) {
                        if (nd->task)
                                r = complete_file(w, dir_fd, nd);
                        else if (node_link(w, nd) && node_link(w, nd)->known && !nd->e.content.ids)
                                nd->e.content = node_link(w, nd)->content;
                        if (r < 0 || nd->omit)
                                continue;
                        r = remember_link(w, nd);
                        if (r < 0)
                                continue;
                        w->result->logical_bytes += nd->e.size;
                }
                r = cs_dir_builder_add(b, &nd->e);
                w->result->files++;
                atomic_fetch_add(&w->files_seen, 1);
        }
        if (r >= 0)
                r = cs_dir_builder_finish(b, ret_id);

out:
        /* On failure some reads may still run: wait before freeing. */
        for (size_t i = 0; i < n; i++) {
                if (nodes && nodes[i].task)
                        pool_wait_file(&w->pool, nodes[i].task);
                if (nodes)
                        node_clear(&nodes[i]);
                free(names[i]);
        }
        free(nodes);
        free(names);
        return r;
}

/* --- Progress ----------------------------------------------------------- */

typedef struct progress {
        walker *w;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool stop;
        struct timespec start;
} progress;

static double seconds_since(const struct timespec *t)
{
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return (double) (now.tv_sec - t->tv_sec) + (double) (now.tv_nsec - t->tv_nsec) / 1e9;
}

static void *progress_main(void *userdata)
{
        progress *pg = userdata;

        pthread_mutex_lock(&pg->lock);
        while (!pg->stop) {
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_nsec += 250 * 1000 * 1000;
                if (until.tv_nsec >= 1000000000) {
                        until.tv_sec++;
                        until.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&pg->cond, &pg->lock, &until);
                if (pg->stop)
                        break;

                uint64_t bytes = atomic_load(&pg->w->pool.bytes_read);
                uint64_t files = atomic_load(&pg->w->files_seen);
                double t = seconds_since(&pg->start), rate = t > 0 ? (double) bytes / t : 0;
                char size[FORMAT_BYTES_MAX], eta[32] = "";
                uint64_t expected = pg->w->o->expected_bytes;
                if (expected > bytes && rate > 0) {
                        unsigned s = (unsigned) ((double) (expected - bytes) / rate);
                        snprintf(eta, sizeof(eta), "  ETA %u:%02u", s / 60, s % 60);
                }
                fprintf(stderr, "\r\033[K%" PRIu64 " files  %s read  %.0f MB/s%s", files,
                        format_bytes(size, bytes), rate / 1e6, eta);
                fflush(stderr);
        }
        pthread_mutex_unlock(&pg->lock);
        fprintf(stderr, "\r\033[K");
        return NULL;
}

/* --- Entry point -------------------------------------------------------- */

static int load_prev_root(cs_store *store, const cs_chunk_id *prev_point, cs_dir **ret_keep, cs_dir **ret_dir)
{
        cs_entry root;
        int r;

        *ret_keep = *ret_dir = NULL;
        if (!prev_point)
                return 0;
        r = cs_point_load(store, prev_point, &root, ret_keep);
        if (r < 0)
                return r;
        r = cs_dir_load(store, &root.subdir, ret_dir);
        if (r < 0)
                *ret_keep = cs_dir_free(*ret_keep);
        return r;
}

int ingest_directory(cs_store *store, const char *path, const cs_chunk_id *prev_point,
                     const ingest_options *o, ingest_result *ret)
{
        _cleanup_close_ int fd = -1;
        walker w = { .store = store, .o = o, .result = ret };
        cs_dir *prev_keep = NULL, *prev_root = NULL;
        xattr_list root_xattrs = {};
        progress pg = { .w = &w };
        bool progress_running = false;
        struct stat st;
        cs_entry root = {};
        int n_threads = o->threads > 0 ? o->threads : (int) MAX(sysconf(_SC_NPROCESSORS_ONLN), 1L);
        int r;

        *ret = (ingest_result) {};
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        r = xattrs_read(fd, NULL, &root_xattrs);
        if (r < 0)
                return r;
        entry_from_stat(&root, &st);
        root.xattrs = root_xattrs.items;
        root.n_xattrs = root_xattrs.n;

        if (load_prev_root(store, prev_point, &prev_keep, &prev_root) < 0)
                log_warning("the previous point cannot be read; reading every file");

        r = pool_start(&w.pool, store, n_threads, o->cancel);
        if (r >= 0 && o->progress) {
                clock_gettime(CLOCK_MONOTONIC, &pg.start);
                pthread_mutex_init(&pg.lock, NULL);
                pthread_cond_init(&pg.cond, NULL);
                progress_running = pthread_create(&pg.thread, NULL, progress_main, &pg) == 0;
        }
        if (r >= 0)
                r = walk_dir(&w, fd, prev_root, &root.subdir);
        pool_stop(&w.pool);
        if (progress_running) {
                pthread_mutex_lock(&pg.lock);
                pg.stop = true;
                pthread_cond_signal(&pg.cond);
                pthread_mutex_unlock(&pg.lock);
                pthread_join(pg.thread, NULL);
        }
        ret->bytes_read = atomic_load(&w.pool.bytes_read);

        if (r >= 0)
                r = cs_point_build(store, &root, &ret->point);

        cs_dir_free(prev_root);
        cs_dir_free(prev_keep);
        xattrs_free(&root_xattrs);
        for (size_t i = 0; i < w.n_links; i++)
                free(w.links[i].ids);
        free(w.links);
        free(w.path);
        return r;
}

void ingest_result_free(ingest_result *r)
{
        for (size_t i = 0; i < r->n_errors; i++)
                free(r->errors[i]);
        free(r->errors);
        *r = (ingest_result) {};
}
