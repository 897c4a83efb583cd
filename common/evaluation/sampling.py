"""Stage ``evaluate`` (paper stage 3): sample, execute and score every model variant on the evaluation split.

For each variant and each run r = 1..``evaluation.runs``, the model samples ``sampling.num_samples`` solutions per
evaluation task (paper: 500 tasks x 10 samples, T=0.6, top_p=0.9, 5 runs). Every sample is executed in the sandbox
and scored by MI (``common.signals.scoring``), and the lot is saved as a dataset at
``3_evaluation/evaluate/<variant>/run<r>`` with its own manifest (a *unit*). The evaluated tasks are frozen beside
them (``evaluate/tasks``). The tables are computed from these rows by ``common.evaluation.report``, so any number in a
report can be traced to the samples that earned it.

Variants (``common.pipeline.registry.variants``): ``baseline`` (no adapter), every adapter stage of the recipe
(``dpo``, ``dpo-further``: the stage's artifact, checked up to date by the runner), or a PEFT adapter folder.

Seeds: run r samples with seed ``sampling.seed + r - 1`` for every variant, so run r of ``dpo`` and run r of the
baseline draw from the same seed (the report pairs runs by it).

What invalidates a finished unit (``registry.unit_fingerprint``): the fields this stage reads (evaluation split,
model, sampling, sandbox), the unit's variant, run and seed, the fingerprint of the variant's adapter stage, and the
identity (``uid``) of that adapter artifact, so a retrained adapter makes its old samples stale. The stage's
``selects`` (which variants, how many runs) are not part of a unit: raising ``evaluation.runs`` from 3 to 5 adds two
runs and keeps the first three.

Resuming: sampling streams through ``run_sampling_job`` in ``runs/<run>/work/evaluate/<variant>/run<r>``, so a
killed run continues from its last committed chunk. A variant's model is loaded once for all of its runs and freed
before the next variant.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from datasets import Dataset

from common.config import ConfigError
from common.evaluation.metrics import aggregate_run
from common.generation import free_accelerator_memory
from common.pipeline.artifacts import ArtifactError, read_manifest, save_dataset
from common.pipeline.registry import BASELINE, adapter_stages, variants
from common.prompting.style import prompt_style
from common.prompting.templates import build_prompt, program_from_reply
from common.signals.scoring import score_solutions
from common.tasks.benchmarks import BENCHMARKS, load_benchmark
from common.tasks.mbpp import load_mbpp

TASKS = "tasks"
WORK_MANIFEST = "job.json"
# Prompts per committed chunk of the sampling job (what a crash can lose); None keeps run_sampling_job's default.
SAMPLING_CHUNK_SIZE: int | None = None


@dataclass(frozen=True)
class Variant:
    """One model to evaluate: its name in tables, its adapter (None: the base model) and where that came from."""

    name: str
    adapter: Path | None
    stage: str | None  # the adapter stage that made it (None: baseline or an outside folder)
    adapter_id: str | None  # changes when the adapter is rebuilt; recorded in each unit's manifest

    @property
    def folder(self) -> str:
        return self.name.replace("/", "_")


def run_seed(config: Any, run: int) -> int:
    """Seed of evaluation run ``run`` (1-based): ``sampling.seed + run - 1``, the same for every variant."""
    return config.sampling.seed + run - 1


def resolve_variant(name: str, ctx: Any) -> Variant:
    """A variant name -> :class:`Variant`. An adapter stage's artifact comes from the runner's checked inputs; an
    outside folder must hold a PEFT adapter."""
    if name == BASELINE:
        return Variant(name, None, None, None)
    if name in {stage.name for stage in adapter_stages(ctx.config)}:
        manifest = ctx.input_manifests[f"variant:{name}"]
        return Variant(name, ctx.input(f"variant:{name}"), name, manifest.get("uid"))
    path = Path(name)
    if not (path / "adapter_config.json").is_file():
        raise ArtifactError(f"evaluation.variants: {name!r} is neither 'baseline', an adapter stage of the recipe, "
                            f"nor a PEFT adapter folder (no adapter_config.json at {path})")
    manifest = read_manifest(path)
    if manifest is not None:
        adapter_id = manifest.get("uid") or f"{manifest.get('fingerprint')}@{manifest.get('created')}"
    else:
        weights = sorted(path.glob("adapter_model.*"))
        adapter_id = ";".join(f"{p.name}@{p.stat().st_mtime_ns}" for p in weights) or None
    return Variant(name, path.resolve(), None, adapter_id)


DEFAULT_BENCHMARK = "mbpp"


def benchmark_prefix(benchmark: str) -> str:
    """Where a benchmark's units live under the stage folder: MBPP at the top (the paper's layout), others in a
    folder of their name."""
    return "" if benchmark == DEFAULT_BENCHMARK else f"{benchmark}/"


def unit_key(ctx: Any, variant: Variant, run: int, benchmark: str = DEFAULT_BENCHMARK) -> dict[str, Any]:
    """What identifies one (variant, run[, benchmark]) besides the stage's reads: recorded in its manifest."""
    key = {"variant": variant.name, "run": run, "seed": run_seed(ctx.config, run),
           "adapter": None if variant.stage or variant.adapter is None else str(variant.adapter),
           "adapter_id": variant.adapter_id}
    if benchmark != DEFAULT_BENCHMARK:
        key["benchmark"] = benchmark
    return key


