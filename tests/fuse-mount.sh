#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The mount: points as exact read-only directories, the timeline layout,
# live updates, permissions, damage, and gc safety for open files.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_fuse
require_root

src="$workdir/src"
mnt="$workdir/mnt"
export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init --block-size 16K >/dev/null
make_awkward_tree "$src"
sleep 1.1
first=$("$CLONECTL" snapshot awkward --from "$src" --label first) || fail "snapshot failed"

# Startup errors come before mounting, on stderr, with a non-zero exit.
mkdir -p "$mnt" "$workdir/plain"
expect_error "a missing store" "store .* does not exist" "$CLONEFS" "$workdir/nope" "$mnt"
expect_error "a directory that is not a store" "is not a clonefs store" "$CLONEFS" "$workdir/plain" "$mnt"
expect_error "a missing point" "no such point" "$CLONEFS" "$CLONEFS_STORE" "$mnt" -o point=awkward@nope
touch "$workdir/a-file"
expect_error "a mountpoint that is a file" "mountpoint .*a-file: Not a directory" \
        "$CLONEFS" "$CLONEFS_STORE" "$workdir/a-file"
for bad in -1 1x 99999999999 "" 1048577; do
        expect_error "-o prefetch_kib=$bad" "prefetch_kib=.*expected a whole number of KiB from 0 to 1048576" \
                "$CLONEFS" "$CLONEFS_STORE" "$mnt" -o "prefetch_kib=$bad"
done
mountpoint -q "$mnt" && fail "a failed start left a mount"
pass "failed starts leave no mount"

mount_clonefs "$CLONEFS_STORE" "$mnt"
point="$mnt/timelines/awkward/$first"
expect_eq "the timelines directory lists the timeline" "$(ls "$mnt/timelines")" awkward
expect_eq "latest is a symlink to the point" "$(readlink "$mnt/timelines/awkward/latest")" "$first"
expect_eq "a label is a symlink to its point" "$(readlink "$mnt/timelines/awkward/first")" "$first"

rsync -naHAXc --numeric-ids --itemize-changes "$src/" "$point/" >"$workdir/rsync" 2>&1 ||
        { cat "$workdir/rsync"; fail "rsync failed on the mount"; }
[ ! -s "$workdir/rsync" ] || { cat -A "$workdir/rsync" >&2; fail "rsync found differences between the source and the mount"; }
pass "rsync -naHAXc finds no difference between the source and the mounted point"
# Relative paths: the deepest one is 4 KiB, as long as a path may be.
( cd "$src" && find . -type f -print0 ) | while IFS= read -r -d '' f; do
        cmp -s <(cd "$src" && cat "$f") <(cd "$point" && cat "$f") || { echo "differs: $f" >&2; exit 1; }
done || fail "cmp found a difference"
pass "cmp passes for every file"
expect_eq "hardlinks share st_ino" "$(stat -c %i "$point/dirs/hl2")" "$(stat -c %i "$point/hl1")"
expect_eq "nanosecond mtimes" "$(stat -c %y "$point/link")" "$(stat -c %y "$src/link")"
expect_eq "device numbers" "$(stat -c %t:%T "$point/blockdev")" "7:c8"
expect_eq "a FIFO is a FIFO" "$(stat -c %F "$point/fifo")" "fifo"
expect_eq "xattrs" "$(getfattr --absolute-names -d -m - "$point/small" | tail -n +2 | sort)" \
        "$(getfattr --absolute-names -d -m - "$src/small" | tail -n +2 | sort)"
