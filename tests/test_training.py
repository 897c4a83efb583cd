"""LoRA DPO (stages 1c / 2c) on tiny random models: real optimiser steps, checked by their effect on the weights
and by comparing the DPO reference log-probs with direct forward passes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from datasets import Dataset

from common.config import CONFIG_DIR, ConfigError, DPOTrainingConfig, load_config, load_model_config
from common.models.loading import load_model
from common.pipeline.artifacts import ArtifactError, RunDir, read_manifest
from common.pipeline.runner import run_stage, write_stage_manifest
from common.preference.trl_format import split_eval, to_trl_format
from common.prompting.templates import build_prompt, completion_target
from common.training.methods.dpo import (_run_signature, build_dpo_trainer, dpo_config, train_dpo,
                                         training_model_config)
from common.training.runner import CHECKPOINTS, last_checkpoint as _last_checkpoint
from common.training.trl_patches import score_only_completions_on_cpu
from common.training.logs import CURVES_PNG, LOG_CSV, plot_training_curves, read_training_log

# Short prompts and completions keep every training step well under a second on 2 cores.
_TASKS = [
    {"task_id": 601 + i, "text": f"Write a function to add {i} to a number.", "code": f"def add_{i}(x):\n    return x + {i}"}
    for i in range(4)
]


def _worse(code: str) -> str:
    name = code.split("(")[0].removeprefix("def ")
    return f"def {name}(x):\n    y = x\n    y = y + {name[-1]}\n    return y"


def make_pairs(style: str, tasks=_TASKS, system_prompt: str = "") -> Dataset:
    return Dataset.from_list([
        {"prompt": build_prompt(t, style, system_prompt), "chosen": completion_target(t["code"], style),
         "rejected": completion_target(_worse(t["code"]), style), "task_id": t["task_id"],
         "chosen_mi": 100.0, "rejected_mi": 90.0, "generator": "test"}
        for t in tasks
    ])


def tcfg(**overrides) -> DPOTrainingConfig:
    base = dict(lora_r=4, lora_alpha=8, learning_rate=5e-3, num_train_epochs=1, max_steps=2,
                per_device_train_batch_size=1, gradient_accumulation_steps=1, max_length=128,
                gradient_checkpointing=False, seed=0)
    return DPOTrainingConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def chat_cfg():
    return load_model_config("tiny-gemma3")


@pytest.fixture(scope="module")
def stage1(chat_cfg, tmp_path_factory):
    """Stage 1c on chat-style pairs (tiny Gemma-3 with a chat template): 2 steps of 2 padded pairs."""
    out = tmp_path_factory.mktemp("stage1") / "dpo"
    return train_dpo(make_pairs("chat"), chat_cfg, tcfg(per_device_train_batch_size=2), out)


@pytest.fixture(scope="module")
def base_model(chat_cfg):
    """A fresh copy of the tiny base model (read-only: tests only run forward passes on it)."""
    return load_model(chat_cfg, device="cpu")[0]


@pytest.fixture(scope="module")
def stage1_model(chat_cfg, stage1):
    """The saved stage-1 adapter reloaded on its own fresh base model."""
    return load_model(chat_cfg, adapter=stage1.adapter_dir, device="cpu")[0]


def _lora_state(model, adapter="default"):
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name and f".{adapter}." in name}


def _saved_lora(adapter_dir):
    from peft import load_peft_weights

    return load_peft_weights(str(adapter_dir), device="cpu")


def _as_saved_name(name: str) -> str:
    return name.replace(".default.", ".")


def direct_logps(model, batch):
    """Sum of log p(completion token) per sequence from a plain forward pass: [chosen..., rejected...] halves."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    total = (logps * batch["completion_mask"][:, 1:]).sum(dim=1)
    return total.chunk(2)


def trainer_ref_logps(trainer, batch):
    """The reference log-probs through TRL's own code path (the one used by the loss and by precompute)."""
    return trainer.compute_ref_log_probs(trainer.ref_model or trainer.model, batch)


def first_batch(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "completion_mask")}


def assert_close(pair_a, pair_b, atol=2e-3):
    for a, b in zip(pair_a, pair_b):
        torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------------


def test_trl_format_conversion():
    chat = to_trl_format(make_pairs("chat"))
    assert chat.column_names == ["prompt", "chosen", "rejected"]
    assert [m["role"] for m in chat[0]["prompt"]] == ["user"]
    assert to_trl_format(make_pairs("chat", system_prompt="Be brief."))[0]["prompt"][0]["role"] == "system"
    assert chat[0]["chosen"] == [{"role": "assistant", "content": completion_target(_TASKS[0]["code"], "chat")}]
    plain = to_trl_format(make_pairs("completion"))
    assert isinstance(plain[0]["prompt"], str) and plain[0]["prompt"].endswith("```python\n")
    assert plain[0]["chosen"].endswith("\n```")


