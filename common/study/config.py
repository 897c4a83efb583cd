"""A study preset: a pipeline preset plus a ``study:`` section listing the arms.

Each arm is one training method on one preference signal. Its recipe is derived from the method
(:data:`METHOD_STAGES`), so an arm is two words in YAML, not a stage list. Everything else (model, data, sampling,
evaluation, each method's section) comes from the pipeline preset and is the same for every arm, unless the arm's
own ``set:`` overrides say otherwise (those are ``--set`` strings, checked the same way).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import ConfigError, PipelineConfig, _f, from_dict, load_config
from common.pipeline.registry import BASELINE

# method -> the stages that train it after `prepare`/`candidates`, the last one being the arm's model
METHOD_STAGES: dict[str, tuple[str, ...]] = {
    "dpo": ("pairs", "dpo"),
    "sft": ("targets", "sft"),
    "sft_dpo": ("targets", "sft", "pairs", "sft-dpo"),
    "kto": ("singles", "kto"),
    "kto_sft": ("singles", "kto", "targets", "kto-sft"),
    "grpo": ("grpo",),  # online RL: prompts and the sandbox, no stage-1 candidates
    "sft_data": ("optimize-data", "sft-data"),  # SFT on the references after data_opt.steps (no candidates)
    "dpo_data": ("optimize-candidates", "pairs-optimized", "dpo-data"),  # DPO on the optimised candidate pool
}
STAGE2 = ("self-generation", "dpo-further")  # the paper's second round, for dpo arms
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class ArmConfig:
    name: str = _f("", "The arm's name: its row in the report and its folder under arms/.")
    method: str = _f("dpo", f"Training method: one of {sorted(METHOD_STAGES)}.")
    signal: str = _f("mi", "Preference signal (stage1.signal) its training data is labelled by.")
    stage2: bool = _f(False, "dpo only: add the paper's self-generation and second DPO round (the arm's model is "
                             "then -dpo-further).")
    set: list[str] = _f(help="--set style overrides for this arm only, e.g. ['dpo.beta=0.3'].", factory=list)


@dataclass
class StudyConfig:
    arms: list[ArmConfig] = _f(help="The arms, each trained and evaluated like the others.", factory=list)
    baseline: bool = _f(True, "Evaluate the untrained model too (the rows every arm is compared with).")


@dataclass
class Study:
    """A loaded study: its config, where it came from, and the pipeline config of the shared stages."""

    study: StudyConfig
    path: str
    overrides: list[str] = field(default_factory=list)

    def arm_config(self, arm: ArmConfig) -> PipelineConfig:
        stages = arm_recipe(arm)
        model_stage = stages[-2]
        return self._load([f"stage1.signal={arm.signal}", f"recipe=[{','.join(stages)}]",
                           f"evaluation.variants=[{model_stage}]", *arm.set])

    def shared_config(self) -> PipelineConfig:
        """The stages every arm shares: the tasks, the candidates and the baseline's evaluation."""
        variants = f"evaluation.variants=[{BASELINE}]" if self.study.baseline else "evaluation.variants=[]"
        return self._load(["recipe=[prepare,candidates,evaluate]", variants])

    def _load(self, extra: list[str]) -> PipelineConfig:
        return load_config(self.path, [*self.overrides, *extra], sections={})


def arm_recipe(arm: ArmConfig) -> list[str]:
    """prepare, [candidates,] the method's stages, [stage 2,] evaluate."""
    stages = list(METHOD_STAGES[arm.method])
    if arm.stage2:
        stages += STAGE2
    head = ["prepare"] if stages[0] in ("grpo", "optimize-data") else ["prepare", "candidates"]
    return [*head, *stages, "evaluate"]


def check_study(study: StudyConfig, where: str) -> None:
    if not study.arms:
        raise ConfigError(f"{where}: study.arms is empty; list at least one arm (name, method, signal)")
    seen: set[str] = set()
    for number, arm in enumerate(study.arms, 1):
        at = f"{where}: study.arms[{number}] ({arm.name or 'unnamed'})"
        if not _NAME.match(arm.name or ""):
            raise ConfigError(f"{at}: name must be letters, digits, '-', '_' or '.', got {arm.name!r}")
        if arm.name in seen or arm.name == BASELINE:
            raise ConfigError(f"{at}: the name {arm.name!r} is " + ("reserved" if arm.name == BASELINE else "taken"))
        seen.add(arm.name)
        if arm.method not in METHOD_STAGES:
            raise ConfigError(f"{at}: method must be one of {sorted(METHOD_STAGES)}, got {arm.method!r}")
        if arm.stage2 and arm.method != "dpo":
            raise ConfigError(f"{at}: stage2 (self-generation + a second DPO round) is for dpo arms only")


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """The study preset at ``path`` (its ``study:`` section, the rest a pipeline preset); every arm's config is
    built once here so a typo in any arm fails before anything runs."""
    sections: dict[str, Any] = {}
    load_config(path, overrides, sections=sections)
    if "study" not in sections:
        raise ConfigError(f"{path}: no study: section (a study preset lists its arms under study.arms)")
    raw = sections["study"] or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: study: must be a mapping with an arms: list")
    arms = raw.get("arms") or []
    if not isinstance(arms, list):
        raise ConfigError(f"{path}: study.arms must be a list")
    study = from_dict(StudyConfig, {**raw, "arms": []}, where=f"{path}: study")
    study.arms = [from_dict(ArmConfig, arm, where=f"{path}: study.arms[{i}]") for i, arm in enumerate(arms, 1)]
    check_study(study, str(path))
    loaded = Study(study, str(path), list(overrides or []))
    for arm in study.arms:
        try:
            loaded.arm_config(arm)
        except ConfigError as exc:
            raise ConfigError(f"study arm {arm.name!r}: {exc}") from None
    loaded.shared_config()
    return loaded
