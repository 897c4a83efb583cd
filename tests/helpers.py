"""Shared test constants: where the real MBPP copy lives (never committed; ../shared beside the checkout)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MBPP_JSONL = Path(os.environ.get("MBPP_PATH") or REPO.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl")
requires_mbpp = pytest.mark.skipif(not MBPP_JSONL.is_file(),
                                   reason=f"real MBPP not found at {MBPP_JSONL} (set MBPP_PATH to mbpp.jsonl)")


def smoke_config(*overrides):
    """The smoke preset (tiny model, a few demo tasks) with ``--set`` style overrides."""
    from common.config import load_config

    return load_config(REPO / "configs" / "smoke.yaml", list(overrides))


def run_stages(config, run_dir, *names, force=False):
    """Run the named stages in order through the real runner; returns the last artifact folder."""
    from common.pipeline.runner import run_stage

    out = None
    for name in names:
        out = run_stage(name, config, run_dir, force=force)
    return out
