#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The container recipe of docs/OPERATIONS.md, without a container engine:
# mount namespaces made with unshare -m stand in for containers, and a
# bind mount in one stands in for a volume.
#
#   host:   VOLS (a shared mount)  VOLS/c1 = clonefs -o clone=c1
#   rslave: a namespace made with --propagation slave (docker's rslave,
#           systemd's MountFlags=slave), with VOLS/c1 bound to CTR/data
#   private: one made with --propagation private (docker's default)
#   rshared: one made with --propagation shared
#
# Checks: the bound clone shows the clone; writes through it land in the
# clone (the host's view and a clone snapshot see them); the bind stays
# in its namespace; a clone mounted on the host after the namespaces were
# made shows up in the rslave and rshared ones, also through a bind made
# before it was mounted, and not in the private one; a clone mounted
# inside the rshared namespace shows up on the host, and one mounted in
# the rslave namespace does not.
. "$(dirname "$0")/lib.sh"

require_root
require_fuse
command -v nsenter >/dev/null && command -v unshare >/dev/null || skip "no unshare/nsenter (util-linux)"
unshare -m true 2>/dev/null || skip "cannot make mount namespaces here"

export CLONEFS_STORE="$workdir/store"
mkdir -p "$workdir/src"
echo "from the point" >"$workdir/src/file"
"$CLONECTL" init >/dev/null || fail "init failed"
"$CLONECTL" snapshot app --from "$workdir/src" >/dev/null || fail "snapshot failed"
for c in c1 c2 c3 c4; do
        "$CLONECTL" clone create "$c" --from app@latest >/dev/null || fail "clone create $c failed"
done

# VOLS: a shared mount on the host, as /srv is when / is shared (systemd
# makes / shared at boot).
vols="$workdir/vols"
mkdir -p "$vols/c1" "$vols/c2" "$vols/c3" "$vols/c4" "$workdir/ctr/data" "$workdir/ctr/early"
mount --bind "$vols" "$vols" || fail "cannot bind $vols"
on_exit "umount -l '$vols'"
mount --make-shared "$vols" || fail "cannot make $vols shared"
mount_clonefs "$CLONEFS_STORE" "$vols/c1" -o clone=c1
c1_pid=$CLONEFS_PID

