/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The store object: opening a store directory, putting chunks into packs,
 * committing them to the catalog, reading them back, and roots.
 *
 * Design notes
 *
 *  1. Layout of a store directory (mode 0700):
 *       config       format, block size, compression, secret (0600)
 *       catalog.db   SQLite catalog, WAL mode (0600), with -wal and -shm
 *       lock         flock()ed: SHARED by every write handle, EXCLUSIVE by gc
 *       packs/       pack files (pack.c)
 *  2. A put is hashed and deduplicated in the calling thread, against this
 *     handle's uncommitted puts and then the catalog; a new chunk is
 *     compressed in the calling thread (so N threads use N cores), its
 *     space in this handle's open pack is reserved under write_lock and
 *     written without it; it joins the pending puts once written.  A
 *     commit that seals the pack first waits for those writes.
 *  3. Commit: fdatasync(pack), then one transaction inserting every
 *     pending row.  Rows are INSERT OR REPLACE: two processes that stored
 *     the same chunk concurrently both wrote durable, valid copies, and
 *     either location will do; compaction relies on the same rule to move
 *     chunks.
 *  4. A reader that finds a pack gone (compaction deleted it after moving
 *     its chunks) looks the chunk up again once: the catalog row was
 *     updated before the file was unlinked.
 *  5. Locking order: store lock file (flock) -> write_lock (mutex) ->
 *     SQLite's write lock.  Readers take no lock beyond the pack cache's.
 *     While a commit runs (commit_running), the catalog's writer
 *     connection is the commit's, also during the parts it runs without
 *     write_lock; anyone else waits for it (cs_store_writer_locked).
 *  6. A batch that fills up is committed by a thread of the handle's own,
 *     the committer, so that the putter that filled it goes on compressing
 *     instead of waiting for the pack's fdatasync and the catalog's.  A
 *     batch that reaches twice the limits while one is being committed,
 *     or any batch after a background commit failed, is committed by the
 *     putter itself, which then sees the error.
 *  7. A putter that finds a chunk new claims its id (under write_lock,
 *     in the same section that looked in the pending puts) until the
 *     chunk is pending or the put failed.  Another putter of the same id
 *     meanwhile waits for the claim, then finds the chunk pending: two
 *     threads snapshotting identical files at once would otherwise both
 *     compress every block and both write it, and the second copy is
 *     garbage that only compacting its pack gets back.  Claims live only
 *     while puts run, so a fork (never with puts in progress) inherits
 *     none.  With CS_CLAIMS_MAX claims taken, a put goes unclaimed and
 *     only the old check after compressing stops a second copy.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "cs-internal.h"

/* Commit on our own once a batch holds this much: bounds memory and the
 * work a crash can lose, while keeping fsyncs rare. */
#define BATCH_MAX_CHUNKS 8192
#define BATCH_MAX_BYTES (32u * 1024 * 1024)

/* --- Uncommitted puts: an insertion-ordered hash map id -> location ----- */

typedef struct pending_entry {
        cs_chunk_id id;
        cs_location loc;
} pending_entry;

struct cs_pending {
        pending_entry *entries;
        size_t n, capacity;
        uint32_t *slots; /* index + 1 into entries, 0 = empty */
        size_t n_slots;  /* a power of two, at least twice n */
        uint64_t bytes;
};

static size_t id_hash(const cs_chunk_id *id)
{
        size_t h;
        /* Ids are keyed hashes: their bytes are already uniform. */
        memcpy(&h, id->bytes, sizeof(h));
        return h;
}

static pending_entry *pending_find(cs_pending *p, const cs_chunk_id *id)
{
        if (p->n_slots == 0)
                return NULL;
        for (size_t i = id_hash(id) & (p->n_slots - 1);; i = (i + 1) & (p->n_slots - 1)) {
                if (p->slots[i] == 0)
                        return NULL;
                pending_entry *e = &p->entries[p->slots[i] - 1];
                if (cs_chunk_id_equal(&e->id, id))
                        return e;
        }
}

static void pending_slot_insert(cs_pending *p, size_t index)
{
        size_t i = id_hash(&p->entries[index].id) & (p->n_slots - 1);
        while (p->slots[i] != 0)
                i = (i + 1) & (p->n_slots - 1);
        p->slots[i] = (uint32_t) index + 1;
}

static int pending_add(cs_pending *p, const cs_chunk_id *id, const cs_location *loc)
{
        if (p->n == p->capacity) {
                size_t cap = p->capacity ? p->capacity * 2 : 256;
                pending_entry *e = reallocarray(p->entries, cap, sizeof(*e));
                if (!e)
                        return -ENOMEM;
                p->entries = e;
                p->capacity = cap;
        }
        if (2 * (p->n + 1) > p->n_slots) {
                size_t n_slots = p->n_slots ? p->n_slots * 2 : 512;
                uint32_t *slots = calloc(n_slots, sizeof(*slots));
                if (!slots)
                        return -ENOMEM;
                free(p->slots);
                p->slots = slots;
                p->n_slots = n_slots;
                for (size_t i = 0; i < p->n; i++)
                        pending_slot_insert(p, i);
        }
        p->entries[p->n] = (pending_entry) { .id = *id, .loc = *loc };
        pending_slot_insert(p, p->n);
        p->n++;
        p->bytes += CS_RECORD_HEADER_SIZE + loc->stored_size;
        return 0;
}

