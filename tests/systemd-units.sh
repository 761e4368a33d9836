#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Every shipped systemd unit passes "systemd-analyze verify" (with its
# ExecStart= pointing at this build and its Documentation= at these man
# pages), the units say what the operations guide promises, and an fstab
# line with x-systemd.requires-mounts-for= becomes a mount unit ordered
# after the store's file system.
. "$(dirname "$0")/lib.sh"

command -v systemd-analyze >/dev/null || skip "no systemd-analyze"
units="clonefs@.service clonefs-pg-receive@.service clonefs-retention.service clonefs-retention.timer"

# The units as "make install" makes them, but with this build's programs.
mkdir -p "$workdir/units" "$workdir/man/man8"
for u in $units; do
        sed -e "s|@bindir@|$top_builddir|g" -e "s|@pkglibexecdir@|$top_builddir/tools|g" \
                -e "s|@sysconfdir@|$workdir/etc|g" "$top_srcdir/tools/systemd/$u.in" >"$workdir/units/$u"
done
cp "$top_srcdir/docs/man/clonefs.8" "$top_srcdir/docs/man/clonectl.8" "$workdir/man/man8/"
[ -x "$top_builddir/tools/clonefs-retention" ] || fail "tools/clonefs-retention was not built"

verify() {
        (cd "$1" && shift && MANPATH="$workdir/man" systemd-analyze verify "$@") >"$workdir/verify" 2>&1
}
cd "$workdir/units"
if ! verify "$workdir/units" ./clonefs@srv-clonefs.service ./clonefs-pg-receive@pg.service \
        ./clonefs-retention.service ./clonefs-retention.timer; then
        cat "$workdir/verify" >&2
        fail "systemd-analyze verify rejects a unit"
fi
[ ! -s "$workdir/verify" ] || { cat "$workdir/verify" >&2; fail "systemd-analyze verify warns"; }
pass "systemd-analyze verify passes every unit, quietly"

# The check can fail: a unit with a mistake is caught.
mkdir -p "$workdir/broken"
sed 's|^ExecStart=.*|ExecStart=/nonexistent/clonectl pg receive-wal %i|' \
        "$workdir/units/clonefs-pg-receive@.service" >"$workdir/broken/clonefs-pg-receive@.service"
if verify "$workdir/broken" ./clonefs-pg-receive@pg.service; then
        fail "systemd-analyze verify accepted a unit whose program does not exist"
fi
pass "systemd-analyze verify rejects a broken unit"

# What the units promise.
expect_grep "pg-receive runs clonectl pg receive-wal for its instance" \
        "^ExecStart=$top_builddir/clonectl pg receive-wal %i$" "$workdir/units/clonefs-pg-receive@.service"
expect_grep "pg-receive restarts on failure" '^Restart=on-failure$' "$workdir/units/clonefs-pg-receive@.service"
expect_grep "but not on receive-wal's give-up status" '^RestartPreventExitStatus=3$' "$workdir/units/clonefs-pg-receive@.service"
expect_grep "the mount unit waits for the store's file system" '^RequiresMountsFor=/var/lib/clonefs %f$' \
        "$workdir/units/clonefs@.service"
expect_grep "the mount unit unmounts on stop" '^ExecStop=/bin/fusermount3 -u %f$' "$workdir/units/clonefs@.service"
# A mount made in a namespace of its own would be invisible to the host
# and to containers (docs/OPERATIONS.md, "Containers").
if grep -E '^(MountFlags|PrivateMounts|PrivateTmp|ProtectSystem|ProtectHome|ReadOnlyPaths|TemporaryFileSystem)=' \
        "$workdir/units/clonefs@.service"; then
        fail "clonefs@.service must mount in the host's mount namespace"
fi
pass "clonefs@.service mounts in the host's mount namespace"
expect_grep "the timer starts the retention service" '^OnCalendar=daily$' "$workdir/units/clonefs-retention.timer"
expect_grep "retention reads the policy file" "clonefs-retention $workdir/etc/clonefs/retention.conf$" \
        "$workdir/units/clonefs-retention.service"

# The instance names the mount point.
mp=$(systemd-escape --path /srv/clonefs)
expect_eq "the instance for /srv/clonefs" "$mp" "srv-clonefs"

