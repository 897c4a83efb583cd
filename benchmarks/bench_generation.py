"""Throughput of sampling Gemma-3 270M on CPU: the reference notebooks' approach vs our batched backend.

Same prompts (real MBPP test prompts, completion style), same sampling parameters (T=0.6, top_p=0.9), same token
budget, one run:

  (a)  reference at batch 1: one ``model.generate`` call per prompt and sample (num_return_sequences=1)
  (a') reference as the notebooks did: one ``model.generate`` call per prompt with num_return_sequences=n
  (b)  ``common.generation`` HF backend: all prompts x n samples through the continuous-batching loop, stopping
       each sample at its closing fence (the real workload)
  (b0) the same with fence stopping off (every sample runs to max_new_tokens: raw decoding throughput)

tokens/s counts generated tokens. The references run until EOS or the budget (they have no fence stop, as in the
notebooks), so samples/s is also printed: it is what a pipeline stage waits for. Correctness: the share of our
samples whose code parses, and their pass rate in the sandbox (common.sandbox) on the task's asserts.

    python benchmarks/bench_generation.py                    # defaults: ~8-10 minutes on 2 idle cores
    python benchmarks/bench_generation.py --prompts-b 32 --max-new-tokens 256 --b0 --json out.json
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common.config import SamplingConfig, load_model_config  # noqa: E402
from common.tasks.mbpp import load_mbpp  # noqa: E402
from common.prompting.templates import completion_prompt  # noqa: E402


def reference_generate(model, tokenizer, prompts, n, args) -> tuple[int, int, float]:
    """The notebooks' loop: per prompt, ``generate`` with num_return_sequences=n. Returns (tokens, samples, s)."""
    import torch

    tokens = samples = 0
    start = time.perf_counter()
    cpu = time.process_time()
    for i, prompt in enumerate(prompts):
        torch.manual_seed(args.seed + i)
        enc = tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=args.temperature, top_p=args.top_p,
                                 max_new_tokens=args.max_new_tokens, num_return_sequences=n,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        # Count tokens up to and including EOS (later positions are padding of finished sequences).
        for row in new.tolist():
            length = len(row)
            if tokenizer.eos_token_id in row:
                length = row.index(tokenizer.eos_token_id) + 1
            tokens += length
        samples += n
    return tokens, samples, time.perf_counter() - start, time.process_time() - cpu


def ours(backend, prompts, n, seed) -> tuple[int, int, float, float, list]:
    start = time.perf_counter()
    cpu = time.process_time()
    outputs = backend.generate(prompts, n, seed)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    tokens = sum(c.num_tokens for group in outputs for c in group)
    return tokens, sum(len(g) for g in outputs), elapsed, cpu, outputs


