"""Shared test constants: where the real MBPP copy lives (never committed; ../shared beside the checkout)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MBPP_JSONL = Path(os.environ.get("MBPP_PATH") or REPO.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl")
requires_mbpp = pytest.mark.skipif(not MBPP_JSONL.is_file(), reason=f"real MBPP not found at {MBPP_JSONL}")