static void pending_clear(cs_pending *p)
{
        if (p->n_slots)
                memset(p->slots, 0, p->n_slots * sizeof(*p->slots));
        p->n = 0;
        p->bytes = 0;
}

static cs_pending *pending_free(cs_pending *p)
{
        if (!p)
                return NULL;
        free(p->entries);
        free(p->slots);
        return mfree(p);
}

/* --- Logging ------------------------------------------------------------ */

void cs_store_set_log(cs_store *store, cs_log_fn fn, void *userdata)
{
        store->log_fn = fn;
        store->log_userdata = userdata;
}

void cs_store_log(cs_store *store, int error, const char *format, ...)
{
        char message[1024];
        va_list ap;

        if (!store->log_fn)
                return;
        va_start(ap, format);
        vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        store->log_fn(store->log_userdata, error, message);
}

/* --- Creating and opening ---------------------------------------------- */

static bool dir_is_empty(int dir_fd)
{
        _cleanup_close_ int fd = dup(dir_fd);
        struct dirent *de;
        bool empty = true;
        DIR *d;

        if (fd < 0)
                return false;
        d = fdopendir(fd);
        if (!d)
                return false;
        fd = -1;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
                        empty = false;
                        break;
                }
        closedir(d);
        return empty;
}

int cs_store_init(const char *path, const cs_init_params *params)
{
        _cleanup_close_ int dir_fd = -1, lock_fd = -1;
        cs_config config = { .format = CS_FORMAT_VERSION };
        int r;

        if (!path || !*path)
                return -EINVAL;
        config.block_size = params && params->block_size ? params->block_size
                                                         : CS_BLOCK_SIZE_DEFAULT;
        config.lz4hc_level = params ? params->lz4hc_level : 0;
        if (config.block_size < CS_BLOCK_SIZE_MIN || config.block_size > CS_BLOCK_SIZE_MAX ||
            (config.block_size & (config.block_size - 1)) || config.lz4hc_level < 0 ||
            config.lz4hc_level > 12)
                return -EINVAL;

        if (mkdir(path, 0700) < 0 && errno != EEXIST)
                return negative_errno();
        dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0)
                return negative_errno();
        if (!dir_is_empty(dir_fd))
                return -EEXIST;
        if (fchmod(dir_fd, 0700) < 0)
                return negative_errno();

        if (getrandom(config.secret, sizeof(config.secret), 0) != sizeof(config.secret))
                return negative_errno();

        if (mkdirat(dir_fd, CS_PACK_DIR, 0700) < 0)
                return negative_errno();
        lock_fd = openat(dir_fd, CS_LOCK_FILE, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (lock_fd < 0)
                return negative_errno();
        r = cs_index_create(dir_fd);
        if (r < 0)
                return r;
        /* The config goes last: a directory with a config is a store, so a
         * crash during init leaves something open() refuses, not half a store. */
        return cs_config_write(dir_fd, &config);
}

int cs_store_lock(cs_store *store, int operation, bool nowait)
{
        for (;;) {
                if (flock(store->lock_fd, operation | (nowait ? LOCK_NB : 0)) == 0)
                        return 0;
                if (errno == EINTR)
                        continue;
                return errno == EWOULDBLOCK ? -EBUSY : negative_errno();
        }
}

int cs_store_open(const char *path, unsigned flags, cs_store **ret_store)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        bool writable = flags & CS_OPEN_WRITE;
        struct stat st;
        int r;

        if (!path || !ret_store)
                return -EINVAL;

        store = calloc(1, sizeof(*store));
        if (!store)
                return -ENOMEM;
        store->dir_fd = store->lock_fd = -1;
        store->pack.fd = -1;
        store->flags = flags;
        pthread_mutex_init(&store->write_lock, NULL);
        pthread_cond_init(&store->commit_done, NULL);
        pthread_cond_init(&store->commit_wake, NULL);
        pthread_cond_init(&store->claim_done, NULL);

        store->path = strdup(path);
        if (!store->path)
                return -ENOMEM;
        store->dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (store->dir_fd < 0)
                return negative_errno();
        if (fstat(store->dir_fd, &st) < 0)
                return negative_errno();

        r = cs_config_read(store->dir_fd, &store->config);
        if (r < 0)
                return r;
        cs_hasher_init(&store->hasher, store->config.secret);

        if (writable) {
                store->lock_fd = openat(store->dir_fd, CS_LOCK_FILE, O_RDWR | O_CLOEXEC);
                if (store->lock_fd < 0)
                        return errno == ENOENT ? -EBADMSG : negative_errno();
                r = cs_store_lock(store, LOCK_SH, flags & CS_OPEN_NOWAIT);
                if (r < 0)
                        return r;
                store->pending = calloc(1, sizeof(*store->pending));
                store->stage_pool = cs_stage_pool_new();
                if (!store->pending || !store->stage_pool)
                        return -ENOMEM;
        }

        r = cs_index_open(store->dir_fd, writable, &store->index);
        if (r < 0)
                return r;
        r = cs_pack_cache_new(store->dir_fd, &store->packs);
        if (r < 0)
                return r;

        if (writable) {
                r = cs_pack_recover(store->dir_fd, cs_index_writer(store->index), false);
                if (r < 0)
                        return r;
        }

        *ret_store = TAKE_PTR(store);
        return 0;
}

