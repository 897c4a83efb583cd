"""Run untrusted, model-written code against asserts: isolated, and fast enough for every stage.

Every stage (candidate filtering, self-generation, evaluation) executes code we did not write. The reference
notebooks ``exec``-ed it in the notebook process; here each candidate runs in its own forked child of a small
executor process (``_executor.py``), inside fresh user/mount/pid namespaces over a minimal read-only root, with
rlimits and no capabilities. The child only evaluates the calls of its own code and ships their values back
(``_child.py``); a judge in the executor, which alone holds the expected values, decides each test
(``_program.py`` splits the tests, ``_judge.py`` runs them). See docs/sandbox.md for the threat model and the
measured throughput.

    >>> from common.sandbox import run_tests
    >>> run_tests("def f(x):\\n    return x + 1", ["assert f(1) == 2"]).status
    'passed'

The executor is started lazily, once per process, and restarted if it dies; the caller is never forked.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Iterable

STATUSES = ("passed", "failed", "error", "timeout", "killed")
_EXECUTOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_executor.py")
_PROGRESS_MIN = 50  # batches smaller than this finish too fast for a progress bar to help
_STARTUP_TIMEOUT = 60.0
_HANG_GRACE = 30.0  # seconds past the job timeout after which a silent executor counts as hung


FORMS = ("asserts", "check")
TEST_STATUSES = STATUSES + ("skipped",)


@dataclass
class ExecJob:
    """One program to judge.

    ``form="asserts"`` (MBPP): ``tests`` is a list of test statements, one unit each; ``setup`` runs before
    ``code`` (MBPP full's ``test_setup_code``), ``imports`` after it and in the judge (sanitized MBPP's
    ``test_imports``). ``form="check"`` (HumanEval): ``tests`` is ``[test_module_source]`` defining
    ``check(candidate)``, called with ``entry_points[0]``. ``entry_points``: the names under test; a builtin
    name a test uses is the program's only when listed here (MBPP task 126 tests its own ``sum``).
    """

    code: str
    tests: list[str]
    setup: str = ""
    imports: list[str] = dataclasses.field(default_factory=list)
    form: str = "asserts"
    entry_points: list[str] = dataclasses.field(default_factory=list)


@dataclass
class ExecResult:
    """Verdict for one job. ``status`` is one of STATUSES; ``passed`` is true only for "passed".

    ``detail`` is one short line (the first failing test or the exception); ``output`` the captured
    stdout+stderr (capped); ``duration`` wall-clock seconds inside the sandbox. Per test (unit):
    ``test_status`` (TEST_STATUSES; "skipped" = never reached because the process had ended),
    ``tests_passed`` of ``tests_total``; ``judged_in_candidate`` lists the units whose values could not be
    shipped to the judge and were judged inside the candidate's process (a pass there is forgeable).
    """

    passed: bool
    status: str
    detail: str = ""
    duration: float = 0.0
    output: str = ""
    tests_passed: int = 0
    tests_total: int = 0
    test_status: list[str] = dataclasses.field(default_factory=list)
    judged_in_candidate: list[int] = dataclasses.field(default_factory=list)

    @property
    def pass_ratio(self) -> float:
        """Share of tests passed (the data-optimisation study's ``avgpassratio`` averages this)."""
        return self.tests_passed / self.tests_total if self.tests_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_workers() -> int:
    """Children run at once. More than the cores: a child spends part of its life in the kernel (namespace
    creation and teardown), so 2x cores keeps the CPUs busy (measured with benchmarks/bench_sandbox.py)."""
    return 2 * (os.cpu_count() or 1)


class Sandbox:
    """A handle on one executor process. Most code uses the module-level functions instead.

    ``isolation``: "auto" (namespaces where the kernel allows, else rlimits+pgroup), "namespaces" (fail if
    unavailable) or "rlimits" (force the fallback; used by the tests to cover it).
    """

    def __init__(self, isolation: str = "auto"):
        if isolation not in ("auto", "namespaces", "rlimits"):
            raise ValueError(f"isolation must be auto, namespaces or rlimits, not {isolation!r}")
        self.isolation = isolation
        self._proc: subprocess.Popen | None = None
        self._owner = -1
        self._hello: dict = {}
        self._lock = threading.RLock()
        self._next_id = 0

    # -- executor process
    def _ensure(self) -> subprocess.Popen:
        if self._proc is None or self._owner != os.getpid() or self._proc.poll() is not None:
            self._start()
        return self._proc

    def _start(self) -> None:
        if self._proc is not None and self._owner == os.getpid():
            self._stop()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": "/tmp",
               "MI_SANDBOX_ISOLATION": self.isolation}
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-X", "utf8", _EXECUTOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd="/", env=env, bufsize=0, close_fds=True, start_new_session=True)
        self._owner = os.getpid()
        self._buf = b""
        line = self._readline(_STARTUP_TIMEOUT)
        if line is None:
            err = self._stop()
            raise RuntimeError(f"sandbox executor failed to start: {err.strip()[-2000:]}")
        self._hello = json.loads(line)["hello"]

    def _readline(self, timeout: float) -> bytes | None:
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            if not select.select([fd], [], [], timeout)[0]:
                return None
            data = os.read(fd, 1 << 20)
            if not data:
                return None
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def _stop(self) -> str:
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        err = b""
        try:  # communicate closes stdin (the executor's cue to stop) and collects its stderr. Closing stdin
            # ourselves first made communicate raise (flush of a closed file): every executor was SIGKILLed
            # and its stderr, the reason a failed start gives, was lost.
            _, err = proc.communicate(timeout=10)
        except Exception:  # noqa: BLE001 - a wedged executor is killed
            proc.kill()
            _, err = proc.communicate()
        _remove_work_roots(proc.pid)
        return (err or b"").decode(errors="replace")

    def close(self) -> None:
        with self._lock:
            if self._owner == os.getpid():
                self._stop()
            self._proc = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def isolation_level(self) -> str:
        with self._lock:
            self._ensure()
            return self._hello["level"]

    # -- running jobs
    def run_tests(self, code: str, tests: list[str], setup: str = "", timeout: float = 5.0,
                  memory_mb: int = 1024, **job_fields) -> ExecResult:
        return self.run_batch([ExecJob(code, tests, setup, **job_fields)], workers=1, timeout=timeout,
                              memory_mb=memory_mb, progress=False)[0]

    def run_batch(self, jobs: Iterable[Any], workers: int | None = None, timeout: float = 5.0,
                  memory_mb: int = 1024, progress: bool | str = True, desc: str = "sandbox",
                  test_timeout: float | None = None) -> list[ExecResult]:
        specs = [_spec(job, i) for i, job in enumerate(jobs)]
        results: list[ExecResult | None] = [None] * len(specs)
        if not specs:
            return []
        common = {"timeout": float(timeout), "memory_mb": int(memory_mb), "workers": workers or default_workers()}
        if test_timeout:
            common["test_timeout"] = float(test_timeout)
        bar = _progress_bar(len(specs), progress, desc)
        with self._lock:
            try:
                self._run_all(specs, common, results, bar)
            except BaseException:
                self._stop()  # an interrupted batch would keep running in the executor
                raise
            finally:
                if bar is not None:
                    bar.close()
        return results  # type: ignore[return-value]

    def _run_all(self, specs, common, results, bar) -> None:
        """Run every job; when the executor dies, re-run what was in flight. Jobs caught in a second death run
        alone, so a job that kills the executor every time is found and reported without taking the others
        of the batch with it."""
        deaths = [0] * len(specs)
        todo = list(range(len(specs)))
        while todo:
            self._ensure()
            lost, err = self._pump(specs, todo, common, results, bar)
            for i in lost:
                deaths[i] += 1
            again = [i for i in lost if deaths[i] < 2]
            suspects = [i for i in lost if deaths[i] >= 2]
            for i in suspects:  # one at a time: only the culprit can die now
                self._ensure()
                solo, err = self._pump(specs, [i], {**common, "workers": 1}, results, bar)
                if solo:
                    results[i] = ExecResult(False, "error", f"the program killed the sandbox executor: "
                                            f"{err.strip()[-200:]}", tests_total=0)
                    if bar is not None:
                        bar.update(1)
            todo = again

    def _pump(self, specs, todo, common, results, bar) -> tuple[list[int], str]:
        """Stream ``todo`` to the executor and collect verdicts; return (jobs lost to an executor death, its
        stderr)."""
        ids = {}
        out = bytearray()
        for i in todo:
            self._next_id += 1
            ids[self._next_id] = i
            out += json.dumps({"id": self._next_id, **specs[i], **common}).encode() + b"\n"
        wfd, rfd = self._proc.stdin.fileno(), self._proc.stdout.fileno()
        os.set_blocking(wfd, False)
        idle_limit = common["timeout"] + _HANG_GRACE
        dead = False
        while ids and not dead:
            ready_r, ready_w, _ = select.select([rfd], [wfd] if out else [], [], idle_limit)
            if not ready_r and not ready_w:
                dead = True  # hung: restart it
                break
            if ready_w:
                try:
                    del out[: os.write(wfd, out[: 1 << 16])]
                except (BrokenPipeError, BlockingIOError) as e:
                    dead = isinstance(e, BrokenPipeError)
            if ready_r:
                data = os.read(rfd, 1 << 20)
                if not data:
                    dead = True
                self._buf += data
                *lines, self._buf = self._buf.split(b"\n")
                for line in lines:
                    msg = _parse_result(line)
                    i = ids.pop(msg.pop("id"), None)
                    if i is not None:
                        results[i] = ExecResult(**msg)
                        if bar is not None:
                            bar.update(1)
        if not dead:
            return [], ""
        err = self._stop()
        return sorted(ids.values()), err


