/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Checking a store and describing it.  Verification is read-only: it
 * reports, it never repairs.  It runs beside writers (it reads one catalog
 * snapshot) and holds packs/ shared so that compaction waits for it.
 *
 * What is checked, in order:
 *   1. the catalog's own integrity (PRAGMA quick_check);
 *   2. every pack: its file exists, its header names it, it is long enough
 *      for every record the catalog places in it; bytes no row accounts
 *      for are reported as reclaimable (a crashed batch leaves some);
 *   3. every chunk row: its record header matches the row (with
 *      CS_VERIFY_DATA: its payload decompresses and re-hashes to its id);
 *   4. reachability: every chunk a root or a tree names is stored; stored
 *      chunks no root reaches are reported as reclaimable by gc.
 * Pack files no catalog row names are reported as reclaimable too.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "cs-internal.h"

typedef struct verifier {
        cs_store *store;
        sqlite3 *db;
        unsigned flags;
        cs_problem_fn problem;
        void *userdata;
        cs_verify_report report;
} verifier;

static void report_problem(verifier *v, cs_problem_severity severity, const char *format, ...)
        _printf_(3, 4);

static void report_problem(verifier *v, cs_problem_severity severity, const char *format, ...)
{
        char message[1024];
        va_list ap;

        if (severity == CS_PROBLEM_ERROR)
                v->report.errors++;
        if (!v->problem)
                return;
        va_start(ap, format);
        vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);
        v->problem(v->userdata, severity, message);
}

static int check_catalog(verifier *v)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        r = cs_index_prepare(v->db, "PRAGMA quick_check", &stmt);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                const char *line = (const char *) sqlite3_column_text(stmt, 0);
                if (line && strcmp(line, "ok") != 0)
                        report_problem(v, CS_PROBLEM_ERROR, "catalog: %s", line);
        }
        if (rc != SQLITE_DONE)
                report_problem(v, CS_PROBLEM_ERROR, "catalog: integrity check failed: %s",
                               sqlite3_errmsg(v->db));
        return 0;
}

typedef struct pack_facts {
        uint64_t id;
        int state;
        uint64_t file_size;
        uint64_t end;  /* end of the last record rows place in it */
        uint64_t used; /* bytes of records rows account for */
        bool present;
} pack_facts;

static int cmp_facts(const void *a, const void *b)
{
        const pack_facts *x = a, *y = b;
        return x->id < y->id ? -1 : x->id > y->id;
}

static int load_packs(verifier *v, pack_facts **ret, size_t *ret_n)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        _cleanup_free_ pack_facts *packs = NULL;
        size_t n = 0, cap = 0;
        int rc, r;

        r = cs_index_prepare(v->db, "SELECT id, state FROM packs ORDER BY id", &stmt);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                if (n == cap) {
                        cap = cap ? 2 * cap : 64;
                        pack_facts *p = reallocarray(packs, cap, sizeof(*p));
                        if (!p)
                                return -ENOMEM;
                        packs = p;
                }
                packs[n++] = (pack_facts) {
                        .id = (uint64_t) sqlite3_column_int64(stmt, 0),
                        .state = sqlite3_column_int(stmt, 1),
                };
        }
        if (rc != SQLITE_DONE)
                return cs_sqlite_errno(rc);
        *ret = TAKE_PTR(packs);
        *ret_n = n;
        return 0;
}

static void check_pack_files(verifier *v, pack_facts *packs, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                _cleanup_close_ int fd = -1;
                struct stat st;
                char path[64];
                int r;

                cs_pack_path(packs[i].id, path);
                fd = openat(v->store->dir_fd, path, O_RDONLY | O_CLOEXEC);
                if (fd < 0 || fstat(fd, &st) < 0)
                        continue; /* judged against its rows in check_chunks_against_packs */
                packs[i].present = true;
                packs[i].file_size = (uint64_t) st.st_size;
                v->report.packs_checked++;
                r = cs_pack_check_header(fd, packs[i].id);
                if (r < 0)
                        report_problem(v, CS_PROBLEM_ERROR, "pack %s: bad header", path);
        }
}

