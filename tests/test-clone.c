/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of clones through the library: copy-on-write per page, the
 * write paths (a transaction, or an overwrite in place whose times wait in
 * memory), the base block cache across truncation, and reset and destroy
 * of a clone that is held open (what a mount does for clonectl).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cs-internal.h"
#include "tap.h"

#define BLOCK 16384
#define FILE_BLOCKS 40 /* past the inline limit: a segmented file */
#define PAGE 4096        /* a clone's unit of copy-on-write at this block size */

static uint8_t base[FILE_BLOCKS * BLOCK], buf[FILE_BLOCKS * BLOCK];

/* A point of one regular file "f" of FILE_BLOCKS blocks of text. */
static int make_point(cs_store *s, const char *timeline, uint64_t seed, cs_point_info *ret)
{
        cs_chunk_id ids[FILE_BLOCKS], *storage = NULL, dir;
        cs_dir_builder *b = NULL;
        cs_entry file = { .name = "f", .name_len = 1, .mode = S_IFREG | 0644, .nlink = 1, .size = sizeof(base) };
        cs_entry root = { .mode = S_IFDIR | 0755, .nlink = 2 };
        int r;

        tap_fill(base, sizeof(base), DATA_TEXT, seed);
        for (size_t k = 0; k < FILE_BLOCKS; k++) {
                r = cs_store_put(s, CS_KIND_DATA, base + k * BLOCK, BLOCK, &ids[k]);
                if (r < 0)
                        return r;
        }
        r = cs_content_build(s, ids, FILE_BLOCKS, &file.content, &storage);
        if (r >= 0)
                r = cs_dir_builder_new(s, &b);
        if (r >= 0)
                r = cs_dir_builder_add(b, &file);
        if (r >= 0)
                r = cs_dir_builder_finish(b, &dir);
        cs_dir_builder_free(b);
        free(storage);
        if (r < 0)
                return r;
        root.subdir = dir;
        *ret = (cs_point_info) {};
        snprintf(ret->timeline, sizeof(ret->timeline), "%s", timeline);
        ret->created = (int64_t) time(NULL);
        r = cs_point_build(s, &root, &ret->root);
        if (r >= 0)
                r = cs_store_commit(s);
        return r < 0 ? r : cs_point_add(s, ret);
}

static uint64_t stored_bytes(const char *store_path, const char *clone)
{
        char path[600];
        struct stat st;
        uint64_t total = 0;

        for (int ino = 1; ino < 64; ino++) {
                snprintf(path, sizeof(path), "%s/clones/%s/data/%x", store_path, clone, ino);
                if (stat(path, &st) == 0)
                        total += (uint64_t) st.st_blocks * 512;
        }
        return total;
}

