"""Stage 1c / 2c: LoRA DPO with TRL (DESIGN §1 "Stage 1c / 2c – DPO").

Stage 1c trains a new LoRA adapter on the global pairs (the ``-dpo`` model); stage 2c keeps training that same
adapter on the self-generated pairs (``-dpo-further``). The DPO reference model is, per stage:

* 1c: the base model. TRL wraps the model with ``peft_config`` and computes the reference with the adapter
  disabled (no second copy of the weights).
* 2c, ``reference="base"`` (the paper's intent): the same mechanism. The model is wrapped with the *stage-1*
  adapter's own ``LoraConfig`` through ``peft_config`` and the stage-1 weights are then loaded into that adapter,
  so TRL still disables the adapter for the reference and never adds a ``ref`` copy.
* 2c, ``reference="stage1"``: the model is handed to TRL as a ``PeftModel`` holding the stage-1 adapter (loaded
  with ``is_trainable=True``); TRL then adds a frozen ``ref`` adapter copied from it, so the reference is the
  stage-1 policy. Only the trained ``default`` adapter is saved.

``tests/test_training.py`` checks each reference against direct forward passes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import MANIFEST, RunDir, is_complete, load_dataset_dir, record_config, require, write_manifest
from .config import DPOTrainingConfig, ModelConfig, PipelineConfig, to_dict
from .training_data import PAIR_COLUMNS, _check_pairs, load_pairs, split_eval, to_trl_format
from .training_logs import CURVES_PNG, StepTimer, plot_training_curves, write_training_log
from .trl_patches import fast_tokenizer_fingerprint, score_only_completions_on_cpu

logger = logging.getLogger(__name__)

REFERENCES = ("base", "stage1")
PRECISIONS = ("fp32", "bf16", "fp16")
CHECKPOINTS = "checkpoints"
_SIGNATURE = "run_signature.json"
__all__ = ["TrainResult", "build_dpo_trainer", "train_dpo", "run_dpo_stage", "plot_training_curves", "load_pairs",
           "to_trl_format", "split_eval", "dpo_config", "lora_config", "REFERENCES"]


@dataclass
class TrainResult:
    adapter_dir: Path
    log_history: list[dict[str, Any]]
    metrics: dict[str, Any]
    seconds_per_step: float | None
    tokens_per_second: float | None
    model: Any = field(default=None, repr=False)  # the trained PeftModel (in memory; not saved beyond the adapter)


# --------------------------------------------------------------------------------------------------------------
# Configs


def lora_config(train_cfg: DPOTrainingConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=train_cfg.lora_r, lora_alpha=train_cfg.lora_alpha, lora_dropout=train_cfg.lora_dropout, bias="none",
        target_modules=list(train_cfg.lora_target_modules), task_type="CAUSAL_LM",
    )


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def _check_precision(train_cfg: DPOTrainingConfig) -> None:
    if train_cfg.precision not in PRECISIONS:
        raise ValueError(f"dpo precision must be one of {PRECISIONS}, got {train_cfg.precision!r}")


def dpo_config(train_cfg: DPOTrainingConfig, output_dir: str | Path, has_eval: bool) -> Any:
    """Our ``DPOTrainingConfig`` -> TRL ``DPOConfig`` (checkpoints in ``output_dir``)."""
    from trl import DPOConfig

    _check_precision(train_cfg)
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
        use_cpu=_on_cpu(),
        gradient_checkpointing=train_cfg.gradient_checkpointing,
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


def _device() -> str:
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # one GPU per process under accelerate/torchrun


def training_model_config(model_cfg: ModelConfig, train_cfg: DPOTrainingConfig) -> ModelConfig:
    """The model config as trained: ``load_in_4bit`` asks for 4-bit weights (QLoRA), and a model whose dtype is
    'auto' is loaded in the training precision (the paper's fp32 means fp32 weights, not bf16 ones on a GPU; fp16
    mixed precision keeps fp32 master weights). An explicit model dtype wins."""
    _check_precision(train_cfg)
    changes: dict[str, Any] = {}
    if train_cfg.load_in_4bit and not model_cfg.quantization:
        changes["quantization"] = "4bit"
    if model_cfg.dtype in (None, "auto"):
        changes["dtype"] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float32"}[train_cfg.precision]
    return dataclasses.replace(model_cfg, **changes) if changes else model_cfg


def _warn_if_lora_differs(saved: Any, train_cfg: DPOTrainingConfig, adapter_dir: Any) -> None:
    """Stage 2c continues the stage-1 adapter, so its LoRA shape comes from the adapter, not from the config."""
    wanted = {"r": train_cfg.lora_r, "lora_alpha": train_cfg.lora_alpha, "lora_dropout": train_cfg.lora_dropout,
              "target_modules": set(train_cfg.lora_target_modules)}
    found = {"r": saved.r, "lora_alpha": saved.lora_alpha, "lora_dropout": saved.lora_dropout,
             "target_modules": set(saved.target_modules or ())}
    differing = sorted(key for key in wanted if wanted[key] != found[key])
    if differing:
        logger.warning("continuing %s with its own LoRA settings; the config's %s differ and are ignored",
                       adapter_dir, differing)


def _load_stage1_weights(model: Any, adapter_dir: Path) -> None:
    """Copy the stage-1 adapter's weights into the freshly created ``default`` adapter."""
    from peft import load_peft_weights, set_peft_model_state_dict

    result = set_peft_model_state_dict(model, load_peft_weights(str(adapter_dir), device="cpu"), "default")
    missing = [key for key in result.missing_keys if ".default" in key and "lora_" in key]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"stage-1 adapter {adapter_dir} does not fit the model: missing {missing[:3]}, "
                           f"unexpected {list(result.unexpected_keys)[:3]}")


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

    from .models import load_model

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if init_adapter is None and reference != "base":
        raise ValueError("reference='stage1' needs init_adapter (the stage-1 adapter to continue)")
    if eval_pairs is None:
        pairs, eval_pairs = split_eval(pairs, train_cfg.eval_fraction, train_cfg.seed)
    train_dataset = to_trl_format(pairs)
    eval_dataset = to_trl_format(eval_pairs) if eval_pairs is not None else None

    model, tokenizer = load_model(training_model_config(model_cfg, train_cfg), device=_device())
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
        _warn_if_lora_differs(peft_config, train_cfg, init_adapter)
    else:
        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
        _warn_if_lora_differs(model.peft_config["default"], train_cfg, init_adapter)

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
        _load_stage1_weights(trainer.model, Path(init_adapter))
    names = set(trainer.model.peft_config)
    expected = {"default", "ref"} if reference == "stage1" else {"default"}
    if names != expected:  # e.g. a TRL upgrade that changes how the reference is built
        raise RuntimeError(f"unexpected adapters {sorted(names)} for reference={reference!r}")
    return trainer


