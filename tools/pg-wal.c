/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * PostgreSQL WAL in the store (pg-wal.h).
 *
 * Design notes
 *
 *  1. A segment is stored as a blob object (chunkstore.h) and a pg_wal row
 *     (timeline, tli, segno, size, partial).  The receiver keeps the
 *     segment it is filling in memory and stores what it has (a partial
 *     segment) at most every FLUSH_INTERVAL seconds and whenever the
 *     segment completes; a stored partial is replaced by the next, longer
 *     one, and by the complete segment.  Unchanged blocks deduplicate, so
 *     a flush costs about one new block and the blob object.
 *  2. Durability order: blocks put, then cs_pg_wal_put commits them
 *     (fdatasync of the pack, then the catalog transaction), and only then
 *     is the new flush position sent to the server in a standby status
 *     update.  The slot's restart_lsn therefore never passes WAL the store
 *     could lose, and WAL the server may drop is always in the store.
 *  3. Resuming: from the segment after the newest complete one stored
 *     (or the start of a partial one), else from the slot's restart_lsn
 *     (READ_REPLICATION_SLOT, 15 and newer), else from the oldest base
 *     backup's start.  Always from a segment's start, so a segment is
 *     received whole by one connection.
 *  4. Timeline switches: when the server ends the stream with the next
 *     timeline and its start, the receiver stores the old timeline's last
 *     segment as partial, fetches the new timeline's history file
 *     (TIMELINE_HISTORY) into the catalog and goes on from the start of
 *     the segment holding the switch point.
 *  5. The store handle is closed once it is older than REOPEN_INTERVAL
 *     seconds (at the next flush, or as soon as nothing is pending) and
 *     opened again when needed: a write handle holds the store's shared
 *     lock, and gc waits for it.  Not per segment: closing seals the pack,
 *     which would make a small pack per segment.
 *  6. The link can be removed under a running receiver (pg unlink).  The
 *     receiver looks at it every LINK_CHECK_INTERVAL seconds and before
 *     each connection, on a read-only handle (which gc does not wait
 *     for), and cs_pg_wal_put refuses a row for an unlinked timeline in
 *     its own statement: either way it stops, with status 3, and lets go
 *     of the slot, which pg unlink is waiting to drop.
 *  7. Errors on the way to a retry (connecting, the server checks, the
 *     history file) are logged as warnings (log_demote_errors): an error
 *     line always comes with a non-zero exit.  A connection that works
 *     again after a failure says so in one line.
 *  8. Commit timestamps come from the WAL itself: XLOG records of the
 *     transaction resource manager (RM_XACT_ID 1) whose operation is
 *     COMMIT (0x00) or COMMIT_PREPARED (0x30) begin their main data with
 *     the commit time (TimestampTz).  Records are walked from the first
 *     one that begins in the segment (skipping the continuation of one
 *     from the segment before); one that runs into the next segment is
 *     not looked at, so its commit time is missed (conservative).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clonectl.h"
#include "pg-wal.h"
#include "source-pg.h"
#include "util/log.h"
#include "util/macro.h"

#define FLUSH_INTERVAL 1
#define STATUS_INTERVAL 10
#define REOPEN_INTERVAL 60
#define BACKOFF_MAX 30
#define LINK_CHECK_INTERVAL 2

#define XLOG_BLCKSZ 8192
#define LONG_PAGE_HEADER 40
#define SHORT_PAGE_HEADER 24
#define XLP_FIRST_IS_CONTRECORD 0x0001
#define RECORD_HEADER 24
#define RM_XACT_ID 1
#define XACT_OPMASK 0x70
#define XACT_COMMIT 0x00
#define XACT_ABORT 0x20
#define XACT_COMMIT_PREPARED 0x30
#define XACT_ABORT_PREPARED 0x40
#define COMMIT_RECORD_MAX 65536

static uint64_t le_get(const uint8_t *p, int n)
{
        uint64_t v = 0;
        for (int i = n - 1; i >= 0; i--)
                v = (v << 8) | p[i];
        return v;
}

static uint64_t be_get(const uint8_t *p, int n)
{
        uint64_t v = 0;
        for (int i = 0; i < n; i++)
                v = (v << 8) | p[i];
        return v;
}

static void be_put(uint8_t *p, uint64_t v, int n)
{
        for (int i = n - 1; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t) v;
}

/* --- Names --------------------------------------------------------------------- */

void pg_wal_file_name(uint32_t tli, uint64_t segno, uint32_t segment_size, char buf[static 25])
{
        uint64_t per_id = UINT64_C(0x100000000) / segment_size;
        snprintf(buf, 25, "%08X%08X%08X", tli, (uint32_t) (segno / per_id), (uint32_t) (segno % per_id));
}

static bool all_hex(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (!strchr("0123456789ABCDEF", s[i]) || !s[i])
                        return false;
        return true;
}

