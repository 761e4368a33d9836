/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writable clones: a point plus an overlay that holds only what the clone
 * changed, with copy-on-write per page, never per file.
 *
 * Design notes
 *
 *  1. Layout: STORE/clones/NAME/ holds state.db (SQLite, WAL) and data/,
 *     one sparse "delta file" per inode the clone wrote to, named by the
 *     inode number in hex.  Changed data sits in the delta file at its
 *     natural offset; pages(ino, block, mask) says which pages of a block
 *     are local (bit j: page j).  A page is 4 KiB, or 1/64 of a block
 *     larger than 256 KiB, whatever the store's block size, so a
 *     database's 8 KiB page write costs 8 KiB, not a block.  A file
 *     created in the clone is wholly local (inodes.local_all = 1) and
 *     needs no rows.  The catalog's clones table names the clone and its
 *     base point; the base root is a gc root.  clone_points keeps the base
 *     of each of its snapshots, which a rewind to one restores.
 *  2. state.db: inodes (attributes; for base-backed files the base content
 *     and base_size, the bytes of base content still visible after
 *     truncation; for directories whether their listing is materialized),
 *     dentries(parent, name, ino), xattrs, pages, base_links (a base
 *     hardlink group's inode) and meta (base root, generation).
 *  3. Lazy: creating a clone writes the root inode only, so it takes
 *     constant time.  A directory's entries are copied into dentries and
 *     inodes the first time anything looks inside it (materialized); file
 *     data is never copied, only referenced.
 *  4. Reads, page by page: local -> delta file (holes read as zeros);
 *     else below base_size -> the base chunk; else zeros.  Writes: pages
 *     the write covers whole are just marked local; a page it covers in
 *     part is first copied up from its source.  A sequential write (one
 *     that starts where the last write to its file ended, as a database's
 *     log does) copies up the rest of its block too, so the delta file
 *     grows by blocks: the log's next writes overwrite in place, so its
 *     fdatasync() finds the block map unchanged (note 5) and, on a
 *     journaling filesystem, nothing newly allocated.  Schema 1 (table
 *     blocks: one row per whole local block) is upgraded on open to table
 *     pages, each row with every page local (schema 3).
 *  5. Durability: state.db runs synchronous=NORMAL: every change is in the
 *     WAL (so kill -9 loses nothing that returned), and fsync() of a file
 *     is fdatasync() of its delta file followed by a synchronous commit
 *     of state.db, which makes every earlier change durable too.  The
 *     commit is skipped when nothing the file needs is pending: fdatasync
 *     needs one only after a change to where data lives (block map, size,
 *     names), and changes confined to one file's rows (its writes,
 *     truncates, fallocates, setattrs) are remembered per inode, so a
 *     database's log flush does not pay for its table files' copy-ups.
 *     A full fsync of a file whose only news is the times of overwrites
 *     in place puts those times on its delta file (xattr
 *     user.clonefs.times) and fsyncs it: one flush, as on a disk.  The
 *     first such fsync of an open clone commits meta.times_in_delta, a
 *     nonce its records carry, synchronously; a clean close takes every
 *     time into the catalog and deletes it; an open that finds it set
 *     takes the times of each delta file's record with that nonce whose
 *     ctime is later than its row's.
 *  6. Locking: one mutex per open clone serializes its metadata and
 *     writes.  Between processes, clones/NAME/lock is held exclusively by
 *     whoever uses the clone: the one mount that has it open (a second is
 *     refused, so no two page caches disagree), or clonectl's snapshot,
 *     rewind, refresh, export and destroy, which therefore refuse (or
 *     wait for) a mount that has the clone open.
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "clone-cache.h"
#include "cs-internal.h"

#define CLONE_DIR "clones"

/* Statements on the read and write paths, prepared once per open clone. */
enum {
        STMT_LOAD_INODE,
        STMT_UPDATE_ATTR,
        STMT_BLOCK_IS_LOCAL,
        STMT_MARK_LOCAL,
        STMT_FIND_DENTRY,
        STMT_GETXATTR,
        N_STMTS,
};

/* Overwrites in place whose new times may wait outside the catalog. */
#define PENDING_TIMES 64
/* Files written sequentially, remembered by where their last write ended. */
#define STREAMS 16
/* Inodes whose data placement changed since the last synchronous commit,
 * tracked one by one before falling back to "any" (design note 5). */
#define DIRTY_INODES 32

/* Decoded base blocks kept per open clone: 8 MiB at 64 KiB blocks. */
#define CLONE_BLOCK_CACHE_BYTES (8u << 20)
/* Base block ids kept per open clone (512 KiB): 1 GiB of file at 64 KiB
 * blocks. */
#define CLONE_ID_CACHE_SLOTS 16384

typedef struct pending_times {
        uint64_t ino;
        struct timespec mtime, ctime;
} pending_times;

/* A clone inode made from a member of a base link group (base_links). */
typedef struct link_origin {
        uint64_t ino;
        uint64_t grp;
} link_origin;

struct cs_clone {
        cs_store *store;
        cs_store *put_store; /* during a fold: where its chunks go */
        /* During a fold: base_links, sorted by ino and by group. */
        link_origin *fold_links, *fold_groups;
        size_t n_fold_links;
        uint64_t fold_salt; /* during a fold: for the ids of new link groups */
        char *name;
        int dir_fd;  /* clones/NAME */
        int data_fd; /* clones/NAME/data */
        int lock_fd;
        sqlite3 *db;
        pthread_mutex_t lock;
        uint32_t block_size;
        uint32_t page_size; /* the unit of copy-on-write (design note 1) */
        uint64_t key; /* for stable inode numbers */
        uint8_t *buf;     /* one block, under lock */
        uint8_t *scratch; /* one block, under lock, for read_base */
        cs_fd_cache fds;       /* delta files, under lock */
        cs_block_cache blocks; /* decoded base blocks, under lock */
        cs_id_cache ids;       /* base block ids, under lock */
        /* Bumped by a reset, which gives inode numbers new meanings (the
         * root's at least): a decode that ran without the mutex across one
         * must not fill the caches, nor its read go on. */
        uint64_t cache_epoch;
        sqlite3_stmt *stmts[N_STMTS]; /* prepared once, under lock */
        /* What an fsync must make durable (design note 5): commits that
         * changed where data lives (block map, sizes, names) and commits
         * that changed attributes only; a delta file created. */
        bool meta_dirty, attr_dirty, dir_dirty;
        bool op_attrs_only; /* the running transaction changes attributes only */
        /* The one inode whose rows the running transaction changes, or 0
         * for any other transaction; commits of such are remembered per
         * inode, so that an fdatasync of another file skips the
         * synchronous commit. */
        uint64_t op_ino;
        /* sqlite3_total_changes64() when the operation began: a lookup
         * or readdir that found its directory materialized changed
         * nothing, and leaves nothing for an fsync to make durable. */
        sqlite3_int64 op_changes_from;
        struct {
                uint64_t ino;
                bool meta; /* where its data lives changed, not just times */
        } dirty_inodes[DIRTY_INODES];
        size_t n_dirty_inodes;
        /* meta.times_in_delta is durable: a full fsync may have left
         * times in a delta file's xattr that the catalog lacks (note 5). */
        bool times_in_delta;
        /* The session's mark on times it put on delta files: only those
         * are recovered (design note 5), not those an earlier user left. */
        uint64_t times_nonce;
        /* Times of overwrites in place not yet in the catalog: written by
         * the next transaction, a full fsync, or the close (design note 5). */
        pending_times pending[PENDING_TIMES];
        size_t n_pending;
        /* The pending times a transaction took in when it began: put back
         * if it rolls back, or they would be lost. */
        pending_times pending_saved[PENDING_TIMES];
        size_t n_pending_saved;
        /* Where recent writes ended, per inode, round robin: a write that
         * starts where the last one to its file ended copies up its whole
         * block (design note 4). */
        struct {
                uint64_t ino, end;
        } streams[STREAMS];
        size_t next_stream;
};

static const char clone_schema[] =
        "PRAGMA journal_mode=WAL;"
        "BEGIN;"
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
        "CREATE TABLE inodes(ino INTEGER PRIMARY KEY AUTOINCREMENT, mode INTEGER NOT NULL,"
        "  uid INTEGER NOT NULL, gid INTEGER NOT NULL, nlink INTEGER NOT NULL, size INTEGER NOT NULL,"
        "  rdev INTEGER NOT NULL DEFAULT 0, atime INTEGER NOT NULL, atime_ns INTEGER NOT NULL,"
        "  mtime INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,"
        "  base BLOB, base_size INTEGER NOT NULL DEFAULT 0, local_all INTEGER NOT NULL DEFAULT 0,"
        "  materialized INTEGER NOT NULL DEFAULT 1, target BLOB);"
        "CREATE TABLE dentries(parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL,"
        "  PRIMARY KEY(parent, name)) WITHOUT ROWID;"
        "CREATE TABLE xattrs(ino INTEGER NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,"
        "  PRIMARY KEY(ino, name)) WITHOUT ROWID;"
        "CREATE TABLE pages(ino INTEGER NOT NULL, block INTEGER NOT NULL, mask INTEGER NOT NULL,"
        "  PRIMARY KEY(ino, block)) WITHOUT ROWID;"
        "CREATE TABLE base_links(grp INTEGER PRIMARY KEY, ino INTEGER NOT NULL);"
        "INSERT INTO meta VALUES('schema', 3), ('generation', 1);"
        "COMMIT;";

bool cs_clone_name_is_valid(const char *name)
{
        return cs_name_is_valid(name);
}

/* --- Small SQL helpers ---------------------------------------------------- */

static int pending_flush(cs_clone *c);
static void dirty_inode_add(cs_clone *c, uint64_t ino, bool meta);

/* ino's entry in the pending times, or NULL. */
static pending_times *pending_find(cs_clone *c, uint64_t ino)
{
        for (size_t k = 0; k < c->n_pending; k++)
                if (c->pending[k].ino == ino)
                        return &c->pending[k];
        return NULL;
}

static int prep(cs_clone *c, const char *sql, sqlite3_stmt **ret)
{
        return cs_index_prepare(c->db, sql, ret);
}

/* A statement of the hot paths, prepared on first use and kept: borrowed,
 * to be released with sqlite3_resetp (which also ends its read). */
static int prep_cached(cs_clone *c, unsigned which, const char *sql, sqlite3_stmt **ret)
{
        if (!c->stmts[which]) {
                int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->stmts[which], NULL);
                if (rc != SQLITE_OK)
                        return cs_sqlite_errno(rc);
        }
        *ret = c->stmts[which];
        return 0;
}

static void sqlite3_resetp(sqlite3_stmt **stmt)
{
        if (*stmt) {
                sqlite3_reset(*stmt);
                sqlite3_clear_bindings(*stmt);
        }
}

/* --- Base content encoding ---------------------------------------------
 *
 * u8 flags (bit 0: segmented; bit 1: le64 data blocks follows), [le64 data
 * blocks], then the ids.  Bit 1 is written in stores of format 2 on, as
 * in a point's entry (tree.c, design note 2). */

enum {
        BLOB_SEGMENTED = 1 << 0,
        BLOB_DATA_BLOCKS = 1 << 1,
};

static int content_blob(const cs_store *store, const cs_content *content, uint8_t **ret, size_t *ret_size)
{
        bool data_blocks = cs_store_writes_data_blocks(store) && content->segmented && content->data_blocks_known;
        size_t header = 1 + (data_blocks ? 8 : 0), size = header + content->n * CS_CHUNK_ID_SIZE;
        uint8_t *b = malloc(size);

        if (!b)
                return -ENOMEM;
        b[0] = (content->segmented ? BLOB_SEGMENTED : 0) | (data_blocks ? BLOB_DATA_BLOCKS : 0);
        if (data_blocks) {
                uint64_t v = htole64(content->data_blocks);
                memcpy(b + 1, &v, 8);
        }
        if (content->n)
                memcpy(b + header, content->ids, content->n * CS_CHUNK_ID_SIZE);
        *ret = b;
        *ret_size = size;
        return 0;
}

static int content_from_blob(const void *blob, size_t size, cs_content *ret)
{
        const uint8_t *b = blob;
        size_t header;
        uint64_t v = 0;

        if (size < 1 || (b[0] & ~(BLOB_SEGMENTED | BLOB_DATA_BLOCKS)))
                return -EBADMSG;
        header = 1 + (b[0] & BLOB_DATA_BLOCKS ? 8 : 0);
        if (size < header || (size - header) % CS_CHUNK_ID_SIZE)
                return -EBADMSG;
        if (b[0] & BLOB_DATA_BLOCKS)
                memcpy(&v, b + 1, 8);
        *ret = (cs_content) {
                .segmented = b[0] & BLOB_SEGMENTED,
                .n = (size - header) / CS_CHUNK_ID_SIZE,
                .ids = (const cs_chunk_id *) (b + header),
                .data_blocks_known = !(b[0] & BLOB_SEGMENTED) || (b[0] & BLOB_DATA_BLOCKS),
                .data_blocks = le64toh(v),
        };
        return 0;
}

/* --- Catalog: the clones table -------------------------------------------- */

static int ensure_clones_table(sqlite3 *db)
{
        return cs_index_exec(db, "CREATE TABLE IF NOT EXISTS clones(name TEXT PRIMARY KEY, base_timeline TEXT NOT NULL,"
                                 " base_point TEXT NOT NULL, base_root BLOB NOT NULL, created INTEGER NOT NULL)");
}

/* The base each snapshot of a clone was taken on (clones.base_timeline
 * and base_point then), by the snapshot's timeline and point name, so
 * that a rewind to the snapshot can make it the clone's base again.
 * Keyed by names, not points.id, which SQLite may reuse after a forget;
 * a forgotten point's row stays, unused (a new point of the same name
 * replaces it).  Created by the first snapshot that records one, as the
 * clones table is: an older clonectl does not know it and ignores it. */
static int ensure_clone_points_table(sqlite3 *db)
{
        return cs_index_exec(db, "CREATE TABLE IF NOT EXISTS clone_points(timeline TEXT NOT NULL, point TEXT NOT NULL,"
                                 " base_timeline TEXT NOT NULL, base_point TEXT NOT NULL,"
                                 " PRIMARY KEY(timeline, point)) WITHOUT ROWID");
}

/* In cs_point_add's transaction: the clone's base now, for the new point. */
static int record_point_base(sqlite3 *db, const cs_point_info *info, void *userdata)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int r;

        (void) userdata;
        r = ensure_clone_points_table(db);
        if (r >= 0)
                r = cs_index_prepare(db, "INSERT OR REPLACE INTO clone_points(timeline, point, base_timeline, base_point)"
                                         " SELECT name, ?2, base_timeline, base_point FROM clones WHERE name = ?1",
                                     &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_text(stmt, 1, info->timeline, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, info->name, -1, SQLITE_STATIC);
        r = cs_index_step(stmt);
        if (r >= 0 && sqlite3_changes(db) == 0)
                r = -ENOENT; /* no such clone: it was destroyed meanwhile */
        return r;
}

int cs_clone_point_add(cs_store *store, cs_point_info *info)
{
        if (!store || !info || !cs_clone_name_is_valid(info->timeline))
                return -EINVAL;
        return cs_point_add_with(store, info, record_point_base, NULL);
}

static void now(struct timespec *t)
{
        clock_gettime(CLOCK_REALTIME, t);
}

/* Schema 1 kept whole blocks in blocks(ino, block): each of its rows is
 * every page local.  Schema 2 (a development version) had the mask in
 * blocks.  The table changes name so that a binary from before pages
 * fails on a schema 3 clone instead of misreading its rows. */