# fstab: the generator turns the documented line into a mount unit that
# requires the store's file system; nofail keeps it out of the boot's way.
gen=/lib/systemd/system-generators/systemd-fstab-generator
if [ -x "$gen" ]; then
        printf '%s\n' "/var/lib/clonefs /srv/clonefs fuse.clonefs defaults,allow_other,nofail,x-systemd.requires-mounts-for=/var/lib/clonefs 0 0" \
                >"$workdir/fstab"
        mkdir -p "$workdir/gen/normal" "$workdir/gen/early" "$workdir/gen/late"
        SYSTEMD_FSTAB="$workdir/fstab" SYSTEMD_PROC_CMDLINE="" "$gen" \
                "$workdir/gen/normal" "$workdir/gen/early" "$workdir/gen/late" || fail "systemd-fstab-generator failed"
        mount_unit="$workdir/gen/normal/srv-clonefs.mount"
        [ -f "$mount_unit" ] || fail "the fstab line made no srv-clonefs.mount"
        expect_grep "the fstab mount requires the store's file system" '^RequiresMountsFor=/var/lib/clonefs$' "$mount_unit"
        expect_grep "the fstab mount is fuse.clonefs" '^Type=fuse.clonefs$' "$mount_unit"
        [ -L "$workdir/gen/normal/local-fs.target.wants/srv-clonefs.mount" ] ||
                fail "nofail: the mount should be wanted, not required, by local-fs.target"
        pass "nofail makes the mount wanted by local-fs.target"
        # Its Documentation= names systemd's pages, which need not be here.
        verify "$workdir/gen/normal" --man=no ./srv-clonefs.mount || { cat "$workdir/verify" >&2; fail "the fstab mount unit does not verify"; }
        pass "the generated mount unit verifies"
fi

# The commands of clonefs@.service, run as systemd would run them (the
# environment's defaults and %f filled in): ExecStart returns once the
# store is mounted (Type=forking), and after ExecStop's unmount the daemon
# exits with status 0; a SIGTERM instead makes it exit 1 (clonefs(8)).
[ "$(id -u)" -eq 0 ] || exit 0
require_fuse
export CLONEFS_STORE="$workdir/store"
mkdir -p "$workdir/src" "$workdir/mnt"
echo hello >"$workdir/src/file"
"$CLONECTL" init >/dev/null && "$CLONECTL" snapshot app --from "$workdir/src" >/dev/null || fail "cannot make a store"
unit_line() { # KEY: the unit's KEY= line, with its variables and %f filled in
        sed -n "s/^$1=//p" "$workdir/units/clonefs@.service" |
                sed -e "s|\${CLONEFS_STORE}|$CLONEFS_STORE|g" -e "s|\${CLONEFS_OPTIONS}|allow_other|g" -e "s|%f|$workdir/mnt|g"
}
expect_grep "the unit's defaults" '^Environment=CLONEFS_OPTIONS=allow_other$' "$workdir/units/clonefs@.service"
start=$(unit_line ExecStart)
stop=$(unit_line ExecStop)
on_exit "fusermount3 -u -z '$workdir/mnt'"
# shellcheck disable=SC2086 # the unit's command line, split as systemd does
$start || fail "ExecStart failed: $start"
mountpoint -q "$workdir/mnt" || fail "ExecStart returned before the store was mounted"
expect_eq "ExecStart has mounted the store when it returns" "$(cat "$workdir/mnt/timelines/app/latest/file")" hello
pid=
for p in /proc/[0-9]*; do
        { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q "clonefs $CLONEFS_STORE $workdir/mnt " && pid=${p#/proc/}
done
[ -n "$pid" ] || fail "no daemon serves the unit's mount"
# shellcheck disable=SC2086
$stop || fail "ExecStop failed: $stop"
for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
done
kill -0 "$pid" 2>/dev/null && fail "the daemon did not exit after ExecStop"
mountpoint -q "$workdir/mnt" && fail "ExecStop left the store mounted"
pass "ExecStop unmounts and the daemon exits"

# The exit statuses the unit relies on, seen from a foreground daemon.
"$CLONEFS" "$CLONEFS_STORE" "$workdir/mnt" -f &
pid=$!
for _ in $(seq 1 100); do mountpoint -q "$workdir/mnt" && break; sleep 0.05; done
fusermount3 -u "$workdir/mnt" || fail "cannot unmount"
status=0
wait "$pid" || status=$?
expect_eq "after an unmount the daemon exits 0" "$status" 0
"$CLONEFS" "$CLONEFS_STORE" "$workdir/mnt" -f &
pid=$!
for _ in $(seq 1 100); do mountpoint -q "$workdir/mnt" && break; sleep 0.05; done
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
expect_eq "after SIGTERM the daemon exits 1" "$status" 1
mountpoint -q "$workdir/mnt" && fail "SIGTERM left the store mounted"
pass "SIGTERM unmounts"
