/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reclaiming space: mark-and-sweep from the roots, and pack compaction.
 *
 * Design notes
 *
 *  1. Why mark-and-sweep rather than reference counts: a count that drifts
 *     (a crash between two updates, a bug) silently destroys data, while a
 *     mark computed from the roots is always right.  Tree objects list their
 *     children up front (cs_tree_*), so marking needs no knowledge of what
 *     the trees mean.
 *  2. Writers and gc: a chunk put by a writer is unreachable until the
 *     writer sets a root, so a sweep must not run while any writer is
 *     open.  Write handles hold the store's lock file SHARED; gc takes it
 *     EXCLUSIVE for mark and sweep, then drops back to SHARED to compact.
 *  3. A tree chunk that cannot be read hides its children from the mark;
 *     gc then refuses to sweep (-EBADMSG) rather than guess.
 *  4. Compaction copies each live record of a sparse pack into the
 *     compactor's own pack (verifying it on the way), commits the new
 *     locations (INSERT OR REPLACE, see store.c), and only then deletes the
 *     catalog row of the old pack and unlinks it.  Readers holding the old
 *     location retry their lookup when the file is gone.  Compactions are
 *     serialized by flock() on the packs directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>

#include "cs-internal.h"

/* --- A set of chunk ids ------------------------------------------------- */

struct cs_idset {
        cs_chunk_id *slots; /* zero id = empty; the zero id itself is never stored */
        size_t n, n_slots;
};

cs_idset *cs_idset_new(void)
{
        return calloc(1, sizeof(cs_idset));
}

cs_idset *cs_idset_free(cs_idset *s)
{
        if (!s)
                return NULL;
        free(s->slots);
        return mfree(s);
}

static void idset_freep(cs_idset **s)
{
        cs_idset_free(*s);
}

static size_t slot_of(const cs_idset *s, const cs_chunk_id *id)
{
        size_t h;
        memcpy(&h, id->bytes, sizeof(h));
        for (size_t i = h & (s->n_slots - 1);; i = (i + 1) & (s->n_slots - 1))
                if (cs_chunk_id_is_zero(&s->slots[i]) || cs_chunk_id_equal(&s->slots[i], id))
                        return i;
}

bool cs_idset_contains(const cs_idset *s, const cs_chunk_id *id)
{
        if (s->n_slots == 0 || cs_chunk_id_is_zero(id))
                return false;
        return cs_chunk_id_equal(&s->slots[slot_of(s, id)], id);
}

int cs_idset_add(cs_idset *s, const cs_chunk_id *id)
{
        size_t i;

        if (cs_chunk_id_is_zero(id))
                return 0;
        if (2 * (s->n + 1) > s->n_slots) {
                cs_idset bigger = { .n_slots = s->n_slots ? 2 * s->n_slots : 1024 };
                bigger.slots = calloc(bigger.n_slots, sizeof(cs_chunk_id));
                if (!bigger.slots)
                        return -ENOMEM;
                for (size_t j = 0; j < s->n_slots; j++)
                        if (!cs_chunk_id_is_zero(&s->slots[j]))
                                bigger.slots[slot_of(&bigger, &s->slots[j])] = s->slots[j];
                bigger.n = s->n;
                free(s->slots);
                *s = bigger;
        }
        i = slot_of(s, id);
        if (cs_chunk_id_equal(&s->slots[i], id))
                return 0;
        s->slots[i] = *id;
        s->n++;
        return 1;
}

size_t cs_idset_size(const cs_idset *s)
{
        return s->n;
}

/* --- Mark --------------------------------------------------------------- */

typedef struct id_stack {
        cs_chunk_id *ids;
        size_t n, capacity;
} id_stack;

static int stack_push(id_stack *st, const cs_chunk_id *id)
{
        if (st->n == st->capacity) {
                size_t cap = st->capacity ? 2 * st->capacity : 1024;
                cs_chunk_id *ids = reallocarray(st->ids, cap, sizeof(*ids));
                if (!ids)
                        return -ENOMEM;
                st->ids = ids;
                st->capacity = cap;
        }
        st->ids[st->n++] = *id;
        return 0;
}

