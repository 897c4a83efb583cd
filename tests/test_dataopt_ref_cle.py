"""Steps ``ref`` (refactoring) and ``cle`` (cleaning) of the training-data optimisation (common/dataopt).

ref: each tool's change really reaches the row's ``code`` (the published refactoring wrote another field than
training read), docformatter's exit code 3 ("changed") keeps its change (the published code discarded it), and a
rewrite that breaks the tests is reverted and counted. cle: every check drops a hand-made row, clean code is kept,
and the details name the task ids per reason. On the demo tasks and the 372 MBPP training tasks every refactored
solution passes its tests when re-run; the MBPP tests print each step's seconds per 1,000 solutions.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
import time

import pytest

from common.config import SandboxConfig
from common.dataopt import clean, refactor
from common.dataopt.base import StepContext, load_step, rows_from_tasks
from common.dataopt.config import DataOptConfig
from tests.helpers import MBPP_JSONL, requires_mbpp


def make_task(task_id: int, code: str, tests: list[str], setup: str = "") -> dict:
    return {"task_id": task_id, "text": f"task {task_id}", "code": code, "test_list": tests,
            "test_setup_code": setup}


def make_ctx(tasks, tmp_path, **config) -> StepContext:
    return StepContext(config=DataOptConfig(**config), tasks={int(t["task_id"]): t for t in tasks},
                       sandbox=SandboxConfig(workers=2, timeout=10.0), work=tmp_path / "work", log=lambda _: None)


# ------------------------------------------------------------------------------------------------------------ ref

MESSY = (
    "import os\n"
    "def add(a,b):\n"
    "    '''   add two numbers.   '''\n"
    "    return a+b\n"
    "def greet(name):\n"
    "    return \"hi \" + name\n"
)
MESSY_TESTS = ["assert add(1, 2) == 3", "assert greet('x') == 'hi x'"]


def test_registry_names_both_steps():
    assert load_step("ref") is refactor.refactor_step
    assert load_step("cle") is clean.clean_step


def test_every_tool_changes_the_code_and_the_change_reaches_the_row(tmp_path):
    tasks = [make_task(1, MESSY, MESSY_TESTS)]
    rows = rows_from_tasks(tasks)
    result = refactor.refactor_step(rows, make_ctx(tasks, tmp_path))
    code = result.rows[0]["code"]
    assert "import os" not in code                      # autoflake: unused import removed
    assert "def add(a, b):" in code and "\n\n\ndef greet" in code  # autopep8: spacing, blank lines
    assert '"""Add two numbers."""' in code             # docformatter: summary capitalised, stripped, period
    assert "'hi '" in code and '"hi "' not in code      # unify: single quotes
    assert result.counts == {"kept": 0, "changed": 1, "reverted": 0, "dropped": 0, "added": 0}
    assert result.details["tool_changes"] == {"autoflake": 1, "autopep8": 1, "docformatter": 1, "unify": 1}
    assert result.rows[0]["steps"] == ["ref"] and result.rows[0]["origin"] == "reference"
    assert rows[0]["code"] == MESSY and rows[0]["steps"] == []  # the input is not mutated


@pytest.mark.parametrize("switch, untouched", [("ref_autoflake", "import os"),
                                               ("ref_docformatter", "'''   add two numbers.   '''"),
                                               ("ref_unify", '"hi "')])
def test_a_switched_off_tool_changes_nothing(tmp_path, switch, untouched):
    tasks = [make_task(1, MESSY, MESSY_TESTS)]
    result = refactor.refactor_step(rows_from_tasks(tasks), make_ctx(tasks, tmp_path, **{switch: False}))
    assert untouched in result.rows[0]["code"]
    assert switch.removeprefix("ref_") not in result.details["tool_changes"]
    assert "def add(a, b):" in result.rows[0]["code"]  # autopep8 still ran


def test_docformatter_exit_code_3_means_changed_and_the_change_is_kept(tmp_path):
    """The published pipeline treated exit code 3 as failure and threw the reformatted docstrings away."""
    folder = tmp_path / "df"
    folder.mkdir()
    (folder / "a.py").write_text("def f():\n    '''   return one   '''\n    return 1\n")
    (folder / "b.py").write_text('def g():\n    """Return two."""\n    return 2\n')
    returncode, _ = refactor._run_docformatter(str(folder), [str(folder / "a.py"), str(folder / "b.py")])
    assert returncode == 3
    assert (folder / "a.py").read_text() == 'def f():\n    """Return one."""\n    return 1\n'
    assert refactor._run_docformatter(str(folder), [str(folder / "b.py")])[0] == 0  # nothing to change: 0

    code = "def f():\n    '''   return one   '''\n    return 1\n"
    tasks = [make_task(1, code, ["assert f() == 1"])]
    result = refactor.refactor_step(rows_from_tasks(tasks), make_ctx(tasks, tmp_path, ref_unify=False))
    assert result.rows[0]["code"] == 'def f():\n    """Return one."""\n    return 1\n'
    assert result.details["tool_changes"]["docformatter"] == 1 and result.counts["changed"] == 1


def test_docformatter_crash_on_one_file_costs_only_that_file(tmp_path, monkeypatch):
    """docformatter 1.7.8 raises on a line holding only a tab (MBPP task 829), which ends the whole batch's run."""
    real = refactor._run_docformatter
    runs = []

    def counted(folder, paths):
        runs.append(len(paths))
        return real(folder, paths)

    monkeypatch.setattr(refactor, "_run_docformatter", counted)
    crashing = "from collections import Counter \r\n\t\r\ndef f(x): \r\n\treturn (x) "
    codes = [f"def f{i}():\n    '''   return {i}   '''\n" for i in range(15)]
    codes.insert(9, crashing)
    out, failed = refactor.docformatter_codes(codes)
    assert failed == [9] and out[9] == crashing
    assert out[0] == 'def f0():\n    """Return 0."""\n' and out[15] == 'def f14():\n    """Return 14."""\n'
    assert len(runs) <= 1 + 2 * 4  # halving: two runs per level of 16 files, not one run per file

    tasks = [make_task(829, crashing, ["assert f(2) == 2"])]  # in the step, autopep8 first drops the tab line
    result = refactor.refactor_step(rows_from_tasks(tasks), make_ctx(tasks, tmp_path))
    assert result.counts["changed"] == 1 and "docformatter" not in result.details["tool_errors"]


