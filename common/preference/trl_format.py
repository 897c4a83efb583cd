"""Preference pairs for DPO: checks, TRL's dataset format, the held-out split and loading from a run directory."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

# The columns TRL's preference trainers read (our pairs carry more: common.preference.pairing.TRL_COLUMNS).
TRL_COLUMNS = ("prompt", "chosen", "rejected")


def check_pairs(pairs: Any, where: str = "pairs dataset") -> None:
    missing = [name for name in TRL_COLUMNS if name not in pairs.column_names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; has {pairs.column_names}")
    if len(pairs) == 0:
        raise ValueError(f"{where} is empty: there are no preference pairs to train on")


def _trl_row(row: dict[str, Any]) -> dict[str, Any]:
    """One pair in TRL's format: a string prompt stays 'standard'; a message-list prompt becomes 'conversational'
    (the completions become one assistant message each)."""
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return {"prompt": prompt, "chosen": row["chosen"], "rejected": row["rejected"]}
    messages = [{"role": m["role"], "content": m["content"]} for m in prompt]

    def turn(text: Any) -> list[dict[str, str]]:
        return text if isinstance(text, list) else [{"role": "assistant", "content": text}]

    return {"prompt": messages, "chosen": turn(row["chosen"]), "rejected": turn(row["rejected"])}


def to_trl_format(pairs: Any) -> Any:
    """Our pairs dataset -> an in-memory dataset with only prompt/chosen/rejected in TRL's format.

    In memory on purpose: TRL's tokenisation ``map`` would otherwise write cache files into the artifact folder.
    """
    from datasets import Dataset

    check_pairs(pairs)
    rows = [_trl_row(row) for row in pairs.select_columns(list(TRL_COLUMNS)).to_list()]
    kinds = {isinstance(row["prompt"], str) for row in rows}
    if len(kinds) > 1:
        raise ValueError("pairs dataset mixes string prompts and message-list prompts")
    return Dataset.from_list(rows)


def split_eval(pairs: Any, fraction: float, seed: int) -> tuple[Any, Any | None]:
    """Hold out ``fraction`` of the *tasks* (all pairs of a task stay on one side) for evaluation/early stopping."""
    if fraction <= 0:
        return pairs, None
    if fraction >= 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {fraction}")
    keys = pairs["task_id"] if "task_id" in pairs.column_names else list(range(len(pairs)))
    tasks = sorted(set(keys))
    random.Random(seed).shuffle(tasks)
    n_eval = max(1, round(fraction * len(tasks)))
    if n_eval >= len(tasks):
        raise ValueError(f"eval_fraction={fraction} leaves no training pairs ({len(tasks)} tasks)")
    held_out = set(tasks[:n_eval])
    train_idx = [i for i, key in enumerate(keys) if key not in held_out]
    eval_idx = [i for i, key in enumerate(keys) if key in held_out]
    return pairs.select(train_idx), pairs.select(eval_idx)


def load_pairs(path: str | Path) -> Any:
    """A pairs dataset saved with ``save_to_disk``; a clear error when it is empty or malformed."""
    from datasets import load_from_disk

    state = Path(path) / "state.json"
    if state.is_file() and not json.loads(state.read_text()).get("_data_files", True):
        # datasets cannot even load a saved empty dataset (IndexError deep inside), so check first
        raise ValueError(f"pairs dataset {path} is empty: there are no preference pairs to train on")
    pairs = load_from_disk(str(path))
    check_pairs(pairs, where=f"pairs dataset {path}")
    return pairs
