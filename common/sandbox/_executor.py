"""Sandbox executor: a small, clean process that runs candidates in isolated children, many at a time.

Why a separate process: the caller may hold CUDA contexts and gigabytes of weights, and forking it per
candidate would be slow and unsafe. This script is started once (``python -I``) by ``common.sandbox``, imports
only the standard library, and talks JSON lines over its stdin/stdout: jobs in, verdicts out. JSON (not
pickle) because a sandboxed program that reached these pipes must not gain code execution in the caller.
It compiles each job's program and test program (cached), hands the job to its zygote (``_zygote.py``, the only
process that forks), feeds the values the child ships to the job's judge (``_jobs.py``, ``_judge.py``), forwards
the judge's requests, enforces the deadlines and writes the verdicts. Nothing a child sends reaches the client
unchecked: every line we write is built here.

Isolation, set up once here and per child (see docs/sandbox.md for what each layer stops):

* executor (and the zygote forked from it): its own mount namespace whose root is a tmpfs with read-only binds
  of the Python installation, system libraries and a few devices only (``_isolation.build_minimal_root``), its
  own empty network namespace (shared by all children: no interface but a loopback they cannot bring up), and -
  when started as root - the uid ``nobody``; ``no_new_privs``, no core files, a file-size limit.
* child: ``clone(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID)``. It is pid 1 of a fresh pid namespace, so when it
  exits or is killed the kernel kills every process it started (setsid/fork grandchildren included) before it
  is reaped. It mounts a private tmpfs on /tmp (its working directory; freed with the namespace, even if the
  executor crashes) and a fresh /proc showing only itself, then drops every capability. Then setpgid, rlimits
  (CPU = time left, address space, processes, files), stdin = /dev/null, stdout/stderr = a pipe drained here
  with a cap, fd 3 its frames to us, fd 4 our requests.
* fallback where namespaces are unavailable: the same child without namespaces, a host temp directory removed
  afterwards, and the zygote as child subreaper so orphans are found and killed ("rlimits+pgroup").
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import _child  # noqa: E402,F401 (imported before the zygote forks: children inherit it)
import _harness  # noqa: E402
import _isolation  # noqa: E402
import _linux  # noqa: E402
import _zygote  # noqa: E402
from _isolation import ChildPlan, probe, setup_namespaces  # noqa: E402
from _jobs import Job  # noqa: E402

sys.path.remove(_HERE)

# Modules MBPP references import (counted over all 974): loaded once here, inherited by every child for free.
import array, bisect, cmath, collections, copy, datetime, functools, heapq, itertools, math, operator, random, re, string  # noqa: E401,E402,F401,E501

import errno  # noqa: E402
import json  # noqa: E402
import marshal  # noqa: E402
import resource  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import site  # noqa: E402
import socket  # noqa: E402
import sysconfig  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

FILE_SIZE_LIMIT = 32 << 20
NPROC_LIMIT = 64  # per candidate in namespace mode (counted per user namespace); bounds fork storms
# A candidate still running after this long is moved to nice 19 and stops counting against `workers`: the
# infinite loops that model-written code is full of then cost idle CPU only, instead of holding a worker slot
# and a core each until their timeout (with 2% loops at a 5 s timeout they would dominate a batch's time).
DEMOTE_AFTER = 0.2
MAX_DEMOTED_PER_WORKER = 2  # bounds memory: demoted children still hold their address space


class Executor:
    def __init__(self, mode: str):
        self.ns, self.proc, reason = False, False, ""
        if mode != "rlimits" and _linux.clone_supported():
            self.ns, self.proc, reason = probe()
            if self.ns:
                setup_namespaces()
        elif mode != "rlimits":
            reason = "raw clone(2) not supported on this architecture"
        if mode == "namespaces" and not self.ns:
            raise SystemExit(f"namespaces requested but unavailable: {reason}")
        # Inherited by every child, so they need not set them: no privilege gain through exec (setuid binaries,
        # file capabilities), no core files, bounded file size; dumpable so a child may write its uid_map
        # (namespace mode only: in the fallback it would let same-uid candidates into /proc/<us>/).
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        _linux.prctl(_linux.PR_SET_DUMPABLE, 1 if self.ns else 0)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
        self.plan = ChildPlan(self.ns, self.proc)
        if self.ns:
            self.nproc = NPROC_LIMIT  # counted per user namespace, i.e. per candidate
            self.level = "namespaces(user,mount,pid,net)+minimal-root+rlimits" + ("" if self.proc else " (no /proc)")
            os.environ.update(TMPDIR=self.plan.scratch, HOME=self.plan.scratch)
        else:
            self.level = "rlimits+pgroup"
            self.root = tempfile.mkdtemp(prefix=f"mi-sandbox-{os.getpid()}-")
            _isolation.remove_stale_roots(self.root)
            self.nproc = _isolation.count_own_processes() + 256  # RLIMIT_NPROC counts all processes of our uid
        self.reason = reason
        # Every candidate starts from the same `random` state: reproducible verdicts for programs that use it
        # without seeding (re-seeding in each child would cost ~0.3 ms of page faults per candidate).
        random.seed(0)
        _harness.set_trusted_roots([sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib",
                                                                      "platlib")] + site.getsitepackages())
        self.zygote_pid, self.zygote = _zygote.start(self.plan, self.ns, self.nproc)
        self.zygote.setblocking(False)
        self.max_message = self.zygote.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2 - 1024
        self.ep = select.epoll()
        self.queue: collections.deque = collections.deque()
        self.next_idx = 0
        self.running: dict[int, Job] = {}  # by attempt index
        self.by_fd: dict[int, tuple[Job, str]] = {}
        self.deadlines: list = []
        self.seq = 0
        self.workers = 2
        self.demoted = 0
        self.inbuf, self.outbuf = b"", bytearray()
        self.stdin_open, self.out_registered = True, False

    # -- job lifecycle
    def start(self, spec: dict) -> None:
        try:
            job = Job(spec)
            ready = job.prepare()
        except Exception as e:  # noqa: BLE001 - a malformed spec is the client's bug: answer, never die
            self.emit({"id": spec.get("id"), "error": f"{type(e).__name__}: {e}"})
            return
        if not ready:
            self.emit(job.result())
            return
        self.spawn(job, job.first_static())

    def spawn(self, job: Job, static: list[int]) -> None:
        self.next_idx += 1
        idx = self.next_idx
        workdir = f"{self.plan.scratch}/sandbox-{idx}" if self.ns else tempfile.mkdtemp(dir=self.root)
        request = job.child_request(idx, workdir, static, time.monotonic())
        if len(request) > self.max_message:
            job.failure = ("error", f"program and tests too large for the sandbox ({len(request)} bytes)")
            self.emit(job.result())
            return
        a = job.attempt
        rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        req_r, req_w = os.pipe()
        socket.send_fds(self.zygote, [request], [rep_w, out_w, req_r])
        for fd in (rep_w, out_w, req_r):
            os.close(fd)
        a.rep_r, a.out_r, a.req_w = rep_r, out_r, req_w
        for fd, kind in ((rep_r, "rep"), (out_r, "out")):
            os.set_blocking(fd, False)
            self.ep.register(fd, select.EPOLLIN)
            self.by_fd[fd] = (job, kind)
        os.set_blocking(req_w, False)
        self.running[idx] = job
        self.schedule(job.deadline, job, "deadline", idx)
        if job.deadline > a.t0 + DEMOTE_AFTER:
            self.schedule(a.t0 + DEMOTE_AFTER, job, "demote", idx)
        self.after_progress(job)

    def schedule(self, when: float, job: Job, kind: str, idx: int, unit: int = -1) -> None:
        self.seq += 1
        heapq.heappush(self.deadlines, (when, self.seq, job, kind, idx, unit))

    def after_progress(self, job: Job) -> None:
        """The judge may have a new request, may have finished, or may have begun a unit with a time limit."""
        a = job.attempt
        if job.violation or (job.judged and a.ready):  # nothing more to learn from this child: stop it
            self._kill(job)
            return
        data = job.pending_request()
        if data is not None:
            a.outbox += data
            self.write_requests(job)
        j = job.judge
        if job.test_timeout and j.current >= 0 and j.unit_started is None:
            j.unit_started = time.monotonic()
            self.schedule(j.unit_started + job.test_timeout, job, "unit", a.idx, j.current)

    def write_requests(self, job: Job) -> None:
        a = job.attempt
        try:
            while a.outbox:
                n = os.write(a.req_w, a.outbox[: 1 << 16])
                del a.outbox[:n]
        except BlockingIOError:
            pass
        except OSError:  # the child closed its end (it died): its exit decides
            a.outbox.clear()
        want = bool(a.outbox)
        registered = a.req_w in self.by_fd
        if want and not registered:
            self.ep.register(a.req_w, select.EPOLLOUT)
            self.by_fd[a.req_w] = (job, "req")
        elif registered and not want:
            self.ep.unregister(a.req_w)
            del self.by_fd[a.req_w]

    def from_zygote(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.zygote, 1 << 16, 1)
            except BlockingIOError:
                return
            if not data:
                raise RuntimeError("the zygote died")
            kind, idx, *rest = marshal.loads(data)
            job = self.running.get(idx)
            if kind == "pid":
                if job is None:
                    os.close(fds[0])
                    continue
                job.attempt.pid, job.attempt.pidfd = rest[0], fds[0]
                if job.attempt.timed_out or job.violation or (job.judged and job.attempt.ready):
                    self._kill(job)
            elif job is not None:
                self.finish(job, *rest)

    def expire(self) -> None:
        now = time.monotonic()
        while self.deadlines and self.deadlines[0][0] <= now:
            _, _, job, kind, idx, unit = heapq.heappop(self.deadlines)
            if self.running.get(idx) is not job:
                continue
            a = job.attempt
            if a.pid is None:  # the zygote has not reported the pid yet: look again shortly
                self.schedule(now + 0.01, job, kind, idx, unit)
            elif kind == "demote":
                self._demote(job)
            elif kind == "deadline":
                a.timed_out = True
                self._kill(job)
            elif kind == "unit":
                job.unit_timed_out(unit)
                if job.restart or job.judged:
                    self._kill(job)
                else:
                    self.after_progress(job)

    def _demote(self, job: Job) -> None:
        try:
            os.setpriority(os.PRIO_PGRP, job.attempt.pid, 19)  # the child called setpgid(0, 0): group id = pid
            job.attempt.demoted = True
            self.demoted += 1
        except OSError:
            pass

    def has_room(self) -> bool:
        busy = len(self.running) - self.demoted
        return busy < self.workers and self.demoted < MAX_DEMOTED_PER_WORKER * self.workers

    def _kill(self, job: Job) -> None:
        """SIGKILL through the pidfd (immune to pid reuse); before the pid is known, when it arrives."""
        a = job.attempt
        if a.pidfd is None:
            return
        try:
            signal.pidfd_send_signal(a.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not self.ns:  # the rest of its process group; orphans are the zygote's business
            try:
                os.killpg(a.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _read(self, job: Job, fd: int, kind: str) -> None:
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            if not data:
                if fd in self.by_fd:
                    self.ep.unregister(fd)
                    del self.by_fd[fd]
                return
            if kind == "out":
                job.output(data)
            else:
                job.frames(data)
                self.after_progress(job)

    def finish(self, job: Job, status: int, cpu: float) -> None:
        """The zygote reaped the child (in namespace mode: with everything it started), so the pipes hold all."""
        a = job.attempt
        del self.running[a.idx]
        self.demoted -= a.demoted
        for fd, kind in ((a.rep_r, "rep"), (a.out_r, "out")):
            self._read(job, fd, kind)
        for fd in (a.rep_r, a.out_r, a.req_w, a.pidfd):
            if fd in self.by_fd:
                self.ep.unregister(fd)
                del self.by_fd[fd]
            if fd is not None:
                os.close(fd)
        if not self.ns:
            _isolation.rmtree(a.workdir)
        if status < 0:
            job.failure = ("error", f"could not start the sandbox: {os.strerror(-status)}")
        elif job.child_ended(lambda: self.death(job, status, cpu)):
            self.spawn(job, job.restart_static())
            return
        self.emit(job.result())
        job.release()

    def death(self, job: Job, status: int, cpu: float) -> tuple[str, str]:
        """(status, detail) for a child that ended before the judge was done with it."""
        a = job.attempt
        if a.timed_out:
            return "timeout", f"no verdict within {job.timeout:g} s (wall clock)"
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig in (signal.SIGKILL, signal.SIGXCPU) and cpu >= a.cpu_limit - 0.05:
                return "timeout", f"CPU time limit of {a.cpu_limit} s reached"
            return "killed", f"killed by {signal.Signals(sig).name}"
        last = job.out.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        code = os.WEXITSTATUS(status)
        return "error", f"exited with status {code} before the tests finished" + (f": {last[0][:200]}" if
                                                                                  last[0] else "")

    # -- I/O with the client
    def emit(self, message: dict) -> None:
        self.outbuf += json.dumps(message).encode() + b"\n"  # written once per loop turn (see serve)

    def flush(self) -> None:
        while self.outbuf:
            try:
                n = os.write(1, self.outbuf)
            except BlockingIOError:
                break
            del self.outbuf[:n]
        want = bool(self.outbuf)
        if want and not self.out_registered:
            self.ep.register(1, select.EPOLLOUT)
        elif self.out_registered and not want:
            self.ep.unregister(1)
        self.out_registered = want

    def read_stdin(self) -> None:
        while True:
            try:
                data = os.read(0, 1 << 20)
            except BlockingIOError:
                break
            if not data:
                self.stdin_open = False
                self.ep.unregister(0)
                break
            self.inbuf += data
        *lines, self.inbuf = self.inbuf.split(b"\n")
        for line in filter(None, lines):
            spec = json.loads(line)
            self.workers = max(1, int(spec.get("workers") or self.workers))
            self.queue.append(spec)

    def serve(self) -> None:
        try:
            self._loop()
        finally:  # client gone (EOF, broken pipe) or a bug: leave nothing running behind us
            for job in list(self.running.values()):
                self._kill(job)
            self.zygote.close()  # the zygote kills what is left (and sweeps orphans) and exits
            os.waitpid(self.zygote_pid, 0)
            if not self.ns:
                _isolation.rmtree(self.root)

    def _loop(self) -> None:
        os.set_blocking(0, False)
        os.set_blocking(1, False)
        self.ep.register(0, select.EPOLLIN)
        self.ep.register(self.zygote.fileno(), select.EPOLLIN)
        self.emit({"hello": {"level": self.level, "pid": os.getpid(), "zygote": self.zygote_pid,
                             "reason": self.reason}})
        self.flush()
        while self.stdin_open or self.running:
            if not self.stdin_open:  # the client went away: stop everything and leave
                self.queue.clear()
                for job in list(self.running.values()):
                    if not job.attempt.timed_out:
                        job.attempt.timed_out = True
                        self._kill(job)
            while self.queue and self.has_room():
                self.start(self.queue.popleft())
            wait = max(0.0, self.deadlines[0][0] - time.monotonic()) if self.deadlines else -1
            for fd, _ in self.ep.poll(wait):
                if fd == 0:
                    self.read_stdin()
                elif fd == 1:
                    self.flush()
                elif fd == self.zygote.fileno():
                    self.from_zygote()
                elif fd in self.by_fd:
                    job, kind = self.by_fd[fd]
                    if kind == "req":
                        self.write_requests(job)
                    else:
                        self._read(job, fd, kind)
            self.expire()
            self.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the caller; we stop when stdin closes
    try:
        Executor(os.environ.get("MI_SANDBOX_ISOLATION", "auto")).serve()
    except BrokenPipeError:
        pass
    except OSError as e:
        if e.errno != errno.EPIPE:
            raise


if __name__ == "__main__":
    main()
