#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Writable clones through the kernel: copy-on-write per page, isolation,
# POSIX semantics, durability after fsync across kill -9, a seeded
# randomized comparison with a native directory, and the clone commands.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_fuse
require_root

src="$workdir/src"
mnt="$workdir/mnt"
export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init --block-size 16K >/dev/null
make_awkward_tree "$src"
head -c $((64 << 20)) /dev/urandom >"$src/table"
sleep 1.1
"$CLONECTL" snapshot db --from "$src" >/dev/null || fail "snapshot failed"

expect_ok "create a clone" "$CLONECTL" clone create dev --from db@latest --json
pass "clone create took $(json_get "$workdir/out" milliseconds) ms"
for i in $(seq 1 9); do "$CLONECTL" clone create "c$i" --from db@latest --json; done >"$workdir/times"
median=$(python3 -c 'import json,sys,statistics; print(statistics.median(json.loads(l)["milliseconds"] for l in open(sys.argv[1])))' "$workdir/times")
pass "median clone create time over 9 clones: $median ms"
expect_ok "a second clone" "$CLONECTL" clone create other --from db@latest
expect_error "a clone name with a slash" "invalid clone name" "$CLONECTL" clone create 'a/b' --from db@latest
expect_error "a clone name that is taken" "already exists" "$CLONECTL" clone create dev --from db@latest
expect_error "a clone of a missing point" "no point 'nope'" "$CLONECTL" clone create x --from db@nope

mount_clonefs "$CLONEFS_STORE" "$mnt"
c="$mnt/clones/dev"
o="$mnt/clones/other"
p="$mnt/timelines/db/latest"
rsync -naHAXc --numeric-ids --itemize-changes "$src/" "$c/" >"$workdir/rsync" 2>&1
[ ! -s "$workdir/rsync" ] || { cat -A "$workdir/rsync" >&2; fail "a new clone differs from its point"; }
pass "a new clone equals its point (rsync -naHAXc)"

# st_blocks counts what is not a hole, in the base and in the delta file,
# so du and cp --sparse=auto see a clone's sparse file as sparse.
expect_eq "a base file's st_blocks is its point's" "$(stat -c %b "$c/sparse")" "$(stat -c %b "$p/sparse")"
truncate -s 64M "$c/new-sparse"
printf 'data' | dd of="$c/new-sparse" bs=1 seek=$((30 << 20)) conv=notrunc status=none
blocks=$(stat -c %b "$c/new-sparse")
[ "$blocks" -ge 1 ] && [ "$blocks" -le 128 ] || fail "a sparse file made in a clone has st_blocks $blocks"
pass "a sparse file made in a clone has st_blocks $blocks"
cp --sparse=auto "$c/new-sparse" "$workdir/sparse-copy" || fail "cp of the clone's sparse file failed"
cmp "$c/new-sparse" "$workdir/sparse-copy" || fail "the copy of the clone's sparse file differs"
expect_eq "cp --sparse=auto out of a clone keeps the file sparse" \
        "$(( $(du -k "$workdir/sparse-copy" | cut -f1) <= 64 ))" 1
rm -f "$c/new-sparse" "$workdir/sparse-copy"
expect_eq "a dense file counts all its blocks" "$(stat -c %b "$c/table")" $(( (64 << 20) / 512 ))

# Copy-on-write per page: an aligned 8 KiB into 64 MiB stores those 8 KiB.
printf '%8192s' x | dd of="$c/table" bs=8192 seek=100 conv=notrunc status=none
expect_ok "clone list --json" "$CLONECTL" clone list --json
local_bytes=$(python3 -c 'import json,sys; print([c for c in json.load(open(sys.argv[1])) if c["name"]=="dev"][0]["local_bytes"])' "$workdir/out")
[ "$local_bytes" -le $((8192 + 4096)) ] || fail "an 8 KiB write stored $local_bytes bytes"
pass "an 8 KiB write into 64 MiB stores $local_bytes bytes"
du_bytes=$(du -sB1 "$CLONEFS_STORE/clones/dev/data" | cut -f1)
[ "$du_bytes" -le $((local_bytes + 8192)) ] && [ "$du_bytes" -ge $((local_bytes - 8192)) ] ||
        fail "clone list says $local_bytes bytes, du $du_bytes"
pass "clone list and du agree ($du_bytes bytes)"
cmp -s "$c/table" "$src/table" && fail "the write did not land"
cmp "$p/table" "$src/table" || fail "the point changed"
cmp "$o/table" "$src/table" || fail "another clone sees the write"
pass "the point never changes and another clone never sees the write"

