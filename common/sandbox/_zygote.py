"""The zygote: the only process that forks candidates.

Why not let the executor fork them itself: on these VMs a page fault costs 5-7 us, and after every fork each page
the forking process writes is copied again. The executor's own work per job (JSON, test compilation, epoll,
bookkeeping) touched 140-250 pages per candidate, all of them faulting. The zygote is forked once from the
executor after set-up; per job it only receives one request, clones and reports, and the executor, which no
longer forks, writes its pages without faults.

Protocol over a SOCK_SEQPACKET socketpair, one message per datagram:

* executor -> zygote: the job's index (8 bytes, little-endian), then the marshal-ed tuple (workdir, cpu_limit,
  mem_bytes, code, setup, imports, probes, static, serve) with code, setup, imports and the probes already compiled
  by the executor (code objects; never the judge program, which holds the expected values), and the write ends of
  the job's frame and output pipes and the read end of its request pipe attached (SCM_RIGHTS). Only
  the child unmarshals the tuple: every page the zygote writes between two clones costs it a copy-on-write fault
  (its pages are shared with the children alive), and building those objects in the zygote cost ~40 of them per
  candidate (138 -> 98 measured).
* zygote -> executor: ("pid", idx, pid) with a pidfd attached (the executor signals through it: no pid reuse
  race), later ("exit", idx, wait_status, cpu_seconds). A failed clone is ("exit", idx, -errno, 0.0).
"""

from __future__ import annotations

import gc
import marshal
import os
import resource
import select
import signal
import socket
import tempfile
import time

import _child
import _isolation
import _linux
import _wire

NOFILE_LIMIT = 256
MAX_MESSAGE = 1 << 20


class Zygote:
    def __init__(self, sock: socket.socket, plan: _isolation.ChildPlan, ns: bool, nproc: int):
        self.sock, self.plan, self.ns, self.nproc = sock, plan, ns, nproc
        self.flags = _isolation.NS_FLAGS if ns else 0
        self.children: dict[int, tuple[int, int]] = {}  # pid -> (idx, pidfd)
        self.by_pidfd: dict[int, int] = {}
        self.ep = select.epoll()

    def serve(self) -> None:
        # Every object we hold now goes to the collector's permanent generation: a child's full collection then
        # leaves the inherited heap alone instead of writing (and so copying) a GC header on every page of it.
        # An allocation-heavy candidate (300k objects) paid 7,740 page faults; 7,100 with this.
        gc.freeze()
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # the executor died: so do we (and our children)
        if not self.ns:
            _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)  # orphans come to us, to be killed
        self.ep.register(self.sock.fileno(), select.EPOLLIN)
        try:
            while True:
                for fd, _ in self.ep.poll():
                    if fd == self.sock.fileno():
                        if not self.receive():
                            return
                    else:
                        self.reap(self.by_pidfd[fd])
        finally:  # the executor is gone: nothing we started may outlive us
            for pid in list(self.children):
                self.sweep(pid, keep=())

    def receive(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 3)
        except ConnectionResetError:
            return False
        if not data:
            return False
        self.spawn(int.from_bytes(data[:8], "little"), data, *fds)  # the rest is the child's to unmarshal
        return True

    def send(self, msg: tuple, fds: list[int] = ()) -> None:
        socket.send_fds(self.sock, [marshal.dumps(msg)], list(fds))

    def spawn(self, idx, data, rep_w, out_w, req_r) -> None:
        try:
            pid = _linux.clone(self.flags)
        except OSError as e:
            for fd in (rep_w, out_w, req_r):
                os.close(fd)
            self.send(("exit", idx, -e.errno, 0.0))
            return
        if pid == 0:
            self.child(data, rep_w, out_w, req_r)  # never returns
        for fd in (rep_w, out_w, req_r):
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.children[pid] = (idx, pidfd)
        self.by_pidfd[pidfd] = pid
        self.ep.register(pidfd, select.EPOLLIN)
        self.send(("pid", idx, pid), [pidfd])

    def reap(self, pid: int) -> None:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == 0:
            return
        idx, pidfd = self.children.pop(pid)
        del self.by_pidfd[pidfd]
        self.ep.unregister(pidfd)
        os.close(pidfd)
        if not self.ns:
            self.sweep(pid, keep=self.children)
        self.send(("exit", idx, status, usage.ru_utime + usage.ru_stime))

    def sweep(self, pid: int, keep) -> None:
        """Kill a candidate and its process group, then (fallback mode, where we are the child subreaper) every
        child of ours not in ``keep``: orphans of finished candidates were reparented to us."""
        for kill, target in ((os.kill, pid), (os.killpg, pid)):
            try:
                kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.ns:
            return
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            strays = [p for p in _isolation.own_children() if p not in keep]
            if not strays:
                return
            for p in strays:
                try:
                    os.kill(p, signal.SIGKILL)
                    os.waitpid(p, os.WNOHANG)
                except (ProcessLookupError, ChildProcessError):
                    pass
            time.sleep(0.001)

    def child(self, data, rep_w, out_w, req_r) -> None:
        try:  # everything that can fail ends here, in os._exit: never back into a copy of the zygote's loop
            workdir, cpu_limit, mem, code, setup, imports, probes, static, serve = marshal.loads(memoryview(data)[8:])
            self.plan.isolate(workdir)
            limits = [(resource.RLIMIT_CPU, cpu_limit), (resource.RLIMIT_AS, mem),
                      (resource.RLIMIT_NOFILE, NOFILE_LIMIT), (resource.RLIMIT_NPROC, self.nproc)]
            for what, value in limits:  # soft == hard: RLIMIT_CPU then sends SIGKILL, not a catchable SIGXCPU
                resource.setrlimit(what, (value, value))
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.dup2(rep_w, 3, inheritable=False)
            os.dup2(req_r, 4, inheritable=False)
            os.closerange(5, 1 << 20)
            tempfile.tempdir = workdir
            if not self.ns:
                os.environ["TMPDIR"] = workdir
        except BaseException as e:  # noqa: BLE001
            try:  # sent before "ready": the executor reports it as an error in the set-up
                os.write(rep_w, _wire.encode(("abort", "sandbox set-up", f"{type(e).__name__}: {e}")))
            finally:
                os._exit(125)
        try:
            _child.run_job(code, setup, imports, probes, static, serve, 3, 4)
        finally:
            os._exit(126)


def start(plan: _isolation.ChildPlan, ns: bool, nproc: int) -> tuple[int, socket.socket]:
    """Fork the zygote; return its pid and the executor's end of the socketpair."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (ours, theirs):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MAX_MESSAGE)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            Zygote(theirs, plan, ns, nproc).serve()
        finally:
            os._exit(0)
    theirs.close()
    return pid, ours
