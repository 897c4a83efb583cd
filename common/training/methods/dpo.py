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
    check_precision, checkpointing_kwargs, load_adapter_weights, warn_if_lora_differs, lora_config, training_model_config)
from common.training.runner import CHECKPOINTS, TrainResult, device, on_cpu, run_signature, run_training
from common.training.trl_patches import fast_tokenizer_fingerprint, score_only_completions_on_cpu

logger = logging.getLogger(__name__)

REFERENCES = ("base", "stage1")


# --------------------------------------------------------------------------------------------------------------
# Configs


def dpo_config(train_cfg: DPOTrainingConfig, output_dir: str | Path, has_eval: bool) -> Any:
    """Our ``DPOTrainingConfig`` -> TRL ``DPOConfig`` (checkpoints in ``output_dir``)."""
    from trl import DPOConfig

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
    return DPOConfig(
        output_dir=str(output_dir),
        beta=train_cfg.beta,
        loss_type=train_cfg.loss_type,
        learning_rate=train_cfg.learning_rate,
        num_train_epochs=train_cfg.num_train_epochs,
        max_steps=train_cfg.max_steps,
        per_device_train_batch_size=train_cfg.per_device_train_batch_size,
        per_device_eval_batch_size=train_cfg.per_device_train_batch_size,
        gradient_accumulation_steps=train_cfg.gradient_accumulation_steps,
        max_length=train_cfg.max_length,
        truncation_mode="keep_start",  # the only non-deprecated mode in TRL 1.16
        bf16=train_cfg.precision == "bf16",  # TRL defaults to bf16=True: always explicit
        fp16=train_cfg.precision == "fp16",
        use_cpu=on_cpu(),
        **checkpointing_kwargs(train_cfg.gradient_checkpointing),
        precompute_ref_log_probs=train_cfg.precompute_ref_log_probs,
        padding_free=train_cfg.padding_free,
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
        report_to="none",
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
    from peft import PeftConfig, PeftModel
    from transformers import EarlyStoppingCallback
    from trl import DPOTrainer

    from common.models.loading import load_model

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if init_adapter is None and reference != "base":
        raise ValueError("reference='stage1' needs init_adapter (the stage-1 adapter to continue)")
    if eval_pairs is None:
        pairs, eval_pairs = split_eval(pairs, train_cfg.eval_fraction, train_cfg.seed)
    train_dataset = to_trl_format(pairs)
    eval_dataset = to_trl_format(eval_pairs) if eval_pairs is not None else None

    model, tokenizer = load_model(training_model_config(model_cfg, train_cfg), device=device())
    fast_tokenizer_fingerprint(tokenizer)
    score_only_completions_on_cpu()
    if not isinstance(train_dataset[0]["prompt"], str) and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the pairs have chat prompts but model {model_cfg.name!r} has no chat template; "
                         "build them with the completion prompt style")
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train_cfg.gradient_checkpointing)
    if train_cfg.padding_free:
        logger.warning("padding_free is passed to TRL, but TRL 1.16 disables it (falls back to padding)")

    peft_config = None
    if init_adapter is None:
        peft_config = lora_config(train_cfg)
    elif reference == "base":
        peft_config = PeftConfig.from_pretrained(str(init_adapter))  # the stage-1 LoRA shape, not train_cfg's
        peft_config.inference_mode = False
        warn_if_lora_differs(peft_config, train_cfg, init_adapter)
    else:
        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
        warn_if_lora_differs(model.peft_config["default"], train_cfg, init_adapter)

    has_eval = eval_dataset is not None
    args = dpo_config(train_cfg, Path(output_dir) / CHECKPOINTS, has_eval)
    callbacks = list(callbacks or [])
    if train_cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train_cfg.early_stopping_patience))
    trainer = DPOTrainer(
        model=model, ref_model=None, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
    )
    if init_adapter is not None and reference == "base":
        load_adapter_weights(trainer.model, Path(init_adapter))
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