def correctness(tasks, outputs) -> dict:
    codes = [(task, c.code) for task, group in zip(tasks, outputs) for c in group]
    parses = 0
    for _, code in codes:
        try:
            ast.parse(code)
            parses += 1
        except SyntaxError:
            pass
    result = {"samples": len(codes), "parse_rate": parses / max(1, len(codes))}
    try:
        from common.sandbox import ExecJob, run_batch
    except ImportError:
        return result
    jobs = [ExecJob(code=code, tests=list(task["test_list"]), setup=task.get("test_setup_code") or "")
            for task, code in codes]
    verdicts = run_batch(jobs, timeout=5.0)
    result["pass_rate"] = sum(v.passed for v in verdicts) / max(1, len(verdicts))
    by_task: dict[int, bool] = {}
    for (task, _), verdict in zip(codes, verdicts):
        by_task[task["task_id"]] = by_task.get(task["task_id"], False) or verdict.passed
    result["tasks_with_a_pass"] = f"{sum(by_task.values())}/{len(by_task)}"
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mbpp", default=os.environ.get("MBPP_PATH", str(Path(__file__).resolve().parents[2] /
                                                                         "shared" / "data" / "mbpp" / "mbpp.jsonl")))
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--prompts-a", type=int, default=2, help="prompts for (a), batch 1 (slowest)")
    parser.add_argument("--prompts-a10", type=int, default=1, help="prompts for (a'), n per generate call")
    parser.add_argument("--prompts-b", type=int, default=20, help="prompts for (b) and (b0)")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=None, help="our backend's capacity (default: automatic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--b0", action="store_true", help="also run (b0): no fence stop (slow: every sample runs "
                                                          "to max_new_tokens)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from common.generation.hf import HFBackend
    from common.models.loading import load_model

    tasks = list(load_mbpp("test", source=args.mbpp))
    start = time.perf_counter()
    model, tokenizer = load_model(load_model_config(args.model), device="cpu")
    print(f"model {args.model} loaded in {time.perf_counter() - start:.1f}s; torch threads {torch.get_num_threads()}")
    results: dict = {"model": args.model, "max_new_tokens": args.max_new_tokens, "num_samples": args.num_samples,
                     "threads": torch.get_num_threads()}

    def report(name, tokens, samples, seconds, cpu_seconds):
        # The 1-minute load average after each phase: on a shared machine, other processes' load changes the
        # absolute numbers (and, less, the ratios); a load above the core count means the run was contended.
        load = round(os.getloadavg()[0], 2)
        results[name] = {"tokens": tokens, "samples": samples, "seconds": round(seconds, 1),
                         "tok_s": round(tokens / seconds, 2), "samples_s": round(samples / seconds, 3),
                         "cpu_seconds": round(cpu_seconds, 1), "tok_per_cpu_s": round(tokens / cpu_seconds, 2),
                         "load_avg_1min": load}
        print(f"{name:<40} {tokens:>6} tokens {samples:>4} samples {seconds:7.1f}s  "
              f"{tokens / seconds:7.2f} tok/s  {samples / seconds:6.3f} samples/s  "
              f"{tokens / cpu_seconds:6.2f} tok/cpu-s  (load {load})", flush=True)

    prompts = [completion_prompt(t) for t in tasks]
    report("(a) generate, batch 1", *reference_generate(model, tokenizer, prompts[:args.prompts_a], 1, args))
    report(f"(a') generate, num_return_sequences={args.num_samples}",
           *reference_generate(model, tokenizer, prompts[:args.prompts_a10], args.num_samples, args))

    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size)
    backend = HFBackend(sampling, load_model_config(args.model), model=model, tokenizer=tokenizer)
    tokens, samples, seconds, cpu, outputs = ours(backend, prompts[:args.prompts_b], args.num_samples, args.seed)
    report(f"(b) ours, capacity {backend.capacity}, fence stop", tokens, samples, seconds, cpu)
    stats = {k: round(v, 1) if isinstance(v, float) else v for k, v in backend.stats.items()}
    stats["mean_rows_per_step"] = round(stats["tokens"] / max(1, stats["steps"]), 1)
    results["(b) stats"] = stats
    print(f"(b) stats: {stats}")
    finish = [c.finish_reason for g in outputs for c in g]
    results["(b) stopped_at_fence_or_eos"] = finish.count("stop") / max(1, len(finish))
    if args.b0:
        nostop = HFBackend(SamplingConfig(**{**sampling.__dict__, "stop_at_fence": False}),
                           load_model_config(args.model), model=model, tokenizer=tokenizer)
        nostop._stop_mask[:] = False  # also ignore EOS: every sample decodes max_new_tokens tokens
        report(f"(b0) ours, capacity {nostop.capacity}, no stop",
               *ours(nostop, prompts[:args.prompts_b], args.num_samples, args.seed)[:4])

    b = results[f"(b) ours, capacity {backend.capacity}, fence stop"]
    for ref in ("(a) generate, batch 1", f"(a') generate, num_return_sequences={args.num_samples}"):
        a = results[ref]
        results[f"ratio tok/s (b)/{ref[:4].strip()}"] = round(b["tok_s"] / a["tok_s"], 2)
        results[f"ratio samples/s (b)/{ref[:4].strip()}"] = round(b["samples_s"] / a["samples_s"], 2)
        results[f"ratio tok/cpu-s (b)/{ref[:4].strip()}"] = round(b["tok_per_cpu_s"] / a["tok_per_cpu_s"], 2)
        if args.b0:
            b0 = results[f"(b0) ours, capacity {backend.capacity}, no stop"]
            results[f"ratio tok/s (b0)/{ref[:4].strip()}"] = round(b0["tok_s"] / a["tok_s"], 2)
    results["correctness (b)"] = correctness(tasks[:args.prompts_b], outputs)
    for key, value in results.items():
        if key.startswith("ratio") or key.startswith("correctness") or key.endswith("fence_or_eos"):
            print(f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
