"""Isolation set-up for the executor: namespaces once per executor, a prepared plan per child, fallback helpers.

What each layer stops is listed in docs/sandbox.md; the executor module docstring says where each runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import sys

import _linux

TMPFS_SIZE = "64m"  # the candidate's whole writable world in namespace mode
NOBODY = 65534  # root callers run candidates as this host uid
NS_FLAGS = _linux.CLONE_NEWUSER | _linux.CLONE_NEWNS | _linux.CLONE_NEWPID


# What a candidate's filesystem holds besides its own /tmp and /proc: the interpreter (prefixes and the
# site-packages on sys.path), the shared libraries C extensions load, the loader's cache and these devices.
SYSTEM_LIBRARY_DIRS = ("/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/local/lib")
SYSTEM_FILES = ("/etc/ld.so.cache",)
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_BUILD_AT = "/tmp"  # a private tmpfs is mounted here in our mount namespace to build the new root in


def interpreter_paths() -> list[str]:
    """Directories of the Python installation: its prefixes and the sys.path entries inside them or named
    site-/dist-packages. Anything else on sys.path (an editable install pointing into a checkout) stays out."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    paths = set(prefixes)
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else ""
        if os.path.isdir(real) and (any(real == p or real.startswith(p + "/") for p in prefixes)
                                    or os.path.basename(real) in ("site-packages", "dist-packages")):
            paths.add(real)
    return sorted(paths)


def root_contents() -> list[str]:
    """Every host path bind-mounted (read-only) into the candidates' root, outermost first."""
    wanted = interpreter_paths() + [os.path.realpath(p) for p in SYSTEM_LIBRARY_DIRS if os.path.isdir(p)]
    wanted += [p for p in SYSTEM_FILES + DEVICES if os.path.exists(p)]
    unique = sorted(set(wanted))
    return [p for p in unique if not any(p != q and p.startswith(q + "/") for q in unique)]


def scratch_dir() -> str:
    """Where each candidate's private tmpfs (its writable world and working directory) is mounted: /tmp, unless
    the interpreter itself lives under /tmp (a checkout's .venv there), which that tmpfs would hide; then
    /scratch, with TMPDIR pointing at it."""
    return "/scratch" if any(p == "/tmp" or p.startswith("/tmp/") for p in root_contents()) else "/tmp"


def _mirror_symlinks(new_root: str) -> None:
    """Recreate top-level symlinks such as /lib -> usr/lib (merged /usr) so library paths resolve as on the host."""
    for name in ("lib", "lib64", "lib32"):
        host = "/" + name
        if os.path.islink(host) and not os.path.lexists(new_root + host):
            os.symlink(os.readlink(host), new_root + host)


def build_minimal_root() -> None:
    """Replace our root by a tmpfs holding only ``root_contents()`` (read-only binds), empty /tmp and /dev
    entries, and the host /proc (children cover it with their own; it must stay visible for the kernel to let
    them mount a proc, and writable for their uid_map). pivot_root and a detached old root leave no path back
    to the checkout, home directories, datasets or other mounts."""
    nosuid_nodev = _linux.MS_NOSUID | _linux.MS_NODEV
    # Held open before the build tmpfs covers /tmp: an installation under /tmp (a checkout's .venv there) would
    # otherwise be hidden by it; the binds below come from these descriptors.
    sources = [(path, os.open(path, os.O_PATH | os.O_CLOEXEC)) for path in root_contents()]
    _linux.mount("tmpfs", _BUILD_AT, "tmpfs", nosuid_nodev, "size=1m,mode=755")
    new_root = _BUILD_AT + "/root"
    os.mkdir(new_root, 0o755)
    _linux.mount("tmpfs", new_root, "tmpfs", _linux.MS_NOSUID, "size=1m,mode=755")
    _mirror_symlinks(new_root)
    for path, fd in sources:
        target = new_root + path
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.makedirs(target, mode=0o755, exist_ok=True)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        _linux.mount(f"/proc/self/fd/{fd}", target, None, _linux.MS_BIND | _linux.MS_REC)
        os.close(fd)
    for writable in {"/tmp", scratch_dir()}:  # mount points only: the root itself is read-only
        os.makedirs(new_root + writable, 0o755, exist_ok=True)
        os.chmod(new_root + writable, 0o1777)
    os.makedirs(new_root + "/proc", 0o555, exist_ok=True)
    _linux.mount("/proc", new_root + "/proc", None, _linux.MS_BIND | _linux.MS_REC)
    os.mkdir(new_root + "/.old", 0o700)
    _linux.pivot_root(new_root, new_root + "/.old")
    os.chdir("/")
    _linux.umount("/.old", _linux.MNT_DETACH)
    os.rmdir("/.old")


def setup_namespaces() -> None:
    """Enter a private mount namespace with a minimal read-only root and an empty network namespace; drop root
    to nobody."""
    euid, egid = os.geteuid(), os.getegid()
    if euid == 0:
        _linux.unshare(_linux.CLONE_NEWNS | _linux.CLONE_NEWNET)
    else:
        _linux.unshare(_linux.CLONE_NEWUSER | _linux.CLONE_NEWNS | _linux.CLONE_NEWNET)
        _linux.write_id_maps(_linux.id_map_plan(euid, egid))
    _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
    build_minimal_root()
    # /proc stays writable so each child can write its own uid_map; the child then covers it (see ChildPlan)
    _linux.make_tree_readonly("/", except_path="/proc")
    if euid == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    _linux.prctl(_linux.PR_SET_DUMPABLE, 1)  # setuid cleared it; children need it to write their uid_map


