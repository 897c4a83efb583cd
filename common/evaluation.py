"""Stage 3: sample, execute and score every model variant on the evaluation split (DESIGN §1, "Stage 3").

For each variant in ``evaluation.variants`` and each run r = 1..``evaluation.runs``, the model samples
``sampling.num_samples`` solutions per test task (paper: 500 tasks x 10 samples, T=0.6, top_p=0.9, 5 runs); every
sample is executed in the sandbox and scored by MI (``common.scoring``), and the lot is saved as a dataset at
``stage3/samples/<variant>/run<r>`` with its manifest. The tables are computed from these rows by
``common.report``, so any number in a report can be traced to the code that earned it.

Seeds: run r samples with seed ``sampling.seed + r - 1`` for every variant, so run r of ``-dpo`` and run r of the
baseline draw from the same seed (the report pairs runs by it) and run 1 uses the configured seed itself.

Variants:
  ``baseline``      the base model, no adapter
  ``dpo``           the stage-1c adapter (``stage2/dpo``; its manifest must match this config)
  ``dpo-further``   the stage-2c adapter (``stage2/dpo_further``)
  anything else     a path to a PEFT adapter folder

Resuming: sampling streams through ``run_sampling_job`` in ``stage3/work/<variant>/run<r>``, so a killed run
continues from its last committed chunk; a finished run (manifest present and matching) is skipped unless
``force``. A variant's model is loaded once for all of its runs and freed before the next variant.

What invalidates a finished run: the config sections the variant depends on (``STAGE_SECTIONS`` in
``common.artifacts``: data, model, sandbox and sampling, plus the training sections behind its adapter), its seed,
and the identity of its adapter (a retrained adapter makes old samples stale). The ``evaluation`` section is
deliberately left out: raising ``evaluation.runs`` from 3 to 5 adds two runs and keeps the first three, and ``k``
only changes what the report computes from the same samples.
"""

from __future__ import annotations

import gc
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from datasets import Dataset

from .artifacts import (STAGE_SECTIONS, ArtifactError, RunDir, is_complete, load_dataset_dir, read_manifest,
                        record_config, require, save_dataset, write_manifest)
from .config import ConfigError, PipelineConfig
from .generators import prompt_style_for
from .metrics import aggregate_run
from .prompts import build_prompt
from .scoring import score_solutions
from .stage1 import load_tasks

NAMED_VARIANTS = ("baseline", "dpo", "dpo-further")
# The manifest stage of a variant's evaluation runs (its sections are listed in artifacts.STAGE_SECTIONS).
EVAL_STAGES = {"baseline": "eval_baseline", "dpo": "eval_dpo", "dpo-further": "eval_dpo_further"}
ADAPTER_EVAL_STAGE = "eval_adapter"
WORK_MANIFEST = "job.json"
# Prompts per committed chunk of the sampling job (what a crash can lose); None keeps run_sampling_job's default.
SAMPLING_CHUNK_SIZE: int | None = None


@dataclass(frozen=True)
class Variant:
    """One model to evaluate: its name in tables, the manifest stage of its runs, and its adapter (None: base)."""

    name: str
    stage: str
    adapter: Path | None
    adapter_label: str | None  # 'stage2/dpo' for the run's own adapters (the run dir may move), else the path
    adapter_id: str | None  # changes when the adapter is retrained; recorded in each run's manifest


def run_seed(config: PipelineConfig, run: int) -> int:
    """Seed of evaluation run ``run`` (1-based): ``sampling.seed + run - 1``, the same for every variant."""
    return config.sampling.seed + run - 1


