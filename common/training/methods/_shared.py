"""What every training method shares on top of the runner: the LoRA config, the precision check, activation
checkpointing's name, the model as trained (4-bit / dtype), continuing an earlier adapter, TRL's common
arguments (``common_trainer_args``), the callbacks and where TensorBoard writes. Each method module (dpo, sft, kto,
grpo) builds its trainer from these, so a setting means the same in every method."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from common.config import ModelConfig, TrainingConfig

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")


def lora_config(train_cfg: TrainingConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=train_cfg.lora_r, lora_alpha=train_cfg.lora_alpha, lora_dropout=train_cfg.lora_dropout, bias="none",
        target_modules=list(train_cfg.lora_target_modules), task_type="CAUSAL_LM",
    )


def check_precision(train_cfg: TrainingConfig) -> None:
    if train_cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {train_cfg.precision!r}")


def checkpointing_kwargs(enabled: bool) -> dict:
    """transformers 5.24 calls it ``activation_checkpointing`` (``gradient_checkpointing`` warns)."""
    from trl import DPOConfig

    names = {f.name for f in dataclasses.fields(DPOConfig)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def training_model_config(model_cfg: ModelConfig, train_cfg: TrainingConfig) -> ModelConfig:
    """The model config as trained: ``load_in_4bit`` asks for 4-bit weights (QLoRA), and a model whose dtype is
    'auto' is loaded in the training precision (the paper's fp32 means fp32 weights, not bf16 ones on a GPU; fp16
    mixed precision keeps fp32 master weights). An explicit model dtype wins."""
    check_precision(train_cfg)
    changes: dict[str, Any] = {}
    if train_cfg.load_in_4bit and not model_cfg.quantization:
        changes["quantization"] = "4bit"
    if model_cfg.dtype in (None, "auto"):
        changes["dtype"] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float32"}[train_cfg.precision]
    return dataclasses.replace(model_cfg, **changes) if changes else model_cfg


def warn_if_lora_differs(saved: Any, train_cfg: TrainingConfig, adapter_dir: Any) -> None:
    """Stage 2c continues the stage-1 adapter, so its LoRA shape comes from the adapter, not from the config."""
    wanted = {"r": train_cfg.lora_r, "lora_alpha": train_cfg.lora_alpha, "lora_dropout": train_cfg.lora_dropout,
              "target_modules": set(train_cfg.lora_target_modules)}
    found = {"r": saved.r, "lora_alpha": saved.lora_alpha, "lora_dropout": saved.lora_dropout,
             "target_modules": set(saved.target_modules or ())}
    differing = sorted(key for key in wanted if wanted[key] != found[key])
    if differing:
        logger.warning("continuing %s with its own LoRA settings; the config's %s differ and are ignored",
                       adapter_dir, differing)


def load_adapter_weights(model: Any, adapter_dir: Path) -> None:
    """Copy the stage-1 adapter's weights into the freshly created ``default`` adapter."""
    from peft import load_peft_weights, set_peft_model_state_dict

    result = set_peft_model_state_dict(model, load_peft_weights(str(adapter_dir), device="cpu"), "default")
    missing = [key for key in result.missing_keys if ".default" in key and "lora_" in key]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"stage-1 adapter {adapter_dir} does not fit the model: missing {missing[:3]}, "
                           f"unexpected {list(result.unexpected_keys)[:3]}")


# --------------------------------------------------------------------------------------------------------------
# TRL's common arguments, the model as trained, the adapter it trains and the callbacks


TENSORBOARD = "tensorboard"  # <adapter>/tensorboard: the event files of report_to=['tensorboard']


def report_to(train_cfg: TrainingConfig) -> str | list[str]:
    """``train_cfg.report_to`` for transformers: the list, or 'none' when it is empty (the spelling every
    transformers version reads as "no sinks"; before v5 an unset value meant every installed integration)."""
    sinks = list(train_cfg.report_to or [])
    return sinks if sinks else "none"