class ChildPlan:
    """Everything a child does before the candidate runs, prepared once: the child, a copy-on-write fork of
    this process, pays a page fault (~5 us on these VMs) for every object it touches, so it should compute
    nothing it could inherit. Being dumpable (needed to write /proc/self/uid_map) is inherited from us."""

    def __init__(self, ns: bool, proc: bool):
        self.ns = ns
        self.id_maps = _linux.id_map_plan(os.geteuid(), os.getegid())
        self.deathsig = _linux.prepare("prctl", _linux.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        nosuid_nodev = _linux.MS_NOSUID | _linux.MS_NODEV
        self.drop_capabilities = _linux.prepare_drop_capabilities()
        self.scratch = scratch_dir()
        self.mounts = [_linux.prepare("mount", "tmpfs", self.scratch, "tmpfs", nosuid_nodev,
                                      f"size={TMPFS_SIZE},mode=1777")]
        if proc:  # a /proc showing only this pid namespace
            self.mounts.append(_linux.prepare("mount", "proc", "/proc", "proc", nosuid_nodev | _linux.MS_NOEXEC, None))
        else:  # the kernel refuses a new proc here (masked /proc in a container): hide the host's instead
            self.mounts.append(_linux.prepare("mount", "tmpfs", "/proc", "tmpfs", nosuid_nodev | 1, "size=4k,mode=555"))

    def isolate(self, workdir: str) -> None:
        """First steps of a freshly cloned child (see the module docstring)."""
        _linux.call(self.deathsig)  # we die -> it dies (and with it, in namespace mode, all it started)
        if self.ns:
            _linux.write_id_maps(self.id_maps)
            for mount in self.mounts:
                _linux.call(mount)
            os.mkdir(workdir, 0o700)
            for call in self.drop_capabilities:  # last: mounting needed them
                _linux.call(call)
        # Its own process group (what the executor signals and renices), but not its own session: setsid() would
        # also give it its own scheduler autogroup (kernel.sched_autogroup_enabled, on by default), and autogroups
        # share the CPU equally whatever their members' nice values - a demoted infinite loop then still took a
        # core from the batch (measured: 4 loops burned ~1 s of CPU each). The executor's session has no
        # controlling terminal (the client starts it with start_new_session), so neither does the candidate.
        os.setpgid(0, 0)
        os.chdir(workdir)


def probe() -> tuple[bool, bool, str]:
    """Try the namespace set-up in a throw-away child: (namespaces work, fresh /proc works, reason)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            os.close(r)
            setup_namespaces()
            for proc, ok_code in ((True, 0), (False, 1)):
                plan = ChildPlan(True, proc)
                child = _linux.clone(NS_FLAGS)
                if child == 0:
                    try:
                        plan.isolate(f"{plan.scratch}/probe")
                        os._exit(0)
                    except BaseException as e:  # noqa: BLE001
                        os.write(w, f"{type(e).__name__}: {e}\n".encode())
                        os._exit(1)
                if os.waitpid(child, 0)[1] == 0:
                    code = ok_code
                    break
        except BaseException as e:  # noqa: BLE001
            os.write(w, f"{type(e).__name__}: {e}\n".encode())
        os._exit(code)
    os.close(w)
    status = os.waitpid(pid, 0)[1]
    with os.fdopen(r, "rb") as f:
        reason = f.read().decode(errors="replace").strip()
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 2
    return code in (0, 1), code == 0, reason


# ------------------------------------------------------------------------------------ fallback helpers --
def count_own_processes() -> int:
    uid = os.getuid()
    return sum(1 for p in os.listdir("/proc") if p.isdigit() and owner(f"/proc/{p}") == uid)


def remove_stale_roots(root: str) -> None:
    """Delete work roots (``mi-sandbox-<pid>-*``) left by executors that died without cleaning up."""
    base = os.path.dirname(root)
    for name in os.listdir(base):
        parts = name.split("-")
        if name.startswith("mi-sandbox-") and len(parts) >= 4 and parts[2].isdigit():
            if not os.path.exists(f"/proc/{parts[2]}"):
                rmtree(os.path.join(base, name))


def owner(path: str) -> int:
    try:
        return os.stat(path).st_uid
    except OSError:
        return -1


def own_children() -> list[int]:
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:  # kernel without CONFIG_PROC_CHILDREN: scan
        kids = []
        for p in os.listdir("/proc"):
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        kids.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
        return kids


def rmtree(path: str) -> None:
    """Remove a candidate's directory even if it chmod-ed things to 000."""
    def unlock(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=unlock)
    if os.path.exists(path):
        for d, _, _ in os.walk(path):
            try:
                os.chmod(d, 0o700)
            except OSError:
                pass
        shutil.rmtree(path, ignore_errors=True)
