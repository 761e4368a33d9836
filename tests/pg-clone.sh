#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The issue's proof: a PostgreSQL 15 source reached over TCP by a
# non-superuser REPLICATION role with a scram password from PGPASSFILE;
# link, receive-wal, a row with its commit time every 100 ms for 20 s;
# timeline show gives the range; a clone at a second T in the middle,
# mounted, started: its newest row is at or before T and within a second
# of it, no later row exists, a write to it leaves the source untouched.
# A tablespace comes along, relocated into the clone (the source's files
# stay untouched); rewind goes back to the recovery setup; refresh and
# --at latest replay every stored segment, and a segment that cannot be
# copied stops recovery rather than ending it early.  A base point cloned
# or rewound to without --at starts, at the backup's end.
# The source keeps its configuration outside the data directory (Debian).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg-lib.sh"

require_postgres
require_fuse
src=$workdir/src
port=$((20000 + RANDOM % 20000))

PG_HBA="local all postgres trust
host replication rep 127.0.0.1/32 scram-sha-256
host all rep 127.0.0.1/32 scram-sha-256"
pg_init "$src" "$port"
echo "listen_addresses = '127.0.0.1'" >>"$src/postgresql.conf"
# Debian's layout: the configuration outside the data directory, so the
# clone has to get a postgresql.conf and a pg_hba.conf of its own.
etc=$src.etc
mkdir "$etc"
mv "$src/postgresql.conf" "$src/pg_hba.conf" "$src/pg_ident.conf" "$etc/"
cat >>"$etc/postgresql.conf" <<EOF
data_directory = '$src'
hba_file = '$etc/pg_hba.conf'
ident_file = '$etc/pg_ident.conf'
EOF
chown -R postgres: "$etc"
pg_start "$etc"
pg_sql "$src" "$port" "CREATE ROLE rep LOGIN REPLICATION PASSWORD 'pa ss''word';
                       CREATE TABLE ticks(id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
                       GRANT SELECT ON ticks TO rep;"
# A tablespace outside the data directory: the clone must get its own
# copy of it, relocated through tablespace_map, never the source's.
mkdir "$workdir/ts" && chown postgres: "$workdir/ts"
pg_sql "$src" "$port" "CREATE TABLESPACE ts LOCATION '$workdir/ts'"
pg_sql "$src" "$port" "CREATE TABLE far(x int) TABLESPACE ts; INSERT INTO far SELECT generate_series(1, 500)"
tsoid=$(pg_sql "$src" "$port" "SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
far_file=$src/$(pg_sql "$src" "$port" "SELECT pg_relation_filepath('far')")
far_size=$(stat -L -c %s "$far_file")
printf '127.0.0.1:%s:*:rep:pa ss'"'"'word\n' "$port" >"$workdir/pgpass"
chmod 600 "$workdir/pgpass"
export PGPASSFILE=$workdir/pgpass
conn="host=127.0.0.1 port=$port user=rep dbname=postgres"

expect_ok "link over TCP as a non-superuser with scram" cl pg link db "$conn"
PGPASSFILE=/nonexistent expect_error "no password: a clear refusal" "cannot connect to the source|password" \
        cl pg link db2 "$conn"

"$CLONECTL" --store "$store" pg receive-wal db >"$workdir/recv.out" 2>"$workdir/recv.err" &
recv=$!
on_exit "kill $recv"

# A row with its commit time every 100 ms for 20 s.
pg_sql "$src" "$port" "DO \$\$ BEGIN FOR i IN 1..200 LOOP INSERT INTO ticks DEFAULT VALUES; COMMIT;
                       PERFORM pg_sleep(0.1); END LOOP; END \$\$"
pg_sql "$src" "$port" "INSERT INTO ticks DEFAULT VALUES" >/dev/null
T=$(pg_sql "$src" "$port" "SELECT to_char(date_trunc('second', min(at) + (max(at) - min(at)) / 2) AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD HH24:MI:SS') || '+00' FROM ticks")
# Last, a transaction that aborts: recovery_target_time stops at aborts
# too, so the range must count its time (its end is the newest time).
aborted_after=$(pg_sql "$src" "$port" "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
pg_sql "$src" "$port" "BEGIN; INSERT INTO ticks DEFAULT VALUES; ROLLBACK" >/dev/null
# An abort is not flushed at once; a segment switch flushes it.
pg_sql "$src" "$port" "SELECT pg_switch_wal()" >/dev/null
pg_wait_slot "$src" "$port"

expect_ok "timeline show" cl timeline show db
cat "$workdir/out"
expect_grep "timeline show gives a provisionable range" "provisionable from .* up to" "$workdir/out"
expect_ok "timeline show --json" cl --json timeline show db
python3 - "$workdir/out" "$T" <<'PY' || fail "the range does not cover T"
import json, sys, datetime
d = json.load(open(sys.argv[1]))
b = d["bases"][0]
parse = lambda s: datetime.datetime.strptime(s[:26], "%Y-%m-%d %H:%M:%S.%f")
t = datetime.datetime.strptime(sys.argv[2][:19], "%Y-%m-%d %H:%M:%S")
assert b["usable"] and parse(b["from"]) <= t < parse(b["to"]), (b, t)
PY
pass "the range covers T"
python3 - "$workdir/out" "$aborted_after" <<'PY' || fail "the range's end is not the abort's time"
import json, sys, datetime
b = json.load(open(sys.argv[1]))["bases"][0]
parse = lambda s: datetime.datetime.strptime(s[:26], "%Y-%m-%d %H:%M:%S.%f")
assert parse(b["to"]) > parse(sys.argv[2]), (b["to"], sys.argv[2])
PY
pass "an aborted transaction's time counts in the range, as in recovery"
expect_error "a time before the range" "cannot be provisioned at 2001-01-01.*it covers from" \
        cl clone create c0 --from db --at "2001-01-01 00:00:00Z"
expect_error "a malformed time" "invalid --at" cl clone create c0 --from db --at "yesterday"
# Days and seconds the calendar does not have are refused, not carried
# over into the next month or minute.
for bad in "2026-02-30 16:43:02Z" "2026-11-31 10:00:00Z" "2026-11-22 16:46:60Z" "2026-11-22 16:46:61Z" \
        "2025-02-29 10:00:00Z" "2026-11-22 24:00:00Z" "2026-13-01 10:00:00Z" "2026-04-31T10:00:00+02:00" \
        "2026-11-00 10:00:00Z"; do
        expect_error "--at '$bad' is refused" "invalid --at" cl clone create c0 --from db --at "$bad"
done
expect_error "2028-02-29 exists: refused only for being outside the range" "cannot be provisioned at 2028-02-29" \
        cl clone create c0 --from db --at "2028-02-29 10:00:00Z"

start=$(date +%s.%N)
expect_ok "clone create --at T" cl clone create c1 --from db --at "$T"
cat "$workdir/out"
mnt=$workdir/c1
mount_clonefs "$store" "$mnt" -o clone=c1 -o allow_other
expect_eq "the clone's root belongs to postgres, mode 700" "$(stat -c '%U %a' "$mnt")" "postgres 700"
expect_eq "so does PG_VERSION" "$(stat -c '%U' "$mnt/PG_VERSION")" postgres
expect_grep "a postgresql.conf was generated" "Generated by clonefs" "$mnt/postgresql.conf"
expect_grep "a pg_hba.conf was generated" "^local +all +all +peer" "$mnt/pg_hba.conf"
expect_grep "the recovery target is T" "^recovery_target_time = '${T%+00}" "$mnt/postgresql.auto.conf"
[ -f "$mnt/recovery.signal" ] || fail "no recovery.signal"
pass "recovery.signal is there"
cport=$((port + 1))
pg_start_on "$mnt" "$cport"
ready=$(awk "BEGIN { printf \"%.2f\", $(date +%s.%N) - $start }")
echo "# clone create to promoted and accepting connections: ${ready}s"
expect_eq "the clone was promoted" "$(pg_sql "$mnt" "$cport" "SELECT pg_is_in_recovery()")" f

expect_eq "its newest row is at or before T, within a second" \
        "$(pg_sql "$mnt" "$cport" "SELECT max(at) <= '$T' AND max(at) > '$T'::timestamptz - interval '1 second' FROM ticks")" t
expect_eq "no later row exists" "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM ticks WHERE at > '$T'")" 0
want=$(pg_sql "$src" "$port" "SELECT count(*) FROM ticks WHERE pg_xact_commit_timestamp(xmin) <= '$T'")
expect_eq "exactly the rows committed by T" "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM ticks")" "$want"

before=$(pg_sql "$src" "$port" "SELECT count(*) FROM ticks")
pg_sql "$mnt" "$cport" "INSERT INTO ticks(at) VALUES ('1999-01-01'); CREATE TABLE clone_only(x int)" >/dev/null
expect_eq "the write is in the clone" "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM ticks WHERE at < '2000-01-01'")" 1
expect_eq "the source is untouched" "$(pg_sql "$src" "$port" "SELECT count(*) FROM ticks")" "$before"
expect_eq "the source has no clone_only table" \
        "$(pg_sql "$src" "$port" "SELECT count(*) FROM pg_class WHERE relname = 'clone_only'")" 0
