"""The candidate's side of a job: runs the program, evaluates the probes it is sent and ships their values.

This runs inside the forked, already-isolated child. The judging happens elsewhere (``_judge``, in the
executor); here we only

* run ``setup``, the program and the test imports, in one namespace (``__name__ == "__sandbox__"``), then say
  "ready" (or why not: the stage and the exception);
* evaluate each probe (``_program``: a call of the program's code, with its inputs) and write its value as a
  frame (``_wire``) to fd 3: plain data as is, a builtin (``int``, ``len``) by name, anything else as a handle
  kept in this process (with its truth value when C or the standard library computes it), an exception as its
  type name and plain-string message (never the candidate's ``__str__``);
* answer the executor's requests on fd 4: probes with values from the judge, and units the judge could not
  decide because they touch a handle. Only then does a test's expected value enter this process; it is judged
  here with the checks of ``_harness`` and the executor records that it was.

Nothing here decides a verdict: whatever this process writes, the judge only ever sees values.
"""

from __future__ import annotations

import builtins
import marshal

import _harness
from _harness import CMP_NAME, TRUTH_NAME, _TRUTH_DUNDERS, _cmp, _truth, _type_problem
from _wire import FRAME_CAP

# Bound at import, before any candidate code runs (as in _harness): rebinding builtins cannot reach us.
globals().update({k: v for k, v in vars(builtins).items() if not k.startswith("_")})
_exec, _eval, _type, _id, _len, _bool, _str, _repr, _tuple = exec, eval, type, id, len, bool, str, repr, tuple
_BaseException, _AssertionError = BaseException, AssertionError
_write, _read, _exit, _getpid = _harness._write, _harness._read, _harness._exit, _harness._getpid
_stdout, _stderr = _harness._stdout, _harness._stderr
_DETAIL_MAX = _harness._DETAIL_MAX


class _NotCompiled(Exception):
    """Setup or code did not compile (in the executor); carries the compiler's message."""


_marshal_dumps, _marshal_loads = marshal.dumps, marshal.loads
_FRAME_CAP = FRAME_CAP
_EXACT_MESSAGE_TYPES = frozenset(map(id, (str, int, float, bool, type(None))))
_exc_name_of = type.__dict__["__name__"].__get__


def _safe_message(e) -> str:
    """An exception's message without running anything the candidate wrote (no ``__str__``/``__repr__`` of
    its classes): only plain str/number arguments, truncated before any formatting."""
    try:
        args = BaseException.__dict__["args"].__get__(e)
    except _BaseException:
        return ""
    if _type(args) is not _tuple or not args or _len(args) > 4:
        return ""
    parts = []
    for a in args:
        if _id(_type(a)) not in _EXACT_MESSAGE_TYPES:
            return ""
        if _type(a) is _str:
            parts.append(a[:_DETAIL_MAX])
        else:
            try:
                parts.append(_repr(a)[:_DETAIL_MAX])
            except _BaseException:  # an int too long to print
                parts.append("<number>")
    return ", ".join(parts)[:_DETAIL_MAX]


class _Channel:
    """Frames to the executor (fd 3) and from it (fd 4); see ``_wire``."""

    def __init__(self, out_fd: int, in_fd: int):
        self.out_fd, self.in_fd, self.buf = out_fd, in_fd, b""

    def send(self, message) -> None:
        for stream in (_stdout, _stderr):  # what the program printed reaches the executor before it may kill us
            try:
                stream.flush()
            except _BaseException:
                pass
        payload = _marshal_dumps(message)
        data = memoryview(_len(payload).to_bytes(4, "little") + payload)
        while data:
            data = data[_write(self.out_fd, data):]

    def receive(self):
        while True:
            if _len(self.buf) >= 4:
                size = int.from_bytes(self.buf[:4], "little")
                if _len(self.buf) >= 4 + size:
                    payload, self.buf = self.buf[4:4 + size], self.buf[4 + size:]
                    return _marshal_loads(payload)
            chunk = _read(self.in_fd, 1 << 20)
            if not chunk:
                return None
            self.buf += chunk


