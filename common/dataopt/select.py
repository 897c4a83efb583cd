"""Step ``sel``: keep only the best share of the training set by a quality score.

The study keeps the top ``sel_fraction`` (20 %) of solutions, ranked by one of three scores:

* ``mi``: radon's Maintainability Index (``common.signals.mi``), the paper's own preference signal;
* ``pylint``: pylint's 0-10 rating with the default configuration (``common.signals.pylint_score``);
* ``ranker``: a sequence-classification (reward) model in ``sel_ranker_model`` reading the task text and the code,
  the way the study used SCAR's ranker.

Selection never changes code, so nothing is re-verified here and no row gets a ``steps`` entry. Ranking is total
and deterministic (score descending, then task_id, then code), so the same rows always give the same subset
whatever order they arrive in; the kept rows stay in their input order, so a later step sees the training set in
the order it was built. A row without a score (MI None: radon cannot parse it) ranks below every scored row rather
than being dropped outright: with a large enough fraction it can still be kept, as the fraction promises.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from common.dataopt.base import StepContext, StepResult

SCORES = ("mi", "pylint", "ranker")
# Pairs scored per forward pass of a ranker: small enough for a CPU, large enough to amortise the call overhead.
_RANKER_BATCH = 16
# Token budget of one (task text, code) pair; MBPP solutions are far shorter, and longer inputs are truncated.
_RANKER_MAX_LENGTH = 512


def select_step(rows: list[dict[str, Any]], ctx: StepContext) -> StepResult:
    """The top ``sel_fraction`` of ``rows`` (at least one row) by ``sel_score``; counts kept/dropped, details the
    threshold (lowest kept score) and score quantiles of the kept rows and of all rows."""
    config = ctx.config
    fraction = float(config.sel_fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"data_opt.sel_fraction must be in (0, 1], got {config.sel_fraction!r}")
    if config.sel_score not in SCORES:
        raise ValueError(f"data_opt.sel_score must be one of {SCORES}, got {config.sel_score!r}")
    if not rows:
        return StepResult(rows=[], counts={"kept": 0, "dropped": 0},
                          details={"score": config.sel_score, "threshold": None})
    scores = row_scores(rows, config)
    order = ranking(rows, scores)
    # floor, with a hair of slack so 0.2 * 5 counts as 1 even when the float product lands just below it
    keep = max(1, math.floor(fraction * len(rows) + 1e-9))
    kept_indices = sorted(order[:keep])
    kept_scores = [scores[i] for i in order[:keep]]
    ctx.log(f"sel: kept {keep} of {len(rows)} rows by {config.sel_score} (threshold {kept_scores[-1]})")
    details = {
        "score": config.sel_score,
        "threshold": kept_scores[-1],
        "kept_quantiles": quantiles(kept_scores),
        "all_quantiles": quantiles(scores),
        "unscorable": sum(score is None for score in scores),
    }
    return StepResult(rows=[dict(rows[i]) for i in kept_indices], counts={"kept": keep, "dropped": len(rows) - keep},
                      details=details)


def ranking(rows: Sequence[Mapping[str, Any]], scores: Sequence[float | None]) -> list[int]:
    """Row indices best first: scored rows by score descending, then unscorable ones; ties by task_id, then code,
    so the order never depends on the input order (only rows identical in task, code and score tie fully)."""
    def key(index: int) -> tuple:
        score = scores[index]
        return (score is None, -(score or 0.0), int(rows[index]["task_id"]), rows[index]["code"])

    return sorted(range(len(rows)), key=key)


def row_scores(rows: Sequence[Mapping[str, Any]], config: Any) -> list[float | None]:
    """The configured score of every row (None where it cannot be scored)."""
    codes = [row["code"] for row in rows]
    if config.sel_score == "mi":
        from common.signals.mi import maintainability_indices

        return maintainability_indices(codes)
    if config.sel_score == "pylint":
        from common.signals.pylint_score import pylint_scores

        return [float(score) for score in pylint_scores(codes, progress=False)]
    return ranker_scores([row.get("text") or "" for row in rows], codes, config.sel_ranker_model)


def load_ranker(name: str | None) -> tuple[Any, Any]:
    """(model, tokenizer) of a sequence-classification ranker, with an error naming the setting when it cannot be
    loaded: offline runs (HF_HUB_OFFLINE) only find a hub id that is already in the local cache."""
    if not name:
        raise ValueError("data_opt.sel_score 'ranker' needs data_opt.sel_ranker_model: a local folder or hub id of a "
                         "sequence-classification (reward) model, e.g. SCAR's ranker")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForSequenceClassification.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ValueError(f"data_opt.sel_ranker_model={name!r} could not be loaded as a sequence-classification model "
                         f"with its tokenizer (not a local folder, or a hub id not cached for offline use): "
                         f"{exc}") from exc
    return model.eval(), tokenizer


def ranker_scores(texts: Sequence[str], codes: Sequence[str], name: str | None) -> list[float]:
    """The ranker's score of each (task text, code) pair, higher = better.

    A one-label head is a reward model: its logit is the score. A head with several labels is read as ordered
    quality classes (label i = rating i), scored by the expected label under its softmax, so a two-label
    good/bad classifier scores P(label 1). Models whose head means something else need their own adapter.
    """
    import torch

    model, tokenizer = load_ranker(name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    max_length = min(_RANKER_MAX_LENGTH, int(getattr(tokenizer, "model_max_length", _RANKER_MAX_LENGTH) or
                                             _RANKER_MAX_LENGTH))
    scores: list[float] = []
    with torch.no_grad():
        for start in range(0, len(codes), _RANKER_BATCH):
            batch = tokenizer(list(texts[start: start + _RANKER_BATCH]), list(codes[start: start + _RANKER_BATCH]),
                              truncation=True, max_length=max_length, padding=True, return_tensors="pt").to(device)
            logits = model(**batch).logits.float()
            if logits.shape[-1] == 1:
                values = logits[:, 0]
            else:
                labels = torch.arange(logits.shape[-1], device=logits.device, dtype=logits.dtype)
                values = (logits.softmax(-1) * labels).sum(-1)
            scores.extend(float(v) for v in values.cpu())
    return scores


def quantiles(scores: Sequence[float | None]) -> dict[str, float | None]:
    """min / q25 / median / q75 / max of the scored values (linear interpolation), None when there are none."""
    values = sorted(s for s in scores if s is not None)
    marks = {"min": 0.0, "q25": 0.25, "median": 0.5, "q75": 0.75, "max": 1.0}
    if not values:
        return {name: None for name in marks}
    out = {}
    for name, q in marks.items():
        position = q * (len(values) - 1)
        low, high = math.floor(position), math.ceil(position)
        out[name] = values[low] + (values[high] - values[low]) * (position - low)
    return out
