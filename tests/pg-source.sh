#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# PostgreSQL sources: pg link and pg sync against a real PostgreSQL 15 on a
# Unix socket.  The point must be the backup exactly (pg_verifybackup
# against its manifest), start as a server holding the data, tablespace
# included; a second sync of an unchanged database stores under 1% of its
# size; each refusal is one clear line; a sync or link after forget of the
# store's newest point records its own backup, not the forgotten one's.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg-lib.sh"

require_postgres
src=$workdir/src

PG_HBA="local replication rep trust
local replication norep trust
local all all trust"
pg_init "$src" 5491
pg_start "$src"
sock=$src.sock
mkdir "$workdir/ts" && chown postgres: "$workdir/ts"
pg_sql "$src" 5491 "CREATE ROLE rep LOGIN REPLICATION; CREATE ROLE norep LOGIN; CREATE ROLE nohba LOGIN REPLICATION;"
pg_sql "$src" 5491 "CREATE TABLESPACE ts LOCATION '$workdir/ts'"
pg_sql "$src" 5491 "CREATE TABLE t(id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
                    CREATE TABLE t2(id int) TABLESPACE ts; INSERT INTO t2 SELECT generate_series(1, 777);"
as_pg "$PGBIN/pgbench" -i -q -s 3 -h "$sock" -p 5491 -U postgres postgres >/dev/null 2>&1 || fail "pgbench -i"

conn="host=$sock port=5491 user=rep password=s3cret dbname=postgres"

# --- Refusals, one line each, nothing left behind --------------------------
expect_error "a server that is not there" "cannot connect to the source" \
        cl pg link bad "host=$workdir/nosuchdir port=5491 user=rep"
expect_error "a role without REPLICATION" "role 'norep' lacks the REPLICATION attribute.*ALTER ROLE norep REPLICATION" \
        cl pg link bad "host=$sock port=5491 user=norep dbname=postgres"
expect_error "no pg_hba.conf replication entry" "pg_hba.conf has no replication entry for role 'nohba'.*local replication nohba" \
        cl pg link bad "host=$sock port=5491 user=nohba dbname=postgres"
expect_error "a malformed conninfo" "invalid connection string" cl pg link bad "host=$sock port"
expect_error "sync of an unlinked timeline" "not linked to a PostgreSQL server" cl pg sync bad
expect_eq "no timeline was made by the refusals" "$(cl timelines | grep -c bad || true)" 0

# --- link: slot, first backup ---------------------------------------------
expect_ok "pg link" cl pg link db "$conn"
p1=$(cat "$workdir/out")
expect_eq "the slot exists, permanent and physical" \
        "$(pg_sql "$src" 5491 "SELECT slot_type || ' ' || temporary FROM pg_replication_slots WHERE slot_name = 'clonefs_db'")" \
        "physical false"
expect_eq "the slot reserves WAL" \
        "$(pg_sql "$src" 5491 "SELECT restart_lsn IS NOT NULL FROM pg_replication_slots WHERE slot_name = 'clonefs_db'")" "t"
if cat "$store"/catalog.db* | grep -qa s3cret; then
        fail "the password reached the catalog"
fi
pass "no password in the catalog"
cat "$store"/catalog.db* | grep -qa "user='rep'" || fail "conninfo not in the catalog"
pass "the conninfo is in the catalog"
expect_error "linking a timeline twice" "timeline 'db' already exists" cl pg link db "$conn"
expect_error "an existing slot name" "replication slot 'clonefs_db' already exists.*--slot" \
        cl pg link db2 "$conn" --slot clonefs_db
expect_error "an invalid slot name" "invalid slot name" cl pg link db2 "$conn" --slot Bad-Name
expect_eq "the refused links left one slot" "$(pg_sql "$src" 5491 "SELECT count(*) FROM pg_replication_slots")" 1

# --- The point is the backup ---------------------------------------------------
restored=$workdir/restored
expect_ok "restore the point" cl restore "db@$p1" "$restored"
[ -f "$restored/backup_label" ] && [ -f "$restored/backup_manifest" ] && [ -f "$restored/tablespace_map" ] ||
        fail "backup_label, backup_manifest or tablespace_map missing"
