/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the store: creating and opening, put/get round trips,
 * deduplication, zero blocks, visibility across handles, damage detection
 * (flipped bytes, truncated and missing packs) and concurrent puts.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cs-internal.h"
#include "tap.h"

static int write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        if (!f)
                return -errno;
        fputs(text, f);
        return fclose(f) == 0 ? 0 : -errno;
}

static void test_init_and_open(void)
{
        char path[512], other[512], cfg[600], text[256];
        cs_store *s = NULL;
        struct stat st;

        tap_path(path, sizeof(path), "store-init");
        is_int(cs_store_init(path, &(cs_init_params) { .block_size = 3000 }), -EINVAL, "a block size that is not a power of two is refused");
        is_int(cs_store_init(path, &(cs_init_params) { .block_size = 2u << 20 }), -EINVAL, "a block size over 1 MiB is refused");
        is_int(cs_store_init(path, &(cs_init_params) { .block_size = 2048 }), -EINVAL, "a block size under 4 KiB is refused");
        is_int(cs_store_init(path, &(cs_init_params) { .block_size = 16384 }), 0, "a store is created");
        ok(stat(path, &st) == 0 && (st.st_mode & 07777) == 0700, "its directory is 0700");
        snprintf(cfg, sizeof(cfg), "%s/config", path);
        ok(stat(cfg, &st) == 0 && (st.st_mode & 07777) == 0600, "its config is 0600");
        snprintf(cfg, sizeof(cfg), "%s/catalog.db", path);
        ok(stat(cfg, &st) == 0 && (st.st_mode & 07777) == 0600, "its catalog is 0600");
        is_int(cs_store_init(path, NULL), -EEXIST, "init refuses a non-empty directory");

        ok(cs_store_open(path, 0, &s) == 0, "the store opens");
        is_int(cs_store_block_size(s), 16384, "with the block size it was created with");
        s = cs_store_unref(s);

        tap_path(other, sizeof(other), "not-a-store");
        mkdir(other, 0700);
        is_int(cs_store_open(other, 0, &s), -EMEDIUMTYPE, "a directory that is not a store is refused");
        tap_path(other, sizeof(other), "does-not-exist");
        is_int(cs_store_open(other, 0, &s), -ENOENT, "a missing directory is refused");

        tap_path(other, sizeof(other), "newer");
        cs_store_init(other, NULL);
        snprintf(cfg, sizeof(cfg), "%s/config", other);
        snprintf(text, sizeof(text),
                 "format = %d\nblock_size = 65536\ncompression = lz4\nfuture = yes\n"
                 "secret = 0000000000000000000000000000000000000000000000000000000000000000\n",
                 CS_FORMAT_VERSION + 1);
        write_file(cfg, text);
        is_int(cs_store_open(other, 0, &s), -EPROTONOSUPPORT, "a store of a newer format is refused");
        write_file(cfg, "format = 1\nblock_size = 65536\n");
        is_int(cs_store_open(other, 0, &s), -EBADMSG, "a truncated config is refused");
}

