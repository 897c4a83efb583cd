"""Errors a user can meet where the project meets the outside world, each one line naming the fix.

The CLI prints these (and ConfigError, DataError, ArtifactError) as a single line; ``--debug`` shows the traceback.
"""

from __future__ import annotations


class Unavailable(RuntimeError):
    """Something outside the repository is missing or unreachable (a hub model, an API key, an endpoint); the
    message says which setting or command supplies it."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