int pg_wal_parse_name(const char *name, uint32_t segment_size, pg_wal_kind *ret_kind, uint32_t *ret_tli,
                      uint64_t *ret_segno)
{
        size_t len = strlen(name);
        uint64_t per_id = UINT64_C(0x100000000) / segment_size;
        char part[9] = "";

        if (len == 16 && all_hex(name, 8) && strcmp(name + 8, ".history") == 0) {
                memcpy(part, name, 8);
                *ret_kind = PG_WAL_HISTORY;
                *ret_tli = (uint32_t) strtoul(part, NULL, 16);
                *ret_segno = 0;
                return *ret_tli ? 0 : -EINVAL;
        }
        if (len < 24 || !all_hex(name, 24))
                return -EINVAL;
        if (len == 24)
                *ret_kind = PG_WAL_SEGMENT;
        else if (strcmp(name + 24, ".partial") == 0)
                *ret_kind = PG_WAL_PARTIAL;
        else if (len == 40 && name[24] == '.' && all_hex(name + 25, 8) && strcmp(name + 33, ".backup") == 0)
                *ret_kind = PG_WAL_BACKUP;
        else
                return -EINVAL;
        memcpy(part, name, 8);
        *ret_tli = (uint32_t) strtoul(part, NULL, 16);
        memcpy(part, name + 8, 8);
        uint64_t hi = strtoull(part, NULL, 16);
        memcpy(part, name + 16, 8);
        uint64_t lo = strtoull(part, NULL, 16);
        if (*ret_tli == 0 || lo >= per_id)
                return -EINVAL;
        *ret_segno = hi * per_id + lo;
        return 0;
}

/* --- Commit timestamps (design note 8) ----------------------------------------------- */

typedef struct wal_reader {
        const uint8_t *data;
        size_t size;
        uint64_t seg_lsn;
        bool bad; /* a page that is not this segment's */
} wal_reader;

static size_t page_header_size(size_t pos)
{
        return pos == 0 ? LONG_PAGE_HEADER : SHORT_PAGE_HEADER;
}

/* Checks the header of the page starting at pos. */
static bool page_ok(wal_reader *w, size_t pos)
{
        if (pos + SHORT_PAGE_HEADER > w->size || le_get(w->data + pos + 8, 8) != w->seg_lsn + pos) {
                w->bad = true;
                return false;
        }
        return true;
}

/* Copies (or, with out NULL, skips) n bytes of record data from *pos,
 * stepping over page headers.  Returns the bytes it got. */
static size_t wal_read(wal_reader *w, size_t *pos, uint8_t *out, size_t n)
{
        size_t got = 0;

        while (got < n && !w->bad) {
                if (*pos % XLOG_BLCKSZ == 0) {
                        if (!page_ok(w, *pos))
                                break;
                        *pos += page_header_size(*pos);
                }
                size_t avail = XLOG_BLCKSZ - *pos % XLOG_BLCKSZ;
                size_t take = MIN(MIN(n - got, avail), w->size > *pos ? w->size - *pos : 0);
                if (take == 0)
                        break;
                if (out)
                        memcpy(out + got, w->data + *pos, take);
                *pos += take;
                got += take;
        }
        return got;
}

/* The time in a transaction's commit or abort record, or 0.  Aborts
 * count too: recovery_target_time stops at the first commit or abort
 * past the target, so the range of pg-clone.c must know their times, or
 * an abort after a backup's last commit and before its end could stop a
 * clone at the range's start short of consistency.  Both records' main
 * data lead with xact_time. */
static int64_t commit_time(const uint8_t *rec, size_t len)
{
        uint8_t info = rec[16], rmid = rec[17], op = info & XACT_OPMASK;
        size_t off = RECORD_HEADER;
        uint64_t main_len = 0;

        if (rmid != RM_XACT_ID ||
            (op != XACT_COMMIT && op != XACT_COMMIT_PREPARED && op != XACT_ABORT && op != XACT_ABORT_PREPARED))
                return 0;
        while (off < len) {
                uint8_t id = rec[off];
                if (id == 0xff && off + 2 <= len) { /* XLR_BLOCK_ID_DATA_SHORT */
                        main_len = rec[off + 1];
                        break;
                }
                if (id == 0xfe && off + 5 <= len) { /* XLR_BLOCK_ID_DATA_LONG */
                        main_len = le_get(rec + off + 1, 4);
                        break;
                }
                if (id == 0xfd) /* XLR_BLOCK_ID_ORIGIN */
                        off += 3;
                else if (id == 0xfc) /* XLR_BLOCK_ID_TOPLEVEL_XID */
                        off += 5;
                else
                        return 0; /* block references: not a plain commit */
        }
        if (main_len < 8 || main_len > len)
                return 0;
        /* The main data is the record's tail; xact_time leads it. */
        int64_t t = (int64_t) le_get(rec + len - main_len, 8);
        return t + PG_EPOCH_USEC;
}

/* Commit times of the records that begin before lsn (the earliest and the
 * latest) and at or after it (the earliest); 0 for none.  By time, not
 * by position: commit records are not written in the order of their
 * timestamps (the time is taken before the record is inserted, so two
 * backends committing together can write them the other way round, a
 * few microseconds apart), and the range of pg-clone.c needs the latest
 * time before a position. */
