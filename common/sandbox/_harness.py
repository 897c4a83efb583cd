"""Comparison checks for units judged inside the candidate's process, and compilation of the program.

Most tests are judged in the executor (``_judge``) on plain values and need none of this. A unit whose value
could not be shipped (an instance of a class the program defines) is judged inside the candidate's process
(``_child``); there, asserts are rewritten so a comparison only counts between "honest" operands: their
comparison and truth dunders (``__eq__``, ``__lt__``, ``__bool__``, ... at any depth inside lists, tuples,
dicts, sets and deques) are implemented in C or in files installed under the interpreter's prefix (stdlib,
site-packages). An object defined by the candidate with ``__eq__ = lambda *a: True`` therefore fails
``assert make() == 5`` with a clear detail instead of passing; a class that does not override those dunders
(a plain record, an ``int`` subclass) still compares normally. Every builtin used here is bound at import,
before any candidate code runs, so rebinding ``builtins.type`` or ``builtins.list`` cannot blind the checks.
"""

from __future__ import annotations

import ast
import builtins
import operator
import os
import sys
import types
from collections import deque as _deque

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