def test_a_rewrite_that_breaks_the_tests_is_reverted_and_counted(tmp_path, monkeypatch):
    tasks = [
        # the test uses the solution's "unused" import: autoflake's removal makes it fail
        make_task(1, "import math\ndef f(x):\n    return x\n", ["assert f(math.floor(2.5)) == 2"]),
        # autopep8 level 2 rewrites `x == True` to `x`: is_true(2) becomes 2, not False
        make_task(2, "def is_true(x):\n    return x == True\n", ["assert is_true(2) == False"]),
        make_task(3, "def f(x):\n  return x\n", ["assert f(3) == 3"]),  # a harmless rewrite, kept
        make_task(4, "def f(x):\n    return x\n", ["assert f(4) == 4"]),  # already clean: unchanged
    ]
    ctx = make_ctx(tasks, tmp_path)
    calls = []
    real_verify = ctx.verify
    ctx.verify = lambda rows, desc="": (calls.append(len(rows)), real_verify(rows, desc))[1]
    rows = rows_from_tasks(tasks)
    result = refactor.refactor_step(rows, ctx)
    assert calls == [3]  # ONE sandbox call, for the rewritten rows only
    assert [r["code"] for r in result.rows[:2]] == [rows[0]["code"], rows[1]["code"]]
    assert [r["steps"] for r in result.rows] == [[], [], ["ref"], []]
    assert result.rows[2]["code"] == "def f(x):\n    return x\n"
    assert result.counts == {"kept": 1, "changed": 1, "reverted": 2, "dropped": 0, "added": 0}
    assert [r["task_id"] for r in result.details["reverted"]] == [1, 2]
    assert all(ctx.verify(result.rows[i:i + 1])[0]["passed"] for i in range(4))