static void committer_stop(cs_store *store);

cs_store *cs_store_unref(cs_store *store)
{
        if (!store)
                return NULL;
        committer_stop(store);
        if (store->pack.fd >= 0) {
                /* Uncommitted puts are dropped: cut their bytes off and seal
                 * what the catalog accounts for, as recovery would after a
                 * crash, but without searching the catalog. */
                pending_clear(store->pending);
                (void) cs_pack_abandon(&store->pack, cs_index_writer(store->index));
                cs_pack_writer_close(&store->pack);
        }
        cs_pack_cache_free(store->packs);
        cs_index_free(store->index);
        pending_free(store->pending);
        pending_free(store->spare);
        cs_stage_pool_free(store->stage_pool); /* after the pack gave its ring back */
        pthread_cond_destroy(&store->commit_done);
        pthread_cond_destroy(&store->commit_wake);
        pthread_cond_destroy(&store->claim_done);
        safe_close(store->lock_fd);
        safe_close(store->dir_fd);
        pthread_mutex_destroy(&store->write_lock);
        free(store->path);
        return mfree(store);
}

void cs_store_unrefp(cs_store **store)
{
        cs_store_unref(*store);
}

uint32_t cs_store_block_size(const cs_store *store)
{
        return store->config.block_size;
}

const char *cs_store_path(const cs_store *store)
{
        return store->path;
}

/* --- Committing --------------------------------------------------------- */

