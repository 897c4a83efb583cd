"""LoRA SFT, KTO, KTO->SFT and SFT->DPO on tiny random models: real optimiser steps, checked by their effect on the
weights, by the labels SFT supervises and by comparing each method's reference log-probs (through TRL's own code)
with direct forward passes of the model it promises (``tests/test_training.py`` does the same for DPO)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from datasets import Dataset

from common.config import KTOTrainingConfig, TrainingConfig, load_model_config
from common.models.loading import load_model
from common.prompting.templates import build_prompt, completion_target
from common.training.logs import LOG_CSV, read_training_log
from common.training.methods.dpo import build_dpo_trainer, dpo_config, train_dpo
from common.training.methods.kto import build_kto_trainer, kto_config, train_kto
from common.training.methods.sft import build_sft_trainer, sft_config, train_sft
from common.training.runner import CHECKPOINTS

# Short prompts and completions keep every training step well under a second on 2 cores.
_TASKS = [
    {"task_id": 601 + i, "text": f"Write a function to add {i} to a number.",
     "code": f"def add_{i}(x):\n    return x + {i}"}
    for i in range(4)
]


def _worse(code: str) -> str:
    name = code.split("(")[0].removeprefix("def ")
    return f"def {name}(x):\n    y = x\n    y = y + {name[-1]}\n    return y"


def make_targets(style: str, tasks=_TASKS) -> Dataset:
    return Dataset.from_list([{"prompt": build_prompt(t, style, ""), "completion": completion_target(t["code"], style),
                               "task_id": t["task_id"], "mi": 100.0} for t in tasks])


def make_singles(style: str, tasks=_TASKS) -> Dataset:
    """A desirable and an undesirable completion per task, grouped by task (as the singles stage writes them)."""
    return Dataset.from_list([
        {"prompt": build_prompt(t, style, ""), "completion": completion_target(code, style), "label": label,
         "task_id": t["task_id"]}
        for t in tasks for code, label in ((t["code"], True), (_worse(t["code"]), False))
    ])


def make_pairs(style: str, tasks=_TASKS) -> Dataset:
    return Dataset.from_list([
        {"prompt": build_prompt(t, style, ""), "chosen": completion_target(t["code"], style),
         "rejected": completion_target(_worse(t["code"]), style), "task_id": t["task_id"]}
        for t in tasks
    ])


_BASE = dict(lora_r=4, lora_alpha=8, learning_rate=1e-2, num_train_epochs=1, max_steps=2,
             per_device_train_batch_size=2, gradient_accumulation_steps=1, max_length=128,
             gradient_checkpointing=False, seed=0)


def tcfg(**overrides) -> TrainingConfig:
    return TrainingConfig(**{**_BASE, **overrides})


def kcfg(**overrides) -> KTOTrainingConfig:
    return KTOTrainingConfig(**{**_BASE, **overrides})


@pytest.fixture(scope="module")
def chat_cfg():
    return load_model_config("tiny-gemma3")


@pytest.fixture(scope="module")
def base_model(tiny_model):
    """The tiny base model (shared, read-only: tests only run forward passes on it)."""
    return tiny_model("tiny-gemma3")[0]


@pytest.fixture(scope="module")
def sft_run(chat_cfg, tmp_path_factory):
    return train_sft(make_targets("chat"), chat_cfg, tcfg(), tmp_path_factory.mktemp("sft") / "sft")


@pytest.fixture(scope="module")
def kto_run(chat_cfg, tmp_path_factory):
    return train_kto(make_singles("chat"), chat_cfg, kcfg(), tmp_path_factory.mktemp("kto") / "kto")


@pytest.fixture(scope="module")
def sft_model(chat_cfg, sft_run):
    """The saved SFT adapter reloaded on its own fresh base model."""
    return load_model(chat_cfg, adapter=sft_run.adapter_dir, device="cpu")[0]


def _lora_state(model, adapter="default"):
    return {name: p.detach().clone() for name, p in model.named_parameters()
            if "lora_" in name and f".{adapter}." in name}


def _saved_lora(adapter_dir):
    from peft import load_peft_weights

    return load_peft_weights(str(adapter_dir), device="cpu")


def _as_saved(name: str) -> str:
    return name.replace(".default.", ".")


def assert_only_lora_trained(model, base_model, start=None):
    """Every LoRA weight is trainable and moved (from ``start``, else from PEFT's zero-initialised B); every other
    weight is frozen and equal to the base model's."""
    base = dict(base_model.named_parameters())
    moved = 0
    for name, param in model.named_parameters():
        if "lora_" in name:
            if ".default." in name:
                assert param.requires_grad, name
                value = param.detach().float()
                if start is not None:
                    moved += not torch.equal(value, start[name].to(param.dtype).float())
                elif "lora_B" in name:
                    moved += bool(value.abs().max() > 0)
            continue
        assert not param.requires_grad, name
        key = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert torch.equal(param.detach(), base[key].detach()), f"base weight changed: {name}"
    assert moved > 0


def assert_saved_default_only(adapter_dir):
    assert (adapter_dir / "adapter_model.safetensors").is_file() and not (adapter_dir / "ref").exists()
    assert all(".ref." not in key for key in _saved_lora(adapter_dir))
    assert not (adapter_dir / CHECKPOINTS).exists()


def completion_logps(model, input_ids, attention_mask, completion_mask):
    """Sum of log p(completion token) per sequence from a plain forward pass."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (logps * completion_mask[:, 1:]).sum(dim=1)


def first_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


# ----------------------------------------------------------------------------------------------------------------
# SFT


def test_sft_trains_only_lora(sft_run, base_model):
    assert_only_lora_trained(sft_run.model, base_model)
    assert_saved_default_only(sft_run.adapter_dir)
    rows = read_training_log(sft_run.adapter_dir / LOG_CSV)
    assert [row["step"] for row in rows] == [1, 2] and rows[-1]["loss"] < rows[0]["loss"]
    assert sft_run.metrics["reference"] is None and sft_run.metrics["last_mean_token_accuracy"] is not None
    assert not (sft_run.adapter_dir / "tensorboard").exists()  # report_to defaults to none


@pytest.mark.parametrize("style", ["chat", "completion"])
def test_sft_supervises_only_the_completion(style, tiny_model, tmp_path):
    cfg = load_model_config("tiny-gemma3" if style == "chat" else "tiny-llama")
    targets = make_targets(style, _TASKS[:2])
    trainer = build_sft_trainer(targets, cfg, tcfg(max_steps=1), tmp_path / "s")
    assert trainer.completion_only_loss
    tokenizer = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    expected_end = "<end_of_turn>\n" if style == "chat" else tokenizer.eos_token
    for row, ids, labels in zip(targets, batch["input_ids"], batch["labels"]):
        supervised = labels != -100
        prompt_len = int(supervised.long().argmax())
        # one contiguous supervised span, covering exactly the solution (and the end-of-turn / EOS that ends it)
        assert supervised[prompt_len:].sum() == supervised.sum()
        assert torch.equal(labels[supervised], ids[supervised])
        assert tokenizer.decode(ids[supervised]) == row["completion"] + expected_end
        prompt_text = tokenizer.decode(ids[:prompt_len])
        assert row["completion"] not in prompt_text
        if style == "chat":
            assert prompt_text.endswith("<start_of_turn>model\n")

    # changing a prompt token changes nothing that is supervised
    edited = make_targets(style, [{**t, "text": t["text"].replace("Write", "Create")} for t in _TASKS[:2]])
    other = build_sft_trainer(edited, cfg, tcfg(max_steps=1), tmp_path / "e")
    other_batch = other.data_collator([other.train_dataset[i] for i in range(2)])
    assert not torch.equal(batch["input_ids"], other_batch["input_ids"])
    for labels, other_labels in zip(batch["labels"], other_batch["labels"]):
        assert torch.equal(labels[labels != -100], other_labels[other_labels != -100])

    # and TRL's loss is the mean NLL of those tokens alone
    model = trainer.model
    model.eval()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(inputs))
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.float()
    targets_next = inputs["labels"][:, 1:]
    mask = targets_next != -100
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, targets_next.clamp(min=0)[..., None]).squeeze(-1)
    torch.testing.assert_close(loss, -(logps * mask).sum() / mask.sum(), atol=1e-4, rtol=1e-4)

    model.train()
    start = _lora_state(model)
    trainer.train()
    assert_only_lora_trained(model, tiny_model(cfg.name)[0], start)


# ----------------------------------------------------------------------------------------------------------------
# KTO


@pytest.mark.parametrize("style", ["chat", "completion"])
def test_kto_reference_is_the_base_model(style, tiny_model, tmp_path):
    name = "tiny-gemma3" if style == "chat" else "tiny-llama"
    base = tiny_model(name)[0]
    trainer = build_kto_trainer(make_singles(style), load_model_config(name), kcfg(), tmp_path / "k")
    model = trainer.model
    assert trainer.ref_model is None and set(model.peft_config) == {"default"}
    assert sorted(set(trainer.train_dataset["label"])) == [False, True]
    batch = first_batch(trainer)

    def reference():
        model.eval()
        ref, ref_kl = trainer.compute_ref_log_probs(model, batch)
        model.train()
        return ref, ref_kl

    direct = completion_logps(base, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    direct_kl = completion_logps(base, batch["KL_input_ids"], batch["KL_attention_mask"], batch["KL_completion_mask"])
    ref, ref_kl = reference()
    torch.testing.assert_close(ref, direct, atol=2e-3, rtol=1e-4)
    torch.testing.assert_close(ref_kl, direct_kl, atol=2e-3, rtol=1e-4)

    start = _lora_state(model)
    trainer.train()
    assert_only_lora_trained(model, base, start)
    ref, ref_kl = reference()  # the reference stays the base model while the policy moves
    torch.testing.assert_close(ref, direct, atol=2e-3, rtol=1e-4)
    torch.testing.assert_close(ref_kl, direct_kl, atol=2e-3, rtol=1e-4)
    model.eval()
    policy = completion_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    assert (policy - direct).abs().max() > 1e-3


def test_kto_trains_and_saves_only_its_adapter(kto_run, base_model):
    assert_only_lora_trained(kto_run.model, base_model)
    assert_saved_default_only(kto_run.adapter_dir)
    rows = read_training_log(kto_run.adapter_dir / LOG_CSV)
    assert [row["step"] for row in rows] == [1, 2] and all("kl" in row for row in rows)
    assert kto_run.metrics["reference"] == "base" and kto_run.metrics["last_kl"] is not None


# ----------------------------------------------------------------------------------------------------------------
# KTO -> SFT and SFT -> DPO


def test_kto_sft_continues_the_kto_adapter(kto_run, chat_cfg, base_model, tmp_path):
    kto_weights = _saved_lora(kto_run.adapter_dir)
    # the continued adapter keeps its own LoRA shape (r=4), whatever the kto_sft section says
    trainer = build_sft_trainer(make_targets("chat"), chat_cfg, tcfg(lora_r=8), tmp_path / "b",
                                init_adapter=kto_run.adapter_dir, reference="base")
    start = _lora_state(trainer.model)
    assert set(trainer.model.peft_config) == {"default"} and trainer.model.peft_config["default"].r == 4
    assert start and all(torch.equal(value, kto_weights[_as_saved(name)]) for name, value in start.items())

    result = train_sft(make_targets("chat"), chat_cfg, tcfg(lora_r=8), tmp_path / "kto-sft",
                       init_adapter=kto_run.adapter_dir)
    assert_only_lora_trained(result.model, base_model, start)
    assert_saved_default_only(result.adapter_dir)
    assert json.loads((result.adapter_dir / "adapter_config.json").read_text())["r"] == 4
    assert result.metrics["init_adapter"] == str(kto_run.adapter_dir)


def test_sft_dpo_reference_is_the_sft_model(sft_run, sft_model, chat_cfg, base_model, tmp_path):
    trainer = build_dpo_trainer(make_pairs("chat"), chat_cfg, tcfg(), tmp_path / "t",
                                init_adapter=sft_run.adapter_dir, reference="stage1")
    model = trainer.model
    assert set(model.peft_config) == {"default", "ref"}
    start = _lora_state(model)
    saved = _saved_lora(sft_run.adapter_dir)
    assert all(torch.equal(value, saved[_as_saved(name)]) for name, value in start.items())

    batch = {k: v for k, v in first_batch(trainer).items() if k in ("input_ids", "attention_mask", "completion_mask")}
    sft_logps = completion_logps(sft_model, **batch)
    base_logps = completion_logps(base_model, **batch)
    assert (sft_logps - base_logps).abs().max() > 0.05  # the two candidate references are distinguishable

    def reference():  # TRL's (chosen, rejected) halves, concatenated like the batch
        model.eval()
        ref = torch.cat(trainer.compute_ref_log_probs(model, batch))
        model.train()
        return ref

    torch.testing.assert_close(reference(), sft_logps, atol=2e-3, rtol=1e-4)
    trainer.train()
    assert_only_lora_trained(model, base_model, start)
    torch.testing.assert_close(reference(), sft_logps, atol=2e-3, rtol=1e-4)  # frozen while the policy moves
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".ref." in n)

    result = train_dpo(make_pairs("chat"), chat_cfg, tcfg(), tmp_path / "sft-dpo",
                       init_adapter=sft_run.adapter_dir, reference="stage1")
    assert_saved_default_only(result.adapter_dir)
    after = _saved_lora(result.adapter_dir)
    assert any(not torch.equal(after[key], saved[key]) for key in saved)
    assert result.metrics["reference"] == "stage1"


# ----------------------------------------------------------------------------------------------------------------
# Precision and QLoRA


@pytest.fixture(scope="module")
def local_tiny(chat_cfg, tmp_path_factory):
    """tiny-gemma3 saved to disk: tiny models are built in memory and ignore ``quantization``, a local copy loads
    through ``from_pretrained`` with bitsandbytes' 4-bit weights like a real checkpoint."""
    folder = tmp_path_factory.mktemp("tiny-local")
    model, tokenizer = load_model(chat_cfg, device="cpu")
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return dataclasses.replace(chat_cfg, source="local", path=str(folder), dtype="auto")


@pytest.mark.parametrize("mode", ["bf16", "4bit"])
@pytest.mark.parametrize("method", ["sft", "kto", "kto_sft", "sft_dpo"])
def test_methods_train_in_bf16_and_4bit(method, mode, chat_cfg, local_tiny, sft_run, kto_run, tmp_path):
    """One step per method. kto_sft / sft_dpo continue the fp32 adapters of the module's runs (an adapter trained in
    one precision is continued in another as it would be on a GPU box)."""
    overrides = {"max_steps": 1}
    if mode == "bf16":
        cfg = dataclasses.replace(chat_cfg, dtype="auto")  # auto: the weights in the training precision
        overrides["precision"] = "bf16"
    else:
        cfg = local_tiny
        overrides["load_in_4bit"] = True
    init = {"kto_sft": kto_run.adapter_dir, "sft_dpo": sft_run.adapter_dir}.get(method)
    out = tmp_path / method
    if method in ("sft", "kto_sft"):
        result = train_sft(make_targets("chat"), cfg, tcfg(**overrides), out, init_adapter=init)
    elif method == "kto":
        result = train_kto(make_singles("chat"), cfg, kcfg(**overrides), out)
    else:
        result = train_dpo(make_pairs("chat"), cfg, tcfg(**overrides), out, init_adapter=init, reference="stage1")
    model = result.model
    if mode == "bf16":
        assert model.get_base_model().model.embed_tokens.weight.dtype == torch.bfloat16
    else:
        import bitsandbytes as bnb

        assert model.get_base_model().is_loaded_in_4bit
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    trained = _lora_state(model)
    saved = _saved_lora(init) if init else None
    start = {name: saved[_as_saved(name)] for name in trained} if init else None
    moved = 0
    for name, value in trained.items():
        if start is not None:
            moved += not torch.equal(value.float(), start[name].to(value.dtype).float())
        elif "lora_B" in name:
            moved += bool(value.abs().max() > 0)
    assert moved > 0
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    assert torch.isfinite(torch.tensor(read_training_log(out / LOG_CSV)[-1]["loss"]))
    assert_saved_default_only(out)


# ----------------------------------------------------------------------------------------------------------------
# Log sinks and bad data


def test_report_to_tensorboard_writes_beside_the_adapter(chat_cfg, tmp_path):
    for make in (sft_config, dpo_config):
        assert make(tcfg(), tmp_path, has_eval=False).report_to == []
        assert make(tcfg(report_to=["tensorboard"]), tmp_path, has_eval=False).report_to == ["tensorboard"]
    assert kto_config(kcfg(report_to=["tensorboard"]), tmp_path, has_eval=False).report_to == ["tensorboard"]

    out = tmp_path / "tb"
    train_sft(make_targets("chat", _TASKS[:2]), chat_cfg, tcfg(max_steps=1, report_to=["tensorboard"]), out)
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert not list(out.rglob("runs"))  # not transformers' default <output_dir>/runs


def test_bad_data_is_refused(chat_cfg, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        train_sft(make_targets("chat").select([]), chat_cfg, tcfg(), tmp_path / "a")
    with pytest.raises(ValueError, match="missing column"):
        train_sft(make_targets("chat").remove_columns("completion"), chat_cfg, tcfg(), tmp_path / "b")
    with pytest.raises(ValueError, match="empty"):
        train_kto(make_singles("chat").select([]), chat_cfg, kcfg(), tmp_path / "c")
    desirable_only = make_singles("chat").filter(lambda row: row["label"])
    with pytest.raises(ValueError, match="desirable and undesirable"):
        train_kto(desirable_only, chat_cfg, kcfg(), tmp_path / "d")
    with pytest.raises(ValueError, match="per_device_train_batch_size >= 2"):
        kto_config(kcfg(per_device_train_batch_size=1), tmp_path, has_eval=False)
    with pytest.raises(ValueError, match="loss_type"):
        kto_config(kcfg(loss_type="sigmoid"), tmp_path, has_eval=False)
    with pytest.raises(ValueError, match="no target fits max_length"):  # every completion cut off by the prompt
        train_sft(make_targets("chat"), chat_cfg, tcfg(max_length=8), tmp_path / "e")