def test_a_rewrite_that_does_not_parse_is_reverted_without_running_it(tmp_path, monkeypatch):
    monkeypatch.setitem(refactor._IN_PROCESS, "unify", lambda config: lambda code: code + "\ndef (:\n")
    monkeypatch.setitem(refactor._IN_PROCESS, "autoflake", lambda config: lambda code: 1 / 0)  # a tool crash
    tasks = [make_task(1, "def f(x):\n    return x\n", ["assert f(1) == 1"])]
    result = refactor.refactor_step(rows_from_tasks(tasks), make_ctx(tasks, tmp_path))
    assert result.rows[0]["code"] == tasks[0]["code"] and result.counts["reverted"] == 1
    assert result.details["reverted"][0]["reason"].startswith("does not parse")
    assert result.details["tool_errors"] == {"autoflake": [1]}


def test_bad_aggressiveness_names_the_field(tmp_path):
    tasks = [make_task(1, "x = 1\n", ["assert x == 1"])]
    with pytest.raises(ValueError, match="data_opt.ref_autopep8_aggressive"):
        refactor.refactor_step(rows_from_tasks(tasks), make_ctx(tasks, tmp_path, ref_autopep8_aggressive=-1))


def _assert_all_pass(result, ctx, n):
    verdicts = ctx.verify(result.rows)
    assert len(result.rows) == n and all(v["passed"] for v in verdicts), \
        [(r["task_id"], v["status"]) for r, v in zip(result.rows, verdicts) if not v["passed"]]


def test_demo_tasks_every_refactored_solution_passes(tmp_path):
    from common.tasks.mbpp import load_mbpp

    tasks = list(load_mbpp("train", "demo"))
    ctx = make_ctx(tasks, tmp_path)
    result = refactor.refactor_step(rows_from_tasks(tasks), ctx)
    assert sum(result.counts[k] for k in ("kept", "changed", "reverted")) == len(tasks)
    _assert_all_pass(result, ctx, len(tasks))


@pytest.fixture(scope="module")
def mbpp_train():
    from common.tasks.mbpp import load_mbpp

    return list(load_mbpp("train", str(MBPP_JSONL)))  # the prepare stage's split: 601-974 minus class tasks


@requires_mbpp
def test_mbpp_train_refactored_solutions_all_pass(tmp_path, mbpp_train):
    assert len(mbpp_train) == 372
    ctx = make_ctx(mbpp_train, tmp_path)
    start = time.perf_counter()
    result = refactor.refactor_step(rows_from_tasks(mbpp_train), ctx)
    seconds = time.perf_counter() - start
    print(f"\nref on {len(mbpp_train)} MBPP train tasks: {seconds:.1f} s ({1000 * seconds / len(mbpp_train):.1f} s "
          f"per 1,000 solutions, verification included); counts {result.counts}; {result.details['tool_changes']}",
          file=sys.stderr)
    assert result.counts["changed"] > 300 and result.details["tool_changes"]["autopep8"] > 300
    _assert_all_pass(result, ctx, 372)


# ------------------------------------------------------------------------------------------------------------ cle

CLEAN = "def add(a, b):\n    return a + b\n"
NESTED = "def f(x):\n" + "".join("    " * (d + 1) + f"if x > {d}:\n" for d in range(6)) + "    " * 7 + "return x\n"
DIRTY = {  # task_id -> (code, the reason it must be dropped for)
    10: ("def f():\n    return eval(input())\n", "bandit"),
    11: ("import subprocess\ndef f(cmd):\n    return subprocess.call(cmd, shell=True)  # nosec\n", "bandit"),
    12: ("def f():\n    return undefined_name + 1\n", "pylint_error"),
    13: ("def f(:\n    return 1\n", "syntax_error"),
    14: ("\n  \n", "too_short"),
    15: ("".join(f"x{i} = {i}\n" for i in range(201)), "too_long"),
    16: ('def f():\n    """' + "word " * 500 + '"""\n    return 1\n', "long_docstring"),
    17: ("def f(x):\n    # TODO: handle negatives\n    return x\n", "todo"),
    18: ("def f(a, b, c, d, e, g, h, i, *rest):\n    return a\n", "too_many_parameters"),
    19: (NESTED, "deep_nesting"),
    20: ("def f(xs):\n" + "    xs.append(len(xs))\n" * 4 + "    return xs\n", "repeated_lines"),
}