static void commit_times(const uint8_t *data, size_t size, uint64_t segno, uint32_t segment_size, uint64_t lsn,
                         int64_t *ret_first_before, int64_t *ret_last_before, int64_t *ret_first_from)
{
        wal_reader w = { data, MIN(size, (size_t) segment_size), segno * segment_size, false };
        uint8_t *rec = malloc(COMMIT_RECORD_MAX);
        size_t pos = 0;

        *ret_first_before = *ret_last_before = *ret_first_from = 0;
        if (!rec)
                return;
        /* Skip the tail of a record begun in the previous segment, page by
         * page: each page's header says how much of it is left. */
        for (;;) {
                if (!page_ok(&w, pos))
                        goto out;
                uint16_t flags = (uint16_t) le_get(data + pos + 2, 2);
                uint32_t rem = (uint32_t) le_get(data + pos + 16, 4);
                size_t hdr = page_header_size(pos);
                if (!(flags & XLP_FIRST_IS_CONTRECORD) || rem == 0) {
                        pos += hdr;
                        break;
                }
                if (rem <= XLOG_BLCKSZ - hdr) {
                        pos += hdr + rem;
                        break;
                }
                pos += XLOG_BLCKSZ;
        }
        for (;;) {
                pos = (pos + 7) & ~(size_t) 7;
                size_t start = pos;
                if (wal_read(&w, &pos, rec, RECORD_HEADER) < RECORD_HEADER)
                        break;
                uint32_t tot = (uint32_t) le_get(rec, 4);
                if (tot < RECORD_HEADER)
                        break; /* zeros: the end of what was written */
                if (rec[17] == RM_XACT_ID && tot <= COMMIT_RECORD_MAX) {
                        if (wal_read(&w, &pos, rec + RECORD_HEADER, tot - RECORD_HEADER) < tot - RECORD_HEADER)
                                break;
                        int64_t t = commit_time(rec, tot);
                        if (t && segno * segment_size + start < lsn) {
                                if (!*ret_first_before || t < *ret_first_before)
                                        *ret_first_before = t;
                                *ret_last_before = MAX(*ret_last_before, t);
                        } else if (t && (!*ret_first_from || t < *ret_first_from)) {
                                *ret_first_from = t;
                        }
                } else if (wal_read(&w, &pos, NULL, tot - RECORD_HEADER) < tot - RECORD_HEADER)
                        break;
                if (pos <= start)
                        break;
        }
out:
        free(rec);
}

void pg_wal_commit_times(const uint8_t *data, size_t size, uint64_t segno, uint32_t segment_size,
                         int64_t *ret_first, int64_t *ret_last)
{
        int64_t none;

        commit_times(data, size, segno, segment_size, UINT64_MAX, ret_first, ret_last, &none);
}

void pg_wal_commit_times_around(const uint8_t *data, size_t size, uint64_t segno, uint32_t segment_size,
                                uint64_t lsn, int64_t *ret_last_before, int64_t *ret_first_from)
{
        int64_t first;

        commit_times(data, size, segno, segment_size, lsn, &first, ret_last_before, ret_first_from);
}

/* --- Storing a segment ----------------------------------------------------------------- */

static int store_segment(cs_store *store, const char *timeline, uint32_t tli, uint64_t segno, uint32_t segment_size,
                         const uint8_t *data, size_t size, bool partial)
{
        cs_pg_wal w = { .tli = tli, .segno = segno, .size = (uint32_t) size, .partial = partial };
        int r;

        pg_wal_commit_times(data, size, segno, segment_size, &w.first_commit, &w.last_commit);
        r = cs_blob_build(store, data, size, &w.root);
        if (r >= 0)
                r = cs_pg_wal_put(store, timeline, &w); /* commits the blocks first */
        return r;
}

/* --- The receiver -------------------------------------------------------------------- */

typedef struct receiver {
        const char *timeline;
        cs_pg_source src;
        cs_store *store;
        double store_opened;
        cs_store *reader;        /* read-only, for looking at the link */
        double last_link_check;
        bool reconnecting;       /* a connection failed since WAL last came */
        bool status_line;
        const volatile sig_atomic_t *stop;

        uint32_t tli;
        uint64_t segno;      /* the segment in buf */
        uint8_t *buf;        /* segment_size bytes */
        size_t received;     /* bytes of buf received */
        size_t stored;       /* bytes of buf durable in the store */
        uint64_t flushed;    /* LSN durable in the store */
        uint64_t acked;      /* LSN last sent to the server as flushed */
        double last_flush, last_status;
        int64_t last_commit;
        bool got_wal; /* on this connection: then a retry starts over at 1 s */
} receiver;

