#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Seeded, reproducible random operations applied to a clone and to a
native directory that started equal, compared after every step.

usage: clone-random.py CLONE_DIR NATIVE_DIR SEED STEPS

Operations: writes at random offsets and sizes (crossing blocks), appends,
truncates (shrink and grow), punched holes, renames (files and
directories, over existing names, RENAME_NOREPLACE and RENAME_EXCHANGE),
hardlinks, symlinks, unlinks (also of open files), mkdir and rmdir,
chmod and utimens.  After each step both trees are compared: names,
types, sizes, modes, link counts, symlink targets, file bytes, hardlink
groups, and the nanosecond mtimes that utimens set; errors must match too
(same errno).  Prints one line per failure and exits 1.
"""
import ctypes
import errno
import os
import random
import sys

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


def renameat2(src, dst, flags):
    r = libc.renameat2(AT_FDCWD, src.encode(), AT_FDCWD, dst.encode(), flags)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def punch(path, off, length):
    fd = os.open(path, os.O_WRONLY)
    try:
        r = libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, ctypes.c_long(off), ctypes.c_long(length))
        if r != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    finally:
        os.close(fd)


def snapshot(root):
    """Everything compared, keyed by relative path."""
    out = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            item = [oct(st.st_mode), st.st_nlink if not os.path.isdir(p) or os.path.islink(p) else None]
            if os.path.islink(p):
                item.append(os.readlink(p))
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    item.append(f.read())
                inodes.setdefault(st.st_ino, []).append(rel)
            out[rel] = tuple(item)
    groups = sorted(tuple(sorted(v)) for v in inodes.values() if len(v) > 1)
    return out, groups


def paths(rng, root, kind=None):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.relpath(os.path.join(dirpath, name), root)
            full = os.path.join(root, p)
            if kind == "file" and (os.path.islink(full) or not os.path.isfile(full)):
                continue
            if kind == "dir" and (os.path.islink(full) or not os.path.isdir(full)):
                continue
            found.append(p)
    found.sort()
    return found


def pick(rng, options, fallback):
    return rng.choice(options) if options else fallback


def make_op(rng, root, step):
    files = paths(rng, root, "file")
    dirs = ["."] + paths(rng, root, "dir")
    every = paths(rng, root)
    new_name = os.path.join(pick(rng, dirs, "."), "n%d" % step)
    kind = rng.choice(["write", "write", "write", "append", "truncate", "punch", "rename", "rename",
                       "link", "symlink", "unlink", "unlink_open", "mkdir", "rmdir", "chmod", "utime"])
    if kind in ("write", "append", "truncate", "punch", "chmod", "utime") and files:
        f = rng.choice(files)
        if kind == "write":
            off = rng.choice([0, rng.randrange(0, 300000), rng.randrange(0, 70000) * 7])
            data = bytes(rng.randrange(256) for _ in range(rng.choice([1, 100, 4096, 20000, 70000])))
            return (kind, f, off, data)
        if kind == "append":
            return (kind, f, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 50000))))
        if kind == "truncate":
            return (kind, f, rng.choice([0, rng.randrange(0, 200000), rng.randrange(0, 400000)]))
        if kind == "punch":
            return (kind, f, rng.randrange(0, 200000), rng.randrange(1, 150000))
        if kind == "chmod":
            return (kind, f, rng.choice([0o600, 0o644, 0o755, 0o4755, 0o640]))
        return (kind, f, rng.randrange(0, 2**40), rng.randrange(0, 10**9))
    if kind == "rename" and every:
        src = rng.choice(every)
        dst = rng.choice([new_name, pick(rng, every, new_name)])
        return (kind, src, dst, rng.choice([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE]))
    if kind == "link" and files:
        return (kind, rng.choice(files), new_name)
    if kind == "symlink":
        return (kind, pick(rng, every, "nowhere"), new_name)
    if kind in ("unlink", "unlink_open") and files:
        return (kind, rng.choice(files))
    if kind == "rmdir" and len(dirs) > 1:
        return (kind, rng.choice(dirs[1:]))
    if kind == "mkdir":
        return (kind, new_name)
    return ("create", new_name, bytes(rng.randrange(256) for _ in range(rng.randrange(0, 100000))))


def apply(op, root):
    """Applies op under root; returns the errno it failed with, or 0."""
    kind, args = op[0], op[1:]
    P = lambda p: os.path.join(root, p)
    try:
        if kind == "write":
            fd = os.open(P(args[0]), os.O_WRONLY)
            os.pwrite(fd, args[2], args[1])
            os.close(fd)
        elif kind == "append":
            with open(P(args[0]), "ab") as f:
                f.write(args[1])
        elif kind == "truncate":
            os.truncate(P(args[0]), args[1])
        elif kind == "punch":
            punch(P(args[0]), args[1], args[2])
        elif kind == "chmod":
            os.chmod(P(args[0]), args[1])
        elif kind == "utime":
            os.utime(P(args[0]), ns=(args[1], args[1] + args[2]), follow_symlinks=False)
        elif kind == "rename":
            renameat2(P(args[0]), P(args[1]), args[2])
        elif kind == "link":
            os.link(P(args[0]), P(args[1]))
        elif kind == "symlink":
            os.symlink(args[0], P(args[1]))
        elif kind == "unlink":
            os.unlink(P(args[0]))
        elif kind == "unlink_open":
            fd = os.open(P(args[0]), os.O_RDWR)
            os.unlink(P(args[0]))
            os.pwrite(fd, b"still usable", 10)
            data = os.pread(fd, 22, 0)
            nlink = os.fstat(fd).st_nlink
            os.close(fd)
            return ("open-after-unlink", data, nlink)
        elif kind == "mkdir":
            os.mkdir(P(args[0]))
        elif kind == "rmdir":
            os.rmdir(P(args[0]))
        elif kind == "create":
            with open(P(args[0]), "xb") as f:
                f.write(args[1])
        return 0
    except OSError as e:
        return e.errno


def describe(op):
    """An operation in one short line (data as its length)."""
    return " ".join(("<%d bytes>" % len(x)) if isinstance(x, bytes) else repr(x) for x in op[1:])


def main():
    clone, native, seed, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    failures = 0
    for step in range(steps):
        op = make_op(rng, native, step)
        a = apply(op, native)
        b = apply(op, clone)
        if a != b:
            print("step %d %s %s: native gave %r, clone gave %r" % (step, op[0], describe(op), a, b))
            failures += 1
        sa, sb = snapshot(native), snapshot(clone)
        if sa != sb:
            for rel in sorted(set(sa[0]) | set(sb[0])):
                if sa[0].get(rel) != sb[0].get(rel):
                    na, nb = sa[0].get(rel), sb[0].get(rel)
                    short = lambda t: None if t is None else tuple(x if not isinstance(x, bytes) else "<%d bytes>" % len(x) for x in t)
                    print("step %d %s %s: trees differ at %s: native %r, clone %r" % (step, op[0], describe(op), rel, short(na), short(nb)))
                    break
            else:
                print("step %d %s: hardlink groups differ: %r vs %r" % (step, op[0], sa[1], sb[1]))
            return 1
        if op[0] == "utime" and a == 0:
            ta = os.lstat(os.path.join(native, op[1])).st_mtime_ns
            tb = os.lstat(os.path.join(clone, op[1])).st_mtime_ns
            if ta != tb:
                print("step %d utime: mtime %d natively, %d in the clone" % (step, ta, tb))
                failures += 1
        if failures:
            return 1
    print("%d random steps: clone and native agree (seed %d)" % (steps, seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
