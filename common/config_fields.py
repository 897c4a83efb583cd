"""The one helper every config dataclass uses: a field with a default and a help string."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def _f(default: Any = dataclasses.MISSING, help: str = "", factory: Any = None) -> Any:
    """A dataclass field with a help string (shown by ``python -m common config --help-fields``)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})
