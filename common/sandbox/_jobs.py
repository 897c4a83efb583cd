"""One job inside the executor: the compiled program and test, the judge, and the child processes it takes.

A job usually takes one child ("attempt"). It takes another only after a per-test timeout: the child is killed,
that unit is recorded as a timeout and a fresh child runs the program again for the units left, within the
job's overall time limit. Everything the child sends is checked here (``_wire`` frames, in the order the
protocol allows); anything else is a protocol violation, which fails the job and never passes it. Standard
library only (runs in the executor).
"""

from __future__ import annotations

import builtins
import collections
import marshal
import time

import _harness
import _judge
import _program
import _wire

OUTPUT_CAP = 16 * 1024  # bytes of stdout+stderr kept per job; the rest is read and dropped
RECEIVE_CAP = 64 << 20  # bytes of frames one child may send
FORMS = ("asserts", "check")
_programs: dict = {}
_BUILTIN_OBJECTS = frozenset(name for name in vars(builtins) if not name.startswith("_"))
_PROGRAM_CACHE = 20_000


class Attempt:
    """One child process of a job, with its pipes and what it sent."""

    __slots__ = ("idx", "pid", "pidfd", "rep_r", "out_r", "req_w", "reader", "static_queue", "outbox", "received",
                 "timed_out", "demoted", "cpu_limit", "workdir", "t0", "ready")

    def __init__(self, idx: int, static: list[int], cpu_limit: int, workdir: str):
        self.idx, self.static_queue, self.cpu_limit, self.workdir = idx, collections.deque(static), cpu_limit, workdir
        self.pid = self.pidfd = self.rep_r = self.out_r = self.req_w = None
        self.reader, self.outbox, self.received = _wire.FrameReader(), bytearray(), 0
        self.timed_out = self.demoted = self.ready = False
        self.t0 = time.monotonic()


def _used_builtins(tests: list[str]) -> frozenset[str]:
    import ast

    names = set()
    for t in tests:
        try:
            names |= _program.loaded_names(ast.parse(t))
        except (SyntaxError, ValueError):
            pass
    return frozenset(names & _program.BUILTIN_NAMES)


def compile_test_program(spec: dict, code_source: str, code) -> _program.TestProgram:
    """The test program for this job (cached: the same tests serve every sample of a task)."""
    form, tests = spec["form"], spec["tests"]
    entry_points = spec.get("entry_points") or []
    key = (form, tuple(tests), spec.get("setup") or "", tuple(spec.get("imports") or ()), tuple(entry_points))
    base = _programs.get(key)
    if base is None:
        base = _programs[key] = {"builtins": _used_builtins(tests)}
        if len(_programs) > _PROGRAM_CACHE:
            _programs.clear()
            _programs[key] = base
    if entry_points:
        shadows = frozenset(entry_points) & _program.BUILTIN_NAMES
    elif base["builtins"] and type(code) is not str and base["builtins"] & set(code.co_names):
        shadows = _program.program_shadows(code_source, set(base["builtins"]))
    else:
        shadows = frozenset()
    hit = base.get(shadows)
    if hit is None:
        try:
            if form == "check":
                hit = _program.compile_check(tests[0] if tests else "", entry_points[0] if entry_points else "",
                                             shadows)
            else:
                hit = _program.compile_asserts(tests, spec.get("setup") or "", list(spec.get("imports") or ()),
                                               shadows)
        except _program.TestCompileError as e:
            hit = str(e)
        except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError) as e:
            hit = f"test does not compile: {type(e).__name__}: {e}"
        base[shadows] = hit
    return hit


