"""MBPP loading with the paper's splits and filtering (docs/design.md §2).

Splits by task_id (MBPP "full"): prompt 1-10, test 11-510 (500), validation 511-600, train 601-974. The paper's
training pool drops tasks whose reference code contains ``class`` (601 and 927), leaving 372. The asserts
(``test_list``) travel with each task for the sandbox but are never put into a prompt.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from datasets import Dataset

from common.config import RESOURCE_DIR

SPLIT_RANGES = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
SPLITS = (*SPLIT_RANGES, "all")
COLUMNS = ("task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list")
DEMO_TASKS = RESOURCE_DIR / "demo_tasks.jsonl"
_REQUIRED = {"task_id": int, "text": str, "code": str, "test_list": list}


MAX_REPORTED = 20  # faulty lines listed in one error


class DataError(ValueError):
    """A malformed task file; the message names the file, line and field."""


def read_tasks_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and validate an MBPP-format JSONL file (one task per line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected MBPP mbpp.jsonl)")
    rows, seen, problems = [], {}, []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
                rows.append(validate_task(row, f"{path}:{line_no}"))
                if row["task_id"] in seen:
                    raise DataError(f"{path}:{line_no}: task_id {row['task_id']} repeats line {seen[row['task_id']]}")
                seen[row["task_id"]] = line_no
            except DataError as exc:  # every faulty line is reported, not only the first
                problems.append(str(exc))
                if len(problems) >= MAX_REPORTED:
                    break
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        more = " (and maybe more; stopped reading)" if len(problems) >= MAX_REPORTED else ""
        raise DataError(f"{path}: {len(problems)} faulty lines{more}:\n  " + "\n  ".join(problems))
    if not rows:
        raise DataError(f"{path}: no tasks")
    return rows


def validate_task(row: Any, where: str) -> dict[str, Any]:
    """Check one task's fields and fill the optional ones; errors name ``where`` and the field."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for name, kind in _REQUIRED.items():
        if name not in row:
            raise DataError(f"{where}: missing field {name!r}")
        if not isinstance(row[name], kind) or (kind is int and isinstance(row[name], bool)):
            raise DataError(f"{where}: field {name!r} must be {kind.__name__}, got {type(row[name]).__name__}")
    if not row["test_list"] or not all(isinstance(t, str) and t.strip() for t in row["test_list"]):
        raise DataError(f"{where}: field 'test_list' must be a non-empty list of assert strings")
    setup = row.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise DataError(f"{where}: field 'test_setup_code' must be str")
    challenge = row.get("challenge_test_list") or []
    if not isinstance(challenge, list):
        raise DataError(f"{where}: field 'challenge_test_list' must be list")
    task = {**row, "test_setup_code": setup, "challenge_test_list": challenge}
    return task


def _rows_from_hub() -> list[dict[str, Any]]:
    """All 974 tasks of ``load_dataset("mbpp", "full")`` (the hub splits them; we re-split by task_id)."""
    from datasets import concatenate_datasets, load_dataset

    try:
        parts = load_dataset("mbpp", "full")
    except Exception as exc:  # noqa: BLE001 - ConnectionError, offline mode, missing cache: all mean "no hub"
        from common.errors import first_line

        raise DataError(f"MBPP could not be loaded from the Hugging Face hub ({type(exc).__name__}: "
                        f"{first_line(exc)}): set MBPP_PATH or data.source to a local mbpp.jsonl") from exc
    merged = concatenate_datasets([parts[name] for name in parts])
    return [validate_task(dict(row), f"hub:mbpp/full row {i}") for i, row in enumerate(merged)]


_NOTED: set[str] = set()


def resolve_source(source: str | os.PathLike | None) -> str:
    """None -> $MBPP_PATH, else 'hub'. Returns a path, 'demo' or 'hub'."""
    env = os.environ.get("MBPP_PATH")
    if source is None:
        source = env or "hub"
    elif env and str(source) != env and str(source) not in _NOTED:
        _NOTED.add(str(source))
        print(f"note: data.source={source} (from the config) is used, not $MBPP_PATH={env}; pass "
              f"--set data.source={env} to use that file", file=sys.stderr)
    return str(source)


def load_task_rows(source: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    source = resolve_source(source)
    if source == "hub":
        return _rows_from_hub()
    if source == "demo":
        return read_tasks_jsonl(DEMO_TASKS)
    return read_tasks_jsonl(source)


def select_split(rows: list[dict[str, Any]], split: str, demo: bool = False) -> list[dict[str, Any]]:
    """The paper's split by task_id (demo tasks carry their own ``split`` field)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split == "all":
        return rows
    if demo:
        return [row for row in rows if row.get("split") == split]
    low, high = SPLIT_RANGES[split]
    chosen = [row for row in rows if low <= row["task_id"] <= high]
    if split == "train":
        # The paper's notebooks skipped reference solutions that define a class (tasks 601 and 927).
        chosen = [row for row in chosen if "class" not in row["code"]]
    return chosen


def load_mbpp(split: str, source: str | os.PathLike | None = None, limit: int | None = None) -> Dataset:
    """MBPP ``split`` as a ``datasets.Dataset`` sorted by task_id.

    ``source``: a path to ``mbpp.jsonl``, ``"demo"`` (the embedded demo tasks), ``"hub"``, or None for
    ``$MBPP_PATH`` and then the Hugging Face hub. ``limit`` keeps the first N tasks (smoke and demo runs).
    """
    resolved = resolve_source(source)
    rows = select_split(load_task_rows(resolved), split, demo=resolved == "demo")
    rows = sorted(rows, key=lambda row: row["task_id"])
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise DataError(f"split {split!r} of {resolved} has no tasks")
    return Dataset.from_list([{name: row[name] for name in COLUMNS} for row in rows])
