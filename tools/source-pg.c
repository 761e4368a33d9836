/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The PostgreSQL source over libpq (source-pg.h).
 *
 * Design notes
 *
 *  1. Only libpq: no shell and no file access on the source host.  Base
 *     backups use the replication protocol's BASE_BACKUP.  From 15 on it
 *     sends every archive in one COPY whose messages are typed: 'n' a new
 *     archive (name, tablespace location), 'd' data, 'p' progress, 'm' the
 *     manifest follows.  13 and 14 send one COPY per tablespace, in the
 *     order of the tablespace result set, then one for the manifest.  Both
 *     feed the same tar-point builder, so nothing is written to disk but
 *     the store.
 *  2. Tablespaces are kept under the point at pg_tblspc/OID/ as plain
 *     directories, where PostgreSQL (15 and newer as "in-place"
 *     tablespaces) finds them without a symlink; the source's
 *     tablespace_map is kept as the server sent it, so the point is the
 *     backup exactly (pg_verifybackup checks it against backup_manifest).
 *     Provisioning a copy moves the map aside (clone create).
 *  3. A refused connection is diagnosed with a second, normal connection:
 *     if that works, the role's REPLICATION attribute tells a missing
 *     attribute from a missing pg_hba.conf line; the server's own words
 *     are the fallback.
 *  4. Passwords: conninfo is parsed with PQconninfoParse and written back
 *     without "password" (or "sslpassword"); libpq finds it at connect time in PGPASSFILE,
 *     ~/.pgpass or a service file.  No message prints a conninfo.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "source-pg.h"
#include "tar-point.h"
#include "util/log.h"
#include "util/macro.h"
#include "util/size.h"

static inline void PQconninfoFreep(PQconninfoOption **o)
{
        if (*o)
                PQconninfoFree(*o);
}

const char *pg_error_line(const char *message, char *buf, size_t size)
{
        size_t n = 0;
        bool space = false;

        for (const char *p = message ? message : ""; *p && n + 1 < size; p++) {
                if (*p == '\n' || *p == '\r' || *p == '\t' || *p == ' ') {
                        space = n > 0;
                        continue;
                }
                if (space && n + 2 < size)
                        buf[n++] = ' ';
                space = false;
                buf[n++] = *p;
        }
        buf[n] = 0;
        return buf;
}

int pg_lsn_parse(const char *s, uint64_t *ret)
{
        unsigned hi, lo;
        int n = 0;

        if (!s || sscanf(s, "%X/%X%n", &hi, &lo, &n) != 2 || s[n])
                return -EINVAL;
        *ret = ((uint64_t) hi << 32) | lo;
        return 0;
}

void pg_lsn_format(uint64_t lsn, char buf[static 24])
{
        snprintf(buf, 24, "%X/%X", (unsigned) (lsn >> 32), (unsigned) lsn);
}

int pg_source_find(cs_store *store, const char *timeline, cs_pg_source *ret)
{
        int r = cs_pg_source_get(store, timeline, ret);

        if (r == -ENOENT)
                return log_error_errno(r, "timeline '%s' is not linked to a PostgreSQL server "
                                          "(clonectl pg link %s CONNINFO)",
                                       timeline, timeline);
        if (r < 0)
                return log_error_errno(r, "cannot read timeline '%s': %m", timeline);
        return 0;
}

/* --- conninfo ------------------------------------------------------------------ */

static int append_quoted(char **s, const char *key, const char *value)
{
        size_t len = *s ? strlen(*s) : 0, vlen = strlen(value);
        char *n = realloc(*s, len + strlen(key) + 2 * vlen + 8);
        char *p;

        if (!n)
                return -ENOMEM;
        p = n + len;
        p += sprintf(p, "%s%s='", len ? " " : "", key);
        for (const char *v = value; *v; v++) {
                if (*v == '\'' || *v == '\\')
                        *p++ = '\\';
                *p++ = *v;
        }
        *p++ = '\'';
        *p = 0;
        *s = n;
        return 0;
}

