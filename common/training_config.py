"""The training sections of the pipeline config: the settings every method shares and each method's own.

Kept apart from ``common/config.py`` (which re-exports them) only for size; the same rules hold: dataclasses with a
default and a help string per field, loaded from YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.config_fields import _f

PAPER_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainingConfig:
    """The settings every training method shares (LoRA, optimiser, length, precision, checkpoints); a method's own
    settings are in its subclass (``KTOTrainingConfig``, ``GRPOTrainingConfig``). One section per training stage."""

    lora_r: int = _f(16, "LoRA rank (paper: 16).")
    lora_alpha: int = _f(32, "LoRA alpha (paper: 32).")
    lora_dropout: float = _f(0.1, "LoRA dropout (paper: 0.1).")
    lora_target_modules: list[str] = _f(help="LoRA targets (paper: all attention and MLP projections).",
                                        factory=lambda: list(PAPER_LORA_TARGETS))
    beta: float = _f(0.1, "DPO beta (paper: TRL default 0.1).")
    loss_type: str = _f("sigmoid", "TRL's DPO loss: sigmoid (DPO, the paper), ipo, hinge, robust, apo_zero, ... "
                        "(DPOConfig.loss_type).")
    learning_rate: float = _f(5e-7, "Learning rate (paper: 5e-7).")
    num_train_epochs: float = _f(250.0, "Epochs (paper: 250).")
    max_steps: int = _f(-1, "Stop after this many optimiser steps (-1: use epochs).")
    per_device_train_batch_size: int = _f(2, "Pairs per device per step (paper: 1-2).")
    gradient_accumulation_steps: int = _f(16, "Gradient accumulation (paper: 16).")
    max_length: int = _f(1024, "Truncate prompt+completion to this many tokens (paper: 1024).")
    precision: str = _f("fp32", "fp32 (paper), bf16 or fp16.")
    gradient_checkpointing: bool = _f(True, "Recompute activations (paper: on).")
    load_in_4bit: bool = _f(False, "QLoRA: 4-bit base model (bitsandbytes).")
    precompute_ref_log_probs: bool = _f(False, "Compute reference log-probs once before training (GPU preset).")
    padding_free: bool = _f(False, "Pack sequences without padding (needs flash attention; GPU preset).")
    early_stopping_patience: int | None = _f(None, "Stop when eval loss has not improved for N evaluations.")
    eval_fraction: float = _f(0.0, "Held-out share of pairs for evaluation/early stopping (0 = none).")
    stage2_reference: str = _f(
        "base",
        "DPO reference model in stage 2c: 'base' (adapter disabled, the paper's intent) or 'stage1' (a frozen copy of "
        "the stage-1 adapter, what current TRL does when handed a PeftModel).",
    )
    logging_steps: int = _f(1, "Log every N steps.")
    save_steps: int | None = _f(None, "Checkpoint every N steps (resume with the same run dir); None = end only.")
    seed: int = _f(42, "Training seed.")
    report_to: list[str] = _f(help="Trainer log sinks besides training_log.csv: [] (default) or ['tensorboard'] "
                                   "(event files under <adapter>/tensorboard).", factory=list)


DPOTrainingConfig = TrainingConfig  # the name stages 1c/2c were written against


def _training(**defaults: Any) -> Any:
    """A TrainingConfig section whose defaults differ from the paper's DPO ones (a study's published settings)."""
    return lambda: TrainingConfig(**defaults)


# The SFT->DPO study (Llama-3.1 8B, QLoRA): LoRA r 16, alpha 16, dropout 0, lr 2e-4, 3 epochs (its 4-bit base is
# in the GPU preset: bitsandbytes on CPU is slow).
SFT_STUDY = {"lora_alpha": 16, "lora_dropout": 0.0, "learning_rate": 2e-4, "num_train_epochs": 3.0,
             "gradient_accumulation_steps": 1, "per_device_train_batch_size": 4}


@dataclass
class KTOTrainingConfig(TrainingConfig):
    """KTO (unpaired desirable / undesirable completions). Defaults: the compiler-feedback study (beta 0.1, lr 5e-5,
    3 epochs)."""

    loss_type: str = _f("kto", "TRL's KTO loss: kto or apo_zero_unpaired (KTOConfig.loss_type).")
    learning_rate: float = _f(5e-5, "Learning rate (compiler-feedback study: 5e-5).")
    num_train_epochs: float = _f(3.0, "Epochs (compiler-feedback study: 3).")
    gradient_accumulation_steps: int = _f(1, "Gradient accumulation.")
    per_device_train_batch_size: int = _f(4, "Completions per device per step (KTO needs > 1 for its KL term).")
    desirable_weight: float = _f(1.0, "Weight of the desirable examples' loss (TRL: balance it against the "
                                      "undesirable count).")
    undesirable_weight: float = _f(1.0, "Weight of the undesirable examples' loss.")


@dataclass
class GRPOTrainingConfig(TrainingConfig):
    """Online RL with TRL's GRPOTrainer: the policy samples ``num_generations`` completions per training prompt and
    each is rewarded by the sandbox (passes every test, share of tests passed) and by MI (``common.training.rewards``)."""

    beta: float = _f(0.0, "KL coefficient against the base model (TRL's GRPO default 0: no reference model).")
    loss_type: str = _f("dapo", "TRL's GRPO loss: grpo, dapo (TRL default), dr_grpo, bnpo (GRPOConfig.loss_type).")
    learning_rate: float = _f(1e-5, "Learning rate.")
    num_train_epochs: float = _f(1.0, "Epochs over the training prompts.")
    gradient_accumulation_steps: int = _f(1, "Gradient accumulation.")
    per_device_train_batch_size: int = _f(4, "Completions per device per step (a multiple of num_generations).")
    num_generations: int = _f(4, "Completions sampled per prompt (the group whose rewards are normalised).")
    max_completion_length: int = _f(256, "Token budget per sampled completion.")
    temperature: float = _f(1.0, "Sampling temperature of the rollouts.")
    top_p: float = _f(1.0, "Nucleus sampling of the rollouts.")
    reward_pass: float = _f(1.0, "Reward weight: 1 when the completion passes every test.")
    reward_tests: float = _f(1.0, "Reward weight: the share of the task's tests passed.")
    reward_mi: float = _f(1.0, "Reward weight: MI/100 of a completion that passes every test (0 otherwise), so "
                               "maintainability never pays for wrong code.")
