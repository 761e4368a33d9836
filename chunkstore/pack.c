/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Pack files: append-only containers of chunk records.
 *
 * Design notes
 *
 *  1. Layout: packs/<16 hex digits>.pack, the digits being the pack's
 *     catalog id.  A 32-byte header ("CSPACK\r\n", le32 version 1, le32 0,
 *     le64 pack id, 8 zero bytes) then records back to back (chunk.c).
 *  2. Ownership: one writer per pack.  A writer creates the file under a
 *     temporary name unique to it, takes flock(LOCK_EX) on it, registers
 *     the pack in the catalog (state OPEN) and only then renames the file
 *     into place and fsyncs packs/.  So a file under its final name is
 *     either locked by its live writer or abandoned; an OPEN row without a
 *     file may belong to a writer between INSERT and rename, and only gc
 *     (which excludes every writer) may seal it.  Nobody else ever writes
 *     to a pack.
 *  3. Durability order: record bytes are written, the file is
 *     fdatasync()ed, and only then are the catalog rows pointing into it
 *     committed (store.c).  So every catalog row points at durable bytes;
 *     bytes past the last committed row are garbage from an unfinished batch.
 *  4. Recovery: an OPEN pack whose lock can be taken lost its writer.  Its
 *     file is truncated after the last committed record and it is SEALED.
 *     Sealed packs never change again, except that compaction may delete
 *     them once no row points into them.
 *
 *     state:  (none) --create--> OPEN --seal / recover--> SEALED --compact--> (none)
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "cs-internal.h"

void cs_pack_path(uint64_t id, char buf[static 64])
{
        snprintf(buf, 64, CS_PACK_DIR "/%016" PRIx64 ".pack", id);
}

static void pack_header(uint64_t id, uint8_t out[CS_PACK_HEADER_SIZE])
{
        uint32_t version = htole32(1);
        uint64_t le_id = htole64(id);

        memset(out, 0, CS_PACK_HEADER_SIZE);
        memcpy(out, CS_PACK_MAGIC, 8);
        memcpy(out + 8, &version, 4);
        memcpy(out + 16, &le_id, 8);
}

int cs_pack_check_header(int fd, uint64_t id)
{
        uint8_t expected[CS_PACK_HEADER_SIZE], actual[CS_PACK_HEADER_SIZE];
        ssize_t n;

        pack_header(id, expected);
        n = pread(fd, actual, sizeof(actual), 0);
        if (n < 0)
                return negative_errno();
        if (n != sizeof(actual) || memcmp(expected, actual, sizeof(actual)) != 0)
                return -EBADMSG;
        return 0;
}

/* Switches a new pack's appends to a stage and direct I/O where the file
 * system takes it (tmpfs does not); else they stay buffered pwrites. */
static void use_stage(cs_stage_pool *pool, const uint8_t header[CS_PACK_HEADER_SIZE], cs_pack_writer *w)
{
        int flags = fcntl(w->fd, F_GETFL);

        if (!pool || flags < 0 || fcntl(w->fd, F_SETFL, flags | O_DIRECT) < 0)
                return;
        if (cs_stage_new(pool, w->fd, header, CS_PACK_HEADER_SIZE, &w->stage) < 0)
                (void) fcntl(w->fd, F_SETFL, flags);
}