expect_eq "the clone does not archive" "$(pg_sql "$mnt" "$cport" "SHOW archive_mode")" off
expect_eq "the clone has no primary" "$(pg_sql "$mnt" "$cport" "SHOW primary_conninfo")" ""
# --- The tablespace: relocated into the clone -----------------------------
expect_eq "tablespace_map relocated the tablespace into the clone" "$(readlink "$mnt/pg_tblspc/$tsoid")" \
        "../.clonefs/tablespaces/$tsoid"
expect_eq "the clone reads the tablespace's rows" "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM far")" 500
pg_sql "$mnt" "$cport" "INSERT INTO far SELECT generate_series(1, 5000)" >/dev/null
pg_sql "$mnt" "$cport" "CHECKPOINT" >/dev/null
expect_eq "the clone wrote to its tablespace" "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM far")" 5500
expect_eq "the source's tablespace file is untouched" "$(stat -L -c %s "$far_file")" "$far_size"
expect_eq "the source's tablespace holds its rows" "$(pg_sql "$src" "$port" "SELECT count(*) FROM far")" 500

# --- rewind: back to the recovery setup, not to the bare backup -----------
pg_stop "$mnt"
expect_ok "clone rewind while mounted" cl clone rewind c1
[ -f "$mnt/recovery.signal" ] || fail "rewind lost recovery.signal"
expect_grep "the rewound clone recovers to T again" "^recovery_target_time = '${T%+00}" "$mnt/postgresql.auto.conf"
pg_start_on "$mnt" "$cport"
expect_eq "rewound: exactly the rows committed by T" "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM ticks")" "$want"
expect_eq "rewound: the clone's writes are gone" "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM far")" 500

