"""Time per 1,000 solutions of each data-optimisation technique on the 372 MBPP training tasks, against the
sandbox verification of the same references (the floor every correctness-keeping step pays), measured in the
same run; plus each technique's counts and MI / pylint before and after.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_dataopt.py [--mbpp ../shared/data/mbpp/mbpp.jsonl]

``syn`` samples with the tiny random test model (one try, 32 tokens): it measures the step's own machinery
(generation call, verification, bookkeeping), not a real generator's speed, which is the backend's
(docs/generation.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.config import load_config  # noqa: E402
from common.dataopt.base import StepContext, load_step, rows_from_tasks  # noqa: E402
from common.dataopt.stage import _quality  # noqa: E402
from common.tasks.mbpp import load_mbpp  # noqa: E402

DEFAULT_MBPP = REPO.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbpp", default=str(DEFAULT_MBPP))
    args = parser.parse_args()
    tasks = list(load_mbpp("train", args.mbpp))
    config = load_config(REPO / "configs" / "smoke.yaml", ["data_opt.syn_tries=1", "stage1_sampling.num_samples=1",
                                                           "stage1_sampling.max_new_tokens=32"])
    with tempfile.TemporaryDirectory() as work:
        ctx = StepContext(config=config.data_opt, tasks={int(t["task_id"]): t for t in tasks},
                          sandbox=config.sandbox, work=Path(work), model=config.model,
                          sampling=config.stage1_sampling, log=lambda _: None)
        rows = rows_from_tasks(tasks)
        start = time.perf_counter()
        verdicts = ctx.verify(rows, desc="baseline: verify")
        floor = (time.perf_counter() - start) / len(rows) * 1000
        rows = [row for row, v in zip(rows, verdicts) if v["passed"]]
        before = _quality(rows)
        print(f"{len(tasks)} tasks, {len(rows)} references pass their tests; MI {before['mi_mean']:.2f}, "
              f"pylint {before['pylint_mean']:.2f}\n")
        print("| step | s per 1,000 solutions | vs verification | counts | MI after | pylint after |")
        print("|---|---|---|---|---|---|")
        print(f"| (verification only) | {floor:.1f} | 1.00x | - | - | - |")
        for name in ("ref", "cle", "sel", "aug", "syn"):
            start = time.perf_counter()
            result = load_step(name)(rows, ctx)
            seconds = (time.perf_counter() - start) / len(rows) * 1000
            after = _quality(result.rows)
            counts = ", ".join(f"{k} {v}" for k, v in result.counts.items() if v)
            print(f"| {name} | {seconds:.1f} | {seconds / floor:.2f}x | {counts} | {after['mi_mean']:.2f} | "
                  f"{after['pylint_mean']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