static int upgrade_schema(sqlite3 *db)
{
        int64_t schema = 0;
        int r = cs_index_query_int(db, "SELECT value FROM meta WHERE key = 'schema'", 0, &schema);

        if (r < 0)
                return r;
        if (schema > 3)
                return -EPROTONOSUPPORT;
        if (schema == 3)
                return 0;
        if (schema == 2)
                return cs_index_exec(db, "BEGIN IMMEDIATE; ALTER TABLE blocks RENAME TO pages;"
                                         " UPDATE meta SET value = 3 WHERE key = 'schema'; COMMIT");
        return cs_index_exec(db, "BEGIN IMMEDIATE;"
                                 " CREATE TABLE pages(ino INTEGER NOT NULL, block INTEGER NOT NULL,"
                                 "  mask INTEGER NOT NULL, PRIMARY KEY(ino, block)) WITHOUT ROWID;"
                                 " INSERT INTO pages SELECT ino, block, -1 FROM blocks;"
                                 " DROP TABLE blocks;"
                                 " UPDATE meta SET value = 3 WHERE key = 'schema';"
                                 " COMMIT");
}

static int open_state_db(int clone_dir_fd, bool create, sqlite3 **ret)
{
        char link[64], *dir, *path;
        sqlite3 *db = NULL;
        int rc, r;

        snprintf(link, sizeof(link), "/proc/self/fd/%d", clone_dir_fd);
        dir = realpath(link, NULL);
        if (!dir)
                return negative_errno();
        r = asprintf(&path, "%s/state.db", dir);
        free(dir);
        if (r < 0)
                return -ENOMEM;
        if (create) {
                int fd = openat(clone_dir_fd, "state.db", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (fd < 0) {
                        r = negative_errno();
                        free(path);
                        return r;
                }
                close(fd);
        }
        rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        free(path);
        if (rc != SQLITE_OK) {
                r = cs_sqlite_errno(rc);
                sqlite3_close(db);
                return r;
        }
        sqlite3_busy_timeout(db, 60000);
        int persist = 1;
        sqlite3_file_control(db, NULL, SQLITE_FCNTL_PERSIST_WAL, &persist);
        /* Only the holder of the clone's lock opens its catalog, so SQLite
         * may keep its file locks and WAL index to itself: no fcntl() per
         * transaction on the write path. */
        r = cs_index_exec(db, "PRAGMA locking_mode=EXCLUSIVE; PRAGMA synchronous=NORMAL;"
                              " PRAGMA journal_size_limit=4194304;"); /* as the catalog's (index.c) */
        if (r >= 0 && create)
                r = cs_index_exec(db, clone_schema);
        else if (r >= 0)
                r = upgrade_schema(db);
        if (r < 0) {
                sqlite3_close(db);
                return r;
        }
        *ret = db;
        return 0;
}

/* Writes the root inode from the base point's root entry. */
static int write_root(sqlite3 *db, cs_store *store, const cs_chunk_id *base_root)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_(cs_dir_freep) cs_dir *keep = NULL;
        cs_entry root;
        int r;

        r = cs_point_load(store, base_root, &root, &keep);
        if (r < 0)
                return r;
        r = cs_index_prepare(db,
                             "INSERT INTO inodes(ino, mode, uid, gid, nlink, size, atime, atime_ns, mtime, mtime_ns,"
                             " ctime, ctime_ns, base, materialized) VALUES(1, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, 0)",
                             &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, root.mode);
        sqlite3_bind_int64(stmt, 2, root.uid);
        sqlite3_bind_int64(stmt, 3, root.gid);
        sqlite3_bind_int64(stmt, 4, root.nlink ? root.nlink : 2);
        sqlite3_bind_int64(stmt, 5, root.mtime_sec);
        sqlite3_bind_int64(stmt, 6, root.mtime_nsec);
        sqlite3_bind_int64(stmt, 7, root.mtime_sec);
        sqlite3_bind_int64(stmt, 8, root.mtime_nsec);
        sqlite3_bind_int64(stmt, 9, root.ctime_sec);
        sqlite3_bind_int64(stmt, 10, root.ctime_nsec);
        sqlite3_bind_blob(stmt, 11, root.subdir.bytes, CS_CHUNK_ID_SIZE, SQLITE_STATIC);
        r = cs_index_step(stmt);
        if (r < 0)
                return r;
        sqlite3_finalize(TAKE_PTR(stmt));
        for (size_t i = 0; i < root.n_xattrs && r >= 0; i++) {
                r = cs_index_prepare(db, "INSERT INTO xattrs VALUES(1, ?, ?)", &stmt);
                if (r < 0)
                        break;
                sqlite3_bind_text(stmt, 1, root.xattrs[i].name, -1, SQLITE_STATIC);
                sqlite3_bind_blob(stmt, 2, root.xattrs[i].value, (int) root.xattrs[i].size, SQLITE_STATIC);
                r = cs_index_step(stmt);
                sqlite3_finalize(TAKE_PTR(stmt));
        }
        if (r < 0)
                return r;
        r = cs_index_prepare(db, "INSERT OR REPLACE INTO meta VALUES('base_root', ?)", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_blob(stmt, 1, base_root->bytes, CS_CHUNK_ID_SIZE, SQLITE_STATIC);
        return cs_index_step(stmt);
}

static int clones_dir(cs_store *store, bool create, int *ret_fd)
{
        int fd;

        if (create && mkdirat(store->dir_fd, CLONE_DIR, 0700) < 0 && errno != EEXIST)
                return negative_errno();
        fd = openat(store->dir_fd, CLONE_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        *ret_fd = fd;
        return 0;
}

static int remove_tree_at(int dir_fd, const char *name)
{
        _cleanup_close_ int fd = -1;
        struct dirent *de;
        DIR *d;
        int r = 0;

        fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 0 : negative_errno();
        d = fdopendir(TAKE_FD(fd));
        if (!d)
                return negative_errno();
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                if (de->d_type == DT_DIR)
                        r = remove_tree_at(dirfd(d), de->d_name);
                else if (unlinkat(dirfd(d), de->d_name, 0) < 0)
                        r = negative_errno();
                if (r < 0)
                        break;
        }
        closedir(d);
        if (r >= 0 && unlinkat(dir_fd, name, AT_REMOVEDIR) < 0)
                r = negative_errno();
        return r;
}

int cs_clone_create(cs_store *store, const char *name, const cs_point_info *from)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_close_ int dir_fd = -1, clone_fd = -1;
        sqlite3 *cat, *db = NULL;
        int r;

        if (!store || !cs_clone_name_is_valid(name) || !from)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        r = clones_dir(store, true, &dir_fd);
        if (r < 0)
                return r;
        if (mkdirat(dir_fd, name, 0700) < 0)
                return negative_errno(); /* EEXIST: the name is taken */
        clone_fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (clone_fd < 0)
                return negative_errno();
        if (mkdirat(clone_fd, "data", 0700) < 0) {
                r = negative_errno();
                goto fail;
        }
        r = open_state_db(clone_fd, true, &db);
        if (r >= 0)
                r = write_root(db, store, &from->root);
        sqlite3_close(db);
        if (r < 0)
                goto fail;

        /* The catalog row last: a clone is listed once it is complete. */
        pthread_mutex_lock(&store->write_lock);
        cat = cs_store_writer_locked(store);
        r = ensure_clones_table(cat);
        if (r >= 0)
                r = cs_index_prepare(cat, "INSERT INTO clones VALUES(?, ?, ?, ?, strftime('%s','now'))", &stmt);
        if (r >= 0) {
                sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
                sqlite3_bind_text(stmt, 2, from->timeline, -1, SQLITE_STATIC);
                sqlite3_bind_text(stmt, 3, from->name, -1, SQLITE_STATIC);
                sqlite3_bind_blob(stmt, 4, from->root.bytes, CS_CHUNK_ID_SIZE, SQLITE_STATIC);
                r = cs_index_step(stmt);
        }
        cs_store_writer_unlock(store, &stmt);
        if (r >= 0)
                return 0;
fail:
        (void) remove_tree_at(dir_fd, name);
        return r;
}

static int read_clone_row(sqlite3_stmt *stmt, cs_clone_info *c)
{
        *c = (cs_clone_info) {};
        snprintf(c->name, sizeof(c->name), "%s", (const char *) sqlite3_column_text(stmt, 0));
        snprintf(c->base_timeline, sizeof(c->base_timeline), "%s", (const char *) sqlite3_column_text(stmt, 1));
        snprintf(c->base_point, sizeof(c->base_point), "%s", (const char *) sqlite3_column_text(stmt, 2));
        if (sqlite3_column_bytes(stmt, 3) != CS_CHUNK_ID_SIZE)
                return -EBADMSG;
        memcpy(c->base_root.bytes, sqlite3_column_blob(stmt, 3), CS_CHUNK_ID_SIZE);
        c->created = sqlite3_column_int64(stmt, 4);
        return 0;
}

/* Bytes a clone stores itself: its delta files as allocated on disk. */
static uint64_t local_bytes(cs_store *store, const char *name)
{
        _cleanup_close_ int dir_fd = -1;
        struct dirent *de;
        uint64_t total = 0;
        char path[PATH_MAX];
        DIR *d;

        snprintf(path, sizeof(path), CLONE_DIR "/%s/data", name);
        dir_fd = openat(store->dir_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0)
                return 0;
        d = fdopendir(TAKE_FD(dir_fd));
        if (!d)
                return 0;
        while ((de = readdir(d))) {
                struct stat st;
                if (de->d_name[0] != '.' && fstatat(dirfd(d), de->d_name, &st, 0) == 0)
                        total += (uint64_t) st.st_blocks * 512;
        }
        closedir(d);
        return total;
}

int cs_clone_list(cs_store *store, cs_clone_info **ret, size_t *ret_n)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_free_ cs_clone_info *list = NULL;
        size_t n = 0, cap = 0;
        sqlite3 *db;
        int rc = SQLITE_DONE, r;

        if (!store || !ret || !ret_n)
                return -EINVAL;
        r = cs_index_reader_acquire(store->index, &db);
        if (r < 0)
                return r;
        r = cs_index_prepare(db, "SELECT name, base_timeline, base_point, base_root, created FROM clones ORDER BY name",
                             &stmt);
        if (r == -EIO && strstr(sqlite3_errmsg(db), "no such table"))
                r = 0; /* no clone was ever made */
        while (r >= 0 && stmt && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                if (n == cap) {
                        cap = cap ? 2 * cap : 16;
                        cs_clone_info *l = reallocarray(list, cap, sizeof(*l));
                        if (!l) {
                                r = -ENOMEM;
                                break;
                        }
                        list = l;
                }
                r = read_clone_row(stmt, &list[n]);
                if (r >= 0)
                        list[n].local_bytes = local_bytes(store, list[n].name);
                n++;
        }
        if (r >= 0 && stmt && rc != SQLITE_DONE)
                r = cs_sqlite_errno(rc);
        sqlite3_finalize(TAKE_PTR(stmt));
        cs_index_reader_release(store->index, db);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(list);
        *ret_n = n;
        return 0;
}

int cs_clone_find(cs_store *store, const char *name, cs_clone_info *ret)
{
        _cleanup_free_ cs_clone_info *list = NULL;
        size_t n = 0;
        int r = cs_clone_list(store, &list, &n);

        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (strcmp(list[i].name, name) == 0) {
                        *ret = list[i];
                        return 0;
                }
        return -ENOENT;
}

static int clone_open(cs_store *store, const char *name, bool wait, bool lock_only, cs_clone **ret);
static int recover_times(cs_clone *c);
static void clone_closep(cs_clone **c);
static uint64_t mix64(uint64_t x);
static uint64_t name_key(const char *name);

static int destroy_held(cs_store *store, const char *name);

int cs_clone_destroy(cs_store *store, const char *name, bool force)
{
        _cleanup_(clone_closep) cs_clone *holder = NULL;
        cs_clone_info info;
        int r;

        if (!store || !name)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        r = cs_clone_find(store, name, &info);
        if (r < 0)
                return r;
        /* Only its lock: a clone whose catalog this binary cannot open
         * (a newer schema, damage) can still be destroyed. */
        r = clone_open(store, name, force, true, &holder);
        if (r < 0)
                return r;
        return destroy_held(store, name);
}

int cs_clone_destroy_open(cs_clone *c, cs_store *store)
{
        if (!c || !store)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        return destroy_held(store, c->name);
}

/* Removes a clone whose lock the caller holds: its row, then its files.
 * An open handle on it keeps working on the unlinked files until closed. */
static int destroy_held(cs_store *store, const char *name)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_close_ int dir_fd = -1;
        sqlite3 *cat;
        int r;

        pthread_mutex_lock(&store->write_lock);
        cat = cs_store_writer_locked(store);
        r = cs_index_prepare(cat, "DELETE FROM clones WHERE name = ?", &stmt);
        if (r >= 0) {
                sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
                r = cs_index_step(stmt);
        }
        cs_store_writer_unlock(store, &stmt);
        if (r < 0)
                return r;
        r = clones_dir(store, false, &dir_fd);
        if (r < 0)
                return r;
        return remove_tree_at(dir_fd, name);
}

