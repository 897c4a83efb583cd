"""The generation interface every backend implements, plus the rules they share: per-sample seeds, where a reply
stops (the closing code fence) and how a reply becomes code.

One method matters: ``generate(prompts, num_samples, seed) -> list[list[Completion]]`` (one inner list per prompt,
``num_samples`` long, in sample order). ``stream(items)`` yields ``(index, completions)`` as each prompt finishes;
the base class implements it on top of ``generate`` and the HF backend overrides it with continuous batching, so a
resumable sampling job (``common.generation.jobs``) can commit every prompt as soon as its samples are done.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from common.prompting.extract import extract_code
from common.prompting.templates import OPEN_FENCE, Prompt

FINISH_STOP = "stop"  # closing fence or end-of-sequence token
FINISH_LENGTH = "length"  # max_new_tokens reached

# A fence line: ``` at the start of a line (indentation allowed), whatever follows it on the line.
_FENCE_LINE = re.compile(r"^[ \t]*```", re.M)


@dataclass
class Completion:
    """One sample."""

    text: str  # raw generated text (completion-style prompts: without the prompt), cut after the closing fence
    code: str  # extract_code(text); for completion style extract_code(OPEN_FENCE + text)
    finish_reason: str  # "stop" (closing fence / EOS) or "length"
    num_tokens: int  # generated tokens (0 where a backend cannot tell)


def prompt_key(prompt: Prompt) -> str:
    """A stable text form of a prompt (messages as canonical JSON), used for seeds and job bookkeeping."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def sample_seed(seed: int, prompt: Prompt, index: int) -> int:
    """The seed of sample ``index`` of ``prompt``: a hash of (seed, prompt text, index), so a sample does not depend
    on which other prompts share its batch, on the batch size, or on the order prompts are given in."""
    blob = f"{int(seed)}\x00{prompt_key(prompt)}\x00{int(index)}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & (2**63 - 1)


def fences_opened_by_prompt(style: str) -> int:
    """The completion prompt ends in an opening ```python fence; a chat reply opens its own."""
    return 1 if style == "completion" else 0


def fence_cut(text: str, fences_before: int) -> int | None:
    """Index just past the ``` that closes the reply's first code block, or None while it is still open.

    ``fences_before`` is the number of fence lines the prompt already opened (1 for completion prompts). Any line
    starting with ``` counts, so a base model that skips the closing fence and starts a new ```python block is
    also cut there (greedy Gemma-3 270M does exactly that: it keeps writing more fenced blocks).
    """
    count = fences_before
    for match in _FENCE_LINE.finditer(text):
        count += 1
        if count >= 2:
            return match.end()
    return None


def to_completion(text: str, style: str, finish_reason: str, num_tokens: int, stop_at_fence: bool = True
                  ) -> Completion:
    """Cut ``text`` after the closing fence (when asked) and extract its code, the same way for every backend."""
    if stop_at_fence:
        cut = fence_cut(text, fences_opened_by_prompt(style))
        if cut is not None:
            text, finish_reason = text[:cut], FINISH_STOP
    code = extract_code(OPEN_FENCE + text) if style == "completion" else extract_code(text)
    return Completion(text=text, code=code, finish_reason=finish_reason, num_tokens=int(num_tokens))


class GenerationBackend:
    """Base class: subclasses implement ``generate``; ``stream`` and ``close`` have working defaults."""

    #: 'chat' or 'completion': how prompts are given to this backend and how replies are parsed.
    style: str = "chat"
    #: Prompts per ``generate`` call when ``stream`` falls back to it.
    stream_chunk: int = 32

    def generate(self, prompts: list[Prompt], num_samples: int, seed: int) -> list[list[Completion]]:
        raise NotImplementedError

    def stream(self, items: Sequence[tuple[Prompt, int, int]]) -> Iterator[tuple[int, list[Completion]]]:
        """``items`` = (prompt, num_samples, seed) triples; yields ``(index into items, completions)`` as each is done
        (any order). The default calls ``generate`` on chunks of items sharing (num_samples, seed)."""
        yield from stream_via_generate(self, items, self.stream_chunk)

    def close(self) -> None:
        """Free memory (GPU engines); the default has nothing to free."""


def stream_via_generate(backend: Any, items: Sequence[tuple[Prompt, int, int]], chunk: int
                        ) -> Iterator[tuple[int, list[Completion]]]:
    """Call ``backend.generate`` on runs of consecutive items with the same (num_samples, seed), ``chunk`` at a time.
    Works for any object with a ``generate`` method (duck typing, like the stage-1 two-solution adapter)."""
    chunk = max(1, int(chunk))
    start = 0
    while start < len(items):
        _, n, seed = items[start]
        stop = start
        while stop < len(items) and stop - start < chunk and items[stop][1:] == (n, seed):
            stop += 1
        outputs = backend.generate([items[i][0] for i in range(start, stop)], n, seed)
        if len(outputs) != stop - start:
            raise RuntimeError(f"backend returned {len(outputs)} results for {stop - start} prompts")
        for offset, completions in enumerate(outputs):
            yield start + offset, list(completions)
        start = stop


def flatten(groups: Iterable[Iterable[Any]]) -> list[Any]:
    return [item for group in groups for item in group]
