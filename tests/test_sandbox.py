"""The sandbox, attacked the way model-written code (or a harness bug) would: every test really executes.

Most adversarial tests run twice: with the isolation this machine offers ("auto": namespaces where the kernel
allows) and with the forced fallback ("rlimits"). Tests of guarantees only namespaces give (no writes outside
the working directory, no network, a private /proc) run on the namespace level and are skipped elsewhere.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from common import sandbox as sb
from common.sandbox import ExecJob, ExecResult, Sandbox

REPO = Path(__file__).resolve().parent.parent
MBPP = Path(os.environ.get("MBPP_PATH") or REPO.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl")
BROKEN_UPSTREAM = {367, 927}  # test_setup_code builds `Node` objects before the code defines the class

ADD = "def f(x):\n    return x + 1\n"


def _namespaces_possible() -> bool:
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "true"],
                              capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def run(box: Sandbox, code: str, tests=("assert f(1) == 2",), **kw) -> ExecResult:
    return box.run_tests(textwrap.dedent(code), list(tests), **kw)


def processes_named(tag: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == tag:
                    found.append(int(pid))
        except OSError:
            pass
    return found


# ------------------------------------------------------------------------------------------------ basics --
def test_isolation_level_is_namespaces_where_the_kernel_allows():
    level = sb.isolation_level()
    assert level.startswith(("namespaces(user,mount,pid,net)+minimal-root+rlimits", "rlimits+pgroup"))
    if _namespaces_possible():
        assert level.startswith("namespaces"), sb._sandbox()._hello


def test_forced_fallback_reports_it():
    fallback = Sandbox("rlimits")
    try:
        assert fallback.isolation_level() == "rlimits+pgroup"
    finally:
        fallback.close()


def test_statuses_details_and_dict_conversion(box):
    ok = run(box, ADD)
    assert (ok.passed, ok.status, ok.detail) == (True, "passed", "")
    assert set(ok.to_dict()) == {"passed", "status", "detail", "duration", "output", "tests_passed", "tests_total",
                                 "test_status", "judged_in_candidate"}
    assert 0 < ok.duration < 5

    bad = run(box, ADD, ["assert f(1) == 2", "assert f(2) == 4", "assert f(3) == 4"])
    assert (bad.passed, bad.status) == (False, "failed")
    assert bad.detail == "assert f(2) == 4"  # the first failing assert, verbatim

    err = run(box, "def f(x):\n    return x / 0\n")
    assert err.status == "error" and "ZeroDivisionError" in err.detail and "assert f(1) == 2" in err.detail
    syntax = run(box, "def f(x) return x")
    assert syntax.status == "error" and "SyntaxError" in syntax.detail
    assert all(r.status in sb.STATUSES for r in (ok, bad, err, syntax))


def test_program_compiles_as_python_would_run_it(box):
    """The harness module's `from __future__ import annotations` must not leak into the program: under `python`,
    an annotation naming an undefined type raises NameError at `def` time, so such a program does not pass."""
    undefined = run(box, "def f(x: List[int]) -> int:\n    return x\n", ["assert f(1) == 1"])
    assert undefined.status == "error" and "NameError: name 'List' is not defined in code" == undefined.detail
    evaluated = run(box, "def f(x: int) -> int:\n    return x\n", ["assert f.__annotations__['x'] is int"])
    assert evaluated.passed, evaluated
    future = run(box, "from __future__ import annotations\ndef f(x: List[int]):\n    return x\n", ["assert f(1) == 1"])
    assert future.passed, future  # opting in still works


def test_compile_errors_keep_their_stage_and_setup_runs_first(box):
    code = run(box, "def f(x):\n    return x +\n")
    assert code.status == "error" and code.detail.startswith("SyntaxError") and code.detail.endswith(" in code")
    # setup runs (its output is kept) before the candidate's compile error is reported
    after_setup = box.run_tests("def f(x) return x", ["assert f(1) == 1"], setup="print('set up')")
    assert after_setup.status == "error" and after_setup.output == "set up\n", after_setup
    setup = box.run_tests(ADD, ["assert f(1) == 2"], setup="BASE = (")
    assert setup.status == "error" and setup.detail.endswith(" in setup"), setup
    nul = run(box, "def f(x):\n    return x\0\n")
    assert nul.status == "error" and nul.detail.endswith(" in code"), nul
    # the same source compiled once per executor serves every copy (and stays correct when cached)
    again = box.run_batch([{"code": ADD, "tests": ["assert f(1) == 2"]}] * 6 + [{"code": "def f(x) return x",
                                                                                 "tests": ["assert f(1) == 2"]}] * 2)
    assert [r.status for r in again] == ["passed"] * 6 + ["error"] * 2


def test_unicode_and_broken_tests(box):
    r = run(box, "def f(s):\n    return s[::-1]\nprint('héllo ✓')\n", ["assert f('añb') == 'bña'"])
    assert r.passed and r.output == "héllo ✓\n", r
    broken = run(box, ADD, ["assert f(1 == 2"])
    assert broken.status == "error" and broken.detail.startswith("test does not compile"), broken


def test_setup_runs_first_in_the_same_namespace(box):
    r = box.run_tests("def f():\n    return BASE * 2\n", ["assert f() == 42"], setup="BASE = 21")
    assert r.passed, r.detail


def test_run_batch_keeps_order_and_accepts_dicts_and_jobs(box):
    jobs = [ExecJob(ADD, [f"assert f({i}) == {i + 1 if i % 3 else 0}"]) if i % 2 else
            {"code": ADD, "tests": [f"assert f({i}) == {i + 1 if i % 3 else 0}"]} for i in range(60)]
    results = box.run_batch(jobs, progress=False)
    assert [r.passed for r in results] == [i % 3 != 0 for i in range(60)]


def test_module_level_api_and_progress_bar(capsys):
    results = sb.run_batch([{"code": ADD, "tests": ["assert f(0) == 1"]}] * 60, progress="judging")
    assert all(r.passed for r in results)
    assert "judging" in capsys.readouterr().err  # tqdm writes to stderr
    assert sb.run_tests(ADD, ["assert f(1) == 2"]).passed


def test_rejects_malformed_jobs():
    with pytest.raises(TypeError):
        sb.run_batch([{"code": ADD, "tests": [1]}])
    with pytest.raises(TypeError):
        sb.run_batch([{"tests": ["assert True"]}])


# ---------------------------------------------------------------------------- a pass must be earned --
EXIT_CHEATS = {
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "os._exit(0)": "import os\nos._exit(0)\n",
    "raise SystemExit": "raise SystemExit(0)\n",
    "KeyboardInterrupt": "raise KeyboardInterrupt\n",
    "exit inside the call": "import os\ndef f(x):\n    os._exit(0)\n",
    "sys.exit inside the call": "import sys\ndef f(x):\n    sys.exit(0)\n",
    "print a pass": "print('passed'); print('PASS 3/3 tests passed')\nimport sys; sys.stdout.flush()\n"
                    "import os\nos._exit(0)\n",
    "write garbage to every fd": "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'passed\\n')\n"
                                 "    except OSError:\n        pass\nos._exit(0)\n",
    "kill itself": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "atexit pass": "import atexit, sys\natexit.register(lambda: print('passed'))\nsys.exit(0)\n",
}


@pytest.mark.parametrize("name", list(EXIT_CHEATS))
def test_exit_tricks_never_pass(box, name):
    r = run(box, EXIT_CHEATS[name])
    assert not r.passed and r.status in ("error", "killed"), (name, r)


def test_catching_the_timeout_signals_does_not_help(box):
    code = """
    import signal, time
    for s in (signal.SIGXCPU, signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *a: None)
    def f(x):
        while True:
            pass
    """
    r = run(box, code, timeout=1.0)
    assert r.status == "timeout" and not r.passed, r


EQ_CHEATS = {
    "__eq__ always true": "class C:\n    def __eq__(self, o): return True\ndef f(x): return C()\n",
    "int subclass": "class C(int):\n    def __eq__(self, o): return True\n    __hash__ = int.__hash__\n"
                    "def f(x): return C(0)\n",
    "nested in a list": "class C:\n    __eq__ = lambda s, o: True\ndef f(x): return [C()]\n",
    "inside a dict": "class C:\n    __eq__ = lambda s, o: True\n    __hash__ = object.__hash__\n"
                     "def f(x): return {'a': C()}\n",
    "class made at call time": "def f(x):\n    return type('C', (), {'__eq__': lambda s, o: True})()\n",
    "__ne__ lies": "class C:\n    __ne__ = lambda s, o: False\ndef f(x): return C()\n",
}


@pytest.mark.parametrize("name", list(EQ_CHEATS))
def test_objects_with_lying_comparisons_do_not_pass(box, name):
    tests = {"nested in a list": ["assert f(1) == [2]"], "inside a dict": ["assert f(1) == {'a': 2}"],
             "__ne__ lies": ["assert not (f(1) != 2)"]}.get(name, ["assert f(1) == 2"])
    r = run(box, EQ_CHEATS[name], tests)
    assert r.status == "failed" and "defined by the program under test" in r.detail, (name, r)


def test_truthiness_and_membership_are_checked_too(box):
    truthy = "class T:\n    def __bool__(self): return True\ndef f(x): return T()\n"
    assert not run(box, truthy, ["assert f(1)"]).passed
    member = "class M:\n    __eq__ = lambda s, o: True\ndef f(x): return M()\n"
    assert not run(box, member, ["assert f(1) in [2, 3]"]).passed
    chained = "class M:\n    __lt__ = lambda s, o: True\ndef f(x): return M()\n"
    assert not run(box, chained, ["assert 0 < f(1) < 5"]).passed


def test_honest_objects_still_compare_normally(box):
    code = """
    import collections, fractions
    P = collections.namedtuple('P', 'a b')
    class Plain:          # no comparison dunders: identity semantics, trusted
        pass
    class MyInt(int):     # inherits int.__eq__
        pass
    def f(x):
        return MyInt(x + 1)
    def g():
        return collections.Counter('aab'), collections.OrderedDict(a=1), P(1, 2), fractions.Fraction(1, 2)
    SENTINEL = Plain()
    def h():
        return SENTINEL
    """
    tests = ["assert f(1) == 2", "assert f(1) != 3 and 1 < f(1) <= 2",
             "assert g() == (collections.Counter({'a': 2, 'b': 1}), {'a': 1}, (1, 2), 0.5)",
             "assert h() is SENTINEL and h() == SENTINEL", "assert f(1) in [1, 2] and [f(1)] == [2]",
             "assert all(f(i) == i + 1 for i in range(5))", "assert not f(-1)"]
    r = run(box, code, tests)
    assert r.passed, r


def test_rebinding_builtins_cannot_disable_the_tests(box):
    code = """
    import builtins
    def f(x):
        return 0
    builtins.exec = lambda *a, **k: None
    builtins.compile = lambda *a, **k: None
    builtins.isinstance = lambda *a: True
    builtins.type = lambda *a: int
    builtins.list = tuple
    """
    assert run(box, code).status == "failed"
    patched_modules = """
    import operator, types
    class Liar:
        __eq__ = lambda s, o: True
    def f(x):
        return Liar()
    def g(x):
        return 5
    operator.contains = lambda a, b: True
    types.WrapperDescriptorType = types.FunctionType
    types.FunctionType = type(len)
    """
    for test in ("assert f(1) == 2", "assert 2 in [f(1)]", "assert g(1) in [1, 2]"):
        assert run(box, patched_modules, [test]).status == "failed", test


def test_a_fork_that_passes_cannot_vouch_for_its_failing_parent(box):
    code = """
    import os
    CHILD = os.fork() == 0
    def f(x):
        return x + 1 if CHILD else 0
    """
    r = run(box, code)
    assert r.status == "failed", r


# ---------------------------------------------------------------------------------- resource limits --
def test_python_and_c_level_infinite_loops_time_out(box):
    jobs = [{"code": "while True:\n    pass\n", "tests": ["assert True"]},
            {"code": "sum(range(10 ** 12))\n", "tests": ["assert True"]},
            {"code": "import time\ntime.sleep(100)\n", "tests": ["assert True"]},
            {"code": ADD, "tests": ["assert f(1) == 2"]}]
    t0 = time.monotonic()
    results = box.run_batch(jobs, timeout=1.0, progress=False)
    assert [r.status for r in results] == ["timeout", "timeout", "timeout", "passed"], results
    assert time.monotonic() - t0 < 10
    assert all(0.9 < r.duration < 5 for r in results[:3])


def test_huge_allocation_fails_only_that_candidate(box):
    jobs = [{"code": "X = bytearray(4 * 2 ** 30)\n" + ADD, "tests": ["assert f(1) == 2"]}] + \
           [{"code": ADD, "tests": ["assert f(1) == 2"]}] * 5
    results = box.run_batch(jobs, progress=False)
    assert results[0].status == "error" and "MemoryError" in results[0].detail
    assert all(r.passed for r in results[1:])


def test_memory_limit_is_configurable(box):
    code = "X = bytearray(300 * 2 ** 20)\n" + ADD
    assert run(box, code, memory_mb=200).status == "error"
    assert run(box, code, memory_mb=1024).passed


def test_file_size_is_limited(box):
    code = "with open('big', 'wb') as fh:\n    fh.write(b'x' * (100 * 2 ** 20))\n" + ADD
    r = run(box, code)
    assert r.status == "error" and ("File too large" in r.detail or "No space" in r.detail), r


def test_fork_storm_is_bounded_and_fails_only_that_candidate(box):
    if box.isolation_level() == "rlimits+pgroup" and os.geteuid() == 0:
        pytest.skip("RLIMIT_NPROC does not bind root: the fallback cannot bound a fork storm (documented)")
    storm = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    jobs = [{"code": storm, "tests": ["assert True"]}] + [{"code": ADD, "tests": ["assert f(1) == 2"]}] * 6
    results = box.run_batch(jobs, timeout=2.0, progress=False)
    assert not results[0].passed
    assert all(r.passed for r in results[1:]), results


# ------------------------------------------------------------------------------------- no survivors --
SURVIVOR = """
import ctypes, os, time
def spawn(tag):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(15, tag.encode(), 0, 0, 0)  # PR_SET_NAME: findable from the host
            time.sleep(1000)
        os._exit(0)
    os.waitpid(pid, 0)