static int check_chunk(verifier *v, const cs_chunk_id *id, const cs_location *loc)
{
        _cleanup_free_ uint8_t *buf = NULL;
        char hex[CS_CHUNK_ID_STRING_MAX];
        uint8_t header[CS_RECORD_HEADER_SIZE];
        cs_record_header h;
        int r;

        v->report.chunks_checked++;
        if (v->flags & CS_VERIFY_DATA) {
                buf = malloc(MAX(loc->size, 1u));
                if (!buf)
                        return -ENOMEM;
                r = cs_store_read_location(v->store, loc, id, buf);
        } else {
                cs_location header_only = *loc;
                header_only.stored_size = 0;
                r = cs_pack_cache_read(v->store->packs, &header_only, header);
                if (r >= 0)
                        r = cs_record_header_decode(header, &h);
                if (r >= 0 && (!cs_chunk_id_equal(&h.id, id) || h.size != loc->size ||
                               h.stored_size != loc->stored_size || h.kind != loc->kind))
                        r = -EBADMSG;
        }
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                v->report.chunks_damaged++;
                report_problem(v, CS_PROBLEM_ERROR, "chunk %s in pack %016" PRIx64 " at offset %" PRIu64 ": %s",
                               cs_chunk_id_format(id, hex), loc->pack, loc->offset,
                               r == -EBADMSG ? "damaged (does not match its id)" : strerror(-r));
        }
        return 0;
}

static int check_chunks(verifier *v, pack_facts *packs, size_t n)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
        int rc, r;

        r = cs_index_prepare(v->db,
                             "SELECT id, kind, pack, offset, size, stored_size FROM chunks "
                             "ORDER BY pack, offset",
                             &stmt);
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
                pack_facts key = { .id = loc.pack }, *p;
                uint64_t end = loc.offset + CS_RECORD_HEADER_SIZE + loc.stored_size;
                char hex[CS_CHUNK_ID_STRING_MAX];
                cs_chunk_id id;

                if (sqlite3_column_bytes(stmt, 0) != CS_CHUNK_ID_SIZE) {
                        report_problem(v, CS_PROBLEM_ERROR, "catalog: a chunk row has a malformed id");
                        continue;
                }
                memcpy(id.bytes, sqlite3_column_blob(stmt, 0), CS_CHUNK_ID_SIZE);
                cs_chunk_id_format(&id, hex);

                p = bsearch(&key, packs, n, sizeof(*packs), cmp_facts);
                if (!p) {
                        report_problem(v, CS_PROBLEM_ERROR, "chunk %s: in pack %016" PRIx64 ", which the catalog does not list",
                                       hex, loc.pack);
                        continue;
                }
                if (loc.offset < CS_PACK_HEADER_SIZE || loc.kind >= _CS_KIND_MAX ||
                    loc.stored_size > loc.size || loc.size > CS_CHUNK_SIZE_MAX) {
                        report_problem(v, CS_PROBLEM_ERROR, "chunk %s: malformed catalog row", hex);
                        continue;
                }
                p->end = MAX(p->end, end);
                p->used += end - loc.offset;
                if (!p->present || p->file_size < end) {
                        v->report.chunks_damaged++;
                        continue; /* counted, reported per pack below */
                }
                r = check_chunk(v, &id, &loc);
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : cs_sqlite_errno(rc);
}

