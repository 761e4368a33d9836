/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the tar-to-point builder (tools/tar-point.c): members of
 * every kind it accepts (the archive's root, implied directories, GNU long
 * names, ustar prefixes, base-256 sizes, symlinks, empty files), a second
 * archive under a prefix, a stream fed in pieces of awkward sizes, and the
 * malformed streams it must refuse.
 */
#include <errno.h>
#include <sys/stat.h>

#include "chunkstore.h"
#include "tap.h"
#include "tar-point.h"
#include "util/macro.h"

typedef struct tarbuf {
        uint8_t *data;
        size_t size, cap;
} tarbuf;

static void put(tarbuf *t, const void *p, size_t n)
{
        if (t->size + n > t->cap) {
                t->cap = (t->size + n) * 2;
                t->data = realloc(t->data, t->cap);
        }
        memcpy(t->data + t->size, p, n);
        t->size += n;
}

/* size - 1 octal digits and a NUL, as tar writes them. */
static void octal(uint8_t *field, size_t size, uint64_t v)
{
        field[size - 1] = 0;
        for (size_t i = size - 1; i-- > 0; v >>= 3)
                field[i] = (uint8_t) ('0' + (v & 7));
}

/* One member: header (ustar, checksummed), data, padding. */
static void member(tarbuf *t, const char *name, const char *prefix, char type, uint32_t mode, uint64_t size,
                   const void *data, const char *link, bool base256)
{
        uint8_t h[512] = {};
        unsigned sum = 0;

        memcpy(h, name, MIN(strlen(name), 100));
        octal(h + 100, 8, mode);
        octal(h + 108, 8, 1234);
        octal(h + 116, 8, 5678);
        if (base256) {
                h[124] = 0x80;
                for (int i = 0; i < 8; i++)
                        h[135 - i] = (uint8_t) (size >> (8 * i));
        } else
                octal(h + 124, 12, size);
        octal(h + 136, 12, 1700000000);
        memset(h + 148, ' ', 8);
        h[156] = (uint8_t) type;
        if (link)
                memcpy(h + 157, link, strlen(link));
        memcpy(h + 257, "ustar", 6);
        memcpy(h + 263, "00", 2);
        if (prefix)
                memcpy(h + 345, prefix, strlen(prefix));
        for (int i = 0; i < 512; i++)
                sum += h[i];
        octal(h + 148, 7, sum);
        put(t, h, 512);
        if (size) {
                static const uint8_t zeros[512];
                put(t, data, size);
                put(t, zeros, (512 - size % 512) % 512);
        }
}

static int feed_pieces(tar_point *tp, const tarbuf *t)
{
        static const size_t pieces[] = { 1, 7, 511, 513, 4096, 3, 65536 };
        size_t off = 0, k = 0;
        int r = 0;

        while (off < t->size && r >= 0) {
                size_t n = MIN(pieces[k++ % ELEMENTSOF(pieces)], t->size - off);
                r = tar_point_feed(tp, t->data + off, n);
                off += n;
        }
        return r;
}

/* The entry at a slash-separated path; its directory is kept in *keep. */
static const cs_entry *lookup(cs_store *s, const cs_chunk_id *point, const char *path, cs_dir **keep)
{
        cs_entry root;
        cs_dir *rk = NULL, *d = NULL;
        const cs_entry *e = NULL;
        const char *p = path;

        *keep = NULL;
        if (cs_point_load(s, point, &root, &rk) < 0 || cs_dir_load(s, &root.subdir, &d) < 0) {
                cs_dir_free(rk);
                return NULL;
        }
        cs_dir_free(rk);
        for (;;) {
                const char *slash = strchr(p, '/');
                size_t len = slash ? (size_t) (slash - p) : strlen(p);
                cs_dir *sub = NULL;

                e = cs_dir_find(d, p, len);
                if (!e || !slash)
                        break;
                if (!S_ISDIR(e->mode) || cs_dir_load(s, &e->subdir, &sub) < 0) {
                        e = NULL;
                        break;
                }
                cs_dir_free(d);
                d = sub;
                p = slash + 1;
        }
        *keep = d;
        return e;
}