static void test_round_trips(void)
{
        static const size_t sizes[] = { 1, 100, 4095, 4096, 4097, 40000, 65535, 65536 };
        static const char *const kinds[] = { "random", "text", "zero" };
        char path[512];
        cs_store *w = NULL;
        uint8_t *data = malloc(65536), *out = malloc(65536);
        cs_stats st;
        int r;

        tap_path(path, sizeof(path), "store-rt");
        cs_store_init(path, NULL);
        ok(cs_store_open(path, CS_OPEN_WRITE, &w) == 0, "open for writing");

        for (int kind = 0; kind < 3; kind++)
                for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                        cs_chunk_id id, again;
                        tap_fill(data, sizes[i], kind, 100 + i);
                        r = cs_store_put(w, CS_KIND_DATA, data, sizes[i], &id);
                        if (kind == DATA_ZERO) {
                                ok(r == 0 && cs_chunk_id_is_zero(&id), "%zu zero bytes give the zero id", sizes[i]);
                                is_int(cs_store_get(w, &id, out, 65536), -ENOENT, "and the zero id is never stored");
                                continue;
                        }
                        is_int(r, 1, "put %zu %s bytes: new", sizes[i], kinds[kind]);
                        is_int(cs_store_put(w, CS_KIND_DATA, data, sizes[i], &again), 0, "put again: deduplicated");
                        ok(cs_chunk_id_equal(&id, &again), "same id");
                        memset(out, 0x55, 65536);
                        r = cs_store_get(w, &id, out, 65536);
                        ok(r == (int) sizes[i] && memcmp(out, data, sizes[i]) == 0, "get before commit returns the data");
                }
        is_int(cs_store_commit(w), 0, "commit");

        tap_fill(data, 65536, DATA_TEXT, 1);
        is_int(cs_store_put(w, CS_KIND_DATA, data, 65537, &(cs_chunk_id) {}), -EINVAL, "a data chunk larger than a block is refused");
        is_int(cs_store_put(w, CS_KIND_DATA, data, 0, &(cs_chunk_id) {}), -EINVAL, "an empty chunk is refused");

        ok(cs_store_stats(w, &st) == 0, "stats");
        uint64_t expect_unique = 0;
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
                expect_unique += 2 * sizes[i];
        is_int(st.unique_bytes, expect_unique, "unique bytes count every distinct chunk once");
        is_int(st.logical_bytes, 2 * expect_unique + expect_unique / 2, "logical bytes count every put");
        ok(st.stored_bytes < st.unique_bytes, "text compressed: %llu stored of %llu unique",
           (unsigned long long) st.stored_bytes, (unsigned long long) st.unique_bytes);
        w = cs_store_unref(w);

        /* A reader in a second handle sees everything that was committed. */
        cs_store *rd = NULL;
        ok(cs_store_open(path, 0, &rd) == 0, "open read-only");
        cs_chunk_id id;
        tap_fill(data, 40000, DATA_TEXT, 105);
        ok(cs_store_open(path, CS_OPEN_WRITE, &w) == 0, "reopen for writing");
        is_int(cs_store_put(w, CS_KIND_DATA, data, 40000, &id), 0, "a committed chunk is deduplicated after reopening");
        ok(cs_store_get(rd, &id, out, 65536) == 40000 && memcmp(out, data, 40000) == 0, "a read-only handle reads it");
        is_int(cs_store_get(rd, &id, out, 100), -ENOBUFS, "a short buffer is refused");
        is_int(cs_store_put(rd, CS_KIND_DATA, data, 100, &id), -EROFS, "a read-only handle cannot put");

        tap_fill(data, 5000, DATA_RANDOM, 999);
        is_int(cs_store_put(w, CS_KIND_DATA, data, 5000, &id), 1, "put a new chunk");
        is_int(cs_store_get(rd, &id, out, 65536), -ENOENT, "another handle does not see it before commit");
        is_int(cs_store_commit(w), 0, "commit");
        is_int(cs_store_get(rd, &id, out, 65536), 5000, "another handle sees it after commit");

        /* Dedup proven by the bytes on disk. */
        cs_stats before, after;
        cs_store_commit(w);
        cs_store_stats(w, &before);
        tap_fill(data, 65536, DATA_RANDOM, 4242);
        for (int i = 0; i < 50; i++)
                cs_store_put(w, CS_KIND_DATA, data, 65536, &id);
        cs_store_commit(w);
        cs_store_stats(rd, &after);
        is_int(after.stored_bytes - before.stored_bytes, 65536, "50 puts of one random block store it once");
        is_int(after.chunks - before.chunks, 1, "as one chunk");

        cs_store_unref(rd);
        cs_store_unref(w);
        free(data);
        free(out);
}

static int flip_byte(const char *store, uint64_t pack, uint64_t offset)
{
        char path[600];
        int fd;
        uint8_t b;

        snprintf(path, sizeof(path), "%s/packs/%016llx.pack", store, (unsigned long long) pack);
        fd = open(path, O_RDWR);
        if (fd < 0)
                return -errno;
        if (pread(fd, &b, 1, (off_t) offset) != 1)
                return -EIO;
        b ^= 0x10;
        if (pwrite(fd, &b, 1, (off_t) offset) != 1)
                return -EIO;
        close(fd);
        return 0;
}

