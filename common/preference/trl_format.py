"""The training data of every method in TRL's formats: preference pairs (DPO), labelled singles (KTO) and targets
(SFT); their checks, the held-out split and loading from a run directory.

Our artifacts carry more columns than TRL reads (task_id, code, the signal's scores, where a candidate came from),
so each is reduced to TRL's columns in memory before training. A chat prompt (a list of messages) makes TRL's
"conversational" form: the completion becomes one assistant message.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

# The columns TRL's preference trainers read (our pairs carry more: common.preference.pairing.PAIR_COLUMNS).
TRL_COLUMNS = ("prompt", "chosen", "rejected")
KTO_COLUMNS = ("prompt", "completion", "label")  # labelled singles (stage `singles`)
SFT_COLUMNS = ("prompt", "completion")  # best-only targets (stage `targets`)


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


# --------------------------------------------------------------------------------------------------------------
# Labelled singles (KTO) and targets (SFT)


def _check_columns(data: Any, columns: tuple[str, ...], where: str, what: str) -> None:
    missing = [name for name in columns if name not in data.column_names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; has {data.column_names}")
    if len(data) == 0:
        raise ValueError(f"{where} is empty: there are no {what} to train on")


def _prompt_completion(prompt: Any, completion: Any) -> tuple[Any, Any]:
    if isinstance(prompt, str):
        return prompt, completion
    messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    return messages, completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]


def _to_format(data: Any, columns: tuple[str, ...], where: str, what: str) -> Any:
    from datasets import Dataset

    _check_columns(data, columns, where, what)
    rows = []
    for row in data.select_columns(list(columns)).to_list():
        row["prompt"], row["completion"] = _prompt_completion(row["prompt"], row["completion"])
        rows.append(row)
    if len({isinstance(row["prompt"], str) for row in rows}) > 1:
        raise ValueError(f"{where} mixes string prompts and message-list prompts")
    return Dataset.from_list(rows)


def to_kto_format(singles: Any, where: str = "singles dataset") -> Any:
    """Labelled singles -> TRL's unpaired preference format (prompt, completion, label: True = desirable)."""
    data = _to_format(singles, KTO_COLUMNS, where, "labelled examples")
    labels = set(data["label"])
    if labels != {True, False}:
        raise ValueError(f"{where}: KTO needs desirable and undesirable examples; every label is {labels}")
    return data


def to_sft_format(targets: Any, where: str = "targets dataset") -> Any:
    """Targets -> TRL's prompt-completion format (SFTTrainer then computes the loss on the completion only)."""
    return _to_format(targets, SFT_COLUMNS, where, "targets")


def _load_examples(path: str | Path, columns: tuple[str, ...], what: str) -> Any:
    from datasets import load_from_disk

    where = f"{what} dataset {path}"
    state = Path(path) / "state.json"
    if state.is_file() and not json.loads(state.read_text()).get("_data_files", True):
        raise ValueError(f"{where} is empty: there is nothing to train on")
    data = load_from_disk(str(path))
    _check_columns(data, columns, where, what)
    return data


def load_singles(path: str | Path) -> Any:
    """A labelled-singles dataset (stage ``singles``) saved with ``save_to_disk``."""
    return _load_examples(path, KTO_COLUMNS, "singles")


def load_targets(path: str | Path) -> Any:
    """A targets dataset (stage ``targets``) saved with ``save_to_disk``."""
    return _load_examples(path, SFT_COLUMNS, "targets")