int cs_pack_create(int dir_fd, sqlite3 *db, cs_stage_pool *pool, cs_pack_writer *ret_writer)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_close_ int fd = -1, packs_fd = -1;
        uint8_t header[CS_PACK_HEADER_SIZE], nonce[8];
        char path[64], tmp[96];
        uint64_t id;
        int r;

        /* Design note 2: a locked file first, then the row, then the name. */
        if (getrandom(nonce, sizeof(nonce), 0) != sizeof(nonce))
                return negative_errno();
        snprintf(tmp, sizeof(tmp), CS_PACK_DIR "/new-%d-%02x%02x%02x%02x%02x%02x%02x%02x.tmp", (int) getpid(),
                 nonce[0], nonce[1], nonce[2], nonce[3], nonce[4], nonce[5], nonce[6], nonce[7]);
        fd = openat(dir_fd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return negative_errno();
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                r = negative_errno();
                goto fail;
        }

        r = cs_index_prepare(db, "INSERT INTO packs(state, size, created) VALUES(?, ?, ?)", &stmt);
        if (r < 0)
                goto fail;
        sqlite3_bind_int(stmt, 1, CS_PACK_OPEN);
        sqlite3_bind_int64(stmt, 2, CS_PACK_HEADER_SIZE);
        sqlite3_bind_int64(stmt, 3, (int64_t) time(NULL));
        r = cs_index_step(stmt);
        if (r < 0)
                goto fail;
        id = (uint64_t) sqlite3_last_insert_rowid(db);

        pack_header(id, header);
        if (pwrite(fd, header, sizeof(header), 0) != sizeof(header)) {
                r = errno ? negative_errno() : -ENOSPC;
                goto fail;
        }
        cs_pack_path(id, path);
        if (renameat(dir_fd, tmp, dir_fd, path) < 0) {
                r = negative_errno();
                goto fail;
        }
        /* The name must survive a power cut before rows point into it. */
        packs_fd = openat(dir_fd, CS_PACK_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (packs_fd < 0 || fsync(packs_fd) < 0)
                return negative_errno();

        *ret_writer = (cs_pack_writer) {
                .id = id,
                .fd = TAKE_FD(fd),
                .size = CS_PACK_HEADER_SIZE,
                .committed = CS_PACK_HEADER_SIZE,
        };
        use_stage(pool, header, ret_writer);
        return 0;
fail:
        (void) unlinkat(dir_fd, tmp, 0);
        return r;
}

static int write_at(int fd, const void *record, size_t size, uint64_t offset)
{
        const uint8_t *p = record;
        size_t done = 0;

        while (done < size) {
                ssize_t n = pwrite(fd, p + done, size - done, (off_t) (offset + done));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return -ENOSPC;
                done += (size_t) n;
        }
        return 0;
}

/* When [offset, offset + size) completes a window, starts writing it back
 * (sync_file_range, not waiting). */
static void start_writeback(int fd, uint64_t offset, size_t size)
{
        uint64_t window = (offset + size) / CS_PACK_WRITEBACK_WINDOW;

        if (window == 0 || window == offset / CS_PACK_WRITEBACK_WINDOW)
                return;
        /* Advisory: a failure shows again in the commit's fdatasync. */
        (void) sync_file_range(fd, (off_t) ((window - 1) * CS_PACK_WRITEBACK_WINDOW), CS_PACK_WRITEBACK_WINDOW,
                               SYNC_FILE_RANGE_WRITE);
}

int cs_pack_reserve(cs_pack_writer *w, size_t size, cs_pack_slot *ret_slot)
{
        cs_pack_slot slot = { .fd = w->fd, .stage = w->stage, .offset = w->size, .size = size };

        if (w->stage) {
                int r = cs_stage_reserve(w->stage, w->size, size, &slot.ticket);
                if (r < 0)
                        return r;
        }
        w->size += size;
        *ret_slot = slot;
        return 0;
}

int cs_pack_fill(const cs_pack_slot *slot, const void *record)
{
        int r;

        if (slot->stage)
                return cs_stage_fill(slot->stage, slot->ticket, record);
        r = write_at(slot->fd, record, slot->size, slot->offset);
        if (r >= 0)
                start_writeback(slot->fd, slot->offset, slot->size);
        return r;
}

int cs_pack_append(cs_pack_writer *w, const void *record, size_t size, uint64_t *ret_offset)
{
        cs_pack_slot slot;
        int r;

        r = cs_pack_reserve(w, size, &slot);
        if (r < 0)
                return r;
        *ret_offset = slot.offset;
        return cs_pack_fill(&slot, record);
}

int cs_pack_flush(cs_pack_writer *w, uint64_t upto)
{
        return w->stage ? cs_stage_flush(w->stage, upto) : 0;
}

size_t cs_pack_read_staged(cs_pack_writer *w, uint64_t offset, void *buf, size_t size)
{
        return w->stage ? cs_stage_read(w->stage, offset, buf, size) : size;
}

