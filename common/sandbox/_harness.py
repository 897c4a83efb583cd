"""In-sandbox side of a job: runs the program, evaluates the probes it is sent and ships their values.

This module runs inside the forked, already-isolated child. The judging happens elsewhere (``_judge``, in the
executor): here we only

* run ``setup``, the program and the test imports, in one namespace (``__name__ == "__sandbox__"``);
* evaluate each probe (``_program``: a call of the program's code, with its inputs) and write its value as a
  frame (``_wire``) to fd 3 - plain data as is, anything else as a handle kept in this process, an exception as
  its type name and message (never the candidate's ``__str__``);
* answer the executor's requests on fd 4: more probes (with values from the judge), and units the judge could
  not decide because they touch a handle. Only then does a test's expected value enter this process; it is
  judged here with the comparison checks below, and the executor records that it was.

The comparison checks (kept from the first sandbox, for those in-candidate units): asserts are rewritten so a
comparison only counts between "honest" operands, whose comparison and truth dunders (at any depth inside
lists, tuples, dicts, sets and deques) are implemented in C or in files installed under the interpreter's
prefix; every builtin used here is bound at import, before any candidate code runs.
"""

from __future__ import annotations

import ast
import builtins
import marshal
import operator
import os
import sys
import types
from collections import deque as _deque

from _wire import FRAME_CAP

# Bound at import (before any candidate code runs): the candidate may rebind the builtins, not these names.
# Copying every public builtin into this module's globals makes `list`, `type`, `isinstance`... below resolve
# here first, so a candidate that patches `builtins.list` cannot switch the checks off.
globals().update({k: v for k, v in vars(builtins).items() if not k.startswith("_")})
_exec, _compile, _type, _id, _len, _bool, _issubclass = exec, compile, type, id, len, bool, issubclass
_str, _repr, _tuple, _isinstance = str, repr, tuple, isinstance
_BaseException, _AssertionError = BaseException, AssertionError
_write, _read, _exit, _getpid, _urandom = os.write, os.read, os._exit, os.getpid, os.urandom
_eval = eval
_mro_of = type.__dict__["__mro__"].__get__
_dict_of = type.__dict__["__dict__"].__get__
_flags_of = type.__dict__["__flags__"].__get__
_name_of = type.__dict__["__qualname__"].__get__
_stdout, _stderr = sys.stdout, sys.stderr
_contains, _FunctionType, _SimpleNamespace = operator.contains, types.FunctionType, types.SimpleNamespace
_C_DESCRIPTORS = (types.WrapperDescriptorType, types.MethodDescriptorType)

_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: the class was created at run time (a `class` statement), not in C
_CMP_DUNDERS = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__")
_TRUTH_DUNDERS = ("__bool__", "__len__")
_CONTAINS_DUNDERS = _CMP_DUNDERS + ("__contains__", "__iter__", "__getitem__")
_LEAF_TYPE_IDS = frozenset(map(id, (int, float, complex, bool, str, bytes, type(None), range)))
_CHECK_BUDGET = 1_000_000  # values visited per comparison; a legit MBPP result is a few hundred at most
_DETAIL_MAX = 300

# (function, symbol, dunders to vet) per ast comparison operator; `in` tests the right operand's __contains__.
_OPS = (
    (operator.eq, "==", _CMP_DUNDERS), (operator.ne, "!=", _CMP_DUNDERS), (operator.lt, "<", _CMP_DUNDERS),
    (operator.le, "<=", _CMP_DUNDERS), (operator.gt, ">", _CMP_DUNDERS), (operator.ge, ">=", _CMP_DUNDERS),
    (operator.is_, "is", ()), (operator.is_not, "is not", ()),
    (lambda a, b: _contains(b, a), "in", _CONTAINS_DUNDERS),
    (lambda a, b: not _contains(b, a), "not in", _CONTAINS_DUNDERS),
)
_OP_INDEX = {ast.Eq: 0, ast.NotEq: 1, ast.Lt: 2, ast.LtE: 3, ast.Gt: 4, ast.GtE: 5, ast.Is: 6, ast.IsNot: 7,
             ast.In: 8, ast.NotIn: 9}

