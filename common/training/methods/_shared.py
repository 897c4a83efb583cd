"""What every training method shares on top of the runner: the LoRA config, the precision check, activation
checkpointing's name, the model as trained (4-bit / dtype), continuing an earlier adapter and TRL's common
arguments. Each method module (dpo, sft, kto, grpo) builds its trainer from these."""

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
