#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/blocksize.sh [BUILD_DIR]: what the block size costs on a real
# PostgreSQL data directory.
#
# Creates a PostgreSQL 15 cluster in a temporary directory (socket only, no
# TCP), loads it with "pgbench -i -s SCALE", stops it and copies the data
# directory (copy 1: the first point), starts it again, runs
# "pgbench -T PGBENCH_SECONDS -c 2", stops it and copies it again (copy 2:
# the next point).  Then, for each block size, it creates a store with
# "clonectl init --block-size B" and ingests copy 1, then copy 2's base/
# (the relation files), then all of copy 2, with "bench-chunkstore ingest",
# and prints per block size:
#
#   copy 1 stored     compressed bytes of the first point (stored_bytes)
#   ingest MB/s       put speed of copy 1 (page cache warm, THREADS threads),
#                     median of REPEAT ingests into fresh stores
#   copy 2 added      stored bytes the second point added: all of it, and
#                     base/ alone; "changed" is the share of base/ bytes
#                     that were in blocks the store did not have
#   index             the catalog (SQLite database and its WAL) after both
#
# Needs root (PostgreSQL runs as "postgres" through runuser) or to be run
# as the postgres user.  Builds nothing: run "make bench" first.
# Environment: SCALE (default 50), PGBENCH_SECONDS (default 60),
# BLOCK_SIZES (default "8K 16K 32K 64K 128K"), THREADS (default 2),
# REPEAT (ingests of copy 1 per block size for its speed; default 3),
# PGBIN (default /usr/lib/postgresql/15/bin), PGPORT_BENCH (default 54329,
# only names the socket), BENCH_TMPDIR (default /var/tmp; needs about
# 3.5 x the data directory, ~5 GB at scale 50).
set -eu

builddir=${1:-.}
bench=$builddir/bench/bench-chunkstore
clonectl=$builddir/clonectl
scale=${SCALE:-50}
pgbench_seconds=${PGBENCH_SECONDS:-60}
block_sizes=${BLOCK_SIZES:-8K 16K 32K 64K 128K}
threads=${THREADS:-2}
repeat=${REPEAT:-3}
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
port=${PGPORT_BENCH:-54329}

die() {
        echo "blocksize.sh: $*" >&2
        exit 1
}

[ -x "$bench" ] || die "$bench not found: run 'make bench' in $builddir first"
[ -x "$clonectl" ] || die "$clonectl not found: run 'make bench' in $builddir first"
[ -x "$pgbin/initdb" ] || die "no PostgreSQL in $pgbin (apt-get install postgresql-15, or set PGBIN)"
if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "there is no postgres user to run PostgreSQL as"
fi

# Runs a PostgreSQL program as the postgres user.
as_pg() {
        if [ "$(id -u)" = 0 ]; then
                runuser -u postgres -- "$@"
        else
                "$@"
        fi
}

work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/clonefs-blocksize.XXXXXX")
chmod 755 "$work"
pgdata=$work/pgdata
sock=$work/run # the socket and PostgreSQL's logs
mkdir -m 700 "$pgdata"
mkdir -m 755 "$sock"
if [ "$(id -u)" = 0 ]; then
        chown postgres: "$pgdata" "$sock"
fi

pg_start() {
        as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$sock/postgres.log" -w \
                -o "-k $sock -p $port -c listen_addresses=''" start >/dev/null
}

# Stops our cluster, and only ours: pg_ctl signals the postmaster whose PID
# is in our data directory's postmaster.pid; if that fails, we send the
# immediate-shutdown signal to that PID ourselves.
pg_stop() {
        [ -f "$pgdata/postmaster.pid" ] || return 0
        if ! as_pg "$pgbin/pg_ctl" -D "$pgdata" -m fast -w -t 120 stop >/dev/null; then
                pid=$(head -1 "$pgdata/postmaster.pid" 2>/dev/null || true)
                case $pid in
                '' | *[!0-9]*) ;;
                *) kill -QUIT "$pid" 2>/dev/null || true ;;
                esac
                return 1
        fi
}

