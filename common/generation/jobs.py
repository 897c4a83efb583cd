"""Resumable sampling jobs: many prompts x many samples, streamed to disk, safe to kill at any moment.

Layout of ``out_dir``::

    samples.jsonl   one row per sample, append-only; a request's rows are written, flushed and fsynced together
    dataset/        the finished rows as an HF dataset (``save_to_disk``), written when every request is done
    .lock           held while a job runs (a second process on the same directory waits)

On restart the rows file is read back: a partially written trailing line (the crash hit mid-write) and a trailing
request with fewer rows than its ``num_samples`` are cut off (all-or-nothing per request), every request already
complete is skipped, and the rest are sampled. Rows record their request's prompt, seed, ``num_samples`` and meta,
so a directory holding rows of another request list (unknown key, changed spec) is refused instead of mixed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from common.generation.base import Completion, stream_via_generate
from common.prompting.templates import Prompt

ROWS_FILE = "samples.jsonl"
DATASET_DIR = "dataset"
DEFAULT_CHUNK_SIZE = 32
RESERVED = ("key", "sample_index", "prompt", "text", "code", "finish_reason", "num_tokens", "seed", "num_samples")


class SamplingJobError(RuntimeError):
    """The job directory belongs to another request list, or its rows file is corrupt beyond its last line."""


@dataclass
class SampleRequest:
    key: str  # unique per request, e.g. "602" or "602/round2"
    prompt: Prompt  # a completion string or a chat message list
    num_samples: int
    seed: int
    meta: dict = field(default_factory=dict)  # copied into every output row (task_id, round, ...); JSON-serialisable


def _prompt_json(prompt: Prompt) -> str:
    return json.dumps(prompt, ensure_ascii=False)


def _rows_for(request: SampleRequest, completions: Sequence[Completion]) -> list[dict[str, Any]]:
    if len(completions) != request.num_samples:
        raise RuntimeError(f"request {request.key!r}: backend returned {len(completions)} samples, "
                           f"expected {request.num_samples}")
    prompt = _prompt_json(request.prompt)
    return [{"key": request.key, "sample_index": i, **request.meta, "prompt": prompt, "text": c.text,
             "code": c.code, "finish_reason": c.finish_reason, "num_tokens": int(c.num_tokens),
             "seed": int(request.seed), "num_samples": int(request.num_samples)}
            for i, c in enumerate(completions)]


def _validate_requests(requests: Sequence[SampleRequest]) -> dict[str, SampleRequest]:
    by_key: dict[str, SampleRequest] = {}
    for request in requests:
        if request.key in by_key:
            raise ValueError(f"duplicate request key {request.key!r}")
        clash = sorted(set(request.meta) & set(RESERVED))
        if clash:
            raise ValueError(f"request {request.key!r}: meta may not use the reserved column name(s) {clash}")
        if request.num_samples < 1:
            raise ValueError(f"request {request.key!r}: num_samples must be >= 1")
        json.dumps(request.meta)  # fail now, not after an hour of sampling
        by_key[request.key] = request
    return by_key


def load_job_rows(out_dir: Path | str, requests: Sequence[SampleRequest] | None = None, repair: bool = False
                  ) -> dict[str, list[dict[str, Any]]]:
    """The complete requests in ``out_dir`` as ``{key: rows}``.

    The valid prefix of the rows file ends after the last request with all its rows; anything after it (a torn
    line, a request cut short) is what a crash left and is dropped (and truncated away when ``repair``). A torn
    or incomplete request *before* complete ones means the file was edited or mixed: SamplingJobError. With
    ``requests``, every stored request must be one of them with the same prompt, seed, num_samples and meta.
    """
    path = Path(out_dir) / ROWS_FILE
    if not path.exists():
        return {}
    data = path.read_bytes()
    done: dict[str, list[dict[str, Any]]] = {}
    block: list[dict[str, Any]] = []
    valid_end = 0
    offset = 0
    torn = False
    while offset < len(data):
        newline = data.find(b"\n", offset)
        if newline < 0:  # no newline: the last write was cut short
            torn = True
            break
        line = data[offset:newline]
        offset = newline + 1
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "key" not in row or "num_samples" not in row:
                raise ValueError("not a sample row")
        except ValueError:
            torn = True
            break
        if block and (row["key"] != block[0]["key"] or row["sample_index"] != len(block)):
            raise SamplingJobError(f"{path}: request {block[0]['key']!r} has {len(block)} of "
                                   f"{block[0]['num_samples']} rows but is followed by other rows; the file is "
                                   "not an append-only job log (delete the directory to start over)")
        if not block and row.get("sample_index") != 0:
            raise SamplingJobError(f"{path}: rows of request {row['key']!r} start at sample "
                                   f"{row.get('sample_index')}; delete the directory to start over")
        block.append(row)
        if len(block) == int(row["num_samples"]):
            key = row["key"]
            if key in done:
                raise SamplingJobError(f"{path}: request {key!r} appears twice")
            done[key] = block
            block = []
            valid_end = offset
    if torn and offset < len(data) and data.find(b"\n", offset) >= 0:
        raise SamplingJobError(f"{path}: unreadable row before byte {offset}; delete the directory to start over")
    if repair and valid_end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(valid_end)
            handle.flush()
            os.fsync(handle.fileno())
    if requests is not None:
        _check_against(path, done, _validate_requests(requests))
    return done


def _check_against(path: Path, done: dict[str, list[dict]], by_key: dict[str, SampleRequest]) -> None:
    unknown = [key for key in done if key not in by_key]
    if unknown:
        raise SamplingJobError(
            f"{path} holds rows for {len(unknown)} request(s) not in this job (e.g. {unknown[:3]}); it belongs to "
            "another request list: use another directory or delete it")
    for key, rows in done.items():
        request = by_key[key]
        first = rows[0]
        differences = []
        if int(first["num_samples"]) != request.num_samples:
            differences.append(f"num_samples {first['num_samples']} -> {request.num_samples}")
        if int(first["seed"]) != int(request.seed):
            differences.append(f"seed {first['seed']} -> {request.seed}")
        if first["prompt"] != _prompt_json(request.prompt):
            differences.append("prompt text")
        for name, value in request.meta.items():
            if first.get(name) != value:
                differences.append(f"meta {name} {first.get(name)!r} -> {value!r}")
        if differences:
            raise SamplingJobError(f"{path}: request {key!r} was sampled with a different spec "
                                   f"({'; '.join(differences)}); use another directory or delete it")


def _append(handle: Any, rows: list[dict[str, Any]]) -> None:
    """One write per request, then flush and fsync: the request's rows reach the disk together."""
    blob = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    handle.write(blob)
    handle.flush()
    os.fsync(handle.fileno())