int cs_pack_sync(cs_pack_writer *w, bool sealing)
{
        /* A flushed stage pads the file to 4 KiB; a sealed pack is exact. */
        if (sealing && w->stage && ftruncate(w->fd, (off_t) w->size) < 0)
                return negative_errno();
        return fdatasync(w->fd) < 0 ? negative_errno() : 0;
}

static int pack_set_state(sqlite3 *db, uint64_t id, int state, uint64_t size)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int r;

        r = cs_index_prepare(db, "UPDATE packs SET state = ?, size = ? WHERE id = ?", &stmt);
        if (r < 0)
                return r;
        sqlite3_bind_int(stmt, 1, state);
        sqlite3_bind_int64(stmt, 2, (int64_t) size);
        sqlite3_bind_int64(stmt, 3, (int64_t) id);
        return cs_index_step(stmt);
}

int cs_pack_seal(cs_pack_writer *w, sqlite3 *db)
{
        return pack_set_state(db, w->id, CS_PACK_SEALED, w->size);
}

int cs_pack_abandon(cs_pack_writer *w, sqlite3 *db)
{
        int r;

        /* Its flusher must not write past the cut. */
        w->stage = cs_stage_free(w->stage);
        if (ftruncate(w->fd, (off_t) w->committed) < 0 || fsync(w->fd) < 0)
                return negative_errno();
        r = cs_index_begin(db);
        if (r < 0)
                return r;
        r = pack_set_state(db, w->id, CS_PACK_SEALED, w->committed);
        if (r < 0) {
                cs_index_rollback(db);
                return r;
        }
        return cs_index_commit(db);
}

void cs_pack_writer_close(cs_pack_writer *w)
{
        w->stage = cs_stage_free(w->stage);
        w->fd = safe_close(w->fd);
        w->id = 0;
        w->size = 0;
}

/* End of the last committed record in pack id. */
static int committed_end(sqlite3 *db, uint64_t id, uint64_t *ret_end)
{
        int64_t end = 0;
        int r;

        r = cs_index_query_int(db, "SELECT MAX(offset + 32 + stored_size) FROM chunks WHERE pack = ?",
                               (int64_t) id, &end);
        if (r < 0)
                return r;
        *ret_end = MAX((uint64_t) end, (uint64_t) CS_PACK_HEADER_SIZE);
        return 0;
}

static int recover_one(int dir_fd, sqlite3 *db, uint64_t id, bool exclusive)
{
        _cleanup_close_ int fd = -1;
        uint64_t end;
        char path[64];
        int r;

        cs_pack_path(id, path);
        fd = openat(dir_fd, path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                /* No file yet: a live writer between INSERT and rename, or
                 * one that died there.  Only with every writer excluded
                 * (gc) can we tell; then the row is all that is left. */
                if (errno != ENOENT)
                        return negative_errno();
                return exclusive ? pack_set_state(db, id, CS_PACK_SEALED, CS_PACK_HEADER_SIZE) : 0;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? 0 : negative_errno(); /* its writer lives */

        r = committed_end(db, id, &end);
        if (r < 0)
                return r;
        if (ftruncate(fd, (off_t) end) < 0 || fsync(fd) < 0)
                return negative_errno();
        return pack_set_state(db, id, CS_PACK_SEALED, end);
}

/* Removes pack files left under their temporary name by writers that died
 * between creating and renaming them; a live writer holds the lock. */
static void remove_stale_tmp_files(int dir_fd)
{
        _cleanup_close_ int packs_fd = -1;
        struct dirent *de;
        DIR *d;

        packs_fd = openat(dir_fd, CS_PACK_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (packs_fd < 0)
                return;
        d = fdopendir(TAKE_FD(packs_fd));
        if (!d)
                return;
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);
                _cleanup_close_ int fd = -1;

                if (len < 4 || strcmp(de->d_name + len - 4, ".tmp") != 0)
                        continue;
                /* A writer creates its file, then locks it: a young unlocked
                 * file may be in that window.  An hour is beyond doubt. */
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || time(NULL) - st.st_mtime < 3600)
                        continue;
                fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC);
                if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
                        (void) unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
}