static void test_copy_on_write(cs_store *s, const char *path, const cs_point_info *p)
{
        cs_clone *c = NULL;
        cs_clone_attr a, a2;
        uint8_t page[8192];

        tap_fill(base, sizeof(base), DATA_TEXT, 1); /* p's content */
        ok(cs_clone_create(s, "cow", p) == 0, "create a clone");
        ok(cs_clone_open(s, "cow", &c) == 0, "open it");
        ok(cs_clone_lookup(c, CS_CLONE_ROOT, "f", &a) == 0, "look up its file");
        ok(cs_clone_read(c, a.ino, buf, sizeof(buf), 0) == (ssize_t) sizeof(buf) && memcmp(buf, base, sizeof(buf)) == 0,
           "it reads as the point");

        memset(page, 'x', sizeof(page));
        ok(cs_clone_write(c, a.ino, page, sizeof(page), 5 * BLOCK + 100) == (ssize_t) sizeof(page),
           "write 8 KiB into a base block");
        uint64_t after_first = stored_bytes(path, "cow");
        ok(after_first >= sizeof(page) && after_first <= sizeof(page) + 2 * PAGE,
           "it stores the three pages it touches, not the block (%llu bytes)", (unsigned long long) after_first);
        ok(cs_clone_read(c, a.ino, buf, sizeof(buf), 0) == (ssize_t) sizeof(buf), "read the file back");
        ok(memcmp(buf + 5 * BLOCK + 100, page, sizeof(page)) == 0, "the write is there");
        ok(memcmp(buf, base, 5 * BLOCK + 100) == 0 &&
                   memcmp(buf + 5 * BLOCK + 100 + sizeof(page), base + 5 * BLOCK + 100 + sizeof(page),
                          sizeof(buf) - (5 * BLOCK + 100 + sizeof(page))) == 0,
           "everything around it is the base");

        /* The same block again: an overwrite in place, times held in memory. */
        ok(cs_clone_getattr(c, a.ino, &a) == 0, "getattr");
        struct timespec before = a.mtime;
        usleep(2000);
        memset(page, 'y', sizeof(page));
        ok(cs_clone_write(c, a.ino, page, 100, 5 * BLOCK + 200) == 100, "overwrite in place");
        ok(cs_clone_getattr(c, a.ino, &a2) == 0 &&
                   (a2.mtime.tv_sec > before.tv_sec ||
                    (a2.mtime.tv_sec == before.tv_sec && a2.mtime.tv_nsec > before.tv_nsec)),
           "its new mtime shows at once");
        ok(stored_bytes(path, "cow") == after_first, "an overwrite in place stores nothing more");
        ok(cs_clone_fsync(c, a.ino, false) == 0, "a full fsync writes the pending times");
        cs_clone_close(c);
        c = NULL;
        ok(cs_clone_open(s, "cow", &c) == 0, "reopen");
        ok(cs_clone_getattr(c, a.ino, &a) == 0 && a.mtime.tv_sec == a2.mtime.tv_sec &&
                   a.mtime.tv_nsec == a2.mtime.tv_nsec,
           "the time of the overwrite in place survived the close");
        ok(cs_clone_read(c, a.ino, buf, 300, 5 * BLOCK + 100) == 300 && buf[0] == 'x' && buf[100] == 'y' &&
                   buf[199] == 'y' && buf[200] == 'x',
           "and so did its data");

        /* Truncation lowers the base: cached base blocks must not show past it. */
        ok(cs_clone_read(c, a.ino, buf, BLOCK, 20 * BLOCK) == BLOCK, "read a base block (now cached)");
        cs_clone_attr shorter = { .size = 20 * BLOCK + 10 };
        ok(cs_clone_setattr(c, a.ino, &shorter, CS_SET_SIZE, &a) == 0, "truncate inside that block");
        cs_clone_attr longer = { .size = sizeof(base) };
        ok(cs_clone_setattr(c, a.ino, &longer, CS_SET_SIZE, &a) == 0, "and grow the file again");
        ok(cs_clone_read(c, a.ino, buf, BLOCK, 20 * BLOCK) == BLOCK, "read the block again");
        bool zeros = true;
        for (size_t k = 10; k < BLOCK; k++)
                zeros = zeros && buf[k] == 0;
        ok(memcmp(buf, base + 20 * BLOCK, 10) == 0 && zeros, "the bytes past the truncation read as zeros");
        ok(cs_clone_read(c, a.ino, buf, BLOCK, 30 * BLOCK) == BLOCK && memcmp(buf, (uint8_t[BLOCK]) {}, BLOCK) == 0,
           "and so do whole base blocks past it");
        cs_clone_close(c);
}

/* A page-aligned write copies nothing up; pages of one block come from
 * the delta file and the base side by side. */
