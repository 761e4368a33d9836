#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/points.sh BUILD_DIR: mounting a store with many points.
#
# Builds a timeline of POINTS points (1000) of a directory of FILES_PER
# files (1000) in 100 subdirectories, one file changed between points, so
# the points hold POINTS x FILES_PER file entries (a million); then times
#
#   mount      clonefs start until the mount point answers (daemonized)
#   list       ls of timelines/T (every point and label)
#   first use  find over one point (its tree loaded on demand)
#   RSS        the daemon's resident memory after mounting, and after the
#              find: memory grows with what is used, not with the store
#
# Needs root (FUSE).  Environment: POINTS (1000), FILES_PER (1000),
# BENCH_TMPDIR (/var/tmp).
set -euo pipefail

builddir=$(cd "${1:?usage: points.sh BUILD_DIR}" && pwd)
points=${POINTS:-1000}
files_per=${FILES_PER:-1000}
work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/clonefs-bench-points.XXXXXX")
export CLONEFS_STORE=$work/store
mnt=$work/mnt

cleanup() {
        mountpoint -q "$mnt" && fusermount3 -u -z "$mnt"
        rm -rf "$work"
}
trap cleanup EXIT

ms_since() {
        echo $(( ($(date +%s%N) - $1) / 1000000 ))
}

[ "$(id -u)" = 0 ] || { echo "points.sh: run as root" >&2; exit 1; }
mkdir -p "$work/src" "$mnt"
for d in $(seq 1 100); do
        mkdir "$work/src/d$d"
        for f in $(seq 1 $((files_per / 100))); do
                echo "$d/$f" >"$work/src/d$d/f$f"
        done
done
"$builddir/clonectl" init >/dev/null
start=$(date +%s%N)
for p in $(seq 1 "$points"); do
        echo "$p" >"$work/src/d1/f1"
        touch -d "@$p" "$work/src/d1/f1" # a new mtime each time, without waiting a second
        "$builddir/clonectl" snapshot db --from "$work/src" >/dev/null
done
build_ms=$(ms_since "$start")
n=$("$builddir/clonectl" points db | grep -c '^20')

start=$(date +%s%N)
"$builddir/clonefs" "$CLONEFS_STORE" "$mnt"
stat "$mnt/timelines/db" >/dev/null
mount_ms=$(ms_since "$start")
pid=$(pgrep -n -f "clonefs $CLONEFS_STORE $mnt")
rss_mounted=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")

start=$(date +%s%N)
listed=$(ls "$mnt/timelines/db" | wc -l)
list_ms=$(ms_since "$start")

start=$(date +%s%N)
found=$(find "$mnt/timelines/db/latest/" | wc -l)
find_ms=$(ms_since "$start")
rss_used=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")

cat <<EOF
store: $n points of $files_per files each ($((n * files_per)) file entries), built in $build_ms ms
mount (to the first stat)           $mount_ms ms     target < 1000 ms
ls timelines/db ($listed entries)      $list_ms ms
find over one point ($found entries)  $find_ms ms
daemon RSS after mount              $((rss_mounted / 1024)) MiB
daemon RSS after the find           $((rss_used / 1024)) MiB
EOF
