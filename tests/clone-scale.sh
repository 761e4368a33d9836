#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A thousand clones of one point: all created, all listed by clonectl and
# in MNT/clones, each its own copy.  The times are printed; the targets
# (under 60 s to create, under a second to list) are checked by
# bench/clone.sh, not here.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_fuse
require_root

src="$workdir/src"
mnt="$workdir/mnt"
export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init >/dev/null
mkdir -p "$src"
seq 1 100000 >"$src/rows"
sleep 1.1
"$CLONECTL" snapshot db --from "$src" >/dev/null || fail "snapshot failed"

start=$(date +%s%N)
for i in $(seq 1 1000); do
        "$CLONECTL" clone create "dev$i" --from db@latest >/dev/null || fail "clone create dev$i failed"
done
pass "1000 clones created in $(( ($(date +%s%N) - start) / 1000000 )) ms"
expect_eq "clone list shows 1000 clones" "$("$CLONECTL" clone list | grep -c '^dev')" 1000

mount_clonefs "$CLONEFS_STORE" "$mnt"
start=$(date +%s%N)
n=$(ls "$mnt/clones" | wc -l)
pass "ls of MNT/clones took $(( ($(date +%s%N) - start) / 1000000 )) ms"
expect_eq "MNT/clones shows 1000 clones" "$n" 1000
echo changed >"$mnt/clones/dev7/rows" # O_TRUNC on a base file
cmp -s "$mnt/clones/dev8/rows" "$src/rows" || fail "dev8 sees dev7's write"
expect_eq "dev7 has its own write, truncated by O_TRUNC" "$(head -c 100 "$mnt/clones/dev7/rows")" changed
pass "each of the clones is its own copy"
expect_ok "destroy one clone while the others are mounted" "$CLONECTL" clone destroy dev999
for _ in $(seq 1 40); do
        [ -e "$mnt/clones/dev999" ] || break
        sleep 0.05
done
[ -e "$mnt/clones/dev999" ] && fail "a destroyed clone is still in MNT/clones"
expect_eq "MNT/clones shows 999 clones" "$(ls "$mnt/clones" | wc -l)" 999
unmount_clonefs "$mnt"
