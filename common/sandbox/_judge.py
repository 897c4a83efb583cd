"""The judge: runs a test's judge program (``_program``) in the executor against values the candidate shipped.

Why here and not in the candidate's process: the judge program holds the expected values and decides pass or
fail; the candidate's process only ever sees the probes (calls of its own code) and returns plain values. So a
candidate with full control of its process - writing any bytes to any descriptor, patching anything, exiting
any way - can make a test pass only by returning the values the test expects. A value that cannot be shipped
(an instance of a class the program defines, a generator) comes back as a :class:`Handle`; any use of it by the
judge raises :class:`NeedsCandidate`, and that unit is then judged inside the candidate's process with the
comparison checks of ``_harness`` and recorded in ``judged_in_candidate`` (callers that must not trust such a
verdict can tell).

The judge program is a generator: each probe is a ``yield``. :class:`Judge` advances it, answering static
probes from what the candidate already sent and returning every other request for the executor to forward.
Standard library only.
"""

from __future__ import annotations

import builtins

from _program import J, TestProgram
from _wire import plain_problem

DETAIL_MAX = 300
_BUILTIN_EXCEPTIONS = {name: cls for name, cls in vars(builtins).items()
                       if isinstance(cls, type) and issubclass(cls, Exception)}


class NeedsCandidate(BaseException):
    """The judge touched a value it does not hold (a Handle): judge this unit in the candidate's process."""


class Skip(BaseException):
    """This unit ran out of its per-test time; the executor recorded the timeout."""


class CandidateGone(BaseException):
    """The candidate's process ended before answering."""


class ProgramError(Exception):
    """An exception the program raised whose type is not a builtin (its name and message, as text only)."""


def _refuse(*_args, **_kwargs):
    raise NeedsCandidate


class Handle:
    """A value that stayed in the candidate's process. Every operation the judge could apply refuses."""

    __slots__ = ("_mi_handle", "_mi_type", "_mi_truth")

    def __init__(self, handle: int, type_name: str, truth: bool | None = None):
        object.__setattr__(self, "_mi_handle", handle)
        object.__setattr__(self, "_mi_type", type_name)
        object.__setattr__(self, "_mi_truth", truth)

    __getattribute__ = __setattr__ = __delattr__ = __getattr__ = _refuse  # type: ignore[assignment]

    def _truth(self) -> bool:
        """Its truth value when the candidate's process could compute it with C/standard-library code (a
        ``re.Match``), which is then a value like any other; else refuse."""
        truth = object.__getattribute__(self, "_mi_truth")
        if truth is None:
            raise NeedsCandidate
        return truth


for _name in ("eq ne lt le gt ge bool len iter contains getitem setitem delitem call hash add radd sub rsub mul "
              "rmul truediv rtruediv floordiv rfloordiv mod rmod pow rpow and rand or ror xor rxor lshift rlshift "
              "rshift rrshift matmul rmatmul neg pos abs invert round index int float complex str repr format "
              "bytes reversed instancecheck subclasscheck enter exit next reduce reduce_ex dir sizeof").split():
    setattr(Handle, f"__{_name}__", _refuse)
del _name
Handle.__bool__ = Handle._truth


def handle_id(value) -> int | None:
    if type(value) is Handle:
        return object.__getattribute__(value, "_mi_handle")
    return None


def one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


def raised(name: str, message: str) -> Exception:
    """The exception the judge sees for one the program raised: the builtin type when it is one, so a test's
    ``except ValueError`` still works; otherwise :class:`ProgramError`."""
    cls = _BUILTIN_EXCEPTIONS.get(name)
    if cls is not None:
        try:
            return cls(message) if message else cls()
        except Exception:  # noqa: BLE001 - exception types with required arguments (UnicodeDecodeError)
            pass
    return ProgramError(f"{name}: {message}" if message else name)