static int push_query(sqlite3 *db, const char *sql, id_stack *st, const int64_t *skip, size_t n_skip)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        r = cs_index_prepare(db, sql, &stmt);
        if (r < 0 && strstr(sqlite3_errmsg(db), "no such table"))
                return 0; /* a catalog from before that table: nothing to push */
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                int64_t row = sqlite3_column_int64(stmt, 1);
                bool skipped = false;
                cs_chunk_id id;

                for (size_t i = 0; i < n_skip && !skipped; i++)
                        skipped = skip[i] == row;
                if (skipped)
                        continue;
                if (sqlite3_column_bytes(stmt, 0) != CS_CHUNK_ID_SIZE)
                        return -EBADMSG;
                memcpy(id.bytes, sqlite3_column_blob(stmt, 0), CS_CHUNK_ID_SIZE);
                r = stack_push(st, &id);
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : cs_sqlite_errno(rc);
}

/* Pushes every root, clone base, stored WAL segment (pg.c) but those of
 * wal_timeline (if not NULL) below segment wal_before, and every point's
 * root but the points in skip. */
static int push_roots(sqlite3 *db, id_stack *st, const int64_t *skip_points, size_t n_skip, const char *wal_timeline,
                      uint64_t wal_before)
{
        _cleanup_(sqlite3_freep) char *wal = NULL;
        int r;

        /* segno is a SQLite integer: a bound past INT64_MAX means all. */
        wal = wal_timeline ? sqlite3_mprintf("SELECT root, 0 FROM pg_wal WHERE NOT (timeline = %Q AND segno < %lld)",
                                             wal_timeline, (long long) MIN(wal_before, (uint64_t) INT64_MAX))
                           : sqlite3_mprintf("SELECT root, 0 FROM pg_wal");
        if (!wal)
                return -ENOMEM;
        r = push_query(db, "SELECT id, 0 FROM roots", st, NULL, 0);
        if (r >= 0)
                r = push_query(db, "SELECT base_root, 0 FROM clones", st, NULL, 0);
        if (r >= 0)
                r = push_query(db, wal, st, NULL, 0);
        if (r < 0)
                return r;
        return push_query(db, "SELECT root, id FROM points", st, skip_points, n_skip);
}

