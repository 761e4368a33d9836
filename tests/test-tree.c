/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of point trees: directories spanning several pages, lookups,
 * inline and segmented file content, points, and malformed objects.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cs-internal.h"
#include "tap.h"

static void fake_id(cs_chunk_id *id, uint64_t n)
{
        memset(id, 0, sizeof(*id));
        memcpy(id->bytes, &n, sizeof(n));
        id->bytes[15] = 0x5a;
}

static void test_big_directory(void)
{
        cs_store *s = tap_store("tree-dir");
        cs_dir_builder *b = NULL;
        cs_dir *d = NULL;
        cs_chunk_id dir_id, data_id;
        char name[64], value[32];
        uint8_t block[4096];
        const size_t n = 5000;
        size_t bad = 0;

        tap_fill(block, sizeof(block), DATA_TEXT, 1);
        cs_store_put(s, CS_KIND_DATA, block, sizeof(block), &data_id);
        ok(cs_dir_builder_new(s, &b) == 0, "a builder");
        /* Added in reverse order: finish() sorts. */
        for (size_t i = n; i-- > 0;) {
                cs_xattr x = { .name = "user.i", .value = value, .size = (uint32_t) snprintf(value, sizeof(value), "%zu", i) };
                cs_entry e = {
                        .name = name,
                        .name_len = (size_t) snprintf(name, sizeof(name), "file-%05zu", i),
                        .mode = S_IFREG | 0644,
                        .nlink = 1,
                        .size = 4096,
                        .mtime_sec = (int64_t) i,
                        .mtime_nsec = 999999999,
                        .n_xattrs = 1,
                        .xattrs = &x,
                        .content = { .n = 1, .ids = &data_id },
                };
                if (cs_dir_builder_add(b, &e) < 0)
                        bad++;
        }
        is_int(bad, 0, "add %zu entries", n);
        cs_entry dup = { .name = "file-00007", .name_len = 10, .mode = S_IFREG | 0644, .content = { .n = 1, .ids = &data_id }, .size = 1 };
        cs_dir_builder_add(b, &dup);
        is_int(cs_dir_builder_finish(b, &dir_id), -EEXIST, "a duplicate name is refused");
        cs_dir_builder_free(b);

        cs_dir_builder_new(s, &b);
        for (size_t i = 0; i < n; i++) {
                cs_entry e = {
                        .name = name,
                        .name_len = (size_t) snprintf(name, sizeof(name), "file-%05zu", i),
                        .mode = S_IFREG | 0644,
                        .size = 4096,
                        .mtime_sec = (int64_t) i,
                        .content = { .n = 1, .ids = &data_id },
                };
                cs_dir_builder_add(b, &e);
        }
        cs_entry slash = { .name = "a/b", .name_len = 3, .mode = S_IFDIR | 0755 };
        is_int(cs_dir_builder_add(b, &slash), -EINVAL, "a name with a slash is refused");
        cs_entry dotdot = { .name = "..", .name_len = 2, .mode = S_IFDIR | 0755 };
        is_int(cs_dir_builder_add(b, &dotdot), -EINVAL, "'..' is refused");
        ok(cs_dir_builder_finish(b, &dir_id) == 0, "finish a directory of %zu entries", n);
        cs_dir_builder_free(b);

        cs_chunk_info info;
        cs_store_has(s, &dir_id, &info);
        ok(info.size < 4096, "its index object is small (%u bytes): entries live in pages", info.size);

        ok(cs_dir_load(s, &dir_id, &d) == 0, "load it");
        is_int(cs_dir_size(d), n, "every entry is there");
        for (size_t i = 1; i < cs_dir_size(d); i++)
                if (memcmp(cs_dir_entry(d, i - 1)->name, cs_dir_entry(d, i)->name, 10) >= 0)
                        bad++;
        is_int(bad, 0, "in name order");
        const cs_entry *e = cs_dir_find(d, "file-03333", 10);
        ok(e && e->mtime_sec == 3333 && e->content.n == 1 && cs_chunk_id_equal(&e->content.ids[0], &data_id),
           "find an entry by name");
        ok(!cs_dir_find(d, "file-99999", 10), "a missing name is not found");
        cs_dir_free(d);

        /* The same entries give the same directory id: a Merkle tree. */
        cs_chunk_id again;
        cs_dir_builder_new(s, &b);
        for (size_t i = 0; i < n; i++) {
                cs_entry f = {
                        .name = name,
                        .name_len = (size_t) snprintf(name, sizeof(name), "file-%05zu", i),
                        .mode = S_IFREG | 0644,
                        .size = 4096,
                        .mtime_sec = (int64_t) i,
                        .content = { .n = 1, .ids = &data_id },
                };
                cs_dir_builder_add(b, &f);
        }
        cs_dir_builder_finish(b, &again);
        cs_dir_builder_free(b);
        ok(cs_chunk_id_equal(&again, &dir_id), "the same entries give the same directory id");
        cs_store_unref(s);
}