# POSIX behaviour, checked against the kernel's own rules on tmpfs-like
# semantics: each command's outcome is what Linux gives on a native fs.
# py CODE ARGS...: runs Python; an OSError is one line of stderr (strerror).
py() {
        python3 -c 'import ctypes, os, sys
def renameat2(a, b, flags):
    l = ctypes.CDLL(None, use_errno=True)
    if l.renameat2(-100, a.encode(), -100, b.encode(), flags):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
try:
    exec(sys.argv[1])
except OSError as e:
    sys.exit(os.strerror(e.errno))' "$@"
}
expect_error "O_CREAT|O_EXCL on an existing file" "File exists" \
        py 'os.open(sys.argv[2], os.O_CREAT | os.O_EXCL | os.O_WRONLY)' "$c/small"
echo truncated >"$c/small"
expect_eq "O_TRUNC" "$(cat "$c/small")" truncated
echo appended >>"$c/small"
expect_eq "O_APPEND" "$(cat "$c/small")" "truncated
appended"
mkdir "$c/newdir" && touch "$c/newdir/f"
expect_error "rmdir of a non-empty directory" "Directory not empty" rmdir "$c/newdir"
expect_error "a 256-byte name" "File name too long" touch "$c/$(printf 'n%.0s' $(seq 1 256))"
touch "$c/$(printf 'n%.0s' $(seq 1 255))" || fail "a 255-byte name was refused"
pass "a 255-byte name works"
echo a >"$c/ra" && echo b >"$c/rb"
expect_error "RENAME_NOREPLACE onto an existing name" "File exists" \
        py 'renameat2(sys.argv[2], sys.argv[3], 1)' "$c/ra" "$c/rb"
py 'renameat2(sys.argv[2], sys.argv[3], 2)' "$c/ra" "$c/rb" || fail "RENAME_EXCHANGE failed"
expect_eq "RENAME_EXCHANGE swaps" "$(cat "$c/ra")$(cat "$c/rb")" "ba"
mkdir -p "$c/d1/inner" "$c/d2"
mv -T "$c/d1" "$c/d2" || fail "renaming a directory over an empty one failed"
[ -d "$c/d2/inner" ] && [ ! -e "$c/d1" ] || fail "rename over a directory went wrong"
pass "rename over an empty directory"
expect_error "rename across clones" "Invalid cross-device link" py 'os.rename(sys.argv[2], sys.argv[3])' "$c/ra" "$o/ra"
expect_error "rename from a point into a clone" "Invalid cross-device link" \
        py 'os.rename(sys.argv[2], sys.argv[3])' "$p/small" "$c/from-point"
ln "$c/ra" "$c/ra-link"
expect_eq "a hardlink counts" "$(stat -c %h "$c/ra")" 2
expect_eq "hardlinks share st_ino" "$(stat -c %i "$c/ra-link")" "$(stat -c %i "$c/ra")"
ln -s ra "$c/ra-sym"
expect_eq "a symlink" "$(readlink "$c/ra-sym")" ra
mkfifo "$c/fifo2"
expect_eq "mknod FIFO" "$(stat -c %F "$c/fifo2")" fifo
mknod "$c/dev2" c 1 7
expect_eq "device numbers kept" "$(stat -c %t:%T "$c/dev2")" "1:7"
chown 1234:5678 "$c/ra" && chmod 4750 "$c/ra"
expect_eq "chmod and chown" "$(stat -c %a:%u:%g "$c/ra")" "4750:1234:5678"
touch -d '2100-03-04 05:06:07.123456789' "$c/ra"
expect_eq "nanosecond, post-2038 times" "$(stat -c %y "$c/ra")" "2100-03-04 05:06:07.123456789 +0000"
before=$(stat -c %Z "$c/rb"); sleep 1.1; chmod 600 "$c/rb"
[ "$(stat -c %Z "$c/rb")" -gt "$before" ] || fail "chmod did not update ctime"
pass "ctime moves on a metadata change"
truncate -s 100000 "$c/rb" && truncate -s 3 "$c/rb"
expect_eq "truncate" "$(stat -c %s "$c/rb")" 3
head -c 100000 /dev/urandom >"$c/punch"
fallocate -p -o 20000 -l 30000 "$c/punch"
expect_eq "punch hole reads zeros" "$(dd if="$c/punch" bs=1 skip=20000 count=30000 status=none | tr -d '\0' | wc -c)" 0
expect_eq "punch hole keeps the size" "$(stat -c %s "$c/punch")" 100000
setfattr -n user.k -v v "$c/rb"
expect_eq "xattrs" "$(getfattr --only-values -n user.k "$c/rb")" v
setfacl -m u:4242:r "$c/rb"
getfacl -cp "$c/rb" | grep -q "user:4242:r--" || fail "an ACL did not stick"
pass "POSIX ACLs are kept"
df "$c" >/dev/null || fail "statfs failed"
pass "statfs"
python3 - "$c/ra" <<'PY' || fail "an unlinked open file is not usable"
import os, sys
fd = os.open(sys.argv[1] + "-tmp", os.O_CREAT | os.O_RDWR, 0o600)
os.unlink(sys.argv[1] + "-tmp")
assert os.fstat(fd).st_nlink == 0, "nlink is not 0"
os.pwrite(fd, b"alive", 0)
assert os.pread(fd, 5, 0) == b"alive"
os.close(fd)
PY
pass "an unlinked open file has nlink 0 and stays usable"
python3 - "$c/mm" <<'PY' || fail "shared writable mmap failed"
import mmap, os, sys
with open(sys.argv[1], "wb") as f:
    f.write(b"\0" * 65536)