/* --- Opening ----------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ull;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebull;
        x ^= x >> 31;
        return x;
}

static int drop_orphans(cs_clone *c)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        r = prep(c, "SELECT ino FROM inodes WHERE nlink = 0", &stmt);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                char name[32];
                snprintf(name, sizeof(name), "%" PRIx64, (uint64_t) sqlite3_column_int64(stmt, 0));
                (void) unlinkat(c->data_fd, name, 0);
        }
        if (rc != SQLITE_DONE)
                return cs_sqlite_errno(rc);
        sqlite3_finalize(TAKE_PTR(stmt));
        return cs_index_exec(c->db, "DELETE FROM xattrs WHERE ino IN (SELECT ino FROM inodes WHERE nlink = 0);"
                                    "DELETE FROM pages WHERE ino IN (SELECT ino FROM inodes WHERE nlink = 0);"
                                    "DELETE FROM base_links WHERE ino IN (SELECT ino FROM inodes WHERE nlink = 0);"
                                    "DELETE FROM inodes WHERE nlink = 0");
}

/* Opens a clone and takes its lock; with lock_only, not its catalog. */
static int clone_open(cs_store *store, const char *name, bool wait, bool lock_only, cs_clone **ret)
{
        cs_clone *c;
        char path[PATH_MAX];
        int r;

        if (!store || !name || !ret || !cs_clone_name_is_valid(name))
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->dir_fd = c->data_fd = c->lock_fd = -1;
        c->store = store;
        c->block_size = cs_store_block_size(store);
        c->page_size = MAX(c->block_size / 64, MIN(c->block_size, 4096u));
        cs_fd_cache_init(&c->fds);
        pthread_mutex_init(&c->lock, NULL);
        c->name = strdup(name);
        c->buf = malloc(c->block_size);
        c->scratch = malloc(c->block_size);
        r = cs_block_cache_init(&c->blocks, CLONE_BLOCK_CACHE_BYTES / c->block_size, c->block_size);
        if (r >= 0)
                r = cs_id_cache_init(&c->ids, CLONE_ID_CACHE_SLOTS);
        if (!c->name || !c->buf || !c->scratch || r < 0) {
                r = -ENOMEM;
                goto fail;
        }
        c->key = name_key(name);
        snprintf(path, sizeof(path), CLONE_DIR "/%s", name);
        c->dir_fd = openat(store->dir_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->dir_fd < 0) {
                r = negative_errno();
                goto fail;
        }
        c->data_fd = openat(c->dir_fd, "data", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        c->lock_fd = openat(c->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (c->data_fd < 0 || c->lock_fd < 0) {
                r = negative_errno();
                goto fail;
        }
        if (flock(c->lock_fd, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0) {
                r = errno == EWOULDBLOCK ? -EBUSY : negative_errno();
                goto fail;
        }
        if (!lock_only) {
                r = open_state_db(c->dir_fd, false, &c->db);
                if (r < 0)
                        goto fail;
                /* Files unlinked while open when the last user died: gone
                 * now, their delta files with them. */
                r = drop_orphans(c);
                if (r >= 0)
                        r = recover_times(c);
                if (r < 0)
                        goto fail;
        }
        *ret = c;
        return 0;
fail:
        cs_clone_close(c);
        return r;
}

static uint64_t name_key(const char *name)
{
        uint64_t key = 0;
        for (const char *p = name; *p; p++)
                key = mix64(key ^ (uint8_t) *p);
        return key;
}

uint64_t cs_clone_stable_ino(const char *name, uint64_t ino)
{
        return mix64(name_key(name) ^ ino) | 2;
}

int cs_clone_open(cs_store *store, const char *name, cs_clone **ret)
{
        return clone_open(store, name, false, false, ret);
}

static void clone_closep(cs_clone **c)
{
        cs_clone_close(*c);
}

cs_clone *cs_clone_close(cs_clone *c)
{
        if (!c)
                return NULL;
        /* Every time is in the catalog now: no delta file's is needed. */
        if ((c->n_pending > 0 || c->times_in_delta) && cs_index_begin(c->db) >= 0) {
                int r = pending_flush(c);
                if (r >= 0 && c->times_in_delta)
                        r = cs_index_exec(c->db, "DELETE FROM meta WHERE key = 'times_in_delta'");
                if (r >= 0)
                        (void) cs_index_commit(c->db);
                else
                        cs_index_rollback(c->db);
        }
        for (size_t i = 0; i < N_STMTS; i++)
                sqlite3_finalize(c->stmts[i]);
        if (c->db)
                sqlite3_close(c->db);
        cs_fd_cache_clear(&c->fds);
        cs_block_cache_done(&c->blocks);
        cs_id_cache_done(&c->ids);
        safe_close(c->lock_fd);
        safe_close(c->data_fd);
        safe_close(c->dir_fd);
        pthread_mutex_destroy(&c->lock);
        free(c->buf);
        free(c->scratch);
        free(c->name);
        return mfree(c);
}

const char *cs_clone_name(const cs_clone *c)
{
        return c->name;
}

/* --- Inodes -------------------------------------------------------------------- */

#define INODE_COLUMNS                                                                    \
        "ino, mode, uid, gid, nlink, size, rdev, atime, atime_ns, mtime, mtime_ns, ctime," \
        " ctime_ns, base, base_size, local_all, materialized, target"

typedef struct inode {
        cs_clone_attr attr;
        uint8_t *base; /* owned blob */
        size_t base_len;
        uint64_t base_size;
        bool local_all;
        bool materialized;
} inode;

static void inode_clear(inode *i)
{
        free(i->base);
        i->base = NULL;
}

static int load_inode(cs_clone *c, uint64_t ino, inode *ret)
{
        _cleanup_(sqlite3_resetp) sqlite3_stmt *stmt = NULL;
        int rc, r;

        r = prep_cached(c, STMT_LOAD_INODE, "SELECT " INODE_COLUMNS " FROM inodes WHERE ino = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) ino);
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return cs_sqlite_errno(rc);
        *ret = (inode) {};
        cs_clone_attr *a = &ret->attr;
        a->ino = ino;
        a->stable_ino = mix64(c->key ^ ino) | 2;
        a->mode = (uint32_t) sqlite3_column_int64(stmt, 1);
        a->uid = (uint32_t) sqlite3_column_int64(stmt, 2);
        a->gid = (uint32_t) sqlite3_column_int64(stmt, 3);
        a->nlink = (uint32_t) sqlite3_column_int64(stmt, 4);
        a->size = (uint64_t) sqlite3_column_int64(stmt, 5);
        a->rdev = (uint64_t) sqlite3_column_int64(stmt, 6);
        a->atime = (struct timespec) { sqlite3_column_int64(stmt, 7), sqlite3_column_int64(stmt, 8) };
        a->mtime = (struct timespec) { sqlite3_column_int64(stmt, 9), sqlite3_column_int64(stmt, 10) };
        a->ctime = (struct timespec) { sqlite3_column_int64(stmt, 11), sqlite3_column_int64(stmt, 12) };
        if (sqlite3_column_type(stmt, 13) == SQLITE_BLOB) {
                ret->base_len = (size_t) sqlite3_column_bytes(stmt, 13);
                ret->base = malloc(MAX(ret->base_len, 1u));
                if (!ret->base)
                        return -ENOMEM;
                memcpy(ret->base, sqlite3_column_blob(stmt, 13), ret->base_len);
        }
        ret->base_size = (uint64_t) sqlite3_column_int64(stmt, 14);
        ret->local_all = sqlite3_column_int(stmt, 15) != 0;
        ret->materialized = sqlite3_column_int(stmt, 16) != 0;
        a->blocks = DIV_ROUND_UP(a->size, 512);
        const pending_times *p = pending_find(c, ino);
        if (p) {
                a->mtime = p->mtime;
                a->ctime = p->ctime;
        }
        return 0;
}

/* The attributes stat() shows, st_blocks included: a regular file's
 * bytes that are not holes, as far as they are known without reading its
 * data.  The base counts its blocks that are not holes (all of them when
 * a format 1 store's point does not say), the delta file what the file
 * system allocated; their sum, at most the size, counts an overwritten
 * base block twice, so it errs upward: du may overstate a clone's file,
 * but a file with data never looks empty to tar --sparse or cp. */
static void inode_stat(cs_clone *c, const inode *i, cs_clone_attr *ret)
{
        uint64_t bytes = 0;
        cs_content content;
        struct stat st;
        char name[32];

        *ret = i->attr;
        if (!S_ISREG(i->attr.mode))
                return;
        if (i->base && i->base_size > 0 && content_from_blob(i->base, i->base_len, &content) >= 0)
                bytes += cs_content_data_bytes(&content, i->base_size, c->block_size);
        else if (i->base)
                bytes += i->base_size;
        snprintf(name, sizeof(name), "%" PRIx64, i->attr.ino);
        if (fstatat(c->data_fd, name, &st, 0) == 0)
                bytes += (uint64_t) st.st_blocks * 512;
        ret->blocks = DIV_ROUND_UP(MIN(bytes, i->attr.size), 512);
}

/* Takes the clone's mutex and loads an inode; on failure, lets go. */
static int lock_inode(cs_clone *c, uint64_t ino, inode *ret)
{
        pthread_mutex_lock(&c->lock);
        int r = load_inode(c, ino, ret);
        if (r < 0)
                pthread_mutex_unlock(&c->lock);
        return r;
}

static void pending_forget(cs_clone *c, uint64_t ino)
{
        pending_times *p = pending_find(c, ino);

        if (p)
                *p = c->pending[--c->n_pending];
}

/* Remembers the pending times, for pending_restore. */
static void pending_save(cs_clone *c)
{
        memcpy(c->pending_saved, c->pending, c->n_pending * sizeof(c->pending[0]));
        c->n_pending_saved = c->n_pending;
}

/* After a rollback of a transaction that ran pending_flush: the times it
 * took in are pending again. */
static void pending_restore(cs_clone *c)
{
        memcpy(c->pending, c->pending_saved, c->n_pending_saved * sizeof(c->pending[0]));
        c->n_pending = c->n_pending_saved;
}

/* Writes the pending times into the running transaction, keeping a copy
 * that pending_restore puts back if it rolls back. */
static int pending_flush(cs_clone *c)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int r;

        pending_save(c);
        if (c->n_pending == 0)
                return 0;
        r = prep(c, "UPDATE inodes SET mtime = ?, mtime_ns = ?, ctime = ?, ctime_ns = ? WHERE ino = ?", &stmt);
        for (size_t k = 0; r >= 0 && k < c->n_pending; k++) {
                sqlite3_bind_int64(stmt, 1, c->pending[k].mtime.tv_sec);
                sqlite3_bind_int64(stmt, 2, c->pending[k].mtime.tv_nsec);
                sqlite3_bind_int64(stmt, 3, c->pending[k].ctime.tv_sec);
                sqlite3_bind_int64(stmt, 4, c->pending[k].ctime.tv_nsec);
                sqlite3_bind_int64(stmt, 5, (int64_t) c->pending[k].ino);
                r = cs_index_step(stmt);
                sqlite3_reset(stmt);
                /* Committed now, not yet durable. */
                dirty_inode_add(c, c->pending[k].ino, false);
        }
        if (r >= 0)
                c->n_pending = 0;
        return r;
}

/* Binds an inode's attributes as parameters ?1 to ?12, in the column
 * order of the inodes table. */
static void bind_attr(sqlite3_stmt *stmt, const cs_clone_attr *a)
{
        const int64_t values[] = {
                a->mode,          a->uid,          a->gid,           a->nlink,
                (int64_t) a->size, (int64_t) a->rdev, a->atime.tv_sec, a->atime.tv_nsec,
                a->mtime.tv_sec,  a->mtime.tv_nsec, a->ctime.tv_sec,  a->ctime.tv_nsec,
        };

        for (size_t i = 0; i < ELEMENTSOF(values); i++)
                sqlite3_bind_int64(stmt, (int) i + 1, values[i]);
}

static int update_attr(cs_clone *c, const cs_clone_attr *a)
{
        _cleanup_(sqlite3_resetp) sqlite3_stmt *stmt = NULL;
        int r = prep_cached(c, STMT_UPDATE_ATTR,
                     "UPDATE inodes SET mode = ?1, uid = ?2, gid = ?3, nlink = ?4, size = ?5, rdev = ?6, atime = ?7,"
                     " atime_ns = ?8, mtime = ?9, mtime_ns = ?10, ctime = ?11, ctime_ns = ?12 WHERE ino = ?13",
                     &stmt);
        if (r < 0)
                return r;
        /* a holds the pending times, if any (load_inode): they go in now. */
        pending_forget(c, a->ino);
        bind_attr(stmt, a);
        sqlite3_bind_int64(stmt, 13, (int64_t) a->ino);
        return cs_index_step(stmt);
}

static int insert_inode(cs_clone *c, const cs_clone_attr *a, const void *base, size_t base_len, uint64_t base_size,
                        bool local_all, bool materialized, const char *target, size_t target_len, uint64_t *ret_ino)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int r = prep(c,
                     "INSERT INTO inodes(mode, uid, gid, nlink, size, rdev, atime, atime_ns, mtime, mtime_ns, ctime,"
                     " ctime_ns, base, base_size, local_all, materialized, target)"
                     " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                     &stmt);
        if (r < 0)
                return r;
        bind_attr(stmt, a);
        if (base)
                sqlite3_bind_blob(stmt, 13, base, (int) base_len, SQLITE_STATIC);
        else
                sqlite3_bind_null(stmt, 13);
        sqlite3_bind_int64(stmt, 14, (int64_t) base_size);
        sqlite3_bind_int(stmt, 15, local_all);
        sqlite3_bind_int(stmt, 16, materialized);
        if (target)
                sqlite3_bind_blob(stmt, 17, target, (int) target_len, SQLITE_STATIC);
        else
                sqlite3_bind_null(stmt, 17);
        r = cs_index_step(stmt);
        if (r < 0)
                return r;
        *ret_ino = (uint64_t) sqlite3_last_insert_rowid(c->db);
        return 0;
}

static int add_dentry(cs_clone *c, uint64_t parent, const char *name, size_t len, uint64_t ino)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int r = prep(c, "INSERT INTO dentries VALUES(?, ?, ?)", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) parent);
        sqlite3_bind_blob(stmt, 2, name, (int) len, SQLITE_STATIC);
        sqlite3_bind_int64(stmt, 3, (int64_t) ino);
        return cs_index_step(stmt);
}

static int find_dentry(cs_clone *c, uint64_t parent, const char *name, uint64_t *ret_ino)
{
        _cleanup_(sqlite3_resetp) sqlite3_stmt *stmt = NULL;
        int rc, r = prep_cached(c, STMT_FIND_DENTRY, "SELECT ino FROM dentries WHERE parent = ? AND name = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) parent);
        sqlite3_bind_blob(stmt, 2, name, (int) strlen(name), SQLITE_STATIC);
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
                *ret_ino = (uint64_t) sqlite3_column_int64(stmt, 0);
                return 1;
        }
        return rc == SQLITE_DONE ? 0 : cs_sqlite_errno(rc);
}

/* Copies a base directory's entries into the clone (design note 3). */
static int materialize(cs_clone *c, inode *dir)
{
        _cleanup_(cs_dir_freep) cs_dir *d = NULL;
        cs_chunk_id base_dir;
        int r;

        if (dir->materialized || !S_ISDIR(dir->attr.mode))
                return 0;
        if (!dir->base || dir->base_len != CS_CHUNK_ID_SIZE)
                return -EBADMSG;
        memcpy(base_dir.bytes, dir->base, CS_CHUNK_ID_SIZE);
        r = cs_dir_load(c->store, &base_dir, &d);
        if (r < 0)
                return r;
        for (size_t i = 0; i < cs_dir_size(d) && r >= 0; i++) {
                const cs_entry *e = cs_dir_entry(d, i);
                _cleanup_free_ uint8_t *blob = NULL;
                size_t blob_len = 0;
                uint64_t ino = 0;
                int64_t grp_ino = 0;
                cs_clone_attr a = {
                        .mode = e->mode,
                        .uid = e->uid,
                        .gid = e->gid,
                        .nlink = e->nlink ? e->nlink : 1,
                        .size = S_ISREG(e->mode) || S_ISLNK(e->mode) ? e->size : 0,
                        .rdev = e->rdev,
                        .atime = { e->mtime_sec, e->mtime_nsec },
                        .mtime = { e->mtime_sec, e->mtime_nsec },
                        .ctime = { e->ctime_sec, e->ctime_nsec },
                };

                if (S_ISREG(e->mode) && e->link_group) {
                        r = cs_index_query_int(c->db, "SELECT ino FROM base_links WHERE grp = ?",
                                               (int64_t) e->link_group, &grp_ino);
                        if (r < 0)
                                break;
                        if (grp_ino) {
                                r = add_dentry(c, dir->attr.ino, e->name, e->name_len, (uint64_t) grp_ino);
                                continue;
                        }
                }
                if (S_ISREG(e->mode))
                        r = content_blob(c->store, &e->content, &blob, &blob_len);
                if (r >= 0)
                        r = insert_inode(c, &a, S_ISREG(e->mode) ? blob : S_ISDIR(e->mode) ? e->subdir.bytes : NULL,
                                         S_ISREG(e->mode) ? blob_len : S_ISDIR(e->mode) ? CS_CHUNK_ID_SIZE : 0,
                                         S_ISREG(e->mode) ? e->size : 0, false, !S_ISDIR(e->mode),
                                         S_ISLNK(e->mode) ? e->target : NULL, e->size, &ino);
                if (r >= 0)
                        r = add_dentry(c, dir->attr.ino, e->name, e->name_len, ino);
                for (size_t x = 0; r >= 0 && x < e->n_xattrs; x++) {
                        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
                        r = prep(c, "INSERT INTO xattrs VALUES(?, ?, ?)", &stmt);
                        if (r < 0)
                                break;
                        sqlite3_bind_int64(stmt, 1, (int64_t) ino);
                        sqlite3_bind_text(stmt, 2, e->xattrs[x].name, -1, SQLITE_STATIC);
                        sqlite3_bind_blob(stmt, 3, e->xattrs[x].value, (int) e->xattrs[x].size, SQLITE_STATIC);
                        r = cs_index_step(stmt);
                }
                if (r >= 0 && S_ISREG(e->mode) && e->link_group) {
                        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
                        r = prep(c, "INSERT INTO base_links VALUES(?, ?)", &stmt);
                        if (r >= 0) {
                                sqlite3_bind_int64(stmt, 1, (int64_t) e->link_group);
                                sqlite3_bind_int64(stmt, 2, (int64_t) ino);
                                r = cs_index_step(stmt);
                        }
                }
        }
        if (r >= 0) {
                char sql[96];
                snprintf(sql, sizeof(sql), "UPDATE inodes SET materialized = 1 WHERE ino = %" PRIu64, dir->attr.ino);
                r = cs_index_exec(c->db, sql);
        }
        if (r >= 0)
                dir->materialized = true;
        return r;
}

/* Loads a directory inode, materialized.  Runs inside a transaction. */
static int load_dir(cs_clone *c, uint64_t ino, inode *ret)
{
        int r = load_inode(c, ino, ret);
        if (r < 0)
                return r;
        if (!S_ISDIR(ret->attr.mode)) {
                inode_clear(ret);
                return -ENOTDIR;
        }
        r = materialize(c, ret);
        if (r < 0)
                inode_clear(ret);
        return r;
}

/* Every operation runs as one transaction under the clone's mutex. */
/* Under the mutex: starts the operation's transaction, which takes the
 * pending times in with it. */
static int begin_locked(cs_clone *c)
{
        int r = cs_index_begin(c->db);
        if (r >= 0) {
                r = pending_flush(c);
                if (r < 0) {
                        cs_index_rollback(c->db);
                        pending_restore(c);
                }
        }
        c->op_attrs_only = false;
        c->op_ino = 0;
        /* After the pending times, which attr_dirty already covers. */
        c->op_changes_from = sqlite3_total_changes64(c->db);
        return r;
}

static int begin(cs_clone *c)
{
        pthread_mutex_lock(&c->lock);
        int r = begin_locked(c);
        if (r < 0)
                pthread_mutex_unlock(&c->lock);
        return r;
}

/* Remembers that ino's rows changed since the last synchronous commit
 * (meta: more than its times), falling back to the clone-wide flags when
 * the table is full. */
static void dirty_inode_add(cs_clone *c, uint64_t ino, bool meta)
{
        size_t k;

        for (k = 0; k < c->n_dirty_inodes && c->dirty_inodes[k].ino != ino; k++)
                ;
        if (k == DIRTY_INODES) {
                if (meta)
                        c->meta_dirty = true;
                else
                        c->attr_dirty = true;
                return;
        }
        if (k == c->n_dirty_inodes) {
                c->n_dirty_inodes++;
                c->dirty_inodes[k].ino = ino;
                c->dirty_inodes[k].meta = false;
        }
        c->dirty_inodes[k].meta |= meta;
}

/* Whether an fsync of ino (fdatasync: datasync) needs a synchronous
 * commit for rows already committed. */
static bool needs_sync_commit(const cs_clone *c, uint64_t ino, bool datasync)
{
        if (c->meta_dirty || (!datasync && c->attr_dirty))
                return true;
        for (size_t k = 0; k < c->n_dirty_inodes; k++)
                if (c->dirty_inodes[k].ino == ino)
                        return c->dirty_inodes[k].meta || !datasync;
        return false;
}

static int end(cs_clone *c, int r)
{
        if (r >= 0) {
                bool changed = sqlite3_total_changes64(c->db) != c->op_changes_from;
                int k = cs_index_commit(c->db);
                if (k < 0) {
                        r = k;
                        pending_restore(c);
                }
                else if (!changed)
                        ; /* nothing to make durable */
                else if (c->op_ino)
                        dirty_inode_add(c, c->op_ino, !c->op_attrs_only);
                else if (c->op_attrs_only)
                        c->attr_dirty = true;
                else
                        c->meta_dirty = true;
        } else {
                cs_index_rollback(c->db);
                pending_restore(c);
        }
        pthread_mutex_unlock(&c->lock);
        return r;
}

int cs_clone_getattr(cs_clone *c, uint64_t ino, cs_clone_attr *ret)
{
        inode i;
        int r;

        pthread_mutex_lock(&c->lock);
        r = load_inode(c, ino, &i);
        pthread_mutex_unlock(&c->lock);
        if (r < 0)
                return r;
        inode_stat(c, &i, ret);
        inode_clear(&i);
        return 0;
}

int cs_clone_lookup(cs_clone *c, uint64_t parent, const char *name, cs_clone_attr *ret)
{
        inode dir, child;
        uint64_t ino;
        int r;

        if (strlen(name) > CS_NAME_MAX)
                return -ENAMETOOLONG;
        r = begin(c);
        if (r < 0)
                return r;
        r = load_dir(c, parent, &dir);
        if (r >= 0) {
                inode_clear(&dir);
                r = find_dentry(c, parent, name, &ino);
                if (r == 0)
                        r = -ENOENT;
        }
        if (r >= 0) {
                r = load_inode(c, ino, &child);
                if (r >= 0) {
                        inode_stat(c, &child, ret);
                        inode_clear(&child);
                }
        }
        return end(c, r);
}

int cs_clone_readdir(cs_clone *c, uint64_t ino, uint64_t offset, cs_clone_dirent_fn fn, void *userdata)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        inode dir;
        uint64_t index = 0;
        int rc = SQLITE_DONE, r;

        r = begin(c);
        if (r < 0)
                return r;
        r = load_dir(c, ino, &dir);
        if (r >= 0) {
                inode_clear(&dir);
                r = prep(c,
                         "SELECT d.name, d.ino, i.mode FROM dentries d JOIN inodes i ON i.ino = d.ino"
                         " WHERE d.parent = ? ORDER BY d.name LIMIT -1 OFFSET ?",
                         &stmt);
        }
        if (r >= 0) {
                sqlite3_bind_int64(stmt, 1, (int64_t) ino);
                sqlite3_bind_int64(stmt, 2, (int64_t) offset);
                index = offset;
                while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                        uint64_t child = (uint64_t) sqlite3_column_int64(stmt, 1);
                        if (!fn(userdata, sqlite3_column_blob(stmt, 0), (size_t) sqlite3_column_bytes(stmt, 0),
                                mix64(c->key ^ child) | 2, (uint32_t) sqlite3_column_int64(stmt, 2), ++index))
                                break;
                }
                if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                        r = cs_sqlite_errno(rc);
        }
        sqlite3_finalize(TAKE_PTR(stmt));
        return end(c, r);
}