# --- refresh: the newest data, which is in the WAL past the base point -----
for _ in 1 2 3; do pg_sql "$src" "$port" "INSERT INTO ticks DEFAULT VALUES" >/dev/null; done
pg_wait_slot "$src" "$port"
pg_stop "$mnt"
expect_ok "clone refresh while mounted" cl clone refresh c1
expect_eq "the refreshed clone has no recovery target" \
        "$(grep -c '^recovery_target_time =' "$mnt/postgresql.auto.conf" || true)" 0
pg_start_on "$mnt" "$cport"
expect_eq "refreshed: every row the source committed" "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM ticks")" \
        "$(pg_sql "$src" "$port" "SELECT count(*) FROM ticks")"
pg_stop "$mnt"

# --- The range comes from the WAL, not from clonectl's clock ------------------
# A base backup taken while clonectl's clock runs 10 minutes behind the
# server's: its range must still start after the backup ended on the
# server (at its last commit before the end LSN), not 10 minutes early.
pg_sql "$src" "$port" "INSERT INTO ticks DEFAULT VALUES" >/dev/null
pre=$(pg_sql "$src" "$port" "SELECT extract(epoch FROM max(at)) FROM ticks")
at_sync=$(pg_sql "$src" "$port" "SELECT count(*) FROM ticks")
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 \
        expect_ok "pg sync with clonectl's clock 10 minutes behind" faketime -f -600s "$CLONECTL" --store "$store" pg sync db