static void test_damage(void)
{
        char path[512], pack_path[600];
        cs_store *w = NULL;
        uint8_t *data = malloc(65536), *out = malloc(65536);
        cs_chunk_id ids[3];
        cs_chunk_info info;
        cs_verify_report rep;

        tap_path(path, sizeof(path), "store-damage");
        cs_store_init(path, NULL);
        cs_store_open(path, CS_OPEN_WRITE, &w);
        for (int i = 0; i < 3; i++) {
                tap_fill(data, 65536, DATA_TEXT, 7000 + i);
                cs_store_put(w, CS_KIND_DATA, data, 65536, &ids[i]);
        }
        cs_store_commit(w);
        is_int(cs_store_verify(w, CS_VERIFY_DATA, NULL, NULL, &rep), 0, "a fresh store verifies");
        is_int(rep.chunks_checked, 3, "every chunk was checked");

        ok(cs_store_has(w, &ids[1], &info) == 1, "locate chunk 1");
        ok(flip_byte(path, info.pack, info.offset + CS_RECORD_HEADER_SIZE + info.stored_size / 2) == 0, "flip one byte of its payload");
        is_int(cs_store_get(w, &ids[1], out, 65536), -EBADMSG, "get reports the damage");
        is_int(cs_store_get(w, &ids[0], out, 65536), 65536, "its neighbour still reads");
        is_int(cs_store_verify(w, 0, NULL, NULL, &rep), 0, "a header-only verify does not read payloads");
        is_int(cs_store_verify(w, CS_VERIFY_DATA, NULL, NULL, &rep), -EBADMSG, "verify --data finds the damage");
        is_int(rep.chunks_damaged, 1, "one damaged chunk");
        flip_byte(path, info.pack, info.offset + CS_RECORD_HEADER_SIZE + info.stored_size / 2);

        ok(flip_byte(path, info.pack, info.offset + 20) == 0, "flip one byte of its record header");
        is_int(cs_store_verify(w, 0, NULL, NULL, &rep), -EBADMSG, "verify finds a damaged header");
        is_int(cs_store_get(w, &ids[1], out, 65536), -EBADMSG, "get refuses a record that is not the one expected");
        flip_byte(path, info.pack, info.offset + 20);
        is_int(cs_store_verify(w, CS_VERIFY_DATA, NULL, NULL, &rep), 0, "undone, the store verifies again");

        /* Truncation: cut the pack inside its last record. */
        cs_store_has(w, &ids[2], &info);
        snprintf(pack_path, sizeof(pack_path), "%s/packs/%016llx.pack", path, (unsigned long long) info.pack);
        w = cs_store_unref(w);
        ok(truncate(pack_path, (off_t) (info.offset + 40)) == 0, "truncate the pack");
        cs_store_open(path, 0, &w);
        is_int(cs_store_get(w, &ids[2], out, 65536), -EBADMSG, "a truncated record reads as damage");
        is_int(cs_store_get(w, &ids[0], out, 65536), 65536, "records before the cut still read");
        is_int(cs_store_verify(w, 0, NULL, NULL, &rep), -EBADMSG, "verify reports the truncated pack");

        ok(unlink(pack_path) == 0, "delete the pack");
        w = cs_store_unref(w);
        cs_store_open(path, 0, &w);
        ok(cs_store_get(w, &ids[0], out, 65536) == -EIO, "a chunk of a missing pack reads as EIO");
        is_int(cs_store_verify(w, 0, NULL, NULL, &rep), -EBADMSG, "verify reports the missing pack");
        cs_store_unref(w);
        free(data);
        free(out);
}

typedef struct worker {
        cs_store *store;
        int seed;
        int failures;
        cs_chunk_id ids[200];
} worker;

static void *put_many(void *p)
{
        worker *wk = p;
        uint8_t *data = malloc(16384);

        for (int i = 0; i < 200; i++) {
                /* Half the chunks are shared between the workers. */
                tap_fill(data, 16384, DATA_TEXT, i % 2 ? (uint64_t) i : (uint64_t) (wk->seed * 1000 + i));
                if (cs_store_put(wk->store, CS_KIND_DATA, data, 16384, &wk->ids[i]) < 0)
                        wk->failures++;
        }
        free(data);
        return NULL;
}