holes=$(python3 - "$point/sparse" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
data = os.lseek(fd, 0, os.SEEK_DATA)
hole = os.lseek(fd, data, os.SEEK_HOLE)
print(data, hole, os.lseek(fd, (40 << 20) + 100, os.SEEK_HOLE))
PY
)
expect_eq "SEEK_DATA and SEEK_HOLE see the holes" "$holes" "$((20 << 20)) $(((20 << 20) + 16384)) $(((40 << 20) + 16384))"
# st_blocks counts only blocks that are not holes (two 16 KiB blocks of
# 64 MiB), so du, and cp's and tar's test for a sparse file, see one.
expect_eq "st_blocks of a sparse file counts its two data blocks" "$(stat -c %b "$point/sparse")" 64
cp --sparse=auto "$point/sparse" "$workdir/sparse-copy" || fail "cp of the sparse file failed"
cmp "$src/sparse" "$workdir/sparse-copy" || fail "the sparse file's copy differs"
expect_eq "cp --sparse=auto out of a point keeps the file sparse (KiB allocated)" \
        "$(( $(du -k "$workdir/sparse-copy" | cut -f1) <= 64 ))" 1
rm -f "$workdir/sparse-copy"

# Nothing can be written.
expect_error "writing a file" "Read-only file system" sh -c "echo x >'$point/small'"
expect_error "creating a file" "Read-only file system" touch "$point/new"
expect_error "making a directory" "Read-only file system" mkdir "$point/newdir"
expect_error "removing a file" "Read-only file system" rm -f "$point/small"
expect_error "renaming" "Read-only file system" mv "$point/small" "$point/small2"
expect_error "chmod" "Read-only file system" chmod 600 "$point/small"
expect_error "setting an xattr" "Read-only file system" setfattr -n user.x -v y "$point/small"

# A new point appears within a second; a forgotten one disappears.
echo more >>"$src/small"
second=$("$CLONECTL" snapshot awkward --from "$src") || fail "second snapshot failed"
sleep 1.1
[ -d "$mnt/timelines/awkward/$second" ] || fail "the new point did not appear"
expect_eq "latest follows the new point" "$(readlink "$mnt/timelines/awkward/latest")" "$second"
pass "a new point appears without remounting"

# gc keeps what an open file of a forgotten point needs.
exec 3<"$point/odd"
expect_ok "forget the first point" "$CLONECTL" forget "awkward@$first"
sleep 1.1
[ ! -e "$mnt/timelines/awkward/$first" ] || fail "the forgotten point is still listed"
pass "a forgotten point disappears without remounting"
expect_ok "gc while a file of the forgotten point is open" "$CLONECTL" gc
cmp <(cat <&3) "$src/odd" || fail "the open file lost its data to gc"
exec 3<&-
pass "an open file of a forgotten point still reads after gc"

# Permissions hold for every uid (allow_other + default_permissions).
ino_before=$(stat -c %i "$mnt/timelines/awkward/$second/odd")
unmount_clonefs "$mnt"
mount_clonefs "$CLONEFS_STORE" "$mnt" -o allow_other
point="$mnt/timelines/awkward/$second"
expect_eq "inode numbers are stable across mounts" "$(stat -c %i "$point/odd")" "$ino_before"
chmod 755 "$workdir"
expect_ok "another user reads a world-readable file" runuser -u nobody -- cat "$point/aligned"
expect_error "another user cannot read a 0600 file" "Permission denied" runuser -u nobody -- cat "$point/private"
unmount_clonefs "$mnt"

# -o point= mounts one point as the root.
mount_clonefs "$CLONEFS_STORE" "$mnt" -o point=awkward@latest
rsync -naHAXc --numeric-ids --itemize-changes "$src/" "$mnt/" >"$workdir/rsync" 2>&1
[ ! -s "$workdir/rsync" ] || { cat -A "$workdir/rsync" >&2; fail "-o point: rsync found differences"; }
pass "-o point=awkward@latest mounts the point as the root, exactly"
# A second mount of the same store works beside the first.
mount_clonefs "$CLONEFS_STORE" "$workdir/mnt2"
cmp "$src/odd" "$workdir/mnt2/timelines/awkward/latest/odd" || fail "the second mount reads wrong data"
pass "a second mount of the same store works"
unmount_clonefs "$workdir/mnt2"
unmount_clonefs "$mnt"

