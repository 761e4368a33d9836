/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clonectl diff TIMELINE@A TIMELINE@B: what changed between two points.
 *
 * Both trees are walked side by side in name order.  A subtree whose
 * directory id is the same in both is skipped without being read: that is
 * the Merkle tree paying off, so a diff costs what changed.  A changed
 * file's changed bytes are the blocks whose ids differ.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clonectl.h"
#include "source-dir.h"
#include "util/json.h"
#include "util/log.h"
#include "util/size.h"

#define BATCH 1024

typedef struct differ {
        cs_store *store;
        uint32_t block_size;
        char *path;
        size_t path_len, path_capacity;
        uint64_t added, removed, modified, changed_bytes;
        unsigned printed;
        cs_chunk_id a_ids[BATCH], b_ids[BATCH];
} differ;

static const char *type_name(uint32_t mode)
{
        switch (mode & S_IFMT) {
        case S_IFREG:
                return "file";
        case S_IFDIR:
                return "dir";
        case S_IFLNK:
                return "symlink";
        case S_IFIFO:
                return "fifo";
        case S_IFSOCK:
                return "socket";
        case S_IFCHR:
                return "char";
        case S_IFBLK:
                return "block";
        default:
                return "unknown";
        }
}

static int path_push(differ *d, const cs_entry *e, size_t *ret_saved)
{
        size_t need = d->path_len + 1 + e->name_len + 1;

        if (need > d->path_capacity) {
                size_t cap = MAX(need, 2 * d->path_capacity);
                char *p = realloc(d->path, cap);
                if (!p)
                        return -ENOMEM;
                d->path = p;
                d->path_capacity = cap;
        }
        *ret_saved = d->path_len;
        if (d->path_len)
                d->path[d->path_len++] = '/';
        memcpy(d->path + d->path_len, e->name, e->name_len);
        d->path_len += e->name_len;
        return 0;
}

static void report(differ *d, char change, const cs_entry *e, uint64_t bytes, const char *what)
{
        size_t saved;

        if (path_push(d, e, &saved) < 0)
                return;
        if (arg_json) {
                static const char *const names[] = { ['+'] = "added", ['-'] = "removed", ['M'] = "modified" };
                printf("%s{\"path\":", d->printed++ ? "," : "");
                json_write_string(stdout, d->path, d->path_len);
                printf(",\"change\":\"%s\",\"type\":\"%s\",\"bytes\":%" PRIu64, names[(int) change],
                       type_name(e->mode), bytes);
                if (change == 'M' && what)
                        printf(",\"what\":\"%s\"", what);
                putchar('}');
        } else {
                char escaped[8192], size[FORMAT_BYTES_MAX];
                escape_name(escaped, sizeof(escaped), d->path, d->path_len);
                if (change == 'M' && what)
                        printf("M %s%s  (%s)\n", escaped, S_ISDIR(e->mode) ? "/" : "", what);
                else if (change == 'M')
                        printf("M %s  (%s changed)\n", escaped, format_bytes(size, bytes));
                else
                        printf("%c %s%s\n", change, escaped, S_ISDIR(e->mode) ? "/" : "");
        }
        d->path_len = saved;
}

/* Reports a whole subtree as added or removed. */
static int report_tree(differ *d, char change, const cs_entry *e)
{
        _cleanup_(cs_dir_freep) cs_dir *dir = NULL;
        size_t saved;
        int r;

        report(d, change, e, S_ISREG(e->mode) ? e->size : 0, NULL);
        if (change == '+')
                d->added++;
        else
                d->removed++;
        if (S_ISREG(e->mode))
                d->changed_bytes += e->size;
        if (!S_ISDIR(e->mode))
                return 0;
        r = cs_dir_load(d->store, &e->subdir, &dir);
        if (r < 0)
                return r;
        r = path_push(d, e, &saved);
        for (size_t i = 0; r >= 0 && i < cs_dir_size(dir); i++)
                r = report_tree(d, change, cs_dir_entry(dir, i));
        d->path_len = saved;
        return r;
}

static bool same_content(const cs_content *a, const cs_content *b)
{
        return a->segmented == b->segmented && a->n == b->n &&
               memcmp(a->ids, b->ids, a->n * sizeof(cs_chunk_id)) == 0;
}

/* Bytes of the blocks that differ between two versions of a file. */
static int changed_bytes(differ *d, const cs_entry *a, const cs_entry *b, uint64_t *ret)
{
        uint64_t na = cs_store_blocks_of(d->store, a->size), nb = cs_store_blocks_of(d->store, b->size);
        uint64_t common = MIN(na, nb), bytes = 0;
        int r;

        for (uint64_t first = 0; first < common; first += BATCH) {
                size_t n = (size_t) MIN((uint64_t) BATCH, common - first);
                r = cs_content_blocks(d->store, &a->content, first, n, d->a_ids);
                if (r >= 0)
                        r = cs_content_blocks(d->store, &b->content, first, n, d->b_ids);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n; i++)
                        if (!cs_chunk_id_equal(&d->a_ids[i], &d->b_ids[i])) {
                                uint64_t offset = (first + i) * d->block_size;
                                bytes += MIN((uint64_t) d->block_size, b->size > offset ? b->size - offset : 0);
                        }
        }
        /* Growth is new bytes; shrinking changes no byte that remains. */
        if (b->size > common * d->block_size)
                bytes += b->size - common * d->block_size;
        *ret = bytes;
        return 0;
}

/* What differs in two entries' metadata, as "mode, mtime", or "" if
 * nothing.  Link groups are numbered per point, so they are compared
 * only as linked or not; a link added or removed shows in the count.  A
 * directory's count is its subdirectories', which show by themselves. */