TRUSTED_ROOTS: tuple = ()  # filled by the executor at start-up (stdlib and site-packages directories)


class UntrustedComparison(AssertionError):
    """A comparison involved an object whose comparison/truth dunders were written by the candidate."""


def set_trusted_roots(paths) -> None:
    global TRUSTED_ROOTS
    roots = set()
    for p in paths:
        if p:
            roots.update({p.rstrip("/") + "/", os.path.realpath(p).rstrip("/") + "/"})
    TRUSTED_ROOTS = _tuple(sorted(roots))


def _trusted_file(filename: str) -> bool:
    if filename.startswith("<frozen "):
        return True  # deep-frozen stdlib modules (_collections_abc, os, ...)
    return filename.startswith(TRUSTED_ROOTS) and "/<" not in filename


_type_cache: dict = {}


def _type_problem(t, names) -> str | None:
    """Why type ``t`` cannot be trusted for ``names`` (None when it can). Cached by id, keeping ``t`` alive."""
    key = (_id(t), names)
    hit = _type_cache.get(key)
    if hit is not None:
        return hit[1]
    problem = None
    for name in names:
        for klass in _mro_of(t):
            d = _dict_of(klass)
            if name not in d:
                continue
            f = d[name]
            if not _flags_of(klass) & _HEAPTYPE or f is None:
                break  # implemented in C, or explicitly disabled
            if _type(f) is _FunctionType and _trusted_file(f.__code__.co_filename):
                break
            if _type(f) in _C_DESCRIPTORS:
                break
            problem = f"{_name_of(klass)}.{name} is defined by the program under test"
            break
        if problem:
            break
    _type_cache[key] = (t, problem)
    return problem


def _children(x, t):
    if _issubclass(t, list):
        return list.__iter__(x)
    if _issubclass(t, tuple):
        return tuple.__iter__(x)
    if _issubclass(t, dict):
        return (v for kv in dict.items(x) for v in kv)
    if _issubclass(t, (set, frozenset)):
        return set.__iter__(x) if _issubclass(t, set) else frozenset.__iter__(x)
    if _issubclass(t, _deque):
        return _deque.__iter__(x)
    if t is _SimpleNamespace:
        return dict.values(object.__getattribute__(x, "__dict__"))
    if t is slice:
        return (x.start, x.stop, x.step)
    return ()


def _value_problem(value, names) -> str | None:
    """Walk ``value`` (containers included, cycles guarded) and report the first untrusted type."""
    stack, seen, budget = [value], set(), _CHECK_BUDGET
    while stack:
        x = stack.pop()
        t = _type(x)
        if _id(t) in _LEAF_TYPE_IDS:
            continue
        if _id(x) in seen:
            continue
        seen.add(_id(x))
        budget -= 1
        if budget < 0:
            return "value too large to verify"
        problem = _type_problem(t, names)
        if problem:
            return problem
        stack.extend(_children(x, t))
    return None


def _cmp(left, ops, right, *lazy):
    """Replacement for a (possibly chained) comparison: same semantics, but only between honest operands."""
    last = _len(ops) - 1
    for i in range(last + 1):
        if i:
            left, right = right, lazy[i - 1]()
        fn, symbol, names = _OPS[ops[i]]
        if names:
            problem = _value_problem(left, names) or _value_problem(right, names)
            if problem:
                raise UntrustedComparison(f"untrusted comparison ({symbol}): {problem}")
        result = fn(left, right)
        if i == last or not _truth(result):
            return result
    return result  # pragma: no cover - loop always returns


def _truth(value) -> bool:
    t = _type(value)
    if t is bool:
        return value
    problem = _type_problem(t, _TRUTH_DUNDERS)
    if problem:
        raise UntrustedComparison(f"untrusted truth value: {problem}")
    return _bool(value)


