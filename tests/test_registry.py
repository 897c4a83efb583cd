"""The stage graph, tested from its own declarations (common/pipeline/stages.py).

For every leaf field of the config and every stage of the recipe: changing the field changes the stage's fingerprint
exactly when the stage reads it or reads an artifact of a stage that does. Then the same rule on a real run
directory (a real smoke pipeline, real manifests): after a change, the stages that read the field and everything
downstream are stale, and every other stage is up to date. A stage that reads a field it did not declare fails with
an error naming the stage and the field.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from common.config import ConfigError, PipelineConfig
from common.pipeline import registry
from common.pipeline.artifacts import ArtifactError, RunDir, read_manifest
from common.pipeline.registry import all_stages, fingerprint, recipe, stage_inputs, variants
from common.pipeline.runner import run_pipeline, run_stage, staleness
from common.pipeline.view import ConfigView, UndeclaredConfigRead
from tests.helpers import REPO, smoke_config


def leaf_paths(config: PipelineConfig) -> list[str]:
    """Every field of every section (``sampling.top_p``), plus top-level plain fields (``run_name``)."""
    paths = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            paths += [f"{f.name}.{g.name}" for g in dataclasses.fields(value)]
        else:
            paths.append(f.name)
    return paths


def mutated(config: PipelineConfig, path: str) -> PipelineConfig:
    """A copy of ``config`` with the field at ``path`` set to another value of the same kind."""
    config = copy.deepcopy(config)
    section, _, name = path.partition(".")
    owner, key = (getattr(config, section), name) if name else (config, section)
    value = getattr(owner, key)
    if isinstance(value, bool):
        new = not value
    elif isinstance(value, (int, float)):
        new = value * 2 + 1 if value * 2 + 1 != value else value + 2  # -1 * 2 + 1 == -1
    elif isinstance(value, str):
        new = value + "-changed"
    elif isinstance(value, list):
        new = [*value, value[-1] if value else "changed"]
    else:  # None
        new = "changed"
    setattr(owner, key, new)
    return config


def reads(stage, path: str) -> bool:
    """The declaration covers ``path``: the field itself or its whole section."""
    return any(path == p or path.startswith(p + ".") for p in stage.reads + stage.selects)


def expected_changed(config: PipelineConfig, path: str) -> set[str]:
    changed: set[str] = set()
    for stage in recipe(config):
        if reads(stage, path) or set(stage_inputs(config, stage).values()) & changed:
            changed.add(stage.name)
    return changed


CONFIG = smoke_config()
FIELDS = [p for p in leaf_paths(CONFIG) if p != "recipe"]  # the recipe picks stages; tested on its own below


@pytest.mark.parametrize("path", FIELDS)
def test_a_field_changes_exactly_the_stages_that_read_it_and_their_downstream(path):
    before = {stage.name: fingerprint(CONFIG, stage.name) for stage in recipe(CONFIG)}
    changed = mutated(CONFIG, path)
    after = {stage.name: fingerprint(changed, stage.name) for stage in recipe(CONFIG)}
    assert {name for name in before if before[name] != after[name]} == expected_changed(CONFIG, path)


def test_every_field_is_read_by_some_stage_or_is_run_metadata():
    unread = [p for p in FIELDS if not expected_changed(CONFIG, p)]
    # The paper's recipe leaves the other methods' sections unread; each is read by its own declared stage.
    others = [p for p in unread if p != "run_name"]
    assert all(any(reads(stage, p) for stage in all_stages().values() if stage.name not in CONFIG.recipe)
               for p in others), others
    assert {p.split(".")[0] for p in others} == {"sft", "sft_dpo", "kto", "kto_sft", "grpo", "data_opt"}
    assert "run_name" in unread  # names the default run folder, part of no artifact


ALL_STAGES = smoke_config("recipe=[prepare,candidates,pairs,singles,targets,optimize-data,optimize-candidates,"
                          "pairs-optimized,dpo,dpo-data,self-generation,"
                          "dpo-further,sft,sft-dpo,kto,kto-sft,sft-data,grpo,evaluate,report]")


@pytest.mark.parametrize("path", [p for p in FIELDS if p.split(".")[0] in ("stage1", "sft", "sft_dpo", "kto",
                                                                           "kto_sft", "grpo", "sandbox", "data_opt")])
def test_in_a_recipe_of_every_stage_a_field_changes_exactly_its_readers(path):
    before = {stage.name: fingerprint(ALL_STAGES, stage.name) for stage in recipe(ALL_STAGES)}
    changed = mutated(ALL_STAGES, path)
    after = {stage.name: fingerprint(changed, stage.name) for stage in recipe(ALL_STAGES)}
    assert {name for name in before if before[name] != after[name]} == expected_changed(ALL_STAGES, path)


def test_the_regression_that_motivated_the_registry():
    """Stage 1b writes sampling.system_prompt into every pair: a new system prompt must rebuild the pairs (and all
    training on them), while a new sampling temperature must keep them."""
    prompt = mutated(CONFIG, "sampling.system_prompt")
    assert fingerprint(prompt, "pairs") != fingerprint(CONFIG, "pairs")
    assert fingerprint(prompt, "candidates") == fingerprint(CONFIG, "candidates")
    hotter = mutated(CONFIG, "sampling.temperature")
    assert fingerprint(hotter, "pairs") == fingerprint(CONFIG, "pairs")
    assert fingerprint(hotter, "dpo") == fingerprint(CONFIG, "dpo")
    assert fingerprint(hotter, "self-generation") != fingerprint(CONFIG, "self-generation")


# --------------------------------------------------------------------------------------------------------------
# The same rule on a real run directory


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("registry") / "run")
    run_pipeline(CONFIG, run.root)
    return run


# One field per declared read, so every declaration is exercised on real manifests.
SAMPLED = sorted({next(p for p in FIELDS if reads(stage, p)) for stage in recipe(CONFIG)}
                 | {"sampling.system_prompt", "stage1.keep_ties", "data.max_eval_tasks", "evaluation.runs",
                    "dpo_further.learning_rate", "self_generation.rounds", "sandbox.timeout", "model.tiny_seed"})


@pytest.mark.parametrize("path", SAMPLED)
def test_on_disk_a_change_makes_exactly_the_readers_and_their_downstream_stale(finished_run, path):
    assert all(staleness(finished_run, CONFIG, stage.name) is None for stage in recipe(CONFIG))
    changed = mutated(CONFIG, path)
    stale = {stage.name for stage in recipe(CONFIG) if staleness(finished_run, changed, stage.name) is not None}
    assert stale == expected_changed(CONFIG, path)


def test_a_rebuilt_input_makes_its_dependants_stale(finished_run, capsys):
    before = read_manifest(finished_run.stage_dir("pairs"))["uid"]
    run_stage("pairs", CONFIG, finished_run.root, force=True)
    assert read_manifest(finished_run.stage_dir("pairs"))["uid"] != before
    assert "was rebuilt after it" in staleness(finished_run, CONFIG, "dpo")
    assert "itself out of date" in staleness(finished_run, CONFIG, "report")
    assert staleness(finished_run, CONFIG, "candidates") is None
    with pytest.raises(ArtifactError, match="self-generation needs the 'dpo' artifact.*rebuilt.*python -m common dpo"):
        run_stage("self-generation", CONFIG, finished_run.root)


# --------------------------------------------------------------------------------------------------------------
# Views: reading an undeclared field is an error


def test_reading_an_undeclared_field_fails_with_the_stage_and_field_named(tmp_path, monkeypatch):
    import common.tasks.stage as prepare_module

    def sneaky(ctx):
        return {"t": ctx.config.sampling.temperature}

    monkeypatch.setattr(prepare_module, "prepare_tasks", sneaky)
    with pytest.raises(UndeclaredConfigRead, match=r"stage 'prepare' read config section 'sampling'.*stages.py"):
        run_stage("prepare", CONFIG, tmp_path / "run")
    assert read_manifest(RunDir(tmp_path / "run").stage_dir("prepare")) is None  # no "finished" marker


def test_views_allow_declared_fields_only_and_hand_out_copies():
    view = ConfigView(CONFIG, "pairs", all_stages()["pairs"].reads)
    assert view.sampling.system_prompt == CONFIG.sampling.system_prompt
    with pytest.raises(UndeclaredConfigRead, match=r"'sampling.temperature'.*sampling.system_prompt"):
        view.sampling.temperature
    model = view.model
    model.name = "mutated"
    assert CONFIG.model.name != "mutated"


# --------------------------------------------------------------------------------------------------------------
# What is derived from the declarations


def test_every_stage_has_its_notebook_cli_command_and_artifact_folder(tmp_path):
    from common.cli import make_parser

    commands = make_parser()._subparsers._group_actions[0].choices
    for stage in all_stages().values():
        notebook = REPO / stage.notebook
        assert notebook.is_file(), notebook
        assert notebook.parent.name == stage.group and notebook.name.endswith(f"_{stage.name}.ipynb")
        source = "".join("".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"])
        assert f'run_stage("{stage.name}", config, run_dir, force=force)' in source
        assert stage.name in commands
        assert RunDir(tmp_path).stage_dir(stage.name) == tmp_path / stage.group / stage.name


def test_a_recipe_is_a_list_and_variants_follow_it():
    assert variants(CONFIG) == ["baseline", "dpo", "dpo-further"]
    dpo_only = smoke_config("recipe=[prepare,candidates,pairs,dpo,evaluate,report]")
    assert variants(dpo_only) == ["baseline", "dpo"]
    assert fingerprint(dpo_only, "dpo") == fingerprint(CONFIG, "dpo")  # same stages 1-1c, same artifacts
    assert fingerprint(dpo_only, "evaluate") != fingerprint(CONFIG, "evaluate")
    with pytest.raises(ConfigError, match="'dpo-further' reads the 'self-generation' artifact"):
        recipe(smoke_config("recipe=[prepare,candidates,pairs,dpo,dpo-further]"))
    with pytest.raises(ConfigError, match="unknown stage 'sft2'"):
        recipe(smoke_config("recipe=[prepare,sft2]"))
    with pytest.raises(ConfigError, match="not in this config's recipe"):
        run_stage("dpo-further", dpo_only, "unused")
    with pytest.raises(ConfigError, match="'prepare' is not an adapter stage"):
        variants(smoke_config("evaluation.variants=[baseline,prepare]"))


def test_old_run_directory_layout_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "run" / "stage1" / "pairs").mkdir(parents=True)
    with pytest.raises(ArtifactError, match=r"earlier mi-align layout \(stage1/\).*rm -rf"):
        run_stage("prepare", CONFIG, tmp_path / "run")


def test_declarations_are_checked_when_made():
    with pytest.raises(ValueError, match="sampling has no field 'temprature'"):
        registry.Stage(name="x", group="3_evaluation", function="m:f", help="", notebook="", produces="report",
                       reads=("sampling.temprature",))
    with pytest.raises(ValueError, match="already used"):
        registry.declare(all_stages()["pairs"])