static double now_mono(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

static int64_t now_pg_usec(void)
{
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        return (int64_t) t.tv_sec * 1000000 + t.tv_nsec / 1000 - PG_EPOCH_USEC;
}

static int receiver_store(receiver *rc)
{
        if (rc->store && now_mono() - rc->store_opened > REOPEN_INTERVAL)
                rc->store = cs_store_unref(rc->store);
        if (!rc->store) {
                int r = open_store(CS_OPEN_WRITE, &rc->store);
                if (r < 0)
                        return r;
                rc->store_opened = now_mono();
        }
        return 0;
}

/* The reason receive-wal stops, so an error line even inside a step
 * whose failures it retries, and logs as warnings (design note 7). */
static int unlinked(receiver *rc)
{
        bool was = log_demote_errors(false);
        int r = log_error_errno(-ENOENT, "timeline '%s' was unlinked from its PostgreSQL server (pg unlink): "
                                         "receive-wal stops",
                                rc->timeline);

        log_demote_errors(was);
        return r;
}

/* Design note 6: -ENOENT (reported) once the link is gone, or is another
 * link of the same name. */
static int check_link(receiver *rc)
{
        cs_pg_source now;
        int r;

        rc->last_link_check = now_mono();
        if (!rc->reader) {
                r = open_store(0, &rc->reader);
                if (r < 0)
                        return r;
        }
        r = cs_pg_source_get(rc->reader, rc->timeline, &now);
        if (r == -ENOENT || (r >= 0 && (now.created != rc->src.created || strcmp(now.slot, rc->src.slot) != 0)))
                return unlinked(rc);
        if (r < 0)
                log_warning_errno(r, "cannot read the link of timeline '%s': %m", rc->timeline); /* next time */
        return 0;
}

static void show_status(receiver *rc)
{
        char lsn[24], name[25], when[32] = "none";

        if (!rc->status_line)
                return;
        pg_lsn_format(rc->flushed, lsn);
        pg_wal_file_name(rc->tli, rc->segno, rc->src.segment_size, name);
        if (rc->last_commit) {
                time_t t = (time_t) (rc->last_commit / 1000000);
                struct tm tm;
                strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&t, &tm));
        }
        fprintf(stderr, "\rreceive-wal %s: flushed %s, segment %s, last commit %s   ", rc->timeline, lsn, name, when);
}

/* Makes what is in buf durable (design note 2). */
static int flush_segment(receiver *rc, bool complete)
{
        uint32_t seg = rc->src.segment_size;
        int r;

        if (rc->received == rc->stored && !complete)
                return 0;
        r = receiver_store(rc);
        if (r < 0)
                return r;
        r = store_segment(rc->store, rc->timeline, rc->tli, rc->segno, seg, rc->buf, rc->received, !complete);
        if (r == -ENOENT)
                return unlinked(rc);
        if (r < 0)
                return log_error_errno(r, "cannot store WAL segment %" PRIu64 " of timeline %" PRIu32 ": %m",
                                       rc->segno, rc->tli);
        rc->stored = rc->received;
        rc->flushed = rc->segno * seg + rc->received;
        rc->last_flush = now_mono();
        {
                int64_t first, last;
                pg_wal_commit_times(rc->buf, rc->received, rc->segno, seg, &first, &last);
                if (last)
                        rc->last_commit = last;
        }
        if (complete) {
                rc->segno++;
                rc->received = rc->stored = 0;
                memset(rc->buf, 0, seg);
        }
        show_status(rc);
        return 0;
}

static int send_status(receiver *rc, PGconn *conn, bool reply)
{
        uint8_t msg[34];
        uint64_t write = rc->segno * rc->src.segment_size + rc->received;
        char line[256];

        msg[0] = 'r';
        be_put(msg + 1, write, 8);
        be_put(msg + 9, rc->flushed, 8);
        be_put(msg + 17, 0, 8); /* nothing is applied here */
        be_put(msg + 25, (uint64_t) now_pg_usec(), 8);
        msg[33] = reply;
        if (PQputCopyData(conn, (const char *) msg, sizeof(msg)) <= 0 || PQflush(conn) < 0)
                return log_warning_errno(-EIO, "cannot send a status update to the source: %s",
                                         pg_error_line(PQerrorMessage(conn), line, sizeof(line)));
        rc->last_status = now_mono();
        rc->acked = rc->flushed;
        return 0;
}

