"""From scored candidates to DPO preference pairs: the labelling rule shared by stage 1b and stage 2a.

chosen = the passing candidate with the higher Maintainability Index. Only candidates that passed every assert
and that radon can parse take part; identical strings never make a pair. Ties carry no preference, so pairs whose
MI difference is below ``min_margin`` are dropped — unless ``keep_ties`` (the paper kept 28/238 tied pairs, the
first output chosen).

That is the paper's signal (``stage1.signal: mi``). Other signals (``signals.py``: exec, compile, pylint,
lexicographic lists) build their pairs there and write them with the same ``pair_row``; their datasets add
SIGNAL_PAIR_COLUMNS (the signal and each side's values as JSON), and their ``chosen_mi``/``rejected_mi``/``mi_margin``
may be None (a corrupted copy has no MI). The ``mi`` dataset keeps exactly PAIR_COLUMNS, as before.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from common.prompting.templates import Prompt, completion_target

PAIR_COLUMNS = ("task_id", "prompt", "chosen", "rejected", "chosen_mi", "rejected_mi", "mi_margin", "generator",
                "chosen_code", "rejected_code", "chosen_index", "rejected_index", "chosen_origin", "rejected_origin")
# Added by every signal but mi: which signal judged the pair and each side's values (JSON, criterion order).
SIGNAL_PAIR_COLUMNS = ("signal", "chosen_score", "rejected_score")


def pair_features(style: str, signal_columns: bool = False) -> Any:
    """The schema of every pairs dataset (stage 1b and self-generation, empty or not): ``prompt`` is a string for
    completion-style models and a list of chat messages for chat models; the other columns are PAIR_COLUMNS, plus
    SIGNAL_PAIR_COLUMNS for a signal other than mi (``signal_columns``)."""
    from datasets import Features, List, Value

    prompt = Value("string") if style == "completion" else List({"role": Value("string"), "content": Value("string")})
    kinds = {"task_id": Value("int64"), "prompt": prompt, "chosen_mi": Value("float64"),
             "rejected_mi": Value("float64"), "mi_margin": Value("float64"), "chosen_index": Value("int64"),
             "rejected_index": Value("int64")}
    names = PAIR_COLUMNS + (SIGNAL_PAIR_COLUMNS if signal_columns else ())
    return Features({name: kinds.get(name, Value("string")) for name in names})


def pairs_dataset(rows: list[Mapping[str, Any]], style: str, signal_columns: bool = False) -> Any:
    """``rows`` (``pair_row`` dicts) as a dataset with :func:`pair_features`, also when there are none."""
    from datasets import Dataset

    features = pair_features(style, signal_columns)
    if not rows:
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list([{name: row[name] for name in features} for row in rows], features=features)


@dataclass(frozen=True)
class Candidate:
    code: str
    mi: float | None
    passed: bool
    index: int = 0  # position among the task's candidates: breaks ties ("output 1 chosen")
    origin: str = ""  # what made it: the rewrites applied, the API output, the self-generation round and sample


def usable(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Passing, MI-scored candidates with distinct code (whitespace at the ends ignored), in index order."""
    seen, kept = set(), []
    for candidate in sorted(candidates, key=lambda c: c.index):
        key = candidate.code.strip()
        if candidate.passed and candidate.mi is not None and key and key not in seen:
            seen.add(key)
            kept.append(candidate)
    return kept


def select_pairs(candidates: Iterable[Candidate], pairing: str = "extremes", min_margin: float = 1e-6,
                 keep_ties: bool = False) -> list[tuple[Candidate, Candidate]]:
    """(chosen, rejected) pairs for one task.

    ``extremes``: the max-MI against the min-MI candidate (the paper's stage 2a rule; with two candidates it is
    the stage 1 rule). ``all``: every pair of distinct candidates. Equal MI: the lower index is chosen.
    """
    pool = usable(candidates)
    if len(pool) < 2:
        return []
    ranked = sorted(pool, key=lambda c: (-c.mi, c.index))
    return [(hi, lo) for hi, lo in ranked_combinations(ranked, pairing) if keep_ties or hi.mi - lo.mi >= min_margin]


