"""MI statistics of MBPP reference solutions: a quick look at the preference signal before any model runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from common.config import PipelineConfig
from common.tasks.mbpp import load_mbpp
from common.signals.mi import maintainability_indices


def reference_mi_table(config: PipelineConfig, split: str) -> pd.DataFrame:
    """One row per task: task_id and the MI of its reference solution (None when radon cannot parse it)."""
    tasks = load_mbpp(split, config.data.source)
    return pd.DataFrame({"task_id": tasks["task_id"], "mi": maintainability_indices(tasks["code"])})


def print_reference_mi(config: PipelineConfig, split: str, out_dir: Path | None = None) -> pd.DataFrame:
    table = reference_mi_table(config, split)
    mi = table["mi"].dropna()
    print(f"MBPP {split} ({config.data.source or 'MBPP_PATH/hub'}): {len(table)} reference solutions, "
          f"{table['mi'].isna().sum()} unparsable")
    print(f"MI mean {mi.mean():.2f}, median {mi.median():.2f}, min {mi.min():.2f}, max {mi.max():.2f}, "
          f"share at 100: {(mi >= 100).mean():.1%}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        table.to_csv(out_dir / f"reference_mi_{split}.csv", index=False)
    return table