static int take_wal(receiver *rc, const uint8_t *data, size_t len, uint64_t start)
{
        uint32_t seg = rc->src.segment_size;
        int r;

        while (len > 0) {
                uint64_t segno = start / seg;
                size_t off = (size_t) (start % seg);

                if (segno != rc->segno || off != rc->received)
                        return log_error_errno(-EBADMSG, "the source sent WAL at an unexpected position");
                size_t take = MIN(len, (size_t) seg - off);
                rc->got_wal = true;
                memcpy(rc->buf + off, data, take);
                rc->received += take;
                data += take;
                len -= take;
                start += take;
                if (rc->received == seg) {
                        r = flush_segment(rc, true);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int fetch_history(receiver *rc, PGconn *conn, uint32_t tli)
{
        _cleanup_(PQclearp) PGresult *res = NULL;
        char cmd[64], line[256];
        void *old;
        size_t old_size;
        int r;

        if (tli <= 1)
                return 0;
        r = receiver_store(rc);
        if (r < 0)
                return r;
        if (cs_pg_history_get(rc->store, rc->timeline, tli, &old, &old_size) == 0) {
                free(old);
                return 0;
        }
        snprintf(cmd, sizeof(cmd), "TIMELINE_HISTORY %" PRIu32, tli);
        res = PQexec(conn, cmd);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 2)
                return log_error_errno(-EIO, "TIMELINE_HISTORY %" PRIu32 " failed: %s", tli,
                                       pg_error_line(PQerrorMessage(conn), line, sizeof(line)));
        r = cs_pg_history_put(rc->store, rc->timeline, tli, PQgetvalue(res, 0, 1), (size_t) PQgetlength(res, 0, 1));
        if (r == -ENOENT)
                return unlinked(rc);
        if (r < 0)
                return log_error_errno(r, "cannot store the history of timeline %" PRIu32 ": %m", tli);
        return 0;
}

/* Where to start (design note 3). */
static int start_position(receiver *rc, PGconn *conn)
{
        _cleanup_free_ cs_pg_wal *wal = NULL;
        _cleanup_free_ cs_pg_backup *backups = NULL;
        size_t n = 0, nb = 0;
        uint32_t seg = rc->src.segment_size;
        int r;

        r = receiver_store(rc);
        if (r < 0)
                return r;
        r = cs_pg_wal_list(rc->store, rc->timeline, &wal, &n);
        if (r < 0)
                return log_warning_errno(r, "cannot list the stored WAL: %m"); /* retried */
        rc->received = rc->stored = 0;
        memset(rc->buf, 0, seg);
        if (n > 0) {
                /* The newest: highest segno, then highest tli.  A partial
                 * one is taken up where it ends, so that the store never
                 * holds less of it than before. */
                cs_pg_wal *w = &wal[n - 1];
                size_t size;
                rc->tli = w->tli;
                rc->segno = w->partial ? w->segno : w->segno + 1;
                if (w->partial) {
                        r = cs_blob_read(rc->store, &w->root, rc->buf, seg, &size);
                        if (r < 0)
                                return log_warning_errno(r, "cannot read the stored partial segment: %m");
                        rc->received = rc->stored = size;
                }
                return 0;
        }
        if (PQserverVersion(conn) >= 150000) {
                _cleanup_(PQclearp) PGresult *res = NULL;
                char cmd[128];
                uint64_t lsn;

                snprintf(cmd, sizeof(cmd), "READ_REPLICATION_SLOT %s", rc->src.slot);
                res = PQexec(conn, cmd);
                if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 1) &&
                    pg_lsn_parse(PQgetvalue(res, 0, 1), &lsn) >= 0) {
                        rc->tli = (uint32_t) strtoul(PQgetvalue(res, 0, 2), NULL, 10);
                        rc->segno = lsn / seg;
                        return 0;
                }
                if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQgetisnull(res, 0, 0))
                        return log_error_errno(-ENOENT, "replication slot '%s' is gone from the source: "
                                                        "WAL since the last stored segment may be lost; "
                                                        "link a new timeline",
                                               rc->src.slot);
        }
        r = cs_pg_backup_list(rc->store, rc->timeline, &backups, &nb);
        if (r < 0 || nb == 0)
                return log_error_errno(r < 0 ? r : -ENOENT, "cannot tell where timeline '%s' starts", rc->timeline);
        rc->tli = backups[0].tli;
        rc->segno = backups[0].start_lsn / seg;
        return 0;
}

/* After a refused START_REPLICATION: a slot that is gone or was
 * invalidated (max_slot_wal_keep_size) will never serve this WAL again,
 * so retrying is pointless.  15 and newer can tell. */
static int slot_lost(receiver *rc, PGconn *conn, const char *lsn)
{
        _cleanup_(PQclearp) PGresult *res = NULL;
        char cmd[128];

        if (PQserverVersion(conn) < 150000)
                return 0;
        snprintf(cmd, sizeof(cmd), "READ_REPLICATION_SLOT %s", rc->src.slot);
        res = PQexec(conn, cmd);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
                return 0;
        if (PQgetisnull(res, 0, 0))
                return log_error_errno(-ENOENT, "replication slot '%s' is gone from the source: the WAL after %s is "
                                                "lost to timeline '%s'; link the server to a new timeline",
                                       rc->src.slot, lsn, rc->timeline);
        if (PQgetisnull(res, 0, 1))
                return log_error_errno(-ESTALE, "replication slot '%s' on the source was invalidated "
                                                "(max_slot_wal_keep_size): the WAL after %s is lost to timeline '%s'; "
                                                "link the server to a new timeline",
                                       rc->src.slot, lsn, rc->timeline);
        return 0;
}

/* One connection's worth of streaming.  Returns 0 when asked to stop, 1
 * to reconnect, or a negative errno for errors that a retry cannot fix. */