int pg_conninfo_strip(const char *conninfo, char **ret)
{
        _cleanup_(PQconninfoFreep) PQconninfoOption *opts = NULL;
        _cleanup_free_ char *out = NULL;
        char *err = NULL, line[256];
        int r;

        opts = PQconninfoParse(conninfo, &err);
        if (!opts) {
                r = log_error_errno(-EINVAL, "invalid connection string: %s",
                                    err ? pg_error_line(err, line, sizeof(line)) : "out of memory");
                PQfreemem(err);
                return r;
        }
        for (PQconninfoOption *o = opts; o->keyword; o++) {
                if (!o->val || strcmp(o->keyword, "password") == 0 || strcmp(o->keyword, "sslpassword") == 0 ||
                    strcmp(o->keyword, "replication") == 0)
                        continue;
                r = append_quoted(&out, o->keyword, o->val);
                if (r < 0)
                        return log_error_errno(r, "cannot copy the connection string: %m");
        }
        if (!out && !(out = strdup("")))
                return log_error_errno(-ENOMEM, "cannot copy the connection string: %m");
        if (strlen(out) >= CS_PG_CONNINFO_MAX)
                return log_error_errno(-E2BIG, "connection string longer than %d bytes", CS_PG_CONNINFO_MAX - 1);
        *ret = TAKE_PTR(out);
        return 0;
}

/* --- Connecting and diagnosing ------------------------------------------------------- */

static PGconn *connect_with(const char *conninfo, const char *replication, const char *dbname)
{
        const char *keys[] = { "dbname", "replication", "fallback_application_name", dbname ? "dbname" : NULL, NULL };
        const char *values[] = { conninfo, replication, "clonefs", dbname, NULL };

        return PQconnectdbParams(keys, values, 1);
}

static bool has_dbname(const char *conninfo)
{
        _cleanup_(PQconninfoFreep) PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);

        for (PQconninfoOption *o = opts; o && o->keyword; o++)
                if (strcmp(o->keyword, "dbname") == 0 && o->val && o->val[0])
                        return true;
        return false;
}

/* Says why a replication connection was refused (design note 3). */
static int diagnose(const char *conninfo, const char *repl_error)
{
        _cleanup_(PQfinishp) PGconn *conn = NULL;
        _cleanup_(PQclearp) PGresult *res = NULL;
        char line[512];
        const char *user;

        if (strstr(repl_error, "max_wal_senders"))
                return log_error_errno(-EBUSY, "the source refused a replication connection: %s "
                                               "(raise max_wal_senders in postgresql.conf and restart PostgreSQL)",
                                       repl_error);
        conn = connect_with(conninfo, "false", has_dbname(conninfo) ? NULL : "postgres");
        if (!conn || PQstatus(conn) != CONNECTION_OK)
                return log_error_errno(-ECONNREFUSED, "cannot connect to the source: %s", repl_error);
        user = PQuser(conn);
        res = PQexec(conn, "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user");
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "f") == 0)
                return log_error_errno(-EPERM, "role '%s' lacks the REPLICATION attribute: run "
                                               "\"ALTER ROLE %s REPLICATION\" on the source as a superuser",
                                       user, user);
        if (strstr(repl_error, "pg_hba.conf") || (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)) {
                const char *host = PQhost(conn);
                bool local = !host || host[0] == '/';
                return log_error_errno(-EACCES, "the source's pg_hba.conf has no replication entry for role '%s' "
                                                "from this host: add \"%s replication %s %sscram-sha-256\" "
                                                "and reload (SELECT pg_reload_conf()); the server said: %s",
                                       user, local ? "local" : "host", user, local ? "" : "CLIENT-ADDRESS/32 ",
                                       repl_error);
        }
        return log_error_errno(-ECONNREFUSED, "cannot open a replication connection to the source: %s",
                               pg_error_line(repl_error, line, sizeof(line)));
}

int pg_connect_replication(const char *conninfo, PGconn **ret)
{
        _cleanup_(PQfinishp) PGconn *conn = NULL;
        char line[512];

        conn = connect_with(conninfo, "true", NULL);
        if (!conn)
                return log_error_errno(-ENOMEM, "cannot connect to the source: out of memory");
        if (PQstatus(conn) != CONNECTION_OK)
                return diagnose(conninfo, pg_error_line(PQerrorMessage(conn), line, sizeof(line)));
        *ret = TAKE_PTR(conn);
        return 0;
}

/* --- Checks --------------------------------------------------------------------- */

