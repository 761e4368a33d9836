#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# POSIX ACLs on a clone behave as on a local file system: setfacl moves the
# mode's group bits to the mask, chmod moves the mask, an ACL the mode says
# all of is not kept, and the kernel's checks grant what the ACL grants,
# to another uid through allow_other.  Every step is done on a native
# directory too, and mode and ACL must come out the same.
. "${top_srcdir:-$(dirname "$0")/..}/tests/lib.sh"
require_fuse
require_root
command -v setfacl >/dev/null || skip "setfacl not installed (apt-get install acl)"

src="$workdir/src"
mnt="$workdir/mnt"
native="$workdir/native"
export CLONEFS_STORE="$workdir/store"
"$CLONECTL" init >/dev/null
mkdir -p "$src" "$native"
setfacl -m u:nobody:r "$native" 2>/dev/null || skip "no ACLs on $native's file system"
setfacl -b "$native"
echo base >"$src/inherited"
sleep 1.1
"$CLONECTL" snapshot db --from "$src" >/dev/null || fail "snapshot failed"
"$CLONECTL" clone create dev --from db@latest >/dev/null || fail "clone create failed"
mount_clonefs "$CLONEFS_STORE" "$mnt" -o clone=dev,allow_other
chmod 755 "$workdir"
chmod 755 "$native" "$mnt"

# step DESCRIPTION COMMAND...: COMMAND with {} as the file, in the clone
# and natively; then mode and ACL must be the same in both.
step() {
        local desc=$1 clone_out native_out
        shift
        "${@//\{\}/$mnt/f}" || fail "$desc failed in the clone"
        "${@//\{\}/$native/f}" || fail "$desc failed natively"
        clone_out="$(stat -c %A "$mnt/f"; getfacl -cp "$mnt/f" 2>&1)"
        native_out="$(stat -c %A "$native/f"; getfacl -cp "$native/f" 2>&1)"
        [ "$clone_out" = "$native_out" ] ||
                fail "$desc: the clone has
$clone_out
natively
$native_out"
        pass "$desc: $(stat -c %A "$mnt/f"), as natively"
}

# nobody_reads EXPECTED: whether uid nobody can read f, in both.
nobody_reads() {
        local where
        for where in "$mnt" "$native"; do
                if runuser -u nobody -- cat "$where/f" >/dev/null 2>&1; then
                        [ "$1" = yes ] || fail "nobody can read $where/f"
                else
                        [ "$1" = no ] || fail "nobody cannot read $where/f"
                fi
        done
        pass "nobody can read f: $1, as natively"
}

echo secret >"$mnt/f"
echo secret >"$native/f"
step "chmod 600" chmod 600 {}
nobody_reads no
step "setfacl -m u:nobody:r" setfacl -m u:nobody:r {}
nobody_reads yes
step "chmod 600 moves the mask" chmod 600 {}
nobody_reads no
step "chmod 640 gives the mask back" chmod 640 {}
nobody_reads yes
step "setfacl -m m::- " setfacl -m m::- {}
nobody_reads no
step "setfacl -x u:nobody" setfacl -x u:nobody {}
step "setfacl -b" setfacl -b {}
step "an ACL the mode says all of" setfacl -m u::rw,g::r,o::r {}
getfattr -m - -d "$mnt/f" 2>/dev/null | grep -q posix_acl_access &&
        fail "an ACL equal to the mode was kept as an xattr"
pass "an ACL equal to the mode is not kept"
step "setfacl -m g:nogroup:rx" setfacl -m g:nogroup:rx {}

# setfacl -m ACL on g, run by COMMAND... (which ends in "--" or the
# like), in the clone and natively; then mode and ACL must be the same.
setfacl_by() {
        local desc=$1 acl=$2 where out=()
        shift 2
        for where in "$mnt" "$native"; do
                "$@" setfacl -m "$acl" "$where/g" || fail "$desc failed in $where"
                out+=("$(stat -c %A "$where/g"; getfacl -cp "$where/g" 2>&1)")
        done
        [ "${out[0]}" = "${out[1]}" ] || fail "$desc: the clone has
${out[0]}
natively
${out[1]}"
        pass "$desc: $(stat -c %A "$mnt/g"), as natively"
}
# set_group ON_GROUP: g becomes set-group-ID again, in group ON_GROUP.
set_group() {
        chgrp "$1" "$mnt/g" "$native/g" && chmod 2775 "$mnt/g" "$native/g" || fail "cannot reset g"
}
# S_ISGID of g in the clone: s or x.
sgid() {
        stat -c %A "$mnt/g" | cut -c7
}
# A set-group-ID file of nobody's in group root, which nobody is not in.
for where in "$mnt" "$native"; do
        { echo x >"$where/g" && chown nobody:root "$where/g" && chmod 2775 "$where/g"; } ||
                fail "cannot make $where/g"
done
setfacl_by "setfacl by root keeps S_ISGID" u:daemon:r env --
expect_eq "S_ISGID after root's setfacl" "$(sgid)" s
set_group root
setfacl_by "setfacl by the owner outside the file's group clears S_ISGID" u:daemon:rw runuser -u nobody --
expect_eq "S_ISGID after nobody's setfacl" "$(sgid)" x
set_group root
setfacl_by "setfacl by the owner with the file's group as a supplementary one keeps S_ISGID" u:bin:r \
        setpriv --reuid=nobody --regid=nogroup --groups=0 --
expect_eq "S_ISGID after setfacl by a member of the group" "$(sgid)" s
set_group daemon
setfacl_by "setfacl by root without CAP_FSETID, outside the group, clears S_ISGID" u:bin:rw \
        setpriv --bounding-set=-fsetid --
expect_eq "S_ISGID after setfacl without CAP_FSETID" "$(sgid)" x

# The ACL and mode survive a snapshot.
step "chmod 600 again" chmod 600 {}
step "setfacl -m u:nobody:r again" setfacl -m u:nobody:r {}
expect_ok "snapshot of the clone" "$CLONECTL" clone snapshot dev --label acl
"$CLONECTL" restore dev@acl "$workdir/restored" >/dev/null || fail "restore failed"
expect_eq "the mode after a snapshot" "$(stat -c %a "$workdir/restored/f")" "$(stat -c %a "$native/f")"
expect_eq "the ACL after a snapshot" "$(getfacl -cp "$workdir/restored/f")" "$(getfacl -cp "$native/f")"