def _rows(codes: dict[int, str]) -> list[dict]:
    return rows_from_tasks([make_task(tid, code, ["assert True"]) for tid, code in codes.items()])


def test_each_check_drops_its_row_and_clean_code_is_kept(tmp_path):
    rows = _rows({1: CLEAN, **{tid: code for tid, (code, _) in DIRTY.items()}})
    result = clean.clean_step(rows, make_ctx([], tmp_path))
    assert [r["task_id"] for r in result.rows] == [1]
    assert result.counts == {"kept": 1, "dropped": len(DIRTY), "changed": 0, "reverted": 0, "added": 0}
    first = {entry["task_id"]: entry["reasons"][0] for entry in result.details["dropped"]}
    assert first == {tid: reason for tid, (_, reason) in DIRTY.items()}
    for tid, (_, reason) in DIRTY.items():
        assert tid in result.details["task_ids"][reason], (tid, reason)
    assert sum(result.details["dropped_by"].values()) == len(DIRTY)
    findings = {e["task_id"]: e["findings"] for e in result.details["dropped"]}
    assert findings[10]["bandit"][0].startswith("B307 MEDIUM")
    assert findings[11]["bandit"][0].startswith("B602 HIGH")  # `# nosec` does not hide it
    assert any("undefined-variable" in m for m in findings[12]["pylint_error"])


def test_several_reasons_are_all_recorded_and_the_first_counts(tmp_path):
    code = "def f():\n    # FIXME\n    return eval(input())\n"
    result = clean.clean_step(_rows({5: code}), make_ctx([], tmp_path))
    assert result.details["dropped"][0]["reasons"] == ["bandit", "todo"]
    assert result.details["dropped_by"] == {"bandit": 1}
    assert result.details["flagged"] == {"bandit": 1, "todo": 1}
    assert result.details["task_ids"] == {"bandit": [5], "todo": [5]}


def test_bandit_severity_threshold_and_switches(tmp_path):
    rows = _rows({1: "import subprocess\n", 2: DIRTY[10][0], 3: DIRTY[17][0]})  # B404 is LOW severity
    assert [r["task_id"] for r in clean.clean_step(rows, make_ctx([], tmp_path)).rows] == [1]
    assert clean.clean_step(rows, make_ctx([], tmp_path, cle_bandit_min_severity="low")).rows == []
    high = clean.clean_step(rows, make_ctx([], tmp_path, cle_bandit_min_severity="HIGH"))
    assert [r["task_id"] for r in high.rows] == [1, 2]  # B307 eval is MEDIUM
    off = clean.clean_step(rows, make_ctx([], tmp_path, cle_bandit=False, cle_drop_todo=False))
    assert [r["task_id"] for r in off.rows] == [1, 2, 3]


@pytest.mark.parametrize("field, value", [("cle_bandit_min_severity", "severe"), ("cle_max_nesting", -1),
                                          ("cle_min_code_lines", 500)])
def test_bad_settings_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"data_opt.{field}"):
        clean.clean_step(_rows({1: CLEAN}), make_ctx([], tmp_path, **{field: value}))


def test_heuristic_measures():
    elifs = "def f(x):\n    if x == 1:\n        return 1\n    elif x == 2:\n        return 2\n" + \
        "".join(f"    elif x == {i}:\n        return {i}\n" for i in range(3, 12)) + "    return 0\n"
    import ast

    assert clean.nesting_depth(ast.parse(elifs)) == 2
    assert clean.nesting_depth(ast.parse(NESTED)) == 7
    assert clean.repeated_line_count("if a:\n    return False\n" * 5 + "i += 1\n" * 5 + "total += 1\n" * 5) == ("", 0)
    assert clean.max_parameters(ast.parse("f = lambda a, b, *c, d, **e: a\n")) == 5
    config = DataOptConfig()
    assert clean.heuristic_findings(elifs, config) == {}
    assert clean.heuristic_findings("todo_list = []  # a todo list\n", config) == {}  # lower-case is a word