def unit_fingerprint(ctx: Any, variant: Variant, run: int, benchmark: str = DEFAULT_BENCHMARK) -> str:
    return ctx.unit_fingerprint(unit_key(ctx, variant, run, benchmark), variant.stage)


def unit_is_finished(folder: Path, ctx: Any, variant: Variant, run: int, benchmark: str = DEFAULT_BENCHMARK) -> bool:
    manifest = read_manifest(folder)
    return manifest is not None and manifest.get("fingerprint") == unit_fingerprint(ctx, variant, run, benchmark)


def evaluation_tasks(config: Any, benchmark: str) -> Dataset:
    """The tasks of one benchmark: MBPP's ``data.eval_split``; the others' default split (sanitized MBPP's file
    beside ``data.source``); ``data.max_eval_tasks`` keeps the first N of each."""
    data = config.data
    if benchmark == DEFAULT_BENCHMARK:
        return load_mbpp(data.eval_split, data.source, limit=data.max_eval_tasks)
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"evaluation.benchmarks: unknown benchmark {benchmark!r}; expected some of {BENCHMARKS}")
    source = data.source if benchmark == "mbpp-sanitized" and data.source not in (None, "demo", "hub") else None
    rows = load_benchmark(benchmark, None, source)
    return Dataset.from_list(rows[: data.max_eval_tasks] if data.max_eval_tasks else rows)


def check_k(config: Any) -> None:
    """pass@k needs k <= n samples per task."""
    bad = [k for k in config.evaluation.k if not 1 <= k <= config.sampling.num_samples]
    if bad:
        raise ConfigError(f"evaluation.k {bad}: each k must be between 1 and sampling.num_samples "
                          f"({config.sampling.num_samples})")


