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
make_awkward_tree "$src"
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