static int show(PGconn *conn, const char *name, char *buf, size_t size)
{
        _cleanup_(PQclearp) PGresult *res = NULL;
        char cmd[128], line[512];

        snprintf(cmd, sizeof(cmd), "SHOW %s", name);
        res = PQexec(conn, cmd);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
                return log_error_errno(-EIO, "cannot read the source's %s: %s", name,
                                       pg_error_line(PQerrorMessage(conn), line, sizeof(line)));
        snprintf(buf, size, "%s", PQgetvalue(res, 0, 0));
        return 0;
}

int pg_check_server(PGconn *conn, pg_server *ret)
{
        _cleanup_(PQclearp) PGresult *res = NULL;
        char value[128], line[512];
        uint64_t seg;
        int r;

        *ret = (pg_server) { .version = PQserverVersion(conn) };
        if (ret->version < 130000)
                return log_error_errno(-EPROTONOSUPPORT, "the source runs PostgreSQL %d.%d: clonefs needs 13 or newer",
                                       ret->version / 10000, ret->version % 10000 / 100);
        r = show(conn, "wal_level", value, sizeof(value));
        if (r < 0)
                return r;
        if (strcmp(value, "minimal") == 0)
                return log_error_errno(-EINVAL, "the source's wal_level is minimal: set \"wal_level = replica\" "
                                                "in postgresql.conf and restart PostgreSQL");
        r = show(conn, "wal_segment_size", value, sizeof(value));
        if (r < 0)
                return r;
        /* SHOW prints "16MB"; the size parser takes "16M". */
        size_t len = strlen(value);
        if (len > 1 && value[len - 1] == 'B')
                value[len - 1] = 0;
        if (parse_size(value, &seg) < 0 || seg < 1024 * 1024 || seg > 1024 * 1024 * 1024 || (seg & (seg - 1)))
                return log_error_errno(-EINVAL, "the source reports an unusable wal_segment_size '%s'", value);
        ret->segment_size = (uint32_t) seg;

        res = PQexec(conn, "IDENTIFY_SYSTEM");
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 3)
                return log_error_errno(-EIO, "IDENTIFY_SYSTEM failed on the source: %s",
                                       pg_error_line(PQerrorMessage(conn), line, sizeof(line)));
        ret->system_id = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        ret->tli = (uint32_t) strtoul(PQgetvalue(res, 0, 1), NULL, 10);
        if (pg_lsn_parse(PQgetvalue(res, 0, 2), &ret->xlogpos) < 0)
                return log_error_errno(-EBADMSG, "IDENTIFY_SYSTEM returned a malformed position");

        if (show(conn, "max_wal_senders", value, sizeof(value)) >= 0 && atoi(value) < 2)
                log_warning("the source's max_wal_senders is %s: set it to at least 2, so that receive-wal and "
                            "sync can run at once",
                            value);
        if (show(conn, "max_slot_wal_keep_size", value, sizeof(value)) >= 0 && strcmp(value, "-1") == 0)
                log_warning("the source's max_slot_wal_keep_size is unlimited: a stopped receive-wal lets its "
                            "slot keep WAL until the disk fills; set a limit (e.g. 64GB) in postgresql.conf");
        return 0;
}

/* --- Slots -------------------------------------------------------------------------- */

bool pg_slot_name_is_valid(const char *slot)
{
        size_t len = strlen(slot);
        return len >= 1 && len < CS_PG_SLOT_MAX && strspn(slot, "abcdefghijklmnopqrstuvwxyz0123456789_") == len;
}

void pg_default_slot(const char *timeline, char buf[static CS_PG_SLOT_MAX])
{
        size_t n = (size_t) snprintf(buf, CS_PG_SLOT_MAX, "clonefs_%s", timeline);

        for (size_t i = 0; i < n && i < CS_PG_SLOT_MAX - 1; i++)
                buf[i] = isalnum((unsigned char) buf[i]) ? (char) tolower((unsigned char) buf[i]) : '_';
}