def run_evaluation(ctx: Any) -> dict[str, Any]:
    """Evaluate every variant for ``evaluation.runs`` runs; the manifest lists the finished units.

    Each unit's dataset has one row per sample: ``task_id``, ``sample_index``, ``text`` (the raw reply), ``code``
    (the extracted solution), ``finish_reason``, ``num_tokens`` and the other sampling fields, the sandbox verdict
    (``passed``, ``status``, ``detail``, ``duration``), ``mi`` (None when radon cannot parse the code) and
    ``variant``, ``run``, ``seed``.
    """
    config = ctx.config
    check_k(config)
    if config.evaluation.runs < 1:
        raise ConfigError(f"evaluation.runs must be >= 1, got {config.evaluation.runs}")
    benchmarks = list(dict.fromkeys(config.evaluation.benchmarks))
    if not benchmarks:
        raise ConfigError("evaluation.benchmarks is empty: name at least one (mbpp, mbpp-sanitized, humaneval)")
    style = prompt_style(config.model)
    chosen = [resolve_variant(name, ctx) for name in variants(config)]  # fail before any sampling
    suites = {}
    for benchmark in benchmarks:
        tasks = evaluation_tasks(config, benchmark)
        save_dataset(tasks, ctx.output / f"{benchmark_prefix(benchmark)}{TASKS}")
        by_id = {int(task["task_id"]): task for task in tasks}
        prompts = {tid: build_prompt(task, style, config.sampling.system_prompt) for tid, task in by_id.items()}
        suites[benchmark] = (by_id, prompts)
    units = []
    reuse = carried_over(ctx, chosen)
    runs = range(1, config.evaluation.runs + 1)
    pending = {variant.name: [(b, r) for b in benchmarks for r in runs if ctx.force or not unit_is_finished(
        ctx.output / f"{benchmark_prefix(b)}{variant.folder}" / f"run{r}", ctx, variant, r, b)] for variant in chosen}
    progress = {"done": 0, "total": sum(len(todo) for name, todo in pending.items() if name not in reuse)}
    for variant in sorted(chosen, key=lambda v: v.name in reuse):  # sources first: their units get copied
        todo = pending[variant.name]
        if not todo:
            ctx.log(f"{variant.name}: {len(runs)} run(s) x {len(benchmarks)} benchmark(s) up to date")
        elif variant.name in reuse:
            for benchmark, r in todo:
                reuse_unit(ctx, variant, reuse[variant.name], r, benchmark)
        else:
            _evaluate_variant(ctx, variant, todo, suites, style, progress)
            free_accelerator_memory()  # the backend went out of scope with _evaluate_variant
        for benchmark in benchmarks:
            for r in runs:
                folder = ctx.output / f"{benchmark_prefix(benchmark)}{variant.folder}" / f"run{r}"
                unit = {"variant": variant.name, "run": r, "seed": run_seed(config, r),
                        "folder": folder.relative_to(ctx.output).as_posix(), "uid": read_manifest(folder)["uid"]}
                if benchmark != DEFAULT_BENCHMARK:
                    unit["benchmark"] = benchmark
                units.append(unit)
    return {"units": units, "prompt_style": style, "n_tasks": sum(len(s[0]) for s in suites.values()),
            "benchmarks": benchmarks}


def carried_over(ctx: Any, chosen: list[Variant]) -> dict[str, Variant]:
    """Adapter stages that were not trained (no pairs: the stage carried its init adapter over unchanged) whose
    init adapter is another evaluated variant: variant name -> that variant. Sampling them again would cost a third
    of stage 3 for rows that differ only by sampling noise; they reuse the source's samples instead."""
    out = {}
    for variant in chosen:
        manifest = ctx.input_manifests.get(f"variant:{variant.name}") or {} if variant.stage else {}
        if not manifest.get("skipped_training") or not manifest.get("init_adapter"):
            continue
        init = Path(manifest["init_adapter"]).resolve()
        source = next((v for v in chosen if v is not variant and v.adapter is not None
                       and Path(v.adapter).resolve() == init), None)
        if source is not None:
            out[variant.name] = source
    return out


def reuse_unit(ctx: Any, variant: Variant, source: Variant, r: int, benchmark: str = DEFAULT_BENCHMARK) -> Path:
    """Run ``r`` of an untrained variant: the source variant's finished rows, relabelled, with a manifest that
    says so (``reused_from``)."""
    from common.pipeline.artifacts import load_dataset_dir

    prefix = benchmark_prefix(benchmark)
    src = ctx.output / f"{prefix}{source.folder}" / f"run{r}"
    src_manifest = read_manifest(src) or {}
    rows = load_dataset_dir(src)
    rows = rows.remove_columns(["variant"]).add_column("variant", [variant.name] * len(rows))
    out = ctx.output / f"{prefix}{variant.folder}" / f"run{r}"
    save_dataset(rows, out)
    key = unit_key(ctx, variant, r, benchmark)
    ctx.write_unit_manifest(out, unit_fingerprint(ctx, variant, r, benchmark),
                            {**key, "prompt_style": src_manifest.get("prompt_style"),
                             "num_samples": src_manifest.get("num_samples"), "summary": src_manifest.get("summary"),
                             "reused_from": {"variant": source.name, "uid": src_manifest.get("uid")}})
    ctx.log(f"{variant.name} run {r}: not trained (its adapter is {source.name}'s, carried over), so it reuses "
            f"{source.name}'s samples instead of sampling them again -> {out}")
    return out


