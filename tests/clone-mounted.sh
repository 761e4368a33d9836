#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Rewind, refresh and destroy of a clone that a mount has open: done by
# the mount through its control socket, refused while files of the clone
# are open unless --force, and seen at once by every reader (the kernel's
# entries, attributes and pages are invalidated, not left to time out).
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_fuse
require_root

# last_point KEY: KEY of the newest point in "points --json" on stdin.
last_point() {
        python3 -c 'import json,sys; print(json.load(sys.stdin)[-1][sys.argv[1]])' "$1"
}

# clone_base NAME: what "clone list" shows as the clone's FROM.
clone_base() {
        "$CLONECTL" clone list --json |
                python3 -c 'import json,sys; print([c["base"] for c in json.load(sys.stdin) if c["name"] == sys.argv[1]][0])' "$1"
}

src="$workdir/src"
mnt="$workdir/mnt"
one="$workdir/one"
export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init >/dev/null
mkdir -p "$src/dir"
echo base >"$src/f"
echo kept >"$src/dir/k"
sleep 1.1
"$CLONECTL" snapshot db --from "$src" >/dev/null || fail "snapshot failed"
"$CLONECTL" clone create a --from db@latest >/dev/null || fail "clone create failed"
"$CLONECTL" clone create b --from db@latest >/dev/null || fail "clone create failed"

mount_clonefs "$CLONEFS_STORE" "$mnt"
c="$mnt/clones/a"
echo "changed in the clone" >"$c/f"
echo new >"$c/dir/new"
mkdir "$c/made"
stat "$c/f" "$c/dir/new" "$c/made" >/dev/null # the kernel caches them now

expect_ok "rewind a clone that the mount has open" "$CLONECTL" clone rewind a
expect_eq "its file reads as the point at once" "$(cat "$c/f")" base
expect_eq "its size is the point's at once (no attribute timeout)" "$(stat -c %s "$c/f")" 5
[ -e "$c/dir/new" ] || [ -e "$c/made" ] && fail "names made in the clone survived the rewind"
pass "names made in the clone are gone at once (no entry timeout)"
expect_eq "untouched files are still there" "$(cat "$c/dir/k")" kept

exec 3<"$c/f"
expect_error "rewind with a file open" "files of it are open in a mount .*--force" "$CLONECTL" clone rewind a
expect_error "refresh with a file open" "files of it are open in a mount" "$CLONECTL" clone refresh a
expect_error "destroy with a file open" "files of it are open in a mount" "$CLONECTL" clone destroy a
echo "after the refusals" >"$c/f"
expect_eq "a refused rewind changed nothing" "$(cat "$c/f")" "after the refusals"
expect_ok "rewind --force with a file open" "$CLONECTL" clone rewind a --force
expect_eq "the forced rewind took effect" "$(cat "$c/f")" base
cat <&3 >/dev/null 2>&1 && fail "a handle from before the forced rewind still reads"
pass "a handle from before the forced rewind gets an error, not stale data"
exec 3<&-

# Snapshot, change, rewind to the snapshot; refresh to a newer point.
echo "snapshotted" >"$c/f"
expect_ok "snapshot the mounted clone" "$CLONECTL" clone snapshot a
echo "after the snapshot" >"$c/f"
expect_ok "rewind to the snapshot" "$CLONECTL" clone rewind a
expect_eq "rewind goes back to the last snapshot" "$(cat "$c/f")" snapshotted
echo "newer" >"$src/f"
sleep 1.1
"$CLONECTL" snapshot db --from "$src" >/dev/null || fail "second snapshot failed"
expect_ok "refresh the mounted clone" "$CLONECTL" clone refresh a
expect_eq "refresh brings the newest point" "$(cat "$c/f")" newer
expect_eq "the other clone is untouched" "$(cat "$mnt/clones/b/f")" base

# A snapshot of a mounted clone is folded by the mount, and its point
# still says what it added to the store: the mount's puts, not clonectl's.
head -c 500000 /dev/urandom >"$c/random"
expect_ok "snapshot new data in the mounted clone" "$CLONECTL" clone snapshot a
added=$("$CLONECTL" points a --json | last_point added_bytes)
[ "$added" -ge 500000 ] || fail "the mounted snapshot added $added bytes to the store, expected 500000 or more"
pass "a snapshot taken through the mount counts the bytes it added"
expect_ok "snapshot it again, unchanged" "$CLONECTL" clone snapshot a
added=$("$CLONECTL" points a --json | last_point added_bytes)
[ "$added" -lt 100000 ] || fail "an unchanged mounted clone's snapshot added $added bytes"
pass "an unchanged mounted clone's snapshot adds almost nothing"

