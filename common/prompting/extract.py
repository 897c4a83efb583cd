"""Code extraction from a model reply: the first fenced Python block, else the whole reply, fences removed.

The reference code stripped ``"python```"`` instead of the opening fence before computing MI, which left
"```python" lines in the code and flipped 1-7 % of its self-generated pairs (docs/design.md §2); this module is the only
place fences are handled, so that bug cannot come back piecemeal.
"""

from __future__ import annotations

import re

# An opening fence: ``` plus an optional language tag on its own line.
_OPEN = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[ \t]*\r?$", re.M)
_CLOSE = re.compile(r"^[ \t]*```[ \t]*\r?$", re.M)
_PYTHON_TAGS = {"", "python", "py", "python3"}


def extract_code(text: str) -> str:
    """The first fenced Python block of ``text`` (an unclosed one runs to the end), else the text itself.

    A reply to a completion prompt (whose prompt already opened the fence) must be passed as
    ``extract_code(OPEN_FENCE + reply)``; the generation backends do that, so the rule here stays one rule.
    Blocks tagged with another language (```text, ```bash) are skipped.
    """
    if text is None:
        return ""
    pos = 0
    while (opening := _OPEN.search(text, pos)) is not None:
        tag = opening.group(1).lower()
        body_start = opening.end() + text.startswith("\n", opening.end())
        closing = _CLOSE.search(text, body_start)
        if tag in _PYTHON_TAGS:
            return text[body_start: closing.start() if closing else len(text)].strip("\r\n")
        if closing is None:
            break
        pos = closing.end()  # skip the whole non-Python block, closing fence included
    return text.strip("\r\n")


def strip_fence(code: str) -> str:
    """Remove a markdown fence that surrounds the whole string (what chosen/rejected columns hold)."""
    stripped = code.strip()
    if stripped.startswith("```"):
        return extract_code(stripped)
    return code
