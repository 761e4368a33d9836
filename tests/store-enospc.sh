#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# A full disk gives one clear error and a consistent store that still holds
# every committed chunk.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_root

small="$workdir/small"
mkdir "$small"
mount -t tmpfs -o size=4m tmpfs "$small" || skip "cannot mount a tmpfs"
on_exit "umount '$small'"

store="$small/store"
expect_ok "init on a small filesystem" "$CLONECTL" --store "$store" init --block-size 64K
expect_error "filling the disk fails cleanly" "No space left on device" \
        sh -c "'$CS_WRITER' put '$store' 5 1000 4 random >'$workdir/ids'"
committed=$(wc -l <"$workdir/ids")
[ "$committed" -gt 0 ] || fail "nothing was committed before the disk filled"
pass "$committed chunks were committed before the disk filled"
expect_ok "verify passes on the full disk" "$CLONECTL" --store "$store" verify --data
expect_ok "every committed chunk reads" sh -c "'$CS_WRITER' check '$store' <'$workdir/ids'"

dd if=/dev/zero of="$small/fill" bs=64k 2>/dev/null || true
expect_ok "verify still passes with the disk full to the last byte" "$CLONECTL" --store "$store" verify
expect_error "init on a full disk fails cleanly" "cannot create store .*No space left" \
        "$CLONECTL" --store "$small/another" init