static void judge_packs(verifier *v, const pack_facts *packs, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                const pack_facts *p = &packs[i];
                char path[64];

                cs_pack_path(p->id, path);
                if (!p->present) {
                        if (p->used > 0)
                                report_problem(v, CS_PROBLEM_ERROR, "pack %s is missing: the chunks it held are lost", path);
                        continue;
                }
                if (p->file_size < p->end) {
                        report_problem(v, CS_PROBLEM_ERROR,
                                       "pack %s is truncated: %" PRIu64 " bytes, chunks extend to %" PRIu64,
                                       path, p->file_size, p->end);
                        continue;
                }
                /* An open pack's tail belongs to its live writer's batch. */
                if (p->state == CS_PACK_SEALED && p->file_size > CS_PACK_HEADER_SIZE + p->used) {
                        uint64_t orphan = p->file_size - CS_PACK_HEADER_SIZE - p->used;
                        v->report.orphan_bytes += orphan;
                        report_problem(v, CS_PROBLEM_NOTICE,
                                       "pack %s: %" PRIu64 " bytes hold no live chunk (gc compacts a pack once less than half of it is live)",
                                       path, orphan);
                }
        }
}

static void check_stray_files(verifier *v, const pack_facts *packs, size_t n)
{
        _cleanup_close_ int fd = -1;
        struct dirent *de;
        DIR *d;

        fd = openat(v->store->dir_fd, CS_PACK_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                report_problem(v, CS_PROBLEM_ERROR, "the packs directory is missing");
                return;
        }
        d = fdopendir(TAKE_FD(fd));
        if (!d)
                return;
        while ((de = readdir(d))) {
                pack_facts key = {};
                char *end;

                if (de->d_name[0] == '.')
                        continue;
                key.id = strtoull(de->d_name, &end, 16);
                if (strcmp(end, ".pack") == 0 && bsearch(&key, packs, n, sizeof(*packs), cmp_facts))
                        continue;
                report_problem(v, CS_PROBLEM_NOTICE, "packs/%s: not in the catalog (reclaimable)",
                               de->d_name);
        }
        closedir(d);
}

static void reach_problem(void *userdata, int error, const cs_chunk_id *id, const cs_chunk_id *parent)
{
        verifier *v = userdata;
        char hex[CS_CHUNK_ID_STRING_MAX];

        (void) parent;
        cs_chunk_id_format(id, hex);
        if (error == -ENOENT)
                report_problem(v, CS_PROBLEM_ERROR, "chunk %s is referenced but not stored", hex);
        else
                report_problem(v, CS_PROBLEM_ERROR, "tree chunk %s cannot be read: %s", hex,
                               error == -EBADMSG ? "damaged" : strerror(-error));
}

static int check_reachability(verifier *v)
{
        cs_idset *marked = cs_idset_new();
        cs_mark_result mark = {};
        int64_t chunks = 0;
        int r;

        if (!marked)
                return -ENOMEM;
        r = cs_store_mark(v->store, v->db, marked, reach_problem, v, &mark);
        if (r >= 0)
                r = cs_index_query_int(v->db, "SELECT COUNT(*) FROM chunks", 0, &chunks);
        if (r >= 0) {
                v->report.chunks_missing = mark.missing;
                /* Marked ids that are missing are not among the stored chunks. */
                uint64_t reached = cs_idset_size(marked) - mark.missing;
                if ((uint64_t) chunks > reached) {
                        v->report.orphan_chunks = (uint64_t) chunks - reached;
                        report_problem(v, CS_PROBLEM_NOTICE,
                                       "%" PRIu64 " chunks are not reachable from any root (gc reclaims them)",
                                       v->report.orphan_chunks);
                }
        }
        cs_idset_free(marked);
        return r;
}

