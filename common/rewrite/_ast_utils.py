"""AST helpers shared by the rewrite transforms: control flow (termination, negation, boolean tests), the
statement blocks a transform may edit, and evaluation order. Parsing and emitting live in ``_ast_source``, names
and scopes in ``_ast_names``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterator

from common.rewrite._ast_names import COMPREHENSIONS, bound_in, is_pure, rebinds
from common.rewrite._ast_source import is_marker, real


# ---------------------------------------------------------------------------------------------------- control flow

def terminates(body: list[ast.stmt]) -> bool:
    """Whether executing ``body`` never falls through to the next statement (return/raise/continue/break)."""
    stmts = real(body)
    if not stmts:
        return False
    last = stmts[-1]
    if isinstance(last, (ast.Return, ast.Raise, ast.Continue, ast.Break)):
        return True
    if isinstance(last, ast.If):
        return bool(last.orelse) and terminates(last.body) and terminates(last.orelse)
    return False


def negate(test: ast.expr) -> ast.expr:
    """An expression whose truth value is the opposite of ``test``'s (exactly, for any operand types)."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return test.operand
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        flips = {ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
        op = type(test.ops[0])
        if op in flips:
            return ast.Compare(left=test.left, ops=[flips[op]()], comparators=test.comparators)
    return ast.UnaryOp(op=ast.Not(), operand=test)


_BOOL_CALLS = frozenset({"isinstance", "issubclass", "callable", "hasattr", "bool", "any", "all"})


def is_boolean(node: ast.expr, tree: ast.AST) -> bool:
    """Whether ``node`` evaluates to a bool for the builtin types (comparisons, ``not``, bool builtins...)."""
    if isinstance(node, ast.Compare):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return True
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return True
    if isinstance(node, ast.BoolOp):
        return all(is_boolean(value, tree) for value in node.values)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _BOOL_CALLS:
        return not rebinds(tree, node.func.id)
    return False


# ---------------------------------------------------------------------------------------------------- blocks

@dataclass
class Block:
    """A statement list of the tree that a transform may edit in place."""

    body: list[ast.stmt]
    func: ast.FunctionDef | None  # innermost enclosing function (None at module level)
    in_loop: bool  # inside a for/while of that function
    in_try: bool  # inside a try/with of that function (an exception may be caught and state observed)
    owner: ast.AST


def blocks(tree: ast.Module) -> list[Block]:
    """Every statement list outside class bodies and async functions, in source order."""
    found: list[Block] = []

    def visit(owner: ast.AST, func, in_loop: bool, in_try: bool) -> None:
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            value = getattr(owner, field, None)
            if not isinstance(value, list) or not value:
                continue
            if field in ("handlers", "cases"):
                for sub in value:
                    visit(sub, func, in_loop, True)
                continue
            if not isinstance(value[0], ast.stmt):
                continue
            found.append(Block(value, func, in_loop, in_try, owner))
            for stmt in value:
                if isinstance(stmt, (ast.ClassDef, ast.AsyncFunctionDef, ast.AsyncFor, ast.AsyncWith)):
                    continue
                if isinstance(stmt, ast.FunctionDef):
                    visit(stmt, stmt, False, False)
                elif isinstance(stmt, (ast.For, ast.While)):
                    visit(stmt, func, True, in_try)
                elif isinstance(stmt, (ast.Try, ast.With)) or type(stmt).__name__ == "TryStar":
                    visit(stmt, func, in_loop, True)
                else:
                    visit(stmt, func, in_loop, in_try)

    visit(tree, None, False, False)
    return found


def functions(tree: ast.Module) -> list[ast.FunctionDef]:
    """Plain functions outside classes (top-level and nested), in source order."""
    return [b.owner for b in blocks(tree) if isinstance(b.owner, ast.FunctionDef) and b.body is b.owner.body]


def docstring_node(fn: ast.AST) -> ast.Expr | None:
    body = getattr(fn, "body", None)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str) and not is_marker(body[0]):
        return body[0]
    return None


def body_start(fn: ast.AST) -> int:
    """Index of the first statement after the docstring."""
    return 1 if docstring_node(fn) is not None else 0


def top_level_names(tree: ast.Module) -> frozenset[str]:
    """Names a test may use: everything bound at module level."""
    return frozenset(bound_in(tree.body))


# ---------------------------------------------------------------------------------------------------- evaluation order

def eager_paths(root: ast.expr) -> Iterator[tuple[ast.expr, ast.AST, str, int | None]]:
    """Sub-expressions of ``root`` evaluated before anything else with side effects: every node evaluated
    earlier is pure, and none sits in a conditionally evaluated (short-circuit) or deferred position.

    Yields (node, parent, field, index) so the caller can replace the node in its parent.
    """
    def walk(node: ast.expr) -> Iterator[tuple[ast.expr, ast.AST, str, int | None]]:
        for field, index, child in _ordered_children(node):
            if child is None:
                continue
            if _deferred(node, field, index):
                return  # this child and the later ones are evaluated conditionally
            yield child, node, field, index
            yield from walk(child)
            if not _pure_subtree(child):
                return  # later siblings would move before a side effect
    if isinstance(root, ast.expr):
        yield from walk(root)


def _deferred(parent: ast.AST, field: str, index: int | None) -> bool:
    """Children whose evaluation depends on earlier ones, or never happens in the enclosing frame."""
    if isinstance(parent, (ast.Lambda,) + COMPREHENSIONS):
        return True
    if isinstance(parent, ast.BoolOp) and index:
        return True
    if isinstance(parent, ast.IfExp) and field != "test":
        return True
    if isinstance(parent, ast.Compare) and field == "comparators" and index:
        return True
    return False


def _pure_subtree(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return isinstance(node.value, ast.Name)
    if isinstance(node, (ast.keyword, ast.Starred)):
        return _pure_subtree(node.value)
    return is_pure(node)


def _ordered_children(node: ast.AST) -> list[tuple[str, int | None, ast.AST | None]]:
    """Children of an expression in evaluation order, as (field, index, child)."""
    if isinstance(node, ast.Dict):
        out: list[tuple[str, int | None, ast.AST | None]] = []
        for i, (k, v) in enumerate(zip(node.keys, node.values)):
            out += [("keys", i, k), ("values", i, v)]
        return out
    if isinstance(node, COMPREHENSIONS) or isinstance(node, ast.Lambda):
        return []
    out = []
    for field in node._fields:
        value = getattr(node, field)
        if isinstance(value, list):
            out += [(field, i, v) for i, v in enumerate(value) if isinstance(v, (ast.expr, ast.keyword))]
        elif isinstance(value, (ast.expr, ast.keyword)):
            out.append((field, None, value))
    return out


def replace_child(parent: ast.AST, field: str, index: int | None, new: ast.AST) -> None:
    if index is None:
        setattr(parent, field, new)
    else:
        getattr(parent, field)[index] = new


def statement_expression(stmt: ast.stmt) -> tuple[str, ast.expr] | None:
    """The expression of a statement that is evaluated first, as (field, expr), when the statement has one."""
    if isinstance(stmt, (ast.Return, ast.Expr)) and stmt.value is not None:
        return "value", stmt.value
    if isinstance(stmt, ast.Assign):
        return "value", stmt.value
    if isinstance(stmt, ast.If):
        return "test", stmt.test
    if isinstance(stmt, ast.For):
        return "iter", stmt.iter
    return None