spawn({tag!r})
def f(x):
    time.sleep({linger})
    return x + 1
"""


@pytest.mark.skipif(not Path("/proc/sys/kernel/sched_autogroup_enabled").is_file()
                    or Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1",
                    reason="kernel without scheduler autogroups")
def test_candidate_shares_the_executors_autogroup_so_demotion_bites(box):
    """Own process group, not own session: a session is its own autogroup, which gets an equal CPU share
    whatever its nice value, so a demoted (nice 19) infinite loop would still take a core from the batch."""
    box.run_tests("x = 1", [])  # make sure the executor runs
    executor = Path(f"/proc/{box._hello['pid']}/autogroup").read_text().split()[0]
    r = box.run_tests("import os\nprint(open('/proc/self/autogroup').read().split()[0], os.getpgid(0) == os.getpid())",
                      [])
    assert r.passed and r.output.split() == [executor, "True"], (r, executor)


def test_setsid_grandchild_does_not_survive(box):
    tag = f"mi-surv-{os.getpid() % 100000}"
    seen = []
    watcher = threading.Thread(target=lambda: [seen.extend(processes_named(tag)) or time.sleep(0.05)
                                               for _ in range(60) if not seen])
    watcher.start()
    r = run(box, SURVIVOR.format(tag=tag, linger=2.0), timeout=10)
    watcher.join()
    assert r.passed, r
    assert seen, "positive control: the daemonised grandchild should be visible while the candidate runs"
    assert processes_named(tag) == [], "a process started by the candidate outlived run_tests"


def test_survivors_are_killed_on_timeout_too(box):
    tag = f"mi-surt-{os.getpid() % 100000}"
    r = run(box, SURVIVOR.format(tag=tag, linger=100), timeout=1.0)
    assert r.status == "timeout"
    assert processes_named(tag) == []


def test_executor_crash_leaves_no_survivors(nsbox):
    """Parent-death signals chain executor -> zygote -> candidate; the pid namespace takes the rest."""
    tag = f"mi-surc-{os.getpid() % 100000}"
    with Sandbox("auto") as own:
        worker = threading.Thread(target=own.run_tests, args=(SURVIVOR.format(tag=tag, linger=100), ["assert f(1) == 2"]),
                                  kwargs={"timeout": 3.0})
        worker.start()
        deadline = time.monotonic() + 10
        while not processes_named(tag) and time.monotonic() < deadline:
            time.sleep(0.02)
        first = processes_named(tag)
        assert first, "positive control: the daemon should be running"
        os.kill(own._proc.pid, 9)
        deadline = time.monotonic() + 5
        while set(first) & set(processes_named(tag)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not set(first) & set(processes_named(tag))
        worker.join()  # the job is retried once on a fresh executor and times out there


# --------------------------------------------------------------------------------- I/O containment --
def test_output_is_captured_capped_and_never_reaches_our_streams(box, capfd):
    code = """
    import os, sys
    print('hello from the candidate')
    sys.stderr.write('to stderr\\n')
    os.write(1, b'raw fd 1\\n')
    os.write(2, b'raw fd 2\\n')
    for path in ('/dev/tty', '/dev/console'):
        try:
            with open(path, 'w') as tty:
                tty.write('tty!\\n')
        except OSError:
            pass
    sys.stdout.write('x' * (20 * 2 ** 20))
    """
    r = run(box, textwrap.dedent(code) + ADD)
    assert r.passed, r
    assert "hello from the candidate" in r.output and "to stderr" in r.output and "raw fd 1" in r.output
    assert len(r.output) < 64 * 1024 and "more bytes dropped" in r.output
    out, err = capfd.readouterr()
    assert "candidate" not in out + err and "raw fd" not in out + err and "tty!" not in out + err


def test_stdin_is_closed(box):
    r = run(box, "import sys\nDATA = sys.stdin.read()\ndef f(x):\n    return len(DATA) + x + 1\n")
    assert r.passed, r
    assert run(box, "X = input()\n" + ADD).status == "error"


def test_private_working_directory_is_removed_even_after_a_crash(box):
    code = """
    import ctypes, os
    open('marker', 'w').write('x')
    os.mkdir('locked')
    open('locked/inner', 'w').write('y')
    os.chmod('locked', 0)
    os.write(1, os.getcwd().encode() + b'\\n')  # unbuffered: the crash below would lose a print()
    ctypes.string_at(0)  # segfault
    """
    r = run(box, code)
    assert r.status == "killed" and "SIGSEGV" in r.detail, r
    cwd = r.output.strip().splitlines()[0]
    assert not os.path.exists(cwd)
    ok = run(box, "import os\nprint(os.getcwd())\nopen('f', 'w').write('z')\n" + ADD)
    assert ok.passed and not os.path.exists(ok.output.strip())


def test_candidates_do_not_share_a_working_directory(box):
    code = "import os\nSEEN = os.listdir('.')\nopen('left-behind', 'w').write('x')\n" \
           "def f(x):\n    return x + 1 + len(SEEN)\n"
    results = box.run_batch([{"code": code, "tests": ["assert f(1) == 2"]}] * 8, progress=False)
    assert all(r.passed for r in results), results


def test_executor_imports_nothing_heavy(box):
    code = "import sys\nHEAVY = sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('torch', 'transformers', 'numpy', 'common', 'datasets', 'trl'))\n"
    r = box.run_tests(code, ["assert HEAVY == []"])
    assert r.passed, r


def test_the_caller_is_never_forked(box):
    forks = []
    os.register_at_fork(before=lambda: forks.append(1))
    box.run_batch([{"code": ADD, "tests": ["assert f(1) == 2"]}] * 20, progress=False)
    assert forks == []


def test_executor_is_restarted_after_it_dies(box):
    assert run(box, ADD).passed
    pid = box._proc.pid
    os.kill(pid, 9)
    box._proc.wait()
    assert run(box, ADD).passed
    assert box._proc.pid != pid
    assert not list(Path(tempfile.gettempdir()).glob(f"mi-sandbox-{pid}-*"))  # its work root is gone too


# ----------------------------------------------------------------- guarantees of the namespace level --
def test_no_writes_outside_the_working_directory(nsbox, tmp_path_factory):
    # Sentinels only: a broken sandbox must not be able to damage anything real while this test fails.
    outside = Path("/var/tmp") / f"mi-sandbox-sentinel-{os.getpid()}"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep.txt").write_text("keep")
    (outside / "sub" / "keep.txt").write_text("keep")
    in_tmp = tmp_path_factory.mktemp("sentinel") / "keep.txt"
    in_tmp.write_text("keep")
    repo_new = REPO / f"mi-sandbox-new-{os.getpid()}"
    try:
        code = f"""
        import os, shutil
        hits = []
        for path in ({str(outside / "keep.txt")!r}, {str(in_tmp)!r}):
            for attempt in (lambda: open(path, 'w').write('gone'), lambda: os.remove(path),
                            lambda: os.truncate(path, 0), lambda: os.chmod(path, 0)):
                try:
                    attempt(); hits.append(path)
                except OSError:
                    pass
        for new in ('/var/tmp/mi-new-{os.getpid()}', {str(repo_new)!r}, '/dev/shm/mi-new-{os.getpid()}'):
            try:
                open(new, 'w').write('x'); hits.append(new)
            except OSError:
                pass
        shutil.rmtree({str(outside / "sub")!r}, ignore_errors=True)
        """
        r = nsbox.run_tests(textwrap.dedent(code), ["assert hits == []"])
        assert r.passed, r
        assert (outside / "keep.txt").read_text() == "keep" and (outside / "sub" / "keep.txt").read_text() == "keep"
        assert in_tmp.read_text() == "keep" and not repo_new.exists()
    finally:
        shutil.rmtree(outside, ignore_errors=True)
        for leftover in (repo_new, Path(f"/var/tmp/mi-new-{os.getpid()}"), Path(f"/dev/shm/mi-new-{os.getpid()}")):
            if leftover.exists():
                leftover.unlink()


def test_no_network(nsbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        code = f"""
        import socket
        def f(x):
            s = socket.socket()
            s.settimeout(1)
            try:
                s.connect(('127.0.0.1', {port}))
                return 'connected'
            except OSError as e:
                return 'blocked'
        """
        assert nsbox.run_tests(textwrap.dedent(code), ["assert f(1) == 'blocked'"]).passed
    finally:
        server.close()


def test_private_proc_and_unprivileged_identity(nsbox):
    code = """
    import os
    PIDS = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
    with open('/proc/self/uid_map') as fh:
        OUTER = int(fh.read().split()[1])
    """
    r = nsbox.run_tests(textwrap.dedent(code), ["assert PIDS == [1]", "assert os.getpid() == 1"],
                        setup="import os")  # setup-bound: `os` is the candidate process's own
    assert r.passed, r
    if os.geteuid() == 0:  # root callers run candidates as nobody on the host
        assert nsbox.run_tests(textwrap.dedent(code), ["assert OUTER == 65534"]).passed


# -------------------------------------------------------------------------------------- all of MBPP --
def _mbpp() -> list[dict]:
    if not MBPP.is_file():
        pytest.skip(f"MBPP not found at {MBPP} (set MBPP_PATH)")
    return [json.loads(line) for line in MBPP.open()]


def negate_first_assert(tests: list[str]) -> list[str]:
    """`assert X` -> `assert not (X)`: fails for any deterministic program that passes X."""
    tree = ast.parse(tests[0])
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.Assert))
    node.test = ast.UnaryOp(ast.Not(), node.test)
    return [ast.unparse(tree)] + list(tests[1:])


def test_all_mbpp_references_pass_and_their_mutants_fail():
    rows = _mbpp()
    assert len(rows) == 974
    jobs = [{"code": r["code"], "tests": r["test_list"], "setup": r["test_setup_code"]} for r in rows]
    mutants = [{**job, "tests": negate_first_assert(job["tests"])} for job in jobs]
    results = sb.run_batch(jobs + mutants, timeout=60, progress=False)  # task 123 alone computes for ~7 s
    refs, muts = results[: len(rows)], results[len(rows):]
    failing = {r["task_id"]: res.detail for r, res in zip(rows, refs) if not res.passed}
    assert set(failing) == BROKEN_UPSTREAM, failing
    assert all("Node" in detail for detail in failing.values())
    passing_mutants = [r["task_id"] for r, res in zip(rows, muts) if res.passed]
    assert passing_mutants == []
    assert {res.status for r, res in zip(rows, muts) if r["task_id"] not in BROKEN_UPSTREAM} == {"failed"}
