#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/clone.sh BUILD_DIR [WORK_DIR]: PostgreSQL on a clonefs clone, on
# fuse-overlayfs over the same lower directory, and natively, side by side
# in one run, plus fio on a clone, on fuse-overlayfs and on native disk.
#
#   create     clonectl clone create, median of 20
#   start+20   pg_ctl start plus pgbench's first 20 transactions
#   tps        pgbench -c 4 -j 2 -T DURATION
#   fio 8k     8 KiB random writes with fsync=1 (IOPS)
#   fio seq    1 MiB sequential writes (MB/s)
#              fio runs natively, in the clone and in fuse-overlayfs (its
#              files land in the upper directory: a plain FUSE
#              passthrough, what FUSE itself costs on this machine)
#   stored     what the clone and fuse-overlayfs's upper layer hold
#              after the pgbench runs
#   RSS        the clonefs daemon's peak resident memory
#
# The data: pgbench -i -s SCALE in a fresh cluster, stopped cleanly, then
# copied for the native run (cp -a), snapshotted for clonefs, and used as
# the lower directory of fuse-overlayfs.  Needs root, PostgreSQL 15,
# fuse-overlayfs and fio.  Environment: SCALE (100), DURATION (60),
# FIO_SECONDS (20).  Without WORK_DIR it works in a temporary directory
# under $BENCH_TMPDIR (/var/tmp) and removes it at exit; a WORK_DIR given
# is kept, for a look at the logs.
set -euo pipefail

builddir=$(cd "${1:?usage: clone.sh BUILD_DIR [WORK_DIR]}" && pwd)
work=${2:-}
remove_work=0
if [ -z "$work" ]; then
        work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/clonefs-bench-clone.XXXXXX")
        remove_work=1
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
scale=${SCALE:-100}
duration=${DURATION:-60}
fio_seconds=${FIO_SECONDS:-20}
pgbin=/usr/lib/postgresql/15/bin
export CLONEFS_STORE=$work/store

die() {
        echo "clone.sh: $*" >&2
        exit 1
}

calc() {
        awk "BEGIN { printf \"%.2f\", $1 }"
}

now() {
        date +%s.%N
}

[ "$(id -u)" = 0 ] || die "run as root"
for tool in "$pgbin/postgres" fuse-overlayfs fio; do
        command -v "$tool" >/dev/null || die "needs $tool"
done

pg() {
        runuser -u postgres -- "$pgbin/$1" "${@:2}"
}

started=()
mounts=()
cleanup() {
        for data in "${started[@]}"; do
                pg pg_ctl -D "$data" -m immediate stop >/dev/null 2>&1 || true
        done
        for m in "${mounts[@]}"; do
                fusermount3 -u -z "$m" 2>/dev/null || true
        done
        [ "$remove_work" = 0 ] || rm -rf "$work"
}
trap cleanup EXIT

chmod 755 "$work"
mkdir -p "$work/sock" "$work/logs"
chown postgres "$work/sock" "$work/logs"

# pg_start DATA: starts postgres on a Unix socket in $work/sock.
pg_start() {
        pg pg_ctl -D "$1" -l "$work/logs/$(basename "$(dirname "$1")").log" -w -t 300 \
                -o "-k $work/sock -c listen_addresses=" start >/dev/null
        started+=("$1")
}

pg_stop() {
        pg pg_ctl -D "$1" -m fast -w -t 300 stop >/dev/null
}

echo "# pgbench -i -s $scale"
mkdir -p "$work/src"
chown postgres "$work/src"
pg initdb -D "$work/src/data" -A trust >/dev/null
pg_start "$work/src/data"
pg pgbench -h "$work/sock" -i -q -s "$scale" postgres >/dev/null 2>&1
pg_stop "$work/src/data"
size=$(du -sm "$work/src/data" | cut -f1)
echo "# data dir: $size MiB"

cp -a "$work/src" "$work/native"
"$builddir/clonectl" init >/dev/null
sleep 1.1
"$builddir/clonectl" snapshot pg --from "$work/src" >/dev/null

# Clone creation: median of 20.
for i in $(seq 1 20); do
        "$builddir/clonectl" clone create "c$i" --from pg@latest --json
done >"$work/creates"
create_ms=$(python3 -c 'import json,sys,statistics; print(statistics.median(json.loads(l)["milliseconds"] for l in open(sys.argv[1])))' "$work/creates")

