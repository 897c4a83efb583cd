"""Conditionals: if/else <-> conditional expression, guard clauses <-> nested else, branch inversion, and
``if c: return True / return False`` <-> ``return c``.

All of these are exact for any operand types except the boolean-return pair, which relies on the condition
being a bool already (comparisons, ``not``, isinstance... of builtin values): see ``is_boolean``.
"""

from __future__ import annotations

import ast

from common.rewrite._ast_names import rebinds
from common.rewrite._ast_source import real
from common.rewrite._ast_utils import blocks, is_boolean, negate, terminates
from common.rewrite.base import Context, Site, site_transform

_MAX_CHAIN = 3  # at most this many branches folded into one conditional expression


def _return_value(stmt: ast.stmt) -> ast.expr:
    return stmt.value if stmt.value is not None else ast.Constant(value=None)


def _as_value(body: list[ast.stmt], kind: str, name: str | None, depth: int,
              tail: ast.expr | None = None) -> ast.expr | None:
    """The value a branch returns (kind 'return') or assigns to ``name`` (kind 'assign'), folding nested
    if/else chains into conditional expressions; an if without else falls through to ``tail`` (the value
    of the return statement after the whole if). None when the branch is anything else."""
    stmts = real(body)
    if len(stmts) != 1:
        return None
    stmt = stmts[0]
    if kind == "return" and isinstance(stmt, ast.Return):
        return _return_value(stmt)
    if kind == "assign" and isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
            and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == name:
        return stmt.value
    if isinstance(stmt, ast.If) and depth < _MAX_CHAIN:
        return _fold(stmt, kind, name, depth + 1, tail)
    return None


def _fold(stmt: ast.If, kind: str, name: str | None, depth: int, tail: ast.expr | None) -> ast.expr | None:
    then = _as_value(stmt.body, kind, name, depth, tail)
    other = _as_value(stmt.orelse, kind, name, depth, tail) if stmt.orelse else tail
    if then is None or other is None:
        return None
    return ast.IfExp(test=stmt.test, body=then, orelse=other)


@site_transform("if_to_ifexp")
def if_to_ifexp(tree: ast.Module, ctx: Context) -> list[Site]:
    """``if c: return a / else: return b`` (or ``if c: return a`` + ``return b``) -> ``return a if c else b``
    (elif chains too); ``if c: x = a / else: x = b`` -> ``x = a if c else b``."""
    sites: list[Site] = []
    for block in blocks(tree):
        body = block.body
        for i, stmt in enumerate(body):
            if not isinstance(stmt, ast.If):
                continue
            first = real(stmt.body)
            if len(first) != 1:
                continue
            if isinstance(first[0], ast.Return):
                kind, name = "return", None
            elif isinstance(first[0], ast.Assign) and len(first[0].targets) == 1 \
                    and isinstance(first[0].targets[0], ast.Name):
                kind, name = "assign", first[0].targets[0].id
            else:
                continue
            value, consumed = _fold(stmt, kind, name, 1, None), 1
            if value is None and kind == "return" and i + 1 < len(body) and isinstance(body[i + 1], ast.Return):
                value, consumed = _fold(stmt, kind, name, 1, _return_value(body[i + 1])), 2
            if value is None:
                continue

            def apply(body=body, i=i, value=value, consumed=consumed, kind=kind, name=name):
                new = ast.Return(value=value) if kind == "return" else \
                    ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=value)
                body[i:i + consumed] = [new]
            sites.append(apply)
    return sites


@site_transform("ifexp_to_if")
def ifexp_to_if(tree: ast.Module, ctx: Context) -> list[Site]:
    """``return a if c else b`` -> ``if c: return a / else: return b``; ``x = a if c else b`` -> if/else."""
    sites: list[Site] = []
    for block in blocks(tree):
        for i, stmt in enumerate(block.body):
            if isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.IfExp):
                def make(value: ast.expr) -> ast.stmt:
                    return ast.Return(value=value)
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                    and isinstance(stmt.value, ast.IfExp):
                def make(value: ast.expr, name=stmt.targets[0].id) -> ast.stmt:
                    return ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=value)
            else:
                continue

            def apply(body=block.body, i=i, ifexp=stmt.value, make=make):
                body[i] = ast.If(test=ifexp.test, body=[make(ifexp.body)], orelse=[make(ifexp.orelse)])
            sites.append(apply)
    return sites


