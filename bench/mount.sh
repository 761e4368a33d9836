#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/mount.sh BUILD_DIR WORK_DIR: reading a point through clonefs,
# "restic mount", "borg mount" and natively, side by side in one run.
#
# WORK_DIR is what "KEEP=1 bench/ingest.sh" left: the PostgreSQL data
# directory and the clonefs store, restic and borg repositories holding it.
#
#   cold file   the largest table file, read sequentially after every mount
#               is remounted and the page cache dropped
#   cold tree   the whole data directory, "tar -c | wc -c", same conditions
#   warm file   the largest file read again (clonefs keeps the page cache)
#   stat        stat() of every file of a 100,000-file tree, first and
#               second pass (clonefs and native only)
#   RSS         the clonefs daemon's peak resident memory
#
# Needs root (drop_caches, FUSE).  Environment: FILES (100000).
set -euo pipefail

builddir=$(cd "${1:?usage: mount.sh BUILD_DIR WORK_DIR}" && pwd)
work=$(cd "${2:?usage: mount.sh BUILD_DIR WORK_DIR}" && pwd)
clonectl=$builddir/clonectl
clonefs=$builddir/clonefs
n_files=${FILES:-100000}

die() {
        echo "mount.sh: $*" >&2
        exit 1
}

calc() {
        awk "BEGIN { printf \"%.4f\", $1 }"
}

[ "$(id -u)" = 0 ] || die "run as root"
[ -d "$work/pgdata" ] && [ -d "$work/clonefs" ] || die "$work is not a KEEP=1 bench/ingest.sh work directory"

export CLONEFS_STORE=$work/clonefs
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$work/restic RESTIC_CACHE_DIR=$work/restic-cache
export BORG_REPO=$work/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR=$work/borg-home

m=$work/mnt
mkdir -p "$m/clonefs" "$m/restic" "$m/borg" "$m/files"
pids=()

