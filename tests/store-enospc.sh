#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# A full disk gives one clear error and a consistent store that still holds
# every committed chunk: on tmpfs, where packs are written through the page
# cache, and on ext4, where they are written with direct I/O from a stage
# (chunkstore/stage.c), so the error comes from a segment write.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_root

# fill_disk DIR FS: a store on the small file system mounted at DIR.
fill_disk() {
        dir=$1 fs=$2
        store="$dir/store"
        expect_ok "$fs: init on a small filesystem" "$CLONECTL" --store "$store" init --block-size 64K
        expect_error "$fs: filling the disk fails cleanly" "No space left on device" \
                sh -c "'$CS_WRITER' put '$store' 5 1000 4 random >'$workdir/ids.$fs'"
        committed=$(wc -l <"$workdir/ids.$fs")
        [ "$committed" -gt 0 ] || fail "$fs: nothing was committed before the disk filled"
        pass "$fs: $committed chunks were committed before the disk filled"
        expect_ok "$fs: verify passes on the full disk" "$CLONECTL" --store "$store" verify --data
        expect_ok "$fs: every committed chunk reads" sh -c "'$CS_WRITER' check '$store' <'$workdir/ids.$fs'"
}

small="$workdir/small"
mkdir "$small"
mount -t tmpfs -o size=4m tmpfs "$small" || skip "cannot mount a tmpfs"
on_exit "umount '$small'"
fill_disk "$small" tmpfs

dd if=/dev/zero of="$small/fill" bs=64k 2>/dev/null || true
expect_ok "tmpfs: verify still passes with the disk full to the last byte" "$CLONECTL" --store "$store" verify
expect_error "tmpfs: init on a full disk fails cleanly" "cannot create store .*No space left" \
        "$CLONECTL" --store "$small/another" init

# ext4 in a loop image: the direct-I/O path.
image="$workdir/ext4.img"
ext4="$workdir/ext4"
mkdir "$ext4"
truncate -s 24M "$image"
mkfs.ext4 -q -F "$image" || fail "mkfs.ext4 failed"
mount -o loop "$image" "$ext4" || skip "cannot mount an ext4 loop image"
on_exit "umount '$ext4'"
dd if=/dev/zero of="$ext4/ballast" bs=1M count=2 2>/dev/null || fail "cannot write the ballast"
fill_disk "$ext4" ext4

# Space freed, the store takes puts again, and what it had stays.
rm -f "$ext4/ballast"
expect_ok "ext4: puts go on once space is freed" sh -c "'$CS_WRITER' put '$store' 6 8 4 text >'$workdir/ids.more'"
expect_ok "ext4: the new chunks read" sh -c "'$CS_WRITER' check '$store' <'$workdir/ids.more'"
expect_ok "ext4: and the old ones" sh -c "'$CS_WRITER' check '$store' <'$workdir/ids.ext4'"
expect_ok "ext4: verify --data passes" "$CLONECTL" --store "$store" verify --data
