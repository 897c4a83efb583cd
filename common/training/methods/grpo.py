"""LoRA GRPO with TRL's ``GRPOTrainer``: stage ``grpo``, online RL on the training tasks. The policy samples
``num_generations`` completions per prompt, the sandbox and MI reward them (``common.training.rewards``), and the
advantage of each completion is its reward relative to its group.

Reference model. ``beta = 0`` (TRL's default and ours): no KL term and no reference model at all (TRL 1.16
``GRPOTrainer.__init__``: ``if self.beta == 0.0: self.ref_model = None``). ``beta > 0``: a new adapter is created by
TRL from ``peft_config``; the model is then a ``PeftModel``, so TRL keeps no reference copy (``elif
is_peft_model(model): self.ref_model = None``) and ``_generate_and_score_completions`` scores the reference under
``use_adapter(model, adapter_name=None)``, i.e. the base model with the adapter disabled. Continuing an adapter
follows ``dpo.py`` (``adapter_setup``): ``reference='base'`` wraps the model with the saved adapter's own
``LoraConfig`` and copies its weights in (reference: still the base model), ``reference='stage1'`` hands TRL a
trainable ``PeftModel``, to which TRL adds a frozen ``ref`` copy when ``beta != 0`` (the reference is then the
continued policy). Only the ``default`` adapter is saved (the runner's ``save_adapter``).

Batch rules of TRL 1.16 (``GRPOConfig.__post_init__``), checked here first with messages naming our config keys:
one generation batch per optimiser step holds ``per_device_train_batch_size * processes *
gradient_accumulation_steps`` completions, which must be whole groups (a multiple of ``num_generations``), and
``num_generations >= 2``. The sampler (``RepeatSampler``) drops a last, incomplete set of prompts every epoch, so
fewer prompts than one generation batch needs would train on nothing: refused too. ``max_length`` is not applied:
TRL 1.16's GRPO has no prompt truncation (MBPP prompts are short); ``max_completion_length`` bounds the rest.

Stopping at the closing code fence. TRL 1.16 cannot take stop strings: ``generation_kwargs`` only build the
``GenerationConfig``, and ``model.generate`` is called without the tokenizer that ``stop_strings`` needs
(transformers raises "we could not locate a tokenizer"); nor does it take a ``StoppingCriteria``. It does read the
model's ``generation_config.eos_token_id`` (all of them end a completion and bound its loss mask). So for
completion-style prompts, whose prompt opens the fence (the first fence the model writes closes it), every token
that *starts* with ```` ``` ```` is added as an end-of-sequence token for the run (Gemma-3: ```` ``` ````, ````
```{ ```` and ```` ▁``` ````); the reward cuts at the fence anyway (``to_completion``). A tokenizer without such a
token (the tiny test tokenizer splits fences) samples up to EOS or ``max_completion_length``. Chat prompts are not
changed: the reply opens its own fence, so a fence token cannot tell the close from the open; instruct models end
with their end-of-turn token.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from common.config import ConfigError, GRPOTrainingConfig, ModelConfig, SandboxConfig, to_dict
from common.training.logs import StepTimer
from common.training.methods._shared import (
    adapter_setup, common_trainer_args, load_adapter_weights, load_training_model, route_tensorboard,
    trainer_callbacks)
from common.training.rewards import COMPONENTS, SandboxReward
from common.training.runner import CHECKPOINTS, TrainResult, run_signature, run_training

logger = logging.getLogger(__name__)

REFERENCES = ("base", "stage1")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")  # GRPOConfig.loss_type, 1.16
PROMPT_COLUMNS = ("prompt", "task")  # what the signature of a run covers
FENCE = "```"


# --------------------------------------------------------------------------------------------------------------
# Prompts


def grpo_prompts(tasks: Any, config: Any) -> Any:
    """The training prompts: one row per task with ``prompt`` (in the model's prompt style, the sampling section's
    system prompt), ``task_id`` and ``task`` (the whole task as JSON: the reward executes its tests)."""
    from datasets import Dataset

    from common.prompting.style import prompt_style
    from common.prompting.templates import build_prompt

    style = prompt_style(config.model)
    rows = []
    for task in tasks:
        task = dict(task)
        if not task.get("test_list"):
            raise ValueError(f"task {task.get('task_id')!r} has no tests: GRPO rewards come from executing them")
        rows.append({"prompt": build_prompt(task, style, config.sampling.system_prompt),
                     "task_id": int(task["task_id"]), "task": json.dumps(task, sort_keys=True, default=str)})
    if not rows:
        raise ValueError("no training tasks for GRPO")
    return Dataset.from_list(rows)


# --------------------------------------------------------------------------------------------------------------
# Config


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def check_grpo_config(train_cfg: GRPOTrainingConfig, n_prompts: int | None = None) -> None:
    """TRL's batch rules (module docstring) as ``ConfigError``s naming the ``grpo`` keys, before any model loads."""
    n, batch, accum = train_cfg.num_generations, train_cfg.per_device_train_batch_size, \
        train_cfg.gradient_accumulation_steps
    if train_cfg.loss_type not in LOSS_TYPES:  # TRL itself only fails at the first loss, after a generation
        raise ConfigError(f"grpo.loss_type must be one of {LOSS_TYPES}, got {train_cfg.loss_type!r}")
    if n < 2:
        raise ConfigError(f"grpo.num_generations must be >= 2 (the advantage compares a completion with the others "
                          f"of its group), got {n}")
    generation = batch * world_size() * accum
    if generation % n:
        raise ConfigError(
            f"grpo: a generation batch (per_device_train_batch_size {batch} x {world_size()} process(es) x "
            f"gradient_accumulation_steps {accum} = {generation} completions) must hold whole groups of "
            f"num_generations={n}: make it a multiple of {n}")
    if n_prompts is not None and n_prompts < generation // n:
        raise ConfigError(f"grpo: one step samples {generation // n} prompt(s) x {n}, but there are only {n_prompts} "
                          "prompt(s): TRL would train on nothing; lower per_device_train_batch_size or "
                          "gradient_accumulation_steps")
    if train_cfg.eval_fraction or train_cfg.early_stopping_patience is not None:
        raise ConfigError("grpo has no held-out evaluation (eval_fraction / early_stopping_patience): evaluate the "
                          "adapter with the evaluate stage")
    if train_cfg.max_completion_length < 1:
        raise ConfigError(f"grpo.max_completion_length must be >= 1, got {train_cfg.max_completion_length}")


