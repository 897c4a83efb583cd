"""The stage graph: what a stage is, how its fingerprint is chained, and which stages a config's recipe runs.

A stage is declared once, in ``common/pipeline/stages.py``, as a :class:`Stage`: its name (the one spelling used by the
CLI command, the notebook, the artifact folder, the manifest and the report), the function that does the work, the
artifacts it reads (``inputs``: role -> producing stage), and the config it reads (``reads``). Everything else is
derived from those declarations: the CLI subcommands, the order of ``run``, the "run X first" hints, the evaluation
variants and the report's training curves. Nothing restates the stage list.

Fingerprints form a chain. A stage's fingerprint hashes the values of its ``reads`` and its ``selects`` together with
the fingerprints of its inputs. So changing a field changes the fingerprint of every stage that reads it and of
everything downstream of those stages, and nothing else (``tests/test_registry.py`` checks this for every field of the
config and every stage). ``selects`` are fields that choose *which* units a fan-out stage produces (evaluation:
variants, runs). They belong to the stage's fingerprint but not to each unit's (:func:`unit_fingerprint`), so going
from 3 to 5 runs keeps the 3 finished ones.

A recipe (``config.recipe``) is the list of stages to run, in order. The paper's is the default. A recipe that drops
stage 2 (``[prepare, candidates, pairs, dpo, evaluate, report]``) is one YAML list. Each stage's inputs must come from
stages earlier in the same recipe.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from common.config import ConfigError, PipelineConfig
from common.pipeline.view import check_paths, read_value

GROUPS = ("1_global_dataset_generation", "2_fine_tuning_process", "3_evaluation")
KINDS = ("tasks", "candidates", "pairs", "examples", "adapter", "samples", "report")  # examples: KTO singles, SFT targets
BASELINE = "baseline"


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, declared once (``common/pipeline/stages.py``)."""

    name: str  # CLI command, notebook suffix, artifact folder, manifest `stage`, report variant
    group: str  # the repository folder whose notebooks run it; also the artifact folder's parent
    function: str  # "module:function", imported when the stage runs; called as function(ctx: StageContext)
    help: str  # one line for `python -m common --help`
    notebook: str  # path of its notebook, relative to the repository root
    produces: str  # what its artifact holds: one of KINDS
    reads: tuple[str, ...]  # config paths it reads; all are fingerprinted
    inputs: Mapping[str, str] = field(default_factory=dict)  # role -> name of the stage whose artifact it reads
    selects: tuple[str, ...] = ()  # config paths choosing which units it makes (fingerprinted per stage, not unit)
    params: Mapping[str, Any] = field(default_factory=dict)  # fixed keyword settings of the function for this stage
    evaluates_adapters: bool = False  # one more input per adapter stage named in evaluation.variants
    aliases: tuple[str, ...] = ()  # earlier CLI spellings still accepted

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"stage {self.name}: group must be one of {GROUPS}")
        if self.produces not in KINDS:
            raise ValueError(f"stage {self.name}: produces must be one of {KINDS}")
        check_paths(self.reads + self.selects, f"stage {self.name}")

    def load_function(self) -> Callable[..., Any]:
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)


_REGISTRY: dict[str, Stage] = {}


def declare(stage: Stage) -> Stage:
    """Add ``stage`` to the registry (names and aliases are unique; inputs must be declared before)."""
    taken = {alias: s.name for s in _REGISTRY.values() for alias in (s.name, *s.aliases)}
    for name in (stage.name, *stage.aliases):
        if name in taken:
            raise ValueError(f"stage name {name!r} is already used by stage {taken[name]!r}")
    for role, upstream in stage.inputs.items():
        if upstream not in _REGISTRY:
            raise ValueError(f"stage {stage.name}: input {role!r} names undeclared stage {upstream!r}")
    _REGISTRY[stage.name] = stage
    return stage


def all_stages() -> dict[str, Stage]:
    """Every declared stage, in declaration order (the declarations are imported on first use)."""
    importlib.import_module("common.pipeline.stages")
    return dict(_REGISTRY)


