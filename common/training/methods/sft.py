"""LoRA SFT with TRL's ``SFTTrainer``: stage ``sft`` (a new adapter on the best-only targets, later continued by
``sft-dpo``) and stage ``kto-sft`` (the KTO adapter, continued on the same targets).

What is learned is the solution only, never the prompt. The targets are TRL prompt-completion rows
(``to_sft_format``): a string prompt is "standard", a message-list prompt "conversational" (the completion is one
assistant turn). ``completion_only_loss=True`` is set explicitly (TRL's default ``None`` depends on the dataset's
columns): TRL tokenises the prompt alone (with the generation prompt for chat rows) and prompt+completion, marks the
tokens after their common prefix as the completion and sets every other label to -100
(``SFTTrainer._prepare_dataset``: ``tokenize_fn`` then ``build_labels``); the collator pads labels with -100. So for
a chat row only the assistant turn (the fenced code and ``<end_of_turn>``) is supervised, for a string row the code,
the closing fence and EOS. ``assistant_only_loss`` stays off: it needs ``{% generation %}`` markers that the Gemma
template lacks and would add nothing on top of the completion mask. ``tests/test_training_methods.py`` checks the
labels of collated batches.

``reference`` is accepted (every adapter stage passes one) and ignored: SFT has no reference model.
``init_adapter`` continues a saved adapter (``kto-sft``): it is loaded as a trainable ``PeftModel`` with its own
LoRA shape (``warn_if_lora_differs`` names config fields it overrides). Only the ``default`` adapter exists and is
saved. DPO's loss settings (``beta``, ``loss_type``) do not apply: the loss is TRL's token-mean NLL.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from common.config import ModelConfig, TrainingConfig, to_dict
from common.preference.trl_format import SFT_COLUMNS, split_eval, to_sft_format
from common.training.logs import StepTimer
from common.training.methods._shared import (
    adapter_setup, common_trainer_args, load_training_model, route_tensorboard, trainer_callbacks)
from common.training.runner import CHECKPOINTS, TrainResult, run_signature, run_training

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Config


def sft_config(train_cfg: TrainingConfig, output_dir: str | Path, has_eval: bool) -> Any:
    """Our ``TrainingConfig`` -> TRL ``SFTConfig`` (checkpoints in ``output_dir``): the shared arguments plus SFT's.

    No packing and no padding-free batches: both concatenate rows, and TRL 1.16 refuses padding-free without packing
    when ``max_length`` is set (it needs FlashAttention besides). ``padding_free`` is therefore ignored here, with a
    warning."""
    from trl import SFTConfig

    if train_cfg.padding_free:
        logger.warning("padding_free is ignored for SFT (TRL 1.16 needs packing or max_length=None with it)")
    return SFTConfig(
        **common_trainer_args(train_cfg, output_dir, has_eval),
        max_length=train_cfg.max_length,
        truncation_mode="keep_start",  # the only non-deprecated mode in TRL 1.16
        completion_only_loss=True,  # never the prompt; explicit, so a dataset change cannot switch it off
        assistant_only_loss=False,
        packing=False,
        padding_free=False,
        loss_type="nll",
        dataset_num_proc=None,
    )


# --------------------------------------------------------------------------------------------------------------
# Trainer


def build_sft_trainer(
    targets: Any,
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    output_dir: str | Path,
    init_adapter: str | Path | None = None,
    reference: str = "base",
    eval_targets: Any | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """A ready-to-train TRL ``SFTTrainer`` (checkpoints under ``output_dir/checkpoints``) on ``targets`` (our format:
    prompt, completion, ...). ``eval_targets`` overrides the ``eval_fraction`` split; ``reference`` is ignored."""
    from trl import SFTTrainer

    del reference  # SFT has no reference model; accepted so every adapter stage calls methods the same way
    if eval_targets is None:
        targets, eval_targets = split_eval(targets, train_cfg.eval_fraction, train_cfg.seed)
    train_dataset = to_sft_format(targets)
    eval_dataset = to_sft_format(eval_targets, where="held-out targets") if eval_targets is not None else None

    model, tokenizer = load_training_model(model_cfg, train_cfg, not isinstance(train_dataset[0]["prompt"], str),
                                           what="targets dataset")
    init_adapter = Path(init_adapter) if init_adapter is not None else None
    # 'stage1' = load the saved adapter as a trainable PeftModel (SFT adds no reference copy)
    model, peft_config = adapter_setup(model, train_cfg, init_adapter, reference="stage1")

    args = sft_config(train_cfg, Path(output_dir) / CHECKPOINTS, eval_dataset is not None)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=tokenizer,
        peft_config=peft_config, callbacks=trainer_callbacks(train_cfg, callbacks),
    )
    if not trainer.completion_only_loss:  # e.g. a TRL upgrade that renames the switch
        raise RuntimeError("SFTTrainer would compute the loss on the prompt too")
    if len(trainer.train_dataset) == 0:
        # TRL drops rows whose completion is cut off entirely by max_length (prompt alone fills it)
        raise ValueError(f"no target fits max_length={train_cfg.max_length} with at least one completion token")
    names = set(trainer.model.peft_config)
    if names != {"default"}:
        raise RuntimeError(f"unexpected adapters {sorted(names)} for SFT")
    route_tensorboard(trainer, output_dir)
    return trainer


# --------------------------------------------------------------------------------------------------------------
# Training


def _run_signature(targets: Any, model_cfg: ModelConfig, train_cfg: TrainingConfig, init_adapter: Path | None,
                   eval_targets: Any | None) -> str:
    settings = {"method": "sft", "model": to_dict(model_cfg), "train": to_dict(train_cfg),
                "init_adapter": str(init_adapter) if init_adapter else None}
    return run_signature(settings, (targets, eval_targets), SFT_COLUMNS, init_adapter)


def train_sft(
    targets: Any,
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    output_dir: str | Path,
    init_adapter: str | Path | None = None,
    reference: str = "base",
    *,
    eval_targets: Any | None = None,
    callbacks: list[Any] | None = None,
    keep_checkpoints: bool = False,
) -> TrainResult:
    """Train a LoRA SFT adapter on ``targets`` and save it, with its training log and curves, in ``output_dir``.

    ``init_adapter=None``: a new adapter (stage ``sft``). Else that adapter is continued (stage ``kto-sft``).
    ``reference`` is ignored (SFT has none). Checkpoints and resume as in ``train_dpo`` (the shared runner).
    """
    output_dir = Path(output_dir)
    init_adapter = Path(init_adapter) if init_adapter is not None else None
    to_sft_format(targets)  # a clear error for empty or malformed targets before any model is loaded
    signature = _run_signature(targets, model_cfg, train_cfg, init_adapter, eval_targets)
    timer = StepTimer()
    trainer = build_sft_trainer(targets, model_cfg, train_cfg, output_dir, init_adapter, reference,
                                eval_targets=eval_targets, callbacks=[timer, *(callbacks or [])])
    metrics, history, _ = run_training(trainer, output_dir, signature, timer, keep_checkpoints=keep_checkpoints,
                                       label="SFT training")
    last = next((entry for entry in reversed(history) if "mean_token_accuracy" in entry), {})
    metrics.update({
        "reference": None,
        "init_adapter": str(init_adapter) if init_adapter else None,
        "last_loss": last.get("loss"),
        "last_mean_token_accuracy": last.get("mean_token_accuracy"),
    })
    return TrainResult(adapter_dir=output_dir, log_history=history, metrics=metrics,
                       seconds_per_step=metrics["seconds_per_step"], tokens_per_second=metrics["tokens_per_second"],
                       model=trainer.accelerator.unwrap_model(trainer.model))