/* The target of a symlink (clone mutex held). */
static int readlink_locked(cs_clone *c, uint64_t ino, char *buf, size_t size)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        r = prep(c, "SELECT target FROM inodes WHERE ino = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) ino);
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW && sqlite3_column_type(stmt, 0) == SQLITE_BLOB) {
                size_t len = (size_t) sqlite3_column_bytes(stmt, 0);
                if (len + 1 > size)
                        return -ENAMETOOLONG;
                memcpy(buf, sqlite3_column_blob(stmt, 0), len);
                buf[len] = 0;
                return 0;
        }
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? -EINVAL : cs_sqlite_errno(rc);
}

int cs_clone_readlink(cs_clone *c, uint64_t ino, char *buf, size_t size)
{
        int r;

        pthread_mutex_lock(&c->lock);
        r = readlink_locked(c, ino, buf, size);
        pthread_mutex_unlock(&c->lock);
        return r;
}

/* --- POSIX ACL inheritance ---------------------------------------------------
 *
 * A new node in a directory with a default ACL gets that ACL as its access
 * ACL, its permissions cut by the mode it was created with (as
 * posix_acl_create() does), and, if it is a directory, the default ACL
 * too; without one, the umask applies.  The xattr format is the kernel's:
 * le32 version 2, then per entry le16 tag, le16 permissions, le32 id.
 */

#define ACL_DEFAULT_XATTR "system.posix_acl_default"
#define ACL_ACCESS_XATTR "system.posix_acl_access"
enum { ACL_USER_OBJ = 1, ACL_USER = 2, ACL_GROUP_OBJ = 4, ACL_GROUP = 8, ACL_MASK = 0x10, ACL_OTHER = 0x20 };

static int put_xattr(cs_clone *c, uint64_t ino, const char *name, const void *value, size_t size)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int r = prep(c, "INSERT OR REPLACE INTO xattrs VALUES(?, ?, ?)", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) ino);
        sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_blob(stmt, 3, value, (int) size, SQLITE_STATIC);
        return cs_index_step(stmt);
}

/* 1 if inode ino had xattr name, now removed, 0 if it had none. */
static int delete_xattr(cs_clone *c, uint64_t ino, const char *name)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int r = prep(c, "DELETE FROM xattrs WHERE ino = ? AND name = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) ino);
        sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
        r = cs_index_step(stmt);
        return r < 0 ? r : sqlite3_changes(c->db) > 0;
}

/* The value of xattr name of inode ino: 1 and a malloc()ed copy in *ret,
 * or 0 if it has none. */
static int load_xattr(cs_clone *c, uint64_t ino, const char *name, uint8_t **ret, size_t *ret_size)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        *ret = NULL;
        *ret_size = 0;
        r = prep(c, "SELECT value FROM xattrs WHERE ino = ? AND name = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) ino);
        sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE)
                return 0;
        if (rc != SQLITE_ROW)
                return cs_sqlite_errno(rc);
        *ret_size = (size_t) sqlite3_column_bytes(stmt, 0);
        *ret = malloc(MAX(*ret_size, 1u));
        if (!*ret)
                return -ENOMEM;
        memcpy(*ret, sqlite3_column_blob(stmt, 0), *ret_size);
        return 1;
}

/* The entries of an ACL that the mode mirrors, pointing into it. */
typedef struct acl_perms {
        uint16_t *user, *group, *mask, *other; /* little-endian */
        bool extended; /* it names users or groups */
} acl_perms;

static int acl_parse(uint8_t *acl, size_t size, acl_perms *ret)
{
        uint32_t version;

        *ret = (acl_perms) {};
        if (size < 4 || (size - 4) % 8)
                return -EBADMSG;
        memcpy(&version, acl, 4);
        if (le32toh(version) != 2)
                return -EBADMSG;
        for (size_t i = 0; i < (size - 4) / 8; i++) {
                uint16_t *tag = (uint16_t *) (void *) (acl + 4 + 8 * i), *perm = tag + 1;
                switch (le16toh(*tag)) {
                case ACL_USER_OBJ:
                        ret->user = perm;
                        break;
                case ACL_GROUP_OBJ:
                        ret->group = perm;
                        break;
                case ACL_MASK:
                        ret->mask = perm;
                        break;
                case ACL_OTHER:
                        ret->other = perm;
                        break;
                default:
                        ret->extended = true;
                }
        }
        return ret->user && ret->group && ret->other ? 0 : -EBADMSG;
}

/* The group class of the mode mirrors the mask when there is one. */
static uint16_t *acl_group_class(const acl_perms *p)
{
        return p->mask ? p->mask : p->group;
}

static uint32_t acl_mode_bits(const acl_perms *p)
{
        return (uint32_t) (le16toh(*p->user) & 7) << 6 | (uint32_t) (le16toh(*acl_group_class(p)) & 7) << 3 |
               (le16toh(*p->other) & 7);
}

/* What chmod does to an access ACL: its owner, group class and other
 * entries take the new mode's bits (as posix_acl_chmod() does). */
static void acl_chmod(const acl_perms *p, uint32_t mode)
{
        *p->user = htole16((uint16_t) ((mode >> 6) & 7));
        *acl_group_class(p) = htole16((uint16_t) ((mode >> 3) & 7));
        *p->other = htole16((uint16_t) (mode & 7));
}

/* A copy of an ACL to edit, in *ret, and its entries, pointing into it. */
static int acl_copy(const void *value, size_t size, uint8_t **ret, acl_perms *ret_perms)
{
        _cleanup_free_ uint8_t *acl = malloc(MAX(size, 1u));
        int r;

        if (!acl)
                return -ENOMEM;
        memcpy(acl, value, size);
        r = acl_parse(acl, size, ret_perms);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(acl);
        return 0;
}

/* Computes the new node's mode and, through ret_acl, its access ACL
 * (NULL when the mode says everything). */
static int inherit_acl(const uint8_t *def, size_t size, uint32_t *mode, uint8_t **ret_acl)
{
        _cleanup_free_ uint8_t *acl = NULL;
        acl_perms p;
        int r;

        *ret_acl = NULL;
        r = acl_copy(def, size, &acl, &p);
        if (r < 0)
                return r;
        /* Each class keeps what both the default ACL and the mode grant. */
        acl_chmod(&p, acl_mode_bits(&p) & *mode);
        *mode = (*mode & ~0777u) | acl_mode_bits(&p);
        if (p.extended || p.mask)
                *ret_acl = TAKE_PTR(acl);
        return 0;
}

/* Parent's mtime and ctime move when its entries change. */
static int touch_dir(cs_clone *c, inode *dir, int nlink_delta)
{
        struct timespec t;
        now(&t);
        dir->attr.mtime = dir->attr.ctime = t;
        dir->attr.nlink = (uint32_t) ((int) dir->attr.nlink + nlink_delta);
        return update_attr(c, &dir->attr);
}

int cs_clone_create_node(cs_clone *c, uint64_t parent, const char *name, uint32_t mode, uint64_t rdev, uint32_t uid,
                         uint32_t gid, uint32_t umask, const char *target, cs_clone_attr *ret)
{
        _cleanup_free_ uint8_t *def = NULL, *access = NULL;
        size_t def_size = 0;
        inode dir, made;
        uint64_t existing, ino;
        struct timespec t;
        int r;

        if (strlen(name) > CS_NAME_MAX)
                return -ENAMETOOLONG;
        r = begin(c);
        if (r < 0)
                return r;
        r = load_dir(c, parent, &dir);
        if (r < 0)
                return end(c, r);
        r = find_dentry(c, parent, name, &existing);
        if (r > 0)
                r = -EEXIST;
        if (r >= 0 && !S_ISLNK(mode))
                r = load_xattr(c, parent, ACL_DEFAULT_XATTR, &def, &def_size);
        if (r > 0)
                r = inherit_acl(def, def_size, &mode, &access);
        else if (r == 0 && !S_ISLNK(mode))
                mode &= ~(umask & 0777);
        if (r >= 0) {
                /* setgid directories hand their group (and, to directories,
                 * the bit itself) to what is made in them. */
                if (dir.attr.mode & S_ISGID) {
                        gid = dir.attr.gid;
                        if (S_ISDIR(mode))
                                mode |= S_ISGID;
                }
                now(&t);
                cs_clone_attr a = {
                        .mode = mode,
                        .uid = uid,
                        .gid = gid,
                        .nlink = S_ISDIR(mode) ? 2 : 1,
                        .size = target ? strlen(target) : 0,
                        .rdev = rdev,
                        .atime = t,
                        .mtime = t,
                        .ctime = t,
                };
                r = insert_inode(c, &a, NULL, 0, 0, S_ISREG(mode), true, target, target ? strlen(target) : 0, &ino);
        }
        if (r >= 0)
                r = add_dentry(c, parent, name, strlen(name), ino);
        if (r >= 0 && access)
                r = put_xattr(c, ino, ACL_ACCESS_XATTR, access, def_size);
        if (r >= 0 && def && S_ISDIR(mode))
                r = put_xattr(c, ino, ACL_DEFAULT_XATTR, def, def_size);
        if (r >= 0)
                r = touch_dir(c, &dir, S_ISDIR(mode) ? 1 : 0);
        if (r >= 0)
                r = load_inode(c, ino, &made);
        if (r >= 0) {
                inode_stat(c, &made, ret);
                inode_clear(&made);
        }
        inode_clear(&dir);
        return end(c, r);
}

int cs_clone_link(cs_clone *c, uint64_t ino, uint64_t parent, const char *name, cs_clone_attr *ret)
{
        inode dir, target;
        uint64_t existing;
        struct timespec t;
        int r;

        if (strlen(name) > CS_NAME_MAX)
                return -ENAMETOOLONG;
        r = begin(c);
        if (r < 0)
                return r;
        r = load_dir(c, parent, &dir);
        if (r < 0)
                return end(c, r);
        r = load_inode(c, ino, &target);
        if (r >= 0 && S_ISDIR(target.attr.mode))
                r = -EPERM;
        if (r >= 0) {
                r = find_dentry(c, parent, name, &existing);
                if (r > 0)
                        r = -EEXIST;
        }
        if (r >= 0)
                r = add_dentry(c, parent, name, strlen(name), ino);
        if (r >= 0) {
                now(&t);
                target.attr.nlink++;
                target.attr.ctime = t;
                r = update_attr(c, &target.attr);
        }
        if (r >= 0)
                r = touch_dir(c, &dir, 0);
        if (r >= 0)
                inode_stat(c, &target, ret);
        inode_clear(&target);
        inode_clear(&dir);
        return end(c, r);
}

static int remove_dentry(cs_clone *c, uint64_t parent, const char *name)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int r = prep(c, "DELETE FROM dentries WHERE parent = ? AND name = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) parent);
        sqlite3_bind_blob(stmt, 2, name, (int) strlen(name), SQLITE_STATIC);
        return cs_index_step(stmt);
}