static void test_threads(void)
{
        char path[512];
        cs_store *w = NULL;
        worker workers[4] = {};
        pthread_t threads[4];
        uint8_t *data = malloc(16384), *out = malloc(16384);
        int bad = 0;
        cs_stats st;

        tap_path(path, sizeof(path), "store-threads");
        cs_store_init(path, &(cs_init_params) { .block_size = 16384 });
        cs_store_open(path, CS_OPEN_WRITE, &w);
        for (int t = 0; t < 4; t++) {
                workers[t] = (worker) { .store = w, .seed = t + 1 };
                pthread_create(&threads[t], NULL, put_many, &workers[t]);
        }
        for (int t = 0; t < 4; t++) {
                pthread_join(threads[t], NULL);
                bad += workers[t].failures;
        }
        is_int(bad, 0, "four threads put at once without errors");
        is_int(cs_store_commit(w), 0, "commit");
        for (int t = 0; t < 4; t++)
                for (int i = 0; i < 200; i++) {
                        tap_fill(data, 16384, DATA_TEXT, i % 2 ? (uint64_t) i : (uint64_t) ((t + 1) * 1000 + i));
                        if (cs_store_get(w, &workers[t].ids[i], out, 16384) != 16384 || memcmp(out, data, 16384))
                                bad++;
                }
        is_int(bad, 0, "every chunk reads back");
        cs_store_stats(w, &st);
        is_int(st.chunks, 4 * 100 + 100, "shared chunks were stored once");
        is_int(cs_store_verify(w, CS_VERIFY_DATA, NULL, NULL, NULL), 0, "the store verifies");
        cs_store_unref(w);
        free(data);
        free(out);
}

/* Four threads put the same chunks in the same order, as two snapshot
 * workers reading identical files do: each is written once (design note
 * 7 of store.c), so the pack holds no second copy for compaction. */
#define SAME_CHUNKS 300

typedef struct same_worker {
        cs_store *store;
        pthread_barrier_t *start;
        int failures;
} same_worker;

static void *put_same(void *p)
{
        same_worker *wk = p;
        uint8_t *data = malloc(16384);

        pthread_barrier_wait(wk->start);
        for (int i = 0; i < SAME_CHUNKS; i++) {
                cs_chunk_id id;
                tap_fill(data, 16384, DATA_RANDOM, (uint64_t) i);
                if (cs_store_put(wk->store, CS_KIND_DATA, data, 16384, &id) < 0)
                        wk->failures++;
        }
        free(data);
        return NULL;
}

static void test_same_chunks_at_once(void)
{
        char path[512];
        cs_store *w = NULL;
        same_worker workers[4];
        pthread_t threads[4];
        pthread_barrier_t start;
        int bad = 0;
        cs_stats st;

        tap_path(path, sizeof(path), "store-same");
        cs_store_init(path, &(cs_init_params) { .block_size = 16384 });
        cs_store_open(path, CS_OPEN_WRITE, &w);
        pthread_barrier_init(&start, NULL, 4);
        for (int t = 0; t < 4; t++) {
                workers[t] = (same_worker) { .store = w, .start = &start };
                pthread_create(&threads[t], NULL, put_same, &workers[t]);
        }
        for (int t = 0; t < 4; t++) {
                pthread_join(threads[t], NULL);
                bad += workers[t].failures;
        }
        pthread_barrier_destroy(&start);
        is_int(bad, 0, "four threads put the same chunks at once without errors");
        is_int(cs_store_commit(w), 0, "commit");
        cs_store_stats(w, &st);
        is_int(st.chunks, SAME_CHUNKS, "each chunk is in the catalog once");
        is_int(w->pack.size, CS_PACK_HEADER_SIZE + st.chunks * CS_RECORD_HEADER_SIZE + st.stored_bytes,
               "and in the pack once: no second copy was written");
        is_int(cs_store_verify(w, CS_VERIFY_DATA, NULL, NULL, NULL), 0, "the store verifies");
        cs_store_unref(w);
}

/* Enough incompressible data from two threads to fill several batches
 * and a pack: the committer takes them in the background while the
 * threads go on putting and reading back what they put. */
#define BIG_CHUNKS 640

typedef struct big_worker {
        cs_store *store;
        int seed;
        int failures;
        cs_chunk_id ids[BIG_CHUNKS];
} big_worker;

static void *put_big(void *p)
{
        big_worker *wk = p;
        uint8_t *data = malloc(65536), *out = malloc(65536);

        for (int i = 0; i < BIG_CHUNKS; i++) {
                tap_fill(data, 65536, DATA_RANDOM, (uint64_t) (wk->seed * 100000 + i));
                if (cs_store_put(wk->store, CS_KIND_DATA, data, 65536, &wk->ids[i]) < 0)
                        wk->failures++;
                /* Whether pending, being committed or committed. */
                else if (i % 7 == 0 && (cs_store_get(wk->store, &wk->ids[i], out, 65536) != 65536 ||
                                        memcmp(out, data, 65536)))
                        wk->failures++;
        }
        free(data);
        free(out);
        return NULL;
}