def _describe_exception(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:  # noqa: BLE001
        text = ""
    if isinstance(e, ProgramError):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Judge:
    """Drives one job's judge program. ``advance`` returns the next request for the candidate's process
    (``("p", k, bindings)`` or ``("u", unit, bindings)``) or None when the program has finished."""

    def __init__(self, program: TestProgram):
        self.program = program
        n = len(program.units)
        self.status: list[str | None] = [None] * n
        self.detail: list[str] = [""] * n
        self.judged_here: list[int] = []
        self.current = -1
        self.values: dict[int, tuple] = {}  # static probe -> answer, until the judge consumes it
        self.used: set[int] = set()
        self.done = False
        self.pending: tuple | None = None
        namespace = {"__name__": "__judge__", "__builtins__": builtins, J: self}
        exec(program.judge, namespace)
        self.namespace = namespace
        self.gen = namespace["__mi_tests"]()
        self.unit_started: float | None = None

    # -- called by the judge program (through the name __mi_j)
    NeedsCandidate, Skip = NeedsCandidate, Skip

    def begin(self, k: int) -> None:
        self.current = k
        self.unit_started = None  # set by the executor, which owns the clock

    def passed(self, k: int) -> None:
        self.status[k] = "passed"

    def failed(self, k: int, e: BaseException) -> None:
        message = _describe_exception(e) if str(e) else ""
        self.status[k] = "failed"
        self.detail[k] = one_line(self.program.units[k] + (f" ({message})" if message else ""))

    def error(self, k: int, e: BaseException) -> None:
        self.status[k] = "error"
        self.detail[k] = one_line(f"{_describe_exception(e)} in test: {self.program.units[k]}")

    @staticmethod
    def same(a, b) -> bool:
        """``a is b`` for the judge: identity with a value the candidate kept is for the candidate to tell."""
        if type(a) is Handle or type(b) is Handle:
            raise NeedsCandidate
        return a is b

    def probe(self, k: int, bindings: tuple) -> tuple:
        return ("p", k, bindings)

    def in_candidate(self, k: int, local_values: dict) -> tuple:
        bindings = {}
        for name in self.program.unit_free[k]:
            if name in local_values:
                bindings[name] = local_values[name]
            elif name in self.namespace:
                bindings[name] = self.namespace[name]
        return ("u", k, bindings)

    # -- called by the executor
    def advance(self, answer=None, throw: BaseException | None = None):
        """Resume the program with ``answer`` (a value) or ``throw``; run it until it needs the candidate."""
        while not self.done:
            try:
                request = self.gen.throw(throw) if throw is not None else self.gen.send(answer)
            except StopIteration:
                self.done = True
                break
            except CandidateGone:
                self.done = True
                break
            except BaseException as e:  # noqa: BLE001 - a broken test program: this unit errs, the rest is skipped
                if self.current >= 0 and self.status[self.current] is None:
                    self.status[self.current] = "error"
                    self.detail[self.current] = one_line(f"the judge failed: {_describe_exception(e)}")
                self.done = True
                break
            throw = answer = None
            kind, k, payload = request
            if kind == "p" and self.program.static[k] and k not in self.used and k in self.values:
                self.used.add(k)
                answer, throw = self.resolve(self.values.pop(k))
                continue
            if kind == "p" and self.program.static[k] and k not in self.used:
                self.pending = request
                return ("wait", k, ())  # the candidate will send it without being asked
            self.pending = request
            return self.encode_request(request)
        self.pending = None
        return None

    def encode_request(self, request: tuple):
        kind, k, payload = request
        if kind == "p":
            items = [self.binding(v) for v in payload]
            return ("p", k, tuple(items))
        items = {name: self.binding(v) for name, v in payload.items()}
        return ("u", k, items)

    def binding(self, value):
        h = handle_id(value)
        if h is not None:
            return ("h", h)
        problem = plain_problem(value)
        if problem:
            return ("bad", problem)
        return ("v", value)

    @staticmethod
    def resolve(answer: tuple):
        """(value to send, exception to throw) for one answer frame ("v"/"h"/"x")."""
        kind = answer[0]
        if kind == "v":
            return answer[2], None
        if kind == "h":
            return Handle(answer[2], answer[3], answer[4]), None
        if kind == "b":
            return getattr(builtins, answer[2]), None
        return None, raised(answer[2], answer[3])

    def receive(self, answer: tuple):
        """A frame answering the pending request; returns the next request (see ``advance``)."""
        request, self.pending = self.pending, None
        if request is None:
            raise ValueError("an answer nobody asked for")
        if answer[0] == "u":
            k = request[1]
            if answer[1] != k:
                raise ValueError("an answer for another unit")
            self.status[k] = answer[2]
            self.detail[k] = one_line(answer[3])
            self.judged_here.append(k)
            return self.advance()
        if answer[1] != request[1]:
            raise ValueError("an answer for another probe")
        if request[0] == "p" and self.program.static[request[1]]:
            self.used.add(request[1])
        value, exc = self.resolve(answer)
        return self.advance(value, exc)

    def static_arrived(self, answer: tuple):
        """A static probe's value (sent unasked): the next request if the program was waiting for it, else False."""
        k = answer[1]
        if self.pending is not None and self.pending[0] == "p" and self.pending[1] == k and k not in self.used:
            self.pending = None
            self.used.add(k)
            value, exc = self.resolve(answer)
            return self.advance(value, exc)
        self.values[k] = answer
        return False

    def gone(self, status: str, detail: str) -> None:
        """The candidate's process ended (or was killed) while the program still needed it."""
        if not self.done:
            if self.current >= 0 and self.status[self.current] is None:
                self.status[self.current] = status
                self.detail[self.current] = one_line(detail)
            self.advance(throw=CandidateGone())
        self.done = True
        for k, s in enumerate(self.status):
            if s is None:
                self.status[k] = "skipped"

    def skip_current(self, detail: str):
        """Per-test timeout of the current unit: record it and let the program go on with the next one."""
        k = self.current
        self.status[k] = "timeout"
        self.detail[k] = one_line(detail)
        self.pending = None
        return self.advance(throw=Skip())

    def verdict(self) -> tuple[str, str]:
        """(status, detail) of the whole job: the first unit that did not pass decides."""
        self.status = [s or "skipped" for s in self.status]
        for status, detail in zip(self.status, self.detail):
            if status != "passed":
                return status, detail
        return "passed", ""