/* An inode nobody names and nobody has open is deleted with its data. */
static int drop_if_unused(cs_clone *c, const inode *i, bool open)
{
        char sql[256], path[32];

        if (i->attr.nlink > 0 || open)
                return 0;
        snprintf(sql, sizeof(sql),
                 "DELETE FROM xattrs WHERE ino = %1$" PRIu64 "; DELETE FROM pages WHERE ino = %1$" PRIu64
                 "; DELETE FROM inodes WHERE ino = %1$" PRIu64 "; DELETE FROM base_links WHERE ino = %1$" PRIu64,
                 i->attr.ino);
        snprintf(path, sizeof(path), "%" PRIx64, i->attr.ino);
        cs_fd_cache_drop(&c->fds, i->attr.ino);
        pending_forget(c, i->attr.ino);
        (void) unlinkat(c->data_fd, path, 0);
        return cs_index_exec(c->db, sql);
}

int cs_clone_unlink(cs_clone *c, uint64_t parent, const char *name, bool dir_expected, bool child_open,
                    uint64_t *ret_ino)
{
        inode dir, child;
        uint64_t ino;
        int64_t entries = 0;
        struct timespec t;
        int r;

        r = begin(c);
        if (r < 0)
                return r;
        r = load_dir(c, parent, &dir);
        if (r < 0)
                return end(c, r);
        r = find_dentry(c, parent, name, &ino);
        if (r == 0)
                r = -ENOENT;
        if (r >= 0)
                r = load_inode(c, ino, &child);
        if (r < 0) {
                inode_clear(&dir);
                return end(c, r);
        }
        if (dir_expected && !S_ISDIR(child.attr.mode))
                r = -ENOTDIR;
        else if (!dir_expected && S_ISDIR(child.attr.mode))
                r = -EISDIR;
        if (r >= 0 && dir_expected) {
                r = materialize(c, &child);
                if (r >= 0)
                        r = cs_index_query_int(c->db, "SELECT COUNT(*) FROM dentries WHERE parent = ?", (int64_t) ino,
                                               &entries);
                if (r >= 0 && entries > 0)
                        r = -ENOTEMPTY;
        }
        if (r >= 0)
                r = remove_dentry(c, parent, name);
        if (r >= 0) {
                now(&t);
                child.attr.nlink = dir_expected ? 0 : child.attr.nlink - 1;
                child.attr.ctime = t;
                r = update_attr(c, &child.attr);
        }
        if (r >= 0)
                r = touch_dir(c, &dir, dir_expected ? -1 : 0);
        if (r >= 0)
                r = drop_if_unused(c, &child, child_open);
        if (r >= 0 && ret_ino)
                *ret_ino = ino;
        inode_clear(&child);
        inode_clear(&dir);
        return end(c, r);
}

/* 1 if ancestor is dir or one of its parents (moving a directory into
 * its own subtree must fail). */
static int is_ancestor(cs_clone *c, uint64_t ancestor, uint64_t dir)
{
        for (int depth = 0; depth < 100000; depth++) {
                int64_t parent = 0;
                int r;
                if (dir == ancestor)
                        return 1;
                if (dir == CS_CLONE_ROOT)
                        return 0;
                r = cs_index_query_int(c->db, "SELECT parent FROM dentries WHERE ino = ? LIMIT 1", (int64_t) dir, &parent);
                if (r < 0)
                        return r;
                if (parent == 0)
                        return 0;
                dir = (uint64_t) parent;
        }
        return -ELOOP;
}

int cs_clone_rename(cs_clone *c, uint64_t parent, const char *name, uint64_t new_parent, const char *new_name,
                    unsigned flags, bool replaced_open, uint64_t *ret_replaced)
{
        inode from_dir, to_dir, moved, old = {};
        uint64_t ino, old_ino = 0;
        bool have_old = false, from_loaded = false, to_loaded = false;
        struct timespec t;
        int r;

        if (strlen(new_name) > CS_NAME_MAX)
                return -ENAMETOOLONG;
        if (flags & ~(CS_RENAME_NOREPLACE | CS_RENAME_EXCHANGE))
                return -EINVAL;
        r = begin(c);
        if (r < 0)
                return r;
        r = load_dir(c, parent, &from_dir);
        from_loaded = r >= 0;
        if (r >= 0) {
                r = load_dir(c, new_parent, &to_dir);
                to_loaded = r >= 0;
        }
        if (r >= 0) {
                r = find_dentry(c, parent, name, &ino);
                if (r == 0)
                        r = -ENOENT;
        }
        if (r >= 0)
                r = load_inode(c, ino, &moved);
        if (r < 0)
                goto out_dirs;
        r = find_dentry(c, new_parent, new_name, &old_ino);
        if (r > 0) {
                have_old = true;
                r = load_inode(c, old_ino, &old);
        }
        if (r < 0)
                goto out_moved;
        if (old_ino == ino) {
                r = 0; /* rename onto itself (or another link of itself): nothing happens */
                goto out_old;
        }
        if ((flags & CS_RENAME_NOREPLACE) && have_old) {
                r = -EEXIST;
                goto out_old;
        }
        if ((flags & CS_RENAME_EXCHANGE) && !have_old) {
                r = -ENOENT;
                goto out_old;
        }
        if (S_ISDIR(moved.attr.mode) && parent != new_parent) {
                r = is_ancestor(c, ino, new_parent);
                if (r > 0)
                        r = -EINVAL;
                if (r < 0)
                        goto out_old;
        }
        if (have_old && !(flags & CS_RENAME_EXCHANGE)) {
                if (S_ISDIR(moved.attr.mode) && !S_ISDIR(old.attr.mode))
                        r = -ENOTDIR;
                else if (!S_ISDIR(moved.attr.mode) && S_ISDIR(old.attr.mode))
                        r = -EISDIR;
                else if (S_ISDIR(old.attr.mode)) {
                        int64_t entries = 0;
                        r = materialize(c, &old);
                        if (r >= 0)
                                r = cs_index_query_int(c->db, "SELECT COUNT(*) FROM dentries WHERE parent = ?",
                                                       (int64_t) old_ino, &entries);
                        if (r >= 0 && entries)
                                r = -ENOTEMPTY;
                }
                if (r < 0)
                        goto out_old;
        }
        if (have_old && (flags & CS_RENAME_EXCHANGE) && S_ISDIR(old.attr.mode) && parent != new_parent) {
                r = is_ancestor(c, old_ino, parent);
                if (r > 0)
                        r = -EINVAL;
                if (r < 0)
                        goto out_old;
        }

        now(&t);
        r = remove_dentry(c, parent, name);
        if (r >= 0 && have_old)
                r = remove_dentry(c, new_parent, new_name);
        if (r >= 0)
                r = add_dentry(c, new_parent, new_name, strlen(new_name), ino);
        if (r >= 0 && (flags & CS_RENAME_EXCHANGE))
                r = add_dentry(c, parent, name, strlen(name), old_ino);
        if (r < 0)
                goto out_old;
        moved.attr.ctime = t;
        r = update_attr(c, &moved.attr);
        if (r >= 0 && have_old) {
                old.attr.ctime = t;
                if (!(flags & CS_RENAME_EXCHANGE))
                        old.attr.nlink = S_ISDIR(old.attr.mode) ? 0 : old.attr.nlink - 1;
                r = update_attr(c, &old.attr);
                if (r >= 0 && !(flags & CS_RENAME_EXCHANGE)) {
                        r = drop_if_unused(c, &old, replaced_open);
                        if (ret_replaced)
                                *ret_replaced = old_ino;
                }
        }
        /* Directory link counts: ".." moves with a directory. */
        if (r >= 0) {
                int from_delta = 0, to_delta = 0;
                if (parent != new_parent) {
                        if (S_ISDIR(moved.attr.mode)) {
                                from_delta--;
                                to_delta++;
                        }
                        if (have_old && (flags & CS_RENAME_EXCHANGE) && S_ISDIR(old.attr.mode)) {
                                from_delta++;
                                to_delta--;
                        }
                }
                if (have_old && !(flags & CS_RENAME_EXCHANGE) && S_ISDIR(old.attr.mode))
                        to_delta--;
                if (parent == new_parent) {
                        r = touch_dir(c, &from_dir, from_delta + to_delta);
                } else {
                        r = touch_dir(c, &from_dir, from_delta);
                        if (r >= 0)
                                r = touch_dir(c, &to_dir, to_delta);
                }
        }
out_old:
        if (have_old)
                inode_clear(&old);
out_moved:
        inode_clear(&moved);
out_dirs:
        if (from_loaded)
                inode_clear(&from_dir);
        if (to_loaded)
                inode_clear(&to_dir);
        return end(c, r);
}

/* --- File data -------------------------------------------------------------- */

/* The pages of a block that [from, to) (offsets in the block) touches. */
static uint64_t pages_mask(const cs_clone *c, uint64_t from, uint64_t to)
{
        uint64_t first = from / c->page_size, n = (to - 1) / c->page_size - first + 1;

        return (n >= 64 ? UINT64_MAX : (UINT64_C(1) << n) - 1) << first;
}

/* Which pages of block k of inode i are local (design note 1). */
static int block_local_mask(cs_clone *c, const inode *i, uint64_t k, uint64_t *ret)
{
        _cleanup_(sqlite3_resetp) sqlite3_stmt *stmt = NULL;
        int rc, r;

        *ret = 0;
        if (i->local_all) {
                *ret = UINT64_MAX;
                return 0;
        }
        r = prep_cached(c, STMT_BLOCK_IS_LOCAL, "SELECT mask FROM pages WHERE ino = ? AND block = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) i->attr.ino);
        sqlite3_bind_int64(stmt, 2, (int64_t) k);
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW)
                *ret = (uint64_t) sqlite3_column_int64(stmt, 0);
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : cs_sqlite_errno(rc);
}

/* The delta file of ino: borrowed from the fd cache, valid under the lock
 * until the next open_data. */
static int open_data(cs_clone *c, uint64_t ino, bool create)
{
        bool created = false;
        int fd = cs_fd_cache_get(&c->fds, c->data_fd, ino, create, &created);

        if (created)
                c->dir_dirty = true;
        return fd;
}

/* The id of base block k of inode i (under the mutex), through the id
 * cache: a miss loads the ids of the run of blocks around k at once, so a
 * segmented file's segment is read once per run, not once per block. */
static int base_block_id(cs_clone *c, const inode *i, uint64_t k, cs_chunk_id *ret)
{
        cs_chunk_id run[CS_ID_CACHE_RUN];
        cs_content content;
        uint64_t first = k - k % CS_ID_CACHE_RUN, n_blocks = DIV_ROUND_UP(i->base_size, c->block_size);
        size_t n = (size_t) MIN((uint64_t) CS_ID_CACHE_RUN, n_blocks - first);
        int r;

        if (cs_id_cache_find(&c->ids, i->attr.ino, k, ret))
                return 0;
        r = content_from_blob(i->base, i->base_len, &content);
        if (r >= 0)
                r = cs_content_blocks(c->store, &content, first, n, run);
        if (r < 0)
                return r;
        for (size_t x = 0; x < n; x++)
                cs_id_cache_store(&c->ids, i->attr.ino, first + x, &run[x]);
        *ret = run[k - first];
        return 0;
}

/* Copies [pos, pos + take) of base block k into dst, through the base
 * block cache.  Called and returns under the mutex.  Unless keep_lock, it
 * drops the mutex while the chunk is read and decoded, so other readers
 * and writers of the clone (and the disk) keep going: base content never
 * changes under an inode number, so nothing it read can go stale
 * meanwhile.  A whole block (in == 0, take == block size) is decoded
 * straight into dst; anything less goes through *scratch (allocated on
 * first use, the caller frees it). */
static int read_base(cs_clone *c, const inode *i, uint64_t k, uint64_t pos, size_t take, uint8_t *dst,
                     uint8_t **scratch, bool keep_lock)
{
        uint64_t start = k * c->block_size, in = pos - start;
        const uint8_t *block = cs_block_cache_find(&c->blocks, i->attr.ino, k);
        uint64_t epoch = c->cache_epoch;
        cs_chunk_id id;
        int r;

        if (!block) {
                uint8_t *into = dst;
                if (in != 0 || take != c->block_size) {
                        if (!*scratch && !(*scratch = malloc(c->block_size)))
                                return -ENOMEM;
                        into = *scratch;
                }
                r = base_block_id(c, i, k, &id);
                if (r < 0)
                        return r;
                memset(into, 0, c->block_size);
                if (!cs_chunk_id_is_zero(&id)) {
                        if (!keep_lock)
                                pthread_mutex_unlock(&c->lock);
                        r = cs_store_get(c->store, &id, into, c->block_size);
                        if (!keep_lock)
                                pthread_mutex_lock(&c->lock);
                        if (r < 0)
                                return r;
                }
                /* After a reset meanwhile, ino may name another file. */
                if (epoch == c->cache_epoch)
                        cs_block_cache_store(&c->blocks, i->attr.ino, k, into);
                block = into;
        }
        /* Base bytes past a truncation are gone. */
        size_t keep = i->base_size > pos ? (size_t) MIN((uint64_t) take, i->base_size - pos) : 0;
        if (block != dst)
                memcpy(dst, block + in, keep);
        memset(dst + keep, 0, take - keep);
        return 0;
}

/* Reads [pos, pos + n) from the delta file; past its end, or with no
 * delta file at all, zeros. */
static int read_local(cs_clone *c, uint64_t ino, uint8_t *dst, size_t n, uint64_t pos)
{
        /* Looked up here, under the mutex: a read_base before may have let
         * go of it, and the fd cache closed what it lent out then. */
        int fd = open_data(c, ino, false);
        ssize_t got = fd == -ENOENT ? 0 : fd < 0 ? fd : pread(fd, dst, n, (off_t) pos);

        if (got < 0)
                return fd < 0 ? fd : negative_errno();
        memset(dst + got, 0, n - (size_t) got);
        return 0;
}

/* Copies [pos, pos + take), within block k whose local pages are mask,
 * into dst as the clone sees it: each run of local pages from the delta
 * file, each run of the others from the base (or zeros past it).  With
 * keep_lock (a copy-up, the fold: callers that hold the clone still) the
 * mutex is held throughout and read_base decodes into c->scratch. */
static int read_range(cs_clone *c, const inode *i, uint64_t k, uint64_t mask, uint64_t pos, size_t take,
                      uint8_t *dst, uint8_t **scratch, bool keep_lock)
{
        uint64_t start = k * c->block_size, epoch = c->cache_epoch;
        int r = 0;

        while (r >= 0 && take > 0) {
                uint64_t in = pos - start, page = in / c->page_size, run_end = (page + 1) * c->page_size;
                bool local = (mask >> page) & 1;

                while (run_end < in + take && ((mask >> (run_end / c->page_size)) & 1) == local)
                        run_end += c->page_size;
                size_t n = (size_t) MIN((uint64_t) take, run_end - in);
                if (local) {
                        r = read_local(c, i->attr.ino, dst, n, pos);
                } else if (pos < i->base_size && i->base) {
                        r = read_base(c, i, k, pos, n, dst, scratch, keep_lock);
                        /* A forced reset while read_base let go of the
                         * mutex: the handle is stale, as after one. */
                        if (r >= 0 && epoch != c->cache_epoch)
                                r = -ENOENT;
                } else {
                        memset(dst, 0, n);
                }
                pos += n;
                dst += n;
                take -= n;
        }
        return r;
}

/* Fills buf (one block) with block k as the clone sees it. */
static int read_block(cs_clone *c, const inode *i, uint64_t k, uint8_t *buf)
{
        uint64_t mask;
        int r = block_local_mask(c, i, k, &mask);

        return r < 0 ? r : read_range(c, i, k, mask, k * c->block_size, c->block_size, buf, &c->scratch, true);
}