def _stream(backend: Any, items: list[tuple[Prompt, int, int]], chunk_size: int
            ) -> Iterator[tuple[int, list[Completion]]]:
    stream = getattr(backend, "stream", None)
    if callable(stream):
        return stream(items)
    return stream_via_generate(backend, items, chunk_size)


def run_sampling_job(backend: Any, requests: list[SampleRequest], out_dir: Path | str, desc: str = "sampling",
                     chunk_size: int | None = None):
    """Sample every request (resuming what ``out_dir`` already holds) and return all rows as a ``datasets.Dataset``.

    Rows are ordered by the order of ``requests``, then ``sample_index``; columns: key, sample_index, the meta
    fields, prompt (JSON), text, code, finish_reason, num_tokens, seed, num_samples. ``backend`` is any object with
    ``generate(prompts, num_samples, seed)``; one with ``stream`` (the HF backend) commits each request the moment
    its samples finish, others are called ``chunk_size`` prompts at a time (what a crash can lose).
    """
    from datasets import Dataset
    from filelock import FileLock
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_key = _validate_requests(requests)
    with FileLock(str(out / ".lock")):
        done = load_job_rows(out, requests, repair=True)
        pending = [r for r in requests if r.key not in done]
        total = sum(r.num_samples for r in requests)
        if pending:
            bar = tqdm(total=total, initial=total - sum(r.num_samples for r in pending), desc=desc, unit="sample",
                       dynamic_ncols=True)
            items = [(r.prompt, r.num_samples, r.seed) for r in pending]
            try:
                with open(out / ROWS_FILE, "ab") as handle:
                    for index, completions in _stream(backend, items, chunk_size or DEFAULT_CHUNK_SIZE):
                        request = pending[index]
                        rows = _rows_for(request, completions)
                        _append(handle, rows)
                        done[request.key] = rows
                        bar.update(len(rows))
            except KeyboardInterrupt:
                bar.close()
                saved = sum(len(v) for v in done.values())
                print(f"\ninterrupted: {saved}/{total} rows saved in {out / ROWS_FILE}; run the same command to "
                      "resume", file=sys.stderr)
                raise
            bar.close()
        missing = [key for key in by_key if key not in done]
        if missing:
            raise RuntimeError(f"backend finished without results for {len(missing)} request(s), e.g. {missing[:3]}")
        rows = [row for request in requests for row in done[request.key]]
        dataset = Dataset.from_list(rows)
        _save_atomically(dataset, out / DATASET_DIR)
    return dataset


def _save_atomically(dataset: Any, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    dataset.save_to_disk(str(tmp))
    if target.exists():
        shutil.rmtree(target)
    os.rename(tmp, target)