@site_transform("else_to_guard")
def else_to_guard(tree: ast.Module, ctx: Context) -> list[Site]:
    """``if c: <...; return> / else: <rest>`` -> guard clause ``if c: <...; return>`` followed by ``<rest>``
    (also removes ``elif``: the if-branch never falls through, so the else-branch can be de-indented)."""
    sites: list[Site] = []
    for block in blocks(tree):
        for i, stmt in enumerate(block.body):
            if isinstance(stmt, ast.If) and stmt.orelse and terminates(stmt.body):
                def apply(body=block.body, i=i, stmt=stmt):
                    rest = stmt.orelse
                    stmt.orelse = []
                    body[i + 1:i + 1] = rest
                sites.append(apply)
    return sites


@site_transform("guard_to_else")
def guard_to_else(tree: ast.Module, ctx: Context) -> list[Site]:
    """Guard clause ``if c: <...; return>`` + ``<rest>`` -> ``if c: <...; return> / else: <rest>``."""
    sites: list[Site] = []
    for block in blocks(tree):
        if block.func is None:
            continue
        body = block.body
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.If) and not stmt.orelse and terminates(stmt.body) and real(body[i + 1:]):
                def apply(body=body, i=i, stmt=stmt):
                    stmt.orelse = body[i + 1:]
                    del body[i + 1:]
                sites.append(apply)
    return sites


@site_transform("invert_if")
def invert_if(tree: ast.Module, ctx: Context) -> list[Site]:
    """``if c: A / else: B`` -> ``if not c: B / else: A``."""
    sites: list[Site] = []
    for block in blocks(tree):
        for stmt in block.body:
            if isinstance(stmt, ast.If) and real(stmt.orelse):
                def apply(stmt=stmt):
                    stmt.test, stmt.body, stmt.orelse = negate(stmt.test), stmt.orelse, stmt.body
                sites.append(apply)
    return sites


def _bool_constant(stmt: ast.stmt) -> bool | None:
    if isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, bool):
        return stmt.value.value
    return None


def _truth(test: ast.expr, positive: bool, tree: ast.Module) -> ast.expr | None:
    """A bool-valued expression equal to ``bool(test)`` (or ``not test``), None when that needs a shadowed bool."""
    value = test if positive else negate(test)
    if is_boolean(value, tree):
        return value
    if not positive:
        return ast.UnaryOp(op=ast.Not(), operand=test)
    if not rebinds(tree, "bool"):
        return ast.Call(func=ast.Name(id="bool", ctx=ast.Load()), args=[value], keywords=[])
    return None


@site_transform("bool_return_compress")
def bool_return_compress(tree: ast.Module, ctx: Context) -> list[Site]:
    """``if c: return True / [else:] return False`` -> ``return c`` (``bool(c)`` when c may not be a bool)."""
    sites: list[Site] = []
    for block in blocks(tree):
        body = block.body
        for i, stmt in enumerate(body):
            if not isinstance(stmt, ast.If):
                continue
            first = real(stmt.body)
            if len(first) != 1 or _bool_constant(first[0]) is None:
                continue
            if stmt.orelse:
                rest, consumed = real(stmt.orelse), 1
            elif i + 1 < len(body):
                rest, consumed = [body[i + 1]], 2
            else:
                continue
            if len(rest) != 1 or _bool_constant(rest[0]) is None or _bool_constant(rest[0]) == _bool_constant(first[0]):
                continue

            value = _truth(stmt.test, bool(_bool_constant(first[0])), tree)
            if value is None:
                continue

            def apply(body=body, i=i, consumed=consumed, value=value):
                body[i:i + consumed] = [ast.Return(value=value)]
            sites.append(apply)
    return sites


@site_transform("bool_return_expand")
def bool_return_expand(tree: ast.Module, ctx: Context) -> list[Site]:
    """``return c`` (c a comparison or other bool) -> ``if c: return True / else: return False``."""
    sites: list[Site] = []
    for block in blocks(tree):
        for i, stmt in enumerate(block.body):
            if isinstance(stmt, ast.Return) and stmt.value is not None and is_boolean(stmt.value, tree) \
                    and not isinstance(stmt.value, ast.Constant):
                def apply(body=block.body, i=i, test=stmt.value):
                    body[i] = ast.If(test=test, body=[ast.Return(value=ast.Constant(value=True))],
                                     orelse=[ast.Return(value=ast.Constant(value=False))])
                sites.append(apply)
    return sites