static const char *metadata_changes(const cs_entry *a, const cs_entry *b, char *buf, size_t size)
{
        bool links = !S_ISDIR(a->mode) &&
                     (a->nlink != b->nlink || (a->link_group != 0) != (b->link_group != 0));
        const struct {
                bool differs;
                const char *name;
        } fields[] = {
                { (a->mode & 07777) != (b->mode & 07777), "mode" },
                { a->uid != b->uid || a->gid != b->gid, "owner" },
                { a->mtime_sec != b->mtime_sec || a->mtime_nsec != b->mtime_nsec, "mtime" },
                { a->rdev != b->rdev, "device" },
                { links, "links" },
                { !cs_entry_same_xattrs(a, b), "xattrs" },
        };
        size_t used = 0;

        buf[0] = 0;
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (fields[i].differs && used < size)
                        used += (size_t) snprintf(buf + used, size - used, "%s%s", used ? ", " : "",
                                                  fields[i].name);
        return buf;
}

static int diff_dirs(differ *d, const cs_chunk_id *a_id, const cs_chunk_id *b_id);

static int diff_entries(differ *d, const cs_entry *a, const cs_entry *b)
{
        char what[64];
        uint64_t bytes;
        size_t saved;
        int r;

        if ((a->mode & S_IFMT) != (b->mode & S_IFMT)) {
                r = report_tree(d, '-', a);
                return r < 0 ? r : report_tree(d, '+', b);
        }
        if (S_ISDIR(a->mode)) {
                if (*metadata_changes(a, b, what, sizeof(what))) {
                        report(d, 'M', b, 0, what);
                        d->modified++;
                }
                if (cs_chunk_id_equal(&a->subdir, &b->subdir))
                        return 0;
                r = path_push(d, b, &saved);
                if (r >= 0)
                        r = diff_dirs(d, &a->subdir, &b->subdir);
                d->path_len = saved;
                return r;
        }
        if (S_ISREG(a->mode) && (a->size != b->size || !same_content(&a->content, &b->content))) {
                r = changed_bytes(d, a, b, &bytes);
                if (r < 0)
                        return r;
                report(d, 'M', b, bytes, NULL);
                d->modified++;
                d->changed_bytes += bytes;
                return 0;
        }
        if (S_ISLNK(a->mode) && (a->size != b->size || memcmp(a->target, b->target, a->size) != 0)) {
                report(d, 'M', b, 0, "target");
                d->modified++;
                return 0;
        }
        if (*metadata_changes(a, b, what, sizeof(what))) {
                report(d, 'M', b, 0, what);
                d->modified++;
        }
        return 0;
}

static int compare_names(const cs_entry *a, const cs_entry *b)
{
        int c = memcmp(a->name, b->name, MIN(a->name_len, b->name_len));
        if (c)
                return c;
        return a->name_len < b->name_len ? -1 : a->name_len > b->name_len;
}

static int diff_dirs(differ *d, const cs_chunk_id *a_id, const cs_chunk_id *b_id)
{
        _cleanup_(cs_dir_freep) cs_dir *a = NULL;
        _cleanup_(cs_dir_freep) cs_dir *b = NULL;
        size_t i = 0, j = 0;
        int r;

        r = cs_dir_load(d->store, a_id, &a);
        if (r >= 0)
                r = cs_dir_load(d->store, b_id, &b);
        while (r >= 0 && (i < cs_dir_size(a) || j < cs_dir_size(b))) {
                const cs_entry *ea = cs_dir_entry(a, i), *eb = cs_dir_entry(b, j);
                int c = !ea ? 1 : !eb ? -1 : compare_names(ea, eb);

                if (c < 0) {
                        r = report_tree(d, '-', ea);
                        i++;
                } else if (c > 0) {
                        r = report_tree(d, '+', eb);
                        j++;
                } else {
                        r = diff_entries(d, ea, eb);
                        i++;
                        j++;
                }
        }
        return r;
}

int verb_diff(int argc, char **argv)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        _cleanup_(cs_dir_freep) cs_dir *keep_a = NULL;
        _cleanup_(cs_dir_freep) cs_dir *keep_b = NULL;
        cs_point_info pa, pb;
        cs_entry root_a, root_b;
        differ d = {};
        int r;

        r = open_store(0, &store);
        if (r < 0)
                return r;
        r = find_point(store, argv[1], &pa);
        if (r < 0)
                return r;
        r = find_point(store, argv[2], &pb);
        if (r < 0)
                return r;
        r = cs_point_load(store, &pa.root, &root_a, &keep_a);
        if (r >= 0)
                r = cs_point_load(store, &pb.root, &root_b, &keep_b);
        if (r < 0)
                return log_error_errno(r, "cannot read the points: %m");

        d.store = store;
        d.block_size = cs_store_block_size(store);
        if (arg_json)
                printf("{\"changes\":[");
        r = diff_dirs(&d, &root_a.subdir, &root_b.subdir);
        if (r < 0) {
                free(d.path);
                if (arg_json)
                        printf("]}\n");
                return log_error_errno(r, "cannot compare the points: %m");
        }
        if (arg_json) {
                printf("],\"added\":%" PRIu64 ",\"removed\":%" PRIu64 ",\"modified\":%" PRIu64
                       ",\"changed_bytes\":%" PRIu64 "}\n",
                       d.added, d.removed, d.modified, d.changed_bytes);
        } else {
                char size[FORMAT_BYTES_MAX];
                printf("%" PRIu64 " added, %" PRIu64 " removed, %" PRIu64 " modified, %s changed\n", d.added,
                       d.removed, d.modified, format_bytes(size, d.changed_bytes));
        }
        free(d.path);
        return 0;
}