def _evaluate_variant(ctx: Any, variant: Variant, todo: list[tuple[str, int]],
                      suites: Mapping[str, tuple[Mapping[int, Any], Mapping[int, Any]]], style: str,
                      progress: dict[str, int] | None = None) -> None:
    """Load the variant's model once and sample/score each pending (benchmark, run) with it."""
    from common.generation import make_backend

    backend = make_backend(ctx.config.sampling, ctx.config.model, adapter=variant.adapter, style=style)
    try:
        for benchmark, r in todo:
            tasks, prompts = suites[benchmark]
            if progress is not None:
                progress["done"] += 1
            evaluate_run(ctx, variant, r, backend, tasks, prompts, style, benchmark, progress)
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()
        del backend


def evaluate_run(ctx: Any, variant: Variant, r: int, backend: Any, tasks: Mapping[int, Any],
                 prompts: Mapping[int, Any], style: str, benchmark: str = DEFAULT_BENCHMARK,
                 progress: Mapping[str, int] | None = None) -> Path:
    """One run of one variant on one benchmark: sample (resumably), execute, score MI, save the rows and the
    unit's manifest."""
    from common.generation import SampleRequest, run_sampling_job

    config = ctx.config
    seed = run_seed(config, r)
    where = f"{benchmark_prefix(benchmark)}{variant.folder}"
    out = ctx.output / where / f"run{r}"
    work = ctx.work / where / f"run{r}"
    key = unit_key(ctx, variant, r, benchmark)
    fingerprint = unit_fingerprint(ctx, variant, r, benchmark)
    _prepare_work_dir(ctx, work, {**key, "fingerprint": fingerprint})
    requests = [
        SampleRequest(key=str(tid), prompt=prompts[tid], num_samples=config.sampling.num_samples, seed=seed,
                      meta={"task_id": tid})
        for tid in sorted(tasks)
    ]
    chunk = {"chunk_size": SAMPLING_CHUNK_SIZE} if SAMPLING_CHUNK_SIZE else {}
    label = f"{variant.name} run {r}" + (f" on {benchmark}" if benchmark != DEFAULT_BENCHMARK else "")
    if progress and progress.get("total", 0) > 1:  # "eval run 3/6": where the stage is overall
        label += f" [{progress['done']}/{progress['total']}]"
    drawn = run_sampling_job(backend, requests, work / "samples", desc=f"evaluate {label} (seed {seed})", **chunk)
    rows = [dict(row) for row in drawn]
    for row in rows:  # a HumanEval reply continues (or redefines) its prompt's function
        row["code"] = program_from_reply(tasks[int(row["task_id"])], row["code"], style)
    scores = score_solutions([row["task_id"] for row in rows], [row["code"] for row in rows], tasks, config.sandbox,
                             desc=f"evaluate {label}: executing")
    rows = sorted(({**row, **score, "variant": variant.name, "run": r, "seed": seed}
                   for row, score in zip(rows, scores)), key=lambda row: (row["task_id"], row["sample_index"]))
    save_dataset(_to_dataset(rows), out)
    summary = aggregate_run([row["task_id"] for row in rows], [row["passed"] for row in rows],
                            [row["mi"] for row in rows], config.evaluation.k)
    ctx.write_unit_manifest(out, fingerprint, {**key, "prompt_style": style,
                                               "num_samples": config.sampling.num_samples, "summary": summary})
    shutil.rmtree(work, ignore_errors=True)  # every sample now lives in the finished dataset
    ctx.log(f"{label} (seed {seed}): " + format_summary(summary) + f" -> {out}")
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


def _prepare_work_dir(ctx: Any, work: Path, key: Mapping[str, Any]) -> None:
    """Keep a partial sampling job only when it was started by the same config, seed and adapter."""
    marker = work / WORK_MANIFEST
    if work.exists():
        previous = json.loads(marker.read_text()) if marker.is_file() else None
        if ctx.force or previous != json.loads(json.dumps(key, default=str)):
            if previous is not None or ctx.force:
                ctx.log(f"discarding partial samples in {work} ({'--force' if ctx.force else 'made by another config'})")
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