int cs_store_verify(cs_store *store, unsigned flags, cs_problem_fn problem, void *userdata,
                    cs_verify_report *ret_report)
{
        _cleanup_free_ pack_facts *packs = NULL;
        _cleanup_close_ int packs_fd = -1, lock_fd = -1;
        verifier v = { .store = store, .flags = flags, .problem = problem, .userdata = userdata };
        size_t n = 0;
        int r;

        if (!store)
                return -EINVAL;
        /* Compaction holds packs/ exclusively while it moves chunks and
         * deletes packs; holding it shared keeps our catalog snapshot and
         * the pack files in agreement for the whole run. */
        packs_fd = openat(store->dir_fd, CS_PACK_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (packs_fd >= 0 && flock(packs_fd, LOCK_SH) < 0)
                packs_fd = safe_close(packs_fd);
        /* And the store's lock shared, as writers hold it: gc's sweep waits,
         * so a forget + gc cannot remove chunks our walk is about to find. */
        lock_fd = openat(store->dir_fd, CS_LOCK_FILE, O_RDONLY | O_CLOEXEC);
        if (lock_fd >= 0 && flock(lock_fd, LOCK_SH) < 0)
                lock_fd = safe_close(lock_fd);
        r = cs_index_reader_acquire(store->index, &v.db);
        if (r < 0)
                return r;
        /* One snapshot for the whole run: a concurrent commit cannot make
         * rows and packs disagree under us. */
        r = cs_index_exec(v.db, "BEGIN");
        if (r >= 0)
                r = check_catalog(&v);
        if (r >= 0)
                r = load_packs(&v, &packs, &n);
        if (r >= 0) {
                check_pack_files(&v, packs, n);
                r = check_chunks(&v, packs, n);
        }
        if (r >= 0) {
                judge_packs(&v, packs, n);
                check_stray_files(&v, packs, n);
                r = check_reachability(&v);
        }
        (void) cs_index_exec(v.db, "COMMIT");
        cs_index_reader_release(store->index, v.db);
        if (r < 0)
                return r;
        if (ret_report)
                *ret_report = v.report;
        return v.report.errors ? -EBADMSG : 0;
}

static uint64_t file_size_at(int dir_fd, const char *name)
{
        struct stat st;
        return fstatat(dir_fd, name, &st, 0) == 0 ? (uint64_t) st.st_size : 0;
}

int cs_store_stats(cs_store *store, cs_stats *ret_stats)
{
        cs_stats s = {};
        int64_t v = 0;
        sqlite3 *db;
        int r;

        if (!store || !ret_stats)
                return -EINVAL;
        s.block_size = store->config.block_size;
        s.lz4hc_level = store->config.lz4hc_level;

        r = cs_index_reader_acquire(store->index, &db);
        if (r < 0)
                return r;
        r = cs_index_exec(db, "BEGIN");
#define QUERY(sql, field)                                         \
        if (r >= 0) {                                             \
                r = cs_index_query_int(db, sql, 0, &v);           \
                s.field = (uint64_t) v;                           \
        }
        QUERY("SELECT value FROM meta WHERE key = 'logical_bytes'", logical_bytes);
        QUERY("SELECT COALESCE(SUM(size), 0) FROM chunks", unique_bytes);
        QUERY("SELECT COALESCE(SUM(stored_size), 0) FROM chunks", stored_bytes);
        QUERY("SELECT COUNT(*) FROM chunks", chunks);
        QUERY("SELECT COUNT(*) FROM packs", packs);
        QUERY("SELECT COUNT(*) FROM roots", roots);
        /* Open packs record their size only when sealed; sealed ones are exact. */
        QUERY("SELECT COALESCE(SUM(size), 0) FROM packs WHERE state = 1", pack_bytes);
#undef QUERY
        if (r >= 0) {
                _cleanup_(sqlite3_finalizep) sqlite3_stmt *stmt = NULL;
                r = cs_index_prepare(db, "SELECT id FROM packs WHERE state = 0", &stmt);
                while (r >= 0 && sqlite3_step(stmt) == SQLITE_ROW) {
                        char path[64];
                        cs_pack_path((uint64_t) sqlite3_column_int64(stmt, 0), path);
                        s.pack_bytes += file_size_at(store->dir_fd, path);
                }
        }
        (void) cs_index_exec(db, "COMMIT");
        cs_index_reader_release(store->index, db);
        if (r < 0)
                return r;

        s.catalog_bytes = file_size_at(store->dir_fd, CS_CATALOG_FILE) +
                          file_size_at(store->dir_fd, CS_CATALOG_FILE "-wal");
        *ret_stats = s;
        return 0;
}