static int big_readback(cs_store *store, big_worker *workers, int n)
{
        uint8_t *data = malloc(65536), *out = malloc(65536);
        int bad = 0;

        for (int t = 0; t < n; t++)
                for (int i = 0; i < BIG_CHUNKS; i++) {
                        tap_fill(data, 65536, DATA_RANDOM, (uint64_t) (workers[t].seed * 100000 + i));
                        if (cs_store_get(store, &workers[t].ids[i], out, 65536) != 65536 || memcmp(out, data, 65536))
                                bad++;
                }
        free(data);
        free(out);
        return bad;
}

static void test_background_commits(void)
{
        char path[512];
        cs_store *w = NULL;
        big_worker *workers = calloc(2, sizeof(*workers));
        pthread_t threads[2];
        int bad = 0;
        cs_stats st;

        tap_path(path, sizeof(path), "store-committer");
        cs_store_init(path, &(cs_init_params) { .block_size = 65536 });
        cs_store_open(path, CS_OPEN_WRITE, &w);
        for (int t = 0; t < 2; t++) {
                workers[t] = (big_worker) { .store = w, .seed = t + 1 };
                pthread_create(&threads[t], NULL, put_big, &workers[t]);
        }
        for (int t = 0; t < 2; t++) {
                pthread_join(threads[t], NULL);
                bad += workers[t].failures;
        }
        is_int(bad, 0, "80 MiB from two threads: every put and read-back succeeds");
        is_int(cs_store_commit(w), 0, "commit the rest");
        cs_store_stats(w, &st);
        is_int(st.chunks, 2 * BIG_CHUNKS, "every chunk is in the catalog");
        ok(st.packs >= 2, "a pack was sealed for its size and another begun (%llu packs)",
           (unsigned long long) st.packs);
        is_int(big_readback(w, workers, 2), 0, "every chunk reads back");
        cs_store_unref(w);

        cs_store_open(path, 0, &w);
        is_int(big_readback(w, workers, 2), 0, "every chunk reads back after reopening");
        is_int(cs_store_verify(w, CS_VERIFY_DATA, NULL, NULL, NULL), 0, "the store verifies");
        cs_store_unref(w);
        free(workers);
}

/* Whether files in dir take O_DIRECT (ext4 does, tmpfs does not). */
static bool direct_io_works(const char *dir)
{
        char path[600];
        int fd;

        snprintf(path, sizeof(path), "%s/direct-probe", dir);
        fd = open(path, O_RDWR | O_CREAT | O_DIRECT, 0600);
        if (fd >= 0)
                close(fd);
        unlink(path);
        return fd >= 0;
}

/* Pages of a file that are in the page cache, out of *ret_total. */
static size_t resident_pages(const char *path, size_t *ret_total)
{
        size_t page = (size_t) sysconf(_SC_PAGESIZE), n = 0, total;
        struct stat st;
        unsigned char *vec;
        void *map;
        int fd = open(path, O_RDONLY);

        *ret_total = 0;
        if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0)
                goto out;
        total = ((size_t) st.st_size + page - 1) / page;
        map = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        vec = malloc(total);
        if (map != MAP_FAILED && vec && mincore(map, (size_t) st.st_size, vec) == 0) {
                for (size_t i = 0; i < total; i++)
                        n += vec[i] & 1;
                *ret_total = total;
        }
        free(vec);
        if (map != MAP_FAILED)
                munmap(map, (size_t) st.st_size);
out:
        if (fd >= 0)
                close(fd);
        return n;
}

/* A chunk's bytes read back equal what was put. */
static bool reads_back(cs_store *s, const cs_chunk_id *id, const void *data, size_t size)
{
        uint8_t *out = malloc(size);
        bool same = out && cs_store_get(s, id, out, size) == (int) size && memcmp(out, data, size) == 0;

        free(out);
        return same;
}

#define STAGED_CHUNKS 40
#define STAGED_TREE_SIZE (12u * 1024 * 1024) /* more than a stage's ring */

/* Packs written through a stage (stage.c): every byte readable before it
 * reaches the file, whole after commits that each leave a partial segment,
 * and a tree chunk bigger than the ring. */
