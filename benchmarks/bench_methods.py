"""Seconds per optimiser step of every training method on the embedded Gemma-3 270M on CPU, against DPO (the
paper's method) measured in the same run.

The data comes from the pipeline itself (``configs/study-demo.yaml``: the embedded demo tasks, the ``rewrite``
generator with 2 mutants per task): MI pairs for dpo and sft-dpo, exec-labelled singles for kto, MI targets for sft
and kto-sft, the training prompts for grpo. Every method then trains a fresh adapter for ``--steps`` steps with the
same LoRA settings (the paper's r 16, alpha 32, all projections), fp32, batch ``--batch``, max_length 384;
sft-dpo and kto-sft continue the adapter their first half trained. A step is what each method's trainer calls a
step: DPO scores chosen + rejected with the policy and the reference; KTO a completion and a mismatched KL
completion with both; SFT one completion; GRPO samples ``num_generations`` completions per prompt (up to 128
tokens), runs them in the sandbox and takes a gradient step on them.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_methods.py [--steps 4] [--batch 2]

The first step of each (allocations, first passes) is left out of s/step. Run it on an otherwise idle machine:
other jobs on the same cores inflate every number.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.pipeline.runner import run_stage  # noqa: E402
from common.study.config import load_study  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-methods"))
    args = parser.parse_args()
    out = Path(args.out)

    from common.training.methods.dpo import train_dpo
    from common.training.methods.grpo import grpo_prompts, train_grpo
    from common.training.methods.kto import train_kto
    from common.training.methods.sft import train_sft
    from common.pipeline.artifacts import load_dataset_dir
    from common.preference.trl_format import load_pairs, load_singles, load_targets

    study = load_study(REPO / "configs" / "study-demo.yaml")
    data = {}
    for signal, stage in (("mi", "pairs"), ("exec", "singles"), ("mi", "targets")):
        config = study._load([f"stage1.signal={signal}",
                              f"recipe=[prepare,candidates,{stage}]"])
        for name in ("prepare", "candidates", stage):
            folder = run_stage(name, config, out / f"data-{signal}")
        data[stage] = folder
    config = study.shared_config()
    model = config.model
    tasks = load_dataset_dir(out / "data-mi" / "1_global_dataset_generation" / "prepare")

    def section(name: str):
        return dataclasses.replace(getattr(config, name), max_steps=args.steps, per_device_train_batch_size=(
            4 if name in ("kto", "grpo") else args.batch), gradient_accumulation_steps=1, max_length=384,
            lora_r=16, lora_alpha=32, lora_dropout=0.0, gradient_checkpointing=False, precision="fp32")

    grpo_cfg = dataclasses.replace(section("grpo"), num_generations=4, max_completion_length=128)
    runs = [
        ("dpo", lambda d: train_dpo(load_pairs(data["pairs"]), model, section("dpo"), d), "2 pairs"),
        ("sft", lambda d: train_sft(load_targets(data["targets"]), model, section("sft"), d), "2 targets"),
        ("sft-dpo", lambda d: train_dpo(load_pairs(data["pairs"]), model, section("sft_dpo"), d,
                                        init_adapter=out / "sft", reference="stage1"), "2 pairs"),
        ("kto", lambda d: train_kto(load_singles(data["singles"]), model, section("kto"), d), "4 singles"),
        ("kto-sft", lambda d: train_sft(load_targets(data["targets"]), model, section("kto_sft"), d,
                                        init_adapter=out / "kto"), "2 targets"),
        ("grpo", lambda d: train_grpo(grpo_prompts(tasks, config), model, grpo_cfg, d,
                                      sandbox_cfg=config.sandbox), "1 prompt x 4 completions"),
    ]
    rows = []
    for name, train, batch in runs:
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        result = train(folder)
        rows.append((name, batch, result.seconds_per_step, result.metrics.get("first_step_seconds"),
                     result.tokens_per_second, time.perf_counter() - start))
        print(f"{name}: {result.seconds_per_step:.2f} s/step", flush=True)
    baseline = rows[0][2]
    print(f"\n{model.name}, fp32, LoRA r 16, max_length 384, {args.steps} steps each (first left out)\n")
    print("| method | batch per step | s/step | vs dpo | first step (s) | tokens/s | whole call (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, batch, sps, first, tps, total in rows:
        print(f"| {name} | {batch} | {sps:.2f} | {sps / baseline:.2f}x | {first or float('nan'):.1f} | "
              f"{tps or float('nan'):.0f} | {total:.0f} |")


if __name__ == "__main__":
    main()
