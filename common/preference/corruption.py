"""Compile negatives: copies of a compiling solution with one small syntax error, for the ``compile`` signal.

The compiler-feedback study paired code that compiles with a corrupted copy of it: a keyword misspelt
(``return`` -> ``retrun``, ``def`` -> ``dfe``) or one symbol deleted (a ``:``, ``)`` or ``]``). Its published code
did not check the result, and a corruption can silently do nothing useful: ``pass`` -> ``psas``, ``True`` ->
``Ture`` or a bare ``return`` -> ``retrun`` are plain names, and deleting one ``:`` of ``s[::-1]`` leaves the valid
``s[:-1]``; each of those still compiles, so the "negative" taught nothing (or the wrong thing). Here every
corruption is RE-CHECKED with ``compile(code, "<candidate>", "exec")``; one that still compiles is recorded and
another site is tried, and a solution with no failing corruption yields none: an uncorrupted copy is never emitted.

Sites come from :mod:`tokenize`, so nothing inside a string, an f-string or a comment is touched (a ``:`` in a
docstring or a ``return`` in a comment is not code). The choice is a seeded :class:`random.Random`: the same code
and seed give the same corruptions on every machine (``random.Random`` seeded with a string is not affected by
hash randomisation).
"""

from __future__ import annotations

import io
import keyword
import random
import tokenize
from dataclasses import dataclass
from typing import Collection

# The symbols whose deletion the study used, with the name written into a corruption's description.
DELETABLE = {":": "colon", ")": "rparen", "]": "rbracket"}
# Tokens inside these are string content even when tokenize splits them (Python 3.12+ tokenizes f-strings).
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


@dataclass(frozen=True)
class Corruption:
    code: str  # the corrupted solution: differs from the source and fails compile()
    what: str  # e.g. "keyword:return->retrun" or "delete:colon@3:17" (line:column of the deleted symbol)
    still_compiled: tuple[str, ...] = ()  # corruptions tried first and discarded because they still compiled


def compiles(code: str) -> bool:
    """Whether ``code`` compiles as a module (the compile signal's criterion; nothing is executed)."""
    try:
        compile(code, "<candidate>", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
        return False
    return True


@dataclass(frozen=True)
class _Site:
    start: int  # character offsets of the token in the code
    end: int
    text: str
    line: int
    column: int


def _sites(code: str) -> tuple[list[_Site], list[_Site]]:
    """(keyword sites, deletable-symbol sites) of ``code``, outside strings and comments; none if it won't tokenize."""
    offsets, lines = [0], []

    def readline() -> str:
        line = stream.readline()
        if line:
            lines.append(line)
            offsets.append(offsets[-1] + len(line))
        return line

    stream = io.StringIO(code)
    keywords, symbols, fstring_depth = [], [], 0
    try:
        for token in tokenize.generate_tokens(readline):
            if _FSTRING_START is not None and token.type == _FSTRING_START:
                fstring_depth += 1
            elif _FSTRING_END is not None and token.type == _FSTRING_END:
                fstring_depth -= 1
            if fstring_depth or token.start[0] != token.end[0]:
                continue
            row, col = token.start
            site = _Site(offsets[row - 1] + col, offsets[row - 1] + token.end[1], token.string, row, col)
            if token.type == tokenize.NAME and keyword.iskeyword(token.string):
                keywords.append(site)
            elif token.type == tokenize.OP and token.string in DELETABLE:
                symbols.append(site)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return [], []
    return keywords, symbols


def misspellings(word: str) -> list[str]:
    """Every swap of two adjacent, different letters of ``word`` that is not itself a keyword (``return`` ->
    ``erturn``, ``rteurn``, ..., ``retrun``, ``retunr``)."""
    out = []
    for i in range(len(word) - 1):
        if word[i] != word[i + 1]:
            spelt = word[:i] + word[i + 1] + word[i] + word[i + 2:]
            if not keyword.iskeyword(spelt) and spelt not in out:
                out.append(spelt)
    return out


def _edits(code: str, rng: random.Random) -> list[tuple[str, str]]:
    """All candidate corruptions of ``code`` as (corrupted code, description), in a seeded random order: each
    keyword occurrence with one of its misspellings, and each deletable symbol removed."""
    keywords, symbols = _sites(code)
    edits = []
    for site in keywords:
        options = misspellings(site.text)
        if options:
            spelt = rng.choice(options)
            edits.append((code[:site.start] + spelt + code[site.end:], f"keyword:{site.text}->{spelt}"))
    for site in symbols:
        edits.append((code[:site.start] + code[site.end:],
                      f"delete:{DELETABLE[site.text]}@{site.line}:{site.column}"))
    rng.shuffle(edits)
    return edits


def corruptions(code: str, n: int, seed: int | str, avoid: Collection[str] = ()) -> list[Corruption]:
    """Up to ``n`` distinct corrupted copies of ``code``, each verified to fail ``compile()``.

    Sites are tried in a seeded random order; one whose result still compiles is skipped (and listed in the next
    result's ``still_compiled``), and so is one whose code, ends stripped, is in ``avoid`` (say, another candidate
    of the task that already fails to compile). Fewer than ``n`` come back when the code has fewer failing
    corruptions, none when ``code`` does not compile in the first place (there is nothing to corrupt).
    """
    if n <= 0 or not compiles(code):
        return []
    rng = random.Random(f"corruption:{seed}")
    found: list[Corruption] = []
    seen, discarded = {code.strip(), *avoid}, []
    for corrupted, what in _edits(code, rng):
        if corrupted.strip() in seen:
            continue
        seen.add(corrupted.strip())
        if compiles(corrupted):
            discarded.append(what)
            continue
        found.append(Corruption(corrupted, what, tuple(discarded)))
        discarded = []
        if len(found) == n:
            break
    return found
