"""Samples made elsewhere, read into (task_id, code) pairs: what ``python -m common score`` scores.

Formats (detected per file):

* human-eval / evalplus JSONL: one ``{"task_id": ..., "completion": ...}`` (appended to the task's prompt, as
  human-eval does) or ``{"task_id": ..., "solution": ...}`` (a whole program, as evalplus takes) per line, any number
  of lines per task. Ids: ``HumanEval/0``, ``Mbpp/11`` (evalplus), or MBPP's integer ids.
* the reference notebooks' JSON (their ``*_model_output_run_N.json``): a list of
  ``{"task_id": int, "generated_sequences": [str, ...]}``; each sequence is a model reply, so its code is extracted
  the way our pipeline extracts it (the first fenced Python block, else the whole reply).

Errors name the file, the line (JSONL) or the entry (JSON) and the field: malformed JSON, a missing or non-string
completion, a task id the benchmark does not have, a file whose ids belong to another benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from common.prompting.extract import extract_code
from common.tasks.benchmarks import program_for
from common.tasks.mbpp import DataError

_PREFIXES = {"humaneval": ("HumanEval/",), "mbpp": ("Mbpp/", ""), "mbpp-sanitized": ("Mbpp/", "")}


@dataclass(frozen=True)
class Sample:
    task_id: int
    code: str
    sample_index: int  # per task, in file order
    source: str  # "file:line" or "file[entry]"


def _task_id(raw: Any, benchmark: str, tasks: Mapping[int, Any], where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise DataError(f"{where}: field 'task_id' must be a string or an integer, got {type(raw).__name__}")
    text = str(raw)
    other = [b for b, prefixes in _PREFIXES.items() if b != benchmark and any(p and text.startswith(p)
                                                                                for p in prefixes)]
    number = None
    for prefix in _PREFIXES[benchmark]:
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            number = int(text[len(prefix):])
            break
    if number is None:
        hint = f" (an id of {other[0]}: this file belongs to another benchmark)" if other else ""
        raise DataError(f"{where}: task_id {text!r} is not a {benchmark} id{hint}")
    if number not in tasks:
        raise DataError(f"{where}: unknown {benchmark} task id {text!r}")
    return number


def _read_jsonl(path: Path, benchmark: str, tasks: Mapping[int, Any]) -> list[tuple[int, str, str]]:
    out = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: malformed JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            if "task_id" not in row:
                raise DataError(f"{where}: missing field 'task_id'")
            tid = _task_id(row["task_id"], benchmark, tasks, where)
            kind = "solution" if "solution" in row else "completion"
            if kind not in row:
                raise DataError(f"{where}: missing field 'completion' (or 'solution')")
            if not isinstance(row[kind], str):
                raise DataError(f"{where}: field {kind!r} must be a string, got {type(row[kind]).__name__}")
            out.append((tid, program_for(tasks[tid], row[kind], kind), where))
    return out


def _read_notebook_json(path: Path, data: Any, benchmark: str, tasks: Mapping[int, Any]) -> list[tuple[int, str, str]]:
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of {{'task_id', 'generated_sequences'}} objects")
    out = []
    for i, entry in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
        for field in ("task_id", "generated_sequences"):
            if field not in entry:
                raise DataError(f"{where}: missing field {field!r}")
        tid = _task_id(entry["task_id"], benchmark, tasks, where)
        sequences = entry["generated_sequences"]
        if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
            raise DataError(f"{where}: field 'generated_sequences' must be a list of strings")
        out += [(tid, program_for(tasks[tid], extract_code(s), "solution"), f"{where}[{j}]")
                for j, s in enumerate(sequences)]
    return out


def read_samples(path: str | Path, benchmark: str, tasks: Mapping[int, Mapping[str, Any]]) -> list[Sample]:
    """All samples of one file, in file order, with per-task sample indices."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(encoding="utf-8") as handle:  # the first non-blank character tells JSON from JSONL
        head = handle.read(4096).lstrip()[:1]
    if path.suffix == ".json" or head == "[":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
        rows = _read_notebook_json(path, data, benchmark, tasks)
    else:
        rows = _read_jsonl(path, benchmark, tasks)
    if not rows:
        raise DataError(f"{path}: no samples")
    seen: dict[int, int] = {}
    samples = []
    for tid, code, where in rows:
        samples.append(Sample(tid, code, seen.get(tid, 0), where))
        seen[tid] = seen.get(tid, 0) + 1
    return samples
