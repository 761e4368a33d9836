/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of roots, mark-and-sweep and compaction.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cs-internal.h"
#include "tap.h"

#define BLOCK 16384

static uint8_t data[BLOCK], out[BLOCK];

static cs_chunk_id put_text(cs_store *s, uint64_t seed)
{
        cs_chunk_id id;
        tap_fill(data, BLOCK, DATA_TEXT, seed);
        if (cs_store_put(s, CS_KIND_DATA, data, BLOCK, &id) < 0)
                printf("# put failed\n");
        return id;
}

static bool reads_back(cs_store *s, const cs_chunk_id *id, uint64_t seed)
{
        tap_fill(data, BLOCK, DATA_TEXT, seed);
        return cs_store_get(s, id, out, BLOCK) == BLOCK && memcmp(out, data, BLOCK) == 0;
}

static cs_chunk_id put_tree(cs_store *s, const cs_chunk_id *children, size_t n)
{
        size_t size = cs_tree_size(n, 4);
        uint8_t *buf = malloc(size);
        cs_chunk_id id;

        cs_tree_encode(buf, children, n, "body", 4);
        if (cs_store_put(s, CS_KIND_TREE, buf, size, &id) < 0)
                printf("# tree put failed\n");
        free(buf);
        return id;
}

static void test_sweep(void)
{
        char path[512];
        cs_store *s = NULL, *other = NULL;
        cs_chunk_id kept[3], dropped, tree, zero = {}, got;
        cs_gc_report rep;
        cs_verify_report vr;
        cs_stats st;

        tap_path(path, sizeof(path), "gc-sweep");
        cs_store_init(path, &(cs_init_params) { .block_size = BLOCK });
        cs_store_open(path, CS_OPEN_WRITE, &s);
        for (int i = 0; i < 3; i++)
                kept[i] = put_text(s, 10 + i);
        dropped = put_text(s, 99);
        cs_chunk_id children[4] = { kept[0], kept[1], zero, kept[2] };
        tree = put_tree(s, children, 4);
        is_int(cs_store_root_set(s, "point-a", &tree), 0, "set a root on a tree");
        ok(cs_store_root_get(s, "point-a", &got) == 0 && cs_chunk_id_equal(&got, &tree), "read the root back");
        is_int(cs_store_root_get(s, "nope", &got), -ENOENT, "a missing root is ENOENT");
        cs_chunk_id bogus = { { 9, 9, 9 } };
        is_int(cs_store_root_set(s, "bad", &bogus), -ENOENT, "a root must name a stored chunk");

        is_int(cs_store_verify(s, 0, NULL, NULL, &vr), 0, "verify passes");
        is_int(vr.orphan_chunks, 1, "and reports the one unreachable chunk");

        is_int(cs_store_gc(s, CS_GC_DRY_RUN, &rep), 0, "gc --dry-run");
        is_int(rep.chunks_removed, 1, "would remove one chunk");
        ok(reads_back(s, &dropped, 99), "but removes nothing");

        /* A second writer blocks gc; NOWAIT says so instead of waiting. */
        ok(cs_store_open(path, CS_OPEN_WRITE, &other) == 0, "a second writer opens");
        is_int(cs_store_gc(s, CS_GC_NOWAIT, &rep), -EBUSY, "gc refuses to sweep under another writer");
        other = cs_store_unref(other);

        is_int(cs_store_gc(s, 0, &rep), 0, "gc");
        is_int(rep.chunks_removed, 1, "removed the unreachable chunk");
        is_int(rep.chunks_kept, 4, "kept the tree and its three children");
        is_int(cs_store_has(s, &dropped, NULL), 0, "the unreachable chunk is gone");
        for (int i = 0; i < 3; i++)
                ok(reads_back(s, &kept[i], 10 + i), "reachable chunk %d still reads", i);
        is_int(cs_store_verify(s, CS_VERIFY_DATA, NULL, NULL, &vr), 0, "verify passes after gc");
        is_int(vr.orphan_chunks, 0, "with nothing unreachable");

        is_int(cs_store_root_delete(s, "point-a"), 0, "delete the root");
        is_int(cs_store_root_delete(s, "point-a"), -ENOENT, "deleting it twice is ENOENT");
        is_int(cs_store_gc(s, 0, &rep), 0, "gc");
        cs_store_stats(s, &st);
        is_int(st.chunks, 0, "every chunk is gone");
        is_int(st.packs, 0, "and so is every pack");
        is_int(cs_store_verify(s, CS_VERIFY_DATA, NULL, NULL, &vr), 0, "the empty store verifies");
        cs_store_unref(s);
}

