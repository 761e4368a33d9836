/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Restore: walks a point tree and recreates every node by (directory fd,
 * name), so depth and odd names are no obstacle.  Regular files are
 * written block by block; zero blocks are skipped and the file is sized
 * with ftruncate(), so holes come back as holes.  Hardlinks are recreated
 * with linkat() from an O_PATH descriptor of the group's first file.
 * Directory metadata is applied after the directory's children, so their
 * creation does not disturb its mtime.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fsmeta.h"
#include "restore.h"
#include "source-dir.h"
#include "util/macro.h"

#define BLOCK_BATCH 1024

typedef struct link_master {
        uint64_t group;
        int fd; /* O_PATH */
} link_master;

typedef struct restorer {
        cs_store *store;
        uint32_t block_size;
        uint8_t *buf;
        cs_chunk_id *ids;
        link_master *masters;
        size_t n_masters, masters_capacity;
        restore_result *result;
        char *path;
        size_t path_len;
} restorer;

static int add_error(restorer *rs, const cs_entry *e, int error, const char *what)
{
        char name[1024], *line, **errors;

        escape_name(name, sizeof(name), e->name, e->name_len);
        errno = -error;
        if (asprintf(&line, "%.*s%s%s: %s: %m", (int) MIN(rs->path_len, 2048u), rs->path ? rs->path : "",
                     rs->path_len ? "/" : "", name, what) < 0)
                return -ENOMEM;
        errors = reallocarray(rs->result->errors, rs->result->n_errors + 1, sizeof(*errors));
        if (!errors) {
                free(line);
                return -ENOMEM;
        }
        rs->result->errors = errors;
        rs->result->errors[rs->result->n_errors++] = line;
        return 0;
}

static int write_content(restorer *rs, int fd, const cs_entry *e)
{
        uint64_t n_blocks = cs_store_blocks_of(rs->store, e->size);
        uint64_t expected = e->content.segmented ? DIV_ROUND_UP(n_blocks, CS_SEGMENT_BLOCKS) : n_blocks;
        int r;

        if (e->content.n != expected)
                return -EBADMSG;
        for (uint64_t first = 0; first < n_blocks; first += BLOCK_BATCH) {
                size_t n = (size_t) MIN((uint64_t) BLOCK_BATCH, n_blocks - first);
                r = cs_content_blocks(rs->store, &e->content, first, n, rs->ids);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n; i++) {
                        uint64_t k = first + i, offset = k * rs->block_size;
                        size_t len = (size_t) MIN((uint64_t) rs->block_size, e->size - offset);

                        if (cs_chunk_id_is_zero(&rs->ids[i]))
                                continue; /* a hole */
                        r = cs_store_get(rs->store, &rs->ids[i], rs->buf, rs->block_size);
                        if (r < 0)
                                return r;
                        if ((size_t) r != len)
                                return -EBADMSG;
                        for (size_t done = 0; done < len;) {
                                ssize_t w = pwrite(fd, rs->buf + done, len - done, (off_t) (offset + done));
                                if (w < 0)
                                        return negative_errno();
                                done += (size_t) w;
                        }
                }
        }
        if (ftruncate(fd, (off_t) e->size) < 0)
                return negative_errno();
        rs->result->bytes += e->size;
        return 0;
}

static link_master *find_master(restorer *rs, uint64_t group)
{
        for (size_t i = 0; i < rs->n_masters; i++)
                if (rs->masters[i].group == group)
                        return &rs->masters[i];
        return NULL;
}