cleanup() {
        pg_stop || true
        rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# kv LINE KEY: the value of KEY=... in a key=value line.
kv() {
        printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}
mib() {
        awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'
}
percent() {
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", b ? 100 * a / b : 0 }'
}

echo "# block size study: pgbench scale $scale, $pgbench_seconds s of pgbench -c 2," \
        "block sizes $block_sizes, $threads ingest threads"
echo "# machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
        "kernel $(uname -r), $("$pgbin/postgres" --version)"

as_pg "$pgbin/initdb" -D "$pgdata" -A trust -U postgres -E UTF8 --locale=C >"$sock/initdb.log" ||
        die "initdb failed: $(tail -3 "$sock/initdb.log")"
pg_start || die "PostgreSQL did not start: $(tail -3 "$sock/postgres.log")"
as_pg "$pgbin/pgbench" -h "$sock" -p "$port" -i -s "$scale" -q postgres >"$sock/pgbench-init.log" 2>&1 ||
        die "pgbench -i failed: $(tail -3 "$sock/pgbench-init.log")"
pg_stop || die "PostgreSQL did not stop"
cp -a "$pgdata" "$work/copy1"

pg_start || die "PostgreSQL did not start: $(tail -3 "$sock/postgres.log")"
as_pg "$pgbin/pgbench" -h "$sock" -p "$port" -T "$pgbench_seconds" -c 2 postgres >"$sock/pgbench.log" 2>&1 ||
        die "pgbench failed: $(tail -3 "$sock/pgbench.log")"
pg_stop || die "PostgreSQL did not stop"
cp -a "$pgdata" "$work/copy2"
# Write the copies out now, so that their writeback does not run during
# (and slow down) whichever block size is measured first.
sync

tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$sock/pgbench.log" | tail -1)
transactions=$(sed -n 's/^number of transactions actually processed: //p' "$sock/pgbench.log")
echo "# pgbench: $transactions transactions, $tps tps"
for c in copy1 copy2; do
        echo "# $c: $(du -sb "$work/$c" | cut -f1) bytes, base/ $(du -sb "$work/$c/base" | cut -f1)," \
                "pg_wal/ $(du -sb "$work/$c/pg_wal" | cut -f1)"
done

# Pass 1: every block size, both copies, for the space numbers (and the
# first speed sample).
results=$work/results
: >"$results"
for b in $block_sizes; do
        store=$work/store
        rm -rf "$store"
        "$clonectl" --store "$store" init --block-size "$b" >/dev/null
        out1=$("$bench" ingest "$store" "$work/copy1" --threads "$threads")
        out2=$("$bench" ingest "$store" "$work/copy2/base" --threads "$threads")
        out3=$("$bench" ingest "$store" "$work/copy2" --threads "$threads")
        printf '%s\n' "$out1" | sed "s|^|# $b copy1: |"
        printf '%s\n' "$out2" | sed "s|^|# $b copy2/base: |"
        printf '%s\n' "$out3" | sed "s|^|# $b copy2: |"

        i1=$(printf '%s\n' "$out1" | grep 'op=ingest')
        s1=$(printf '%s\n' "$out1" | grep 'op=stats')
        i2=$(printf '%s\n' "$out2" | grep 'op=ingest')
        s2=$(printf '%s\n' "$out2" | grep 'op=stats')
        i3=$(printf '%s\n' "$out3" | grep 'op=ingest')
        s3=$(printf '%s\n' "$out3" | grep 'op=stats')
        kv "$i1" mb_s >"$work/speed.$b"
        db_bytes=$(stat -c %s "$store/catalog.db")
        # block copy1_stored copy1_unique copy2_added copy2_base_added base_new_bytes
        # base_bytes copy2_new_bytes copy2_bytes catalog_bytes db_bytes chunks
        echo "$b $(kv "$s1" added_stored_bytes) $(kv "$s1" added_unique_bytes)" \
                "$(($(kv "$s2" added_stored_bytes) + $(kv "$s3" added_stored_bytes)))" \
                "$(kv "$s2" added_stored_bytes) $(kv "$i2" new_bytes) $(kv "$i2" bytes)" \
                "$(($(kv "$i2" new_bytes) + $(kv "$i3" new_bytes))) $(kv "$i3" bytes)" \
                "$(kv "$s3" catalog_bytes) $db_bytes $(kv "$s3" chunks)" >>"$results"
        rm -rf "$store"
done

# Passes 2..REPEAT: copy 1 into a fresh store again, block sizes
# interleaved so that a slow phase of the machine does not hit one size.
for _ in $(seq 2 "$repeat"); do
        for b in $block_sizes; do
                rm -rf "$store"
                "$clonectl" --store "$store" init --block-size "$b" >/dev/null
                out1=$("$bench" ingest "$store" "$work/copy1" --threads "$threads")
                printf '%s\n' "$out1" | grep 'op=ingest' | sed "s|^|# $b copy1 again: |"
                kv "$(printf '%s\n' "$out1" | grep 'op=ingest')" mb_s >>"$work/speed.$b"
                rm -rf "$store"
        done
done

echo
echo "Block size study: pgbench -i -s $scale (copy 1), then $pgbench_seconds s of pgbench -c 2" \
        "at $tps tps (copy 2); MiB = 2^20 bytes, stored = lz4-compressed chunk bytes;" \
        "ingest speed: median of $repeat"
printf '%-6s %11s %9s %11s | %12s %12s %14s %14s | %10s %10s %9s\n' \
        block "copy1 MiB" ratio "ingest MB/s" "copy2 +MiB" "base/ +MiB" "base/ changed" "copy2 changed" \
        "index MiB" "(db MiB)" chunks
while read -r b st un add addb bnew bbytes cnew cbytes cat db chunks; do
        mbs=$(sort -g "$work/speed.$b" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
        printf '%-6s %11s %9s %11s | %12s %12s %14s %14s | %10s %10s %9s\n' \
                "$b" "$(mib "$st")" "$(awk -v u="$un" -v s="$st" 'BEGIN { printf "%.2fx", s ? u / s : 0 }')" \
                "$mbs" "$(mib "$add")" "$(mib "$addb")" "$(percent "$bnew" "$bbytes")" \
                "$(percent "$cnew" "$cbytes")" "$(mib "$cat")" "$(mib "$db")" "$chunks"
done <"$results"