static void test_aligned_pages(cs_store *s, const char *path, const cs_point_info *p)
{
        cs_clone *c = NULL;
        cs_clone_attr a;
        uint8_t page[2 * PAGE];

        tap_fill(base, sizeof(base), DATA_TEXT, 1);
        ok(cs_clone_create(s, "pages", p) == 0 && cs_clone_open(s, "pages", &c) == 0, "a clone for page writes");
        ok(cs_clone_lookup(c, CS_CLONE_ROOT, "f", &a) == 0, "look up its file");
        memset(page, 'p', sizeof(page));
        ok(cs_clone_write(c, a.ino, page, sizeof(page), 7 * BLOCK + PAGE) == (ssize_t) sizeof(page),
           "write two aligned pages into the middle of a block");
        ok(stored_bytes(path, "pages") == sizeof(page), "it stores those two pages and nothing else");
        ok(cs_clone_write(c, a.ino, page, 10, 7 * BLOCK + 3 * PAGE + 5) == 10, "write into the block's last page");
        ok(stored_bytes(path, "pages") == sizeof(page) + PAGE, "which copies up that page only");
        ok(cs_clone_read(c, a.ino, buf, 2 * BLOCK, 6 * BLOCK + 100) == 2 * BLOCK, "read across the block");
        uint8_t *b7 = buf + BLOCK - 100; /* block 7 in buf */
        ok(memcmp(buf, base + 6 * BLOCK + 100, BLOCK - 100) == 0 && memcmp(b7, base + 7 * BLOCK, PAGE) == 0 &&
                   memcmp(b7 + PAGE, page, sizeof(page)) == 0 &&
                   memcmp(b7 + 3 * PAGE, base + 7 * BLOCK + 3 * PAGE, 5) == 0 && memcmp(b7 + 3 * PAGE + 5, page, 10) == 0 &&
                   memcmp(b7 + 3 * PAGE + 15, base + 7 * BLOCK + 3 * PAGE + 15, PAGE - 15) == 0 &&
                   memcmp(b7 + BLOCK, base + 8 * BLOCK, 100) == 0,
           "base, local, local, base and local bytes, base: each from its place");
        uint64_t before = stored_bytes(path, "pages");
        ok(cs_clone_write(c, a.ino, page, PAGE, 9 * BLOCK) == PAGE, "write a page at a block's start");
        ok(stored_bytes(path, "pages") == before + PAGE, "it stores that page");
        ok(cs_clone_write(c, a.ino, page, 100, 9 * BLOCK + PAGE) == 100, "then write on from where it ended");
        ok(stored_bytes(path, "pages") == before + BLOCK, "a sequential write copies up the rest of its block");
        ok(cs_clone_read(c, a.ino, buf, BLOCK, 9 * BLOCK) == BLOCK && memcmp(buf, page, PAGE + 100) == 0 &&
                   memcmp(buf + PAGE + 100, base + 9 * BLOCK + PAGE + 100, BLOCK - PAGE - 100) == 0,
           "and the block reads as written over the base");
        cs_clone_close(c);

        /* A schema 1 catalog (whole local blocks, no mask) is upgraded on
         * open, its local blocks staying whole. */
        char db_path[700];
        sqlite3 *db = NULL;
        snprintf(db_path, sizeof(db_path), "%s/clones/pages/state.db", path);
        ok(sqlite3_open(db_path, &db) == SQLITE_OK &&
                   cs_index_exec(db, "BEGIN; CREATE TABLE blocks(ino INTEGER NOT NULL, block INTEGER NOT NULL,"
                                     " PRIMARY KEY(ino, block)) WITHOUT ROWID;"
                                     " INSERT INTO blocks SELECT ino, block FROM pages; DROP TABLE pages;"
                                     " UPDATE meta SET value = 1 WHERE key = 'schema'; COMMIT") == 0,
           "make the clone's catalog schema 1");
        sqlite3_close(db);
        ok(cs_clone_open(s, "pages", &c) == 0, "open it: upgraded");
        ok(cs_clone_read(c, a.ino, buf, BLOCK, 7 * BLOCK) == BLOCK && memcmp(buf, base + 7 * BLOCK, PAGE) != 0 &&
                   memcmp(buf + PAGE, page, sizeof(page)) == 0,
           "its local block reads whole from the delta file (the unwritten page as its hole)");
        cs_clone_close(c);
        db = NULL;
        ok(sqlite3_open(db_path, &db) == SQLITE_OK &&
                   cs_index_exec(db, "ALTER TABLE pages RENAME TO blocks; UPDATE meta SET value = 2 WHERE key = 'schema'") ==
                           0,
           "make it schema 2 (the mask in table blocks)");
        sqlite3_close(db);
        db = NULL;
        ok(cs_clone_open(s, "pages", &c) == 0 && cs_clone_read(c, a.ino, buf, BLOCK, 7 * BLOCK) == BLOCK &&
                   memcmp(buf + PAGE, page, sizeof(page)) == 0,
           "open it: upgraded, the same bytes");
        cs_clone_close(c);
        ok(sqlite3_open(db_path, &db) == SQLITE_OK &&
                   cs_index_exec(db, "UPDATE meta SET value = 4 WHERE key = 'schema'") == 0,
           "make the catalog schema 4");
        sqlite3_close(db);
        ok(cs_clone_open(s, "pages", &c) == -EPROTONOSUPPORT, "a newer schema is refused");
        ok(cs_clone_destroy(s, "pages", false) == 0, "but can still be destroyed");
}

