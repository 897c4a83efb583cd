import pytest

from common.config import (
    CONFIG_DIR, MODEL_CONFIG_DIR, PAPER_LORA_TARGETS, ConfigError, PipelineConfig, load_config, load_model_config,
)

MODELS = ["gemma-3-270m", "gemma-3-1b-it", "gemma-3-4b-it", "gemma-3-12b-it", "qwen3-4b-instruct-2507", "tiny-gemma3"]


@pytest.mark.parametrize("name", MODELS)
def test_every_model_config_loads(name):
    assert load_model_config(name).name == name


def test_all_shipped_yaml_files_load():
    for path in MODEL_CONFIG_DIR.glob("*.yaml"):
        load_model_config(str(path))
    presets = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"paper", "demo", "smoke"} <= set(presets)
    from common.study.config import load_study

    studies = [name for name in presets if "study:" in (CONFIG_DIR / f"{name}.yaml").read_text()]
    assert {"study-smoke", "study-demo", "study-paper", "gpu-check"} <= set(studies)
    for name in presets:
        if name in studies:  # every arm's config is built, so a typo in any arm fails here
            assert len(load_study(CONFIG_DIR / f"{name}.yaml").study.arms) >= 5
        else:
            assert isinstance(load_config(CONFIG_DIR / f"{name}.yaml"), PipelineConfig)


def test_paper_preset_has_the_paper_hyper_parameters():
    config = load_config(CONFIG_DIR / "paper.yaml")
    for dpo in (config.dpo, config.dpo_further):
        assert (dpo.lora_r, dpo.lora_alpha, dpo.lora_dropout, dpo.beta) == (16, 32, 0.1, 0.1)
        assert (dpo.learning_rate, dpo.num_train_epochs, dpo.gradient_accumulation_steps) == (5e-7, 250, 16)
        assert (dpo.max_length, dpo.precision, dpo.gradient_checkpointing) == (1024, "fp32", True)
        assert dpo.lora_target_modules == PAPER_LORA_TARGETS
    assert (config.sampling.temperature, config.sampling.top_p, config.sampling.num_samples) == (0.6, 0.9, 10)
    assert config.sampling.max_new_tokens == 1024 and config.self_generation.rounds == 5
    assert config.evaluation.runs == 5 and config.stage1.keep_ties


def test_overrides_and_model_swap():
    config = load_config(CONFIG_DIR / "paper.yaml",
                         ["model=qwen3-4b-instruct-2507", "model.dtype=bfloat16", "dpo.learning_rate=1e-5",
                          "evaluation.k=[1,5]"])
    assert config.model.path == "Qwen/Qwen3-4B-Instruct-2507" and config.model.dtype == "bfloat16"
    assert config.dpo.learning_rate == 1e-5 and config.dpo_further.learning_rate == 5e-7
    assert config.evaluation.k == [1, 5]
    partial = load_config(CONFIG_DIR / "paper.yaml", ["model.dtype=float16"])
    assert partial.model.name == "gemma-3-1b-it" and partial.model.dtype == "float16"


@pytest.mark.parametrize(
    "override, message",
    [
        # a command-line typo is named as the --set it is in, not as a key of the preset file
        ("dpo.learnin_rate=1e-5", r"^--set 'dpo.learnin_rate=1e-5': unknown key 'learnin_rate' in dpo"),
        ("samplng.top_p=0.5", r"^--set 'samplng.top_p=0.5': unknown key 'samplng' in the config"),
        ("model.dtyp=float16", r"^--set 'model.dtyp=float16': unknown key 'dtyp' in model"),
        ("sandbox.timeout.x=1", r"^--set 'sandbox.timeout.x=1': 'sandbox.timeout' is not a section"),
        ("dpo.lora_r=sixteen", "dpo.lora_r: expected an integer"),
        ("model=gemma-9", "no model config 'gemma-9'"),
        ("novalue", "expected key=value"),
    ],
)
def test_typos_fail_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG_DIR / "demo.yaml", [override])


def test_typo_in_a_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inherit: %s\nstage1:\n  min_mi_marign: 1\n" % (CONFIG_DIR / "smoke.yaml"))
    with pytest.raises(ConfigError, match=r"bad.yaml.stage1: unknown key\(s\) \['min_mi_marign'\]"):
        load_config(bad)


def test_a_set_override_is_recorded_for_hints():
    config = load_config(CONFIG_DIR / "smoke.yaml", ["dpo.lora_r=8"])
    assert config._origin == (str(CONFIG_DIR / "smoke.yaml"), ["dpo.lora_r=8"])
    assert "_origin" not in __import__("common.config", fromlist=["to_dict"]).to_dict(config)  # not a field