mkdir -p "$work/clone" "$work/ovl" "$work/ovl-upper" "$work/ovl-work"
"$builddir/clonefs" "$CLONEFS_STORE" "$work/clone" -o clone=c1,allow_other
mounts+=("$work/clone")
fuse-overlayfs -o "lowerdir=$work/src,upperdir=$work/ovl-upper,workdir=$work/ovl-work,allow_other" "$work/ovl"
mounts+=("$work/ovl")
daemon=$(pgrep -n -f "clonefs $CLONEFS_STORE $work/clone")

declare -A start_s tps
for kind in native clone ovl; do
        data=$work/$kind/data
        sync
        echo 3 >/proc/sys/vm/drop_caches
        t0=$(now)
        pg_start "$data"
        pg pgbench -h "$work/sock" -n -c 1 -t 20 postgres >/dev/null 2>&1
        start_s[$kind]=$(calc "$(now) - $t0")
        tps[$kind]=$(pg pgbench -h "$work/sock" -c 4 -j 2 -T "$duration" postgres 2>&1 |
                sed -n 's/^tps = \([0-9.]*\).*/\1/p')
        pg_stop "$data"
        echo "# $kind: start+20 ${start_s[$kind]} s, ${tps[$kind]} TPS"
done

# What each overlay stored for the pgbench runs: the clone's local bytes
# (what `clonectl clone list` reports, as du would) against
# fuse-overlayfs's upper directory, which copies up whole files.
clone_mib=$("$builddir/clonectl" clone list --json |
        python3 -c 'import json,sys; print("%.0f" % ([c for c in json.load(sys.stdin) if c["name"] == "c1"][0]["local_bytes"] / 1048576))')
ovl_mib=$(du -sm "$work/ovl-upper" | cut -f1)

# fio_run DIR RW BS FSYNC: prints IOPS (random) or MB/s (sequential).
fio_run() {
        local json=$work/fio.json
        fio --name=bench --directory="$1" --rw="$2" --bs="$3" --size=1G --runtime="$fio_seconds" --time_based \
                --ioengine=psync --fsync="$4" --end_fsync=1 --output-format=json --output="$json" >/dev/null
        rm -f "$1"/bench "$1"/bench.*
        python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]["write"]
print("%.0f" % (j["iops"] if sys.argv[2] == "iops" else j["bw_bytes"] / 1e6))' "$json" "$5"
}
mkdir -p "$work/native/fio" "$work/clone/fio" "$work/ovl/fio"
fio_native=$(fio_run "$work/native/fio" randwrite 8k 1 iops)
fio_clone=$(fio_run "$work/clone/fio" randwrite 8k 1 iops)
fio_ovl=$(fio_run "$work/ovl/fio" randwrite 8k 1 iops)
seq_native=$(fio_run "$work/native/fio" write 1M 0 mb)
seq_clone=$(fio_run "$work/clone/fio" write 1M 0 mb)
seq_ovl=$(fio_run "$work/ovl/fio" write 1M 0 mb)
rss_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$daemon/status")

cat <<EOF

clone create (median of 20)       $create_ms ms            target < 50 ms
start + 20 transactions native    ${start_s[native]} s
                        clonefs   ${start_s[clone]} s            target <= 0.5 s
                        fuse-ovl  ${start_s[ovl]} s
pgbench -c 4 -j 2 -T $duration  native    ${tps[native]} TPS
                        clonefs   ${tps[clone]} TPS  $(calc "${tps[clone]} / ${tps[native]}")x native   target >= 0.8x
                        fuse-ovl  ${tps[ovl]} TPS  $(calc "${tps[ovl]} / ${tps[native]}")x native
                        clonefs / fuse-overlayfs  $(calc "${tps[clone]} / ${tps[ovl]}")x
stored by the pgbench runs  clonefs   $clone_mib MiB
                          fuse-ovl  $ovl_mib MiB
fio 8k randwrite fsync=1  native  $fio_native IOPS
                          clonefs $fio_clone IOPS  $(calc "$fio_clone / $fio_native")x   target >= 0.7x
                          fuse-ovl $fio_ovl IOPS  $(calc "$fio_ovl / $fio_native")x
fio 1M sequential write   native  $seq_native MB/s
                          clonefs $seq_clone MB/s  $(calc "$seq_clone / $seq_native")x   target >= 0.6x
                          fuse-ovl $seq_ovl MB/s  $(calc "$seq_ovl / $seq_native")x
clonefs daemon peak RSS   $((rss_kib / 1024)) MiB
EOF