static void test_staged_packs(void)
{
        size_t bs = 65536;
        uint8_t *data = malloc(STAGED_CHUNKS * bs), *tree = malloc(STAGED_TREE_SIZE);
        cs_chunk_id ids[STAGED_CHUNKS], tree_id;
        char path[512], pack[600];
        int bad = 0, r = 0;
        cs_store *w = NULL;
        struct stat st;

        tap_path(path, sizeof(path), "store-staged");
        cs_store_init(path, &(cs_init_params) { .block_size = (uint32_t) bs });
        cs_store_open(path, CS_OPEN_WRITE, &w);
        for (size_t i = 0; i < STAGED_CHUNKS; i++)
                tap_fill(data + i * bs, bs, i % 2 ? DATA_RANDOM : DATA_TEXT, 700 + i);
        tap_fill(tree, STAGED_TREE_SIZE, DATA_RANDOM, 799);

        /* 40 x 64 KiB, half of it incompressible: records cross segments. */
        for (size_t i = 0; i < STAGED_CHUNKS / 2; i++)
                if (cs_store_put(w, CS_KIND_DATA, data + i * bs, bs, &ids[i]) != 1)
                        bad++;
        for (size_t i = 0; i < STAGED_CHUNKS / 2; i++)
                bad += !reads_back(w, &ids[i], data + i * bs, bs);
        is_int(bad, 0, "20 chunks read back before any commit");
        is_int(cs_store_put(w, CS_KIND_TREE, tree, STAGED_TREE_SIZE, &tree_id), 1,
               "a 12 MiB tree chunk is put through an 8 MiB ring");
        ok(reads_back(w, &tree_id, tree, STAGED_TREE_SIZE), "and reads back before a commit");

        /* Each commit flushes a partial last segment, which the next
         * appends fill and the next flush writes again. */
        for (size_t i = STAGED_CHUNKS / 2; i < STAGED_CHUNKS; i++) {
                if (cs_store_put(w, CS_KIND_DATA, data + i * bs, bs, &ids[i]) != 1 || cs_store_commit(w) < 0)
                        bad++;
        }
        is_int(bad, 0, "20 more chunks, a commit after each");
        for (size_t i = 0; i < STAGED_CHUNKS; i++)
                bad += !reads_back(w, &ids[i], data + i * bs, bs);
        is_int(bad, 0, "every chunk reads back after the commits");

        cs_pack_path(w->pack.id, pack + snprintf(pack, 80, "%s/", path));
        cs_store_unref(w);
        r = stat(pack, &st);
        ok(r == 0 && st.st_size % 4096 != 0,
           "closing the handle cuts the pack to its records, not the 4 KiB pad (%lld bytes)",
           (long long) st.st_size);

        r = cs_store_open(path, 0, &w);
        for (size_t i = 0; r == 0 && i < STAGED_CHUNKS; i++)
                bad += !reads_back(w, &ids[i], data + i * bs, bs);
        is_int(bad, 0, "every chunk reads back after reopening");
        ok(r == 0 && reads_back(w, &tree_id, tree, STAGED_TREE_SIZE), "so does the tree chunk");
        is_int(cs_store_verify(w, CS_VERIFY_DATA, NULL, NULL, NULL), 0, "the store verifies");
        cs_store_unref(w);
        free(data);
        free(tree);
}

/* Records copied into a stage out of order (stage.c, design note 2):
 * four threads put 3 MiB chunks, which wait for ring room behind each
 * other, and small ones in between, while a fifth commits all along,
 * flushing partial segments under their copies. */
#define FILL_THREADS 4
#define FILL_ROUNDS 6
#define FILL_BIG (3u * 1024 * 1024)

typedef struct fill_worker {
        cs_store *store;
        unsigned seed;
        int failures;
        cs_chunk_id big[FILL_ROUNDS], small[FILL_ROUNDS];
} fill_worker;

static void fill_data(uint8_t *buf, size_t size, unsigned seed, int round, bool big)
{
        tap_fill(buf, size, big ? DATA_RANDOM : DATA_TEXT, seed * 1000u + (unsigned) round * 2u + big);
}

static void *put_fills(void *p)
{
        fill_worker *wk = p;
        uint8_t *big = malloc(FILL_BIG), *small = malloc(65536);

        for (int i = 0; i < FILL_ROUNDS; i++) {
                fill_data(big, FILL_BIG, wk->seed, i, true);
                fill_data(small, 65536, wk->seed, i, false);
                if (cs_store_put(wk->store, CS_KIND_TREE, big, FILL_BIG, &wk->big[i]) != 1 ||
                    cs_store_put(wk->store, CS_KIND_DATA, small, 65536, &wk->small[i]) != 1 ||
                    !reads_back(wk->store, &wk->big[i], big, FILL_BIG))
                        wk->failures++;
        }
        free(big);
        free(small);
        return NULL;
}

typedef struct committer {
        cs_store *store;
        bool stop; /* atomic */
        int commits, failures;
} committer;

