"""Run directories and artifact manifests.

A run directory mirrors the repository: ``runs/<run>/<group>/<stage>/``, where ``group`` is the repository folder
whose notebook runs the stage (``1_global_dataset_generation``, ``2_fine_tuning_process``, ``3_evaluation``) and
``stage`` is the stage's one name (``common/pipeline/stages.py``). Each artifact folder holds a ``manifest.json``:
the stage, its fingerprint (``registry.fingerprint``), the values of the config fields it read, the identity (``uid``)
of every input artifact it was made from, library versions and the git commit. ``common.pipeline.runner`` decides
from these whether an artifact is up to date, so a table in a report can always be traced back to code, data and
settings.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from common.config import REPO_ROOT, PipelineConfig, save_config

MANIFEST = "manifest.json"
CONFIG_FILE = "config.yaml"
_TRACKED_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "radon", "vllm")
# Top-level folders of the layout before the stage registry (stage1/mbpp, stage2/dpo, stage3/samples, report).
_OLD_LAYOUT = ("stage1", "stage2", "stage3")


class ArtifactError(RuntimeError):
    """An input artifact is missing, unfinished, or made by another config; or the run dir has an old layout."""


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
    """The layout of one run directory: ``<root>/<group>/<stage>/`` per stage."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    def stage_dir(self, name: str) -> Path:
        """The artifact folder of stage ``name``."""
        from common.pipeline.registry import get_stage

        stage = get_stage(name)
        return self.root / stage.group / stage.name

    def work_dir(self, name: str) -> Path:
        """Scratch space of stage ``name`` (resumable sampling jobs, generator output): ``<root>/work/<name>/``,
        kept apart from the artifacts and removed by the stage once its artifact is written."""
        from common.pipeline.registry import get_stage

        return self.root / "work" / get_stage(name).name

    def check_layout(self) -> None:
        """Refuse a run directory made by the layout before the stage registry, with what to do about it."""
        old = [name for name in _OLD_LAYOUT if (self.root / name).is_dir()]
        if old:
            raise ArtifactError(
                f"{self.root} was made by an earlier mi-align layout ({', '.join(f'{n}/' for n in old)}): its "
                f"artifacts are fingerprinted differently and cannot be reused. Move it aside or delete it "
                f"(rm -rf {self.root}), or pass another --run-dir; every stage is then computed afresh.")


def write_manifest(folder: Path, stage: str, fingerprint: str, extra: dict[str, Any] | None = None,
                   run_name: str | None = None) -> dict[str, Any]:
    """Mark ``folder`` as a finished artifact of ``stage`` (atomically: a crash never leaves a half-written marker)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "stage": stage,
        "fingerprint": fingerprint,
        "run_name": run_name,
        "versions": library_versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # Identifies this write: `created` has one-second resolution, too coarse to tell a redone artifact from the
        # one it replaced; downstream manifests record the uid of every input they were made from.
        "uid": uuid.uuid4().hex,
        **(extra or {}),
    }
    path = folder / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, path)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def record_config(run: RunDir, config: PipelineConfig) -> None:
    """Keep the latest resolved config beside the artifacts (each artifact also has its own manifest)."""
    run.root.mkdir(parents=True, exist_ok=True)
    save_config(config, run.config_file)


def save_dataset(dataset, folder: Path) -> Path:
    """``save_to_disk`` through a temporary folder and a rename, so a crash never leaves a half-written dataset
    where a later stage would read it."""
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