_NO_ARGS = ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None,
                         defaults=[])


def _located(new, old):
    new.lineno, new.col_offset = old.lineno, old.col_offset
    new.end_lineno, new.end_col_offset = old.end_lineno, old.end_col_offset
    return new


def _rewrite(node, cmp_name: str, truth_name: str):
    """Return ``node`` with every comparison routed through ``_cmp`` and every assert's truth test through
    ``_truth`` (what an ast.NodeTransformer would do, in a third of the time: it runs once per new test)."""
    for field in node._fields:
        value = getattr(node, field, None)
        if _type(value) is list:
            value[:] = [_rewrite(v, cmp_name, truth_name) if isinstance(v, ast.AST) else v for v in value]
        elif isinstance(value, ast.AST):
            setattr(node, field, _rewrite(value, cmp_name, truth_name))
    if _type(node) is ast.Compare:
        ops = _located(ast.Constant(_tuple(_OP_INDEX[_type(op)] for op in node.ops)), node)
        lazy = [_located(ast.Lambda(_NO_ARGS, c), c) for c in node.comparators[1:]]
        func = _located(ast.Name(cmp_name, ast.Load()), node)
        return _located(ast.Call(func, [node.left, ops, node.comparators[0]] + lazy, []), node)
    if _type(node) is ast.Assert:
        node.test = _truth_context(node.test, truth_name)
    return node


def _truth_context(e, truth_name: str):
    if _type(e) is ast.BoolOp:
        e.values = [_truth_context(v, truth_name) for v in e.values]
        return e
    if _type(e) is ast.UnaryOp and _type(e.op) is ast.Not:
        e.operand = _truth_context(e.operand, truth_name)
        return e
    return _located(ast.Call(_located(ast.Name(truth_name, ast.Load()), e), [e], []), e)


# Names under which the comparison helpers are injected into the candidate's namespace (random per executor,
# so a candidate cannot pre-define them).
CMP_NAME, TRUTH_NAME = (f"__mi_{kind}_{_urandom(4).hex()}" for kind in ("cmp", "truth"))
_compiled_programs: dict = {}


def _compiled(cache: dict, key, limit: int, build):
    """``build()`` (a code object) or, when it raises, why (a str); remembered in ``cache``, which is emptied
    once it holds more than ``limit`` entries."""
    hit = cache.get(key)
    if hit is None:
        try:
            hit = build()
        except _BaseException as e:  # noqa: BLE001
            hit = _describe(e)
        if _len(cache) > limit:
            cache.clear()
        cache[key] = hit
    return hit


def compile_program(source: str, filename: str):
    """Compile the candidate (``<candidate>``) or its setup (``<setup>``) in the executor, before forking.

    Compiling in the child cost ~0.6 ms of CPU and ~80 copy-on-write page faults per candidate (a third of the
    child's work); the child now inherits the code object. Compiling runs none of the program's code. Returns the
    code object, or (a str) the error the child reports when it reaches that stage (setup still runs first).
    ``dont_inherit``: this module's ``from __future__ import annotations`` must not leak into the program (it
    would let ``def f(x: List[int])`` without ``import List`` pass, where ``python`` raises NameError).
    Cached up to 2,000 entries: samples are mostly distinct, so the cache serves duplicates only.
    """
    return _compiled(_compiled_programs, (source, filename), 2_000,
                     lambda: _compile(source, filename, "exec", dont_inherit=True, optimize=0))


def rewrite_checked(tree):
    """``tree`` (an ast.Module) with comparisons and assert truth values routed through the checks."""
    return _rewrite(tree, CMP_NAME, TRUTH_NAME)


def _describe(exc) -> str:
    try:
        text = f"{_type(exc).__name__}: {exc}" if _str(exc) else _type(exc).__name__
    except _BaseException:
        text = _type(exc).__name__
    return text


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if _len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


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