static bool content_is(cs_store *s, const cs_entry *e, const uint8_t *want, size_t size)
{
        uint32_t bs = cs_store_block_size(s);
        size_t n = (size + bs - 1) / bs;
        cs_chunk_id *ids = calloc(n + 1, sizeof(*ids));
        uint8_t *buf = malloc(bs);
        bool same = e && e->size == size && ids && buf && cs_content_blocks(s, &e->content, 0, n, ids) >= 0;

        for (size_t i = 0; same && i < n; i++) {
                size_t len = MIN((size_t) bs, size - i * bs);
                same = cs_store_get(s, &ids[i], buf, bs) == (int) len && memcmp(buf, want + i * bs, len) == 0;
        }
        free(ids);
        free(buf);
        return same;
}

static void test_members(void)
{
        cs_store *s = tap_store("tar-members");
        tarbuf t = {}, ts = {};
        tar_point *tp = NULL;
        cs_chunk_id point;
        uint64_t files = 0, bytes = 0;
        uint8_t big[70000];
        char longname[160];
        cs_dir *keep = NULL;
        const cs_entry *e;

        tap_fill(big, sizeof(big), DATA_RANDOM, 7);
        memset(longname, 0, sizeof(longname));
        memcpy(longname, "long/", 5);
        memset(longname + 5, 'x', 145);

        member(&t, "./", NULL, '5', 0750, 0, NULL, NULL, false);
        member(&t, "dir/", NULL, '5', 0700, 0, NULL, NULL, false);
        member(&t, "dir/a", NULL, '0', 0600, sizeof(big), big, NULL, false);
        member(&t, "implied/sub/file", NULL, '0', 0644, 5, "hello", NULL, false);
        member(&t, "././@LongLink", NULL, 'L', 0, strlen(longname) + 1, longname, NULL, false);
        member(&t, "truncated-name", NULL, '0', 0600, 3, "abc", NULL, false);
        member(&t, "file", "pre/fix", '0', 0600, 4, "pfx!", NULL, false);
        member(&t, "link", NULL, '2', 0777, 0, NULL, "dir/a", false);
        member(&t, "empty", NULL, '0', 0600, 0, NULL, NULL, false);
        member(&t, "b256", NULL, '0', 0600, 10, "0123456789", NULL, true);
        member(&ts, "PG_15_1/x", NULL, '0', 0600, 2, "ts", NULL, false);

        ok(tar_point_new(s, 2, &tp) == 0, "a builder with two workers");
        ok(tar_point_begin(tp, "") == 0 && feed_pieces(tp, &t) == 0 && tar_point_end(tp) == 0,
           "the main archive, fed in pieces of 1 to 65536 bytes");
        ok(tar_point_begin(tp, "pg_tblspc/16385") == 0 && feed_pieces(tp, &ts) == 0 && tar_point_end(tp) == 0,
           "a second archive under a prefix");
        ok(tar_point_add_file(tp, "backup_manifest", "{}", 2) == 0, "a file added whole");
        ok(tar_point_finish(tp, &point, &files, &bytes) == 0, "finish builds the point");
        is_int(bytes, sizeof(big) + 5 + 3 + 4 + 10 + 2 + 2, "logical bytes are the files' sizes");

        cs_entry root;
        cs_dir *rk = NULL;
        ok(cs_point_load(s, &point, &root, &rk) == 0 && root.mode == (S_IFDIR | 0750),
           "the archive's root entry sets the root's mode");
        cs_dir_free(rk);
        e = lookup(s, &point, "dir/a", &keep);
        ok(e && e->mode == (S_IFREG | 0600) && e->uid == 1234 && e->gid == 5678 && e->mtime_sec == 1700000000,
           "a file's mode, owner and mtime");
        ok(content_is(s, e, big, sizeof(big)), "its 70000 bytes read back");
        cs_dir_free(keep);
        e = lookup(s, &point, "implied/sub/file", &keep);
        ok(content_is(s, e, (const uint8_t *) "hello", 5), "directories implied by a member's path");
        cs_dir_free(keep);
        e = lookup(s, &point, longname, &keep);
        ok(content_is(s, e, (const uint8_t *) "abc", 3), "a GNU long name (150 bytes)");
        cs_dir_free(keep);
        e = lookup(s, &point, "pre/fix/file", &keep);
        ok(content_is(s, e, (const uint8_t *) "pfx!", 4), "a ustar name prefix");
        cs_dir_free(keep);
        e = lookup(s, &point, "link", &keep);
        ok(e && S_ISLNK(e->mode) && e->size == 5 && memcmp(e->target, "dir/a", 5) == 0, "a symlink");
        cs_dir_free(keep);
        e = lookup(s, &point, "empty", &keep);
        ok(e && S_ISREG(e->mode) && e->size == 0, "an empty file");
        cs_dir_free(keep);
        e = lookup(s, &point, "b256", &keep);
        ok(content_is(s, e, (const uint8_t *) "0123456789", 10), "a size in base-256");
        cs_dir_free(keep);
        e = lookup(s, &point, "pg_tblspc/16385/PG_15_1/x", &keep);
        ok(content_is(s, e, (const uint8_t *) "ts", 2), "the prefixed archive's file");
        cs_dir_free(keep);
        e = lookup(s, &point, "backup_manifest", &keep);
        ok(content_is(s, e, (const uint8_t *) "{}", 2), "the added file");
        cs_dir_free(keep);

        tar_point_free(tp);
        free(t.data);
        free(ts.data);
        cs_store_unref(s);
}