static void *commit_along(void *p)
{
        committer *c = p;

        while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
                c->failures += cs_store_commit(c->store) < 0;
                c->commits++;
                usleep(500);
        }
        return NULL;
}

static void test_concurrent_fills(void)
{
        fill_worker workers[FILL_THREADS] = {};
        pthread_t threads[FILL_THREADS], commit_thread;
        uint8_t *data = malloc(FILL_BIG);
        committer c = {};
        char path[512];
        cs_store *w = NULL;
        int bad = 0, r;

        tap_path(path, sizeof(path), "store-fills");
        cs_store_init(path, &(cs_init_params) { .block_size = 65536 });
        cs_store_open(path, CS_OPEN_WRITE, &w);
        c.store = w;
        pthread_create(&commit_thread, NULL, commit_along, &c);
        for (unsigned t = 0; t < FILL_THREADS; t++) {
                workers[t] = (fill_worker) { .store = w, .seed = 40 + t };
                pthread_create(&threads[t], NULL, put_fills, &workers[t]);
        }
        for (unsigned t = 0; t < FILL_THREADS; t++) {
                pthread_join(threads[t], NULL);
                bad += workers[t].failures;
        }
        __atomic_store_n(&c.stop, true, __ATOMIC_RELEASE);
        pthread_join(commit_thread, NULL);
        is_int(bad, 0, "four threads put 3 MiB and 64 KiB chunks and read them back");
        ok(c.commits > 0 && c.failures == 0, "while %d commits ran along, none failing", c.commits);
        is_int(cs_store_commit(w), 0, "a last commit");
        cs_store_unref(w);

        r = cs_store_open(path, 0, &w);
        for (unsigned t = 0; r == 0 && t < FILL_THREADS; t++)
                for (int i = 0; i < FILL_ROUNDS; i++) {
                        fill_data(data, FILL_BIG, workers[t].seed, i, true);
                        bad += !reads_back(w, &workers[t].big[i], data, FILL_BIG);
                        fill_data(data, 65536, workers[t].seed, i, false);
                        bad += !reads_back(w, &workers[t].small[i], data, 65536);
                }
        is_int(r == 0 ? bad : -1, 0, "every chunk reads back after reopening");
        is_int(cs_store_verify(w, CS_VERIFY_DATA, NULL, NULL, NULL), 0, "the store verifies");
        cs_store_unref(w);
        free(data);
}

/* A forked child goes on with its parent's handle, here from two threads
 * (stage.c, design note 3): it has no flusher, so fills that find the
 * ring full write segments themselves, behind each other's copies. */
static void *put_in_child(void *p)
{
        fill_worker *wk = p;
        uint8_t *data = malloc(65536);

        for (int i = 0; i < 32; i++) {
                fill_data(data, 65536, wk->seed, i, true);
                if (cs_store_put(wk->store, CS_KIND_DATA, data, 65536, &wk->small[0]) != 1)
                        wk->failures++;
        }
        free(data);
        return NULL;
}

static void test_forked_child(void)
{
        uint8_t *data = malloc(65536);
        char path[512];
        cs_store *w = NULL;
        cs_chunk_id id;
        int status = -1;
        pid_t pid;

        tap_path(path, sizeof(path), "store-fork");
        cs_store_init(path, &(cs_init_params) { .block_size = 65536 });
        cs_store_open(path, CS_OPEN_WRITE, &w);
        tap_fill(data, 65536, DATA_RANDOM, 60);
        cs_store_put(w, CS_KIND_DATA, data, 65536, &id);
        cs_store_commit(w);
        fflush(stdout);
        pid = fork();
        if (pid == 0) {
                fill_worker workers[2] = { { .store = w, .seed = 61 }, { .store = w, .seed = 62 } };
                pthread_t threads[2];

                alarm(60);
                for (int t = 0; t < 2; t++)
                        pthread_create(&threads[t], NULL, put_in_child, &workers[t]);
                for (int t = 0; t < 2; t++)
                        pthread_join(threads[t], NULL);
                _exit(workers[0].failures + workers[1].failures == 0 && cs_store_commit(w) == 0 ? 0 : 1);
        }
        if (pid > 0)
                waitpid(pid, &status, 0);
        ok(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "a forked child puts 4 MiB from two threads and commits (status %d)", status);
        ok(reads_back(w, &id, data, 65536), "the parent's chunk still reads back in the parent");
        cs_store_unref(w);
        free(data);
}