def ranked_combinations(ranked: Sequence[Any], pairing: str) -> list[tuple[Any, Any]]:
    """The candidate (better, worse) pairs of a pool ranked best first: ``extremes`` = the best against the worst,
    ``all`` = every pair (the first of each is the better). Shared by the MI rule and every other signal."""
    if pairing == "extremes":
        return [(ranked[0], ranked[-1])]
    if pairing == "all":
        return list(itertools.combinations(ranked, 2))
    raise ValueError(f"pairing must be 'extremes' or 'all', got {pairing!r}")


def pair_row(task: Mapping[str, Any], prompt: Prompt, style: str, chosen: Candidate, rejected: Candidate,
             generator: str, signal: str | None = None, scores: tuple[str, str] | None = None) -> dict[str, Any]:
    """One DPO row: ``prompt`` in the model's form, chosen/rejected fenced to match it, MI kept for inspection.

    ``signal`` and ``scores`` (each side's values as JSON) fill SIGNAL_PAIR_COLUMNS for signals other than mi; a
    side without MI (code radon cannot parse) has ``None`` there and in ``mi_margin``.
    """
    both = chosen.mi is not None and rejected.mi is not None
    row = {
        "task_id": int(task["task_id"]),
        "prompt": prompt,
        "chosen": completion_target(chosen.code, style),
        "rejected": completion_target(rejected.code, style),
        "chosen_mi": _float(chosen.mi),
        "rejected_mi": _float(rejected.mi),
        "mi_margin": float(chosen.mi - rejected.mi) if both else None,
        "generator": generator,
        "chosen_code": chosen.code,
        "rejected_code": rejected.code,
        # where each side came from, so a pair can be judged (with the mi signal both sides passed every test)
        "chosen_index": int(chosen.index),
        "rejected_index": int(rejected.index),
        "chosen_origin": chosen.origin,
        "rejected_origin": rejected.origin,
    }
    if signal is not None:
        row.update(signal=signal, chosen_score=scores[0] if scores else None,
                   rejected_score=scores[1] if scores else None)
    return row


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def pair_summary(rows: list[Mapping[str, Any]], n_tasks: int) -> dict[str, Any]:
    """Counts and MI statistics printed and saved beside every pairs dataset.

    MI values that are None (a side radon cannot parse) are left out of the means. A tie is a pair whose sides
    score the same: by the signal's values where the rows carry them (``chosen_score``), else by MI (margin < 1e-6).
    """
    margins = [row["mi_margin"] for row in rows if row["mi_margin"] is not None]
    if rows and "chosen_score" in rows[0]:
        ties = sum(row["chosen_score"] == row["rejected_score"] for row in rows)
    else:
        ties = sum(m < 1e-6 for m in margins)
    return {
        "tasks": n_tasks,
        "pairs": len(rows),
        "tasks_with_pairs": len({row["task_id"] for row in rows}),
        "ties": ties,
        "mean_chosen_mi": _mean([row["chosen_mi"] for row in rows if row["chosen_mi"] is not None]),
        "mean_rejected_mi": _mean([row["rejected_mi"] for row in rows if row["rejected_mi"] is not None]),
        "mean_margin": _mean(margins),
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def plot_mi_distribution(rows: list[Mapping[str, Any]], out_png, title: str) -> None:
    """Histogram of chosen vs rejected MI (Agg backend: works headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = list(range(0, 105, 5))
    for side in ("chosen", "rejected"):  # a side without MI (a corrupted copy) is not drawn
        ax.hist([row[f"{side}_mi"] for row in rows if row[f"{side}_mi"] is not None], bins=bins, alpha=0.6,
                label=side)
    ax.set_xlabel("Maintainability Index (radon, 0-100)")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