# --------------------------------------------------------------------------------------------------------------
# Training


def _run_signature(pairs: Any, model_cfg: ModelConfig, train_cfg: DPOTrainingConfig,
                   init_adapter: Path | None, reference: str, eval_pairs: Any | None) -> str:
    """What a checkpoint was made from: a crashed run resumes only from checkpoints of the same inputs."""
    digest = hashlib.sha256()
    blob = {"model": to_dict(model_cfg), "train": to_dict(train_cfg), "reference": reference,
            "init_adapter": str(init_adapter) if init_adapter else None}
    digest.update(json.dumps(blob, sort_keys=True, default=str).encode())
    for data in (pairs, eval_pairs):
        if data is not None:
            digest.update(json.dumps(data.select_columns(list(PAIR_COLUMNS)).to_list(), sort_keys=True).encode())
    if init_adapter is not None:
        for path in sorted(Path(init_adapter).glob("adapter_model.*")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _last_checkpoint(folder: Path, signature: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if last is None:
        return None
    marker = folder / _SIGNATURE
    recorded = json.loads(marker.read_text()).get("signature") if marker.is_file() else None
    if recorded != signature:
        logger.warning("discarding checkpoints in %s: they were made from other inputs or settings", folder)
        shutil.rmtree(folder)
        return None
    return last


def _save_adapter(trainer: Any, adapter_dir: Path) -> None:
    """Save only the trained ``default`` adapter (never TRL's frozen ``ref`` copy)."""
    if trainer.is_fsdp_enabled or (trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin
                                   and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3):
        trainer.save_model(str(adapter_dir))  # gathers sharded weights; saves every adapter
        if trainer.is_world_process_zero():
            shutil.rmtree(adapter_dir / "ref", ignore_errors=True)
        return
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(str(adapter_dir), selected_adapters=["default"])


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
    _check_pairs(pairs)
    ckpt_dir = output_dir / CHECKPOINTS
    signature = _run_signature(pairs, model_cfg, train_cfg, init_adapter, reference, eval_pairs)

    timer = StepTimer()
    trainer = build_dpo_trainer(pairs, model_cfg, train_cfg, output_dir, init_adapter, reference,
                                eval_pairs=eval_pairs, callbacks=[timer, *(callbacks or [])])
    # Under accelerate/torchrun only the main process may discard stale checkpoints; the others wait for it.
    if trainer.is_world_process_zero():
        resume = _last_checkpoint(ckpt_dir, signature)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / _SIGNATURE).write_text(json.dumps({"signature": signature}))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        resume = _last_checkpoint(ckpt_dir, signature)
    if resume:
        logger.warning("resuming DPO training from %s", resume)
    output = trainer.train(resume_from_checkpoint=resume)

    metrics = dict(output.metrics)
    history = list(trainer.state.log_history)
    num_tokens = next((entry["num_tokens"] for entry in reversed(history) if "num_tokens" in entry), None)
    timing = timer.summary(num_tokens)
    last = next((entry for entry in reversed(history) if "rewards/margins" in entry), {})
    metrics.update(timing)
    metrics.update({
        "global_step": trainer.state.global_step,
        "resumed_from": resume,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "n_train_pairs": len(trainer.train_dataset),
        "n_eval_pairs": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "reference": reference,
        "init_adapter": str(init_adapter) if init_adapter else None,
        "last_rewards/margins": last.get("rewards/margins"),
        "last_rewards/accuracies": last.get("rewards/accuracies"),
    })
    if trainer.eval_dataset is not None:
        # the final evaluation: the one logged at the last step when there is one (and no best checkpoint was
        # reloaded), else a new pass over the held-out pairs
        final = [entry for entry in history if "eval_loss" in entry and entry.get("step") == trainer.state.global_step]
        reloaded = trainer.state.best_model_checkpoint is not None and trainer.args.load_best_model_at_end
        metrics.update({k: v for k, v in final[-1].items() if k.startswith("eval_")} if final and not reloaded
                       else trainer.evaluate())

    _save_adapter(trainer, output_dir)
    if trainer.is_world_process_zero():
        csv_path = write_training_log(history, output_dir, metrics)
        plot_training_curves({output_dir.name: csv_path}, output_dir / CURVES_PNG)
        if not keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    return TrainResult(
        adapter_dir=output_dir, log_history=history, metrics=metrics,
        seconds_per_step=timing["seconds_per_step"], tokens_per_second=timing["tokens_per_second"],
        model=trainer.accelerator.unwrap_model(trainer.model),
    )


# --------------------------------------------------------------------------------------------------------------
# Pipeline stage


def run_dpo_stage(config: PipelineConfig, run_dir: Path | str, stage: str = "dpo", force: bool = False) -> Path:
    """Stage 1c (``stage='dpo'``) or 2c (``stage='dpo_further'``) on a run directory; returns the adapter folder.

    Skips when the adapter is complete for this config (unless ``force``); refuses when its input is missing or was
    made by another config.
    """
    run = RunDir(run_dir)
    if stage == "dpo":
        input_dir, input_stage, output = run.pairs, "pairs", run.dpo_adapter
        train_cfg, init_adapter, reference = config.dpo, None, "base"
        needed_by = "DPO (stage 1c)"
    elif stage == "dpo_further":
        input_dir, input_stage, output = run.selfgen_pairs, "selfgen", run.dpo_further_adapter
        train_cfg, init_adapter = config.dpo_further, run.dpo_adapter
        reference = config.dpo_further.stage2_reference
        needed_by = "further DPO (stage 2c)"
    else:
        raise ValueError(f"stage must be 'dpo' or 'dpo_further', got {stage!r}")

    main = _is_main_process()
    if not force and is_complete(output, config, stage):
        if main:
            print(f"[{stage}] complete, skipping: {output} (use --force to retrain)")
        return output
    require(input_dir, config, input_stage, needed_by=needed_by)
    if init_adapter is not None:
        require(init_adapter, config, "dpo", needed_by=needed_by)
    if stage == "dpo_further" and len(load_dataset_dir(input_dir)) == 0:
        return _carry_over_stage1_adapter(config, run, output, input_dir, main)
    pairs = load_pairs(input_dir)

    # A finished adapter of another config (or a forced re-run) is replaced as a whole; an unfinished folder keeps
    # its checkpoints so that train_dpo can resume.
    if main:
        if force:
            shutil.rmtree(output, ignore_errors=True)
        else:
            (output / MANIFEST).unlink(missing_ok=True)  # stale "finished" marker of another config
        record_config(run, config)
        print(f"[{stage}] {len(pairs)} pairs from {input_dir} -> {output} (reference: {reference})")
    result = train_dpo(pairs, config.model, train_cfg, output, init_adapter=init_adapter, reference=reference)
    if main:
        write_manifest(output, config, stage, extra={
            "input": str(input_dir), "n_pairs": len(pairs), "reference": reference,
            "init_adapter": str(init_adapter) if init_adapter else None,
            "metrics": result.metrics,
        })
        print(f"[{stage}] done: {result.metrics.get('global_step')} steps, "
              f"{result.seconds_per_step or float('nan'):.2f} s/step, adapter in {output}")
    return output


def _carry_over_stage1_adapter(config: PipelineConfig, run: RunDir, output: Path, input_dir: Path, main: bool
                               ) -> Path:
    """Stage 2c with no self-generated pairs (a model that never passed twice on any prompt): there is nothing to
    learn from, so ``-dpo-further`` is the ``-dpo`` adapter unchanged. Said loudly and recorded in the manifest
    (``skipped_training``), so a report can never present it as a trained model."""
    if main:
        shutil.rmtree(output, ignore_errors=True)
        shutil.copytree(run.dpo_adapter, output, ignore=shutil.ignore_patterns(MANIFEST, "checkpoints"))
        record_config(run, config)
        write_manifest(output, config, "dpo_further", extra={
            "input": str(input_dir), "n_pairs": 0, "skipped_training": True,
            "init_adapter": str(run.dpo_adapter), "reference": config.dpo_further.stage2_reference,
        })
        print(f"[dpo_further] WARNING: {input_dir} has no pairs (no prompt got two distinct passing solutions); "
              f"-dpo-further = the -dpo adapter unchanged -> {output}")
    return output


def _is_main_process() -> bool:
    """Rank 0 (or no launcher). Read from the environment: the distributed state does not exist yet here."""
    return int(os.environ.get("RANK", "0")) == 0