cleanup() {
        for d in "$m"/*; do
                mountpoint -q "$d" && fusermount3 -u -z "$d" 2>/dev/null
        done
        for pid in "${pids[@]}"; do
                kill "$pid" 2>/dev/null || true
        done
        rm -rf "$work/files-src" "$m"
}
trap cleanup EXIT

wait_mount() {
        for _ in $(seq 1 600); do
                mountpoint -q "$1" && return 0
                sleep 0.1
        done
        die "$1 did not mount"
}

clonefs_pid=
mount_all() {
        "$clonefs" "$CLONEFS_STORE" "$m/clonefs" -f 2>"$work/clonefs.log" &
        clonefs_pid=$!
        pids+=("$clonefs_pid")
        restic mount "$m/restic" >/dev/null 2>&1 &
        pids+=($!)
        borg mount ::c "$m/borg"
        wait_mount "$m/clonefs"
        wait_mount "$m/restic"
        wait_mount "$m/borg"
        for _ in $(seq 1 100); do
                [ -e "$m/restic/snapshots/latest" ] && break
                sleep 0.1
        done
}

umount_all() {
        fusermount3 -u "$m/clonefs"
        fusermount3 -u "$m/restic"
        borg umount "$m/borg"
        wait
        pids=()
}

drop_caches() {
        sync
        echo 3 >/proc/sys/vm/drop_caches
}

# read_mbs FILE: MB/s of a sequential read.
read_mbs() {
        local start end bytes
        bytes=$(stat -c %s "$1")
        start=$(date +%s.%N)
        dd if="$1" of=/dev/null bs=1M status=none
        end=$(date +%s.%N)
        calc "$bytes / ($end - $start) / 1000000"
}

# tree_mbs DIR: MB/s of tar -c over a tree.
tree_mbs() {
        local start end bytes
        start=$(date +%s.%N)
        bytes=$(tar -cf - -C "$1" . | wc -c)
        end=$(date +%s.%N)
        calc "$bytes / ($end - $start) / 1000000"
}

rel=$(cd "$work/pgdata" && find . -type f -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2-)
rel=${rel#./}
declare -A root=(
        [native]=$work/pgdata
        [clonefs]=$m/clonefs/timelines/pg/latest
        [restic]=$m/restic/snapshots/latest$work/pgdata
        [borg]=$m/borg${work#/}/pgdata
)
root[borg]=$m/borg/${work#/}/pgdata
tools="native clonefs restic borg"
echo "largest file: $rel ($(stat -c %s "$work/pgdata/$rel") bytes)"

declare -A cold_file cold_tree warm_file
mount_all
for tool in $tools; do
        drop_caches
        cold_file[$tool]=$(read_mbs "${root[$tool]}/$rel")
        warm_file[$tool]=$(read_mbs "${root[$tool]}/$rel")
        echo "$tool: cold file ${cold_file[$tool]} MB/s, warm ${warm_file[$tool]} MB/s"
done
umount_all
mount_all
for tool in $tools; do
        drop_caches
        cold_tree[$tool]=$(tree_mbs "${root[$tool]}")
        echo "$tool: cold tree ${cold_tree[$tool]} MB/s"
done
rss=$(awk '/VmHWM/ { print $2 }' "/proc/$clonefs_pid/status")
umount_all

echo "== $n_files files for stat"
src=$work/files-src
mkdir -p "$src"
python3 - "$src" "$n_files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 100))
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%03d" % (i % 100)), "w") as f:
        f.write("file %d\n" % i)
PY
sleep 1.1
"$clonectl" snapshot files --from "$src" >/dev/null
"$clonefs" "$CLONEFS_STORE" "$m/files" -f -o point=files@latest 2>>"$work/clonefs.log" &
files_pid=$!
pids+=("$files_pid")
wait_mount "$m/files"

stat_rate() {
        python3 - "$1" <<'PY'
import os, sys, time
root = sys.argv[1]
paths = []
for d in sorted(os.listdir(root)):
    for f in sorted(os.listdir(os.path.join(root, d))):
        paths.append(os.path.join(root, d, f))
start = time.monotonic()
for p in paths:
    os.lstat(p)
print("%.0f" % (len(paths) / (time.monotonic() - start)))
PY
}
native_stat=$(stat_rate "$src")
clonefs_stat1=$(stat_rate "$m/files")
clonefs_stat2=$(stat_rate "$m/files")
files_rss=$(awk '/VmHWM/ { print $2 }' "/proc/$files_pid/status")

echo
printf '%-8s %14s %14s %14s\n' tool "cold file MB/s" "cold tree MB/s" "warm file MB/s"
for tool in $tools; do
        printf '%-8s %14.0f %14.0f %14.0f\n' "$tool" "${cold_file[$tool]}" "${cold_tree[$tool]}" "${warm_file[$tool]}"
done
echo
echo "stat/s: native $native_stat, clonefs first pass $clonefs_stat1, second pass $clonefs_stat2"
echo "clonefs peak RSS: $rss KiB (pg data), $files_rss KiB (after stat of $n_files files)"
echo
echo "cold read vs borg mount:   $(calc "${cold_file[clonefs]} / ${cold_file[borg]}")x (target >= 2)"
echo "cold read vs restic mount: $(calc "${cold_file[clonefs]} / ${cold_file[restic]}")x (target >= 5)"
echo "cold tree vs borg mount:   $(calc "${cold_tree[clonefs]} / ${cold_tree[borg]}")x"
echo "cold tree vs restic mount: $(calc "${cold_tree[clonefs]} / ${cold_tree[restic]}")x"
echo "warm re-read vs native:    $(calc "${warm_file[clonefs]} / ${warm_file[native]}")x (target >= 0.8)"
echo "stat rate vs native:       $(calc "$clonefs_stat1 / $native_stat")x first pass, $(calc "$clonefs_stat2 / $native_stat")x second (target >= 0.5)"
