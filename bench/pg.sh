#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/pg.sh [BUILD_DIR]: a PostgreSQL source over libpq, in one run.
#
# Creates a PostgreSQL 15 cluster in a temporary directory (socket only),
# loads it with "pgbench -i -s SCALE" and keeps it running.  Then:
#
#   pg_basebackup  -Ft -X none to local disk (the reference), page cache
#                  dropped first
#   pg link        the first base backup into the store (slot included),
#                  page cache dropped first
#   pg sync        a second base backup with nothing changed (page cache
#                  warm): time and the bytes it stored
#   clone --at     receive-wal running, a few commits, then the time from
#                  "clone create --at T" (the clone mounted, postgres
#                  started on it) until postgres accepts connections
#
# Prints a table and the ratios the issue sets as targets.
# Needs root: PostgreSQL runs as "postgres" through runuser, the page cache
# is dropped through /proc/sys/vm/drop_caches, the clone is mounted.
# Environment: SCALE (100), PGBIN (/usr/lib/postgresql/15/bin),
# BENCH_TMPDIR (/var/tmp).
set -euo pipefail

builddir=$(cd "${1:-.}" && pwd)
clonectl=$builddir/clonectl
clonefs=$builddir/clonefs
scale=${SCALE:-100}
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
port=54331

die() {
        echo "pg.sh: $*" >&2
        exit 1
}

calc() {
        awk "BEGIN { printf \"%.4f\", $1 }"
}

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL runs as postgres; caches are dropped)"
[ -x "$clonectl" ] && [ -x "$clonefs" ] || die "clonectl or clonefs not found in $builddir: build first"
[ -x "$pgbin/initdb" ] || die "no PostgreSQL in $pgbin (apt-get install postgresql-15)"

work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/clonefs-pg.XXXXXX")
chmod 755 "$work"
pgdata=$work/pgdata
sock=$work/sock
mnt=$work/clone
mkdir -p "$sock" "$work/clone.sock" "$mnt"
chown postgres "$sock" "$work/clone.sock"
recv=

cleanup() {
        set +e
        [ -f "$mnt/postmaster.pid" ] &&
                runuser -u postgres -- "$pgbin/pg_ctl" -D "$mnt" -m immediate stop >/dev/null 2>&1
        mountpoint -q "$mnt" && fusermount3 -u -z "$mnt"
        [ -n "$recv" ] && kill "$recv" 2>/dev/null && wait "$recv" 2>/dev/null
        [ -f "$pgdata/postmaster.pid" ] &&
                runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1
        rm -rf "$work"
}
trap cleanup EXIT

pg() {
        runuser -u postgres -- "$@"
}

sql() {
        pg "$pgbin/psql" -X -q -A -t -h "$sock" -p "$port" -U postgres -d postgres -c "$1"
}

drop_caches() {
        sync
        echo 3 >/proc/sys/vm/drop_caches
}

now() {
        date +%s.%N
}

echo "== preparing: pgbench -i -s $scale"
mkdir -p "$pgdata"
chown postgres "$pgdata"
pg "$pgbin/initdb" -D "$pgdata" -U postgres -A trust --no-sync >/dev/null
cat >>"$pgdata/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$sock'
max_slot_wal_keep_size = 16GB
EOF
pg "$pgbin/pg_ctl" -D "$pgdata" -w -l "$sock/pg.log" start >/dev/null
pg "$pgbin/pgbench" -h "$sock" -p "$port" -i -s "$scale" -q postgres >/dev/null 2>&1
sql "CHECKPOINT" >/dev/null
db_bytes=$(sql "SELECT sum(pg_database_size(oid)) FROM pg_database")
echo "databases: $db_bytes bytes"

export CLONEFS_STORE=$work/store
"$clonectl" init >/dev/null
conn="host=$sock port=$port user=postgres dbname=postgres"