static int stream(receiver *rc, PGconn *conn)
{
        uint32_t seg = rc->src.segment_size;
        char cmd[160], lsn[24], line[512];
        int r;

        for (;;) {
                _cleanup_(PQclearp) PGresult *res = NULL;

                bool was = log_demote_errors(true); /* design note 7 */
                r = fetch_history(rc, conn, rc->tli);
                log_demote_errors(was);
                if (r == -ENOENT)
                        return r; /* unlinked */
                if (r < 0)
                        return 1;
                pg_lsn_format(rc->segno * seg + rc->received, lsn);
                snprintf(cmd, sizeof(cmd), "START_REPLICATION SLOT %s PHYSICAL %s TIMELINE %" PRIu32, rc->src.slot, lsn,
                         rc->tli);
                res = PQexec(conn, cmd);
                if (PQresultStatus(res) != PGRES_COPY_BOTH) {
                        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
                        if (state && strcmp(state, "55006") == 0) /* object_in_use */
                                return log_error_errno(-EBUSY, "replication slot '%s' is in use: another "
                                                               "receive-wal of timeline '%s' is running",
                                                       rc->src.slot, rc->timeline);
                        r = slot_lost(rc, conn, lsn);
                        if (r < 0)
                                return r;
                        log_warning("START_REPLICATION at %s failed: %s", lsn,
                                    pg_error_line(PQresultErrorMessage(res), line, sizeof(line)));
                        return 1;
                }
                rc->flushed = rc->segno * seg + rc->stored;
                rc->last_status = 0;
                if (rc->reconnecting)
                        log_info("reconnected to the source: streaming from %s", lsn);
                rc->reconnecting = false;

                for (;;) {
                        char *msg = NULL;
                        int n;

                        if (*rc->stop) {
                                r = flush_segment(rc, false);
                                if (r >= 0)
                                        send_status(rc, conn, false);
                                return r < 0 ? r : 0;
                        }
                        n = PQgetCopyData(conn, &msg, 1);
                        if (n == 0) {
                                struct pollfd p = { .fd = PQsocket(conn), .events = POLLIN };
                                (void) poll(&p, 1, 200);
                                if (PQconsumeInput(conn) == 0) {
                                        log_warning("lost the connection to the source: %s",
                                                    pg_error_line(PQerrorMessage(conn), line, sizeof(line)));
                                        r = flush_segment(rc, false);
                                        return r < 0 ? r : 1;
                                }
                        } else if (n > 0) {
                                const uint8_t *m = (const uint8_t *) msg;
                                if (m[0] == 'w' && n >= 25)
                                        r = take_wal(rc, m + 25, (size_t) n - 25, be_get(m + 1, 8));
                                else if (m[0] == 'k' && n >= 18)
                                        r = m[17] ? flush_segment(rc, false) : 0;
                                else
                                        r = 0;
                                if (r >= 0 && m[0] == 'k' && m[17])
                                        r = send_status(rc, conn, false);
                                PQfreemem(msg);
                                if (r < 0)
                                        return r;
                        } else
                                break; /* the server ended the stream, or the connection broke */

                        double now = now_mono();
                        if (now - rc->last_link_check >= LINK_CHECK_INTERVAL) {
                                r = check_link(rc);
                                if (r < 0)
                                        return r;
                        }
                        /* An idle source must not keep gc waiting (design note 5). */
                        if (rc->store && rc->received == rc->stored && now - rc->store_opened > REOPEN_INTERVAL)
                                rc->store = cs_store_unref(rc->store);
                        if (rc->received > rc->stored && now - rc->last_flush >= FLUSH_INTERVAL) {
                                r = flush_segment(rc, false);
                                if (r < 0)
                                        return r;
                                r = send_status(rc, conn, false);
                                if (r < 0)
                                        return 1;
                        } else if ((rc->flushed > rc->acked || now - rc->last_status >= STATUS_INTERVAL) &&
                                   send_status(rc, conn, false) < 0)
                                return 1; /* a completed segment is acknowledged at once */
                }

                /* End of the stream: a timeline switch, or an error. */
                line[0] = 0;
                r = flush_segment(rc, false);
                if (r < 0)
                        return r;
                PQputCopyEnd(conn, NULL);
                PQflush(conn);
                bool switched = false;
                PGresult *next;
                while ((next = PQgetResult(conn))) {
                        if (PQresultStatus(next) == PGRES_TUPLES_OK && PQntuples(next) == 1 && PQnfields(next) >= 2) {
                                uint64_t start;
                                uint32_t tli = (uint32_t) strtoul(PQgetvalue(next, 0, 0), NULL, 10);
                                if (pg_lsn_parse(PQgetvalue(next, 0, 1), &start) >= 0 && tli > rc->tli) {
                                        log_info("the source switched to timeline %" PRIu32, tli);
                                        rc->tli = tli;
                                        rc->segno = start / seg;
                                        rc->received = rc->stored = 0;
                                        memset(rc->buf, 0, seg);
                                        switched = true;
                                }
                        } else if (PQresultStatus(next) != PGRES_COMMAND_OK &&
                                   PQresultStatus(next) != PGRES_COPY_OUT && PQresultStatus(next) != PGRES_COPY_BOTH)
                                pg_error_line(PQresultErrorMessage(next), line, sizeof(line));
                        PQclear(next);
                        if (PQstatus(conn) != CONNECTION_OK)
                                break;
                }
                if (!switched) {
                        /* Said once, by slot_lost, when that is why. */
                        r = slot_lost(rc, conn, lsn);
                        if (r < 0)
                                return r;
                        if (line[0])
                                log_warning("the stream ended: %s", line);
                        return 1;
                }
        }
}

static int receive(receiver *rc);

int pg_receive_wal(const char *timeline, bool status_line, const volatile sig_atomic_t *stop)
{
        receiver rc = { .timeline = timeline, .status_line = status_line, .stop = stop };
        int r = receive(&rc);

        free(rc.buf);
        cs_store_unref(rc.store);
        cs_store_unref(rc.reader);
        return r;
}

