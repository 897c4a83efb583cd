"""LoRA DPO with TRL's ``DPOTrainer``: the paper's method for stage 1c (``dpo``) and stage 2c (``dpo-further``).

Stage 1c trains a new LoRA adapter on the stage-1 pairs (the ``-dpo`` model); stage 2c keeps training that same
adapter on the self-generated pairs (``-dpo-further``). The DPO reference model is, per stage:

* 1c: the base model. TRL wraps the model with ``peft_config`` and computes the reference with the adapter
  disabled (no second copy of the weights).
* 2c, ``reference="base"`` (the paper's intent): the same mechanism. The model is wrapped with the *stage-1*
  adapter's own ``LoraConfig`` through ``peft_config`` and the stage-1 weights are then loaded into that adapter,
  so TRL still disables the adapter for the reference and never adds a ``ref`` copy.
* 2c, ``reference="stage1"``: the model is handed to TRL as a ``PeftModel`` holding the stage-1 adapter (loaded
  with ``is_trainable=True``); TRL then adds a frozen ``ref`` adapter copied from it, so the reference is the
  stage-1 policy. Only the trained ``default`` adapter is saved.

Checkpoints, resume, logs and saving are the shared runner's (``common/training/runner.py``).
``tests/test_training.py`` checks each reference against direct forward passes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from common.config import DPOTrainingConfig, ModelConfig, to_dict
from common.preference.trl_format import TRL_COLUMNS, check_pairs, split_eval, to_trl_format
from common.training.logs import StepTimer
from common.training.methods._shared import (
    adapter_setup, common_trainer_args, load_adapter_weights, load_training_model, route_tensorboard,
    trainer_callbacks, training_model_config)  # noqa: F401  (training_model_config: re-exported for callers)
from common.training.runner import CHECKPOINTS, TrainResult, run_signature, run_training

logger = logging.getLogger(__name__)

REFERENCES = ("base", "stage1")


# --------------------------------------------------------------------------------------------------------------
# Configs


def dpo_config(train_cfg: DPOTrainingConfig, output_dir: str | Path, has_eval: bool) -> Any:
    """Our ``DPOTrainingConfig`` -> TRL ``DPOConfig`` (checkpoints in ``output_dir``): the shared arguments
    (``common_trainer_args``) plus DPO's own."""
    from trl import DPOConfig

    return DPOConfig(
        **common_trainer_args(train_cfg, output_dir, has_eval),
        beta=train_cfg.beta,
        loss_type=train_cfg.loss_type,
        max_length=train_cfg.max_length,
        truncation_mode="keep_start",  # the only non-deprecated mode in TRL 1.16
        precompute_ref_log_probs=train_cfg.precompute_ref_log_probs,
        padding_free=train_cfg.padding_free,
    )


# --------------------------------------------------------------------------------------------------------------
# Trainer


def build_dpo_trainer(
    pairs: Any,
    model_cfg: ModelConfig,
    train_cfg: DPOTrainingConfig,
    output_dir: str | Path,
    init_adapter: str | Path | None = None,
    reference: str = "base",
    eval_pairs: Any | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """A ready-to-train TRL ``DPOTrainer`` (checkpoints under ``output_dir/checkpoints``); see the module docstring
    for how each ``reference`` is obtained. ``eval_pairs`` (our format) overrides the ``eval_fraction`` split."""
    from trl import DPOTrainer

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if init_adapter is None and reference != "base":
        raise ValueError("reference='stage1' needs init_adapter (the stage-1 adapter to continue)")
    if eval_pairs is None:
        pairs, eval_pairs = split_eval(pairs, train_cfg.eval_fraction, train_cfg.seed)
    train_dataset = to_trl_format(pairs)
    eval_dataset = to_trl_format(eval_pairs) if eval_pairs is not None else None

    model, tokenizer = load_training_model(model_cfg, train_cfg, not isinstance(train_dataset[0]["prompt"], str),
                                           what="pairs dataset")
    if train_cfg.padding_free:
        logger.warning("padding_free is passed to TRL, but TRL 1.16 disables it (falls back to padding)")
    init_adapter = Path(init_adapter) if init_adapter is not None else None
    model, peft_config = adapter_setup(model, train_cfg, init_adapter, reference)

    args = dpo_config(train_cfg, Path(output_dir) / CHECKPOINTS, eval_dataset is not None)
    trainer = DPOTrainer(
        model=model, ref_model=None, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=tokenizer, peft_config=peft_config, callbacks=trainer_callbacks(train_cfg, callbacks),
    )
    if init_adapter is not None and reference == "base":
        load_adapter_weights(trainer.model, init_adapter)
    route_tensorboard(trainer, output_dir)
    names = set(trainer.model.peft_config)
    expected = {"default", "ref"} if reference == "stage1" else {"default"}
    if names != expected:  # e.g. a TRL upgrade that changes how the reference is built
        raise RuntimeError(f"unexpected adapters {sorted(names)} for reference={reference!r}")
    return trainer


# --------------------------------------------------------------------------------------------------------------
# Training


def _run_signature(pairs: Any, model_cfg: ModelConfig, train_cfg: DPOTrainingConfig,
                   init_adapter: Path | None, reference: str, eval_pairs: Any | None) -> str:
    settings = {"model": to_dict(model_cfg), "train": to_dict(train_cfg), "reference": reference,
                "init_adapter": str(init_adapter) if init_adapter else None}
    return run_signature(settings, (pairs, eval_pairs), TRL_COLUMNS, init_adapter)


def train_dpo(
    pairs: Any,
    model_cfg: ModelConfig,
    train_cfg: DPOTrainingConfig,
    output_dir: str | Path,
    init_adapter: str | Path | None = None,
    reference: str = "base",
    *,
    eval_pairs: Any | None = None,
    callbacks: list[Any] | None = None,
    keep_checkpoints: bool = False,
) -> TrainResult:
    """Train a LoRA DPO adapter and save it, with its training log and curves, in ``output_dir``.

    Stage 1c: ``init_adapter=None`` (new adapter, reference = base). Stage 2c: ``init_adapter`` = the stage-1
    adapter, continued; ``reference`` = 'base' or 'stage1'. Checkpoints (``save_steps``) go to
    ``output_dir/checkpoints``; a crashed run with the same inputs resumes from the last one. They are removed
    after a successful run unless ``keep_checkpoints``.
    """
    output_dir = Path(output_dir)
    init_adapter = Path(init_adapter) if init_adapter is not None else None
    check_pairs(pairs)
    signature = _run_signature(pairs, model_cfg, train_cfg, init_adapter, reference, eval_pairs)
    timer = StepTimer()
    trainer = build_dpo_trainer(pairs, model_cfg, train_cfg, output_dir, init_adapter, reference,
                                eval_pairs=eval_pairs, callbacks=[timer, *(callbacks or [])])
    metrics, history, _ = run_training(trainer, output_dir, signature, timer, keep_checkpoints=keep_checkpoints,
                                       label="DPO training")
    last = next((entry for entry in reversed(history) if "rewards/margins" in entry), {})
    metrics.update({
        "reference": reference,
        "init_adapter": str(init_adapter) if init_adapter else None,
        "last_rewards/margins": last.get("rewards/margins"),
        "last_rewards/accuracies": last.get("rewards/accuracies"),
    })
    return TrainResult(adapter_dir=output_dir, log_history=history, metrics=metrics,
                       seconds_per_step=metrics["seconds_per_step"], tokens_per_second=metrics["tokens_per_second"],
                       model=trainer.accelerator.unwrap_model(trainer.model))