/* A full fsync of a file overwritten in place puts its times on the
 * delta file; a user that dies before closing the clone leaves them
 * there, and the next open takes them into the catalog. */
static void test_times_after_crash(cs_store *s, const char *path, const cs_point_info *p)
{
        int pipe_fds[2];
        cs_clone *c = NULL;
        cs_clone_attr a;
        struct timespec written = {};

        ok(cs_clone_create(s, "times", p) == 0, "a clone for times");
        ok(pipe(pipe_fds) == 0, "a pipe");
        pid_t pid = fork();
        if (pid == 0) {
                cs_clone *child = NULL;
                cs_clone_attr ca;
                uint8_t byte = 'w';
                /* The first write makes the page local, and its fsync
                 * commits that. */
                if (cs_clone_open(s, "times", &child) < 0 || cs_clone_lookup(child, CS_CLONE_ROOT, "f", &ca) < 0 ||
                    cs_clone_write(child, ca.ino, &byte, 1, 0) != 1 || cs_clone_fsync(child, ca.ino, false) < 0)
                        _exit(1);
                /* The page is local now: these writes are in place.  The
                 * first fsync of times on the delta file tells the
                 * catalog so; the second only flushes the delta file. */
                for (int k = 1; k <= 2; k++) {
                        usleep(20000);
                        if (cs_clone_write(child, ca.ino, &byte, 1, (uint64_t) k) != 1 ||
                            cs_clone_getattr(child, ca.ino, &ca) < 0 || cs_clone_fsync(child, ca.ino, false) < 0)
                                _exit(1);
                }
                if (write(pipe_fds[1], &ca.mtime, sizeof(ca.mtime)) != (ssize_t) sizeof(ca.mtime))
                        _exit(1);
                _exit(0); /* without closing: as kill -9 would */
        }
        close(pipe_fds[1]);
        int status = -1;
        ok(pid > 0 && read(pipe_fds[0], &written, sizeof(written)) == (ssize_t) sizeof(written) &&
                   waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "a process writes in place, fsyncs and dies");
        close(pipe_fds[0]);
        char delta[700];
        uint8_t record[64];
        ok(cs_clone_open(s, "times", &c) == 0 && cs_clone_lookup(c, CS_CLONE_ROOT, "f", &a) == 0,
           "open the clone after it");
        snprintf(delta, sizeof(delta), "%s/clones/times/data/%llx", path, (unsigned long long) a.ino);
        ok(getxattr(delta, "user.clonefs.times", record, sizeof(record)) == 40,
           "the fsync put the times on the delta file, not in a catalog commit");
        ok(a.mtime.tv_sec == written.tv_sec && a.mtime.tv_nsec == written.tv_nsec && a.ctime.tv_sec == written.tv_sec &&
                   a.ctime.tv_nsec == written.tv_nsec,
           "the fsynced times of the overwrite in place are there");

        /* A failed operation rolls back; the pending times it took in
         * must come back with it. */
        uint8_t byte = 'x';
        cs_clone_attr before, after;
        usleep(20000);
        ok(cs_clone_write(c, a.ino, &byte, 1, 3) == 1 && cs_clone_getattr(c, a.ino, &before) == 0,
           "write in place (its times pending)");
        ok(cs_clone_lookup(c, CS_CLONE_ROOT, "nope", &after) == -ENOENT, "a lookup that fails");
        ok(cs_clone_getattr(c, a.ino, &after) == 0 && after.mtime.tv_sec == before.mtime.tv_sec &&
                   after.mtime.tv_nsec == before.mtime.tv_nsec,
           "the pending times survived its rollback");
        cs_clone_close(c);
        c = NULL;

        /* Times an earlier session left on a delta file are not recovered
         * by a later session's crash: f's stay as set after them. */
        pid = fork();
        if (pid == 0) {
                cs_clone *child = NULL;
                cs_clone_attr fa, ga, set = { .mtime = { 1000, 0 }, .ctime = { 1000, 0 } };
                if (cs_clone_open(s, "times", &child) < 0 || cs_clone_lookup(child, CS_CLONE_ROOT, "f", &fa) < 0 ||
                    cs_clone_setattr(child, fa.ino, &set, CS_SET_MTIME | CS_SET_CTIME, &fa) < 0 ||
                    cs_clone_fsync(child, fa.ino, false) < 0 ||
                    cs_clone_create_node(child, CS_CLONE_ROOT, "g", S_IFREG | 0600, 0, 0, 0, 022, NULL, &ga) < 0 ||
                    cs_clone_write(child, ga.ino, &byte, 1, 0) != 1 || cs_clone_fsync(child, ga.ino, false) < 0 ||
                    cs_clone_write(child, ga.ino, &byte, 1, 0) != 1 || cs_clone_fsync(child, ga.ino, false) < 0)
                        _exit(1);
                _exit(0);
        }
        ok(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "a second session sets f's times to 1000, fsyncs g's times onto its delta file, and dies");
        ok(cs_clone_open(s, "times", &c) == 0 && cs_clone_lookup(c, CS_CLONE_ROOT, "f", &a) == 0 &&
                   a.mtime.tv_sec == 1000 && a.ctime.tv_sec == 1000,
           "f keeps the times set last, not the first session's on its delta file");
        cs_clone_close(c);
        ok(cs_clone_destroy(s, "times", false) == 0, "destroy it");
}

