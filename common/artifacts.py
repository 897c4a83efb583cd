"""Run directories and artifact manifests.

Every artifact (a dataset saved with ``save_to_disk``, a PEFT adapter, a metrics file) sits in its own folder
with a ``manifest.json`` recording the config sections that made it, their fingerprint, library versions and the
git commit. A stage refuses to start when its input is missing or was made by a different config, so a table in a
report can always be traced back to code, data and settings.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import PipelineConfig, REPO_ROOT, save_config

MANIFEST = "manifest.json"
_TRACKED_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "radon", "vllm")

# Which config sections determine each artifact: a change to any of them invalidates it (and its dependants).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    # `data:train` / `data:eval`: the part of `data` a stage reads (config.SECTION_VIEWS); only `prepare` writes
    # both splits and depends on all of it.
    "mbpp": ("data",),
    "candidates": ("data:train", "stage1", "stage1_sampling", "generator_model", "sandbox"),
    "pairs": ("data:train", "stage1", "stage1_sampling", "generator_model", "sandbox", "model"),
    "dpo": ("data:train", "stage1", "stage1_sampling", "generator_model", "sandbox", "model", "dpo"),
    "selfgen": ("data:train", "stage1", "stage1_sampling", "generator_model", "sandbox", "model", "dpo", "sampling",
                "self_generation"),
    "dpo_further": ("data:train", "stage1", "stage1_sampling", "generator_model", "sandbox", "model", "dpo",
                    "sampling", "self_generation", "dpo_further"),
    "report": ("model", "evaluation"),
}
# Stage 3: one evaluation run = what its variant's adapter depends on + what sampling and judging the test split
# depend on. Not `evaluation`: changing `evaluation.runs` or `k` must keep finished runs valid (common/evaluation.py).
_EVALUATION_INPUTS = ("data:eval", "sandbox", "model", "sampling")
STAGE_SECTIONS.update({
    "eval_baseline": _EVALUATION_INPUTS,
    "eval_adapter": _EVALUATION_INPUTS,
    "eval_dpo": tuple(dict.fromkeys(STAGE_SECTIONS["dpo"] + _EVALUATION_INPUTS)),
    "eval_dpo_further": tuple(dict.fromkeys(STAGE_SECTIONS["dpo_further"] + _EVALUATION_INPUTS)),
})


# stage name -> the CLI command that produces it (for error messages that say what to run).
PRODUCER = {"mbpp": "prepare", "candidates": "generate-candidates", "pairs": "label-pairs", "dpo": "dpo",
            "selfgen": "self-generate", "dpo_further": "dpo-further"}


class ArtifactError(RuntimeError):
    """An input artifact is missing, incomplete, or made by another config."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class RunDir:
    """The layout of one run: ``runs/<run>/`` with one folder per artifact."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    # stage 1
    @property
    def mbpp(self) -> Path:
        return self.path("stage1", "mbpp")

    @property
    def candidates(self) -> Path:
        return self.path("stage1", "candidates")

    @property
    def pairs(self) -> Path:
        return self.path("stage1", "pairs")

    # stage 2
    @property
    def dpo_adapter(self) -> Path:
        return self.path("stage2", "dpo")

    @property
    def selfgen(self) -> Path:
        return self.path("stage2", "selfgen")

    @property
    def selfgen_pairs(self) -> Path:
        return self.path("stage2", "selfgen_pairs")

    @property
    def dpo_further_adapter(self) -> Path:
        return self.path("stage2", "dpo_further")

    # stage 3
    def evaluation(self, variant: str, run: int) -> Path:
        return self.path("stage3", "samples", variant.replace("/", "_"), f"run{run}")

    @property
    def report(self) -> Path:
        return self.path("report")


def write_manifest(folder: Path, config: PipelineConfig, stage: str, extra: dict[str, Any] | None = None) -> Path:
    """Mark ``folder`` as a finished artifact of ``stage`` made by ``config``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sections = STAGE_SECTIONS.get(stage, ())
    manifest = {
        "stage": stage,
        "fingerprint": config.fingerprint(*sections),
        "sections": {name: config.section(name) for name in sections},
        "run_name": config.run_name,
        "versions": library_versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # Identifies this write: `created` has one-second resolution, too coarse to tell a redone artifact from
        # the one it replaced (the report decides whether it is up to date by its inputs' identities).
        "uid": uuid.uuid4().hex,
        **(extra or {}),
    }
    path = folder / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written "finished" marker
    return path


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def is_complete(folder: Path, config: PipelineConfig, stage: str) -> bool:
    """True when ``folder`` holds a finished artifact made by the same config sections."""
    manifest = read_manifest(folder)
    return manifest is not None and manifest.get("fingerprint") == config.fingerprint(*STAGE_SECTIONS.get(stage, ()))


def skip_if_complete(folder: Path, config: PipelineConfig, stage: str, label: str, force: bool = False) -> bool:
    """The opening of every stage function: True (and says so) when ``folder`` is already complete for ``config``."""
    if force or not is_complete(folder, config, stage):
        return False
    print(f"[{label}] up to date: {folder}")
    return True


def require(folder: Path, config: PipelineConfig, stage: str, needed_by: str) -> dict[str, Any]:
    """The manifest of an input artifact, or a clear error saying what to run first."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise ArtifactError(
            f"{needed_by} needs the {stage!r} artifact at {folder}, which is missing or unfinished; "
            f"run `python -m common {PRODUCER.get(stage, stage)} --run-dir {Path(folder).parents[1]}` first"
        )
    expected = config.fingerprint(*STAGE_SECTIONS.get(stage, ()))
    if manifest.get("fingerprint") != expected:
        changed = [
            name for name in STAGE_SECTIONS.get(stage, ())
            if manifest.get("sections", {}).get(name) != config.section(name)
        ]
        raise ArtifactError(
            f"{needed_by}: the {stage!r} artifact at {folder} was made by a different config "
            f"(sections that differ: {changed or 'unknown'}); re-run that stage with --force or use another --run-dir"
        )
    return manifest


def record_config(run: RunDir, config: PipelineConfig) -> None:
    """Keep the latest resolved config beside the artifacts (each artifact also has its own manifest)."""
    run.root.mkdir(parents=True, exist_ok=True)
    save_config(config, run.config_file)


def save_dataset(dataset, folder: Path) -> Path:
    """``save_to_disk`` through a temporary folder and a rename, so a crash never leaves a half-written dataset
    where a later stage would read it."""
    import shutil

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    was_enabled = is_progress_bar_enabled()
    disable_progress_bar()  # a "Saving the dataset" bar per artifact is noise next to the stages' own progress
    try:
        # an empty dataset needs an explicit shard count, or it is saved with no data file and cannot be reloaded
        dataset.save_to_disk(str(tmp), **({"num_shards": 1} if len(dataset) == 0 else {}))
    finally:
        if was_enabled:
            enable_progress_bar()
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, folder)
    return folder


def load_dataset_dir(folder: Path):
    from datasets import load_from_disk

    return load_from_disk(str(folder))