def fsdp_launch() -> bool:
    """Started by ``accelerate launch`` with an FSDP config (it sets this variable for every rank)."""
    import os

    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def common_trainer_args(train_cfg: TrainingConfig, output_dir: str | Path, has_eval: bool) -> dict[str, Any]:
    """The TRL/transformers arguments every method sets the same way, from the shared ``TrainingConfig`` fields:
    optimiser and schedule, precision, activation checkpointing, evaluation/checkpoint schedule, early stopping,
    seed and log sinks. ``output_dir`` is where checkpoints go (``<adapter>/checkpoints``). A method adds its own
    (beta, loss_type, max_length, ...) on top."""
    from common.training.runner import on_cpu

    check_precision(train_cfg)
    early = train_cfg.early_stopping_patience is not None
    if early and not has_eval:
        raise ValueError("early_stopping_patience needs a held-out slice: set eval_fraction > 0")
    steps = train_cfg.save_steps
    if has_eval:
        # Early stopping compares evaluations at checkpoints, so evaluation and saving share one schedule.
        eval_strategy = "steps" if steps else "epoch"
        save_strategy = eval_strategy if (steps or early) else "no"
    else:
        eval_strategy = "no"
        save_strategy = "steps" if steps else "no"
    return dict(
        output_dir=str(output_dir),
        learning_rate=train_cfg.learning_rate,
        num_train_epochs=train_cfg.num_train_epochs,
        max_steps=train_cfg.max_steps,
        per_device_train_batch_size=train_cfg.per_device_train_batch_size,
        per_device_eval_batch_size=train_cfg.per_device_train_batch_size,
        gradient_accumulation_steps=train_cfg.gradient_accumulation_steps,
        bf16=train_cfg.precision == "bf16",  # TRL defaults to bf16=True: always explicit
        fp16=train_cfg.precision == "fp16",
        use_cpu=on_cpu(),
        **checkpointing_kwargs(train_cfg.gradient_checkpointing),
        logging_steps=train_cfg.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=steps if eval_strategy == "steps" else None,
        save_strategy=save_strategy,
        save_steps=steps if save_strategy == "steps" else 500,
        save_total_limit=2 if save_strategy != "no" else None,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False if early else None,
        seed=train_cfg.seed,
        report_to=report_to(train_cfg),
    )


def load_training_model(model_cfg: ModelConfig, train_cfg: TrainingConfig, conversational: bool,
                        what: str = "training data") -> tuple[Any, Any]:
    """``(model, tokenizer)`` as trained: the training dtype / 4-bit weights on this process's device, prepared for
    k-bit training when quantised, with the two CPU speed-ups of ``trl_patches`` (both apply to every TRL trainer
    here: they tokenise through ``dataset.map`` and score through ``trl.trainer.utils.add_fused_lm_head``)."""
    from common.models.loading import load_model
    from common.training.runner import device, on_cpu
    from common.training.trl_patches import fast_tokenizer_fingerprint, fsdp_on_cpu, score_only_completions_on_cpu

    if fsdp_launch() and on_cpu():
        fsdp_on_cpu()
    model, tokenizer = load_model(training_model_config(model_cfg, train_cfg), device=device())
    fast_tokenizer_fingerprint(tokenizer)
    score_only_completions_on_cpu()
    if conversational and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the {what} has chat prompts but model {model_cfg.name!r} has no chat template; "
                         "build it with the completion prompt style")
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train_cfg.gradient_checkpointing)
    return model, tokenizer


def adapter_setup(model: Any, train_cfg: TrainingConfig, init_adapter: Path | None,
                  reference: str = "base") -> tuple[Any, Any]:
    """``(model, peft_config)`` to hand to a TRL trainer, for a new adapter or one continued from ``init_adapter``.

    * new adapter: ``peft_config`` from ``train_cfg``; TRL wraps the model, and a preference trainer's reference is
      the model with the adapter disabled (the base).
    * continued, ``reference='base'``: ``peft_config`` = the saved adapter's own ``LoraConfig`` (its shape wins over
      ``train_cfg``); the caller copies the saved weights in with ``load_adapter_weights`` once the trainer has
      wrapped the model. A preference trainer still disables the adapter for the reference: no ``ref`` copy.
    * continued, ``reference='stage1'``: the model comes back as a trainable ``PeftModel`` of the saved adapter;
      a preference trainer then adds a frozen ``ref`` copy of it (the reference is the continued policy), SFT
      simply trains it.
    """
    from peft import PeftConfig, PeftModel

    if init_adapter is None:
        return model, lora_config(train_cfg)
    if reference == "base":
        peft_config = PeftConfig.from_pretrained(str(init_adapter))  # the saved LoRA shape, not train_cfg's
        peft_config.inference_mode = False
        warn_if_lora_differs(peft_config, train_cfg, init_adapter)
        return model, peft_config
    model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    warn_if_lora_differs(model.peft_config["default"], train_cfg, init_adapter)
    return model, None


def trainer_callbacks(train_cfg: TrainingConfig, callbacks: list[Any] | None) -> list[Any]:
    """The caller's callbacks plus early stopping when the config asks for it."""
    from transformers import EarlyStoppingCallback

    callbacks = list(callbacks or [])
    if train_cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train_cfg.early_stopping_patience))
    return callbacks


def route_tensorboard(trainer: Any, adapter_dir: str | Path) -> None:
    """Point transformers' TensorBoard writer at ``<adapter>/tensorboard``.

    transformers 5.24 has no ``logging_dir`` argument any more: ``TensorBoardCallback`` writes to
    ``$TENSORBOARD_LOGGING_DIR`` or else ``<output_dir>/runs/<date>``, i.e. inside the checkpoints folder the runner
    deletes after a successful run. Setting the callback's ``logging_dir`` before training (it is only filled in
    ``on_train_begin`` when still unset) keeps the event files beside the adapter they describe, without touching
    the process environment (several trainers may run in one process)."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(Path(adapter_dir) / TENSORBOARD)
