#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A restored point equals its source: every node type, permission bit,
# owner, nanosecond time, xattr, ACL, hardlink group, hole, and names and
# paths as awkward as Linux allows.  rsync -naHAXc must find nothing.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_root
command -v rsync >/dev/null || skip "rsync is not installed"
command -v setfacl >/dev/null || skip "acl is not installed"
command -v setfattr >/dev/null || skip "attr is not installed"

src="$workdir/src"
export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init --block-size 16K >/dev/null
mkdir "$src"
cd "$src"

# Regular files: empty, small, block-aligned, odd-sized, random.
: >empty
echo hello >small
head -c 16384 /dev/urandom >aligned
head -c 1000003 /dev/urandom >odd
# Sparse: holes at the start, the middle and the end.
truncate -s 64M sparse
printf 'middle' | dd of=sparse bs=1 seek=$((20 << 20)) conv=notrunc status=none
printf 'tail' | dd of=sparse bs=1 seek=$((40 << 20)) conv=notrunc status=none
# Directories, an empty one, permission bits of every kind.
mkdir -p dirs/empty dirs/sticky dirs/setgid
chmod 1777 dirs/sticky
chmod 2755 dirs/setgid
cp small suid && chmod 4755 suid
cp small sgid && chmod 2711 sgid
cp small nobody-may && chmod 000 nobody-may
# Numeric owners that exist nowhere.
cp small owned && chown 1234:5678 owned
ln -s small owned-link && chown -h 4321:8765 owned-link
# Symlinks: plain, dangling, to a directory, a long target.
ln -s small link
ln -s does/not/exist dangling
ln -s dirs dirlink
ln -s "$(printf 'x%.0s' $(seq 1 1000))" longlink
# Hardlinks: a group of three across directories, and a pair.
echo linked >hl1
ln hl1 dirs/hl2
ln hl1 dirs/empty/../hl3
echo pair >pair1 && ln pair1 pair2
# Special files.
mkfifo fifo
python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$src/socket"
mknod chardev c 1 3
mknod blockdev b 7 200
# Extended attributes: user, trusted, security, and ACLs.
setfattr -n user.note -v "a note" small
setfattr -n user.binary -v 0x00ff10 small
setfattr -n trusted.secret -v hidden aligned
setfattr -n security.label -v labelled odd 2>/dev/null || setfattr -n security.test -v x odd 2>/dev/null || true
setfacl -m u:1000:rw,g:2000:r small
setfacl -d -m u:1000:rwx dirs
setfattr -n user.on-dir -v yes dirs
# Names: newline, invalid UTF-8, 255 bytes, dashes and spaces.
printf 'x' >"$(printf 'new\nline')"
printf 'x' >"$(printf 'bad\xff\xfeutf8')"
printf 'x' >"$(printf 'n%.0s' $(seq 1 255))"
printf 'x' >" -leading dash and spaces "
# A path of about 4 KiB: 20 directories of 199 bytes.
deep=.
for i in $(seq 1 20); do
        d=$(printf "%02d%0197d" "$i" 0)
        mkdir "$deep/$d"
        deep="$deep/$d"
done
echo deep >"$deep/file-at-the-bottom-of-a-4KiB-path"
# Nanosecond times, and times before 1970 and after 2038.
touch -h -d '2001-02-03 04:05:06.123456789' link
touch -d '1965-01-01 00:00:00.5' small
touch -d '2100-01-01 12:00:00.000000001' aligned
touch -d '2011-11-11 11:11:11.111111111' dirs/empty dirs
cd /
sleep 1.1   # see timeline-cli.sh: racily clean files are read again

longest=$(find "$src" -depth | awk '{ print length($0) }' | sort -n | tail -n 1)
[ "$longest" -ge 4000 ] || fail "the deep path is only $longest bytes"
pass "the source holds a path of $longest bytes"

expect_ok "snapshot the awkward tree" "$CLONECTL" snapshot awkward --from "$src"
expect_ok "restore it" "$CLONECTL" restore awkward@latest "$workdir/restored"
rsync -naHAXc --numeric-ids --itemize-changes "$src/" "$workdir/restored/" >"$workdir/rsync" 2>&1 ||
        { cat "$workdir/rsync"; fail "rsync failed"; }
[ ! -s "$workdir/rsync" ] || { cat -A "$workdir/rsync" >&2; fail "rsync found differences"; }
pass "rsync -naHAXc finds no difference"

expect_eq "mtime of the root" "$(stat -c %y "$workdir/restored")" "$(stat -c %y "$src")"
expect_eq "mode of the root" "$(stat -c %a "$workdir/restored")" "$(stat -c %a "$src")"
expect_eq "the ACL" "$(getfacl -cp "$workdir/restored/small")" "$(getfacl -cp "$src/small")"
expect_eq "the default ACL" "$(getfacl -cpd "$workdir/restored/dirs")" "$(getfacl -cpd "$src/dirs")"
expect_eq "the symlink's own owner" "$(stat -c %u:%g "$workdir/restored/owned-link")" "4321:8765"
expect_eq "a hardlink group of three" "$(stat -c %h "$workdir/restored/hl1")" 3
expect_eq "hardlinks share an inode" "$(stat -c %i "$workdir/restored/dirs/hl2")" "$(stat -c %i "$workdir/restored/hl1")"
expect_eq "device numbers" "$(stat -c %t:%T "$workdir/restored/blockdev")" "7:c8"
allocated=$(du -k "$workdir/restored/sparse" | cut -f1)
[ "$allocated" -lt 1024 ] || fail "the sparse file takes $allocated KiB restored"
pass "the sparse file stays sparse ($allocated KiB allocated of 64 MiB)"
cmp "$src/sparse" "$workdir/restored/sparse" || fail "sparse content differs"
pass "and reads the same"

# A second point reuses everything; restoring it is exact too.
expect_ok "snapshot again" "$CLONECTL" snapshot awkward --from "$src" --json
expect_eq "nothing was read the second time" "$(json_get "$workdir/out" files_read)" 0
expect_ok "restore the second point" "$CLONECTL" restore awkward@latest "$workdir/restored2"
rsync -naHAXc --numeric-ids --itemize-changes "$src/" "$workdir/restored2/" >"$workdir/rsync2" 2>&1
[ ! -s "$workdir/rsync2" ] || { cat -A "$workdir/rsync2" >&2; fail "rsync found differences in the second point"; }
pass "the incremental point restores exactly too"
expect_ok "verify --data" "$CLONECTL" verify --data