def test_empty_pairs_are_refused(chat_cfg, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        train_dpo(make_pairs("chat").select([]), chat_cfg, tcfg(), tmp_path / "x")


def test_split_eval_holds_out_whole_tasks():
    pairs = make_pairs("chat", _TASKS + _TASKS[:2])  # two tasks with two pairs each
    train, held = split_eval(pairs, 0.5, seed=0)
    assert len(train) + len(held) == len(pairs)
    assert not set(train["task_id"]) & set(held["task_id"])
    assert split_eval(pairs, 0.0, 0)[1] is None


def test_stage1_trains_only_lora(stage1, base_model):
    base = dict(base_model.named_parameters())
    trained = stage1.model
    lora_b = 0
    for name, param in trained.named_parameters():
        if "lora_" in name:
            assert param.requires_grad
            if "lora_B" in name:  # zero-initialised by PEFT: moved by training
                assert param.detach().abs().max() > 0, name
                lora_b += 1
            continue
        assert not param.requires_grad, name
        key = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert torch.equal(param.detach(), base[key].detach()), f"base weight changed: {name}"
    assert lora_b == 2 * 7  # 2 layers x the paper's 7 target projections
    rows = read_training_log(stage1.adapter_dir / LOG_CSV)
    assert [row["step"] for row in rows] == [1, 2]
    assert rows[0]["rewards/margins"] == 0.0  # policy == reference before the first update
    assert rows[-1]["rewards/margins"] > 0 and all("step_time" in row for row in rows)
    assert (stage1.adapter_dir / CURVES_PNG).stat().st_size > 10_000
    assert stage1.seconds_per_step > 0 and stage1.tokens_per_second > 0


def test_saved_adapter_reloads_with_same_logits(stage1, base_model, stage1_model):
    folder = stage1.adapter_dir
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "ref").exists()
    assert not (folder / CHECKPOINTS).exists()
    saved = _saved_lora(folder)
    assert saved and all(".ref." not in key for key in saved)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == sorted(tcfg().lora_target_modules)
    ids = torch.tensor([[2, 100, 2000, 3000, 7, 9, 11]])
    stage1.model.eval()
    with torch.no_grad():
        expected = stage1.model(input_ids=ids).logits
        got = stage1_model(input_ids=ids).logits
        base_logits = base_model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(base_logits, expected, atol=1e-4)  # the adapter does change the model


def test_chat_prompt_is_rendered_with_generation_prompt(stage1, chat_cfg, tmp_path):
    pairs = make_pairs("chat", system_prompt="You are a code generation model.")
    trainer = build_dpo_trainer(pairs, chat_cfg, tcfg(), tmp_path / "t")
    text = trainer.processing_class.decode(trainer.train_dataset[0]["prompt_ids"])
    assert text.endswith("<start_of_turn>model\n") and "You are a code generation model" in text
    completion = trainer.processing_class.decode(trainer.train_dataset[0]["chosen_ids"])
    assert completion.startswith("```python\ndef add_") and "<end_of_turn>" in completion


@pytest.mark.parametrize("reference", ["base", "stage1"])
def test_stage2_continues_adapter_with_chosen_reference(stage1, chat_cfg, base_model, stage1_model, tmp_path,
                                                        reference):
    trainer = build_dpo_trainer(make_pairs("chat"), chat_cfg, tcfg(learning_rate=1e-2), tmp_path / "s2",
                                init_adapter=stage1.adapter_dir, reference=reference)
    model = trainer.model
    assert set(model.peft_config) == ({"default", "ref"} if reference == "stage1" else {"default"})
    start = _lora_state(model)
    saved = _saved_lora(stage1.adapter_dir)
    for name, value in start.items():  # the trainable adapter starts from the stage-1 weights
        assert torch.equal(value, saved[_as_saved_name(name)]), name
    assert all(p.requires_grad for n, p in model.named_parameters() if ".default." in n)

    batch = first_batch(trainer)
    base_logps = direct_logps(base_model, batch)
    stage1_logps = direct_logps(stage1_model, batch)
    assert (base_logps[0] - stage1_logps[0]).abs().max() > 0.05  # the two references are distinguishable
    target = base_logps if reference == "base" else stage1_logps
    model.eval()
    assert_close(trainer_ref_logps(trainer, batch), target)

    trainer.train()
    after = _lora_state(model)
    assert any(not torch.equal(after[name], start[name]) for name in start)
    model.eval()
    assert_close(trainer_ref_logps(trainer, batch), target)  # the reference stays frozen while the policy moves
    if reference == "stage1":
        assert all(not p.requires_grad for n, p in model.named_parameters() if ".ref." in n)


