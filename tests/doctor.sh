#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# clonectl doctor: all ok on a good store; and on each thing it checks,
# broken in a mount namespace of its own (unshare -m) so the machine is
# not touched: a missing or foreign store, no /dev/fuse, /etc/fuse.conf
# with and without user_allow_other, a full file system, one that cannot
# punch holes (ramfs), a mount whose daemon died.  Each problem is an
# "error" or "warning" line with a "fix:" line; errors make the exit status
# 1 with one line on stderr.
. "$(dirname "$0")/lib.sh"

export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init >/dev/null || fail "init failed"

expect_ok "doctor passes on a good store" "$CLONECTL" doctor
for check in /dev/fuse store "free space" "sparse files" SQLite LZ4 xxHash; do
        expect_grep "doctor checks $check" "^ok +$check: " "$workdir/out"
done
expect_grep "doctor names the SQLite version" '^ok +SQLite: 3\.[0-9]+' "$workdir/out"
expect_grep "doctor sums up" '^[0-9]+ ok, [0-9]+ warnings, 0 errors$' "$workdir/out"
"$CLONECTL" --json doctor >"$workdir/json" || fail "doctor --json failed"
expect_eq "--json: no errors" "$(json_get "$workdir/json" errors)" 0
python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["checks"]; assert all({"check","status","message","fix"} <= set(x) for x in c), c' \
        "$workdir/json" || fail "--json checks lack fields"
pass "--json lists every check with check, status, message, fix"

# The store.
expect_error "a missing store is an error" "checks failed" "$CLONECTL" --store "$workdir/nope" doctor
expect_grep "it says the store does not exist" "^error +store: $workdir/nope does not exist" "$workdir/out"
expect_grep "and how to fix it" "fix: clonectl --store $workdir/nope init" "$workdir/out"
expect_grep "the file system checks still run, in the parent" "^ok +free space: .* in $workdir$" "$workdir/out"
mkdir "$workdir/empty"
expect_error "a directory that is not a store is an error" "checks failed" "$CLONECTL" --store "$workdir/empty" doctor
expect_grep "it says so" "^error +store: .* is not a clonefs store" "$workdir/out"

require_root
unshare -m true 2>/dev/null || skip "cannot make mount namespaces here"
# in_ns COMMAND: runs in a new mount namespace, as the rest of the test does.
in_ns() { unshare -m --propagation private sh -c "$1"; }

# /dev/fuse.
if in_ns "mount -t tmpfs none /dev && exec '$CLONECTL' doctor" >"$workdir/out" 2>"$workdir/err"; then
        fail "doctor passed without /dev/fuse"
fi
expect_grep "no /dev/fuse is an error" '^error +/dev/fuse: missing' "$workdir/out"
expect_grep "with the fix" 'fix: modprobe fuse' "$workdir/out"

# /etc/fuse.conf, bound over in the namespace.
if [ -f /etc/fuse.conf ]; then
        printf '# mount_max = 1000\n  user_allow_other  # on\n' >"$workdir/fuse-on.conf"
        printf '# user_allow_other\n' >"$workdir/fuse-off.conf"
        in_ns "mount --bind '$workdir/fuse-on.conf' /etc/fuse.conf && exec '$CLONECTL' doctor" >"$workdir/out" 2>&1 ||
                { cat "$workdir/out" >&2; fail "doctor failed with user_allow_other"; }
        expect_grep "user_allow_other is found" '^ok +/etc/fuse.conf: user_allow_other is set' "$workdir/out"
        in_ns "mount --bind '$workdir/fuse-off.conf' /etc/fuse.conf && exec '$CLONECTL' doctor" >"$workdir/out" 2>&1 ||
                { cat "$workdir/out" >&2; fail "a missing user_allow_other should only warn"; }
        expect_grep "a commented-out user_allow_other is a warning" '^warning +/etc/fuse.conf: no user_allow_other' "$workdir/out"
        expect_grep "with the fix" 'fix: add a line "user_allow_other"' "$workdir/out"
fi

# A full file system: a 4 MiB tmpfs, filled.
mkdir -p "$workdir/small"
if in_ns "mount -t tmpfs -o size=4M none '$workdir/small' && '$CLONECTL' --store '$workdir/small/store' init >/dev/null &&
        { dd if=/dev/zero of='$workdir/small/fill' bs=64k 2>/dev/null; true; } &&
        exec '$CLONECTL' --store '$workdir/small/store' doctor" >"$workdir/out" 2>"$workdir/err"; then
        fail "doctor passed on a full file system"
fi
expect_grep "a full file system is an error" '^error +free space: .* is full' "$workdir/out"
expect_eq "one line on stderr" "$(wc -l <"$workdir/err")" 1

# ramfs keeps holes but cannot punch them, and reports no size.
in_ns "mount -t ramfs none '$workdir/small' && '$CLONECTL' --store '$workdir/small/store' init >/dev/null &&
        exec '$CLONECTL' --store '$workdir/small/store' doctor" >"$workdir/out" 2>&1 ||
        { cat "$workdir/out" >&2; fail "doctor failed on ramfs"; }
expect_grep "ramfs: no hole punching is a warning" '^warning +punch hole: .*cannot punch holes' "$workdir/out"
expect_grep "ramfs: holes are kept" '^ok +sparse files: ' "$workdir/out"
expect_grep "ramfs: no size is not a full disk" '^ok +free space: .* reports no size limit' "$workdir/out"

# A mount whose daemon was killed.
require_fuse
"$CLONECTL" snapshot t --from "$workdir/empty" >/dev/null || fail "snapshot failed"
mount_clonefs "$CLONEFS_STORE" "$workdir/mnt"
expect_ok "doctor sees the live mount" "$CLONECTL" doctor
expect_grep "as served" "^ok +mounts: $workdir/mnt is served" "$workdir/out"
kill -KILL "$CLONEFS_PID"
wait "$CLONEFS_PID" 2>/dev/null || true
expect_error "a mount whose daemon died is an error" "checks failed" "$CLONECTL" doctor
expect_grep "it names the mount" "^error +mounts: $workdir/mnt: its daemon is gone" "$workdir/out"
expect_grep "and how to fix it" "fix: fusermount3 -u $workdir/mnt" "$workdir/out"
fusermount3 -u -z "$workdir/mnt"
