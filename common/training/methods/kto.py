"""LoRA KTO with TRL's ``KTOTrainer``: stage ``kto`` (a new adapter on the labelled singles: desirable and
undesirable completions, unpaired), later continued by ``kto-sft``.

The KTO reference is the base model. A new adapter is created by TRL from ``peft_config``; with ``ref_model=None``
and a PEFT model, TRL 1.16 keeps no reference copy and scores the reference with the adapter disabled
(``KTOTrainer.__init__``: "If PEFT is used, the reference model is not needed since the adapter can be disabled";
``compute_ref_log_probs`` / ``_compute_loss`` wrap the forward in ``use_adapter(model, adapter_name=None)``).
Continuing an adapter follows ``dpo.py``: ``reference='base'`` wraps the model with the saved adapter's own
``LoraConfig`` and copies its weights in (still no ``ref`` adapter), ``reference='stage1'`` hands TRL a trainable
``PeftModel``, to which TRL adds a frozen ``ref`` copy. Only the ``default`` adapter is ever saved (the runner).

Two TRL constraints shape the data: KTO's KL term pairs each prompt with the *previous* row's completion inside a
batch of ``per_device_train_batch_size`` rows (``add_kl_completion_ids``), so the batch must hold >= 2 rows and the
sampler is sequential (``KTOConfig.train_sampling_strategy``). Our singles come grouped by task, so a sequential
pass would pair a prompt with a completion of the same task; the rows are shuffled once (with ``seed``) instead.
``trl_patches`` applies as for DPO: KTO tokenises through ``dataset.map`` (tokenizer fingerprint) and scores through
``add_fused_lm_head`` (completion-only LM head on CPU).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from common.config import KTOTrainingConfig, ModelConfig, to_dict
from common.preference.trl_format import KTO_COLUMNS, split_eval, to_kto_format
from common.training.logs import StepTimer
from common.training.methods._shared import (
    adapter_setup, common_trainer_args, load_adapter_weights, load_training_model, route_tensorboard,
    trainer_callbacks)
from common.training.runner import CHECKPOINTS, TrainResult, run_signature, run_training

logger = logging.getLogger(__name__)

REFERENCES = ("base", "stage1")
LOSS_TYPES = ("kto", "apo_zero_unpaired")  # KTOConfig.loss_type's choices in TRL 1.16


# --------------------------------------------------------------------------------------------------------------
# Config


def kto_config(train_cfg: KTOTrainingConfig, output_dir: str | Path, has_eval: bool) -> Any:
    """Our ``KTOTrainingConfig`` -> TRL ``KTOConfig`` (checkpoints in ``output_dir``): the shared arguments plus
    KTO's (beta, loss type, the desirable/undesirable weights)."""
    from trl import KTOConfig

    if train_cfg.loss_type not in LOSS_TYPES:
        raise ValueError(f"KTO loss_type must be one of {LOSS_TYPES}, got {train_cfg.loss_type!r}")
    if train_cfg.loss_type != "apo_zero_unpaired" and train_cfg.per_device_train_batch_size < 2:
        raise ValueError("KTO needs per_device_train_batch_size >= 2: its KL term pairs each prompt with another "
                         f"row's completion in the same batch (got {train_cfg.per_device_train_batch_size})")
    if train_cfg.padding_free:
        logger.warning("padding_free is ignored for KTO (TRL 1.16's KTOTrainer pads)")
    return KTOConfig(
        **common_trainer_args(train_cfg, output_dir, has_eval),
        beta=train_cfg.beta,
        loss_type=train_cfg.loss_type,
        desirable_weight=train_cfg.desirable_weight,
        undesirable_weight=train_cfg.undesirable_weight,
        max_length=train_cfg.max_length,
        precompute_ref_log_probs=train_cfg.precompute_ref_log_probs,
    )


# --------------------------------------------------------------------------------------------------------------
# Trainer


def _kto_rows(singles: Any, seed: int, where: str) -> Any:
    """TRL's unpaired format, shuffled once: the sampler is sequential (see the module docstring)."""
    return to_kto_format(singles, where=where).shuffle(seed=seed).flatten_indices()


