#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Hard links in clones: a link group inherited from the point stays one
# file through snapshot, export and rewind, also when its other names sit
# in directories the clone never looked into; groups made in the clone
# never merge with the point's; every name of a group reads at once after
# a rewind.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_fuse
require_root

src="$workdir/src"
mnt="$workdir/mnt"
export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init >/dev/null
mkdir -p "$src/sub/deeper" "$src/other"
echo old >"$src/a"
echo plain >"$src/sub/plain"
setfattr -n user.z -v 1 "$src/a"
setfattr -n user.a -v 2 "$src/a"
ln "$src/a" "$src/sub/deeper/b"
# Untouched groups, numbered before and after a's by the snapshot.
for g in 1 2 3 4 5 6 7 8; do
        echo "group $g" >"$src/other/x$g"
        ln "$src/other/x$g" "$src/other/y$g"
done
sleep 1.1
"$CLONECTL" snapshot db --from "$src" >/dev/null || fail "snapshot failed"
"$CLONECTL" clone create dev --from db@latest >/dev/null || fail "clone create failed"

# same_file A B: A and B are one inode with nlink N and content C.
same_file() {
        [ "$(stat -c %i "$1")" = "$(stat -c %i "$2")" ] || fail "$1 and $2 are not one file"
        [ "$(stat -c %h "$1")" = "$3" ] || fail "$1 has nlink $(stat -c %h "$1"), not $3"
        [ "$(cat "$2")" = "$4" ] || fail "$2 reads '$(cat "$2")', not '$4'"
}

# check_tree DIR A_CONTENT: the groups of the tree in DIR.
check_tree() {
        same_file "$1/a" "$1/sub/deeper/b" 2 "$2"
        for g in 1 2 3 4 5 6 7 8; do
                same_file "$1/other/x$g" "$1/other/y$g" 2 "group $g"
                [ "$(stat -c %i "$1/other/x$g")" != "$(stat -c %i "$1/a")" ] || fail "group $g merged with a's"
        done
        same_file "$1/n1" "$1/n2" 2 "made in the clone"
        [ "$(stat -c %i "$1/n1")" != "$(stat -c %i "$1/a")" ] || fail "a new group merged with a's"
        for g in 1 2 3 4 5 6 7 8; do
                [ "$(stat -c %i "$1/n1")" != "$(stat -c %i "$1/other/x$g")" ] || fail "a new group merged with group $g"
        done
}

mount_clonefs "$CLONEFS_STORE" "$mnt" -o clone=dev
# Write through one name, never looking into sub/ or other/.
echo new >"$mnt/a"
echo "made in the clone" >"$mnt/n1"
ln "$mnt/n1" "$mnt/n2"
expect_ok "snapshot of the clone" "$CLONECTL" clone snapshot dev --label s
expect_ok "export of the clone" "$CLONECTL" clone export dev "$workdir/export"
expect_grep "export says what it wrote" "^exported clone dev: 24 files, [0-9]+ bytes into " "$workdir/err"
check_tree "$workdir/export" new
pass "export: the group keeps its names, with the data written through one of them"
"$CLONECTL" restore dev@s "$workdir/restored" >/dev/null || fail "restore of the snapshot failed"
check_tree "$workdir/restored" new
pass "the snapshot as a point: the same"

expect_error "rewind to a point that does not exist" "no point 'nope' in timeline 'db'" \
        "$CLONECTL" clone rewind dev --to db@nope
[ "$(wc -l <"$workdir/err")" = 1 ] || { cat "$workdir/err" >&2; fail "the error is not one line"; }
echo newer >"$mnt/a"
# Both names in the kernel's caches before the rewind.
[ "$(cat "$mnt/sub/deeper/b")" = newer ] || fail "the other name does not read the write"
cat "$mnt/a" "$mnt/other/x1" "$mnt/other/y1" "$mnt/n1" "$mnt/n2" >/dev/null
expect_ok "rewind to the snapshot" "$CLONECTL" clone rewind dev --to s
check_tree "$mnt" new
pass "after the rewind every name of a group reads the snapshot's data at once"

# A rename over a name the snapshot has: the kernel's dentry of that name
# now points at the moved file; a rewind makes it forget that at once.
echo moved >"$mnt/tmpfile"
mv "$mnt/tmpfile" "$mnt/sub/plain"
[ "$(cat "$mnt/sub/plain")" = moved ] || fail "the rename did not land"
expect_ok "rewind after a rename" "$CLONECTL" clone rewind dev --to s
expect_eq "the name renamed over reads the snapshot's file at once" "$(cat "$mnt/sub/plain" 2>&1)" plain

# The same without the mount, and after looking into sub/ first.
echo third >"$mnt/sub/deeper/b"
unmount_clonefs "$mnt"
expect_ok "export with the clone not mounted" "$CLONECTL" clone export dev "$workdir/export2"
check_tree "$workdir/export2" third
pass "a write through the other name, exported unmounted"

# A clone that only looked at a hard-linked file folds to the point's own
# tree: nothing changed, nothing reported, no new directory objects.
"$CLONECTL" clone create look --from db@latest >/dev/null || fail "clone create failed"
mount_clonefs "$CLONEFS_STORE" "$mnt" -o clone=look
stat "$mnt/a" >/dev/null
unmount_clonefs "$mnt"
expect_ok "snapshot of a clone that only looked" "$CLONECTL" clone snapshot look
expect_ok "diff of it against its point" "$CLONECTL" diff db@latest look@latest
expect_grep "nothing changed" "^0 added, 0 removed, 0 modified" "$workdir/out"
