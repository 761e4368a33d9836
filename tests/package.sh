#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The Debian package, end to end, as root on Debian 12 (run by .ci/run, not
# by make check: it installs a package on the machine):
#   1. build it with "dpkg-buildpackage -us -uc -b" in a copy of the tree;
#   2. lintian: no errors, no warnings;
#   3. "apt-get install ./clonefs_*.deb": programs, man pages, units, the
#      retention policy; every installed unit passes systemd-analyze verify;
#   4. "mount -t fuse.clonefs" of a store and of a clone works at once, run
#      by the installed daemon, and writes land in the clone;
#   5. purge the package again, also on failure.
# Usage: tests/package.sh [--keep-build DIR]
. "$(dirname "$0")/lib.sh"

require_root
require_fuse
for tool in dpkg-buildpackage lintian apt-get; do
        command -v "$tool" >/dev/null || fail "$tool is missing (tools/dev.sh deps installs it)"
done
if dpkg-query -W -f '${Status}' clonefs 2>/dev/null | grep -q 'install ok'; then
        echo "tests/package.sh: error: a clonefs package is already installed; this test would remove it" >&2
        exit 99
fi

# 1. Build in a copy of the source tree: only what git tracks or would
# track, so no build directory or generated autotools file comes along.
src="$workdir/clonefs-src"
mkdir -p "$src"
if git -C "$top_srcdir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$top_srcdir" && git ls-files -z --cached --others --exclude-standard |
                while IFS= read -r -d '' f; do
                        case $f in _build*) continue ;; esac
                        [ -e "$f" ] && printf '%s\0' "$f"
                done |
                tar --null -T - -cf -) | tar -C "$src" -xf -
else
        tar -C "$top_srcdir" --exclude='./_build*' --exclude=./.git -cf - . | tar -C "$src" -xf -
fi
[ -f "$src/debian/control" ] || fail "the copy of the tree has no debian/control"
start=$(date +%s)
if ! (cd "$src" && DEB_BUILD_OPTIONS="parallel=$(nproc) nocheck" dpkg-buildpackage -us -uc -b) \
        >"$workdir/build.log" 2>&1; then
        tail -n 60 "$workdir/build.log" >&2
        fail "dpkg-buildpackage failed"
fi
deb=$(ls "$workdir"/clonefs_*.deb 2>/dev/null | head -n 1)
changes=$(ls "$workdir"/clonefs_*.changes 2>/dev/null | head -n 1)
[ -n "$deb" ] && [ -n "$changes" ] || fail "dpkg-buildpackage made no .deb or .changes"
pass "dpkg-buildpackage -us -uc -b builds $(basename "$deb") in $(($(date +%s) - start)) s"

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$workdir/contents"
for f in /usr/bin/clonefs /usr/bin/clonectl /usr/share/man/man8/clonefs.8.gz /usr/share/man/man8/clonectl.8.gz \
        /lib/systemd/system/clonefs@.service /lib/systemd/system/clonefs-pg-receive@.service \
        /lib/systemd/system/clonefs-retention.service /lib/systemd/system/clonefs-retention.timer \
        /usr/libexec/clonefs/clonefs-retention /etc/clonefs/retention.conf \
        /usr/share/doc/clonefs/README /usr/share/doc/clonefs/OPERATIONS.md /usr/share/doc/clonefs/copyright; do
        grep -qx -e "$f" -e "$f.gz" "$workdir/contents" || fail "the package lacks $f"
done
if grep -E '\.(a|la|so[.0-9]*|h)$' "$workdir/contents"; then
        fail "the package ships a library or header: the chunk store library must stay inside the programs"
fi
pass "the package holds the programs, man pages, units, policy and docs, and no library"
depends=$(dpkg-deb -f "$deb" Depends)
libs="libfuse3-3 liblz4-1 libxxhash0 libsqlite3-0"
dpkg-deb -x "$deb" "$workdir/unpacked"
if objdump -p "$workdir/unpacked/usr/bin/clonectl" 2>/dev/null | grep -q 'NEEDED *libpq'; then
        libs="$libs libpq5" # once the pg verbs link libpq
fi
for dep in fuse3 $libs; do
        echo "$depends" | grep -Eq "(^|, )$dep( |,|$)" || fail "Depends lacks $dep: $depends"
done
pass "Depends names fuse3 and every library: $depends"

# 2. lintian.
if ! lintian --fail-on error,warning --display-info "$changes" >"$workdir/lintian" 2>&1; then
        cat "$workdir/lintian" >&2
        fail "lintian reports errors or warnings"
fi
if grep -E '^[EW]: ' "$workdir/lintian"; then
        fail "lintian reports errors or warnings"