expect_ok "destroy the mounted clone" "$CLONECTL" clone destroy a
[ -e "$c" ] && fail "clones/a is still there after destroy"
pass "a destroyed clone is gone from the mount at once"
"$CLONECTL" clone create c --from db@latest >/dev/null
echo "old c" >"$mnt/clones/c/f"
expect_ok "destroy clone c while mounted" "$CLONECTL" clone destroy c
expect_ok "a new clone may take its name" "$CLONECTL" clone create c --from db@latest
expect_eq "the new clone is a fresh copy" "$(cat "$mnt/clones/c/f")" newer
expect_ok "and be destroyed while mounted too" "$CLONECTL" clone destroy c
unmount_clonefs "$mnt"

# The same for a mount of one clone as its root (-o clone=NAME).
mount_clonefs "$CLONEFS_STORE" "$one" -o clone=b
echo "changed" >"$one/f"
touch "$one/extra"
expect_ok "rewind a clone mounted as the root" "$CLONECTL" clone rewind b
expect_eq "the root's file reads as the point at once" "$(cat "$one/f")" base
[ -e "$one/extra" ] && fail "a name made in the root clone survived the rewind"
pass "a name made in the root clone is gone at once"
expect_error "destroy of a clone mounted as the root" "in use" "$CLONECTL" clone destroy b
unmount_clonefs "$one"

# FROM names what the clone's content derives from, and a plain rewind
# after a refresh does not undo the refresh: the refresh is recorded as
# the clone's latest snapshot.
"$CLONECTL" clone create dev --from db@latest >/dev/null || fail "clone create failed"
old=$("$CLONECTL" points db --json | last_point name)
mount_clonefs "$CLONEFS_STORE" "$one" -o clone=dev
echo work >"$one/work"
before=$("$CLONECTL" clone snapshot dev) || fail "clone snapshot failed"
echo v2 >"$src/f"
sleep 1.1
"$CLONECTL" snapshot db --from "$src" >/dev/null || fail "third snapshot failed"
new=$("$CLONECTL" points db --json | last_point name)
expect_ok "refresh a mounted clone that has a snapshot" "$CLONECTL" clone refresh dev
expect_eq "clone list names the refreshed base" "$(clone_base dev)" "db@$new"
echo "after the refresh" >"$one/later"
expect_ok "rewind after the refresh" "$CLONECTL" clone rewind dev
expect_eq "a rewind after a refresh keeps the refreshed data" "$(cat "$one/f")" v2
[ -e "$one/work" ] && fail "a rewind after a refresh brought back a file the refresh dropped"
[ -e "$one/later" ] && fail "a rewind after a refresh kept a file made since"
pass "a rewind after a refresh goes back to the refreshed state"
expect_eq "clone list still names the refreshed base" "$(clone_base dev)" "db@$new"
expect_ok "rewind to the snapshot from before the refresh" "$CLONECTL" clone rewind dev --to "$before"
expect_eq "the snapshot's data is back" "$(cat "$one/f") $(cat "$one/work")" "newer work"
expect_eq "clone list names the base of that snapshot" "$(clone_base dev)" "db@$old"
expect_ok "refresh once more" "$CLONECTL" clone refresh dev
expect_eq "refresh follows the origin's timeline" "$(clone_base dev)" "db@$new"
unmount_clonefs "$one"
expect_ok "rewind the unmounted clone to its old snapshot" "$CLONECTL" clone rewind dev --to "dev@$before"
expect_eq "clone list names that snapshot's base, unmounted too" "$(clone_base dev)" "db@$old"
expect_ok "rewind the unmounted clone" "$CLONECTL" clone rewind dev
expect_eq "a plain rewind goes to the refresh, its latest snapshot" "$(clone_base dev)" "db@$new"
expect_ok "rewind the clone to a point of another timeline" "$CLONECTL" clone rewind dev --to "db@$old"
expect_eq "clone list names that point" "$(clone_base dev)" "db@$old"
expect_ok "and rewind it without --to" "$CLONECTL" clone rewind dev
expect_eq "a plain rewind stays at the point rewound to" "$(clone_base dev)" "db@$old"
expect_ok "export the clone" "$CLONECTL" clone export dev "$workdir/exported"
expect_eq "it holds that point's data" "$(cat "$workdir/exported/f")" newer
[ -e "$workdir/exported/work" ] && fail "a plain rewind went back to a snapshot from before the rewind --to"
pass "a plain rewind does not undo a rewind to another timeline's point"
expect_ok "verify after the rewinds" "$CLONECTL" verify