def _remove_work_roots(executor_pid: int) -> None:
    """Fallback mode keeps candidate directories under ``$TMPDIR/mi-sandbox-<executor pid>-*``; an executor
    that was killed could not remove them (namespace mode needs nothing: a private tmpfs dies with the child)."""
    import glob
    import shutil

    def unlock(func, path, _exc):
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            func(path)
        except OSError:
            pass

    for root in glob.glob(os.path.join(tempfile.gettempdir(), f"mi-sandbox-{executor_pid}-*")):
        shutil.rmtree(root, onerror=unlock)


_RESULT_FIELDS = frozenset(f.name for f in dataclasses.fields(ExecResult))


def _parse_result(line: bytes) -> dict:
    """A verdict line from the executor. The executor builds every line itself (nothing a candidate wrote is
    passed through), so a malformed one is a bug: raised, never skipped (a skipped verdict stalled a batch)."""
    msg = json.loads(line)
    if isinstance(msg, dict) and "error" in msg:
        raise ValueError(f"the sandbox executor refused a job: {msg['error']}")
    if not (isinstance(msg, dict) and set(msg) == _RESULT_FIELDS | {"id"} and msg["status"] in STATUSES):
        raise RuntimeError(f"malformed verdict from the sandbox executor: {line[:200]!r}")
    return msg