static int receive(receiver *rc)
{
        const char *timeline = rc->timeline;
        const volatile sig_atomic_t *stop = rc->stop;
        int backoff = 1, r;

        r = receiver_store(rc);
        if (r < 0)
                return r;
        r = pg_source_find(rc->store, timeline, &rc->src);
        if (r < 0)
                return r;
        rc->buf = calloc(1, rc->src.segment_size);
        if (!rc->buf)
                return log_error_errno(-ENOMEM, "cannot allocate a WAL segment buffer: %m");

        while (!*stop) {
                _cleanup_(PQfinishp) PGconn *conn = NULL;
                pg_server server;
                bool was;

                r = check_link(rc);
                if (r < 0)
                        break;
                was = log_demote_errors(true); /* design note 7 */
                r = pg_connect_replication(rc->src.conninfo, &conn);
                if (r >= 0)
                        r = pg_check_server(conn, &server);
                log_demote_errors(was);
                if (r >= 0 && server.system_id != rc->src.system_id) {
                        r = log_error_errno(-EXDEV, "the server behind timeline '%s' is another cluster now", timeline);
                        break;
                }
                if (r >= 0)
                        r = start_position(rc, conn);
                if (r == -ENOENT || r == -ESTALE)
                        break;
                if (r >= 0) {
                        rc->got_wal = false;
                        r = stream(rc, conn);
                        if (r <= 0)
                                break;
                        if (rc->got_wal)
                                backoff = 1;
                }
                /* The source restarting, the network: retry, waiting longer
                 * each time. */
                PQfinish(TAKE_PTR(conn));
                rc->reconnecting = true;
                log_info("reconnecting in %d s", backoff);
                for (int i = 0; i < backoff * 10 && !*stop; i++)
                        usleep(100000);
                backoff = MIN(backoff * 2, BACKOFF_MAX);
        }
        if (rc->status_line)
                fputc('\n', stderr);
        return r < 0 && !*stop ? r : 0;
}

/* --- Retention ----------------------------------------------------------------------- */

int pg_wal_needed_from(cs_store *store, const char *timeline, const int64_t *removed, size_t n_removed,
                       uint64_t *ret_segno)
{
        _cleanup_free_ cs_pg_backup *backups = NULL;
        uint64_t before = UINT64_MAX;
        cs_pg_source src;
        size_t n = 0;
        int r;

        r = cs_pg_source_get(store, timeline, &src);
        if (r == -ENOENT)
                return r;
        if (r >= 0)
                r = cs_pg_backup_list(store, timeline, &backups, &n);
        if (r < 0)
                return log_error_errno(r, "cannot read timeline '%s': %m", timeline);
        /* Recovery from a base point needs the WAL from its start on. */
        for (size_t i = 0; i < n; i++) {
                bool gone = false;
                for (size_t k = 0; k < n_removed && !gone; k++)
                        gone = removed[k] == backups[i].point;
                if (!gone)
                        before = MIN(before, backups[i].start_lsn / src.segment_size);
        }
        *ret_segno = before;
        return 0;
}

int pg_prune_wal(cs_store *store, const char *timeline, uint64_t *ret_dropped, bool *ret_no_base)
{
        uint64_t before;
        int r;

        *ret_dropped = 0;
        *ret_no_base = false;
        r = pg_wal_needed_from(store, timeline, NULL, 0, &before);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        *ret_no_base = before == UINT64_MAX;
        r = cs_pg_wal_prune(store, timeline, before);
        if (r < 0)
                return log_error_errno(r, "cannot drop the old WAL of timeline '%s': %m", timeline);
        *ret_dropped = (uint64_t) r;
        return 0;
}

/* --- archive_command, restore_command --------------------------------------------------- */

static int read_file(const char *path, size_t max, uint8_t **ret, size_t *ret_size)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ uint8_t *buf = NULL;
        struct stat st;
        size_t got = 0;

        if (fd < 0 || fstat(fd, &st) < 0)
                return negative_errno();
        if ((uint64_t) st.st_size > max)
                return -EFBIG;
        buf = malloc(MAX((size_t) st.st_size, 1u));
        if (!buf)
                return -ENOMEM;
        while (got < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + got, (size_t) st.st_size - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        break;
                got += (size_t) n;
        }
        *ret = TAKE_PTR(buf);
        *ret_size = got;
        return 0;
}

static int open_linked(const char *timeline, unsigned flags, cs_store **ret_store, cs_pg_source *ret_src)
{
        int r = open_store(flags, ret_store);
        if (r < 0)
                return r;
        return pg_source_find(*ret_store, timeline, ret_src);
}

/* archive_command must never replace an archived file with other bytes
 * (PostgreSQL's rule: fail, so that two servers archiving to one place or
 * a damaged file are noticed), and may succeed on the same bytes again (a
 * retry after a success that was not seen).  For a whole segment or a
 * history file: 1 if the store holds the same bytes under that name, 0 if
 * it holds nothing (or a partial segment, which the whole one replaces),
 * -EEXIST (reported) if other bytes. */