/* Visits a tree chunk: pushes its children. */
static int expand_tree(cs_store *store, const cs_location *loc, const cs_chunk_id *id,
                       id_stack *st)
{
        _cleanup_free_ uint8_t *buf = NULL;
        const cs_chunk_id *children;
        size_t n;
        int r;

        buf = malloc(MAX(loc->size, 1u));
        if (!buf)
                return -ENOMEM;
        /* cs_store_get, not the location we hold: if compaction moved the
         * chunk meanwhile, get looks it up again. */
        r = cs_store_get(store, id, buf, loc->size);
        if (r < 0)
                return r;
        r = cs_tree_decode(buf, (size_t) r, &children, &n, NULL, NULL);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                cs_chunk_id child;
                memcpy(&child, &children[i], sizeof(child));
                if (cs_chunk_id_is_zero(&child))
                        continue;
                r = stack_push(st, &child);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Walks everything reachable from the ids on the stack that is not yet in
 * visited, adding it there; sums the stored bytes of what it adds. */
static int walk(cs_store *store, id_stack *st, cs_idset *visited, cs_mark_problem_fn problem,
                void *userdata, cs_mark_result *result, uint64_t *bytes)
{
        int r = 0;

        while (r >= 0 && st->n > 0) {
                cs_chunk_id id = st->ids[--st->n];
                cs_location loc;

                r = cs_idset_add(visited, &id);
                if (r <= 0)
                        continue; /* seen, or out of memory (the loop ends) */

                r = cs_store_locate(store, &id, &loc);
                if (r < 0)
                        break;
                if (r == 0) {
                        result->missing++;
                        if (problem)
                                problem(userdata, -ENOENT, &id, NULL);
                        continue;
                }
                if (bytes)
                        *bytes += CS_RECORD_HEADER_SIZE + loc.stored_size;
                if (loc.kind != CS_KIND_TREE)
                        continue;
                r = expand_tree(store, &loc, &id, st);
                if (r == -EBADMSG || r == -EIO || r == -ENOENT) {
                        result->damaged++;
                        if (problem)
                                problem(userdata, r, &id, NULL);
                        r = 0;
                }
        }
        return r < 0 ? r : 0;
}

int cs_store_mark(cs_store *store, sqlite3 *db, cs_idset *marked, cs_mark_problem_fn problem,
                  void *userdata, cs_mark_result *ret)
{
        id_stack st = {};
        cs_mark_result result = {};
        int r;

        r = push_roots(db, &st, NULL, 0, NULL, 0);
        if (r >= 0)
                r = walk(store, &st, marked, problem, userdata, &result, NULL);
        free(st.ids);
        if (r < 0)
                return r;
        if (ret)
                *ret = result;
        return 0;
}

/* --- Reachability for forget -------------------------------------------- */

struct cs_reach {
        cs_idset *visited;
};

cs_reach *cs_reach_new(void)
{
        cs_reach *r = calloc(1, sizeof(*r));
        if (!r)
                return NULL;
        r->visited = cs_idset_new();
        if (!r->visited)
                return mfree(r);
        return r;
}

cs_reach *cs_reach_free(cs_reach *r)
{
        if (!r)
                return NULL;
        cs_idset_free(r->visited);
        return mfree(r);
}

int cs_reach_walk(cs_store *store, cs_reach *visited, const cs_chunk_id *id, uint64_t *ret_new_bytes)
{
        id_stack st = {};
        cs_mark_result result = {};
        uint64_t bytes = 0;
        int r;

        if (!store || !visited || !id)
                return -EINVAL;
        r = stack_push(&st, id);
        if (r >= 0)
                r = walk(store, &st, visited->visited, NULL, NULL, &result, &bytes);
        free(st.ids);
        if (r < 0)
                return r;
        if (result.damaged)
                return -EBADMSG;
        if (ret_new_bytes)
                *ret_new_bytes = bytes;
        return 0;
}

int cs_reach_walk_roots(cs_store *store, cs_reach *visited, const int64_t *skip_points, size_t n_skip,
                        const char *wal_timeline, uint64_t wal_before)
{
        id_stack st = {};
        cs_mark_result result = {};
        sqlite3 *db;
        int r;

        if (!store || !visited)
                return -EINVAL;
        r = cs_index_reader_acquire(store->index, &db);
        if (r < 0)
                return r;
        r = push_roots(db, &st, skip_points, n_skip, wal_timeline, wal_before);
        cs_index_reader_release(store->index, db);
        if (r >= 0)
                r = walk(store, &st, visited->visited, NULL, NULL, &result, NULL);
        free(st.ids);
        if (r < 0)
                return r;
        return result.damaged ? -EBADMSG : 0;
}

/* --- Sweep -------------------------------------------------------------- */

static int collect_unmarked(sqlite3 *db, const cs_idset *marked, id_stack *dead,
                            cs_gc_report *report)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        r = cs_index_prepare(db, "SELECT id, stored_size FROM chunks", &stmt);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                cs_chunk_id id;
                if (sqlite3_column_bytes(stmt, 0) != CS_CHUNK_ID_SIZE)
                        continue;
                memcpy(id.bytes, sqlite3_column_blob(stmt, 0), CS_CHUNK_ID_SIZE);
                if (cs_idset_contains(marked, &id)) {
                        report->chunks_kept++;
                        continue;
                }
                r = stack_push(dead, &id);
                if (r < 0)
                        return r;
                report->chunks_removed++;
                report->bytes_removed += CS_RECORD_HEADER_SIZE + (uint64_t) sqlite3_column_int64(stmt, 1);
        }
        return rc == SQLITE_DONE ? 0 : cs_sqlite_errno(rc);
}

static int delete_chunks(sqlite3 *db, const id_stack *dead)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int r;

        r = cs_index_prepare(db, "DELETE FROM chunks WHERE id = ?", &stmt);
        if (r < 0)
                return r;
        r = cs_index_begin(db);
        if (r < 0)
                return r;
        for (size_t i = 0; i < dead->n; i++) {
                sqlite3_bind_blob(stmt, 1, dead->ids[i].bytes, CS_CHUNK_ID_SIZE, SQLITE_STATIC);
                r = cs_index_step(stmt);
                sqlite3_reset(stmt);
                if (r < 0) {
                        cs_index_rollback(db);
                        return r;
                }
        }
        return cs_index_commit(db);
}

/* Unlinks pack files the catalog does not list (gc only: with every writer
 * excluded, a final-named file without a row cannot be in the making). */