def test_stage2_precomputed_base_reference(stage1, chat_cfg, base_model, tmp_path):
    """precompute_ref_log_probs with the 'base' reference: the cached log-probs are the base model's."""
    trainer = build_dpo_trainer(make_pairs("chat"), chat_cfg, tcfg(precompute_ref_log_probs=True), tmp_path / "p",
                                init_adapter=stage1.adapter_dir, reference="base")
    rows = [trainer.train_dataset[i] for i in range(2)]
    batch = trainer.data_collator(rows)
    base_logps = direct_logps(base_model, batch)
    assert_close((batch["ref_chosen_logps"], batch["ref_rejected_logps"]), base_logps)


def test_completion_style_pairs_train(tmp_path):
    cfg = load_model_config("tiny-llama")
    result = train_dpo(make_pairs("completion"), cfg, tcfg(), tmp_path / "c")
    assert result.metrics["global_step"] == 2
    lora_b = [p for n, p in result.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().max() > 0 for p in lora_b)
    rows = read_training_log(tmp_path / "c" / LOG_CSV)
    assert rows[-1]["rewards/margins"] > 0


def test_crashed_training_resumes_from_checkpoint(chat_cfg, tmp_path):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise RuntimeError("simulated crash after the first checkpoint")

    cfg = tcfg(save_steps=1, max_steps=2)
    out = tmp_path / "r"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_dpo(make_pairs("chat"), chat_cfg, cfg, out, callbacks=[Crash()])
    assert (out / CHECKPOINTS / "checkpoint-1").is_dir()
    result = train_dpo(make_pairs("chat"), chat_cfg, cfg, out)
    assert result.metrics["resumed_from"].endswith("checkpoint-1")
    assert result.metrics["global_step"] == 2
    assert [row["step"] for row in read_training_log(out / LOG_CSV)] == [1, 2]
    assert not (out / CHECKPOINTS).exists()  # removed once the adapter is saved


def test_checkpoints_of_other_inputs_are_not_resumed(tmp_path):
    folder = tmp_path / CHECKPOINTS
    (folder / "checkpoint-3").mkdir(parents=True)
    (folder / "run_signature.json").write_text(json.dumps({"signature": "abc"}))
    assert _last_checkpoint(folder, "abc").endswith("checkpoint-3")
    assert _last_checkpoint(folder, "other") is None and not folder.exists()
    args = (make_pairs("chat"), load_model_config("tiny-gemma3"), tcfg(), None, "base", None)
    assert _run_signature(*args) == _run_signature(*args)
    assert _run_signature(*args) != _run_signature(args[0], args[1], tcfg(learning_rate=1.0), None, "base", None)
    assert _run_signature(*args) != _run_signature(args[0].select([0, 1]), *args[1:])


def test_early_stopping_on_held_out_pairs(chat_cfg, tmp_path):
    cfg = tcfg(eval_fraction=0.5, early_stopping_patience=1, save_steps=1, max_steps=2)
    args = dpo_config(cfg, tmp_path / "a", has_eval=True)
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert args.eval_strategy == args.save_strategy == "steps"
    result = train_dpo(make_pairs("chat"), chat_cfg, cfg, tmp_path / "e")
    assert result.metrics["n_train_rows"] == 2 and result.metrics["n_eval_rows"] == 2
    assert "eval_loss" in result.metrics and result.metrics["best_checkpoint"]
    with pytest.raises(ValueError, match="eval_fraction"):
        dpo_config(tcfg(early_stopping_patience=1), tmp_path / "b", has_eval=False)


def test_precision_mapping(tmp_path):
    args = dpo_config(tcfg(), tmp_path, has_eval=False)
    assert not args.bf16 and not args.fp16 and args.use_cpu == (not torch.cuda.is_available())
    assert args.report_to == [] or args.report_to == "none" or args.report_to == ["none"]
    assert dpo_config(tcfg(precision="bf16"), tmp_path, has_eval=False).bf16
    with pytest.raises(ValueError, match="precision"):
        dpo_config(tcfg(precision="fp8"), tmp_path, has_eval=False)


def test_model_is_loaded_in_the_training_precision():
    auto = dataclasses.replace(load_model_config("gemma-3-1b-it"), dtype="auto")
    assert training_model_config(auto, tcfg()).dtype == "float32"  # the paper's fp32: fp32 weights, also on GPUs
    assert training_model_config(auto, tcfg(precision="bf16")).dtype == "bfloat16"
    assert training_model_config(auto, tcfg(precision="fp16")).dtype == "float32"  # fp32 master weights
    explicit = dataclasses.replace(auto, dtype="bfloat16")
    assert training_model_config(explicit, tcfg()).dtype == "bfloat16"
    assert training_model_config(auto, tcfg(load_in_4bit=True)).quantization == "4bit"
    with pytest.raises(ValueError, match="precision"):
        training_model_config(auto, tcfg(precision="fp8"))