static int compare_archived(cs_store *store, const char *timeline, uint32_t segment_size, pg_wal_kind kind,
                            uint32_t tli, uint64_t segno, const char *name, const uint8_t *data, size_t size)
{
        _cleanup_free_ uint8_t *old = NULL;
        size_t old_size = 0;
        cs_pg_wal w;
        int r;

        if (kind == PG_WAL_HISTORY)
                r = cs_pg_history_get(store, timeline, tli, (void **) &old, &old_size);
        else {
                r = cs_pg_wal_get(store, timeline, tli, segno, &w);
                if (r >= 0 && w.partial)
                        return 0;
                if (r >= 0) {
                        old = malloc(segment_size);
                        r = old ? cs_blob_read(store, &w.root, old, segment_size, &old_size) : -ENOMEM;
                }
        }
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return log_error_errno(r, "cannot read the stored %s to compare: %m", name);
        if (old_size == size && memcmp(old, data, size) == 0)
                return 1;
        return log_error_errno(-EEXIST, "%s is archived in timeline '%s' already, with other contents: "
                                        "the stored copy is kept (does another server archive there?)",
                               name, timeline);
}

int pg_archive_wal(const char *timeline, const char *path)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        cs_pg_source src;
        pg_wal_kind kind;
        uint32_t tli;
        uint64_t segno;
        size_t size;
        int r;

        r = open_linked(timeline, CS_OPEN_WRITE, &store, &src);
        if (r < 0)
                return r;
        if (pg_wal_parse_name(name, src.segment_size, &kind, &tli, &segno) < 0)
                return log_error_errno(-EINVAL, "'%s' is not a WAL file name", name);
        if (kind == PG_WAL_BACKUP)
                return 0; /* backup history files: the catalog has what they say */
        r = read_file(path, kind == PG_WAL_HISTORY ? CS_CHUNK_SIZE_MAX : src.segment_size, &data, &size);
        if (r < 0)
                return log_error_errno(r, "cannot read %s: %m", path);
        if (kind == PG_WAL_SEGMENT && size != src.segment_size)
                return log_error_errno(-EBADMSG, "%s holds %zu bytes, not a whole segment of %" PRIu32, path, size,
                                       src.segment_size);
        if (kind != PG_WAL_PARTIAL) {
                r = compare_archived(store, timeline, src.segment_size, kind, tli, segno, name, data, size);
                if (r != 0)
                        return r < 0 ? r : 0;
        }
        if (kind == PG_WAL_HISTORY) {
                r = cs_pg_history_put(store, timeline, tli, data, size);
                if (r < 0)
                        return log_error_errno(r, "cannot store %s: %m", name);
                return 0;
        }
        r = store_segment(store, timeline, tli, segno, src.segment_size, data, size, kind == PG_WAL_PARTIAL);
        if (r < 0)
                return log_error_errno(r, "cannot store %s: %m", name);
        return 0;
}

static int write_file(const char *dest, const void *data, size_t size)
{
        _cleanup_close_ int fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        size_t done = 0;

        if (fd < 0)
                return negative_errno();
        while (done < size) {
                ssize_t n = write(fd, (const uint8_t *) data + done, size - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                done += (size_t) n;
        }
        return fsync(fd) < 0 ? negative_errno() : 0;
}

int pg_fetch_wal(const char *timeline, const char *name, const char *dest, bool *ret_missing)
{
        _cleanup_(cs_store_unrefp) cs_store *store = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        cs_pg_source src;
        cs_pg_wal w;
        pg_wal_kind kind;
        uint32_t tli;
        uint64_t segno;
        size_t size;
        int r;

        *ret_missing = false;
        r = open_linked(timeline, 0, &store, &src);
        if (r < 0)
                return r;
        if (pg_wal_parse_name(name, src.segment_size, &kind, &tli, &segno) < 0 ||
            (kind != PG_WAL_SEGMENT && kind != PG_WAL_HISTORY && kind != PG_WAL_PARTIAL))
                return log_error_errno(-EINVAL, "'%s' is not a WAL segment or history file name", name);
        if (kind == PG_WAL_HISTORY) {
                void *content;
                r = cs_pg_history_get(store, timeline, tli, &content, &size);
                *ret_missing = r == -ENOENT;
                if (r == -ENOENT)
                        return log_error_errno(r, "timeline '%s' has no %s", timeline, name);
                if (r < 0)
                        return log_error_errno(r, "cannot read %s: %m", name);
                r = write_file(dest, content, size);
                free(content);
                return r < 0 ? log_error_errno(r, "cannot write %s: %m", dest) : 0;
        }
        r = cs_pg_wal_get(store, timeline, tli, segno, &w);
        *ret_missing = r == -ENOENT;
        if (r == -ENOENT)
                return log_error_errno(r, "timeline '%s' has no WAL segment %s", timeline, name);
        if (r < 0)
                return log_error_errno(r, "cannot look up %s: %m", name);
        /* A partial segment is handed out whole, zeros after what was
         * received: recovery reads up to there and stops. */
        data = calloc(1, src.segment_size);
        if (!data)
                return log_error_errno(-ENOMEM, "cannot allocate a segment: %m");
        r = cs_blob_read(store, &w.root, data, src.segment_size, &size);
        if (r < 0)
                return log_error_errno(r, "cannot read WAL segment %s from the store: %m", name);
        r = write_file(dest, data, src.segment_size);
        return r < 0 ? log_error_errno(r, "cannot write %s: %m", dest) : 0;
}
