"""LoRA DPO on CPU with the embedded Gemma-3 270M: seconds per step, tokens/s, and the reward margin rising.

Builds ~16 MI preference pairs from real MBPP train tasks (the reference solution and its behaviour-preserving
rewrites from ``common.rewrite``, higher-MI one chosen; prompts in the completion style of the base model), trains
a fresh LoRA adapter for one epoch with ``common.training.train_dpo`` and prints the per-step log, the final
margin/accuracy over all training pairs (before training the margin is exactly 0: LoRA's B matrices start at zero,
so the policy equals the reference) and the timing. Paper LoRA settings (r=16, alpha=32, all projections), fp32,
no gradient checkpointing.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_dpo_step.py [--pairs 16] [--batch 2] [--lr 1e-4]

Writes the adapter, its training log/curves and ``bench_dpo_step.md`` (the table for the README) under --out.
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.config import DPOTrainingConfig, load_model_config  # noqa: E402
from common.tasks.mbpp import load_mbpp  # noqa: E402
from common.signals.mi import maintainability_index  # noqa: E402
from common.prompting.templates import build_prompt, completion_target, render_prompt  # noqa: E402

DEFAULT_MBPP = REPO.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"


def candidate_codes(task: dict) -> list[str]:
    """The reference and its rewrites (or, without common.rewrite, the reference with and without a docstring)."""
    code = task["code"].replace("\r\n", "\n").strip("\n")
    try:
        from common.rewrite import generate_variants

        return [code] + [v.code for v in generate_variants(code, max_variants=6, seed=0, task_text=task["text"])]
    except ImportError:
        tree = ast.parse(code)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not ast.get_docstring(node):
                node.body.insert(0, ast.Expr(ast.Constant(task["text"])))
        return [code, ast.unparse(tree)]


def build_pairs(tasks, tokenizer, style: str, n_pairs: int, max_length: int, min_margin: float = 1.0):
    from datasets import Dataset

    rows = []
    for task in tasks:
        scored = [(mi, code) for code in candidate_codes(task) if (mi := maintainability_index(code)) is not None]
        if len(scored) < 2:
            continue
        (low, rejected), (high, chosen) = min(scored), max(scored)
        if high - low < min_margin:
            continue
        prompt = build_prompt(task, style)
        text = render_prompt(tokenizer, prompt)
        longest = max(completion_target(chosen, style), completion_target(rejected, style), key=len)
        if len(tokenizer(text + longest)["input_ids"]) + 1 > max_length:  # +1: the EOS TRL appends
            continue
        rows.append({"prompt": prompt, "chosen": completion_target(chosen, style),
                     "rejected": completion_target(rejected, style), "task_id": task["task_id"],
                     "chosen_mi": high, "rejected_mi": low, "generator": "rewrite"})
        if len(rows) == n_pairs:
            break
    return Dataset.from_list(rows)


def fmt(value, digits=3):
    return "" if value is None or value == "" else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--mbpp", default=os.environ.get("MBPP_PATH") or (str(DEFAULT_MBPP) if DEFAULT_MBPP.is_file()
                                                                         else "demo"))
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="default: one epoch (pairs / batch)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-dpo-step"))
    args = parser.parse_args(argv)

    import torch

    from common.models.loading import load_tokenizer
    from common.prompting.style import prompt_style
    from common.training.methods.dpo import train_dpo

    model_cfg = load_model_config(args.model)
    tokenizer = load_tokenizer(model_cfg)
    style = prompt_style(model_cfg, tokenizer)
    tasks = load_mbpp("train", source=args.mbpp).to_list()
    pairs = build_pairs(tasks, tokenizer, style, args.pairs, args.max_length)
    if len(pairs) < args.batch:
        raise SystemExit(f"only {len(pairs)} pairs could be built from {args.mbpp}")
    lengths = [len(tokenizer(render_prompt(tokenizer, row["prompt"]) + row[key])["input_ids"])
               for row in pairs for key in ("chosen", "rejected")]
    steps = args.steps or max(1, len(pairs) // args.batch)
    train_cfg = DPOTrainingConfig(
        learning_rate=args.lr, beta=args.beta, num_train_epochs=1, max_steps=steps,
        per_device_train_batch_size=args.batch, gradient_accumulation_steps=1, max_length=args.max_length,
        precision="fp32", gradient_checkpointing=False, logging_steps=1, seed=args.seed,
    )
    out = Path(args.out)
    pairs.save_to_disk(str(out / "pairs"))
    print(f"{len(pairs)} pairs from {args.mbpp} (tasks {pairs['task_id'][0]}..{pairs['task_id'][-1]}), "
          f"{style} prompts, sequences of {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}); "
          f"{steps} steps of {args.batch} pairs, lr {args.lr}, torch threads {torch.get_num_threads()}")

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    # eval_pairs = the training pairs: the final evaluation measures the margin over all of them
    result = train_dpo(pairs, model_cfg, train_cfg, out / "adapter", eval_pairs=pairs)
    wall = time.perf_counter() - started

    columns = ["step", "loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected",
               "step_time"]
    rows = [entry for entry in result.log_history if "loss" in entry and "train_runtime" not in entry]
    m = result.metrics
    times = [entry["step_time"] for entry in rows[1:] if "step_time" in entry] or [result.seconds_per_step]
    lines = [
        f"Gemma-3 270M (`{args.model}`), LoRA r=16 on all projections, fp32, CPU ({os.cpu_count()} cores, "
        f"torch {torch.__version__}); {len(pairs)} MBPP train pairs (reference vs rewrite, higher MI chosen), "
        f"{lengths and min(lengths)}-{max(lengths)} tokens per sequence; batch {args.batch}, lr {args.lr}, "
        f"beta {args.beta}.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for entry in rows:
        lines.append("| " + " | ".join(fmt(entry.get(c), 2 if c == "step_time" else 4) for c in columns) + " |")
    lines += [
        "",
        f"- margin over all {len(pairs)} training pairs: 0 before training (policy = reference), "
        f"{fmt(m.get('eval_rewards/margins'), 4)} after {m['global_step']} steps "
        f"(reward accuracy {fmt(m.get('eval_rewards/accuracies'), 2)}, DPO loss {fmt(m.get('eval_loss'), 4)})",
        f"- seconds per step: median {fmt(statistics.median(times), 1)}, fastest {fmt(min(times), 1)}, mean "
        f"{fmt(result.seconds_per_step, 1)} (steps 2-{m['global_step']}; first step {fmt(m.get('first_step_seconds'), 1)}"
        f"); {fmt(result.tokens_per_second, 1)} tokens/s (chosen + rejected sequences through the policy, all steps); "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other jobs share the 2 cores)",
        f"- wall time of train_dpo (model load, tokenisation, training, final evaluation, saving): {wall:.0f} s",
    ]
    report = "\n".join(lines)
    (out / "bench_dpo_step.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