static int remember_master(restorer *rs, uint64_t group, int dir_fd, const char *name)
{
        int fd;

        if (rs->n_masters == rs->masters_capacity) {
                size_t cap = rs->masters_capacity ? 2 * rs->masters_capacity : 64;
                link_master *m = reallocarray(rs->masters, cap, sizeof(*m));
                if (!m)
                        return -ENOMEM;
                rs->masters = m;
                rs->masters_capacity = cap;
        }
        fd = openat(dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        rs->masters[rs->n_masters++] = (link_master) { .group = group, .fd = fd };
        return 0;
}

static int restore_file(restorer *rs, int dir_fd, const char *name, const cs_entry *e)
{
        _cleanup_close_ int fd = -1;
        link_master *m = e->link_group ? find_master(rs, e->link_group) : NULL;
        int r;

        if (m) {
                char from[64];
                snprintf(from, sizeof(from), "/proc/self/fd/%d", m->fd);
                return linkat(AT_FDCWD, from, dir_fd, name, AT_SYMLINK_FOLLOW) < 0 ? negative_errno() : 0;
        }
        fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return negative_errno();
        r = write_content(rs, fd, e);
        if (r < 0)
                return r;
        if (e->link_group) {
                r = remember_master(rs, e->link_group, dir_fd, name);
                if (r < 0)
                        return r;
        }
        return meta_apply(dir_fd, name, e);
}

static int restore_dir(restorer *rs, int dir_fd, const cs_chunk_id *dir_id);

static int restore_entry(restorer *rs, int dir_fd, const cs_entry *e)
{
        _cleanup_free_ char *name = strndup(e->name, e->name_len);
        int r;

        if (!name)
                return -ENOMEM;
        switch (e->mode & S_IFMT) {
        case S_IFREG:
                return restore_file(rs, dir_fd, name, e);
        case S_IFDIR: {
                _cleanup_close_ int fd = -1;
                size_t saved = rs->path_len;
                if (mkdirat(dir_fd, name, 0700) < 0)
                        return negative_errno();
                fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0)
                        return negative_errno();
                char *p = realloc(rs->path, rs->path_len + e->name_len + 2);
                if (!p)
                        return -ENOMEM;
                rs->path = p;
                if (rs->path_len)
                        rs->path[rs->path_len++] = '/';
                memcpy(rs->path + rs->path_len, e->name, e->name_len);
                rs->path_len += e->name_len;
                r = restore_dir(rs, fd, &e->subdir);
                rs->path_len = saved;
                if (r < 0)
                        return r;
                return meta_apply(dir_fd, name, e);
        }
        case S_IFLNK: {
                _cleanup_free_ char *target = strndup(e->target, e->size);
                if (!target)
                        return -ENOMEM;
                if (symlinkat(target, dir_fd, name) < 0)
                        return negative_errno();
                return meta_apply(dir_fd, name, e);
        }
        case S_IFIFO:
        case S_IFSOCK:
        case S_IFCHR:
        case S_IFBLK:
                if (mknodat(dir_fd, name, (e->mode & S_IFMT) | 0600, (dev_t) e->rdev) < 0)
                        return negative_errno();
                return meta_apply(dir_fd, name, e);
        default:
                return -EBADMSG;
        }
}

static int restore_dir(restorer *rs, int dir_fd, const cs_chunk_id *dir_id)
{
        _cleanup_(cs_dir_freep) cs_dir *d = NULL;
        int r;

        r = cs_dir_load(rs->store, dir_id, &d);
        if (r < 0)
                return r;
        for (size_t i = 0; i < cs_dir_size(d); i++) {
                const cs_entry *e = cs_dir_entry(d, i);
                r = restore_entry(rs, dir_fd, e);
                rs->result->files++;
                if (r == -ENOMEM)
                        return r;
                if (r < 0 && add_error(rs, e, r, "cannot restore") < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int prepare_dest(const char *dest)
{
        _cleanup_close_ int fd = -1;
        struct stat st;
        DIR *d;
        struct dirent *de;
        bool empty = true;

        if (mkdir(dest, 0700) == 0)
                return 0;
        if (errno != EEXIST)
                return negative_errno();
        fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        d = fdopendir(TAKE_FD(fd));
        if (!d)
                return negative_errno();
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        empty = false;
        closedir(d);
        return empty ? 0 : -ENOTEMPTY;
}

int restore_point(cs_store *store, const cs_chunk_id *point, const char *dest, restore_result *ret)
{
        _cleanup_(cs_dir_freep) cs_dir *keep = NULL;
        _cleanup_close_ int fd = -1;
        restorer rs = { .store = store, .block_size = cs_store_block_size(store), .result = ret };
        struct rlimit rl;
        cs_entry root;
        int r;

        *ret = (restore_result) {};
        r = cs_point_load(store, point, &root, &keep);
        if (r < 0)
                return r;
        r = prepare_dest(dest);
        if (r < 0)
                return r;
        fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();

        /* Hardlink groups each hold a descriptor until the end. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        rs.buf = malloc(rs.block_size);
        rs.ids = calloc(BLOCK_BATCH, sizeof(*rs.ids));
        if (!rs.buf || !rs.ids)
                r = -ENOMEM;
        if (r >= 0)
                r = restore_dir(&rs, fd, &root.subdir);
        if (r >= 0)
                r = meta_apply(fd, NULL, &root);
        for (size_t i = 0; i < rs.n_masters; i++)
                safe_close(rs.masters[i].fd);
        free(rs.masters);
        free(rs.buf);
        free(rs.ids);
        free(rs.path);
        return r;
}

void restore_result_free(restore_result *r)
{
        for (size_t i = 0; i < r->n_errors; i++)
                free(r->errors[i]);
        free(r->errors);
        *r = (restore_result) {};
}