static void test_held_open(cs_store *s, const cs_point_info *p, const cs_point_info *newer)
{
        cs_clone *c = NULL, *other = NULL;
        cs_clone_attr a, created;
        uint8_t byte = 'z';

        ok(cs_clone_create(s, "held", p) == 0, "create a clone to hold open");
        ok(cs_clone_open(s, "held", &c) == 0, "hold it open");
        ok(cs_clone_open(s, "held", &other) == -EBUSY, "a second opener is refused");
        ok(cs_clone_reset(s, "held", newer, false) == -EBUSY, "a reset from outside is refused");
        ok(cs_clone_lookup(c, CS_CLONE_ROOT, "f", &a) == 0, "look up the file");
        ok(cs_clone_write(c, a.ino, &byte, 1, 0) == 1, "write into it");
        ok(cs_clone_create_node(c, CS_CLONE_ROOT, "made", S_IFREG | 0600, 0, 0, 0, 022, NULL, &created) == 0,
           "make a file");

        ok(cs_clone_reset_open(c, s, newer) == 0, "reset the open clone to a newer point");
        ok(cs_clone_getattr(c, a.ino, &a) == -ENOENT, "its old inode numbers are gone");
        ok(cs_clone_lookup(c, CS_CLONE_ROOT, "made", &created) == -ENOENT, "so is the file made in it");
        ok(cs_clone_lookup(c, CS_CLONE_ROOT, "f", &a) == 0, "the point's file is there");
        tap_fill(base, sizeof(base), DATA_TEXT, 2);
        ok(cs_clone_read(c, a.ino, buf, sizeof(buf), 0) == (ssize_t) sizeof(buf) && memcmp(buf, base, sizeof(buf)) == 0,
           "with the newer point's content (no stale cached block)");
        cs_clone_info info;
        ok(cs_clone_find(s, "held", &info) == 0 && strcmp(info.base_point, newer->name) == 0,
           "the catalog names the new base");

        ok(cs_clone_destroy_open(c, s) == 0, "destroy the open clone");
        ok(cs_clone_find(s, "held", &info) == -ENOENT, "it is gone from the catalog");
        ok(cs_clone_read(c, a.ino, buf, 10, 0) == 10, "the handle still reads its unlinked files");
        cs_clone_close(c);
        ok(cs_clone_create(s, "held", p) == 0, "the name can be used again");
        ok(cs_clone_destroy(s, "held", false) == 0, "and destroyed");
}

int main(void)
{
        char path[512];
        cs_store *s = NULL;
        cs_point_info p, newer;

        tap_path(path, sizeof(path), "clone");
        ok(cs_store_init(path, &(cs_init_params) { .block_size = BLOCK }) == 0, "init a store");
        ok(cs_store_open(path, CS_OPEN_WRITE, &s) == 0, "open it");
        ok(make_point(s, "db", 1, &p) == 0, "a point of one segmented file");
        sleep(1); /* point names are seconds */
        ok(make_point(s, "db", 2, &newer) == 0, "a newer point");
        test_copy_on_write(s, path, &p);
        test_aligned_pages(s, path, &p);
        test_times_after_crash(s, path, &p);
        test_held_open(s, &p, &newer);
        cs_store_unref(s);
        return tap_done();
}