def _spec(job: Any, index: int) -> dict:
    get = job.get if isinstance(job, dict) else (lambda k, d=None: getattr(job, k, d))
    code, tests, setup = get("code"), get("tests"), get("setup", "") or ""
    imports, form, entry_points = list(get("imports", None) or []), get("form", None) or "asserts", \
        list(get("entry_points", None) or [])
    if isinstance(tests, str):
        tests = [tests]
    where = f"job {index}"
    if not isinstance(code, str) or not isinstance(tests, (list, tuple)) or not all(isinstance(t, str) for t in tests):
        raise TypeError(f"{where}: a job needs code: str and tests: list[str], got "
                        f"{type(code).__name__}/{type(tests).__name__}")
    if form not in FORMS:
        raise ValueError(f"{where}: form must be one of {FORMS}, not {form!r}")
    if form == "check" and (len(tests) != 1 or not entry_points):
        raise ValueError(f"{where}: a check-form job needs tests=[check module source] and an entry point")
    if not all(isinstance(x, str) for x in imports + entry_points + [setup]):
        raise TypeError(f"{where}: setup, imports and entry_points must be strings")
    return {"code": code, "tests": list(tests), "setup": setup, "imports": imports, "form": form,
            "entry_points": entry_points}


def _progress_bar(total: int, progress: bool | str, desc: str):
    if not progress or total < _PROGRESS_MIN:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=progress if isinstance(progress, str) else desc, unit="prog")


_default: Sandbox | None = None
_default_lock = threading.Lock()


def _sandbox() -> Sandbox:
    global _default
    with _default_lock:
        if _default is None:
            _default = Sandbox(os.environ.get("MI_SANDBOX_ISOLATION", "auto"))
            atexit.register(_default.close)
        return _default


def run_tests(code: str, tests: list[str], setup: str = "", timeout: float = 5.0,
              memory_mb: int = 1024, **job_fields) -> ExecResult:
    """Judge one program (``job_fields``: imports, form, entry_points; see ExecJob and ExecResult)."""
    return _sandbox().run_tests(code, tests, setup, timeout, memory_mb, **job_fields)


def run_batch(jobs: Iterable[Any], workers: int | None = None, timeout: float = 5.0, memory_mb: int = 1024,
              progress: bool | str = True, desc: str = "sandbox", test_timeout: float | None = None
              ) -> list[ExecResult]:
    """Judge many jobs (ExecJob, or dicts/objects with its fields); results in input order. ``timeout`` bounds
    each job; ``test_timeout`` (optional) each test, after which the next test still runs."""
    return _sandbox().run_batch(jobs, workers, timeout, memory_mb, progress, desc, test_timeout)


def isolation_level() -> str:
    """Which isolation is active, e.g. "namespaces(user,mount,pid,net)+minimal-root+rlimits" or "rlimits+pgroup"."""
    return _sandbox().isolation_level()


__all__ = ["ExecJob", "ExecResult", "FORMS", "STATUSES", "TEST_STATUSES", "Sandbox", "default_workers", "isolation_level", "run_batch",
           "run_tests"]