ssize_t cs_clone_read(cs_clone *c, uint64_t ino, void *buf, size_t size, uint64_t offset)
{
        _cleanup_free_ uint8_t *scratch = NULL;
        inode i;
        size_t done = 0;
        int r;

        r = lock_inode(c, ino, &i);
        if (r < 0)
                return r;
        if (offset < i.attr.size)
                size = (size_t) MIN((uint64_t) size, i.attr.size - offset);
        else
                size = 0;
        while (r >= 0 && done < size) {
                uint64_t pos = offset + done, k = pos / c->block_size, mask;
                size_t take = MIN(size - done, (size_t) (c->block_size - pos % c->block_size));

                r = block_local_mask(c, &i, k, &mask);
                if (r >= 0)
                        r = read_range(c, &i, k, mask, pos, take, (uint8_t *) buf + done, &scratch, false);
                done += take;
        }
        inode_clear(&i);
        pthread_mutex_unlock(&c->lock);
        return r < 0 ? r : (ssize_t) size;
}

/* Records block k's local pages as mask, a superset of what they were. */
static int mark_local(cs_clone *c, uint64_t ino, uint64_t k, uint64_t mask)
{
        _cleanup_(sqlite3_resetp) sqlite3_stmt *stmt = NULL;
        int r = prep_cached(c, STMT_MARK_LOCAL, "INSERT OR REPLACE INTO pages(ino, block, mask) VALUES(?, ?, ?)",
                            &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) ino);
        sqlite3_bind_int64(stmt, 2, (int64_t) k);
        sqlite3_bind_int64(stmt, 3, (int64_t) mask);
        r = cs_index_step(stmt);
        /* This changes where data lives. */
        if (r >= 0)
                c->op_attrs_only = false;
        return r;
}

static int write_all(int fd, const void *buf, size_t size, uint64_t offset)
{
        for (size_t done = 0; done < size;) {
                ssize_t n = pwrite(fd, (const uint8_t *) buf + done, size - done, (off_t) (offset + done));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                done += (size_t) n;
        }
        return 0;
}

/* Copies the pages of block k in `copy` up into the delta file, a run of
 * adjacent ones at a time. */
static int copy_pages_up(cs_clone *c, const inode *i, int fd, uint64_t k, uint64_t mask, uint64_t copy)
{
        uint64_t pages = c->block_size / c->page_size;
        int r = 0;

        for (uint64_t p = 0; r >= 0 && p < pages; p++) {
                if (!((copy >> p) & 1))
                        continue;
                uint64_t n = 1;
                while (p + n < pages && ((copy >> (p + n)) & 1))
                        n++;
                uint64_t pos = k * c->block_size + p * c->page_size;
                size_t len = (size_t) (n * c->page_size);
                r = read_range(c, i, k, mask, pos, len, c->buf, &c->scratch, true);
                if (r >= 0)
                        r = write_all(fd, c->buf, len, pos);
                p += n - 1;
        }
        return r;
}

/* Makes the pages of block k that [from, to) (offsets in the block)
 * touches local, or with whole_block all its pages, before the caller
 * overwrites or punches [from, to) (design note 4): pages the range
 * covers whole need no old content; the others are copied up first. */
static int make_range_local(cs_clone *c, const inode *i, int fd, uint64_t k, uint64_t from, uint64_t to,
                            bool whole_block)
{
        uint64_t mask, full = pages_mask(c, 0, c->block_size);
        uint64_t want = whole_block ? full : pages_mask(c, from, to);
        uint64_t covered = 0;
        int r = block_local_mask(c, i, k, &mask);

        if (r < 0 || (mask & want) == want)
                return r;
        /* The pages inside [from, to): from rounded up, to rounded down. */
        uint64_t cover_from = DIV_ROUND_UP(from, c->page_size), cover_to = to / c->page_size;
        if (cover_to > cover_from)
                covered = pages_mask(c, cover_from * c->page_size, cover_to * c->page_size);
        r = copy_pages_up(c, i, fd, k, mask, want & ~mask & ~covered);
        return r < 0 ? r : mark_local(c, i->attr.ino, k, mask | want);
}

/* Whether a write at offset continues the last write to ino. */
static bool stream_continues(const cs_clone *c, uint64_t ino, uint64_t offset)
{
        for (size_t k = 0; k < STREAMS; k++)
                if (c->streams[k].ino == ino)
                        return c->streams[k].end == offset;
        return false;
}

static void stream_note(cs_clone *c, uint64_t ino, uint64_t end)
{
        size_t k;

        for (k = 0; k < STREAMS && c->streams[k].ino != ino; k++)
                ;
        if (k == STREAMS) {
                k = c->next_stream;
                c->next_stream = (c->next_stream + 1) % STREAMS;
        }
        c->streams[k].ino = ino;
        c->streams[k].end = end;
}

/* Records new times of ino outside the catalog, making room by writing
 * the pending ones when the table is full. */
static int pending_set(cs_clone *c, uint64_t ino, const struct timespec *t)
{
        pending_times *p = pending_find(c, ino);
        int r;

        if (!p && c->n_pending == PENDING_TIMES) {
                r = cs_index_begin(c->db);
                if (r < 0)
                        return r;
                r = pending_flush(c);
                r = r >= 0 ? cs_index_commit(c->db) : (cs_index_rollback(c->db), r);
                if (r < 0) {
                        pending_restore(c);
                        return r;
                }
        }
        if (!p) {
                p = &c->pending[c->n_pending++];
                p->ino = ino;
        }
        p->mtime = p->ctime = *t;
        return 0;
}

/* An overwrite of blocks that are already local, within the file's size,
 * changes data and times only: it needs no transaction, and its times
 * wait in c->pending.  Under the mutex.  -EAGAIN: not such a write. */
static int write_in_place(cs_clone *c, const inode *i, const void *buf, size_t size, uint64_t offset)
{
        struct timespec t;
        int fd, r = 0;

        if (size == 0 || !S_ISREG(i->attr.mode) || offset + size > i->attr.size)
                return -EAGAIN;
        for (uint64_t k = offset / c->block_size; r >= 0 && k <= (offset + size - 1) / c->block_size; k++) {
                uint64_t start = k * c->block_size, mask;
                uint64_t from = MAX(offset, start) - start, to = MIN(offset + size, start + c->block_size) - start;
                uint64_t want = pages_mask(c, from, to);

                r = block_local_mask(c, i, k, &mask);
                if (r >= 0 && (mask & want) != want)
                        r = -EAGAIN;
        }
        if (r < 0)
                return r;
        fd = open_data(c, i->attr.ino, false);
        if (fd < 0)
                return fd == -ENOENT ? -EAGAIN : fd;
        r = write_all(fd, buf, size, offset);
        if (r < 0)
                return r;
        now(&t);
        return pending_set(c, i->attr.ino, &t);
}

/* Any other write, inside the operation's transaction. */
static int write_blocks(cs_clone *c, inode *i, const void *buf, size_t size, uint64_t offset)
{
        struct timespec t;
        size_t done = 0;
        int fd, r = 0;

        /* An overwrite of local blocks within the size changes only the
         * times, which fdatasync need not make durable. */
        c->op_attrs_only = offset + size <= i->attr.size;
        c->op_ino = i->attr.ino;
        if (!S_ISREG(i->attr.mode))
                return -EINVAL;
        fd = open_data(c, i->attr.ino, true);
        if (fd < 0)
                return fd;
        /* A file made in the clone has every block local: one pwrite. */
        if (i->local_all) {
                r = write_all(fd, buf, size, offset);
                done = size;
        }
        bool sequential = stream_continues(c, i->attr.ino, offset);
        while (r >= 0 && done < size) {
                uint64_t pos = offset + done, k = pos / c->block_size, in = pos % c->block_size;
                size_t take = MIN(size - done, (size_t) (c->block_size - in));

                r = make_range_local(c, i, fd, k, in, in + take, sequential);
                if (r >= 0)
                        r = write_all(fd, (const uint8_t *) buf + done, take, pos);
                done += take;
        }
        if (r < 0)
                return r;
        now(&t);
        i->attr.size = MAX(i->attr.size, offset + size);
        i->attr.mtime = i->attr.ctime = t;
        return update_attr(c, &i->attr);
}

ssize_t cs_clone_write(cs_clone *c, uint64_t ino, const void *buf, size_t size, uint64_t offset)
{
        inode i;
        int r;

        /* The inode is loaded once, for the fast path and the slow one. */
        r = lock_inode(c, ino, &i);
        if (r < 0)
                return r;
        r = write_in_place(c, &i, buf, size, offset);
        if (r == -EAGAIN && (r = begin_locked(c)) >= 0) {
                r = write_blocks(c, &i, buf, size, offset);
                if (r >= 0)
                        stream_note(c, ino, offset + size);
                r = end(c, r); /* end() unlocks */
        } else {
                if (r >= 0)
                        stream_note(c, ino, offset + size);
                pthread_mutex_unlock(&c->lock);
        }
        inode_clear(&i);
        return r < 0 ? r : (ssize_t) size;
}

/* Drops local data past `size` and base bytes past it: what the file
 * later grows by reads as zeros, whichever source its pages have. */
static int cut(cs_clone *c, inode *i, int fd, uint64_t size)
{
        char sql[160];
        int r;

        snprintf(sql, sizeof(sql), "DELETE FROM pages WHERE ino = %" PRIu64 " AND block >= %" PRIu64, i->attr.ino,
                 DIV_ROUND_UP(size, c->block_size));
        r = cs_index_exec(c->db, sql);
        if (r < 0)
                return r;
        if (ftruncate(fd, (off_t) size) < 0)
                return negative_errno();
        if (i->base_size > size) {
                snprintf(sql, sizeof(sql), "UPDATE inodes SET base_size = %" PRIu64 " WHERE ino = %" PRIu64, size,
                         i->attr.ino);
                r = cs_index_exec(c->db, sql);
                i->base_size = size;
        }
        return r;
}

/* chmod of a node with an access ACL: the ACL follows the new mode, so
 * that the kernel's checks, which read both, agree with it. */
static int chmod_acl(cs_clone *c, uint64_t ino, uint32_t mode)
{
        _cleanup_free_ uint8_t *acl = NULL;
        acl_perms p;
        size_t size;
        int r;

        r = load_xattr(c, ino, ACL_ACCESS_XATTR, &acl, &size);
        if (r <= 0)
                return r;
        r = acl_parse(acl, size, &p);
        if (r < 0)
                return r;
        acl_chmod(&p, mode);
        return put_xattr(c, ino, ACL_ACCESS_XATTR, acl, size);
}

int cs_clone_setattr(cs_clone *c, uint64_t ino, const cs_clone_attr *attr, unsigned valid, cs_clone_attr *ret)
{
        int fd = -1;
        struct timespec t;
        inode i;
        int r;

        r = begin(c);
        if (r < 0)
                return r;
        r = load_inode(c, ino, &i);
        if (r < 0)
                return end(c, r);
        c->op_ino = ino;
        now(&t);
        if (valid & CS_SET_SIZE) {
                if (!S_ISREG(i.attr.mode))
                        r = S_ISDIR(i.attr.mode) ? -EISDIR : -EINVAL;
                if (r >= 0 && attr->size < i.attr.size) {
                        fd = open_data(c, ino, true);
                        r = fd < 0 ? fd : cut(c, &i, fd, attr->size);
                }
                if (r >= 0) {
                        i.attr.size = attr->size;
                        i.attr.mtime = t;
                }
        }
        if (valid & CS_SET_MODE) {
                i.attr.mode = (i.attr.mode & S_IFMT) | (attr->mode & 07777);
                if (r >= 0)
                        r = chmod_acl(c, ino, i.attr.mode);
        }
        if (valid & CS_SET_UID)
                i.attr.uid = attr->uid;
        if (valid & CS_SET_GID)
                i.attr.gid = attr->gid;
        if (valid & CS_SET_ATIME)
                i.attr.atime = attr->atime;
        if (valid & CS_SET_MTIME)
                i.attr.mtime = attr->mtime;
        i.attr.ctime = (valid & CS_SET_CTIME) ? attr->ctime : t;
        if (r >= 0)
                r = update_attr(c, &i.attr);
        if (r >= 0)
                inode_stat(c, &i, ret);
        inode_clear(&i);
        return end(c, r);
}

int cs_clone_fallocate(cs_clone *c, uint64_t ino, int mode, uint64_t offset, uint64_t length)
{
        int fd = -1;
        struct timespec t;
        inode i;
        int r;

        if (mode & ~(CS_FALLOC_KEEP_SIZE | CS_FALLOC_PUNCH_HOLE))
                return -EOPNOTSUPP;
        if ((mode & CS_FALLOC_PUNCH_HOLE) && !(mode & CS_FALLOC_KEEP_SIZE))
                return -EINVAL;
        r = begin(c);
        if (r < 0)
                return r;
        r = load_inode(c, ino, &i);
        if (r < 0)
                return end(c, r);
        c->op_ino = ino;
        fd = open_data(c, ino, true);
        if (fd < 0)
                r = fd;
        if (r >= 0 && (mode & CS_FALLOC_PUNCH_HOLE)) {
                uint64_t end_off = MIN(offset + length, i.attr.size);
                for (uint64_t k = offset / c->block_size; r >= 0 && k * c->block_size < end_off; k++) {
                        uint64_t bs = k * c->block_size, from = MAX(offset, bs), to = MIN(end_off, bs + c->block_size);
                        if (from >= to)
                                break; /* the hole starts past the end: nothing to punch */
                        r = make_range_local(c, &i, fd, k, from - bs, to - bs, false);
                        if (r >= 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) from,
                                                (off_t) (to - from)) < 0)
                                r = negative_errno();
                }
        } else if (r >= 0) {
                if (fallocate(fd, mode & CS_FALLOC_KEEP_SIZE ? FALLOC_FL_KEEP_SIZE : 0, (off_t) offset,
                              (off_t) length) < 0)
                        r = negative_errno();
                if (r >= 0 && !(mode & CS_FALLOC_KEEP_SIZE) && offset + length > i.attr.size) {
                        /* Growing: the new bytes read as zeros (base stops here). */
                        if (i.base_size > i.attr.size)
                                r = cut(c, &i, fd, i.attr.size);
                        i.attr.size = offset + length;
                }
        }
        if (r >= 0) {
                now(&t);
                i.attr.mtime = i.attr.ctime = t;
                r = update_attr(c, &i.attr);
        }
        inode_clear(&i);
        return end(c, r);
}

/* The times an fsync left on a delta file (design note 5): the
 * session's nonce, then mtime and ctime, seconds and nanoseconds, each a
 * little-endian 64-bit integer. */
#define TIMES_XATTR "user.clonefs.times"
#define TIMES_RECORD_SIZE 40

static void times_encode(uint8_t out[TIMES_RECORD_SIZE], uint64_t nonce, const struct timespec *mtime,
                         const struct timespec *ctime)
{
        const uint64_t v[5] = { nonce, (uint64_t) mtime->tv_sec, (uint64_t) mtime->tv_nsec, (uint64_t) ctime->tv_sec,
                                (uint64_t) ctime->tv_nsec };

        for (size_t k = 0; k < 5; k++) {
                uint64_t le = htole64(v[k]);
                memcpy(out + 8 * k, &le, 8);
        }
}

static uint64_t times_field(const uint8_t record[TIMES_RECORD_SIZE], size_t k)
{
        uint64_t le;

        memcpy(&le, record + 8 * k, 8);
        return le64toh(le);
}

/* Under the mutex: puts pending times p on a delta file, for the fsync
 * that follows to make durable with its data.  false: they could not be
 * put there (no user xattrs on the store's filesystem, say) and need
 * the catalog. */
static bool pending_times_to_delta(cs_clone *c, const pending_times *p, int fd)
{
        uint8_t record[TIMES_RECORD_SIZE];

        /* Positive, so that it reads back the same from SQLite. */
        if (!c->times_nonce && (getrandom(&c->times_nonce, sizeof(c->times_nonce), 0) != sizeof(c->times_nonce) ||
                                !(c->times_nonce = (c->times_nonce >> 1) | 1)))
                return false;
        times_encode(record, c->times_nonce, &p->mtime, &p->ctime);
        return fsetxattr(fd, TIMES_XATTR, record, sizeof(record), 0) == 0;
}

/* A synchronous commit (design note 5), recording with_times: that the
 * catalog must look for times on delta files if it is not closed
 * cleanly. */