int pg_create_slot(PGconn *conn, const char *slot)
{
        _cleanup_(PQclearp) PGresult *res = NULL;
        char cmd[128], line[512];
        const char *state;

        snprintf(cmd, sizeof(cmd), "CREATE_REPLICATION_SLOT %s PHYSICAL RESERVE_WAL", slot);
        res = PQexec(conn, cmd);
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
                return 0;
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state && strcmp(state, "42710") == 0)
                return log_error_errno(-EEXIST, "replication slot '%s' already exists on the source: choose another "
                                                "name with --slot, or drop it there "
                                                "(SELECT pg_drop_replication_slot('%s')) if nothing uses it",
                                       slot, slot);
        return log_error_errno(-EIO, "cannot create replication slot '%s' on the source: %s", slot,
                               pg_error_line(PQresultErrorMessage(res), line, sizeof(line)));
}

int pg_drop_slot(const char *conninfo, const char *slot, uint64_t system_id, int wait_seconds, char *ret_why,
                 size_t size)
{
        _cleanup_(PQfinishp) PGconn *conn = connect_with(conninfo, "true", NULL);
        char cmd[128];

        snprintf(ret_why, size, "out of memory");
        if (!conn)
                return -ENOMEM;
        if (PQstatus(conn) != CONNECTION_OK) {
                snprintf(ret_why, size, "cannot connect to the source: ");
                pg_error_line(PQerrorMessage(conn), ret_why + strlen(ret_why), size - strlen(ret_why));
                return -ECONNREFUSED;
        }
        if (system_id) {
                /* A slot of that name on another cluster is not ours to drop. */
                _cleanup_(PQclearp) PGresult *res = PQexec(conn, "IDENTIFY_SYSTEM");
                uint64_t id = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1
                                      ? strtoull(PQgetvalue(res, 0, 0), NULL, 10)
                                      : 0;
                if (id != system_id) {
                        snprintf(ret_why, size,
                                 "the server is another cluster now (system identifier %" PRIu64 ", linked to %" PRIu64 ")",
                                 id, system_id);
                        return -EXDEV;
                }
        }
        snprintf(cmd, sizeof(cmd), "DROP_REPLICATION_SLOT %s", slot);
        /* Not WAIT: a walsender that never lets go would hang us.  Its
         * user (receive-wal) lets go once it sees the link is gone. */
        for (int tries = wait_seconds * 5;; tries--) {
                _cleanup_(PQclearp) PGresult *res = PQexec(conn, cmd);
                const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

                if (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK)
                        return 1;
                if (state && strcmp(state, "42704") == 0) /* undefined_object */
                        return 0;
                pg_error_line(PQresultErrorMessage(res), ret_why, size);
                if (!state || strcmp(state, "55006") != 0) /* object_in_use */
                        return -EIO;
                if (tries <= 0)
                        return -EBUSY;
                usleep(200000);
        }
}

/* --- Base backups --------------------------------------------------------------------- */

typedef struct backup_state {
        tar_point *tp;
        bool progress;
        uint64_t received, total, shown;
        bool in_archive;
        /* 13 and 14: one COPY per row of the tablespace result set, then
         * the manifest (design note 1). */
        char **archives;   /* prefixes, in order */
        size_t n_archives, next_archive;
        /* The manifest, gathered whole (it is small). */
        bool in_manifest;
        uint8_t *manifest;
        size_t manifest_size, manifest_cap;
} backup_state;

static void show_progress(backup_state *s, bool last)
{
        char a[FORMAT_BYTES_MAX], b[FORMAT_BYTES_MAX];

        if (!s->progress || (!last && s->received - s->shown < 16 * 1024 * 1024))
                return;
        s->shown = s->received;
        format_bytes(a, s->received);
        if (s->total)
                fprintf(stderr, "\rsync: %s of %s  ", a, format_bytes(b, s->total));
        else
                fprintf(stderr, "\rsync: %s  ", a);
        if (last)
                fputc('\n', stderr);
}

static int manifest_append(backup_state *s, const void *data, size_t size)
{
        if (s->manifest_size + size > s->manifest_cap) {
                size_t cap = MAX(s->manifest_cap * 2, s->manifest_size + size + 65536);
                uint8_t *m = realloc(s->manifest, cap);
                if (!m)
                        return -ENOMEM;
                s->manifest = m;
                s->manifest_cap = cap;
        }
        memcpy(s->manifest + s->manifest_size, data, size);
        s->manifest_size += size;
        return 0;
}

static int end_archive(backup_state *s)
{
        int r = 0;

        if (s->in_archive)
                r = tar_point_end(s->tp);
        s->in_archive = false;
        return r < 0 ? log_error_errno(r, "the base backup's tar stream ends inside a file") : 0;
}

