"""The adapter stages (``dpo``, ``dpo-further``): train a LoRA adapter on the pairs of an input stage.

One function serves every adapter stage; its declaration (``common/pipeline/stages.py``) says which method trains
(``params.method``), which config section holds the method's settings (``params.section``), where the pairs come from
(input ``pairs``) and whether an earlier adapter is continued (input ``init_adapter``). Adding a method is one entry
in ``METHODS`` plus its module in ``common/training/methods/``.

A continued adapter with no pairs to learn from (a model that never passed twice on a prompt during
self-generation) is carried over unchanged. That is said loudly and recorded in the manifest (``skipped_training``),
so a report can never present it as a trained model.
"""

from __future__ import annotations

import shutil
from typing import Any, Callable

from common.pipeline.artifacts import MANIFEST, load_dataset_dir
from common.preference.trl_format import load_pairs
from common.training.methods.dpo import train_dpo

# method name -> fn(pairs, model_cfg, train_cfg, output_dir, init_adapter=..., reference=...) -> TrainResult
METHODS: dict[str, Callable[..., Any]] = {"dpo": train_dpo}


def train_adapter(ctx: Any) -> dict[str, Any]:
    method, section = ctx.params["method"], ctx.params["section"]
    train_cfg = getattr(ctx.config, section)
    pairs_dir = ctx.input("pairs")
    init_adapter = ctx.inputs.get("init_adapter")
    # A new adapter is always compared with the base model; a continued one with the reference its section names.
    reference = train_cfg.stage2_reference if init_adapter is not None else "base"
    output = ctx.output
    if init_adapter is not None and len(load_dataset_dir(pairs_dir)) == 0:
        return _carry_over(ctx, init_adapter, pairs_dir, reference)
    pairs = load_pairs(pairs_dir)
    # A forced re-run starts from scratch; otherwise an unfinished folder keeps its checkpoints so training resumes.
    if ctx.force and ctx.main_process:
        shutil.rmtree(output, ignore_errors=True)
    ctx.log(f"{method}: {len(pairs)} pairs from {pairs_dir} -> {output} (reference: {reference})")
    result = METHODS[method](pairs, ctx.config.model, train_cfg, output, init_adapter=init_adapter,
                             reference=reference)
    ctx.log(f"done: {result.metrics.get('global_step')} steps, {result.seconds_per_step or float('nan'):.2f} s/step, "
            f"adapter in {output}")
    return {"method": method, "n_pairs": len(pairs), "reference": reference,
            "init_adapter": str(init_adapter) if init_adapter else None, "metrics": result.metrics}


def _carry_over(ctx: Any, init_adapter: Any, pairs_dir: Any, reference: str) -> dict[str, Any]:
    if ctx.main_process:
        shutil.rmtree(ctx.output, ignore_errors=True)
        shutil.copytree(init_adapter, ctx.output, ignore=shutil.ignore_patterns(MANIFEST, "checkpoints"))
    continued = ctx.input_manifests["init_adapter"]["stage"]
    ctx.log(f"WARNING: {pairs_dir} has no pairs (no prompt got two distinct passing solutions); "
            f"{ctx.stage.name} = the {continued} adapter unchanged -> {ctx.output}")
    return {"n_pairs": 0, "skipped_training": True, "init_adapter": str(init_adapter), "reference": reference}