static int remove_unlisted_packs(cs_store *store)
{
        _cleanup_close_ int fd = -1;
        sqlite3 *db = cs_index_writer(store->index);
        struct dirent *de;
        DIR *d;
        int r = 0;

        fd = openat(store->dir_fd, CS_PACK_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        d = fdopendir(TAKE_FD(fd));
        if (!d)
                return negative_errno();
        while (r >= 0 && (de = readdir(d))) {
                char *end;
                int64_t listed = 0;
                uint64_t id = strtoull(de->d_name, &end, 16);

                if (de->d_name[0] == '.' || strcmp(end, ".pack") != 0)
                        continue;
                r = cs_index_query_int(db, "SELECT COUNT(*) FROM packs WHERE id = ?", (int64_t) id, &listed);
                if (r >= 0 && listed == 0 && unlinkat(dirfd(d), de->d_name, 0) < 0)
                        r = negative_errno();
        }
        closedir(d);
        return r;
}

static void mark_problem(void *userdata, int error, const cs_chunk_id *id, const cs_chunk_id *parent)
{
        cs_store *store = userdata;
        char hex[CS_CHUNK_ID_STRING_MAX];

        (void) parent;
        cs_store_log(store, error, "gc: tree chunk %s %s", cs_chunk_id_format(id, hex),
                     error == -ENOENT ? "is missing" : "is damaged");
}

int cs_store_gc(cs_store *store, unsigned flags, cs_gc_report *ret_report)
{
        _cleanup_(idset_freep) cs_idset *marked = NULL;
        cs_gc_report report = {};
        cs_mark_result mark;
        id_stack dead = {};
        sqlite3 *db = NULL;
        int r;

        if (!store)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;
        marked = cs_idset_new();
        if (!marked)
                return -ENOMEM;

        /* Our own puts first: a root may already point at them. */
        pthread_mutex_lock(&store->write_lock);
        r = cs_store_commit_locked(store, true);
        pthread_mutex_unlock(&store->write_lock);
        if (r < 0)
                return r;

        r = cs_store_lock(store, LOCK_EX, flags & CS_GC_NOWAIT);
        if (r < 0) {
                /* Converting drops the shared lock first: take it back. */
                (void) cs_store_lock(store, LOCK_SH, false);
                return r;
        }

        /* No writer lives now: every OPEN pack is abandoned, and a pack file
         * no row names is a compaction's leftover. */
        if (!(flags & CS_GC_DRY_RUN)) {
                r = cs_pack_recover(store->dir_fd, cs_index_writer(store->index), true);
                if (r >= 0)
                        r = remove_unlisted_packs(store);
                if (r < 0)
                        goto unlock;
        }

        /* Pins of dead mounts would keep their trees forever. */
        if (!(flags & CS_GC_DRY_RUN)) {
                r = cs_store_drop_stale_pins(store, cs_index_writer(store->index));
                if (r < 0)
                        goto unlock;
        }
        r = cs_index_reader_acquire(store->index, &db);
        if (r < 0)
                goto unlock;
        r = cs_index_exec(db, "BEGIN");
        if (r >= 0)
                r = cs_store_mark(store, db, marked, mark_problem, store, &mark);
        if (r >= 0 && (mark.missing || mark.damaged))
                r = -EBADMSG; /* design note 3 */
        if (r >= 0)
                r = collect_unmarked(db, marked, &dead, &report);
        (void) cs_index_exec(db, "COMMIT");
        cs_index_reader_release(store->index, db);
        if (r < 0)
                goto unlock;

        if (!(flags & CS_GC_DRY_RUN) && dead.n > 0)
                r = delete_chunks(cs_index_writer(store->index), &dead);

unlock:
        free(dead.ids);
        (void) cs_store_lock(store, LOCK_SH, false);
        if (r < 0)
                return r;
        if (!(flags & CS_GC_DRY_RUN)) {
                r = cs_store_compact(store, 50, &report);
                if (r < 0)
                        return r;
        }
        if (ret_report)
                *ret_report = report;
        return 0;
}

/* --- Compaction --------------------------------------------------------- */

typedef struct pack_usage {
        uint64_t id;
        uint64_t size;
        uint64_t live;
        uint64_t rows;
        bool victim;
} pack_usage;

static int cmp_pack_usage(const void *a, const void *b)
{
        const pack_usage *x = a, *y = b;
        return x->id < y->id ? -1 : x->id > y->id;
}

static pack_usage *find_usage(pack_usage *packs, size_t n, uint64_t id)
{
        pack_usage key = { .id = id };
        return bsearch(&key, packs, n, sizeof(*packs), cmp_pack_usage);
}

static int load_sealed_packs(sqlite3 *db, pack_usage **ret, size_t *ret_n)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_free_ pack_usage *packs = NULL;
        size_t n = 0, cap = 0;
        int rc, r;

        r = cs_index_prepare(db, "SELECT id, size FROM packs WHERE state = 1 ORDER BY id", &stmt);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                if (n == cap) {
                        cap = cap ? 2 * cap : 64;
                        pack_usage *p = reallocarray(packs, cap, sizeof(*p));
                        if (!p)
                                return -ENOMEM;
                        packs = p;
                }
                packs[n++] = (pack_usage) {
                        .id = (uint64_t) sqlite3_column_int64(stmt, 0),
                        .size = (uint64_t) sqlite3_column_int64(stmt, 1),
                };
        }
        if (rc != SQLITE_DONE)
                return cs_sqlite_errno(rc);
        *ret = TAKE_PTR(packs);
        *ret_n = n;
        return 0;
}

