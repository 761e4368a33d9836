#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A clone whose store's disk fills up: writers get ENOSPC, the mount stays
# up, what was fsynced before stays, freeing space lets writes go on, and
# after a remount the clone holds exactly what the writes that succeeded
# said it would, with a store that verify passes.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_fuse
require_root

small="$workdir/small"
mnt="$workdir/mnt"
src="$workdir/src"
mkdir "$small"
mount -t tmpfs -o size=40m tmpfs "$small" || skip "cannot mount a tmpfs"
on_exit "umount -l '$small'"
export CLONEFS_STORE="$small/store"

"$CLONECTL" init --block-size 16K >/dev/null
mkdir -p "$src/dir"
head -c $((4 << 20)) /dev/urandom >"$src/base"
echo small >"$src/dir/small"
sleep 1.1
"$CLONECTL" snapshot db --from "$src" >/dev/null || fail "snapshot failed"
"$CLONECTL" clone create dev --from db@latest >/dev/null || fail "clone create failed"

mount_clonefs "$CLONEFS_STORE" "$mnt"
c="$mnt/clones/dev"

# fsynced before the disk fills: must survive everything below.
head -c $((1 << 20)) /dev/urandom >"$workdir/kept"
dd if="$workdir/kept" of="$c/kept" bs=64k conv=fsync status=none || fail "writing kept failed"

# Fill the disk with 1 MiB writes of known bytes.  Each write that returned
# a count is in the file: its size and bytes are exactly those.
python3 - "$c/fill" <<'PY' >"$workdir/out" 2>"$workdir/err" || { cat "$workdir/err" >&2; fail "filling the disk failed"; }
import errno, hashlib, os, sys
data = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range((64 << 20) // 32))
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
done, error = 0, None
while done < len(data):
    try:
        done += os.write(fd, data[done:done + (1 << 20)])
    except OSError as e:
        error = e
        break
assert error is not None and error.errno == errno.ENOSPC, "no ENOSPC after %d bytes: %r" % (done, error)
assert done > 0, "nothing could be written"
os.close(fd)
st = os.stat(sys.argv[1])
assert st.st_size == done, "size %d, but %d bytes were written" % (st.st_size, done)
with open(sys.argv[1], "rb") as f:
    assert f.read() == data[:done], "the file does not read back as what was written"
print(done)
PY
kill -0 "$CLONEFS_PID" || fail "the daemon died when the disk filled"
pass "filling the disk through the clone fails with ENOSPC after $(cat "$workdir/out") bytes, which read back exactly"
cmp "$c/kept" "$workdir/kept" || fail "an fsynced file changed when the disk filled"
cmp "$c/base" "$src/base" || fail "the base file changed when the disk filled"
pass "the mount stays up, and what was there reads back unchanged"

# Copy-on-write into the base file while the disk is full: a write either
# lands or fails with ENOSPC; the file reads back as what landed.
cp "$src/base" "$workdir/expect"
if python3 - "$c/base" "$workdir/expect" <<'PY' 2>"$workdir/err"; then
import errno, os, sys
data = os.urandom(8192)
fd = os.open(sys.argv[1], os.O_WRONLY)
try:
    os.pwrite(fd, data, 65536 * 3)
    os.fsync(fd)
except OSError as e:
    if e.errno != errno.ENOSPC:
        raise
    sys.exit(3)
with open(sys.argv[2], "r+b") as f:
    f.seek(65536 * 3)
    f.write(data)
PY
        pass "a copy-on-write into the base file landed on the full disk"
else
        status=$?
        [ "$status" = 3 ] || { cat "$workdir/err" >&2; fail "a copy-on-write on a full disk failed with something else"; }
        pass "a copy-on-write into the base file on the full disk failed with ENOSPC"
fi
cmp "$c/base" "$workdir/expect" || fail "the base file does not read as what landed"
pass "the base file reads back as what landed"

expect_ok "a new name on the full disk either works or fails cleanly" \
        sh -c "mkdir '$c/newdir' 2>&1 | grep -q 'No space left' || [ -d '$c/newdir' ]"

expect_error "a snapshot of the clone on the full disk fails cleanly" "No space left on device" \
        "$CLONECTL" clone snapshot dev
[ "$(wc -l <"$workdir/err")" = 1 ] || { cat "$workdir/err" >&2; fail "the error is not one line"; }
pass "in one line: $(cat "$workdir/err")"
expect_ok "verify passes after the failed snapshot" "$CLONECTL" verify
cmp "$c/kept" "$workdir/kept" || fail "kept changed with the failed snapshot"

rm -f "$c/fill" || fail "removing the filler failed"
head -c $((2 << 20)) /dev/urandom >"$workdir/after"
expect_ok "once space is free, writes go on" \
        dd if="$workdir/after" of="$c/after" bs=1M conv=fsync status=none
cmp "$c/after" "$workdir/after" || fail "the write after freeing space reads back wrong"

unmount_clonefs "$mnt"
expect_ok "verify passes after the disk filled" "$CLONECTL" verify --data
mount_clonefs "$CLONEFS_STORE" "$mnt" -o clone=dev
cmp "$mnt/kept" "$workdir/kept" || fail "kept differs after a remount"
cmp "$mnt/after" "$workdir/after" || fail "after differs after a remount"
cmp "$mnt/base" "$workdir/expect" || fail "base differs after a remount"
[ ! -e "$mnt/fill" ] || fail "the removed filler came back"
pass "after a remount the clone holds what the writes that succeeded said"
expect_ok "a snapshot of the clone works once space is free" "$CLONECTL" clone snapshot dev
