"""The training runner every method shares: checkpoints and resume, the final evaluation, the training log and its
curves, and saving only the trained adapter.

A method (``common/training/methods/``) builds a ready TRL trainer and a signature of its inputs. The runner does the
rest, the same way for every method:

* checkpoints go to ``<adapter>/checkpoints``, beside a ``run_signature.json``. A crashed run restarted with the
  same inputs resumes from the last checkpoint. Checkpoints of other inputs are discarded, never resumed.
* after training, the held-out evaluation (when there is one), ``training_log.csv``/``.json`` and
  ``training_curves.png`` (``common.training.logs``);
* only the trained ``default`` adapter is saved, never TRL's frozen ``ref`` copy; checkpoints are removed unless
  asked to keep them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from common.training.logs import CURVES_PNG, StepTimer, plot_training_curves, write_training_log

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
_SIGNATURE = "run_signature.json"


@dataclass
class TrainResult:
    adapter_dir: Path
    log_history: list[dict[str, Any]]
    metrics: dict[str, Any]
    seconds_per_step: float | None
    tokens_per_second: float | None
    model: Any = field(default=None, repr=False)  # the trained PeftModel (in memory; not saved beyond the adapter)


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def device() -> str:
    """The device of this process: one GPU per process under accelerate/torchrun."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def run_signature(settings: Mapping[str, Any], datasets: Iterable[Any], columns: Iterable[str],
                  init_adapter: Path | None) -> str:
    """What a checkpoint was made from (settings, the training rows, the adapter it continues): a crashed run
    resumes only from checkpoints of the same inputs."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    for data in datasets:
        if data is not None:
            digest.update(json.dumps(data.select_columns(list(columns)).to_list(), sort_keys=True).encode())
    if init_adapter is not None:
        for path in sorted(Path(init_adapter).glob("adapter_model.*")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def last_checkpoint(folder: Path, signature: str) -> str | None:
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


def save_adapter(trainer: Any, adapter_dir: Path) -> None:
    """Save only the trained ``default`` adapter (never TRL's frozen ``ref`` copy)."""
    if trainer.is_fsdp_enabled:
        # Every rank takes part in gathering the sharded (DTensor) weights into full tensors; rank 0 then saves
        # only the trained adapter from them. (accelerate's get_state_dict hands FSDP2 DTensors back unchanged on
        # a CPU launch, and PEFT cannot save those.)
        from torch.distributed.tensor import DTensor

        state = {name: tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
                 for name, tensor in trainer.model.state_dict().items()}
        if trainer.is_world_process_zero():
            model = trainer.accelerator.unwrap_model(trainer.model)
            model.save_pretrained(str(adapter_dir), state_dict=state, selected_adapters=["default"])
        return
    if (trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin
            and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3):
        trainer.save_model(str(adapter_dir))  # gathers sharded weights; saves every adapter
        if trainer.is_world_process_zero():
            shutil.rmtree(adapter_dir / "ref", ignore_errors=True)
        return
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(str(adapter_dir), selected_adapters=["default"])


def run_training(trainer: Any, output_dir: Path, signature: str, timer: StepTimer, *, keep_checkpoints: bool = False,
                 label: str = "training") -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """Train ``trainer`` (resuming from a checkpoint of the same ``signature``), evaluate, save the adapter and the
    logs in ``output_dir``. Returns (metrics, log history, the checkpoint resumed from)."""
    ckpt_dir = output_dir / CHECKPOINTS
    # Under accelerate/torchrun only the main process may discard stale checkpoints; the others wait for it.
    if trainer.is_world_process_zero():
        resume = last_checkpoint(ckpt_dir, signature)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / _SIGNATURE).write_text(json.dumps({"signature": signature}))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        resume = last_checkpoint(ckpt_dir, signature)
    if resume:
        logger.warning("resuming %s from %s", label, resume)
    output = trainer.train(resume_from_checkpoint=resume)

    metrics = dict(output.metrics)
    history = list(trainer.state.log_history)
    num_tokens = next((entry["num_tokens"] for entry in reversed(history) if "num_tokens" in entry), None)
    metrics.update(timer.summary(num_tokens))
    metrics.update({
        "global_step": trainer.state.global_step,
        "resumed_from": resume,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        # how it ran: a manifest says whether the adapter came from one process or a sharded (FSDP) launch
        "world_size": trainer.args.world_size,
        "distributed_type": "FSDP" if trainer.is_fsdp_enabled else str(trainer.accelerator.distributed_type).rsplit(
            ".", 1)[-1],
        "n_train_rows": len(trainer.train_dataset),
        "n_eval_rows": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
    })
    if trainer.eval_dataset is not None:
        # the final evaluation: the one logged at the last step when there is one (and no best checkpoint was
        # reloaded), else a new pass over the held-out rows
        final = [entry for entry in history if "eval_loss" in entry and entry.get("step") == trainer.state.global_step]
        reloaded = trainer.state.best_model_checkpoint is not None and trainer.args.load_best_model_at_end
        metrics.update({k: v for k, v in final[-1].items() if k.startswith("eval_")} if final and not reloaded
                       else trainer.evaluate())

    save_adapter(trainer, output_dir)
    if trainer.is_world_process_zero():
        csv_path = write_training_log(history, output_dir, metrics)
        plot_training_curves({output_dir.name: csv_path}, output_dir / CURVES_PNG)
        if not keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    return metrics, history, resume
