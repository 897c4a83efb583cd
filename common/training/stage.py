"""The adapter stages (``dpo``, ``dpo-further``, ``sft``, ``sft-dpo``, ``kto``, ``kto-sft``, ``grpo``): train a LoRA
adapter on the artifact of an input stage.

One function serves every adapter stage; its declaration (``common/pipeline/stages.py``) says which method trains
(``params.method``), which config section holds the method's settings (``params.section``), which input holds the
training data (``params.data``: pairs, singles, targets or tasks), whether an earlier adapter is continued (input
``init_adapter``) and, for a preference loss on a continued adapter, its reference (``params.reference``; else the
section's ``stage2_reference``). Adding a method is one entry in ``METHODS`` plus its module in
``common/training/methods/``.

A continued adapter with no pairs to learn from (a model that never passed twice on a prompt during
self-generation) is carried over unchanged. That is said loudly and recorded in the manifest (``skipped_training``),
so a report can never present it as a trained model.
"""

from __future__ import annotations

import shutil
from typing import Any, Callable

from common.pipeline.artifacts import MANIFEST, load_dataset_dir
from common.preference.trl_format import load_pairs, load_singles, load_targets
from common.training.methods.dpo import train_dpo
from common.training.methods.grpo import grpo_prompts, train_grpo
from common.training.methods.kto import train_kto
from common.training.methods.sft import train_sft

# method name -> fn(data, model_cfg, train_cfg, output_dir, init_adapter=..., reference=..., **extra) -> TrainResult
METHODS: dict[str, Callable[..., Any]] = {"dpo": train_dpo, "sft": train_sft, "kto": train_kto, "grpo": train_grpo}
# params.data -> how that input's artifact is loaded
LOADERS: dict[str, Callable[[Any], Any]] = {"pairs": load_pairs, "singles": load_singles, "targets": load_targets}


def train_adapter(ctx: Any) -> dict[str, Any]:
    method, section, role = ctx.params["method"], ctx.params["section"], ctx.params["data"]
    train_cfg = getattr(ctx.config, section)
    data_dir = ctx.input(role)
    init_adapter = ctx.inputs.get("init_adapter")
    # A new adapter is compared with the base model; a continued one with what its declaration or section names.
    reference = "base" if init_adapter is None else ctx.params.get("reference", train_cfg.stage2_reference)
    output = ctx.output
    extra: dict[str, Any] = {}
    if role == "tasks":  # online RL: the prompts (in the model's style) with their tests; the sandbox rewards
        data = grpo_prompts(ctx.input_dataset("tasks"), ctx.config)
        extra["sandbox_cfg"] = ctx.config.sandbox
    else:
        if init_adapter is not None and len(load_dataset_dir(data_dir)) == 0:
            return _carry_over(ctx, init_adapter, data_dir, reference)
        data = LOADERS[role](data_dir)
    # A forced re-run starts from scratch; otherwise an unfinished folder keeps its checkpoints so training resumes.
    if ctx.force and ctx.main_process:
        shutil.rmtree(output, ignore_errors=True)
    ctx.log(f"{method}: {len(data)} {role} rows from {data_dir} -> {output} (reference: {reference})")
    result = METHODS[method](data, ctx.config.model, train_cfg, output, init_adapter=init_adapter,
                             reference=reference, **extra)
    ctx.log(f"done: {result.metrics.get('global_step')} steps, {result.seconds_per_step or float('nan'):.2f} s/step, "
            f"adapter in {output}")
    return {"method": method, f"n_{role}": len(data), "reference": reference,
            "init_adapter": str(init_adapter) if init_adapter else None, "metrics": result.metrics}


def _carry_over(ctx: Any, init_adapter: Any, pairs_dir: Any, reference: str) -> dict[str, Any]:
    if ctx.main_process:
        shutil.rmtree(ctx.output, ignore_errors=True)
        shutil.copytree(init_adapter, ctx.output, ignore=shutil.ignore_patterns(MANIFEST, "checkpoints"))
    continued = ctx.input_manifests["init_adapter"]["stage"]
    ctx.log(f"WARNING: {pairs_dir} has no training rows (e.g. no prompt got two distinct passing solutions); "
            f"{ctx.stage.name} = the {continued} adapter unchanged -> {ctx.output}")
    return {"n_pairs": 0, "skipped_training": True, "init_adapter": str(init_adapter), "reference": reference}