def test_cpu_lm_head_scores_only_completions():
    """On CPU TRL's fused LM head is switched to completion positions only; the reference-log-prob tests above
    compare its output with plain forward passes."""
    import trl.trainer.utils as trl_utils

    score_only_completions_on_cpu()
    patched = trl_utils._use_triton
    score_only_completions_on_cpu()
    assert trl_utils._use_triton is patched  # applied once
    assert patched(torch.device("cpu"))


def test_plot_training_curves_several_runs(stage1, tmp_path):
    png = plot_training_curves({"dpo": stage1.adapter_dir / LOG_CSV, "again": stage1.adapter_dir / LOG_CSV},
                               tmp_path / "curves.png")
    assert png.stat().st_size > 10_000


# ----------------------------------------------------------------------------------------------------------------
# The adapter stages (dpo, dpo-further) on a run directory


def _smoke_config(*overrides):
    short = [f"{section}.{key}" for section in ("dpo", "dpo_further")
             for key in ("max_steps=1", "max_length=128", "per_device_train_batch_size=1")]
    return load_config(CONFIG_DIR / "smoke.yaml", [*short, *overrides])


def _fake_pairs(run, config, name, pairs):
    """A finished pairs artifact of stage ``name`` holding ``pairs`` (stands in for stage 1b / self-generation)."""
    pairs.save_to_disk(str(run.stage_dir(name)))
    write_stage_manifest(run, config, name)


def test_adapter_stages_end_to_end(tmp_path, capsys):
    config = _smoke_config()
    run = RunDir(tmp_path / "run")
    _fake_pairs(run, config, "pairs", make_pairs("chat"))

    # further DPO before stage 1c: its inputs are missing
    with pytest.raises(ArtifactError, match="self-generation"):
        run_stage("dpo-further", config, run.root)

    out = run_stage("dpo", config, run.root)
    assert out == run.stage_dir("dpo") == run.root / "2_fine_tuning_process" / "dpo"
    for name in ("adapter_model.safetensors", "adapter_config.json", "manifest.json", LOG_CSV, CURVES_PNG):
        assert (out / name).is_file(), name
    manifest = read_manifest(out)
    assert manifest["stage"] == "dpo" and manifest["metrics"]["global_step"] == 1
    assert "trl" in manifest["versions"] and manifest["n_pairs"] == 4
    assert manifest["reads"]["dpo"]["max_steps"] == 1 and set(manifest["reads"]) == {"model", "dpo"}

    stamp = (out / "manifest.json").stat().st_mtime_ns
    capsys.readouterr()
    run_stage("dpo", config, run.root)
    assert "up to date" in capsys.readouterr().out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp

    _fake_pairs(run, config, "self-generation", make_pairs("chat").select([1, 2]))
    further = run_stage("dpo-further", config, run.root)
    assert read_manifest(further)["reference"] == config.dpo_further.stage2_reference
    assert read_manifest(further)["init_adapter"] == str(run.stage_dir("dpo"))
    assert read_manifest(further)["inputs"]["init_adapter"]["uid"] == read_manifest(out)["uid"]


def test_adapter_stage_refuses_bad_inputs(tmp_path):
    config = _smoke_config()
    with pytest.raises(ArtifactError, match="missing"):
        run_stage("dpo", config, tmp_path / "nothing")

    run = RunDir(tmp_path / "other")
    _fake_pairs(run, _smoke_config("stage1.max_variants=3"), "pairs", make_pairs("chat"))
    with pytest.raises(ArtifactError, match="different config"):
        run_stage("dpo", config, run.root)

    empty = RunDir(tmp_path / "empty")
    _fake_pairs(empty, config, "pairs", make_pairs("chat").select([]))
    with pytest.raises(ValueError, match=rf"{empty.stage_dir('pairs')}.*empty"):
        run_stage("dpo", config, empty.root)
    with pytest.raises(ConfigError, match="unknown stage 'ppo'"):
        run_stage("ppo", config, empty.root)


def test_dpo_loss_variants_reach_trl(tmp_path):
    """``dpo.loss_type`` picks TRL's loss: IPO trains too, and its loss differs from the sigmoid DPO loss on the
    same pairs and seed."""
    import dataclasses

    cfg = load_model_config("tiny-llama")
    losses = {}
    for loss_type in ("sigmoid", "ipo"):
        result = train_dpo(make_pairs("completion"), cfg, dataclasses.replace(tcfg(), loss_type=loss_type),
                           tmp_path / loss_type)
        assert result.metrics["global_step"] == 2
        losses[loss_type] = read_training_log(tmp_path / loss_type / LOG_CSV)[0]["loss"]
    assert losses["sigmoid"] != pytest.approx(losses["ipo"])