/* Where an archive named by the server goes: "base.tar" at the root,
 * "OID.tar" under pg_tblspc/OID. */
static int archive_prefix(const char *name, char *buf, size_t size)
{
        unsigned long oid;
        char *end;

        if (strcmp(name, "base.tar") == 0) {
                snprintf(buf, size, "%s", "");
                return 0;
        }
        oid = strtoul(name, &end, 10);
        if (end == name || strcmp(end, ".tar") != 0 || oid == 0)
                return log_error_errno(-EBADMSG, "the server sent an archive named '%s' (only tar is understood)",
                                       name);
        snprintf(buf, size, "pg_tblspc/%lu", oid);
        return 0;
}

static int begin_archive(backup_state *s, const char *prefix)
{
        int r = end_archive(s);
        if (r < 0)
                return r;
        s->in_manifest = false;
        r = tar_point_begin(s->tp, prefix);
        if (r < 0)
                return log_error_errno(r, "cannot start an archive: %m");
        s->in_archive = true;
        return 0;
}

static int archive_data(backup_state *s, const void *data, size_t size)
{
        int r;

        s->received += size;
        if (s->in_manifest)
                r = manifest_append(s, data, size);
        else if (s->in_archive)
                r = tar_point_feed(s->tp, data, size);
        else
                return log_error_errno(-EBADMSG, "the server sent backup data outside any archive");
        if (r == -EBADMSG)
                return log_error_errno(r, "the base backup's tar stream is malformed or holds an unsupported entry");
        if (r < 0)
                return log_error_errno(r, "cannot store the base backup: %m");
        show_progress(s, false);
        return 0;
}

/* One message of the typed COPY stream of 15 and newer. */
static int typed_message(backup_state *s, const char *msg, size_t len)
{
        char prefix[64];
        int r;

        if (len < 1)
                return log_error_errno(-EBADMSG, "the server sent an empty backup message");
        switch (msg[0]) {
        case 'n': {
                const char *name = msg + 1, *end = memchr(name, 0, len - 1);
                if (!end || !memchr(end + 1, 0, len - (size_t) (end + 1 - msg)))
                        return log_error_errno(-EBADMSG, "the server sent a malformed archive header");
                r = archive_prefix(name, prefix, sizeof(prefix));
                if (r < 0)
                        return r;
                return begin_archive(s, prefix);
        }
        case 'd':
                return archive_data(s, msg + 1, len - 1);
        case 'p':
                return 0; /* the server's count of bytes done: clonectl counts what it receives */
        case 'm':
                r = end_archive(s);
                if (r < 0)
                        return r;
                s->in_manifest = true;
                return 0;
        default:
                return log_error_errno(-EBADMSG, "the server sent a backup message of unknown type '%c'", msg[0]);
        }
}

static int read_copy(PGconn *conn, backup_state *s, bool typed)
{
        char line[512];
        int r;

        if (!typed) {
                /* 13, 14: this COPY is the next archive, or the manifest. */
                if (s->next_archive < s->n_archives) {
                        r = begin_archive(s, s->archives[s->next_archive++]);
                        if (r < 0)
                                return r;
                } else {
                        r = end_archive(s);
                        if (r < 0)
                                return r;
                        s->in_manifest = true;
                }
        }
        for (;;) {
                char *buf = NULL;
                int n = PQgetCopyData(conn, &buf, 0);

                if (n == -1)
                        break;
                if (n == -2 || n < 0)
                        return log_error_errno(-EIO, "the base backup failed: %s",
                                               pg_error_line(PQerrorMessage(conn), line, sizeof(line)));
                r = typed ? typed_message(s, buf, (size_t) n) : archive_data(s, buf, (size_t) n);
                PQfreemem(buf);
                if (r < 0)
                        return r;
        }
        return typed ? end_archive(s) : 0;
}

static int read_position(PGresult *res, uint64_t *ret_lsn, uint32_t *ret_tli)
{
        if (PQntuples(res) != 1 || PQnfields(res) < 2 || pg_lsn_parse(PQgetvalue(res, 0, 0), ret_lsn) < 0)
                return log_error_errno(-EBADMSG, "the server sent a malformed backup position");
        *ret_tli = (uint32_t) strtoul(PQgetvalue(res, 0, 1), NULL, 10);
        return 0;
}