def grpo_config(train_cfg: GRPOTrainingConfig, output_dir: str | Path, reward_weights: list[float]) -> Any:
    """Our ``GRPOTrainingConfig`` -> TRL ``GRPOConfig`` (checkpoints in ``output_dir``): the shared arguments plus
    GRPO's own. ``reward_weights``: one per reward function (``SandboxReward.reward_functions``)."""
    from trl import GRPOConfig

    check_grpo_config(train_cfg)
    if train_cfg.padding_free or train_cfg.precompute_ref_log_probs:
        logger.warning("padding_free / precompute_ref_log_probs do not apply to GRPO (online samples) and are ignored")
    return GRPOConfig(
        **common_trainer_args(train_cfg, output_dir, has_eval=False),
        beta=train_cfg.beta,
        loss_type=train_cfg.loss_type,
        num_generations=train_cfg.num_generations,
        max_completion_length=train_cfg.max_completion_length,
        temperature=train_cfg.temperature,
        top_p=train_cfg.top_p,
        reward_weights=list(reward_weights),
        use_vllm=False,  # the CPU path; the GPU preset may switch it on through a later option
        remove_unused_columns=False,  # the reward needs the task column (TRL's default, kept explicit)
    )


def fence_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the tokens whose text starts with a code fence (leading whitespace allowed): the closing fence of a
    completion-style reply, as an end-of-sequence token. Only tokens spelled with two or more backticks are
    decoded, so the scan of a 262k vocabulary stays well under a second."""
    vocab = tokenizer.get_vocab()
    candidates = [i for token, i in vocab.items() if "``" in token and i not in tokenizer.all_special_ids]
    return sorted(i for i in candidates if tokenizer.decode([i]).lstrip(" \t\r\n").startswith(FENCE))


def _stop_at_fence(model: Any, tokenizer: Any) -> None:
    """Add the fence tokens to the model's end-of-sequence ids, where ``GRPOTrainer.__init__`` reads them."""
    fences = fence_token_ids(tokenizer)
    if not fences:
        logger.info("the tokenizer has no token starting with %s: completions stop at EOS or the length limit", FENCE)
        return
    before = model.generation_config.eos_token_id
    eos = [before] if isinstance(before, int) else list(before or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.insert(0, tokenizer.eos_token_id)
    model.generation_config.eos_token_id = eos + [i for i in fences if i not in eos]


# --------------------------------------------------------------------------------------------------------------
# Trainer


def build_grpo_trainer(
    prompts: Any,
    model_cfg: ModelConfig,
    train_cfg: GRPOTrainingConfig,
    output_dir: str | Path,
    reward: SandboxReward,
    init_adapter: str | Path | None = None,
    reference: str = "base",
    callbacks: list[Any] | None = None,
) -> Any:
    """A ready-to-train TRL ``GRPOTrainer`` rewarded by ``reward`` (checkpoints under ``output_dir/checkpoints``);
    the module docstring says how the reference is obtained and when generation stops at the fence."""
    from trl import GRPOTrainer

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    if init_adapter is None and reference != "base":
        raise ValueError("reference='stage1' needs init_adapter (the adapter to continue)")
    check_grpo_config(train_cfg, len(prompts))
    missing = [name for name in PROMPT_COLUMNS if name not in prompts.column_names]
    if missing:
        raise ValueError(f"the GRPO prompts lack columns {missing}: build them with grpo_prompts")
    chat = not isinstance(prompts[0]["prompt"], str)
    model, tokenizer = load_training_model(model_cfg, train_cfg, chat, what="GRPO prompts")
    generation_config, eos_before = model.generation_config, model.generation_config.eos_token_id
    if not chat:
        _stop_at_fence(model, tokenizer)
    init_adapter = Path(init_adapter) if init_adapter is not None else None
    model, peft_config = adapter_setup(model, train_cfg, init_adapter, reference)
    if train_cfg.beta == 0 and init_adapter is not None and reference != "base":
        logger.info("grpo.beta is 0: no KL term, so reference=%r has no effect", reference)

    reward_funcs, weights = reward.reward_functions()
    args = grpo_config(train_cfg, Path(output_dir) / CHECKPOINTS, weights)
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward_funcs, args=args, train_dataset=prompts, processing_class=tokenizer,
        peft_config=peft_config, callbacks=trainer_callbacks(train_cfg, callbacks),
    )
    # TRL copied the end-of-sequence ids (trainer.eos_token_ids, its generation kwargs) and overrides the model's
    # generation config with them while it samples, so the model itself goes back to stopping at EOS only.
    generation_config.eos_token_id = eos_before
    if init_adapter is not None and reference == "base":
        load_adapter_weights(trainer.model, init_adapter)
    names = set(trainer.model.peft_config)
    expected = {"default", "ref"} if reference == "stage1" and train_cfg.beta != 0 else {"default"}
    if trainer.ref_model is not None or names != expected:  # e.g. a TRL upgrade that builds the reference otherwise
        raise RuntimeError(f"unexpected GRPO reference: adapters {sorted(names)}, ref_model "
                           f"{type(trainer.ref_model).__name__} for reference={reference!r}, beta={train_cfg.beta}")
    route_tensorboard(trainer, output_dir)
    return trainer