static int sync_commit(cs_clone *c, bool with_times)
{
        char sql[96];
        int r = cs_index_exec(c->db, "PRAGMA synchronous=FULL; BEGIN IMMEDIATE;"
                                     " UPDATE meta SET value = value WHERE key = 'generation'");
        if (r >= 0)
                r = pending_flush(c);
        if (r >= 0 && with_times) {
                snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO meta VALUES('times_in_delta', %" PRId64 ")",
                         (int64_t) c->times_nonce);
                r = cs_index_exec(c->db, sql);
        }
        if (r >= 0)
                r = cs_index_exec(c->db, "COMMIT");
        if (r < 0) {
                cs_index_rollback(c->db);
                pending_restore(c);
        }
        (void) cs_index_exec(c->db, "PRAGMA synchronous=NORMAL");
        if (r >= 0) {
                c->meta_dirty = c->attr_dirty = false;
                c->n_dirty_inodes = 0;
                c->times_in_delta |= with_times;
        }
        return r;
}

/* A listing of the clone's data/ from its start, on a descriptor of its
 * own (c->data_fd's offset is not disturbed). */
static int open_data_dir(cs_clone *c, DIR **ret)
{
        _cleanup_close_ int fd = fcntl(c->data_fd, F_DUPFD_CLOEXEC, 3);
        DIR *d;

        if (fd < 0)
                return negative_errno();
        d = fdopendir(TAKE_FD(fd));
        if (!d)
                return negative_errno();
        rewinddir(d);
        *ret = d;
        return 0;
}

/* After a user died with times on delta files that the catalog lacks
 * (meta.times_in_delta holds that session's nonce): each delta file's
 * times from that session win over its inode's row if their ctime is
 * later.  Runs at open, under the clone's lock. */
static int recover_times(cs_clone *c)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int64_t nonce = 0;
        struct dirent *de;
        DIR *d;
        int r = cs_index_query_int(c->db, "SELECT value FROM meta WHERE key = 'times_in_delta'", 0, &nonce);

        if (r < 0 || !nonce)
                return r;
        r = open_data_dir(c, &d);
        if (r < 0)
                return r;
        r = cs_index_begin(c->db);
        if (r >= 0)
                r = prep(c,
                         "UPDATE inodes SET mtime = ?1, mtime_ns = ?2, ctime = ?3, ctime_ns = ?4"
                         " WHERE ino = ?5 AND (ctime < ?3 OR (ctime = ?3 AND ctime_ns < ?4))",
                         &stmt);
        while (r >= 0) {
                uint8_t record[TIMES_RECORD_SIZE];
                char *end;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        r = errno ? negative_errno() : 0;
                        break;
                }
                uint64_t ino = strtoull(de->d_name, &end, 16);
                if (de->d_name[0] == '.' || *end != '\0')
                        continue;
                int fd = openat(c->data_fd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                ssize_t n = fd >= 0 ? fgetxattr(fd, TIMES_XATTR, record, sizeof(record)) : -1;
                safe_close(fd);
                /* No times there, none readable, or an earlier session's:
                 * the row's stand. */
                if (n != (ssize_t) sizeof(record) || times_field(record, 0) != (uint64_t) nonce)
                        continue;
                for (size_t k = 1; k <= 4; k++)
                        sqlite3_bind_int64(stmt, (int) k, (int64_t) times_field(record, k));
                sqlite3_bind_int64(stmt, 5, (int64_t) ino);
                r = cs_index_step(stmt);
                sqlite3_reset(stmt);
        }
        closedir(d);
        if (r >= 0)
                r = cs_index_exec(c->db, "DELETE FROM meta WHERE key = 'times_in_delta'");
        return r >= 0 ? cs_index_commit(c->db) : (cs_index_rollback(c->db), r);
}

int cs_clone_fsync(cs_clone *c, uint64_t ino, bool datasync)
{
        _cleanup_close_ int fd = -1;
        bool commit, times_on_delta = false;
        int r = 0;

        /* The data first, outside the lock, on a descriptor of our own:
         * the cache's may be closed by another thread meanwhile. */
        pthread_mutex_lock(&c->lock);
        fd = open_data(c, ino, false);
        if (fd >= 0 && (fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0)
                fd = negative_errno();
        if (fd < 0 && fd != -ENOENT) {
                /* No delta file (nothing written) is fine; not reaching it is not. */
                r = fd;
                pthread_mutex_unlock(&c->lock);
                return r;
        }
        /* A synchronous commit makes every earlier one durable (note 5).
         * fdatasync needs it only when where this file's data lives
         * changed: the steady state of a database's log, overwriting
         * pages already local, costs one flush of the delta file, as on
         * a disk.  A full fsync of a file overwritten in place puts its
         * new times on the delta file instead, for the same flush. */
        commit = needs_sync_commit(c, ino, datasync);
        const pending_times *p = datasync ? NULL : pending_find(c, ino);
        if (!commit && p)
                commit = !(fd >= 0 && (times_on_delta = pending_times_to_delta(c, p, fd)));
        pthread_mutex_unlock(&c->lock);
        /* The delta file's own times mean nothing; its xattr, when it
         * holds the file's times, needs the inode written too. */
        if (fd >= 0 && (times_on_delta ? fsync(fd) : fdatasync(fd)) < 0)
                return negative_errno();

        pthread_mutex_lock(&c->lock);
        /* The first time on the delta file needs the catalog to know. */
        if (commit || (times_on_delta && !c->times_in_delta))
                r = sync_commit(c, times_on_delta);
        if (r >= 0 && c->dir_dirty) {
                if (fsync(c->data_fd) < 0)
                        r = negative_errno();
                else
                        c->dir_dirty = false;
        }
        pthread_mutex_unlock(&c->lock);
        return r;
}

/* --- Extended attributes ------------------------------------------------------ */

/* Under the clone's mutex: the statement is reset before it is released. */
static int getxattr_locked(cs_clone *c, uint64_t ino, const char *name, void *buf, size_t size)
{
        _cleanup_(sqlite3_resetp) sqlite3_stmt *stmt = NULL;
        int len, rc, r;

        r = prep_cached(c, STMT_GETXATTR, "SELECT value FROM xattrs WHERE ino = ? AND name = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) ino);
        sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(stmt);
        if (rc != SQLITE_ROW)
                return rc == SQLITE_DONE ? -ENODATA : cs_sqlite_errno(rc);
        len = sqlite3_column_bytes(stmt, 0);
        if (size == 0)
                return len;
        if ((size_t) len > size)
                return -ERANGE;
        memcpy(buf, sqlite3_column_blob(stmt, 0), (size_t) len);
        return len;
}

/* The kernel asks for security.capability before every write (FUSE
 * mounts never get S_NOSEC), so this is on the write path. */
int cs_clone_getxattr(cs_clone *c, uint64_t ino, const char *name, void *buf, size_t size)
{
        int r;

        pthread_mutex_lock(&c->lock);
        r = getxattr_locked(c, ino, name, buf, size);
        pthread_mutex_unlock(&c->lock);
        return r;
}

int cs_clone_listxattr(cs_clone *c, uint64_t ino, char *buf, size_t size)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        size_t total = 0;
        int rc, r;

        pthread_mutex_lock(&c->lock);
        r = prep(c, "SELECT name FROM xattrs WHERE ino = ? ORDER BY name", &stmt);
        if (r >= 0) {
                sqlite3_bind_int64(stmt, 1, (int64_t) ino);
                while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                        size_t len = (size_t) sqlite3_column_bytes(stmt, 0) + 1;
                        if (size && total + len <= size)
                                memcpy(buf + total, sqlite3_column_text(stmt, 0), len);
                        total += len;
                }
                if (rc != SQLITE_DONE)
                        r = cs_sqlite_errno(rc);
                else if (size && total > size)
                        r = -ERANGE;
                else
                        r = (int) total;
        }
        /* Finalized under the mutex: the connection is not thread-safe. */
        sqlite3_finalize(TAKE_PTR(stmt));
        pthread_mutex_unlock(&c->lock);
        return r;
}

/* setfacl: the mode's permission bits become the ACL's owner, group
 * class and other entries (as posix_acl_update_mode() does), and an ACL
 * the mode says all of is not kept; kill_sgid clears S_ISGID.  i->attr
 * is updated, not stored. */
static int set_access_acl(cs_clone *c, inode *i, const void *value, size_t size, bool kill_sgid)
{
        _cleanup_free_ uint8_t *acl = NULL;
        acl_perms p;
        int r;

        r = acl_copy(value, size, &acl, &p);
        if (r < 0)
                return r == -EBADMSG ? -EINVAL : r;
        i->attr.mode = (i->attr.mode & ~0777u) | acl_mode_bits(&p);
        if (kill_sgid)
                i->attr.mode &= ~(uint32_t) S_ISGID;
        if (p.extended || p.mask)
                return put_xattr(c, i->attr.ino, ACL_ACCESS_XATTR, acl, size);
        r = delete_xattr(c, i->attr.ino, ACL_ACCESS_XATTR);
        return r < 0 ? r : 0;
}

int cs_clone_setxattr(cs_clone *c, uint64_t ino, const char *name, const void *value, size_t size, int flags)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int64_t exists = 0;
        char sql[128];
        inode i;
        int r;

        r = begin(c);
        if (r < 0)
                return r;
        snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM xattrs WHERE ino = %" PRIu64 " AND name = ?", ino);
        r = prep(c, sql, &stmt);
        if (r >= 0) {
                sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
                r = cs_index_step(stmt);
                exists = sqlite3_column_int64(stmt, 0);
                sqlite3_finalize(TAKE_PTR(stmt));
        }
        if (r >= 0 && (flags & CS_XATTR_CREATE) && exists)
                r = -EEXIST;
        if (r >= 0 && (flags & CS_XATTR_REPLACE) && !exists)
                r = -ENODATA;
        if (r >= 0)
                r = load_inode(c, ino, &i);
        if (r < 0)
                return end(c, r);
        if (strcmp(name, ACL_ACCESS_XATTR) == 0)
                /* The kernel leaves the mode to us: it mirrors the ACL. */
                r = set_access_acl(c, &i, value, size, flags & CS_XATTR_KILL_SGID);
        else
                r = put_xattr(c, ino, name, value, size);
        if (r >= 0) {
                now(&i.attr.ctime);
                r = update_attr(c, &i.attr);
        }
        inode_clear(&i);
        return end(c, r);
}

int cs_clone_removexattr(cs_clone *c, uint64_t ino, const char *name)
{
        inode i;
        int r;

        r = begin(c);
        if (r < 0)
                return r;
        r = delete_xattr(c, ino, name);
        if (r == 0)
                r = -ENODATA;
        if (r >= 0)
                r = load_inode(c, ino, &i);
        if (r >= 0) {
                now(&i.attr.ctime);
                r = update_attr(c, &i.attr);
                inode_clear(&i);
        }
        return end(c, r);
}

/* Called when the last open handle of an unlinked inode goes. */
int cs_clone_release_inode(cs_clone *c, uint64_t ino)
{
        inode i;
        int r;

        r = begin(c);
        if (r < 0)
                return r;
        r = load_inode(c, ino, &i);
        if (r == -ENOENT)
                return end(c, 0);
        if (r >= 0) {
                r = drop_if_unused(c, &i, false);
                inode_clear(&i);
        }
        return end(c, r);
}

/* --- Reset, fold ---------------------------------------------------------------- */

static int empty_data_dir(cs_clone *c)
{
        /* The new catalog's inode numbers name other files (the root is
         * 1 again; the rest continue from the old sequence). */
        c->n_pending = 0;
        c->cache_epoch++;
        cs_fd_cache_clear(&c->fds);
        cs_block_cache_clear(&c->blocks);
        cs_id_cache_clear(&c->ids);
        struct dirent *de;
        DIR *d;
        int r = open_data_dir(c, &d);

        if (r < 0)
                return r;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' && unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                        r = negative_errno();
        closedir(d);
        return r;
}

static int reset_held(cs_clone *c, cs_store *store, const cs_point_info *to);

int cs_clone_reset(cs_store *store, const char *name, const cs_point_info *to, bool wait)
{
        _cleanup_(clone_closep) cs_clone *c = NULL;
        int r;

        if (!store || !name || !to)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        r = clone_open(store, name, wait, false, &c);
        if (r < 0)
                return r;
        return reset_held(c, store, to);
}

int cs_clone_reset_open(cs_clone *c, cs_store *store, const cs_point_info *to)
{
        int r;

        if (!c || !store || !to)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        pthread_mutex_lock(&c->lock);
        r = reset_held(c, store, to);
        /* Whatever fsync comes next makes the new state durable. */
        c->meta_dirty = c->dir_dirty = true;
        pthread_mutex_unlock(&c->lock);
        return r;
}

/* Replaces the state of a clone whose lock the caller holds (and, for an
 * open clone, its mutex) with the point `to`. */
static int reset_held(cs_clone *c, cs_store *store, const cs_point_info *to)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        const char *name = c->name;
        sqlite3 *cat;
        int r;

        /* The new state commits first: a crash after it leaves old delta
         * files that no row names, removed just below or by the next reset. */
        r = cs_index_begin(c->db);
        if (r >= 0)
                r = cs_index_exec(c->db, "DELETE FROM dentries; DELETE FROM xattrs; DELETE FROM pages;"
                                         " DELETE FROM base_links; DELETE FROM inodes;"
                                         " UPDATE meta SET value = value + 1 WHERE key = 'generation'");
        if (r >= 0)
                r = write_root(c->db, store, &to->root);
        if (r >= 0)
                r = cs_index_commit(c->db);
        else
                cs_index_rollback(c->db);
        if (r >= 0)
                r = empty_data_dir(c);
        if (r < 0)
                return r;

        pthread_mutex_lock(&store->write_lock);
        cat = cs_store_writer_locked(store);
        /* base_root is what gc must keep; base_timeline and base_point say
         * what the clone's content derives from, and refresh goes to the
         * newest point of base_timeline.  One of the clone's own snapshots
         * derives from the base recorded with it (clone_points); one
         * recorded before there were such records leaves them as they are. */
        if (strcmp(to->timeline, name) == 0) {
                r = ensure_clone_points_table(cat);
                if (r >= 0)
                        r = cs_index_prepare(
                                cat,
                                "UPDATE clones SET base_root = ?3,"
                                " base_timeline = coalesce((SELECT base_timeline FROM clone_points"
                                "   WHERE timeline = ?1 AND point = ?2), base_timeline),"
                                " base_point = coalesce((SELECT base_point FROM clone_points"
                                "   WHERE timeline = ?1 AND point = ?2), base_point)"
                                " WHERE name = ?4",
                                &stmt);
        } else
                r = cs_index_prepare(cat, "UPDATE clones SET base_timeline = ?1, base_point = ?2, base_root = ?3"
                                          " WHERE name = ?4",
                                     &stmt);
        if (r >= 0) {
                sqlite3_bind_text(stmt, 1, to->timeline, -1, SQLITE_STATIC);
                sqlite3_bind_text(stmt, 2, to->name, -1, SQLITE_STATIC);
                sqlite3_bind_blob(stmt, 3, to->root.bytes, CS_CHUNK_ID_SIZE, SQLITE_STATIC);
                sqlite3_bind_text(stmt, 4, name, -1, SQLITE_STATIC);
                r = cs_index_step(stmt);
        }
        cs_store_writer_unlock(store, &stmt);
        return r;
}

static int fold_dir(cs_clone *c, uint64_t ino, cs_chunk_id *ret);