int cs_pack_recover(int dir_fd, sqlite3 *db, bool exclusive)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_free_ uint64_t *ids = NULL;
        size_t n = 0, cap = 0;
        int rc, r;

        r = cs_index_prepare(db, "SELECT id FROM packs WHERE state = 0", &stmt);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                if (n == cap) {
                        cap = cap ? 2 * cap : 16;
                        uint64_t *p = reallocarray(ids, cap, sizeof(*p));
                        if (!p)
                                return -ENOMEM;
                        ids = p;
                }
                ids[n++] = (uint64_t) sqlite3_column_int64(stmt, 0);
        }
        if (rc != SQLITE_DONE)
                return cs_sqlite_errno(rc);
        sqlite3_finalize(TAKE_PTR(stmt));

        remove_stale_tmp_files(dir_fd);
        if (n == 0)
                return 0;
        r = cs_index_begin(db);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                r = recover_one(dir_fd, db, ids[i], exclusive);
                if (r < 0) {
                        cs_index_rollback(db);
                        return r;
                }
        }
        return cs_index_commit(db);
}

/* --- Reading ------------------------------------------------------------ */

#define PACK_CACHE_SLOTS 256

typedef struct pack_slot {
        uint64_t id;
        int fd;
} pack_slot;

struct cs_pack_cache {
        int dir_fd;
        pthread_rwlock_t lock;
        pack_slot slots[PACK_CACHE_SLOTS];
};

int cs_pack_cache_new(int dir_fd, cs_pack_cache **ret)
{
        cs_pack_cache *c = calloc(1, sizeof(*c));

        if (!c)
                return -ENOMEM;
        c->dir_fd = dir_fd;
        pthread_rwlock_init(&c->lock, NULL);
        for (size_t i = 0; i < PACK_CACHE_SLOTS; i++)
                c->slots[i].fd = -1;
        *ret = c;
        return 0;
}

cs_pack_cache *cs_pack_cache_free(cs_pack_cache *c)
{
        if (!c)
                return NULL;
        for (size_t i = 0; i < PACK_CACHE_SLOTS; i++)
                safe_close(c->slots[i].fd);
        pthread_rwlock_destroy(&c->lock);
        return mfree(c);
}

/* A direct-mapped cache: slot = id % slots.  A reader holds the read lock
 * across its pread so that a concurrent replacement cannot close the fd
 * under it. */
int cs_pack_cache_read(cs_pack_cache *c, const cs_location *loc, void *buf)
{
        return cs_pack_cache_pread(c, loc->pack, loc->offset, buf, CS_RECORD_HEADER_SIZE + loc->stored_size);
}

int cs_pack_cache_pread(cs_pack_cache *c, uint64_t id, uint64_t offset, void *buf, size_t size)
{
        pack_slot *slot = &c->slots[id % PACK_CACHE_SLOTS];
        ssize_t n;
        int fd;

        for (;;) {
                pthread_rwlock_rdlock(&c->lock);
                if (slot->id == id && slot->fd >= 0) {
                        n = pread(slot->fd, buf, size, (off_t) offset);
                        int e = errno;
                        pthread_rwlock_unlock(&c->lock);
                        if (n < 0)
                                return e > 0 ? -e : -EIO;
                        /* A short read means a truncated pack: damage. */
                        return (size_t) n == size ? 0 : -EBADMSG;
                }
                pthread_rwlock_unlock(&c->lock);

                char path[64];
                cs_pack_path(id, path);
                fd = openat(c->dir_fd, path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        return negative_errno();
                /* Readers mostly walk a pack forward (a file's blocks were
                 * written in order): a bigger readahead window turns many
                 * small record reads into few large disk reads. */
                (void) posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

                pthread_rwlock_wrlock(&c->lock);
                safe_close(slot->fd);
                slot->id = id;
                slot->fd = fd;
                pthread_rwlock_unlock(&c->lock);
        }
}

void cs_pack_cache_drop(cs_pack_cache *c, uint64_t id)
{
        pack_slot *slot = &c->slots[id % PACK_CACHE_SLOTS];

        pthread_rwlock_wrlock(&c->lock);
        if (slot->id == id) {
                slot->fd = safe_close(slot->fd);
                slot->id = 0;
        }
        pthread_rwlock_unlock(&c->lock);
}