/* Inserts the rows of p's puts, or only those in pack only_pack if not 0. */
static int insert_pending(const cs_pending *p, sqlite3 *db, uint64_t only_pack)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *insert = NULL;
        int r;

        r = cs_index_prepare(db,
                             "INSERT OR REPLACE INTO chunks(id, kind, pack, offset, size, stored_size) "
                             "VALUES(?, ?, ?, ?, ?, ?)",
                             &insert);
        if (r < 0)
                return r;
        for (size_t i = 0; i < p->n; i++) {
                const pending_entry *e = &p->entries[i];
                if (only_pack != 0 && e->loc.pack != only_pack)
                        continue;
                sqlite3_bind_blob(insert, 1, e->id.bytes, CS_CHUNK_ID_SIZE, SQLITE_STATIC);
                sqlite3_bind_int(insert, 2, e->loc.kind);
                sqlite3_bind_int64(insert, 3, (int64_t) e->loc.pack);
                sqlite3_bind_int64(insert, 4, (int64_t) e->loc.offset);
                sqlite3_bind_int64(insert, 5, e->loc.size);
                sqlite3_bind_int64(insert, 6, e->loc.stored_size);
                r = cs_index_step(insert);
                sqlite3_reset(insert);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int write_batch(sqlite3 *db, const cs_pending *batch, uint64_t logical, const cs_pack_writer *seal_pack)
{
        int r = cs_index_begin(db);

        if (r < 0)
                return r;
        /* A sealing commit's batch may hold puts that went into the next
         * pack: they wait for a later commit (cs_store_commit_locked). */
        r = insert_pending(batch, db, seal_pack ? seal_pack->id : 0);
        if (r >= 0 && logical > 0) {
                char sql[128];
                snprintf(sql, sizeof(sql), "UPDATE meta SET value = value + %llu WHERE key = 'logical_bytes'",
                         (unsigned long long) logical);
                r = cs_index_exec(db, sql);
        }
        /* A pack's size is recorded when it is sealed; until then recovery
         * derives it from the rows. */
        if (r >= 0 && seal_pack)
                r = cs_pack_seal((cs_pack_writer *) seal_pack, db);
        if (r < 0) {
                cs_index_rollback(db);
                return r;
        }
        return cs_index_commit(db);
}

/* Where the records of pack id in a batch end (0 for none). */
static uint64_t batch_end_in(const cs_pending *batch, uint64_t id)
{
        uint64_t end = 0;

        for (size_t i = 0; i < batch->n; i++)
                if (batch->entries[i].loc.pack == id)
                        end = MAX(end, batch->entries[i].loc.offset + CS_RECORD_HEADER_SIZE +
                                               batch->entries[i].loc.stored_size);
        return end;
}

/* Returns a batch's puts to the pending ones, so that a later commit
 * takes them: all of a failed batch, or those a sealing commit left
 * out (except_pack: the pack it sealed; else 0). */
static int restore_batch(cs_store *store, cs_pending *batch, uint64_t logical, uint64_t except_pack)
{
        int r = 0;

        for (size_t i = 0; i < batch->n && r >= 0; i++)
                if (batch->entries[i].loc.pack != except_pack && !pending_find(store->pending, &batch->entries[i].id))
                        r = pending_add(store->pending, &batch->entries[i].id, &batch->entries[i].loc);
        store->pending_logical_bytes += logical;
        return r;
}

sqlite3 *cs_store_writer_locked(cs_store *store)
{
        while (store->commit_running)
                pthread_cond_wait(&store->commit_done, &store->write_lock);
        return cs_index_writer(store->index);
}

void cs_store_writer_unlock(cs_store *store, sqlite3_stmt **stmt)
{
        sqlite3_finalize(TAKE_PTR(*stmt));
        pthread_mutex_unlock(&store->write_lock);
}

/*
 * Design note: the pack's fdatasync() and the catalog's transaction are
 * the slow parts of a commit, so they run without write_lock: the batch
 * is taken out of `pending` (and looked up in `committing` meanwhile),
 * puts go on appending to the pack or, if this commit seals it, to the
 * next one, which the commit creates before it lets go of the lock.
 * Commits run one at a time: a second waits on commit_done, and so does
 * anyone else who needs the writer connection (design note 5).
 */
int cs_store_commit_locked(cs_store *store, bool seal)
{
        sqlite3 *db = cs_store_writer_locked(store);
        cs_pending *batch;
        cs_pack_writer pack, next = { .fd = -1 };
        uint64_t logical, batch_end;
        bool sync_failed;
        /* Sealed for its size, not on request (gc, compaction). */
        bool full = !seal && store->pack.fd >= 0 && store->pack.size >= CS_PACK_TARGET_SIZE;
        int r;

        if (store->lost_error < 0)
                return store->lost_error;
        seal = store->pack.fd >= 0 && (seal || full);
        if (store->pending->n == 0 && store->pending_logical_bytes == 0 && !seal)
                return 0;
        if (!store->spare) {
                store->spare = calloc(1, sizeof(*store->spare));
                if (!store->spare)
                        return -ENOMEM;
        }
        store->commit_running = true;

        if (full) {
                /* A pack sealed for its size gets its successor before it
                 * stops taking puts, so that they never wait for this
                 * commit; meanwhile they go on appending to it.  If that
                 * fails, the next put tries again and reports it. */
                pthread_mutex_unlock(&store->write_lock);
                (void) cs_pack_create(store->dir_fd, db, store->stage_pool, &next);
                pthread_mutex_lock(&store->write_lock);
        }
        if (seal && store->pack.stage) {
                /* A staged pack's bytes must reach its file before it stops
                 * taking puts: then reads of it need no stage but its own,
                 * which is the open pack's.  If they cannot (a full disk),
                 * it stays open and a later commit tries again. */
                r = cs_pack_flush(&store->pack, UINT64_MAX);
                if (r < 0) {
                        if (next.fd >= 0) {
                                (void) cs_pack_abandon(&next, db);
                                cs_pack_writer_close(&next);
                        }
                        store->commit_running = false;
                        pthread_cond_broadcast(&store->commit_done);
                        return r;
                }
        }
        pack = store->pack;
        if (seal) {
                /* New puts go to the next pack; the ones writing into this
                 * one finish first, so the batch below holds all of its
                 * records.  Puts into the next pack that finish meanwhile
                 * join the batch too, but not its rows: they stay pending
                 * (restore_batch below), and this commit neither flushes
                 * nor syncs that pack. */
                store->pack = next;
                store->retiring_id = pack.id;
                store->retiring_inflight = pack.inflight;
                while (store->retiring_inflight > 0)
                        pthread_cond_wait(&store->commit_done, &store->write_lock);
        }

        /* Take the batch out. */
        batch = store->pending;
        store->pending = TAKE_PTR(store->spare);
        logical = store->pending_logical_bytes;
        store->pending_logical_bytes = 0;
        /* Not the pack's size: puts still copying into it are not in
         * this batch, and the flush need not wait for them. */
        batch_end = seal ? pack.size : batch_end_in(batch, pack.id);
        store->committing = batch;

        /* Durability order: the bytes first, then the rows that point at them. */
        pthread_mutex_unlock(&store->write_lock);
        /* A failed flush keeps its bytes staged, and the batch can be put
         * back; a failed fdatasync may have dropped them. */
        r = batch->n > 0 || seal ? cs_pack_flush(&pack, batch_end) : 0;
        sync_failed = false;
        if (r >= 0) {
                r = batch->n > 0 || seal ? cs_pack_sync(&pack, seal) : 0;
                sync_failed = r < 0;
        }
        if (r >= 0)
                r = write_batch(db, batch, logical, seal ? &pack : NULL);
        pthread_mutex_lock(&store->write_lock);

        if (r >= 0) {
                /* Its chunks leave the pending table: lookups must now see
                 * this commit in the catalog. */
                __atomic_add_fetch(&store->commits, 1, __ATOMIC_RELEASE);
                if (seal) {
                        /* The next pack's puts, for a later commit. */
                        int k = restore_batch(store, batch, 0, pack.id);
                        cs_pack_writer_close(&pack);
                        if (k < 0)
                                store->lost_error = r = k;
                } else if (store->pack.id == pack.id)
                        store->pack.committed = MAX(store->pack.committed, batch_end);
                pending_clear(batch);
                store->spare = batch;
                store->commit_error = 0;
        } else if (!sync_failed && (!seal || store->pack.fd < 0)) {
                int k = restore_batch(store, batch, logical, 0);
                pending_free(batch);
                if (seal) {
                        /* Not sealed after all: keep appending to it.  Its
                         * writers counted down retiring_inflight. */
                        store->pack = pack;
                        store->pack.inflight = 0;
                }
                if (k < 0)
                        store->lost_error = r = k;
        } else {
                /* The batch's puts are lost: a failed fdatasync may have
                 * dropped their bytes (and the next one would not say so),
                 * or a new pack exists, so the old one cannot take writes
                 * again.  They were never acknowledged as durable, but the
                 * trees of their callers may name them, so no later commit
                 * of this handle may succeed. */
                pending_free(batch);
                if (seal)
                        cs_pack_writer_close(&pack);
                store->lost_error = r;
        }
        store->committing = NULL;
        store->commit_running = false;
        pthread_cond_broadcast(&store->commit_done);
        /* Held snapshots are stale now, and would keep the WAL growing. */
        cs_index_release_snapshots(store->index);
        return r;
}

/* --- The committer (design note 6) -------------------------------------- */

static void *committer_main(void *userdata)
{
        cs_store *store = userdata;

        pthread_mutex_lock(&store->write_lock);
        while (!store->committer_stop) {
                if (!store->commit_wanted) {
                        pthread_cond_wait(&store->commit_wake, &store->write_lock);
                        continue;
                }
                store->commit_wanted = false;
                int r = cs_store_commit_locked(store, false);
                if (r < 0)
                        store->commit_error = r;
        }
        pthread_mutex_unlock(&store->write_lock);
        return NULL;
}

/* Under write_lock.  Only the process that started it has the thread: a
 * forked child commits by itself. */
static bool committer_running(cs_store *store)
{
        if (!store->committer_started) {
                if (pthread_create(&store->committer, NULL, committer_main, store) != 0)
                        return false;
                store->committer_started = true;
                store->committer_pid = getpid();
        }
        return store->committer_pid == getpid();
}

static void committer_stop(cs_store *store)
{
        if (!store->committer_started || store->committer_pid != getpid())
                return;
        pthread_mutex_lock(&store->write_lock);
        store->committer_stop = true;
        pthread_cond_signal(&store->commit_wake);
        pthread_mutex_unlock(&store->write_lock);
        pthread_join(store->committer, NULL);
        store->committer_started = false;
}

/* Whether the pending puts have reached `times` times a batch's limits. */
static bool batch_full(const cs_store *store, unsigned times)
{
        return store->pending->n >= times * BATCH_MAX_CHUNKS || store->pending->bytes >= times * BATCH_MAX_BYTES ||
               (store->pack.fd >= 0 && store->pack.size >= times * CS_PACK_TARGET_SIZE);
}

/* After a put joined the batch (write_lock held): a full batch is handed
 * to the committer, or committed here when the committer is behind by a
 * whole batch, failed last time, or cannot run. */
static int commit_if_full(cs_store *store)
{
        if (!batch_full(store, 1))
                return 0;
        if (store->commit_error == 0 && !batch_full(store, 2) && committer_running(store)) {
                store->commit_wanted = true;
                pthread_cond_signal(&store->commit_wake);
                return 0;
        }
        return cs_store_commit_locked(store, false);
}

int cs_store_commit(cs_store *store)
{
        int r;

        if (!store)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        pthread_mutex_lock(&store->write_lock);
        r = cs_store_commit_locked(store, false);
        pthread_mutex_unlock(&store->write_lock);
        /* Even with nothing to commit: the puts' held snapshots end here. */
        cs_index_release_snapshots(store->index);
        return r;
}

/* --- Putting ------------------------------------------------------------ */

/* An open pack to append to (write_lock held, which it may let go of
 * while a commit uses the writer connection). */
static int ensure_pack(cs_store *store)
{
        if (store->pack.fd >= 0)
                return 0;
        sqlite3 *db = cs_store_writer_locked(store);
        if (store->pack.fd >= 0) /* another put made one meanwhile */
                return 0;
        return cs_pack_create(store->dir_fd, db, store->stage_pool, &store->pack);
}

int cs_store_append_locked(cs_store *store, const cs_record_header *h, const uint8_t *record,
                           size_t record_size)
{
        cs_location loc = { .kind = h->kind, .size = h->size, .stored_size = h->stored_size };
        int r;

        r = ensure_pack(store);
        if (r < 0)
                return r;
        r = cs_pack_append(&store->pack, record, record_size, &loc.offset);
        if (r < 0)
                return r;
        loc.pack = store->pack.id;
        r = pending_add(store->pending, &h->id, &loc);
        if (r < 0)
                return r;
        store->added.chunks++;
        store->added.bytes += h->size;
        store->added.stored_bytes += record_size;
        return commit_if_full(store);
}

/* An uncommitted put of this handle: pending, or in the batch being
 * committed (write_lock held). */
static pending_entry *find_uncommitted(cs_store *store, const cs_chunk_id *id)
{
        pending_entry *e = pending_find(store->pending, id);
        if (!e && store->committing)
                e = pending_find(store->committing, id);
        return e;
}

/* --- Claims on new chunks (design note 7), under write_lock ------------- */

static bool claimed(const cs_store *store, const cs_chunk_id *id)
{
        for (unsigned i = 0; i < store->n_claims; i++)
                if (cs_chunk_id_equal(&store->claims[i], id))
                        return true;
        return false;
}

/* Claims id; false if every claim is taken. */
static bool claim(cs_store *store, const cs_chunk_id *id)
{
        if (store->n_claims == CS_CLAIMS_MAX)
                return false;
        store->claims[store->n_claims++] = *id;
        return true;
}

static void claim_release(cs_store *store, const cs_chunk_id *id, bool held)
{
        if (!held)
                return;
        for (unsigned i = 0; i < store->n_claims; i++)
                if (cs_chunk_id_equal(&store->claims[i], id)) {
                        store->claims[i] = store->claims[--store->n_claims];
                        break;
                }
        if (store->claim_waiters > 0)
                pthread_cond_broadcast(&store->claim_done);
}

/* 1 if this handle or the catalog already holds the chunk; 0 if it is
 * new, then with *ret_claim telling whether this put holds its claim,
 * which the caller releases. */
static int known_chunk(cs_store *store, const cs_chunk_id *id, size_t size, bool *ret_claim)
{
        uint64_t generation;
        cs_location loc;
        bool held;
        int r;

        pthread_mutex_lock(&store->write_lock);
        for (;;) {
                if (find_uncommitted(store, id)) {
                        store->pending_logical_bytes += size;
                        pthread_mutex_unlock(&store->write_lock);
                        return 1;
                }
                if (!claimed(store, id))
                        break;
                /* Another putter is storing it: its put ends pending or
                 * failed, and either way the claim goes. */
                store->claim_waiters++;
                pthread_cond_wait(&store->claim_done, &store->write_lock);
                store->claim_waiters--;
        }
        held = claim(store, id);
        /* Read with the pending table: a commit that empties it bumps it. */
        generation = store->commits;
        pthread_mutex_unlock(&store->write_lock);

        r = cs_index_lookup_for_put(store->index, id, &loc, generation);
        if (r == 0) {
                /* A commit since the pending table was read may hold the
                 * chunk, and the held snapshot may predate it: look again
                 * in a fresh one.  An atomic read, not write_lock: every
                 * new chunk comes this way. */
                if (__atomic_load_n(&store->commits, __ATOMIC_ACQUIRE) != generation)
                        r = cs_index_lookup(store->index, id, &loc);
        }
        if (r == 0) {
                *ret_claim = held;
                return 0;
        }
        pthread_mutex_lock(&store->write_lock);
        if (r > 0)
                store->pending_logical_bytes += size;
        claim_release(store, id, held);
        pthread_mutex_unlock(&store->write_lock);
        return r < 0 ? r : 1;
}

int cs_store_put(cs_store *store, cs_chunk_kind kind, const void *data, size_t size,
                 cs_chunk_id *ret_id)
{
        _cleanup_free_ uint8_t *record = NULL;
        cs_record_header h = { .kind = kind, .size = (uint32_t) size };
        size_t record_size;
        bool held = false;
        int r;

        if (!store || !ret_id || (!data && size) || (unsigned) kind >= _CS_KIND_MAX || size == 0 ||
            size > CS_CHUNK_SIZE_MAX || (kind == CS_KIND_DATA && size > store->config.block_size))
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;

        if (kind == CS_KIND_DATA && cs_is_zero(data, size)) {
                *ret_id = (cs_chunk_id) {};
                pthread_mutex_lock(&store->write_lock);
                store->pending_logical_bytes += size;
                pthread_mutex_unlock(&store->write_lock);
                return 0;
        }

        cs_hasher_hash(&store->hasher, kind, data, size, &h.id);
        *ret_id = h.id;
        r = known_chunk(store, &h.id, size, &held);
        if (r != 0)
                return r < 0 ? r : 0;

        r = cs_record_build(kind, &h.id, data, size, store->config.lz4hc_level, &record,
                            &record_size);
        pthread_mutex_lock(&store->write_lock);
        if (r < 0)
                goto out;
        h.codec = record_size - CS_RECORD_HEADER_SIZE < size ? CS_CODEC_LZ4 : CS_CODEC_RAW;
        h.stored_size = (uint32_t) (record_size - CS_RECORD_HEADER_SIZE);

        /* Design note 2: the pack space is reserved under write_lock, the
         * bytes are written (or copied into the stage) without it, so that
         * putters do not wait for each other's copies, and the chunk
         * becomes visible once they are there. */
        store->pending_logical_bytes += size;
        if (find_uncommitted(store, &h.id)) /* stored while we compressed, unclaimed */
                goto out;
        r = ensure_pack(store);
        if (r < 0)
                goto out;
        cs_location loc = {
                .kind = kind,
                .pack = store->pack.id,
                .size = h.size,
                .stored_size = h.stored_size,
        };
        cs_pack_slot slot;
        r = cs_pack_reserve(&store->pack, record_size, &slot);
        if (r < 0)
                goto out;
        loc.offset = slot.offset;
        store->pack.inflight++;
        pthread_mutex_unlock(&store->write_lock);

        /* Still in flight: no commit closes the pack meanwhile. */
        r = cs_pack_fill(&slot, record);

        pthread_mutex_lock(&store->write_lock);
        if (store->pack.id == loc.pack)
                store->pack.inflight--;
        else
                store->retiring_inflight--; /* a commit is sealing that pack and waits for us */
        pthread_cond_broadcast(&store->commit_done);
        if (r >= 0 && find_uncommitted(store, &h.id))
                r = 0; /* another thread's copy won: ours is garbage compaction reclaims */
        else if (r >= 0) {
                r = pending_add(store->pending, &h.id, &loc);
                if (r >= 0) {
                        /* Pending now: a putter waiting for it need not
                         * wait for a commit this put may run. */
                        claim_release(store, &h.id, held);
                        held = false;
                        store->added.chunks++;
                        store->added.bytes += h.size;
                        store->added.stored_bytes += record_size;
                        int k = commit_if_full(store);
                        r = k < 0 ? k : 1;
                }
        }
out:
        claim_release(store, &h.id, held);
        pthread_mutex_unlock(&store->write_lock);
        return r;
}

void cs_store_put_counters(cs_store *store, cs_put_counters *ret)
{
        pthread_mutex_lock(&store->write_lock);
        *ret = store->added;
        pthread_mutex_unlock(&store->write_lock);
}

/* --- Getting ------------------------------------------------------------ */

int cs_store_locate(cs_store *store, const cs_chunk_id *id, cs_location *ret_loc)
{
        /* The flags, not `pending`, which a commit swaps under write_lock. */
        if (store->flags & CS_OPEN_WRITE) {
                pthread_mutex_lock(&store->write_lock);
                pending_entry *e = find_uncommitted(store, id);
                if (e)
                        *ret_loc = e->loc;
                pthread_mutex_unlock(&store->write_lock);
                if (e)
                        return 1;
        }
        return cs_index_lookup(store->index, id, ret_loc);
}

int cs_store_read_location(cs_store *store, const cs_location *loc, const cs_chunk_id *id,
                           void *buf)
{
        _cleanup_free_ uint8_t *record = NULL;
        size_t size = CS_RECORD_HEADER_SIZE + loc->stored_size, from_file = size;
        cs_record_header h;
        int r;

        record = malloc(size);
        if (!record)
                return -ENOMEM;
        if (store->flags & CS_OPEN_WRITE) {
                /* This handle's puts may not have reached the file yet. */
                pthread_mutex_lock(&store->write_lock);
                if (loc->pack == store->pack.id)
                        from_file = cs_pack_read_staged(&store->pack, loc->offset, record, size);
                pthread_mutex_unlock(&store->write_lock);
        }
        if (from_file > 0) {
                r = cs_pack_cache_pread(store->packs, loc->pack, loc->offset, record, from_file);
                if (r < 0)
                        return r;
        }
        r = cs_record_header_decode(record, &h);
        if (r < 0)
                return r;
        /* The record must be the one the catalog promised. */
        if (!cs_chunk_id_equal(&h.id, id) || h.kind != loc->kind || h.size != loc->size ||
            h.stored_size != loc->stored_size)
                return -EBADMSG;
        return cs_record_decode_payload(&store->hasher, &h, record + CS_RECORD_HEADER_SIZE, buf);
}

int cs_store_get(cs_store *store, const cs_chunk_id *id, void *buf, size_t buf_size)
{
        cs_location loc;
        int r;

        if (!store || !id || (!buf && buf_size))
                return -EINVAL;
        if (cs_chunk_id_is_zero(id))
                return -ENOENT;

        for (int attempt = 0;; attempt++) {
                r = cs_store_locate(store, id, &loc);
                if (r < 0)
                        return r;
                if (r == 0)
                        return -ENOENT;
                if (buf_size < loc.size)
                        return -ENOBUFS;
                r = cs_store_read_location(store, &loc, id, buf);
                /* Compaction moved it: the catalog already says where. */
                if (r == -ENOENT && attempt == 0)
                        continue;
                if (r == -ENOENT)
                        r = -EIO;
                if (r < 0) {
                        char hex[CS_CHUNK_ID_STRING_MAX];
                        cs_store_log(store, r, "chunk %s in pack %llu at offset %llu is unreadable",
                                     cs_chunk_id_format(id, hex), (unsigned long long) loc.pack,
                                     (unsigned long long) loc.offset);
                        return r;
                }
                return (int) loc.size;
        }
}

int cs_store_has(cs_store *store, const cs_chunk_id *id, cs_chunk_info *ret_info)
{
        cs_location loc;
        int r;

        if (!store || !id)
                return -EINVAL;
        if (cs_chunk_id_is_zero(id))
                return 0;
        r = cs_store_locate(store, id, &loc);
        if (r <= 0)
                return r;
        if (ret_info)
                *ret_info = (cs_chunk_info) {
                        .kind = loc.kind,
                        .size = loc.size,
                        .stored_size = loc.stored_size,
                        .pack = loc.pack,
                        .offset = loc.offset,
                };
        return 1;
}

/* --- Roots -------------------------------------------------------------- */

int cs_store_root_set(cs_store *store, const char *name, const cs_chunk_id *id)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        sqlite3 *db;
        int r;

        if (!store || !name || !*name || strlen(name) > 255 || !id)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        r = cs_store_has(store, id, NULL);
        if (r < 0)
                return r;
        if (r == 0 && !cs_chunk_id_is_zero(id))
                return -ENOENT;

        pthread_mutex_lock(&store->write_lock);
        r = cs_store_commit_locked(store, false);
        if (r < 0)
                goto out;
        db = cs_index_writer(store->index);
        r = cs_index_prepare(db, "INSERT OR REPLACE INTO roots(name, id, created) "
                                 "VALUES(?, ?, strftime('%s','now'))",
                             &stmt);
        if (r < 0)
                goto out;
        sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_blob(stmt, 2, id->bytes, CS_CHUNK_ID_SIZE, SQLITE_STATIC);
        r = cs_index_step(stmt);
out:
        cs_store_writer_unlock(store, &stmt);
        return r;
}