# Without -f it daemonizes once the mount is up; umount stops it.
"$CLONEFS" "$CLONEFS_STORE" "$mnt" || fail "clonefs failed to daemonize"
on_exit "fusermount3 -u -z '$mnt'"
mountpoint -q "$mnt" || fail "the daemon's mount is not up when clonefs returns"
pass "without -f, clonefs returns once the mount is up"
cmp "$src/odd" "$mnt/timelines/awkward/latest/odd" || fail "the daemon reads wrong data"
umount "$mnt" || fail "umount failed"
pass "umount unmounts"

# A daemonized -o point= mount pins its point as the daemon, not as the
# parent that exits: forget + gc must not take its data.
third=$("$CLONECTL" snapshot awkward --from "$src") || fail "third snapshot failed"
"$CLONEFS" "$CLONEFS_STORE" "$mnt" -o "point=awkward@$third" || fail "clonefs -o point failed to daemonize"
on_exit "fusermount3 -u -z '$mnt'"
expect_ok "forget the mounted point" "$CLONECTL" forget "awkward@$third"
expect_ok "gc" "$CLONECTL" gc
cmp "$src/odd" "$mnt/odd" || fail "a daemonized point mount lost its data to gc"
pass "a daemonized point mount keeps its data through forget + gc"
umount "$mnt" || fail "umount failed"

# mount -t fuse.clonefs, as fstab would.  mount(8) runs its helpers with a
# fixed PATH, so the daemon must be where an installed one would be.
if [ ! -e /usr/sbin/clonefs ]; then
        ln -s "$CLONEFS" /usr/sbin/clonefs
        on_exit "rm -f /usr/sbin/clonefs"
fi
if mount -t fuse.clonefs "$CLONEFS_STORE" "$mnt" -o allow_other 2>"$workdir/err"; then
        on_exit "fusermount3 -u -z '$mnt'"
        cmp "$src/odd" "$mnt/timelines/awkward/latest/odd" || fail "mount -t fuse.clonefs reads wrong data"
        pass "mount -t fuse.clonefs works"
        umount "$mnt" || fail "umount of the fuse.clonefs mount failed"
else
        cat "$workdir/err" >&2
        fail "mount -t fuse.clonefs failed"
fi
echo "$CLONEFS_STORE $mnt fuse.clonefs defaults,allow_other 0 0" >"$workdir/fstab"
if mount -T "$workdir/fstab" "$mnt" 2>"$workdir/err"; then
        on_exit "fusermount3 -u -z '$mnt'"
        cmp "$src/odd" "$mnt/timelines/awkward/latest/odd" || fail "the fstab mount reads wrong data"
        pass "an fstab line mounts it"
        umount "$mnt" || fail "umount of the fstab mount failed"
else
        cat "$workdir/err" >&2
        fail "mounting from an fstab line failed"
fi

# A damaged chunk reads as EIO, names the file and the chunk, and the
# rest of the mount keeps working.
mount_clonefs "$CLONEFS_STORE" "$mnt"
pack=$(ls -S "$CLONEFS_STORE"/packs/*.pack | head -n 1)
size=$(stat -c %s "$pack")
flip_byte "$pack" $((size / 2))
flip_byte "$pack" $((size / 2 + 1))
bad=0
for f in $(cd "$src" && find . -type f -size +16k); do
        if ! cat "$mnt/timelines/awkward/latest/$f" >/dev/null 2>"$workdir/cat.err"; then
                grep -q "Input/output error" "$workdir/cat.err" || { cat "$workdir/cat.err"; fail "a damaged read failed with the wrong error"; }
                bad=$((bad + 1))
        fi
done
[ "$bad" -ge 1 ] || fail "no read hit the damaged chunk"
pass "reads of the damaged chunk fail with EIO ($bad files)"
grep -Eq "clonefs: timelines/awkward/[^ ]+: chunk [0-9a-f]{32} .* is unreadable" "$workdir/clonefs.log" ||
        { cat "$workdir/clonefs.log"; fail "the damage was not logged with the file and the chunk"; }
pass "the damage is logged with the file and the chunk"
cmp "$src/small" "$mnt/timelines/awkward/latest/small" || fail "an undamaged file does not read"
pass "the rest of the mount keeps working"
unmount_clonefs "$mnt"