fi
pass "lintian: no errors or warnings ($(grep -c '^[IPX]: ' "$workdir/lintian" || true) info tags)"

# 3. Install with apt, which pulls in the runtime dependencies.
on_exit "DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq clonefs"
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$deb" >"$workdir/apt.log" 2>&1; then
        cat "$workdir/apt.log" >&2
        fail "apt-get install ./$(basename "$deb") failed"
fi
pass "apt-get install ./$(basename "$deb") installs it"
expect_ok "clonectl --version runs from /usr/bin" /usr/bin/clonectl --version
expect_grep "it is this version" "^clonectl $(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)$" "$workdir/out"
expect_eq "man finds clonectl(8)" "$(man -w clonectl 2>/dev/null)" "/usr/share/man/man8/clonectl.8.gz"
expect_eq "man finds clonefs(8)" "$(man -w 8 clonefs 2>/dev/null)" "/usr/share/man/man8/clonefs.8.gz"
(cd /lib/systemd/system && systemd-analyze verify clonefs@srv-clonefs.service clonefs-pg-receive@pg.service \
        clonefs-retention.service clonefs-retention.timer) >"$workdir/verify" 2>&1 ||
        { cat "$workdir/verify" >&2; fail "systemd-analyze verify rejects an installed unit"; }
[ ! -s "$workdir/verify" ] || { cat "$workdir/verify" >&2; fail "systemd-analyze verify warns about an installed unit"; }
pass "systemd-analyze verify passes the installed units"
dpkg-query -W -f '${Conffiles}\n' clonefs | grep -q '/etc/clonefs/retention.conf' ||
        fail "/etc/clonefs/retention.conf is not a conffile"
pass "/etc/clonefs/retention.conf is a conffile"

# 4. mount -t fuse.clonefs right after the install.
export CLONEFS_STORE="$workdir/store"
mkdir -p "$workdir/data" "$workdir/mnt" "$workdir/clone"
seq 1 100000 >"$workdir/data/numbers"
expect_ok "clonectl init" clonectl init
expect_ok "clonectl snapshot" clonectl snapshot data --from "$workdir/data"
expect_ok "clonectl clone create" clonectl clone create dev --from data@latest
expect_ok "clonectl doctor finds nothing wrong after the install" clonectl doctor
expect_grep "doctor sees mount.fuse3 from the fuse3 dependency" '^ok +mount.fuse3: ' "$workdir/out"
on_exit "umount -l '$workdir/mnt'"
expect_ok "mount -t fuse.clonefs the store" mount -t fuse.clonefs "$CLONEFS_STORE" "$workdir/mnt" -o allow_other
cmp "$workdir/data/numbers" "$workdir/mnt/timelines/data/latest/numbers" || fail "the mount reads wrong data"
pass "the mount shows the point"
# The daemon mount(8) ran is the installed one (mount's helpers search
# /usr/sbin first, where tests/fuse-mount.sh may have put a build's).
if [ ! -e /usr/sbin/clonefs ]; then
        exe=
        for p in /proc/[0-9]*; do
                if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "^clonefs $CLONEFS_STORE $workdir/mnt "; then
                        exe=$(readlink "$p/exe")
                fi
        done
        expect_eq "the mount is served by the installed daemon" "$exe" /usr/bin/clonefs
fi
umount "$workdir/mnt" || fail "umount failed"
on_exit "umount -l '$workdir/clone'"
expect_ok "mount -t fuse.clonefs -o clone=dev" mount -t fuse.clonefs "$CLONEFS_STORE" "$workdir/clone" -o clone=dev
echo "written through the package's mount" >"$workdir/clone/new-file"
umount "$workdir/clone" || fail "umount of the clone failed"
expect_ok "clonectl clone export" clonectl clone export dev "$workdir/export"
expect_eq "a write through the mount landed in the clone" "$(cat "$workdir/export/new-file")" \
        "written through the package's mount"
expect_ok "the installed retention wrapper runs" /usr/libexec/clonefs/clonefs-retention /etc/clonefs/retention.conf

# 5. Purge it: nothing of it stays.
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq clonefs >"$workdir/apt.log" 2>&1 ||
        { cat "$workdir/apt.log" >&2; fail "apt-get purge clonefs failed"; }
! dpkg-query -W -f '${Status}' clonefs 2>/dev/null | grep -q 'install ok' || fail "clonefs is still installed"
for f in /usr/bin/clonefs /usr/bin/clonectl /etc/clonefs/retention.conf /lib/systemd/system/clonefs@.service; do
        [ ! -e "$f" ] || fail "$f is still there after the purge"
done
pass "apt-get purge removes the package and its conffile"