with open(sys.argv[1], "r+b") as f:
    m = mmap.mmap(f.fileno(), 65536)
    m[100:105] = b"mmap!"
    m.flush()
    m.close()
with open(sys.argv[1], "rb") as f:
    assert f.read()[100:105] == b"mmap!"
PY
pass "shared writable mmap"
# Large writes, 1 MiB at a time: a new file, and an overwrite of the
# base at an offset that splits pages and blocks.
head -c $((8 << 20)) /dev/urandom >"$workdir/big"
dd if="$workdir/big" of="$c/big" bs=1M status=none || fail "a 1 MiB-block write failed"
cmp "$workdir/big" "$c/big" || fail "a file written in 1 MiB blocks reads back different"
cp "$c/table" "$workdir/table-expected"
dd if="$workdir/big" of="$workdir/table-expected" bs=1M seek=12345 oflag=seek_bytes conv=notrunc status=none
dd if="$workdir/big" of="$c/table" bs=1M seek=12345 oflag=seek_bytes conv=notrunc status=none ||
        fail "a large overwrite failed"
cmp "$workdir/table-expected" "$c/table" || fail "a large unaligned overwrite of the base reads back different"
echo 3 >/proc/sys/vm/drop_caches
cmp "$workdir/big" "$c/big" && cmp "$workdir/table-expected" "$c/table" ||
        fail "large writes read back different once out of the page cache"
pass "1 MiB writes read back exactly, in a new file and over the base"
flock "$c/rb" true || fail "flock failed"
python3 -c 'import fcntl,sys; f=open(sys.argv[1],"r+"); fcntl.lockf(f, fcntl.LOCK_EX); fcntl.lockf(f, fcntl.LOCK_UN)' "$c/rb" ||
        fail "POSIX locks failed"
pass "flock and POSIX locks"
chmod 755 "$workdir" "$mnt" 2>/dev/null || true
expect_error "another uid cannot write into a 0755 root directory" "Permission denied" \
        runuser -u nobody -- touch "$c/newdir/nobody"

# Removing entries while listing a directory skips none of them.
mkdir "$c/many"
python3 - "$c/many" <<'PY' || fail "a listing skipped entries while they were removed"
import os, sys
d = sys.argv[1]
for i in range(3000):
    open(os.path.join(d, "f%04d" % i), "w").close()
seen = 0
with os.scandir(d) as it:
    for e in it:
        os.unlink(e.path)
        seen += 1
assert seen == 3000, "saw %d of 3000" % seen
assert not os.listdir(d)
PY
pass "a listing sees every entry while they are removed"

# Durability: after fsync returns, kill -9 of the daemon keeps the data.
python3 - "$c/durable" <<'PY' || fail "fsync failed"
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, b"acknowledged" * 1000)
os.fsync(fd)
os.close(fd)
PY
printf 'XYZ' | dd of="$c/table" bs=1 seek=5000000 conv=notrunc,fdatasync status=none
kill -9 "$CLONEFS_PID"
wait "$CLONEFS_PID" 2>/dev/null || true
fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
mount_clonefs "$CLONEFS_STORE" "$mnt"
expect_eq "fsynced data survives kill -9" "$(head -c 24 "$c/durable")" "acknowledgedacknowledged"
expect_eq "fdatasynced data survives kill -9" "$(dd if="$c/table" bs=1 skip=5000000 count=3 status=none)" XYZ

# A seeded randomized comparison with a native directory.
mkdir "$workdir/native" && cp -a "$src/." "$workdir/native/"
rm -f "$workdir/native/fifo" "$workdir/native/socket" "$workdir/native/chardev" "$workdir/native/blockdev"
rm -f "$o/fifo" "$o/socket" "$o/chardev" "$o/blockdev"
rsync -naHAXc --numeric-ids "$workdir/native/" "$o/" | grep -q . && fail "the other clone does not start equal"
expect_ok "1500 random operations: clone == native after every step" \
        python3 "$top_srcdir/tests/clone-random.py" "$o" "$workdir/native" "${CLONE_RANDOM_SEED:-20261122}" 1500