# --------------------------------------------------------------------------------------------------------------
# Training


def _run_signature(prompts: Any, model_cfg: ModelConfig, train_cfg: GRPOTrainingConfig, init_adapter: Path | None,
                   reference: str, sandbox_cfg: SandboxConfig) -> str:
    settings = {"method": "grpo", "model": to_dict(model_cfg), "train": to_dict(train_cfg), "reference": reference,
                "sandbox": to_dict(sandbox_cfg), "init_adapter": str(init_adapter) if init_adapter else None}
    return run_signature(settings, (prompts,), PROMPT_COLUMNS, init_adapter)


def train_grpo(
    prompts: Any,
    model_cfg: ModelConfig,
    train_cfg: GRPOTrainingConfig,
    output_dir: str | Path,
    init_adapter: str | Path | None = None,
    reference: str = "base",
    *,
    sandbox_cfg: SandboxConfig | None = None,
    callbacks: list[Any] | None = None,
    keep_checkpoints: bool = False,
) -> TrainResult:
    """Train a LoRA adapter with GRPO on ``prompts`` (``grpo_prompts``) and save it, with its training log and
    curves, in ``output_dir``. Rewards: the sandbox (``sandbox_cfg`` limits) and MI, one executor for the run.
    Checkpoints and resume as in ``train_dpo``."""
    output_dir = Path(output_dir)
    init_adapter = Path(init_adapter) if init_adapter is not None else None
    sandbox_cfg = sandbox_cfg or SandboxConfig()
    check_grpo_config(train_cfg, len(prompts))
    signature = _run_signature(prompts, model_cfg, train_cfg, init_adapter, reference, sandbox_cfg)
    timer = StepTimer()
    reward = SandboxReward.from_config(train_cfg, sandbox_cfg)
    try:
        trainer = build_grpo_trainer(prompts, model_cfg, train_cfg, output_dir, reward, init_adapter, reference,
                                     callbacks=[timer, *(callbacks or [])])
        metrics, history, _ = run_training(trainer, output_dir, signature, timer, keep_checkpoints=keep_checkpoints,
                                           label="GRPO training")
    finally:
        reward.close()
    keys = ["reward", "reward_std", "frac_reward_zero_std", "kl", *(f"rewards/{name}/mean" for name in COMPONENTS)]
    last: dict[str, Any] = {}
    for entry in history:
        last.update({key: entry[key] for key in keys if key in entry})
    metrics.update({"reference": reference, "init_adapter": str(init_adapter) if init_adapter else None,
                    "sandbox_executions": reward.executions, **{f"last_{key}": last.get(key) for key in keys}})
    model = trainer.accelerator.unwrap_model(trainer.model)
    return TrainResult(adapter_dir=output_dir, log_history=history, metrics=metrics,
                       seconds_per_step=metrics["seconds_per_step"], tokens_per_second=metrics["tokens_per_second"],
                       model=model)