static void test_content(void)
{
        cs_store *s = tap_store("tree-content");
        const size_t n = 3 * CS_SEGMENT_BLOCKS + 17;
        cs_chunk_id *blocks = calloc(n, sizeof(*blocks)), *back = calloc(n, sizeof(*back)), *storage = NULL;
        cs_content c;

        for (size_t i = 0; i < n; i++)
                if (i % 7)
                        fake_id(&blocks[i], i); /* every seventh is a hole */
        ok(cs_content_build(s, blocks, 10, &c, &storage) == 0 && !c.segmented && c.n == 10 && !storage,
           "a small file's block list is inline");
        ok(c.data_blocks_known && c.data_blocks == 8, "it counts its blocks that are not holes");
        ok(cs_content_build(s, blocks, n, &c, &storage) == 0 && c.segmented && c.n == 4, "a large one is segmented");
        ok(c.data_blocks_known && c.data_blocks == n - DIV_ROUND_UP(n, 7), "and counts its blocks that are not holes");
        ok(cs_content_blocks(s, &c, 0, n, back) == 0 && memcmp(back, blocks, n * sizeof(*blocks)) == 0,
           "its block ids read back");
        ok(cs_content_blocks(s, &c, CS_SEGMENT_BLOCKS - 5, 10, back) == 0 &&
                   memcmp(back, blocks + CS_SEGMENT_BLOCKS - 5, 10 * sizeof(*blocks)) == 0,
           "a range across a segment boundary reads back");
        is_int(cs_content_blocks(s, &c, n - 1, 2, back), -EINVAL, "a range past the end is refused");
        free(storage);
        free(blocks);
        free(back);
        cs_store_unref(s);
}

/* A segmented file of size bytes with a data block every `every` blocks,
 * in a directory of its own: the entry as loaded back. */
static int sparse_entry_round_trip(cs_store *s, uint64_t size, size_t every, cs_dir **ret_dir,
                                   const cs_entry **ret)
{
        size_t n = (size_t) cs_store_blocks_of(s, size);
        cs_chunk_id *blocks = calloc(n, sizeof(*blocks)), *storage = NULL, dir_id;
        cs_dir_builder *b = NULL;
        cs_entry e = { .name = "sparse", .name_len = 6, .mode = S_IFREG | 0600, .nlink = 1, .size = size };
        int r;

        for (size_t i = 0; i < n; i += every)
                fake_id(&blocks[i], i + 1);
        r = cs_content_build(s, blocks, n, &e.content, &storage);
        if (r >= 0)
                r = cs_dir_builder_new(s, &b);
        if (r >= 0)
                r = cs_dir_builder_add(b, &e);
        if (r >= 0)
                r = cs_dir_builder_finish(b, &dir_id);
        if (r >= 0)
                r = cs_dir_load(s, &dir_id, ret_dir);
        if (r >= 0)
                *ret = cs_dir_entry(*ret_dir, 0);
        cs_dir_builder_free(b);
        free(storage);
        free(blocks);
        return r;
}