static void test_compaction(void)
{
        char path[512];
        cs_store *s = NULL, *reader = NULL;
        cs_chunk_id ids[200], tree;
        cs_gc_report rep;
        cs_stats before, after;
        int bad = 0;

        tap_path(path, sizeof(path), "gc-compact");
        cs_store_init(path, &(cs_init_params) { .block_size = BLOCK });
        cs_store_open(path, CS_OPEN_WRITE, &s);
        cs_store_open(path, 0, &reader);
        for (int i = 0; i < 200; i++)
                ids[i] = put_text(s, 1000 + i);
        /* Keep every tenth chunk. */
        cs_chunk_id keep[20];
        for (int i = 0; i < 20; i++)
                keep[i] = ids[10 * i];
        tree = put_tree(s, keep, 20);
        cs_store_root_set(s, "sparse", &tree);
        cs_store_gc(s, CS_GC_DRY_RUN, NULL); /* seals the pack */
        cs_store_stats(s, &before);
        is_int(reads_back(reader, &keep[3], 1030), 1, "a reader has the pack open before compaction");

        is_int(cs_store_gc(s, 0, &rep), 0, "gc with compaction");
        is_int(rep.chunks_removed, 180, "removed 180 chunks");
        ok(rep.packs_rewritten >= 1 && rep.packs_removed >= 1, "rewrote and removed the sparse pack");
        cs_store_stats(s, &after);
        ok(after.pack_bytes * 4 < before.pack_bytes, "pack bytes shrank from %llu to %llu",
           (unsigned long long) before.pack_bytes, (unsigned long long) after.pack_bytes);
        for (int i = 0; i < 20; i++)
                bad += !reads_back(s, &keep[i], 1000 + 10 * i);
        is_int(bad, 0, "every kept chunk reads from its new pack");
        bad = 0;
        for (int i = 0; i < 20; i++)
                bad += !reads_back(reader, &keep[i], 1000 + 10 * i);
        is_int(bad, 0, "a reader opened before compaction still reads every kept chunk");
        is_int(cs_store_verify(s, CS_VERIFY_DATA, NULL, NULL, NULL), 0, "verify passes after compaction");
        cs_store_unref(reader);
        cs_store_unref(s);
}

static void test_damaged_tree(void)
{
        char path[512], pack[600];
        cs_store *s = NULL;
        cs_chunk_id a, tree;
        cs_chunk_info info;
        cs_gc_report rep;
        uint8_t b;
        int fd;

        tap_path(path, sizeof(path), "gc-damaged");
        cs_store_init(path, &(cs_init_params) { .block_size = BLOCK });
        cs_store_open(path, CS_OPEN_WRITE, &s);
        a = put_text(s, 5);
        tree = put_tree(s, &a, 1);
        cs_store_root_set(s, "r", &tree);
        /* Damage a sealed pack: an open one's last segment is written
         * again from memory at every commit (stage.c, design note 3). */
        s = cs_store_unref(s);
        cs_store_open(path, CS_OPEN_WRITE, &s);
        cs_store_has(s, &tree, &info);
        snprintf(pack, sizeof(pack), "%s/packs/%016llx.pack", path, (unsigned long long) info.pack);
        fd = open(pack, O_RDWR);
        pread(fd, &b, 1, (off_t) (info.offset + CS_RECORD_HEADER_SIZE + 6));
        b ^= 0xff;
        pwrite(fd, &b, 1, (off_t) (info.offset + CS_RECORD_HEADER_SIZE + 6));
        close(fd);
        is_int(cs_store_gc(s, 0, &rep), -EBADMSG, "gc refuses to sweep when a tree cannot be read");
        ok(reads_back(s, &a, 5), "and the tree's child survives");
        cs_store_unref(s);
}

static void test_pins(void)
{
        char path[512];
        cs_store *s = NULL;
        cs_chunk_id a, tree;
        cs_gc_report rep;
        uint64_t pin = 0;
        pid_t child;
        int status;

        tap_path(path, sizeof(path), "gc-pins");
        cs_store_init(path, &(cs_init_params) { .block_size = BLOCK });
        cs_store_open(path, CS_OPEN_WRITE, &s);
        a = put_text(s, 77);
        tree = put_tree(s, &a, 1);
        cs_store_commit(s);

        ok(cs_store_pin(s, &tree, &pin) == 0 && pin > 0, "pin a tree");
        is_int(cs_store_gc(s, 0, &rep), 0, "gc");
        ok(reads_back(s, &a, 77), "a pinned tree survives gc");
        is_int(cs_store_unpin(s, pin), 0, "unpin it");

        /* A process that pins and dies leaves a stale pin: gc drops it. */
        fflush(stdout);
        child = fork();
        if (child == 0) {
                cs_store *c = NULL;
                uint64_t p;
                cs_store_open(path, 0, &c);
                _exit(cs_store_pin(c, &tree, &p) == 0 ? 0 : 1);
        }
        waitpid(child, &status, 0);
        ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a child process pinned the tree and exited");
        is_int(cs_store_gc(s, 0, &rep), 0, "gc after the child is gone");
        is_int(cs_store_has(s, &a, NULL), 0, "the dead process's pin no longer keeps the tree");
        cs_stats st;
        cs_store_stats(s, &st);
        is_int(st.roots, 0, "and the stale pin row is gone");
        cs_store_unref(s);
}

int main(void)
{
        test_pins();
        test_sweep();
        test_compaction();
        test_damaged_tree();
        return tap_done();
}
