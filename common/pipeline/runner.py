"""Running stages: ``run_stage(name, config, run_dir)`` for one, ``run_pipeline`` for the recipe in order.

The runner does what every stage needs, so stage functions hold only their own work:

1. it skips the stage when its artifact is up to date: the manifest's fingerprint equals the one the config gives now
   (``registry.fingerprint``), and every input artifact is still the one it was made from (same ``uid``);
2. it refuses to start when an input is missing or out of date. The message names the command that rebuilds it and
   repeats the user's own ``--config``/``--set``/``--run-dir``, so following it builds the artifact of this config;
3. it hands the function a :class:`StageContext` whose ``config`` is a view of only the declared fields;
4. it writes the manifest when the function returns and removes the stage's scratch folder
   (``runs/<run>/work/<stage>``). A crash before that leaves no "finished" marker; resumable stages (sampling jobs,
   training checkpoints) keep their partial work and continue on the next call.

A crashed ``run`` is resumed by running the same command again.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from common.config import PipelineConfig
from common.pipeline.artifacts import (MANIFEST, ArtifactError, RunDir, load_dataset_dir, read_manifest, record_config,
                                       write_manifest)
from common.pipeline.registry import (Stage, fingerprint, get_stage, in_recipe, reads_of, recipe, stage_inputs,
                                      unit_fingerprint)
from common.pipeline.view import ConfigView, read_value


def is_main_process() -> bool:
    """Rank 0, or no launcher. Read from the environment: under `accelerate launch` every rank runs the stage,
    but only rank 0 writes manifests."""
    return int(os.environ.get("RANK", "0")) == 0


def command_for(stage: str, config: PipelineConfig, run: RunDir) -> str:
    """The CLI command that runs ``stage`` with the same config the user gave (file, overrides) on this run dir."""
    path, overrides = getattr(config, "_origin", (None, []))
    parts = ["python -m common", stage]
    if path:
        parts += ["--config", shlex.quote(str(path))]
    parts += [f"--set {shlex.quote(item)}" for item in overrides]
    parts += ["--run-dir", shlex.quote(str(run.root))]
    return " ".join(parts)


def staleness(run: RunDir, config: PipelineConfig, name: str) -> str | None:
    """None when stage ``name``'s artifact is up to date for ``config``; else why it is not. Transitive: an artifact
    built from an out-of-date input is out of date too. An input whose artifact was deleted is not held against
    it (the fingerprint chain already says which config made it)."""
    stage = get_stage(name)
    manifest = read_manifest(run.stage_dir(name))
    if manifest is None:
        return "missing or unfinished"
    if manifest.get("fingerprint") != fingerprint(config, name):
        recorded = manifest.get("reads", {})
        changed = [path for path, value in reads_of(config, stage).items() if recorded.get(path) != value]
        changed += [path for path in stage.selects if manifest.get("selects", {}).get(path) != read_value(config, path)]
        if changed:
            return f"made by a different config (fields that differ: {', '.join(changed)})"
        moved = [upstream for role, upstream in stage_inputs(config, stage).items()
                 if manifest.get("inputs", {}).get(role, {}).get("fingerprint") != fingerprint(config, upstream)]
        return (f"made by a different config (the config of the stage(s) it is built from differs: "
                f"{', '.join(moved) or 'unknown'})")
    for role, upstream in stage_inputs(config, stage).items():
        current = read_manifest(run.stage_dir(upstream))
        made_from = manifest.get("inputs", {}).get(role, {}).get("uid")
        if current is not None and current.get("uid") != made_from:
            return f"out of date: its input {upstream!r} was rebuilt after it"
        if current is not None and staleness(run, config, upstream) is not None:
            return f"out of date: its input {upstream!r} is itself out of date"
    return None


@dataclass
class StageContext:
    """What a stage function gets: the view of its config, its input folders and its output folder."""

    stage: Stage
    config: ConfigView
    run: RunDir
    output: Path
    force: bool
    inputs: dict[str, Path]
    input_manifests: dict[str, dict[str, Any]]
    params: Mapping[str, Any] = field(default_factory=dict)
    main_process: bool = True
    full_config: PipelineConfig | None = field(default=None, repr=False)  # for fingerprints only, never for reads

    @property
    def work(self) -> Path:
        """This stage's scratch folder (``RunDir.work_dir``)."""
        return self.run.work_dir(self.stage.name)

    def input(self, role: str) -> Path:
        """The artifact folder of input ``role`` (checked up to date before the function was called)."""
        if role not in self.inputs:
            raise KeyError(f"stage {self.stage.name!r} declares no input {role!r} (declared: {sorted(self.inputs)})")
        return self.inputs[role]

    def input_dataset(self, role: str, subfolder: str | None = None) -> Any:
        folder = self.input(role)
        return load_dataset_dir(folder / subfolder if subfolder else folder)

    def log(self, message: str) -> None:
        if self.main_process:
            print(f"[{self.stage.name}] {message}", flush=True)

    def unit_fingerprint(self, unit: Mapping[str, Any], input_stage: str | None) -> str:
        """Fingerprint of one unit (``registry.unit_fingerprint``) of this fan-out stage."""
        return unit_fingerprint(self.full_config, self.stage.name, unit, input_stage)

    def write_unit_manifest(self, folder: Path, fingerprint_: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        return write_manifest(folder, self.stage.name, fingerprint_, dict(extra), run_name=self.full_config.run_name)


def run_stage(name: str, config: PipelineConfig, run_dir: Path | str, force: bool = False) -> Path:
    """Run one stage of ``config``'s recipe on ``run_dir``, unless its artifact is up to date; returns its folder."""
    stage = in_recipe(config, name)
    run = RunDir(run_dir)
    run.check_layout()
    out = run.stage_dir(stage.name)
    main = is_main_process()
    if not force and staleness(run, config, stage.name) is None:
        if main:
            print(f"[{stage.name}] up to date: {out}", flush=True)
        return out
    inputs, manifests = {}, {}
    for role, upstream in stage_inputs(config, stage).items():
        reason = staleness(run, config, upstream)
        if reason is not None and not run.root.exists():
            reason += f" (the run folder {run.root} does not exist)"
        if reason is not None:
            raise ArtifactError(
                f"{stage.name} needs the {upstream!r} artifact at {run.stage_dir(upstream)}, which is {reason}; "
                f"run `{command_for(upstream, config, run)}` first (or `{command_for('run', config, run)}` for every "
                f"stage)")
        inputs[role], manifests[role] = run.stage_dir(upstream), read_manifest(run.stage_dir(upstream))
    if main:
        record_config(run, config)
        (out / MANIFEST).unlink(missing_ok=True)  # a stale "finished" marker must not survive a crash of this run
    context = StageContext(stage=stage, config=ConfigView(config, stage.name, stage.reads + stage.selects), run=run,
                           output=out, force=force, inputs=inputs, input_manifests=manifests, params=stage.params,
                           main_process=main, full_config=config)
    extra = stage.load_function()(context) or {}
    if main:
        write_stage_manifest(run, config, stage.name, extra)
        # the artifact now holds every row: its resumable scratch work is no longer needed
        work = run.work_dir(stage.name)
        shutil.rmtree(work, ignore_errors=True)
        if work.parent.is_dir() and not any(work.parent.iterdir()):
            work.parent.rmdir()
    return out


def write_stage_manifest(run: RunDir, config: PipelineConfig, name: str, extra: Mapping[str, Any] | None = None
                         ) -> dict[str, Any]:
    """Mark stage ``name``'s artifact finished for ``config``: its fingerprint, the values it read, and the uid of
    every input it was made from (which must exist)."""
    stage = get_stage(name)
    inputs = {}
    for role, upstream in stage_inputs(config, stage).items():
        manifest = read_manifest(run.stage_dir(upstream)) or {}
        inputs[role] = {"stage": upstream, "fingerprint": manifest.get("fingerprint"), "uid": manifest.get("uid")}
    return write_manifest(run.stage_dir(name), stage.name, fingerprint(config, name), run_name=config.run_name, extra={
        "reads": reads_of(config, stage),
        "selects": {path: read_value(config, path) for path in stage.selects},
        "inputs": inputs,
        **(extra or {}),
    })


def run_pipeline(config: PipelineConfig, run_dir: Path | str, force: bool = False) -> Path:
    """Every stage of the recipe in order, each skipping itself when up to date; ``force`` recomputes all."""
    stages = recipe(config)
    timings = []
    for number, stage in enumerate(stages, 1):
        print(f"\n=== stage {number}/{len(stages)}: {stage.name} ===", flush=True)
        start = time.perf_counter()
        run_stage(stage.name, config, run_dir, force=force)
        timings.append((stage.name, time.perf_counter() - start))
    reports = [stage for stage in stages if stage.produces == "report"]
    if reports:
        from common.evaluation.report.build import print_table

        print()
        print_table(RunDir(run_dir).stage_dir(reports[-1].name))
    print("stage timings: " + ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings))
    return Path(run_dir)