int cs_store_root_get(cs_store *store, const char *name, cs_chunk_id *ret_id)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        sqlite3 *db;
        int rc, r;

        if (!store || !name || !ret_id)
                return -EINVAL;
        r = cs_index_reader_acquire(store->index, &db);
        if (r < 0)
                return r;
        r = cs_index_prepare(db, "SELECT id FROM roots WHERE name = ?", &stmt);
        if (r >= 0) {
                sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
                rc = sqlite3_step(stmt);
                if (rc == SQLITE_ROW && sqlite3_column_bytes(stmt, 0) == CS_CHUNK_ID_SIZE) {
                        memcpy(ret_id->bytes, sqlite3_column_blob(stmt, 0), CS_CHUNK_ID_SIZE);
                        r = 0;
                } else {
                        r = rc == SQLITE_ROW || rc == SQLITE_DONE ? -ENOENT : cs_sqlite_errno(rc);
                }
        }
        sqlite3_finalize(TAKE_PTR(stmt));
        cs_index_reader_release(store->index, db);
        return r;
}

int cs_store_root_delete(cs_store *store, const char *name)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        sqlite3 *db;
        int r;

        if (!store || !name)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        pthread_mutex_lock(&store->write_lock);
        db = cs_store_writer_locked(store);
        r = cs_index_prepare(db, "DELETE FROM roots WHERE name = ?", &stmt);
        if (r >= 0) {
                sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
                r = cs_index_step(stmt);
                if (r >= 0 && sqlite3_changes(db) == 0)
                        r = -ENOENT;
        }
        cs_store_writer_unlock(store, &stmt);
        return r;
}