static int read_tablespaces(PGresult *res, backup_state *s)
{
        int n = PQntuples(res);

        s->archives = calloc((size_t) MAX(n, 1), sizeof(char *));
        if (!s->archives)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                char buf[64] = "";
                if (!PQgetisnull(res, i, 0))
                        snprintf(buf, sizeof(buf), "pg_tblspc/%s", PQgetvalue(res, i, 0));
                if (!PQgetisnull(res, i, 2) && s->progress)
                        s->total += strtoull(PQgetvalue(res, i, 2), NULL, 10) * 1024;
                s->archives[i] = strdup(buf);
                if (!s->archives[i])
                        return -ENOMEM;
                s->n_archives++;
        }
        return 0;
}

int pg_base_backup(PGconn *conn, cs_store *store, bool progress, pg_backup_result *ret)
{
        _cleanup_(tar_point_freep) tar_point *tp = NULL;
        backup_state s = { .progress = progress };
        bool typed = PQserverVersion(conn) >= 150000;
        int stage = 0; /* results seen: 0 none, 1 start, 2 tablespaces, 3 end */
        uint32_t end_tli = 0;
        char cmd[256], line[512];
        PGresult *res;
        int r;

        *ret = (pg_backup_result) {};
        r = tar_point_new(store, 0, &tp);
        if (r < 0)
                return log_error_errno(r, "cannot start the ingest: %m");
        s.tp = tp;

        if (typed)
                snprintf(cmd, sizeof(cmd),
                         "BASE_BACKUP (LABEL 'clonefs', CHECKPOINT 'fast', WAIT false, MANIFEST 'yes', "
                         "TABLESPACE_MAP%s)",
                         progress ? ", PROGRESS" : "");
        else
                snprintf(cmd, sizeof(cmd), "BASE_BACKUP LABEL 'clonefs' FAST NOWAIT MANIFEST 'yes' TABLESPACE_MAP%s",
                         progress ? " PROGRESS" : "");
        if (!PQsendQuery(conn, cmd))
                return log_error_errno(-EIO, "cannot start the base backup: %s",
                                       pg_error_line(PQerrorMessage(conn), line, sizeof(line)));

        r = 0;
        while ((res = PQgetResult(conn))) {
                switch (PQresultStatus(res)) {
                case PGRES_TUPLES_OK:
                        if (r < 0)
                                break;
                        if (stage == 0)
                                r = read_position(res, &ret->start_lsn, &ret->tli);
                        else if (stage == 1)
                                r = read_tablespaces(res, &s);
                        else if (stage == 2)
                                r = read_position(res, &ret->end_lsn, &end_tli);
                        stage++;
                        break;
                case PGRES_COPY_OUT:
                        if (r >= 0)
                                r = read_copy(conn, &s, typed);
                        break;
                case PGRES_COMMAND_OK:
                        break;
                default:
                        if (r >= 0)
                                r = log_error_errno(-EIO, "the base backup failed: %s",
                                                    pg_error_line(PQresultErrorMessage(res), line, sizeof(line)));
                        break;
                }
                PQclear(res);
                /* After a failure inside the COPY the rest of the stream is
                 * not read: the caller closes the connection. */
                if (r < 0)
                        break;
        }
        if (r >= 0 && stage < 3)
                r = log_error_errno(-EBADMSG, "the base backup ended early: the server sent no end position");
        if (r >= 0 && s.manifest_size == 0)
                r = log_error_errno(-EBADMSG, "the server sent no backup manifest");
        if (r >= 0) {
                r = tar_point_add_file(tp, "backup_manifest", s.manifest, s.manifest_size);
                if (r < 0)
                        log_error_errno(r, "cannot store the backup manifest: %m");
        }
        if (r >= 0) {
                show_progress(&s, true);
                r = tar_point_finish(tp, &ret->point, &ret->files, &ret->logical_bytes);
                if (r == -EEXIST)
                        log_error_errno(-EBADMSG, "the base backup holds a name twice");
                else if (r < 0)
                        log_error_errno(r, "cannot build the point: %m");
        }
        ret->bytes_received = s.received;
        for (size_t i = 0; i < s.n_archives; i++)
                free(s.archives[i]);
        free(s.archives);
        free(s.manifest);
        return r;
}
