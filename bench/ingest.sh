#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/ingest.sh [BUILD_DIR]: snapshots of a PostgreSQL data directory by
# clonefs, restic and borg, side by side on the same data in one run.
#
# Creates a PostgreSQL 15 cluster in a temporary directory (socket only),
# loads it with "pgbench -i -s SCALE", stops it.  Then, for each tool:
# the first snapshot (page cache dropped first), an unchanged re-run, and
# the size of its store or repository.  Then "pgbench -T PGBENCH_SECONDS",
# stop, and for each tool the changed re-run and the size after both.
#
#   clonefs  clonectl snapshot (lz4, default block size)
#   restic   restic backup (local repository, its default zstd)
#   borg     borg create (local repository, --encryption=none, lz4)
#
# Prints a table and the ratios the issue sets as targets.  With KEEP=1 the
# work directory (stores, repositories, data directory) is kept for
# bench/mount.sh and its path printed.
#
# Needs root: PostgreSQL runs as "postgres" through runuser, and the page
# cache is dropped through /proc/sys/vm/drop_caches.
# Environment: SCALE (100), PGBENCH_SECONDS (30), PGBIN
# (/usr/lib/postgresql/15/bin), BENCH_TMPDIR (/var/tmp), KEEP (0).
set -euo pipefail

builddir=$(cd "${1:-.}" && pwd)
clonectl=$builddir/clonectl
scale=${SCALE:-100}
pgbench_seconds=${PGBENCH_SECONDS:-30}
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}

die() {
        echo "ingest.sh: $*" >&2
        exit 1
}

calc() {
        awk "BEGIN { printf \"%.4f\", $1 }"
}

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL runs as postgres; caches are dropped)"
[ -x "$clonectl" ] || die "$clonectl not found: build first"
[ -x "$pgbin/initdb" ] || die "no PostgreSQL in $pgbin (apt-get install postgresql-15)"
command -v restic >/dev/null || die "restic is not installed (apt-get install restic)"
command -v borg >/dev/null || die "borg is not installed (apt-get install borgbackup)"

work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/clonefs-ingest.XXXXXX")
chmod 755 "$work"
pgdata=$work/pgdata
sock=$work/sock
mkdir -p "$sock"
chown postgres "$sock"

cleanup() {
        if [ -f "$pgdata/postmaster.pid" ]; then
                runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
        fi
        if [ "${KEEP:-0}" = 1 ]; then
                echo "kept: $work"
        else
                rm -rf "$work"
        fi
}
trap cleanup EXIT

pg() {
        runuser -u postgres -- "$@"
}

start_pg() {
        pg "$pgbin/pg_ctl" -D "$pgdata" -w -l "$sock/pg.log" \
                -o "-k $sock -c listen_addresses='' -p 54330" start >/dev/null
}

stop_pg() {
        pg "$pgbin/pg_ctl" -D "$pgdata" -w -m fast stop >/dev/null
}

drop_caches() {
        sync
        echo 3 >/proc/sys/vm/drop_caches
}

# seconds COMMAND...: runs a command, prints its wall time in seconds.
seconds() {
        local start end
        start=$(date +%s.%N)
        "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; die "failed: $*"; }
        end=$(date +%s.%N)
        calc "$end - $start"
}

size_of() {
        du -sb "$1" | cut -f1
}

echo "== preparing: pgbench -i -s $scale"
mkdir -p "$pgdata"
chown postgres "$pgdata"
pg "$pgbin/initdb" -D "$pgdata" --no-sync >/dev/null
start_pg
pg "$pgbin/pgbench" -h "$sock" -p 54330 -i -s "$scale" -q postgres >/dev/null 2>&1
stop_pg
data_bytes=$(size_of "$pgdata")
echo "data directory: $data_bytes bytes"

export CLONEFS_STORE=$work/clonefs
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$work/restic RESTIC_CACHE_DIR=$work/restic-cache
export BORG_REPO=$work/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR=$work/borg-home
"$clonectl" init >/dev/null
restic init >/dev/null 2>&1
borg init --encryption=none >/dev/null 2>&1

declare -A first unchanged changed size1 size2
tools="clonefs restic borg"

run() {
        local tool=$1 name=$2
        case $tool in
        clonefs) seconds "$clonectl" snapshot pg --from "$pgdata" ;;
        restic) seconds restic backup --quiet "$pgdata" ;;
        borg) seconds borg create "::$name" "$pgdata" ;;
        esac
}

store_of() {
        case $1 in
        clonefs) echo "$CLONEFS_STORE" ;;
        restic) echo "$RESTIC_REPOSITORY" ;;
        borg) echo "$BORG_REPO" ;;
        esac
}

for tool in $tools; do
        drop_caches
        first[$tool]=$(run "$tool" a)
        unchanged[$tool]=$(run "$tool" b)
        size1[$tool]=$(size_of "$(store_of "$tool")")
        echo "$tool: first ${first[$tool]} s, unchanged ${unchanged[$tool]} s, ${size1[$tool]} bytes"
done

echo "== pgbench -T $pgbench_seconds"
start_pg
pg "$pgbin/pgbench" -h "$sock" -p 54330 -c 2 -T "$pgbench_seconds" postgres >/dev/null 2>&1
stop_pg

for tool in $tools; do
        drop_caches
        changed[$tool]=$(run "$tool" c)
        size2[$tool]=$(size_of "$(store_of "$tool")")
        echo "$tool: changed ${changed[$tool]} s, ${size2[$tool]} bytes"
done

mb() {
        calc "$1 / $2 / 1000000"
}

echo
printf '%-8s %12s %10s %12s %12s %12s %12s\n' tool "first s" "MB/s" "unchanged s" "changed s" "size 1 MB" "size 2 MB"
for tool in $tools; do
        printf '%-8s %12.2f %10.0f %12.3f %12.2f %12.1f %12.1f\n' "$tool" "${first[$tool]}" \
                "$(mb "$data_bytes" "${first[$tool]}")" "${unchanged[$tool]}" "${changed[$tool]}" \
                "$(calc "${size1[$tool]} / 1000000")" "$(calc "${size2[$tool]} / 1000000")"
done
echo
ratio() {
        calc "$1 / $2"
}
echo "first snapshot speed vs borg:   $(ratio "${first[borg]}" "${first[clonefs]}")x (target >= 2)"
echo "first snapshot speed vs restic: $(ratio "${first[restic]}" "${first[clonefs]}")x (target >= 4)"
echo "unchanged re-run:               ${unchanged[clonefs]} s (target <= 0.2)"
echo "store after both vs borg repo:  $(ratio "${size2[clonefs]}" "${size2[borg]}")x (target <= 1)"
echo "store after both vs restic:     $(ratio "${size2[clonefs]}" "${size2[restic]}")x"