/* Feeds one malformed stream; returns the first error. */
static int refusal(cs_store *s, const tarbuf *t, bool end)
{
        tar_point *tp = NULL;
        cs_chunk_id point;
        uint64_t files, bytes;
        int r = tar_point_new(s, 1, &tp);

        if (r >= 0)
                r = tar_point_begin(tp, "");
        if (r >= 0)
                r = feed_pieces(tp, t);
        if (r >= 0 && end)
                r = tar_point_end(tp);
        if (r >= 0)
                r = tar_point_finish(tp, &point, &files, &bytes);
        tar_point_free(tp);
        return r;
}

static void test_refusals(void)
{
        cs_store *s = tap_store("tar-refusals");
        tarbuf t = {};

        member(&t, "a", NULL, '0', 0600, 3, "abc", NULL, false);
        t.data[148] ^= 1;
        is_int(refusal(s, &t, true), -EBADMSG, "a bad header checksum");
        t.size = 0;
        member(&t, "pax", NULL, 'x', 0600, 3, "abc", NULL, false);
        is_int(refusal(s, &t, true), -EBADMSG, "a pax header (not understood)");
        t.size = 0;
        member(&t, "a/../../etc/passwd", NULL, '0', 0600, 3, "abc", NULL, false);
        is_int(refusal(s, &t, true), -EBADMSG, "a '..' component");
        t.size = 0;
        member(&t, "a", NULL, '0', 0600, 3000, (uint8_t[3000]) {}, NULL, false);
        t.size -= 1000;
        is_int(refusal(s, &t, true), -EBADMSG, "a stream that ends inside a file");
        t.size = 0;
        member(&t, "a", NULL, '0', 0600, 3, "abc", NULL, false);
        member(&t, "a", NULL, '0', 0600, 3, "xyz", NULL, false);
        is_int(refusal(s, &t, true), -EEXIST, "a name twice");
        t.size = 0;
        member(&t, "f", NULL, '0', 0600, 1, "x", NULL, false);
        member(&t, "f/g", NULL, '0', 0600, 1, "y", NULL, false);
        is_int(refusal(s, &t, true), -EBADMSG, "a file used as a directory");
        free(t.data);
        cs_store_unref(s);
}

int main(void)
{
        test_members();
        test_refusals();
        return tap_done();
}
