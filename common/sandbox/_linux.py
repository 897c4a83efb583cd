"""The few Linux system calls the executor needs and Python 3.11 does not expose.

Python 3.11 has no ``os.unshare``, ``mount`` or ``clone``; we reach them through ctypes. ``clone`` goes through
``PyDLL`` (the GIL stays held across the call) so the child resumes a consistent interpreter: forking with raw
``clone(2)`` skips CPython's after-fork hooks, which is safe only because the executor is single-threaded. We use
it because one ``clone`` with namespace flags replaces ``fork`` + ``unshare`` + ``fork`` (the pid namespace only
applies to children) and costs half of ``os.fork`` here (0.5 ms vs 1.1 ms, measured).

The calls a child makes on every run go through the same ``PyDLL`` ``syscall`` function object as ``clone``,
with arguments converted to ctypes objects in the executor beforehand (``prepare``): a forked child pays a
copy-on-write page fault (~5 us on these VMs) for every Python object it touches, and a first ctypes call through
another function object cost 40 faults, more than the system call itself.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
SIGCHLD = 17

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 2, 4, 8, 32, 4096
MS_REC, MS_PRIVATE = 1 << 14, 1 << 18
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
AT_FDCWD, AT_RECURSIVE = -100, 0x8000

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 4, 38, 36

PR_SET_SECUREBITS = 28
# securebits: uid 0 (which every candidate is inside its user namespace) gains no capabilities through execve,
# locked so the candidate cannot turn it off again
SECBIT_NOROOT, SECBIT_NOROOT_LOCKED = 1 << 0, 1 << 1
MNT_DETACH = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_SYS = {"x86_64": {"clone": 56, "prctl": 157, "mount": 165, "pivot_root": 155, "capset": 126},
        "aarch64": {"clone": 220, "prctl": 167, "mount": 40, "pivot_root": 41, "capset": 91}}.get(
    platform.machine(), {})
SYS_MOUNT_SETATTR = 442  # same number on every architecture (added after the syscall tables were unified)

_libc = ctypes.CDLL(None, use_errno=True)
_plibc = ctypes.PyDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_plibc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def clone_supported() -> bool:
    # Resuming Python in a raw clone() child relies on CPython details (checked on 3.11, the project's version).
    return bool(_SYS) and sys.implementation.name == "cpython"


def prepare(name: str, *args: int | str | None) -> tuple:
    """A raw system call's arguments as ctypes objects, built once (ints as unsigned long, str as char*)."""
    conv = [None if a is None else a.encode() if isinstance(a, str) else ctypes.c_ulong(a) for a in args]
    return (ctypes.c_long(_SYS[name]), *conv)


def call(prepared: tuple) -> int:
    """Run a prepared system call (see ``prepare``); raise OSError on failure."""
    ret = _plibc.syscall(*prepared)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syscall {prepared[0].value}: {os.strerror(err)}")
    return ret


_clone_args: dict[int, tuple] = {}


def clone(flags: int) -> int:
    """fork(2) with namespace flags: returns 0 in the child, the child's pid in the parent."""
    # Arguments after flags are zero: new stack = NULL (copy-on-write, like fork), no tids, no tls; their
    # order differs between x86_64 and arm64 but zeros read the same.
    args = _clone_args.get(flags)
    if args is None:
        args = _clone_args[flags] = prepare("clone", flags | SIGCHLD, None, None, None, None)
    return call(args)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {fstype or source} on {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _mount_setattr(path: str, attr_set: int, attr_clr: int, recursive: bool) -> bool:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    ret = _libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), path.encode(),
                        ctypes.c_uint(AT_RECURSIVE if recursive else 0), ctypes.byref(attr),
                        ctypes.c_size_t(ctypes.sizeof(attr)))
    return ret == 0


def _mount_options() -> dict[str, list[str]]:
    with open("/proc/self/mountinfo") as f:
        return {row[4].replace("\\040", " "): row[5].split(",") for row in map(str.split, f)}


def _remount(target: str, opts: list[str], readonly: bool) -> None:
    # A user namespace may not clear nodev/noexec it inherited: repeat them or the remount is refused.
    keep = (MS_NODEV if "nodev" in opts else 0) | (MS_NOEXEC if "noexec" in opts else 0)
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_NOSUID | keep | (1 if readonly else 0))  # 1 = MS_RDONLY


def make_tree_readonly(path: str = "/", except_path: str = "/proc") -> None:
    """Mark every mount under ``path`` read-only and nosuid, except ``except_path`` (non-recursively).

    One recursive mount_setattr (Linux >= 5.12); older kernels remount each mount point in turn.
    """
    if _mount_setattr(path, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, True):
        if not _mount_setattr(except_path, 0, MOUNT_ATTR_RDONLY, False):
            _check(-1, f"mount_setattr {except_path}")
        return
    for target, opts in _mount_options().items():
        if target == path or target.startswith(path.rstrip("/") + "/"):
            _remount(target, opts, readonly=target != except_path)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(ctypes.c_long(_SYS["pivot_root"]), new_root.encode(), put_old.encode()), "pivot_root")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def prepare_drop_capabilities() -> list[tuple]:
    """The two prepared calls (see ``prepare``) that leave a process without any capability for good:
    securebits NOROOT (locked: execve as uid 0 grants nothing), then capset with every set empty. A candidate is
    root in its own user namespace, with every capability there: without this it could unmount its /proc or /tmp
    and look at what lies beneath."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    keep = (header, data)  # the structures must outlive the prepared argument tuple
    capset = (ctypes.c_long(_SYS["capset"]), ctypes.byref(header), ctypes.byref(data))
    secure = prepare("prctl", PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED, 0, 0, 0)
    _prepared_keepalive.append(keep)
    return [secure, capset]


_prepared_keepalive: list = []


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def id_map_plan(outer_uid: int, outer_gid: int, pid: str = "self") -> list[tuple[bytes, bytes]]:
    """What to write where so uid/gid 0 inside a fresh user namespace is one outer id (all an unprivileged
    process may map); ``setgroups`` must be denied before an unprivileged gid_map write."""
    return [(f"/proc/{pid}/setgroups".encode(), b"deny"), (f"/proc/{pid}/uid_map".encode(), b"0 %d 1" % outer_uid),
            (f"/proc/{pid}/gid_map".encode(), b"0 %d 1" % outer_gid)]


def write_id_maps(plan: list[tuple[bytes, bytes]]) -> None:
    for path, text in plan:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)