def test_semgrep_rule_file_needs_semgrep(tmp_path, monkeypatch):
    rules = tmp_path / "rules.yml"
    rules.write_text("rules: []\n")
    monkeypatch.setattr(clean, "semgrep_executable", lambda: None)
    with pytest.raises(RuntimeError, match="data_opt.cle_rule_file.*semgrep is not installed"):
        clean.clean_step(_rows({1: CLEAN}), make_ctx([], tmp_path, cle_rule_file=str(rules)))
    with pytest.raises(FileNotFoundError, match="data_opt.cle_rule_file"):
        clean.clean_step(_rows({1: CLEAN}), make_ctx([], tmp_path, cle_rule_file=str(tmp_path / "missing.yml")))


def test_semgrep_findings_drop_rows(tmp_path, monkeypatch):
    """A stand-in semgrep executable (the real one is a large optional install) speaking semgrep's JSON."""
    fake = tmp_path / "semgrep"
    fake.write_text(f"#!{sys.executable}\n"
                    "import json, os, sys\n"
                    "assert sys.argv[1] == 'scan' and '--json' in sys.argv and os.path.isfile(sys.argv[3])\n"
                    "hits = [{'check_id': 'no-pickle', 'path': f, 'start': {'line': 1}} for f in sorted(os.listdir('.'))"
                    " if f.endswith('.py') and 'pickle' in open(f).read()]\n"
                    "print(json.dumps({'results': hits, 'errors': []}))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(clean, "semgrep_executable", lambda: str(fake))
    rules = tmp_path / "rules.yml"
    rules.write_text("rules: []\n")
    rows = _rows({1: CLEAN, 2: "import pickle\ndef f(b):\n    return pickle.dumps(b)\n"})
    result = clean.clean_step(rows, make_ctx([], tmp_path, cle_rule_file=str(rules)))
    assert [r["task_id"] for r in result.rows] == [1]
    assert result.details["task_ids"]["semgrep"] == [2]
    assert result.details["dropped"][0]["findings"]["semgrep"] == ["no-pickle line 1"]


def test_demo_tasks_are_clean(tmp_path):
    from common.tasks.mbpp import load_mbpp

    rows = rows_from_tasks(list(load_mbpp("train", "demo")))
    result = clean.clean_step(rows, make_ctx([], tmp_path))
    assert result.counts["kept"] + result.counts["dropped"] == len(rows)
    assert result.counts["dropped"] == sum(result.details["dropped_by"].values())


@requires_mbpp
def test_mbpp_train_cleaning(tmp_path, mbpp_train):
    rows = rows_from_tasks(mbpp_train)
    start = time.perf_counter()
    result = clean.clean_step(rows, make_ctx(mbpp_train, tmp_path))
    seconds = time.perf_counter() - start
    print(f"\ncle on {len(rows)} MBPP train tasks: {seconds:.1f} s ({1000 * seconds / len(rows):.1f} s per 1,000 "
          f"solutions); counts {result.counts}; {result.details['task_ids']}", file=sys.stderr)
    assert result.counts["kept"] + result.counts["dropped"] == 372
    assert result.counts["dropped"] < 20  # MBPP's references are short, plain and mostly lint-clean
    dropped = {e["task_id"] for e in result.details["dropped"]}
    assert dropped == {tid for ids in result.details["task_ids"].values() for tid in ids}
    assert dropped.isdisjoint(r["task_id"] for r in result.rows)


def test_step_functions_do_not_mutate_config(tmp_path):
    config = DataOptConfig()
    before = dataclasses.asdict(config)
    ctx = StepContext(config=config, tasks={}, sandbox=SandboxConfig(workers=1), work=tmp_path, log=lambda _: None)
    clean.clean_step(_rows({1: CLEAN}), ctx)
    assert dataclasses.asdict(config) == before and os.listdir(tmp_path) == []  # scratch files cleaned up