def resolve_variant(name: str, run: RunDir, config: PipelineConfig) -> Variant:
    """A variant name or adapter path -> :class:`Variant`; refuses adapters that are missing or made by another
    config (with the command to run first)."""
    if name == "baseline":
        return Variant(name, EVAL_STAGES[name], None, None, None)
    if name in ("dpo", "dpo-further"):
        stage = "dpo" if name == "dpo" else "dpo_further"
        folder = run.dpo_adapter if name == "dpo" else run.dpo_further_adapter
        manifest = require(folder, config, stage, f"evaluate ({name})")
        return Variant(name, EVAL_STAGES[name], folder, folder.relative_to(run.root).as_posix(), _manifest_id(manifest))
    path = Path(name)
    if not (path / "adapter_config.json").is_file():
        raise ArtifactError(f"evaluation.variants: {name!r} is neither one of {list(NAMED_VARIANTS)} nor a PEFT adapter "
                            f"folder (no adapter_config.json at {path})")
    manifest = read_manifest(path)
    if manifest is not None:
        adapter_id = _manifest_id(manifest)
    else:
        weights = sorted(path.glob("adapter_model.*"))
        adapter_id = ";".join(f"{p.name}@{p.stat().st_mtime_ns}" for p in weights) or None
    return Variant(name, ADAPTER_EVAL_STAGE, path.resolve(), str(path.resolve()), adapter_id)


def _manifest_id(manifest: Mapping[str, Any]) -> str:
    return f"{manifest.get('fingerprint')}@{manifest.get('created')}"


def run_key(config: PipelineConfig, variant: Variant, run: int) -> dict[str, Any]:
    """Everything a finished run must agree on besides its config sections."""
    return {"variant": variant.name, "run": run, "seed": run_seed(config, run),
            "adapter": variant.adapter_label, "adapter_id": variant.adapter_id}


def run_is_finished(folder: Path, config: PipelineConfig, variant: Variant, run: int) -> bool:
    """True when ``folder`` holds this run's samples, made by the same config sections, seed and adapter."""
    if not is_complete(folder, config, variant.stage):
        return False
    manifest = read_manifest(folder) or {}
    return all(manifest.get(key) == value for key, value in run_key(config, variant, run).items())


def check_k(config: PipelineConfig) -> None:
    """pass@k needs k <= n samples per task."""
    bad = [k for k in config.evaluation.k if not 1 <= k <= config.sampling.num_samples]
    if bad:
        raise ConfigError(f"evaluation.k {bad}: each k must be between 1 and sampling.num_samples "
                          f"({config.sampling.num_samples})")


def run_evaluation(config: PipelineConfig, run_dir: Path | str, force: bool = False) -> Path:
    """Evaluate every configured variant for ``evaluation.runs`` runs; returns the ``stage3/samples`` folder.

    Each run's dataset has one row per sample: ``task_id``, ``sample_index``, ``text`` (the raw reply), ``code``
    (the extracted solution), ``finish_reason``, ``num_tokens`` and the other sampling fields, the sandbox verdict
    (``passed``, ``status``, ``detail``, ``duration``), ``mi`` (None when radon cannot parse the code) and
    ``variant``, ``run``, ``seed``.
    """
    run = RunDir(run_dir)
    record_config(run, config)
    check_k(config)
    if config.evaluation.runs < 1:
        raise ConfigError(f"evaluation.runs must be >= 1, got {config.evaluation.runs}")
    tasks = load_tasks(run, config, "test", "evaluate")
    by_id = {int(task["task_id"]): task for task in tasks}
    style = prompt_style_for(config.model)
    prompts = {tid: build_prompt(task, style, config.sampling.system_prompt) for tid, task in by_id.items()}
    variants = [resolve_variant(name, run, config) for name in config.evaluation.variants]  # fail before sampling
    for variant in variants:
        runs = range(1, config.evaluation.runs + 1)
        todo = [r for r in runs if force or not run_is_finished(run.evaluation(variant.name, r), config, variant, r)]
        if not todo:
            print(f"[evaluate] {variant.name}: {len(runs)} run(s) up to date")
            continue
        _evaluate_variant(config, run, variant, todo, by_id, prompts, style, force)
        gc.collect()  # the backend went out of scope with _evaluate_variant: give its memory back before the next
        _empty_cuda_cache()
    return run.path("stage3", "samples")


def _evaluate_variant(config: PipelineConfig, run: RunDir, variant: Variant, todo: list[int],
                      tasks: Mapping[int, Any], prompts: Mapping[int, Any], style: str, force: bool) -> None:
    """Load the variant's model once and sample/score each pending run with it."""
    from .generation import make_backend

    backend = make_backend(config.sampling, config.model, adapter=variant.adapter)
    try:
        for r in todo:
            evaluate_run(config, run, variant, r, backend, tasks, prompts, style, force)
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()
        del backend