/* Reads the xattrs of an inode into e (storage in *ret_keep, freed by the caller). */
static int load_xattrs(cs_clone *c, uint64_t ino, cs_entry *e, cs_xattr **ret_items, char ***ret_strings, size_t *ret_n)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        cs_xattr *items = NULL;
        char **strings = NULL;
        size_t n = 0;
        int rc, r;

        r = prep(c, "SELECT name, value FROM xattrs WHERE ino = ? ORDER BY name", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) ino);
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                cs_xattr *x = reallocarray(items, n + 1, sizeof(*x));
                char **s = reallocarray(strings, 2 * (n + 1), sizeof(*s));
                if (x)
                        items = x;
                if (s)
                        strings = s;
                if (!x || !s) {
                        r = -ENOMEM;
                        break;
                }
                int len = sqlite3_column_bytes(stmt, 1);
                strings[2 * n] = strdup((const char *) sqlite3_column_text(stmt, 0));
                strings[2 * n + 1] = malloc((size_t) MAX(len, 1));
                if (!strings[2 * n] || !strings[2 * n + 1]) {
                        free(strings[2 * n]);
                        free(strings[2 * n + 1]);
                        r = -ENOMEM;
                        break;
                }
                memcpy(strings[2 * n + 1], sqlite3_column_blob(stmt, 1), (size_t) len);
                items[n] = (cs_xattr) { .name = strings[2 * n], .value = strings[2 * n + 1], .size = (uint32_t) len };
                n++;
        }
        if (r >= 0 && rc != SQLITE_DONE)
                r = cs_sqlite_errno(rc);
        e->xattrs = items;
        e->n_xattrs = n;
        *ret_items = items;
        *ret_strings = strings;
        *ret_n = n;
        return r;
}

static void free_xattrs(cs_xattr *items, char **strings, size_t n)
{
        for (size_t i = 0; i < 2 * n; i++)
                free(strings[i]);
        free(strings);
        free(items);
}

/* The block list of a regular file, built from its local and base blocks. */
static int fold_file(cs_clone *c, inode *i, cs_chunk_id **ret_blocks, size_t *ret_n)
{
        uint64_t n = DIV_ROUND_UP(i->attr.size, c->block_size);
        cs_chunk_id *blocks = calloc(MAX(n, 1u), sizeof(*blocks));
        cs_content content = {};
        int r = 0;

        if (!blocks)
                return -ENOMEM;
        if (i->base)
                r = content_from_blob(i->base, i->base_len, &content);
        for (uint64_t k = 0; r >= 0 && k < n; k++) {
                size_t len = (size_t) MIN((uint64_t) c->block_size, i->attr.size - k * c->block_size);
                uint64_t mask;
                cs_chunk_info info;

                r = block_local_mask(c, i, k, &mask);
                if (r < 0)
                        break;
                bool local = mask != 0;
                if (!local && k * c->block_size < i->base_size && i->base) {
                        /* A base block whose length still fits is reused as is. */
                        r = cs_content_blocks(c->store, &content, k, 1, &blocks[k]);
                        if (r < 0)
                                break;
                        if (cs_chunk_id_is_zero(&blocks[k]))
                                continue;
                        r = cs_store_has(c->store, &blocks[k], &info);
                        if (r < 0)
                                break;
                        if (r > 0 && info.size == len && (k + 1) * c->block_size <= i->base_size)
                                continue;
                } else if (!local) {
                        blocks[k] = (cs_chunk_id) {};
                        continue;
                }
                r = read_block(c, i, k, c->buf);
                if (r >= 0)
                        r = cs_store_put(c->put_store, CS_KIND_DATA, c->buf, len, &blocks[k]);
        }
        if (r < 0) {
                free(blocks);
                return r;
        }
        *ret_blocks = blocks;
        *ret_n = (size_t) n;
        return 0;
}

static int fold_entry(cs_clone *c, const void *name, size_t name_len, uint64_t ino, const cs_entry *base,
                      cs_dir_builder *b);

static int compare_link_origins(const void *x, const void *y)
{
        const link_origin *a = x, *b = y;
        return a->ino < b->ino ? -1 : a->ino > b->ino;
}

static int compare_link_groups(const void *x, const void *y)
{
        const link_origin *a = x, *b = y;
        return a->grp < b->grp ? -1 : a->grp > b->grp;
}

/* The clone inode made from base link group grp, or 0. */
static uint64_t fold_group_inode(const cs_clone *c, uint64_t grp)
{
        link_origin key = { .grp = grp };
        const link_origin *o = c->n_fold_links ? bsearch(&key, c->fold_groups, c->n_fold_links, sizeof(key),
                                                         compare_link_groups)
                                               : NULL;
        return o ? o->ino : 0;
}

/* The link group of a folded inode.  One made from a base group keeps
 * that group's id: its other names may sit in directories the clone never
 * materialized, which the fold copies with the base's ids.  A group made
 * in the clone gets an id with the top bit set and the fold's random salt
 * mixed in, so that it meets no base group's: a directory source numbers
 * its groups from 1, and an earlier fold's ids are salted differently. */
static uint64_t fold_link_group(const cs_clone *c, const inode *i)
{
        link_origin key = { .ino = i->attr.ino };
        const link_origin *o;

        if (!S_ISREG(i->attr.mode) || i->attr.nlink <= 1)
                return 0;
        o = c->n_fold_links ? bsearch(&key, c->fold_links, c->n_fold_links, sizeof(key), compare_link_origins)
                            : NULL;
        if (o)
                return o->grp;
        return (UINT64_C(1) << 63) | (XXH3_64bits_withSeed(&i->attr.ino, sizeof(i->attr.ino), c->fold_salt) >> 1);
}

static int load_fold_links(cs_clone *c)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        size_t capacity = 0;
        int rc, r;

        if (getrandom(&c->fold_salt, sizeof(c->fold_salt), 0) != sizeof(c->fold_salt))
                return -EIO;
        r = prep(c, "SELECT ino, grp FROM base_links", &stmt);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                if (c->n_fold_links == capacity) {
                        size_t n = capacity ? 2 * capacity : 16;
                        link_origin *p = reallocarray(c->fold_links, n, sizeof(*p));
                        if (!p)
                                return -ENOMEM;
                        c->fold_links = p;
                        capacity = n;
                }
                c->fold_links[c->n_fold_links++] = (link_origin) {
                        .ino = (uint64_t) sqlite3_column_int64(stmt, 0),
                        .grp = (uint64_t) sqlite3_column_int64(stmt, 1),
                };
        }
        if (rc != SQLITE_DONE)
                return cs_sqlite_errno(rc);
        if (!c->n_fold_links)
                return 0;
        c->fold_groups = reallocarray(NULL, c->n_fold_links, sizeof(*c->fold_groups));
        if (!c->fold_groups)
                return -ENOMEM;
        memcpy(c->fold_groups, c->fold_links, c->n_fold_links * sizeof(*c->fold_groups));
        qsort(c->fold_links, c->n_fold_links, sizeof(*c->fold_links), compare_link_origins);
        qsort(c->fold_groups, c->n_fold_links, sizeof(*c->fold_groups), compare_link_groups);
        return 0;
}

/* A directory the clone never materialized.  Without base link groups in
 * the clone it is the base's own tree, reused unread.  With them, a name
 * of such a group may sit in it, unseen by the clone so far, while the
 * group's inode changed through another name: that entry is folded from
 * the clone's inode, and the directories above it are rebuilt around it.
 * What did not change rebuilds to the same ids and stores nothing new. */
static int fold_base_dir(cs_clone *c, const cs_chunk_id *base, cs_chunk_id *ret)
{
        _cleanup_(cs_dir_builder_freep) cs_dir_builder *b = NULL;
        _cleanup_(cs_dir_freep) cs_dir *d = NULL;
        int r;

        if (!c->n_fold_links) {
                *ret = *base;
                return 0;
        }
        r = cs_dir_load(c->store, base, &d);
        if (r >= 0)
                r = cs_dir_builder_new(c->put_store, &b);
        for (size_t k = 0; r >= 0 && k < cs_dir_size(d); k++) {
                const cs_entry *e = cs_dir_entry(d, k);
                uint64_t ino = S_ISREG(e->mode) && e->link_group ? fold_group_inode(c, e->link_group) : 0;
                cs_entry copy = *e;

                if (ino)
                        r = fold_entry(c, e->name, e->name_len, ino, e, b);
                else if (S_ISDIR(e->mode)) {
                        r = fold_base_dir(c, &e->subdir, &copy.subdir);
                        if (r >= 0)
                                r = cs_dir_builder_add(b, &copy);
                } else
                        r = cs_dir_builder_add(b, e);
        }
        if (r >= 0)
                r = cs_dir_builder_finish(b, ret);
        return r;
}

/* Whether a folded regular file says what the base entry it came from
 * says: then the base entry goes in as it is, with what only the source
 * knew (dev, ino, the order of its xattrs), so that an untouched
 * directory rebuilds to the same object. */
static bool same_file_entry(const cs_entry *folded, const cs_entry *base)
{
        return folded->mode == base->mode && folded->uid == base->uid && folded->gid == base->gid &&
               folded->nlink == base->nlink && folded->size == base->size &&
               folded->mtime_sec == base->mtime_sec && folded->mtime_nsec == base->mtime_nsec &&
               folded->ctime_sec == base->ctime_sec && folded->ctime_nsec == base->ctime_nsec &&
               folded->link_group == base->link_group && folded->content.segmented == base->content.segmented &&
               folded->content.n == base->content.n &&
               (folded->content.n == 0 ||
                memcmp(folded->content.ids, base->content.ids, folded->content.n * sizeof(cs_chunk_id)) == 0) &&
               cs_entry_same_xattrs(folded, base);
}

/* Adds the clone's inode ino as entry name; base, if given, is the point's
 * entry it stands in for (a hard link in a directory never materialized). */
static int fold_entry(cs_clone *c, const void *name, size_t name_len, uint64_t ino, const cs_entry *base,
                      cs_dir_builder *b)
{
        _cleanup_free_ cs_chunk_id *blocks = NULL, *segments = NULL;
        _cleanup_free_ char *target = NULL;
        cs_xattr *items = NULL;
        char **strings = NULL;
        size_t n_xattrs = 0, n_blocks = 0;
        inode i;
        int r;

        r = load_inode(c, ino, &i);
        if (r < 0)
                return r;
        cs_entry e = {
                .name = name,
                .name_len = name_len,
                .mode = i.attr.mode,
                .uid = i.attr.uid,
                .gid = i.attr.gid,
                .nlink = i.attr.nlink,
                .size = i.attr.size,
                .mtime_sec = i.attr.mtime.tv_sec,
                .mtime_nsec = (uint32_t) i.attr.mtime.tv_nsec,
                .ctime_sec = i.attr.ctime.tv_sec,
                .ctime_nsec = (uint32_t) i.attr.ctime.tv_nsec,
                .rdev = i.attr.rdev,
                .link_group = fold_link_group(c, &i),
        };
        r = load_xattrs(c, ino, &e, &items, &strings, &n_xattrs);
        if (r >= 0 && S_ISDIR(i.attr.mode)) {
                if (!i.materialized && i.base && i.base_len == CS_CHUNK_ID_SIZE)
                        r = fold_base_dir(c, (const cs_chunk_id *) i.base, &e.subdir);
                else
                        r = fold_dir(c, ino, &e.subdir);
        } else if (r >= 0 && S_ISLNK(i.attr.mode)) {
                target = malloc(PATH_MAX + 1);
                r = target ? readlink_locked(c, ino, target, PATH_MAX + 1) : -ENOMEM;
                e.target = target;
                e.size = target && r >= 0 ? strlen(target) : 0;
        } else if (r >= 0 && S_ISREG(i.attr.mode)) {
                r = fold_file(c, &i, &blocks, &n_blocks);
                if (r >= 0)
                        r = cs_content_build(c->put_store, blocks, n_blocks, &e.content, &segments);
        }
        if (r >= 0)
                r = cs_dir_builder_add(b, base && S_ISREG(e.mode) && same_file_entry(&e, base) ? base : &e);
        free_xattrs(items, strings, n_xattrs);
        inode_clear(&i);
        return r;
}

static int fold_dir(cs_clone *c, uint64_t ino, cs_chunk_id *ret)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_(cs_dir_builder_freep) cs_dir_builder *b = NULL;
        int rc, r;

        r = cs_dir_builder_new(c->put_store, &b);
        if (r >= 0)
                r = prep(c, "SELECT name, ino FROM dentries WHERE parent = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int64(stmt, 1, (int64_t) ino);
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                r = fold_entry(c, sqlite3_column_blob(stmt, 0), (size_t) sqlite3_column_bytes(stmt, 0),
                               (uint64_t) sqlite3_column_int64(stmt, 1), NULL, b);
                if (r < 0)
                        return r;
        }
        if (rc != SQLITE_DONE)
                return cs_sqlite_errno(rc);
        return cs_dir_builder_finish(b, ret);
}

/* Folds an open clone; chunks are put through dst.  Holds the clone's
 * mutex throughout: its writers wait, so the tree is one instant of it. */
static int fold_locked(cs_clone *c, cs_store *dst, cs_chunk_id *ret_point_tree)
{
        cs_entry root = {};
        cs_xattr *items = NULL;
        char **strings = NULL;
        size_t n_xattrs = 0;
        inode i;
        int r;

        c->put_store = dst;
        r = cs_index_exec(c->db, "BEGIN");
        if (r < 0)
                return r;
        r = load_fold_links(c);
        if (r >= 0)
                r = load_inode(c, CS_CLONE_ROOT, &i);
        if (r >= 0) {
                root = (cs_entry) {
                        .mode = i.attr.mode,
                        .uid = i.attr.uid,
                        .gid = i.attr.gid,
                        .nlink = i.attr.nlink,
                        .mtime_sec = i.attr.mtime.tv_sec,
                        .mtime_nsec = (uint32_t) i.attr.mtime.tv_nsec,
                        .ctime_sec = i.attr.ctime.tv_sec,
                        .ctime_nsec = (uint32_t) i.attr.ctime.tv_nsec,
                };
                r = load_xattrs(c, CS_CLONE_ROOT, &root, &items, &strings, &n_xattrs);
                if (r >= 0 && !i.materialized && i.base && i.base_len == CS_CHUNK_ID_SIZE)
                        r = fold_base_dir(c, (const cs_chunk_id *) i.base, &root.subdir);
                else if (r >= 0)
                        r = fold_dir(c, CS_CLONE_ROOT, &root.subdir);
                if (r >= 0)
                        r = cs_point_build(dst, &root, ret_point_tree);
                free_xattrs(items, strings, n_xattrs);
                inode_clear(&i);
        }
        (void) cs_index_exec(c->db, "COMMIT");
        c->put_store = NULL;
        c->fold_links = mfree(c->fold_links);
        c->fold_groups = mfree(c->fold_groups);
        c->n_fold_links = 0;
        return r;
}

int cs_clone_fold(cs_store *store, const char *name, cs_chunk_id *ret_point_tree)
{
        _cleanup_(clone_closep) cs_clone *c = NULL;
        int r;

        if (!store || !name || !ret_point_tree)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        r = clone_open(store, name, false, false, &c);
        if (r < 0)
                return r;
        return fold_locked(c, store, ret_point_tree);
}

int cs_clone_fold_open(cs_clone *c, cs_store *dst, cs_chunk_id *ret_point_tree)
{
        int r;

        if (!c || !dst || !ret_point_tree)
                return -EINVAL;
        if (!(dst->flags & CS_OPEN_WRITE))
                return -EROFS;
        pthread_mutex_lock(&c->lock);
        r = fold_locked(c, dst, ret_point_tree);
        pthread_mutex_unlock(&c->lock);
        if (r >= 0)
                r = cs_store_commit(dst);
        return r;
}

int cs_clone_control_address(cs_store *store, const char *name, struct sockaddr_un *ret, socklen_t *ret_len)
{
        char link[64], *dir;
        XXH64_hash_t h;

        if (!store || !name || !ret || !ret_len)
                return -EINVAL;
        snprintf(link, sizeof(link), "/proc/self/fd/%d", store->dir_fd);
        dir = realpath(link, NULL);
        if (!dir)
                return negative_errno();
        h = XXH64(dir, strlen(dir), 0) ^ XXH64(name, strlen(name), 1);
        free(dir);
        *ret = (struct sockaddr_un) { .sun_family = AF_UNIX };
        /* An abstract socket: no file to leave behind, no path length limit
         * from the store's location.  Peers are checked by credentials. */
        int n = snprintf(ret->sun_path + 1, sizeof(ret->sun_path) - 1, "clonefs-control-%016llx",
                         (unsigned long long) h);
        *ret_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + (size_t) n);
        return 0;
}