cat "$workdir/out"

# A mounted clone is snapshotted by its mount, while a writer runs: the
# point holds a prefix of what the writer wrote, as a crash would leave
# it.  (Not always whole lines: the kernel splits a write that crosses
# into a page it has not cached into two requests, and a snapshot may
# fall between them, as a power cut may on any file system.)
python3 - "$c/journal" <<'PY' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
end = time.monotonic() + 4
i = 0
while time.monotonic() < end:
    os.write(fd, b"line %08d %s\n" % (i, b"x" * 100))
    i += 1
os.close(fd)
PY
writer=$!
on_exit "kill $writer"
# Until the writer is well under way (a loaded machine starts python late).
for _ in $(seq 1 100); do
        [ "$(stat -c %s "$c/journal" 2>/dev/null || echo 0)" -gt 20000 ] && break
        sleep 0.1
done
expect_ok "snapshot a mounted clone while it is written" "$CLONECTL" clone snapshot dev --label live
expect_ok "export a mounted clone" "$CLONECTL" clone export dev "$workdir/live-export"
wait "$writer" || fail "the writer failed while its clone was snapshotted"
expect_ok "restore the live snapshot" "$CLONECTL" restore dev@live "$workdir/live"
python3 - "$workdir/live/journal" "$workdir/live-export/journal" <<'PY' || fail "a live snapshot holds a torn write"
import sys
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    n = data.count(b"\n")
    written = b"".join(b"line %08d %s\n" % (i, b"x" * 100) for i in range(n + 1))
    assert data == written[:len(data)], "%s is not a prefix of what was written" % path
    assert n > 100, "%s: only %d lines" % (path, n)
PY
pass "snapshots of a clone under writes hold a prefix of what was written (crash-consistent)"

# One mount at a time (rewind, refresh and destroy of a mounted clone:
# tests/clone-mounted.sh).
mkdir -p "$workdir/m2"
expect_error "a second mount of a clone" "in use by another mount" "$CLONEFS" "$CLONEFS_STORE" "$workdir/m2" -o clone=dev
unmount_clonefs "$mnt"
expect_eq "the clone's state.db-wal is empty once the mount closed it" \
        "$(stat -c %s "$CLONEFS_STORE/clones/dev/state.db-wal")" 0

expect_ok "clone snapshot" "$CLONECTL" clone snapshot dev --label first
expect_ok "rewind to the snapshot taken while mounted, and back" "$CLONECTL" clone rewind dev --to live
expect_ok "and rewind to the last snapshot again" "$CLONECTL" clone rewind dev --to first
expect_ok "the clone's timeline" "$CLONECTL" points dev --json
files=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[-1]["files"])' "$workdir/out")
[ "$files" -gt 30 ] || fail "the clone's point records $files files"
pass "the clone's point records its files ($files)"
expect_ok "export" "$CLONECTL" clone export dev "$workdir/exported"
expect_eq "the export has the clone's data" "$(cat "$workdir/exported/ra")" b
expect_ok "clone --from a clone" "$CLONECTL" clone create dev2 --from dev
mount_clonefs "$CLONEFS_STORE" "$mnt" -o clone=dev
echo scribble >"$mnt/small"
rm "$mnt/ra"
unmount_clonefs "$mnt"
expect_ok "rewind to the last snapshot" "$CLONECTL" clone rewind dev
mount_clonefs "$CLONEFS_STORE" "$mnt" -o clone=dev
expect_eq "rewind restores the file" "$(cat "$mnt/ra")" b
[ "$(cat "$mnt/small")" = "truncated
appended" ] || fail "rewind kept a scribble"
pass "rewind restores the snapshot's state"
unmount_clonefs "$mnt"
echo newer >"$src/newer"
"$CLONECTL" snapshot db --from "$src" >/dev/null
expect_ok "refresh from the newest point" "$CLONECTL" clone refresh dev
mount_clonefs "$CLONEFS_STORE" "$mnt" -o clone=dev
expect_eq "refresh brings the newer source data" "$(cat "$mnt/newer")" newer
cmp "$mnt/table" "$src/table" || fail "refresh did not drop the clone's own writes"
pass "refresh drops the clone's writes"
unmount_clonefs "$mnt"
expect_ok "destroy" "$CLONECTL" clone destroy dev2
[ ! -e "$CLONEFS_STORE/clones/dev2" ] || fail "destroy left files"
expect_ok "gc with clones" "$CLONECTL" gc
expect_ok "verify --data with clones" "$CLONECTL" verify --data