/* Where direct I/O works, puts and commits leave the pack's bytes out of
 * the page cache (what reads fetch later is cached as usual). */
static void test_direct_writes(void)
{
        size_t bs = 65536, resident, total;
        uint8_t *data = malloc(bs);
        char path[512], pack[600];
        cs_chunk_id id;
        cs_store *w = NULL;
        int bad = 0;

        tap_path(path, sizeof(path), "store-direct");
        if (!direct_io_works(tap_scratch_dir())) {
                ok(1, "# SKIP the file system has no direct I/O: packs are written through the page cache");
                free(data);
                return;
        }
        cs_store_init(path, &(cs_init_params) { .block_size = (uint32_t) bs });
        cs_store_open(path, CS_OPEN_WRITE, &w);
        for (size_t i = 0; i < 200; i++) {
                tap_fill(data, bs, i % 2 ? DATA_RANDOM : DATA_TEXT, 900 + i);
                bad += cs_store_put(w, CS_KIND_DATA, data, bs, &id) != 1;
                if (i % 50 == 49)
                        bad += cs_store_commit(w) < 0;
        }
        is_int(bad, 0, "200 chunks put, a commit after every 50");
        cs_pack_path(w->pack.id, pack + snprintf(pack, 80, "%s/", path));
        resident = resident_pages(pack, &total);
        ok(total > 1500 && resident < total / 10, "the pack was written around the page cache (%zu of %zu pages cached)",
           resident, total);
        cs_store_unref(w);
        free(data);
}

/* A write that fails (here EFBIG, past RLIMIT_FSIZE) fails its put, half
 * a record may be left behind, and the handle goes on once the cause is
 * gone: later puts, commits and reads work. */
static void test_failed_write(void)
{
        size_t big = STAGED_TREE_SIZE, bs = 65536;
        uint8_t *tree = malloc(big), *data = malloc(bs);
        struct rlimit old, small = { .rlim_cur = 3u << 20 };
        cs_chunk_id tree_id, id;
        char path[512];
        cs_store *w = NULL;

        tap_path(path, sizeof(path), "store-efbig");
        cs_store_init(path, &(cs_init_params) { .block_size = (uint32_t) bs });
        cs_store_open(path, CS_OPEN_WRITE, &w);
        tap_fill(tree, big, DATA_RANDOM, 31);
        tap_fill(data, bs, DATA_TEXT, 32);
        signal(SIGXFSZ, SIG_IGN);
        getrlimit(RLIMIT_FSIZE, &old);
        small.rlim_max = old.rlim_max;
        setrlimit(RLIMIT_FSIZE, &small);
        is_int(cs_store_put(w, CS_KIND_TREE, tree, big, &tree_id), -EFBIG,
               "a 12 MiB put past a 3 MiB file size limit fails with EFBIG");
        /* More than a stage has reservations: each fails by itself, none
         * waits for a free one (stage.c, design note 6). */
        int failed = 0;
        for (int i = 0; i < 100; i++) {
                tap_fill(data, 4096, DATA_TEXT, 1000 + (uint64_t) i);
                failed += cs_store_put(w, CS_KIND_DATA, data, 4096, &id) == -EFBIG;
        }
        is_int(failed, 100, "100 more puts fail with EFBIG too, and return");
        tap_fill(data, bs, DATA_TEXT, 32);
        setrlimit(RLIMIT_FSIZE, &old);
        is_int(cs_store_put(w, CS_KIND_DATA, data, bs, &id), 1, "with the limit lifted, the next put works");
        is_int(cs_store_commit(w), 0, "and so does a commit");
        ok(reads_back(w, &id, data, bs), "the chunk reads back");
        is_int(cs_store_put(w, CS_KIND_TREE, tree, big, &tree_id), 1, "the big chunk goes in at a second try");
        is_int(cs_store_commit(w), 0, "commit");
        ok(reads_back(w, &tree_id, tree, big), "and reads back");
        cs_store_unref(w);
        cs_store_open(path, 0, &w);
        is_int(cs_store_verify(w, CS_VERIFY_DATA, NULL, NULL, NULL), 0, "the store verifies");
        cs_store_unref(w);
        free(tree);
        free(data);
}

int main(void)
{
        test_init_and_open();
        test_round_trips();
        test_damage();
        test_threads();
        test_same_chunks_at_once();
        test_background_commits();
        test_staged_packs();
        test_concurrent_fills();
        test_forked_child();
        test_direct_writes();
        test_failed_write();
        return tap_done();
}
