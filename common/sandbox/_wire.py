"""Frames between a candidate's process and the executor: length-prefixed ``marshal`` of plain data.

Why marshal: the values a test compares are plain data (numbers, strings, bytes, tuples, lists, dicts, sets)
and marshal round-trips exactly those types, exactly (tuple stays tuple, 1 stays int, nan stays float, shared
and cyclic references survive), in C. It also accepts code objects, and ``marshal.loads`` is not meant for
hostile input, so the executor checks every decoded frame with :func:`plain_problem` and never executes or
calls anything it received. Frames from a candidate are capped (:data:`FRAME_CAP`); the standard library only,
because both the executor and the candidate's process import this module.
"""

from __future__ import annotations

import marshal

FRAME_CAP = 8 << 20  # one probe value; a real MBPP/HumanEval result is a few hundred bytes
_HEADER = 4
PLAIN_LEAVES = frozenset(map(id, (type(None), bool, int, float, complex, str, bytes, type(Ellipsis))))
PLAIN_CONTAINERS = (tuple, list, frozenset, set, dict)
_CONTAINER_IDS = frozenset(map(id, PLAIN_CONTAINERS))
VISIT_BUDGET = 2_000_000  # values inspected per frame


def encode(message) -> bytes:
    """One frame: 4-byte little-endian length, then the marshal-ed message (raises ValueError if the message
    holds anything marshal does not accept, e.g. a candidate-defined object)."""
    payload = marshal.dumps(message)
    return len(payload).to_bytes(_HEADER, "little") + payload


def plain_problem(value) -> str | None:
    """Why ``value`` is not plain data (None when it is): exact builtin types only, walked iteratively with a
    budget (cycles are fine). Subclasses never pass: marshal already refuses them when encoding."""
    stack, seen, budget = [value], set(), VISIT_BUDGET
    while stack:
        x = stack.pop()
        t = type(x)
        if id(t) in PLAIN_LEAVES:
            continue
        if id(t) not in _CONTAINER_IDS:
            return f"{t.__name__} is not plain data"
        if id(x) in seen:
            continue
        seen.add(id(x))
        budget -= len(x) + 1
        if budget < 0:
            return "value too large to check"
        if t is dict:
            stack.extend(x.keys())
            stack.extend(x.values())
        else:
            stack.extend(x)
    return None


class FrameReader:
    """Incremental splitter of a byte stream into decoded frames. ``feed`` returns the complete messages;
    anything malformed (oversized, undecodable, not plain data) raises ``ValueError`` with the reason."""

    __slots__ = ("buf", "cap")

    def __init__(self, cap: int = FRAME_CAP):
        self.buf, self.cap = bytearray(), cap

    def feed(self, data: bytes) -> list:
        self.buf += data
        out = []
        while len(self.buf) >= _HEADER:
            size = int.from_bytes(self.buf[:_HEADER], "little")
            if size > self.cap:
                raise ValueError(f"frame of {size} bytes exceeds the {self.cap}-byte cap")
            if len(self.buf) < _HEADER + size:
                break
            payload = bytes(self.buf[_HEADER:_HEADER + size])
            del self.buf[:_HEADER + size]
            try:
                message = marshal.loads(payload)
            except Exception as e:  # noqa: BLE001 - hostile bytes
                raise ValueError(f"undecodable frame ({type(e).__name__})") from None
            problem = plain_problem(message)
            if problem:
                raise ValueError(f"frame holds non-plain data: {problem}")
            out.append(message)
        return out

    def pending(self) -> int:
        return len(self.buf)
