#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The issue's proof: a PostgreSQL 15 source reached over TCP by a
# non-superuser REPLICATION role with a scram password from PGPASSFILE;
# link, receive-wal, a row with its commit time every 100 ms for 20 s;
# timeline show gives the range; a clone at a second T in the middle,
# mounted, started: its newest row is at or before T and within a second
# of it, no later row exists, a write to it leaves the source untouched.
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
pg_start "$src"
pg_sql "$src" "$port" "CREATE ROLE rep LOGIN REPLICATION PASSWORD 'pa ss''word';
                       CREATE TABLE ticks(id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
                       GRANT SELECT ON ticks TO rep;"
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
last=$(pg_sql "$src" "$port" "SELECT pg_current_wal_flush_lsn()")
for _ in $(seq 100); do
        [ "$(pg_sql "$src" "$port" "SELECT restart_lsn >= '$last' FROM pg_replication_slots")" = t ] && break
        sleep 0.1
done

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
expect_error "a time before the range" "cannot be provisioned at 2001-01-01.*it covers from" \
        cl clone create c0 --from db --at "2001-01-01 00:00:00Z"
expect_error "a malformed time" "invalid --at" cl clone create c0 --from db --at "yesterday"

start=$(date +%s.%N)
expect_ok "clone create --at T" cl clone create c1 --from db --at "$T"
cat "$workdir/out"
mnt=$workdir/c1
mount_clonefs "$store" "$mnt" -o clone=c1 -o allow_other
expect_eq "the clone's root belongs to postgres, mode 700" "$(stat -c '%U %a' "$mnt")" "postgres 700"
expect_eq "so does PG_VERSION" "$(stat -c '%U' "$mnt/PG_VERSION")" postgres
mkdir "$mnt.sock" && chown postgres: "$mnt.sock"
touch "$mnt.log" && chown postgres: "$mnt.log"
cport=$((port + 1))
as_pg "$PGBIN/pg_ctl" -D "$mnt" -l "$mnt.log" -w -t 120 \
        -o "-p $cport -k $mnt.sock -c listen_addresses=''" start >/dev/null ||
        { cat "$mnt.log" >&2; fail "postgres did not start on the clone"; }
on_exit "runuser -u postgres -- $PGBIN/pg_ctl -D '$mnt' -m immediate -w stop"
for _ in $(seq 300); do
        [ "$(pg_sql "$mnt" "$cport" "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break
        sleep 0.1
done
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
kill -TERM $recv
wait $recv || { cat "$workdir/recv.err" >&2; fail "receive-wal failed"; }
pass "receive-wal stopped cleanly"