class _Server:
    def __init__(self, namespace: dict, channel: _Channel, probes: list):
        self.namespace, self.channel, self.probes = namespace, channel, probes
        self.handles: list = []

    def answer(self, k: int, code, extra: dict | None):
        """Evaluate probe ``code``; ship ("v", k, value), ("h", k, handle, type) or ("x", k, name, message)."""
        try:
            if extra:
                scope = dict(self.namespace)
                scope.update(extra)
            else:
                scope = self.namespace
            value = _eval(code, scope)
        except _BaseException as e:  # noqa: BLE001 - what the program raised is the answer
            return self.channel.send(("x", k, _exc_name_of(_type(e)), _safe_message(e)))
        name = _BUILTIN_IDS.get(_id(value))
        if name is not None:  # int, len, ValueError...: the judge has the same object
            return self.channel.send(("b", k, name))
        try:
            payload = _marshal_dumps(value)
            if _len(payload) <= _FRAME_CAP - 64 and not _holds_code(value):
                return self.channel.send(("v", k, value))
        except _BaseException:  # noqa: BLE001 - unmarshallable: a candidate-defined object, a generator...
            pass
        self.handles.append(value)
        truth = None  # its truth value travels along when C or the standard library computes it (re.Match)
        if _type_problem(_type(value), _TRUTH_DUNDERS) is None:
            try:
                truth = _bool(value)
            except _BaseException:  # noqa: BLE001
                truth = None
        return self.channel.send(("h", k, _len(self.handles) - 1, _exc_name_of(_type(value)), truth))

    def bindings(self, items) -> dict:
        out = {}
        for name, (kind, value) in items:
            if kind == "v":
                out[name] = value
            elif kind == "h" and _type(value) is int and 0 <= value < _len(self.handles):
                out[name] = self.handles[value]
            else:
                raise ValueError(f"the judge could not pass {name}: {value}")
        return out

    def judge_unit(self, k: int, code, items) -> None:
        """A unit the executor could not judge (it touches a handle): run it here, comparisons checked."""
        try:
            scope = dict(self.namespace)
            scope.update(self.bindings(_tuple(items.items())))
            scope[CMP_NAME], scope[TRUTH_NAME] = _cmp, _truth
            _exec(code, scope)
            status, detail = "passed", ""
        except _AssertionError as e:
            status, detail = "failed", _safe_message(e)
        except _BaseException as e:  # noqa: BLE001
            status, detail = "error", f"{_exc_name_of(_type(e))}: {_safe_message(e)}"
        self.channel.send(("u", k, status, detail))

    def serve(self) -> None:
        while True:
            request = self.channel.receive()
            if request is None:
                return
            if request[0] == "p":
                k, items = request[1], request[2]
                try:
                    extra = self.bindings((f"__mi_b{i}", b) for i, b in enumerate(items))
                except _BaseException as e:  # noqa: BLE001
                    self.channel.send(("x", k, "TypeError", _safe_message(e)))
                    continue
                self.answer(k, self.probes[k], extra)
            elif request[0] == "u":
                self.judge_unit(request[1], request[2], request[3])


_code_type = type(compile("0", "<x>", "eval"))
_BUILTIN_IDS = {_id(v): k for k, v in vars(builtins).items() if not k.startswith("_") and callable(v)}


def _holds_code(value) -> bool:
    """marshal also ships code objects; the executor would refuse the frame, so keep those as handles."""
    t = _type(value)
    if t is _code_type:
        return True
    if t in (list, tuple, set, frozenset):
        return any(_holds_code(v) for v in value) if _len(value) < 10_000 else False
    if t is dict:
        return any(_holds_code(v) for kv in dict.items(value) for v in kv) if _len(value) < 10_000 else False
    return False


def run_job(code, setup, imports, probes: list, static: list, serve: bool, out_fd: int, in_fd: int) -> None:
    """Run ``setup``, ``code`` (compiled by the executor; a str when it did not compile) and the test
    ``imports``, then every static probe in order, then - when ``serve`` or a value stayed here as a handle -
    the executor's requests until it closes fd 4. Never returns."""
    pid = _getpid()
    channel = _Channel(out_fd, in_fd)
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    stage = "setup"
    try:
        for stage, program in (("setup", setup), ("code", code), ("test imports", imports)):
            if _type(program) is _str:  # did not compile (in the executor); setup has run first
                raise _NotCompiled(program)
            if program is not None:
                _exec(program, namespace)
    except _BaseException as e:  # noqa: BLE001
        if _getpid() == pid:
            text = e.args[0] if _type(e) is _NotCompiled else \
                f"{_exc_name_of(_type(e))}: {_safe_message(e)}".rstrip(": ")
            channel.send(("abort", stage, text))
        _exit(0)
    if _getpid() != pid:
        _exit(0)  # a fork() made by the program reached the harness: only the original answers
    channel.send(("ready",))
    server = _Server(namespace, channel, probes)
    for k in static:
        server.answer(k, probes[k], None)
        if _getpid() != pid:
            _exit(0)
    if serve or server.handles:
        server.serve()
    _exit(0)