def get_stage(name: str) -> Stage:
    stages = all_stages()
    for stage in stages.values():
        if name == stage.name or name in stage.aliases:
            return stage
    raise ConfigError(f"unknown stage {name!r}; declared stages: {list(stages)}")


# --------------------------------------------------------------------------------------------------------------
# Recipes


def recipe(config: PipelineConfig) -> list[Stage]:
    """The stages of ``config.recipe`` in order; an unknown name or an input from outside the recipe is an error."""
    stages = [get_stage(name) for name in config.recipe]
    seen: set[str] = set()
    for stage in stages:
        if stage.name in seen:
            raise ConfigError(f"recipe: stage {stage.name!r} is listed twice")
        for role, upstream in stage.inputs.items():
            if upstream not in seen:
                raise ConfigError(f"recipe {list(config.recipe)}: stage {stage.name!r} reads the {upstream!r} artifact "
                                  f"({role}), so {upstream!r} must come before it in the recipe")
        seen.add(stage.name)
    return stages


def in_recipe(config: PipelineConfig, name: str) -> Stage:
    stage = get_stage(name)
    if stage.name not in config.recipe:
        raise ConfigError(f"stage {stage.name!r} is not in this config's recipe {list(config.recipe)}")
    return stage


def adapter_stages(config: PipelineConfig) -> list[Stage]:
    """The recipe's stages that train an adapter, in recipe order: the models stage 3 can evaluate."""
    return [stage for stage in recipe(config) if stage.produces == "adapter"]


def variants(config: PipelineConfig) -> list[str]:
    """What stage 3 evaluates: ``evaluation.variants`` or, when that is empty, the baseline and every adapter stage
    of the recipe. A name is ``baseline``, an adapter stage of the recipe, or the path of a PEFT adapter folder."""
    adapters = [stage.name for stage in adapter_stages(config)]
    names = list(config.evaluation.variants or [BASELINE, *adapters])
    for name in names:
        if name in all_stages() and name not in adapters:
            raise ConfigError(f"evaluation.variants: {name!r} is not an adapter stage of the recipe "
                              f"(adapter stages: {adapters}; or give 'baseline' or an adapter folder)")
    return names


def stage_inputs(config: PipelineConfig, stage: Stage) -> dict[str, str]:
    """role -> upstream stage: the declared inputs, plus ``variant:<name>`` for each evaluated adapter stage."""
    inputs = dict(stage.inputs)
    if stage.evaluates_adapters:
        adapters = {s.name for s in adapter_stages(config)}
        inputs.update({f"variant:{name}": name for name in variants(config) if name in adapters})
    return inputs


def downstream(config: PipelineConfig, name: str) -> list[str]:
    """The recipe stages that read ``name``'s artifact, directly or through others."""
    found: list[str] = []
    for stage in recipe(config):
        ups = set(stage_inputs(config, stage).values())
        if name in ups or ups & set(found):
            found.append(stage.name)
    return found


# --------------------------------------------------------------------------------------------------------------
# Fingerprints


def _digest(blob: Any) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def reads_of(config: PipelineConfig, stage: Stage) -> dict[str, Any]:
    """The values of the config paths the stage reads (recorded in its manifest)."""
    return {path: read_value(config, path) for path in stage.reads}


def fingerprint(config: PipelineConfig, name: str) -> str:
    """Hash of the stage's reads and selects and of its inputs' fingerprints (recursively)."""
    stage = get_stage(name)
    return _digest({
        "stage": stage.name,
        "reads": reads_of(config, stage),
        "selects": {path: read_value(config, path) for path in stage.selects},
        "params": dict(stage.params),
        "inputs": {role: fingerprint(config, up) for role, up in stage_inputs(config, stage).items()},
    })


def unit_fingerprint(config: PipelineConfig, name: str, unit: Mapping[str, Any], input_stage: str | None) -> str:
    """Identity of one unit of a fan-out stage (an evaluation run of one variant): the stage's reads, the unit's own
    key (variant, run, seed) and the fingerprint of the one input it depends on, but not the stage's selects."""
    stage = get_stage(name)
    return _digest({
        "stage": stage.name,
        "reads": reads_of(config, stage),
        "unit": dict(unit),
        "input": fingerprint(config, input_stage) if input_stage else None,
    })