static int tally_rows(sqlite3 *db, pack_usage *packs, size_t n)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        for (size_t i = 0; i < n; i++)
                packs[i].live = packs[i].rows = 0;
        r = cs_index_prepare(db, "SELECT pack, COUNT(*), SUM(32 + stored_size) FROM chunks GROUP BY pack",
                             &stmt);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                pack_usage *p = find_usage(packs, n, (uint64_t) sqlite3_column_int64(stmt, 0));
                if (!p)
                        continue;
                p->rows = (uint64_t) sqlite3_column_int64(stmt, 1);
                p->live = (uint64_t) sqlite3_column_int64(stmt, 2);
        }
        return rc == SQLITE_DONE ? 0 : cs_sqlite_errno(rc);
}

/* Copies one live record into our pack.  A damaged record stays where it
 * is (and keeps its pack alive): compaction must never launder damage. */
static int move_record(cs_store *store, const cs_chunk_id *id, const cs_location *loc)
{
        _cleanup_free_ uint8_t *record = NULL, *plain = NULL;
        cs_record_header h;
        int r;

        record = malloc(CS_RECORD_HEADER_SIZE + loc->stored_size);
        plain = malloc(MAX(loc->size, 1u));
        if (!record || !plain)
                return -ENOMEM;
        r = cs_pack_cache_read(store->packs, loc, record);
        if (r < 0)
                return r;
        r = cs_record_header_decode(record, &h);
        if (r < 0)
                return r;
        if (!cs_chunk_id_equal(&h.id, id) || h.stored_size != loc->stored_size)
                return -EBADMSG;
        r = cs_record_decode_payload(&store->hasher, &h, record + CS_RECORD_HEADER_SIZE, plain);
        if (r < 0)
                return r;

        pthread_mutex_lock(&store->write_lock);
        r = cs_store_append_locked(store, &h, record, CS_RECORD_HEADER_SIZE + h.stored_size);
        pthread_mutex_unlock(&store->write_lock);
        return r;
}

static int move_live_chunks(cs_store *store, sqlite3 *db, pack_usage *packs, size_t n,
                            cs_gc_report *report)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        r = cs_index_prepare(db, "SELECT id, kind, pack, offset, size, stored_size FROM chunks", &stmt);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                cs_location loc = {
                        .kind = sqlite3_column_int(stmt, 1),
                        .pack = (uint64_t) sqlite3_column_int64(stmt, 2),
                        .offset = (uint64_t) sqlite3_column_int64(stmt, 3),
                        .size = (uint32_t) sqlite3_column_int64(stmt, 4),
                        .stored_size = (uint32_t) sqlite3_column_int64(stmt, 5),
                };
                pack_usage *p = find_usage(packs, n, loc.pack);
                cs_chunk_id id;

                if (!p || !p->victim || sqlite3_column_bytes(stmt, 0) != CS_CHUNK_ID_SIZE)
                        continue;
                memcpy(id.bytes, sqlite3_column_blob(stmt, 0), CS_CHUNK_ID_SIZE);
                r = move_record(store, &id, &loc);
                if (r == -EBADMSG || r == -EIO) {
                        char hex[CS_CHUNK_ID_STRING_MAX];
                        cs_store_log(store, r, "compact: chunk %s in pack %llu is damaged; pack kept",
                                     cs_chunk_id_format(&id, hex), (unsigned long long) loc.pack);
                        continue;
                }
                if (r < 0)
                        return r;
        }
        if (rc != SQLITE_DONE)
                return cs_sqlite_errno(rc);
        (void) report;
        return 0;
}