pass "backup_label, backup_manifest and tablespace_map are in the point"
tsoid=$(pg_sql "$src" 5491 "SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
[ -d "$restored/pg_tblspc/$tsoid" ] || fail "tablespace $tsoid not under pg_tblspc/"
pass "the tablespace is under pg_tblspc/$tsoid"
expect_ok "pg_verifybackup: every file matches the manifest" "$PGBIN/pg_verifybackup" -n -q "$restored"

# Start it: WAL from the source's pg_wal (the slot kept it), stop when
# consistent, promote.  The tablespace stays in place under pg_tblspc/
# (no map; PostgreSQL 15 calls that an in-place tablespace).
mv "$restored/tablespace_map" "$restored/tablespace_map.source"
chown -R postgres: "$restored"
chmod 700 "$restored"
cat >>"$restored/postgresql.conf" <<EOF
port = 5492
unix_socket_directories = '$restored.sock'
restore_command = 'cp $src/pg_wal/%f %p'
recovery_target = 'immediate'
recovery_target_action = 'promote'
allow_in_place_tablespaces = on
EOF
mkdir "$restored.sock" && chown postgres: "$restored.sock"
touch "$restored/recovery.signal"
pg_start "$restored"
pg_wait_promoted "$restored" 5492
expect_eq "the restored copy holds the rows" "$(pg_sql "$restored" 5492 "SELECT count(*), sum(id) FROM t")" \
        "20000|200010000"
expect_eq "the restored copy holds the tablespace's rows" "$(pg_sql "$restored" 5492 "SELECT count(*) FROM t2")" 777
expect_eq "pgbench's tables came along" "$(pg_sql "$restored" 5492 "SELECT count(*) FROM pgbench_accounts")" 300000
pg_stop "$restored"

# --- A second sync of an unchanged database stores under 1% --------------------
expect_ok "pg sync" cl --json pg sync db
cp "$workdir/out" "$workdir/sync2.json"
logical=$(json_get "$workdir/sync2.json" logical_bytes)
stored=$(json_get "$workdir/sync2.json" bytes_stored)
echo "# second sync: $stored bytes stored for $logical logical"
[ "$stored" -lt $((logical / 100)) ] || fail "second sync stored $stored bytes of $logical (>= 1%)"
pass "second sync stored under 1% of the database"
expect_eq "two points" "$(cl points db | grep -c '^2')" 2
expect_ok "verify --data" cl verify --data
expect_ok "gc keeps both points" cl gc
expect_ok "verify after gc" cl verify --data

# --- Forgetting the store's newest point -----------------------------------------
# SQLite gives the next point the forgotten one's id: its backup record
# must go with it, or the next base point fails ("File exists") and keeps
# the forgotten backup's LSNs, from before it was taken.

# base_lsn TIMELINE POINT: the start LSN timeline show gives the base point.
base_lsn() {
        cl --json timeline show "$1" >"$workdir/show.json" || fail "timeline show $1"
        python3 -c 'import json,sys; print(*[b["start_lsn"] for b in json.load(open(sys.argv[1]))["bases"] if b["point"] == sys.argv[2]])' \
                "$workdir/show.json" "$2"
}

# sync_after_forget DESCRIPTION COMMAND...: forgets db's newest point (the
# store's newest), runs the pg link or sync, and checks that the new base
# starts at its own backup's LSN, not before the server's position then.
sync_after_forget() {
        local what=$1 newest before p start
        shift
        newest=$(cl points db | awk '/^2/ { p = $1 } END { print p }')
        expect_ok "forget db@$newest, the store's newest point" cl forget "db@$newest"
        before=$(pg_sql "$src" 5491 "SELECT pg_current_wal_lsn()")
        expect_ok "$what" "$@"
        p=$(json_get "$workdir/out" point)
        start=$(base_lsn "$(json_get "$workdir/out" timeline)" "$p")
        expect_eq "its base starts at its own backup's LSN" "$start" "$(json_get "$workdir/out" start_lsn)"
        expect_eq "which is not before the sync began" \
                "$(pg_sql "$src" 5491 "SELECT '$start'::pg_lsn >= '$before'::pg_lsn")" t
}

sync_after_forget "pg sync after forgetting the newest point" cl --json pg sync db
expect_eq "two base points in db" "$(cl --json timeline show db | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["bases"]))')" 2
sync_after_forget "pg link after forgetting the newest point" cl --json pg link r2 "$conn" --slot clonefs_r2
expect_eq "r2 has its one base point" "$(cl points r2 | grep -c '^2')" 1
expect_eq "and its slot" "$(pg_sql "$src" 5491 "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'clonefs_r2'")" 1
expect_ok "verify" cl verify

# A directory snapshot into a linked timeline is refused: its points are
# base backups.
mkdir "$workdir/plain" && echo hello >"$workdir/plain/f"
expect_error "snapshot into a linked timeline" "timeline 'db' is linked to PostgreSQL: use 'clonectl pg sync db'$" \
        cl snapshot db --from "$workdir/plain"
expect_eq "it made no point" "$(cl points db | grep -c '^2')" 1

# Forgetting a linked timeline's last point drops all its WAL, and says so.
seg=$(find "$src/pg_wal" -maxdepth 1 -name '000000010000000000000*' -size 16M | sort | tail -1)
[ -n "$seg" ] || fail "no complete WAL segment in the source's pg_wal"
cp "$seg" "$workdir/" || fail "cannot copy $seg"
expect_ok "archive-wal one segment into r2" cl pg archive-wal r2 "$workdir/${seg##*/}"
expect_ok "forget r2's last point" cl forget "r2@latest"
expect_grep "the WAL dropped is all of it, and said so" "^dropped 1 WAL segments \(all stored: no base point is kept\)" \
        "$workdir/out"
expect_ok "a snapshot of another timeline takes the forgotten point's id" cl snapshot jl --from "$workdir/plain"
expect_eq "and is a plain point" "$(cl timeline show jl | head -1)" "timeline jl: 1 points, not linked to PostgreSQL"


# --- The source dies during pg link's base backup ---------------------------
# The slot cannot be dropped then: a warning after the error names it.
"$CLONECTL" --store "$store" pg link db3 "$conn" >"$workdir/link3.out" 2>"$workdir/link3.err" &
link3=$!
on_exit "kill -CONT $link3; kill $link3"
for _ in $(seq 500); do
        [ "$(pg_sql "$src" 5491 "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'clonefs_db3'")" = 1 ] &&
                break
        sleep 0.01
done
kill -STOP $link3 || fail "pg link ended before the source could be stopped under it"
as_pg "$PGBIN/pg_ctl" -D "$src" -m immediate -w stop >/dev/null
kill -CONT $link3
status=0
wait $link3 || status=$?
[ "$status" -ne 0 ] || fail "pg link succeeded without its source"
pass "pg link fails when the source dies under it"
expect_eq "two lines: why it failed, then the slot" "$(wc -l <"$workdir/link3.err")" 2
expect_grep "the first is the error" "^clonectl: error: .*(base backup|source)" "$workdir/link3.err"
expect_grep "the second names the slot left behind" \
        "^clonectl: warning: replication slot 'clonefs_db3' is left on the source .*pg_drop_replication_slot\('clonefs_db3'\)" \
        "$workdir/link3.err"
as_pg "$PGBIN/pg_ctl" -D "$src" -l "$src.log" -w start >/dev/null || fail "start the source again"
expect_eq "the slot is there, as said" \
        "$(pg_sql "$src" 5491 "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'clonefs_db3'")" 1
expect_eq "and no timeline db3" "$(cl timelines | grep -c db3 || true)" 0
pg_sql "$src" 5491 "SELECT pg_drop_replication_slot('clonefs_db3')" >/dev/null

# The source down: one line, and the store keeps its points.
pg_stop "$src"
expect_error "sync with the source down" "cannot connect to the source" cl pg sync db
expect_eq "still one point" "$(cl points db | grep -c '^2')" 1