def evaluate_run(config: PipelineConfig, run: RunDir, variant: Variant, r: int, backend: Any,
                 tasks: Mapping[int, Any], prompts: Mapping[int, Any], style: str, force: bool = False) -> Path:
    """One run of one variant: sample (resumably), execute, score MI, save the rows and the manifest."""
    from .generation import SampleRequest, run_sampling_job

    seed = run_seed(config, r)
    out = run.evaluation(variant.name, r)
    work = run.path("stage3", "work", out.parent.name, out.name)
    key = {**run_key(config, variant, r), "fingerprint": config.fingerprint(*STAGE_SECTIONS[variant.stage])}
    _prepare_work_dir(work, key, force)
    requests = [
        SampleRequest(key=str(tid), prompt=prompts[tid], num_samples=config.sampling.num_samples, seed=seed,
                      meta={"task_id": tid})
        for tid in sorted(tasks)
    ]
    chunk = {"chunk_size": SAMPLING_CHUNK_SIZE} if SAMPLING_CHUNK_SIZE else {}
    drawn = run_sampling_job(backend, requests, work / "samples", desc=f"stage 3 {variant.name} run {r} (seed {seed})",
                             **chunk)
    rows = [dict(row) for row in drawn]
    scores = score_solutions([row["task_id"] for row in rows], [row["code"] for row in rows], tasks, config.sandbox,
                             desc=f"stage 3 {variant.name} run {r}: executing")
    rows = sorted(({**row, **score, "variant": variant.name, "run": r, "seed": seed}
                   for row, score in zip(rows, scores)), key=lambda row: (row["task_id"], row["sample_index"]))
    save_dataset(_to_dataset(rows), out)
    summary = aggregate_run([row["task_id"] for row in rows], [row["passed"] for row in rows],
                            [row["mi"] for row in rows], config.evaluation.k)
    write_manifest(out, config, variant.stage, extra={**run_key(config, variant, r), "prompt_style": style,
                                                       "num_samples": config.sampling.num_samples,
                                                       "summary": summary})
    shutil.rmtree(work, ignore_errors=True)  # every sample now lives in the finished dataset
    print(f"[evaluate] {variant.name} run {r} (seed {seed}): " + format_summary(summary) + f" -> {out}")
    return out


def format_summary(summary: Mapping[str, Any]) -> str:
    """``pass@1 12.5%, pass@10 40.0%, avg MI 88.10 (macro) / 87.95 (micro), 500 tasks, 5000 samples``."""
    parts = [f"pass@{key[len('pass_at_'):]} {_pct(value)}" for key, value in summary.items()
             if key.startswith("pass_at_")]
    parts.append(f"avg MI {_num(summary.get('avg_mi_macro'))} (macro) / {_num(summary.get('avg_mi_micro'))} (micro)")
    parts.append(f"{summary.get('n_tasks')} tasks, {summary.get('n_samples')} samples")
    return ", ".join(parts)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _prepare_work_dir(work: Path, key: Mapping[str, Any], force: bool) -> None:
    """Keep a partial sampling job only when it was started by the same config, seed and adapter."""
    marker = work / WORK_MANIFEST
    if work.exists():
        previous = json.loads(marker.read_text()) if marker.is_file() else None
        if force or previous != json.loads(json.dumps(key, default=str)):
            if previous is not None or force:
                print(f"[evaluate] discarding partial samples in {work} "
                      f"({'--force' if force else 'made by another config'})")
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(key, indent=2, default=str))


def _to_dataset(rows: list[dict[str, Any]]) -> Dataset:
    # ``mi`` is all None when nothing parses (a random tiny model): give Arrow a float type instead of "null".
    from datasets import Value

    dataset = Dataset.from_list(rows)
    if "mi" in dataset.column_names and dataset.features["mi"].dtype != "float64":
        features = dataset.features.copy()
        features["mi"] = Value("float64")
        dataset = Dataset.from_list(rows, features=features)
    return dataset


def _empty_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def load_run_samples(run_dir: Path | str, variant: str, r: int) -> Dataset:
    """The saved samples of one (variant, run)."""
    return load_dataset_dir(RunDir(run_dir).evaluation(variant, r))