for _ in 1 2 3; do pg_sql "$src" "$port" "INSERT INTO ticks DEFAULT VALUES" >/dev/null; done
pg_wait_slot "$src" "$port"
expect_ok "timeline show --json" cl --json timeline show db
python3 - "$workdir/out" "$pre" <<'PY' || fail "the second base's range starts before the server ended its backup"
import json, sys, datetime
b = json.load(open(sys.argv[1]))["bases"][-1]
start = datetime.datetime.strptime(b["from"][:26], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
assert b["usable"] and start.timestamp() >= float(sys.argv[2]), (b, sys.argv[2])
PY
pass "the range starts at the server's last commit before the backup's end, whatever clonectl's clock says"

# --- A base point without --at: recovered to the backup's end -------------
# The backup alone cannot start (its checkpoint record is in the WAL), so
# the clone gets the WAL to the backup's end and recovery_target immediate.
base2=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["bases"][-1]["point"])' "$workdir/out")
expect_ok "clone create --from a base point" cl --json clone create c3 --from "db@$base2"
python3 - "$workdir/out" "$base2" <<'PY' || fail "clone create --json of a base point"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["clone"] == "c3" and d["from"] == "db@" + sys.argv[2] and d["at"] == "backup_end" and d["wal_segments"] >= 1, d
PY
pass "--json says it recovers to the backup's end, with its WAL segments"
mnt=$workdir/c3
mount_clonefs "$store" "$mnt" -o clone=c3 -o allow_other
expect_grep "the base point recovers to consistency" "^recovery_target = 'immediate'" "$mnt/postgresql.auto.conf"
pg_start_on "$mnt" "$cport"
expect_eq "the base point's clone starts with the rows of the backup" \
        "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM ticks")" "$at_sync"
pg_sql "$mnt" "$cport" "INSERT INTO ticks DEFAULT VALUES" >/dev/null
pg_stop "$mnt"
expect_ok "clone rewind --to a base point" cl clone rewind c3 --to "db@$base2"
pg_start_on "$mnt" "$cport"
expect_eq "rewound to a base point: it starts, the clone's row gone" \
        "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM ticks")" "$at_sync"
pg_stop "$mnt"

# Rows in three segments after the base: B's segment is the one made
# unreadable below.
pg_sql "$src" "$port" "INSERT INTO ticks DEFAULT VALUES; SELECT pg_switch_wal()" >/dev/null
pg_sql "$src" "$port" "INSERT INTO ticks DEFAULT VALUES" >/dev/null
seg_b=$(pg_sql "$src" "$port" "SELECT pg_walfile_name(pg_current_wal_lsn())")
pg_sql "$src" "$port" "SELECT pg_switch_wal()" >/dev/null
pg_sql "$src" "$port" "INSERT INTO ticks DEFAULT VALUES" >/dev/null
pg_wait_slot "$src" "$port"
all=$(pg_sql "$src" "$port" "SELECT count(*) FROM ticks")