mkdir "$work/basebackup"
chown postgres "$work/basebackup"
drop_caches
t0=$(now)
pg "$pgbin/pg_basebackup" -h "$sock" -p "$port" -U postgres -Ft -X none -D "$work/basebackup" -c fast
t1=$(now)
bb_seconds=$(calc "$t1 - $t0")
bb_bytes=$(du -sb "$work/basebackup" | cut -f1)
rm -rf "$work/basebackup"
echo "pg_basebackup -Ft -X none: $bb_seconds s, $bb_bytes bytes"

drop_caches
t0=$(now)
"$clonectl" --json pg link db "$conn" >"$work/link.json"
t1=$(now)
link_seconds=$(calc "$t1 - $t0")
json() {
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}
link_logical=$(json "$work/link.json" logical_bytes)
link_stored=$(json "$work/link.json" bytes_stored)
echo "pg link (first sync): $link_seconds s, $link_logical bytes, stored $link_stored"

t0=$(now)
"$clonectl" --json pg sync db >"$work/sync.json"
t1=$(now)
sync_seconds=$(calc "$t1 - $t0")
sync_logical=$(json "$work/sync.json" logical_bytes)
sync_stored=$(json "$work/sync.json" bytes_stored)
echo "pg sync (unchanged): $sync_seconds s, stored $sync_stored of $sync_logical bytes"

"$clonectl" pg receive-wal db >/dev/null 2>"$work/recv.err" &
recv=$!
for _ in $(seq 20); do
        sql "UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1" >/dev/null
        sleep 0.1
done
T=$(sql "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'")
sleep 1.1
for _ in $(seq 5); do
        sql "UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1" >/dev/null
        sleep 0.1
done
last=$(sql "SELECT pg_current_wal_flush_lsn()")
for _ in $(seq 100); do
        [ "$(sql "SELECT restart_lsn >= '$last' FROM pg_replication_slots")" = t ] && break
        sleep 0.1
done

t0=$(now)
"$clonectl" clone create c1 --from db --at "$T" >/dev/null
"$clonefs" "$CLONEFS_STORE" "$mnt" -o clone=c1 -o allow_other
pg "$pgbin/pg_ctl" -D "$mnt" -l "$work/clone.sock/log" -o "-p $((port + 1)) -k $work/clone.sock -c listen_addresses=''" \
        start >/dev/null
until pg "$pgbin/pg_isready" -q -h "$work/clone.sock" -p $((port + 1)); do
        sleep 0.05
done
until [ "$(pg "$pgbin/psql" -X -A -t -h "$work/clone.sock" -p $((port + 1)) -U postgres -d postgres \
        -c "SELECT pg_is_in_recovery()")" = f ]; do
        sleep 0.05
done
t1=$(now)
clone_seconds=$(calc "$t1 - $t0")
echo "clone create --at to accepting connections (promoted): $clone_seconds s"

mibs() {
        calc "$1 / $2 / 1048576"
}
echo
printf '%-36s %10s %12s %14s\n' step seconds "MiB/s" "stored bytes"
printf '%-36s %10.2f %12.0f %14s\n' "pg_basebackup -Ft -X none" "$bb_seconds" "$(mibs "$bb_bytes" "$bb_seconds")" "$bb_bytes"
printf '%-36s %10.2f %12.0f %14s\n' "clonectl pg link (first sync)" "$link_seconds" \
        "$(mibs "$link_logical" "$link_seconds")" "$link_stored"
printf '%-36s %10.2f %12.0f %14s\n' "clonectl pg sync (unchanged)" "$sync_seconds" \
        "$(mibs "$sync_logical" "$sync_seconds")" "$sync_stored"
printf '%-36s %10.2f\n' "clone create --at to ready" "$clone_seconds"
echo
echo "first sync vs pg_basebackup:  $(calc "$bb_seconds / $link_seconds")x the speed (both from a cold cache; target >= 1)"
echo "unchanged sync stores:        $(calc "100 * $sync_stored / $sync_logical")% of the database (target < 1%)"
echo "clone ready:                  $clone_seconds s (target < 10)"