static void test_data_blocks(void)
{
        cs_store *s = tap_store("tree-data-blocks");
        const uint64_t size = 2 * CS_SEGMENT_BLOCKS * 4096ull + 100;
        const uint64_t data_blocks = DIV_ROUND_UP(cs_store_blocks_of(s, size), 1000);
        const cs_entry *e = NULL;
        cs_dir *d = NULL;
        char path[512];
        cs_config config;
        int dir_fd;

        ok(sparse_entry_round_trip(s, size, 1000, &d, &e) == 0 && e->content.segmented,
           "a sparse segmented file goes into a directory and back");
        ok(e && e->content.data_blocks_known && e->content.data_blocks == data_blocks,
           "its entry says how many of its blocks are not holes (%" PRIu64 ")", data_blocks);
        ok(e && cs_content_data_bytes(&e->content, e->size, 4096) == data_blocks * 4096,
           "so its data bytes are those blocks'");
        cs_dir_free(d);
        cs_store_unref(s);

        /* A format 1 store: a reader of that format would take the count
         * for the next field, so it is not written, and not known. */
        tap_path(path, sizeof(path), "tree-data-blocks");
        dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ok(dir_fd >= 0 && cs_config_read(dir_fd, &config) == 0 && config.format == CS_FORMAT_VERSION,
           "a new store has format %d", CS_FORMAT_VERSION);
        config.format = 1;
        ok(cs_config_write(dir_fd, &config) == 0, "make it format 1");
        close(dir_fd);
        s = NULL;
        ok(cs_store_open(path, CS_OPEN_WRITE, &s) == 0, "a format 1 store opens");
        ok(sparse_entry_round_trip(s, size, 1000, &d, &e) == 0 && e->content.segmented &&
                   !e->content.data_blocks_known,
           "its entries do not carry the count");
        ok(e && cs_content_data_bytes(&e->content, e->size, 4096) == size,
           "so every byte counts as data, as before");
        cs_dir_free(d);
        cs_store_unref(s);
}

static void test_point_and_damage(void)
{
        cs_store *s = tap_store("tree-point");
        cs_dir_builder *b = NULL;
        cs_chunk_id dir_id, point, bogus;
        cs_entry root = { .mode = S_IFDIR | 0750, .uid = 7, .gid = 8, .mtime_sec = -86400, .mtime_nsec = 5 }, got;
        cs_dir *keep = NULL, *d = NULL;

        cs_dir_builder_new(s, &b);
        cs_entry link = { .name = "l", .name_len = 1, .mode = S_IFLNK | 0777, .size = 6, .target = "target" };
        cs_dir_builder_add(b, &link);
        cs_dir_builder_finish(b, &dir_id);
        cs_dir_builder_free(b);
        root.subdir = dir_id;
        ok(cs_point_build(s, &root, &point) == 0, "build a point");
        ok(cs_point_load(s, &point, &got, &keep) == 0, "load it");
        ok(got.uid == 7 && got.gid == 8 && got.mode == (S_IFDIR | 0750) && got.mtime_sec == -86400 &&
                   got.mtime_nsec == 5 && cs_chunk_id_equal(&got.subdir, &dir_id),
           "the root's metadata survives, a time before 1970 included");
        cs_dir_free(keep);
        ok(cs_dir_load(s, &dir_id, &d) == 0 && cs_dir_size(d) == 1 && cs_dir_entry(d, 0)->size == 6 &&
                   memcmp(cs_dir_entry(d, 0)->target, "target", 6) == 0,
           "a symlink's target survives");
        cs_dir_free(d);

        /* A tree object that claims to be a directory but is garbage. */
        uint8_t junk[64] = { 0 };
        memcpy(junk + 4, "CDI1", 4);
        memset(junk + 8, 0xff, 40);
        cs_store_put(s, CS_KIND_TREE, junk, sizeof(junk), &bogus);
        is_int(cs_dir_load(s, &bogus, &d), -EBADMSG, "a malformed directory is EBADMSG");
        is_int(cs_dir_load(s, &point, &d), -EBADMSG, "a point is not a directory");
        is_int(cs_point_load(s, &dir_id, &got, &keep), -EBADMSG, "a directory is not a point");
        cs_store_unref(s);
}

int main(void)
{
        test_big_directory();
        test_content();
        test_data_blocks();
        test_point_and_damage();
        return tap_done();
}