static int delete_empty_packs(cs_store *store, pack_usage *packs, size_t n, cs_gc_report *report)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        sqlite3 *db = cs_index_writer(store->index);
        int r;

        r = cs_index_prepare(db, "DELETE FROM packs WHERE id = ? AND state = 1 AND "
                                 "NOT EXISTS (SELECT 1 FROM chunks WHERE pack = ?)",
                             &stmt);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                char path[64];

                if (packs[i].rows != 0)
                        continue;
                r = cs_index_begin(db);
                if (r < 0)
                        return r;
                sqlite3_bind_int64(stmt, 1, (int64_t) packs[i].id);
                sqlite3_bind_int64(stmt, 2, (int64_t) packs[i].id);
                r = cs_index_step(stmt);
                sqlite3_reset(stmt);
                if (r < 0) {
                        cs_index_rollback(db);
                        return r;
                }
                bool deleted = sqlite3_changes(db) > 0;
                r = cs_index_commit(db);
                if (r < 0)
                        return r;
                if (!deleted)
                        continue;
                /* The row is gone first: a crash here leaves a file no row
                 * names, which verify reports and the next gc removes. */
                cs_pack_path(packs[i].id, path);
                if (unlinkat(store->dir_fd, path, 0) < 0 && errno != ENOENT)
                        return negative_errno();
                cs_pack_cache_drop(store->packs, packs[i].id);
                report->packs_removed++;
                report->bytes_reclaimed += packs[i].size;
        }
        return 0;
}

static void packs_unlockp(int *fd)
{
        if (*fd >= 0)
                (void) flock(*fd, LOCK_UN);
        safe_close(*fd);
}

int cs_store_compact(cs_store *store, unsigned min_live_percent, cs_gc_report *ret_report)
{
        _cleanup_(packs_unlockp) int packs_fd = -1;
        _cleanup_free_ pack_usage *packs = NULL;
        cs_gc_report report = ret_report ? *ret_report : (cs_gc_report) {};
        sqlite3 *db = NULL;
        size_t n = 0, n_victims = 0;
        int r;

        if (!store || min_live_percent > 100)
                return -EINVAL;
        if (!(store->flags & CS_OPEN_WRITE))
                return -EROFS;

        packs_fd = openat(store->dir_fd, CS_PACK_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (packs_fd < 0)
                return negative_errno();
        if (flock(packs_fd, LOCK_EX) < 0)
                return negative_errno();

        r = cs_index_reader_acquire(store->index, &db);
        if (r < 0)
                return r;
        r = load_sealed_packs(db, &packs, &n);
        if (r >= 0)
                r = tally_rows(db, packs, n);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                uint64_t payload = packs[i].size > CS_PACK_HEADER_SIZE ? packs[i].size - CS_PACK_HEADER_SIZE : 0;
                packs[i].victim = packs[i].rows > 0 &&
                                  packs[i].live * 100 < (uint64_t) min_live_percent * payload;
                n_victims += packs[i].victim;
        }
        if (r >= 0 && n_victims > 0)
                r = move_live_chunks(store, db, packs, n, &report);
        cs_index_reader_release(store->index, db);
        if (r < 0)
                return r;

        if (n_victims > 0) {
                pthread_mutex_lock(&store->write_lock);
                r = cs_store_commit_locked(store, true);
                pthread_mutex_unlock(&store->write_lock);
                if (r < 0)
                        return r;
                report.packs_rewritten += n_victims;
        }

        r = cs_index_reader_acquire(store->index, &db);
        if (r < 0)
                return r;
        r = tally_rows(db, packs, n);
        cs_index_reader_release(store->index, db);
        if (r < 0)
                return r;
        r = delete_empty_packs(store, packs, n, &report);
        if (r < 0)
                return r;
        if (ret_report)
                *ret_report = report;
        return 0;
}
