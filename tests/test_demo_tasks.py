"""The embedded demo task set (common/resources/demo_tasks.jsonl): 32 easy tasks in MBPP's format."""

from __future__ import annotations

import ast
import json

import pytest

from common.prompting.templates import signature_of
from tests.helpers import REPO

try:
    from common import sandbox
except ImportError:  # pragma: no cover - the sandbox module is developed separately
    sandbox = None

DEMO = REPO / "common" / "resources" / "demo_tasks.jsonl"
FIELDS = {"task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list", "split"}


def _tasks() -> list[dict]:
    return [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_demo_tasks_format():
    tasks = _tasks()
    assert [t["task_id"] for t in tasks] == list(range(1, 33))
    for task in tasks:
        assert set(task) == FIELDS, task["task_id"]
        assert task["split"] == ("test" if task["task_id"] <= 16 else "train")
        assert task["text"].startswith("Write a function") and task["text"].endswith(".")
        assert task["test_setup_code"] == "" and task["challenge_test_list"] == []
        assert len(task["test_list"]) == 3 and all(t.startswith("assert ") for t in task["test_list"])
        tree = ast.parse(task["code"])
        defs = [s for s in tree.body if isinstance(s, ast.FunctionDef)]
        assert len(defs) == 1 and len(tree.body) == 1, task["task_id"]
        signature = signature_of(task["code"])
        assert signature is not None and signature.startswith(f"def {defs[0].name}(")
        for test in task["test_list"]:
            ast.parse(test)
            assert defs[0].name in test
    assert len({t["text"] for t in tasks}) == 32 and len({signature_of(t["code"]) for t in tasks}) == 32


@pytest.mark.skipif(sandbox is None, reason="common/sandbox.py (run_batch) is not available")
def test_demo_references_pass_and_broken_ones_fail():
    tasks = _tasks()
    jobs = [{"code": t["code"], "tests": t["test_list"], "setup": t["test_setup_code"]} for t in tasks]
    broken = []
    for t in tasks:
        tree = ast.parse(t["code"])
        tree.body[0].body = [ast.Return(value=ast.Constant(value=None))]
        broken.append({"code": ast.unparse(tree), "tests": t["test_list"], "setup": ""})
    results = sandbox.run_batch(jobs + broken, progress=False)
    passed = [bool(r.passed) for r in results]
    assert all(passed[:32]), [t["task_id"] for t, ok in zip(tasks, passed) if not ok]
    assert not any(passed[32:]), "asserts that a function returning None passes are too weak"