expect_ok "clone create --json --at latest" cl --json clone create js1 --from db --at latest
python3 - "$workdir/out" <<'PY' || fail "clone create --json --at prints no JSON"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["clone"] == "js1" and d["from"].startswith("db@") and d["at"] == "latest" and d["wal_segments"] >= 3, d
assert d["milliseconds"] >= 0, d
PY
pass "clone create --json --at prints JSON with the WAL segments"
expect_ok "clone create --json --at T" cl --json clone create js2 --from db --at "$T"
python3 - "$workdir/out" "$T" <<'PY' || fail "clone create --json --at T"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["at"].startswith(sys.argv[2][:19]) and d["wal_segments"] >= 1, d
PY
pass "clone create --json --at T says T"
expect_ok "clone create --at latest" cl clone create c2 --from db --at latest
expect_grep "--at latest recovers all the stored WAL" "recovering to the end of its stored WAL" "$workdir/out"
mnt=$workdir/c2
mount_clonefs "$store" "$mnt" -o clone=c2 -o allow_other

# --- restore_command: only a missing file ends the WAL ------------------------
# PostgreSQL takes an exit status up to 125 for "no such file" and ends
# recovery there; above 125 it stops with an error.  Run the generated
# command as the server would: sh -c in the data directory, as postgres.
restore=$(sed -n "s/^restore_command = '\(.*\)'\$/\1/p" "$mnt/postgresql.auto.conf")
[ -n "$restore" ] || fail "no restore_command in the clone's postgresql.auto.conf"
run_restore() { # FILE DEST: exit status, stderr in $workdir/restore.err
        local cmd=${restore//%f/$1}
        (cd "$mnt" && runuser -u postgres -- sh -c "${cmd//%p/$2}") 2>"$workdir/restore.err"
}
mkdir "$workdir/rdest" && chown postgres: "$workdir/rdest"
st=0; run_restore "$seg_b" "$workdir/rdest/x" || st=$?
expect_eq "restore_command copies a segment it has" "$st" 0
cmp -s "$mnt/.clonefs/wal/$seg_b" "$workdir/rdest/x" || fail "the copied segment differs"
st=0; run_restore 0000000100000000000000FF "$workdir/rdest/y" || st=$?
expect_eq "restore_command exits 1 for a segment it does not have" "$st" 1
st=0; run_restore 00000009.history "$workdir/rdest/y" || st=$?
expect_eq "restore_command exits 1 for a history file it does not have" "$st" 1
st=0; run_restore "$seg_b" "$workdir/nowhere/x" || st=$?
[ "$st" -gt 125 ] || fail "restore_command exits $st when the copy fails: PostgreSQL would take that for the end of the WAL"
pass "restore_command exits above 125 when a segment it has cannot be copied"
[ -s "$workdir/restore.err" ] || fail "restore_command hides cp's error"
pass "restore_command leaves cp's error to the server's log"

# The real thing: a segment the server cannot read must stop recovery with
# an error, not end it early on a new timeline without the later rows.
chmod 000 "$mnt/.clonefs/wal/$seg_b"
mkdir -p "$mnt.sock" && chown postgres: "$mnt.sock"
touch "$mnt.log" && chown postgres: "$mnt.log"
if as_pg "$PGBIN/pg_ctl" -D "$mnt" -l "$mnt.log" -w -t 60 -o "-p $cport -k $mnt.sock -c listen_addresses=''" \
        start >/dev/null 2>&1; then
        on_exit "runuser -u postgres -- $PGBIN/pg_ctl -D '$mnt' -m immediate -w stop"
        cat "$mnt.log" >&2
        fail "postgres came up although a WAL segment could not be restored"
fi
pass "a segment that cannot be copied stops recovery"
expect_grep "the server's log says which file" "could not restore file \"$seg_b\"" "$mnt.log"
expect_grep "and cp's reason" "Permission denied" "$mnt.log"
if grep -q "selected new timeline ID" "$mnt.log"; then fail "recovery ended early on a new timeline"; fi
pass "no new timeline was selected"

expect_ok "clone rewind to the recovery setup" cl clone rewind c2
pg_start_on "$mnt" "$cport"
expect_eq "--at latest: every row the source committed" "$(pg_sql "$mnt" "$cport" "SELECT count(*) FROM ticks")" "$all"
pg_stop "$mnt"

kill -TERM $recv
wait $recv || { cat "$workdir/recv.err" >&2; fail "receive-wal failed"; }
pass "receive-wal stopped cleanly"