class Job:
    """A job's whole life in the executor; the executor calls ``start``, feeds frames and exits, sends ``result``."""

    def __init__(self, spec: dict):
        self.spec, self.id = spec, spec["id"]
        self.timeout = float(spec.get("timeout", 5.0))
        self.test_timeout = float(spec["test_timeout"]) if spec.get("test_timeout") else None
        self.memory = int(spec.get("memory_mb", 1024)) << 20
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.timeout
        self.out, self.out_total = bytearray(), 0
        self.attempt: Attempt | None = None
        self.attempts = 0
        self.judge: _judge.Judge | None = None
        self.program: _program.TestProgram | str | None = None  # set by prepare (a str: why it did not compile)
        self.failure: tuple[str, str] | None = None  # (status, detail) deciding the job before/without the judge
        self.abort: tuple[str, str] | None = None
        self.violation = ""
        self.restart = False
        self.next_request = None
        self._sent = None  # the request last written to the child (each is sent once)

    # -- preparation (before any child exists)
    def prepare(self) -> bool:
        """Compile the program and the test; False when the job is decided already (see ``failure``)."""
        spec = self.spec
        if spec.get("form", "asserts") not in FORMS:
            self.failure = ("error", f"unknown test form {spec.get('form')!r}")
            return False
        spec.setdefault("form", "asserts")
        self.code = _harness.compile_program(spec["code"], "<candidate>")
        self.setup = _harness.compile_program(spec["setup"], "<setup>") if spec.get("setup") else None
        self.program = compile_test_program(spec, spec["code"], self.code)
        if type(self.program) is str:
            self.failure = ("error", self.program if self.program.startswith("test") else
                            f"test does not compile: {self.program}")
            return False
        try:
            self.judge = _judge.Judge(self.program)
            self.next_request = self.judge.advance()
        except Exception as e:  # noqa: BLE001 - the test's own module code failed in the judge
            self.failure = ("error", _judge.one_line(f"the test failed in the judge: {type(e).__name__}: {e}"))
            return False
        return True

    def child_request(self, idx: int, workdir: str, static: list[int], now: float) -> bytes:
        remaining = max(0.05, self.deadline - now)
        cpu_limit = max(1, int(remaining + 0.999))
        self.attempt = Attempt(idx, static, cpu_limit, workdir)
        self.attempts += 1
        p = self.program
        payload = marshal.dumps((workdir, cpu_limit, self.memory, self.code, self.setup, p.imports, p.probes,
                                 static, p.serve))
        return idx.to_bytes(8, "little") + payload

    def first_static(self) -> list[int]:
        return [k for k, s in enumerate(self.program.static) if s]

    def restart_static(self) -> list[int]:
        """Static probes a continuation child evaluates: those of the units after the timed-out one."""
        j = self.judge
        later = [f for f in self.program.first_probe[max(0, j.current):] if f is not None]
        start = later[0] if later else len(self.program.static)
        if j.pending is not None and j.pending[0] == "p" and self.program.static[j.pending[1]]:
            start = min(start, j.pending[1])
        return [k for k, s in enumerate(self.program.static) if s and k >= start and k not in j.used
                and k not in j.values]

    # -- what the child sends
    def output(self, data: bytes) -> None:
        self.out_total += len(data)
        self.out += data[: max(0, OUTPUT_CAP - len(self.out))]

    def frames(self, data: bytes) -> None:
        """Frames from the current child; sets ``violation`` on anything out of protocol."""
        a = self.attempt
        if self.violation or a is None:
            return
        a.received += len(data)
        try:
            if a.received > RECEIVE_CAP:
                raise ValueError(f"more than {RECEIVE_CAP >> 20} MiB of frames")
            for message in a.reader.feed(data):
                self.dispatch(message)
        except ValueError as e:
            self.violation = str(e)

    def dispatch(self, m) -> None:
        a, j = self.attempt, self.judge
        if type(m) is not tuple or not m or type(m[0]) is not str:
            raise ValueError("a frame that is not a message")
        kind = m[0]
        if kind == "ready" and len(m) == 1 and not a.ready:
            a.ready = True
            return
        if not a.ready:
            if kind == "abort" and len(m) == 3 and all(type(x) is str for x in m[1:]):
                self.abort = (m[1], m[2])
                return
            raise ValueError("a message before the program ran")
        if kind in ("v", "h", "x", "u", "b") and len(m) >= 3 and type(m[1]) is int:
            if kind == "b" and not (len(m) == 3 and type(m[2]) is str and m[2] in _BUILTIN_OBJECTS):
                raise ValueError("a malformed builtin reference")
            if kind == "h" and not (len(m) == 5 and type(m[2]) is int and type(m[3]) is str
                                    and m[4] in (True, False, None) and type(m[4]) is not int):
                raise ValueError("a malformed handle")
            if kind == "x" and not (len(m) == 4 and type(m[2]) is str and type(m[3]) is str):
                raise ValueError("a malformed exception")
            if kind == "v" and len(m) != 3:
                raise ValueError("a malformed value")
            if kind == "u" and not (len(m) == 4 and m[2] in ("passed", "failed", "error") and type(m[3]) is str):
                raise ValueError("a malformed unit verdict")
            if a.static_queue:
                if kind == "u" or m[1] != a.static_queue[0]:
                    raise ValueError(f"an answer out of order (expected probe {a.static_queue[0]})")
                a.static_queue.popleft()
                resumed = j.static_arrived(m)
                if resumed is not False:
                    self.next_request = resumed
            else:
                if self.next_request is None or self.next_request[0] not in ("p", "u") or \
                        self.next_request[0] != ("u" if kind == "u" else "p"):
                    raise ValueError("an answer nobody asked for")
                self.next_request = j.receive(m)
            return
        raise ValueError(f"an unknown message {kind[:20]!r}")

    def pending_request(self) -> bytes | None:
        """Bytes to send to the child for the judge's current request (once), or None."""
        r = self.next_request
        if r is None or r[0] not in ("p", "u") or self._sent is r:
            return None
        self._sent = r
        if r[0] == "u":
            return _wire.encode(("u", r[1], _program.unit_code(self.program, r[1]), r[2]))
        return _wire.encode(r)

    @property
    def judged(self) -> bool:
        return self.judge is None or self.judge.done

    # -- the child ended
    def child_ended(self, describe_death) -> bool:
        """Account for the end of the current child; True when another child must run (per-test timeout)."""
        a, j = self.attempt, self.judge
        if self.violation:
            j.gone("error", f"the program broke the sandbox protocol: {self.violation}")
            return False
        if self.abort is not None:
            stage, detail = self.abort
            self.failure = ("error", _judge.one_line(f"{detail} in {stage}"))
            return False
        if not a.ready:
            self.failure = describe_death()
            return False
        if self.restart and not j.done and time.monotonic() < self.deadline - 0.01:
            self.restart = False
            self._sent = None  # the new child must be asked again
            return True
        if not j.done:
            j.gone(*describe_death())
        return False

    def unit_timed_out(self, unit: int) -> None:
        """The per-test limit of ``unit`` passed: record it, move the judge on, have the child replaced."""
        j = self.judge
        if j.done or j.current != unit:
            return
        self.next_request = j.skip_current(f"no result within the per-test limit of {self.test_timeout:g} s")
        self.restart = not j.done

    def release(self) -> None:
        """Drop the judge (its generator and namespace refer to each other): stale deadline entries keep a
        finished job alive until its timeout, and thousands of such cycles made the collector the executor's
        biggest cost (0.9 -> 0.3 ms of executor CPU per job, measured on 1,200 MBPP programs)."""
        j, self.judge = self.judge, None
        if j is not None:
            j.gen.close()
            j.namespace.clear()
            j.gen = j.namespace = None
        self.program = self.code = self.setup = None
        self.attempt = None

    def result(self) -> dict:
        duration = time.monotonic() - self.t0
        out = self.out.decode("utf-8", "replace")
        if self.out_total > len(self.out):
            out += f"\n[... {self.out_total - len(self.out)} more bytes dropped]"
        j = self.judge
        n = len(self.program.units) if type(self.program) is _program.TestProgram else \
            max(1, len(self.spec.get("tests") or ()))
        if self.failure is not None:
            status, detail = self.failure
            per_test = ["error" if status == "error" else status] * n
            in_candidate: list[int] = []
        else:
            status, detail = j.verdict()
            per_test = list(j.status)
            in_candidate = sorted(j.judged_here)
        return {"id": self.id, "passed": status == "passed", "status": status, "detail": _judge.one_line(detail),
                "duration": round(duration, 6), "output": out, "tests_passed": per_test.count("passed"),
                "tests_total": n, "test_status": per_test, "judged_in_candidate": in_candidate}