def build_kto_trainer(
    singles: Any,
    model_cfg: ModelConfig,
    train_cfg: KTOTrainingConfig,
    output_dir: str | Path,
    init_adapter: str | Path | None = None,
    reference: str = "base",
    eval_singles: Any | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """A ready-to-train TRL ``KTOTrainer`` (checkpoints under ``output_dir/checkpoints``); see the module docstring
    for the reference. ``eval_singles`` (our format) overrides the ``eval_fraction`` split."""
    from trl import KTOTrainer

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if init_adapter is None and reference != "base":
        raise ValueError("reference='stage1' needs init_adapter (the adapter to continue)")
    if eval_singles is None:
        singles, eval_singles = split_eval(singles, train_cfg.eval_fraction, train_cfg.seed)
    train_dataset = _kto_rows(singles, train_cfg.seed, "singles dataset")
    eval_dataset = _kto_rows(eval_singles, train_cfg.seed, "held-out singles") if eval_singles is not None else None

    model, tokenizer = load_training_model(model_cfg, train_cfg, not isinstance(train_dataset[0]["prompt"], str),
                                           what="singles dataset")
    init_adapter = Path(init_adapter) if init_adapter is not None else None
    model, peft_config = adapter_setup(model, train_cfg, init_adapter, reference)

    args = kto_config(train_cfg, Path(output_dir) / CHECKPOINTS, eval_dataset is not None)
    trainer = KTOTrainer(
        model=model, ref_model=None, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=tokenizer, peft_config=peft_config, callbacks=trainer_callbacks(train_cfg, callbacks),
    )
    if len(trainer.train_dataset) == 0:
        # TRL drops rows whose prompt alone fills max_length (no completion token would be left)
        raise ValueError(f"no single fits max_length={train_cfg.max_length} with at least one completion token")
    if init_adapter is not None and reference == "base":
        load_adapter_weights(trainer.model, init_adapter)
    names = set(trainer.model.peft_config)
    expected = {"default", "ref"} if reference == "stage1" else {"default"}
    if trainer.ref_model is not None or names != expected:  # e.g. a TRL upgrade that builds the reference otherwise
        raise RuntimeError(f"unexpected KTO reference: adapters {sorted(names)}, ref_model "
                           f"{type(trainer.ref_model).__name__} for reference={reference!r}")
    route_tensorboard(trainer, output_dir)
    return trainer


# --------------------------------------------------------------------------------------------------------------
# Training


def _run_signature(singles: Any, model_cfg: ModelConfig, train_cfg: KTOTrainingConfig, init_adapter: Path | None,
                   reference: str, eval_singles: Any | None) -> str:
    settings = {"method": "kto", "model": to_dict(model_cfg), "train": to_dict(train_cfg), "reference": reference,
                "init_adapter": str(init_adapter) if init_adapter else None}
    return run_signature(settings, (singles, eval_singles), KTO_COLUMNS, init_adapter)


def train_kto(
    singles: Any,
    model_cfg: ModelConfig,
    train_cfg: KTOTrainingConfig,
    output_dir: str | Path,
    init_adapter: str | Path | None = None,
    reference: str = "base",
    *,
    eval_singles: Any | None = None,
    callbacks: list[Any] | None = None,
    keep_checkpoints: bool = False,
) -> TrainResult:
    """Train a LoRA KTO adapter on labelled ``singles`` and save it, with its training log and curves, in
    ``output_dir``. Reference: the base model (adapter disabled), or, continuing ``init_adapter`` with
    ``reference='stage1'``, a frozen copy of that adapter. Checkpoints and resume as in ``train_dpo``."""
    output_dir = Path(output_dir)
    init_adapter = Path(init_adapter) if init_adapter is not None else None
    to_kto_format(singles)  # a clear error for empty, malformed or one-label singles before any model is loaded
    signature = _run_signature(singles, model_cfg, train_cfg, init_adapter, reference, eval_singles)
    timer = StepTimer()
    trainer = build_kto_trainer(singles, model_cfg, train_cfg, output_dir, init_adapter, reference,
                                eval_singles=eval_singles, callbacks=[timer, *(callbacks or [])])
    metrics, history, _ = run_training(trainer, output_dir, signature, timer, keep_checkpoints=keep_checkpoints,
                                       label="KTO training")
    last = {}
    for entry in history:  # the latest value of each KTO metric (a batch with one label logs no margin)
        last.update({key: entry[key] for key in ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins")
                     if key in entry})
    metrics.update({
        "reference": reference,
        "init_adapter": str(init_adapter) if init_adapter else None,
        **{f"last_{key}": last.get(key) for key in ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins")},
    })
    return TrainResult(adapter_dir=output_dir, log_history=history, metrics=metrics,
                       seconds_per_step=metrics["seconds_per_step"], tokens_per_second=metrics["tokens_per_second"],
                       model=trainer.accelerator.unwrap_model(trainer.model))