# The "containers": each namespace is a sleep that nsenter enters.
start_ns() { # PROPAGATION: prints the namespace's pid
        unshare -m --propagation "$1" sleep 300 >/dev/null 2>&1 &
        echo $!
}
in_ns() { # PID COMMAND...
        local pid=$1
        shift
        nsenter -t "$pid" -m -- "$@"
}
slave=$(start_ns slave)
private=$(start_ns private)
shared=$(start_ns shared)
on_exit "kill $slave $private $shared"
for _ in $(seq 1 100); do
        [ "$(readlink /proc/$slave/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] &&
                [ "$(readlink /proc/$private/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] &&
                [ "$(readlink /proc/$shared/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] && break
        sleep 0.05
done
[ "$(readlink /proc/$slave/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] || fail "unshare made no namespace"

# 1. A volume: the clone bound into the rslave namespace.
in_ns "$slave" mount --bind "$vols/c1" "$workdir/ctr/data" || fail "bind into the namespace failed"
expect_eq "the bound clone shows the clone" "$(in_ns "$slave" cat "$workdir/ctr/data/file")" "from the point"
mountpoint -q "$workdir/ctr/data" && fail "the namespace's bind leaked to the host"
pass "the bind stays inside its namespace"
in_ns "$slave" sh -c "echo 'written in the container' >'$workdir/ctr/data/new' && sync '$workdir/ctr/data/new'" ||
        fail "cannot write through the bind"
in_ns "$slave" sh -c "echo 'changed in the container' >'$workdir/ctr/data/file'" || fail "cannot overwrite through the bind"
expect_eq "the write is in the clone, as the host sees it" "$(cat "$vols/c1/new")" "written in the container"
point=$("$CLONECTL" clone snapshot c1) || fail "clone snapshot of the mounted clone failed"
"$CLONECTL" restore "c1@$point" "$workdir/restored" 2>/dev/null || fail "restore of the clone's snapshot failed"
expect_eq "the clone's snapshot holds the new file" "$(cat "$workdir/restored/new")" "written in the container"
expect_eq "the clone's snapshot holds the change" "$(cat "$workdir/restored/file")" "changed in the container"
"$CLONECTL" restore app@latest "$workdir/base" 2>/dev/null || fail "restore of the point failed"
expect_eq "the point the clone came from is unchanged" "$(cat "$workdir/base/file")" "from the point"

# 2. A bind made before its clone is mounted ("the volume shows an empty
# directory"): under rslave the later mount reaches it.
in_ns "$slave" mount --bind "$vols/c2" "$workdir/ctr/early" || fail "early bind failed"
in_ns "$private" true

# 3. A clone mounted on the host after the namespaces were made.
mount_clonefs "$CLONEFS_STORE" "$vols/c2" -o clone=c2
c2_pid=$CLONEFS_PID
seen() { # PID PATH: the file shows the clone
        [ "$(in_ns "$1" cat "$2/file" 2>/dev/null)" = "from the point" ]
}
wait_seen() {
        for _ in $(seq 1 40); do
                seen "$@" && return 0
                sleep 0.05
        done
        return 1
}
wait_seen "$slave" "$vols/c2" || fail "rslave: a clone mounted later on the host is not visible"
pass "rslave: a clone mounted later on the host shows up"
wait_seen "$shared" "$vols/c2" || fail "rshared: a clone mounted later on the host is not visible"
pass "rshared: a clone mounted later on the host shows up"
seen "$private" "$vols/c2" && fail "private: a clone mounted later on the host leaked in"
in_ns "$private" mountpoint -q "$vols/c2" && fail "private: the later mount propagated"
pass "private: a clone mounted later on the host does not show up"
if wait_seen "$slave" "$workdir/ctr/early"; then
        pass "rslave: the later mount also shows through a bind made before it"
else
        fail "rslave: a bind made before the mount still shows the empty directory"
fi

# 4. Mounts made inside a namespace: rshared sends them back to the host,
# rslave does not.
in_ns "$shared" "$CLONEFS" "$CLONEFS_STORE" "$vols/c3" -o clone=c3 || fail "clonefs inside the rshared namespace failed"
on_exit "nsenter -t $shared -m -- fusermount3 -u -z '$vols/c3'; fusermount3 -u -z '$vols/c3'"
for _ in $(seq 1 40); do
        [ "$(cat "$vols/c3/file" 2>/dev/null)" = "from the point" ] && break
        sleep 0.05
done
expect_eq "rshared: a clone mounted in the namespace shows on the host" "$(cat "$vols/c3/file" 2>/dev/null)" "from the point"
in_ns "$slave" "$CLONEFS" "$CLONEFS_STORE" "$vols/c4" -o clone=c4 || fail "clonefs inside the rslave namespace failed"
on_exit "nsenter -t $slave -m -- fusermount3 -u -z '$vols/c4'"
expect_eq "rslave: the clone is mounted in the namespace" "$(in_ns "$slave" cat "$vols/c4/file")" "from the point"
mountpoint -q "$vols/c4" && fail "rslave: a mount made in the namespace reached the host"
pass "rslave: a clone mounted in the namespace stays there"

# 5. Unmounting.  A namespace made while a clone was mounted holds a copy
# of that mount; under private propagation the host's unmount does not
# reach it, so the daemon serves that copy until the namespace ends.
in_ns "$shared" fusermount3 -u "$vols/c3" || fail "unmount inside the rshared namespace failed"
in_ns "$slave" fusermount3 -u "$vols/c4" || fail "unmount inside the rslave namespace failed"
in_ns "$slave" umount "$workdir/ctr/data" "$workdir/ctr/early" || fail "cannot drop the namespace's binds"
CLONEFS_PID=$c2_pid unmount_clonefs "$vols/c2"
pass "a clone mounted after the namespaces were made unmounts everywhere at once"
fusermount3 -u "$vols/c1" || fail "cannot unmount c1 on the host"
expect_eq "the private namespace still sees c1" "$(in_ns "$private" cat "$vols/c1/file")" "changed in the container"
kill -0 "$c1_pid" 2>/dev/null || fail "the daemon of c1 exited while a namespace still held its mount"
pass "the daemon serves the private namespace's copy after the host's unmount"
expect_error "clone destroy is refused while a namespace holds the clone" "in use" "$CLONECTL" clone destroy c1
kill "$private"
for _ in $(seq 1 100); do
        kill -0 "$c1_pid" 2>/dev/null || break
        sleep 0.05
done
kill -0 "$c1_pid" 2>/dev/null && fail "the daemon of c1 did not exit when the last copy of its mount went"
wait "$c1_pid" 2>/dev/null || fail "the daemon of c1 exited with an error"
pass "the daemon exits, with status 0, once the namespace holding the last copy ends"
expect_ok "clonectl clone destroy works once every view is gone" "$CLONECTL" clone destroy c1
"$CLONECTL" verify >/dev/null || fail "the store does not verify"
pass "the store verifies"
