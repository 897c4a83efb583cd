"""Statement-level rewrites: augmented <-> plain assignment, chained comparisons split <-> merged, and temporary
variables introduced (verbose intermediate names) <-> inlined.

Moving an expression into or out of a statement is only done where it is evaluated *first* (everything
evaluated before it is a plain name or constant, and it is not in a short-circuit branch): ``eager_paths``.
"""

from __future__ import annotations

import ast
from typing import Iterator

from common.rewrite._ast_names import (BUILTIN_NAMES, count_name, declared_global, expr_ok, fresh_name, function_locals,
                         has_nested_scope, identifiers, is_dynamic, is_pure, own_scope_nodes, params_of, rebinds,
                         same)
from common.rewrite._ast_utils import Block, blocks, eager_paths, is_boolean, negate, replace_child, statement_expression
from common.rewrite.base import Context, Site, site_transform

_SCALAR_TYPES = (int, float, complex, str, bytes, bool, type(None))
_SCALAR_CALLS = frozenset({"len", "int", "float", "str", "abs", "round", "ord", "chr", "bool", "sum", "min",
                           "max", "pow", "hash"})
_COMPARE_FLIP = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.Eq,
                 ast.NotEq: ast.NotEq}


def immutable_locals(fn: ast.FunctionDef, tree: ast.Module) -> set[str]:
    """Locals of ``fn`` that always hold numbers/strings: every binding is a scalar constant, a scalar
    builtin call, an augmented assignment or ``x = x <op> ...``. For them ``x += e`` equals ``x = x + e``."""
    candidates = function_locals(fn) - set(params_of(fn)) - declared_global(fn)
    bad: set[str] = set()
    seen: set[str] = set()
    plain_targets: set[int] = set()  # Name nodes bound by a checked assignment (parents come before children)
    for node in own_scope_nodes(fn):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target = node.targets[0]
            plain_targets.add(id(target))
            seen.add(target.id)
            if not _scalar_value(node.value, target.id, tree):
                bad.add(target.id)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            plain_targets.add(id(node.target))
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) and id(node) not in plain_targets:
            bad.add(node.id)  # for-targets, with-as, del, tuple unpacking, chained assignment...
    return {name for name in candidates & seen if name not in bad}


def _scalar_value(value: ast.expr, name: str, tree: ast.Module) -> bool:
    if isinstance(value, ast.Constant):
        return isinstance(value.value, _SCALAR_TYPES)
    if isinstance(value, ast.UnaryOp) and isinstance(value.operand, ast.Constant):
        return True
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in _SCALAR_CALLS:
        return not rebinds(tree, value.func.id)
    if isinstance(value, ast.BinOp):
        return any(isinstance(side, ast.Name) and side.id == name for side in (value.left, value.right))
    return False


def _simple_function(fn: ast.FunctionDef | None) -> bool:
    return fn is not None and not has_nested_scope(fn) and not is_dynamic(fn)


def _blocks_with_immutable_locals(tree: ast.Module) -> Iterator[tuple[Block, set[str]]]:
    """Each block whose function has locals that always hold a number or string, with those names (computed once
    per function): where ``x += e`` and ``x = x + e`` mean the same."""
    memo: dict[int, set[str]] = {}
    for block in blocks(tree):
        if id(block.func) not in memo:
            memo[id(block.func)] = immutable_locals(block.func, tree) if _simple_function(block.func) else set()
        if memo[id(block.func)]:
            yield block, memo[id(block.func)]


@site_transform("augassign_to_assign")
def augassign_to_assign(tree: ast.Module, ctx: Context) -> list[Site]:
    """``x += e`` -> ``x = x + e`` for a local that always holds a number or string."""
    sites: list[Site] = []
    for block, safe in _blocks_with_immutable_locals(tree):
        for i, stmt in enumerate(block.body):
            if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id in safe:
                def apply(body=block.body, i=i, stmt=stmt):
                    name = stmt.target.id
                    value = ast.BinOp(left=ast.Name(id=name, ctx=ast.Load()), op=stmt.op, right=stmt.value)
                    body[i] = ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=value)
                sites.append(apply)
    return sites


@site_transform("assign_to_augassign")
def assign_to_augassign(tree: ast.Module, ctx: Context) -> list[Site]:
    """``x = x + e`` -> ``x += e`` for a local that always holds a number or string."""
    sites: list[Site] = []
    for block, safe in _blocks_with_immutable_locals(tree):
        for i, stmt in enumerate(block.body):
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                    and stmt.targets[0].id in safe and isinstance(stmt.value, ast.BinOp) \
                    and isinstance(stmt.value.left, ast.Name) and stmt.value.left.id == stmt.targets[0].id:
                def apply(body=block.body, i=i, stmt=stmt):
                    body[i] = ast.AugAssign(target=ast.Name(id=stmt.targets[0].id, ctx=ast.Store()),
                                            op=stmt.value.op, value=stmt.value.right)
                sites.append(apply)
    return sites


def _expressions(tree: ast.Module, kind: type) -> list[tuple[ast.AST, str, int | None, ast.AST]]:
    """(parent, field, index, node) for every ``kind`` node outside class bodies."""
    found = []
    stack: list[ast.AST] = [tree]
    while stack:
        parent = stack.pop()
        for field, value in ast.iter_fields(parent):
            items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            for index, child in items:
                if not isinstance(child, ast.AST) or isinstance(child, ast.ClassDef):
                    continue
                if isinstance(child, kind):
                    found.append((parent, field, index, child))
                stack.append(child)
    found.reverse()
    return found


@site_transform("split_comparison")
def split_comparison(tree: ast.Module, ctx: Context) -> list[Site]:
    """``a < b < c`` -> ``a < b and b < c`` (the middle operands are names or constants)."""
    sites: list[Site] = []
    for parent, field, index, node in _expressions(tree, ast.Compare):
        if len(node.ops) < 2 or not all(is_pure(c) for c in node.comparators[:-1]):
            continue

        def apply(parent=parent, field=field, index=index, node=node):
            lefts = [node.left] + node.comparators[:-1]
            parts = [ast.Compare(left=left, ops=[op], comparators=[right])
                     for left, op, right in zip(lefts, node.ops, node.comparators)]
            replace_child(parent, field, index, ast.BoolOp(op=ast.And(), values=parts))
        sites.append(apply)
    return sites


def _oriented(compare: ast.Compare, shared: ast.expr, shared_first: bool) -> ast.Compare | None:
    """``compare`` (single op) written with ``shared`` as its left (shared_first) or right operand."""
    left, op, right = compare.left, compare.ops[0], compare.comparators[0]
    if (same(left, shared) if shared_first else same(right, shared)):
        return compare
    if type(op) not in _COMPARE_FLIP:
        return None
    if same(right, shared) if shared_first else same(left, shared):
        return ast.Compare(left=right, ops=[_COMPARE_FLIP[type(op)]()], comparators=[left])
    return None


@site_transform("merge_comparison")
def merge_comparison(tree: ast.Module, ctx: Context) -> list[Site]:
    """``a < b and b < c`` (also ``x >= lo and x <= hi``) -> ``a < b < c`` / ``lo <= x <= hi``."""
    sites: list[Site] = []
    for parent, field, index, node in _expressions(tree, ast.BoolOp):
        if not isinstance(node.op, ast.And):
            continue
        for j in range(len(node.values) - 1):
            a, b = node.values[j], node.values[j + 1]
            if not (isinstance(a, ast.Compare) and isinstance(b, ast.Compare) and len(a.ops) == len(b.ops) == 1):
                continue
            merged = None
            for shared in (a.comparators[0], a.left):
                if not is_pure(shared):
                    continue
                first, second = _oriented(a, shared, False), _oriented(b, shared, True)
                if first is not None and second is not None:
                    merged = ast.Compare(left=first.left, ops=[first.ops[0], second.ops[0]],
                                         comparators=[shared, second.comparators[0]])
                    break
            if merged is None:
                continue

            def apply(parent=parent, field=field, index=index, node=node, j=j, merged=merged):
                values = node.values[:j] + [merged] + node.values[j + 2:]
                replace_child(parent, field, index,
                              values[0] if len(values) == 1 else ast.BoolOp(op=ast.And(), values=values))
            sites.append(apply)
    return sites


def suggest_name(node: ast.expr) -> str:
    """A descriptive variable name for the value of ``node``."""
    if isinstance(node, (ast.Compare, ast.BoolOp)) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
        return "condition"
    if isinstance(node, (ast.ListComp, ast.List)):
        return "items"
    if isinstance(node, (ast.SetComp, ast.Set)):
        return "unique_items"
    if isinstance(node, (ast.DictComp, ast.Dict)):
        return "mapping"
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        known = {"len": "length", "sum": "total", "max": "largest", "min": "smallest", "sorted": "ordered",
                 "abs": "magnitude", "range": "indices", "str": "text", "int": "number", "list": "items",
                 "set": "unique_items", "split": "parts", "join": "joined", "count": "occurrences",
                 "reversed": "reversed_items", "zip": "pairs", "map": "mapped", "filter": "selected",
                 "round": "rounded", "pow": "power", "sqrt": "root", "lower": "lowered", "upper": "uppered",
                 "strip": "stripped", "replace": "replaced", "tuple": "values", "dict": "mapping"}
        return known.get(name, f"{name}_result" if name and name.isidentifier() and len(name) < 20 else "result")
    if isinstance(node, ast.BinOp):
        ops = {ast.Add: "total", ast.Sub: "difference", ast.Mult: "product", ast.Div: "quotient",
               ast.FloorDiv: "quotient", ast.Mod: "remainder", ast.Pow: "power"}
        return ops.get(type(node.op), "value")
    if isinstance(node, ast.Subscript):
        return "part" if isinstance(node.slice, ast.Slice) else "element"
    if isinstance(node, ast.IfExp):
        return "choice"
    return "value"


def _hoistable(node: ast.AST) -> bool:
    return isinstance(node, ast.expr) and not isinstance(
        node, (ast.Name, ast.Constant, ast.Slice, ast.Starred, ast.FormattedValue, ast.JoinedStr)) \
        and not (isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant)) \
        and isinstance(getattr(node, "ctx", ast.Load()), ast.Load) and expr_ok(node)


@site_transform("introduce_temp")
def introduce_temp(tree: ast.Module, ctx: Context) -> list[Site]:
    """Name an intermediate value: ``return f(x) + 1`` -> ``value = f(x)`` + ``return value + 1`` (also whole
    return values, if-conditions and loop iterables)."""
    taken = identifiers(tree) | set(BUILTIN_NAMES)
    sites: list[Site] = []
    for block in blocks(tree):
        if block.func is None or is_dynamic(block.func):
            continue
        for i, stmt in enumerate(block.body):
            found = statement_expression(stmt)
            if found is None:
                continue
            field, root = found
            candidates: list[tuple[ast.AST, str, int | None, ast.AST]] = []
            if _hoistable(root) and not isinstance(stmt, (ast.Assign, ast.Expr)):
                candidates.append((stmt, field, None, root))
            candidates += [(parent, f, index, node) for node, parent, f, index in eager_paths(root)
                           if _hoistable(node) and not (isinstance(parent, ast.Call) and f == "func")]
            for parent, f, index, node in candidates:
                def apply(body=block.body, stmt=stmt, parent=parent, f=f, index=index, node=node):
                    name = fresh_name(suggest_name(node), taken)
                    replace_child(parent, f, index, ast.Name(id=name, ctx=ast.Load()))
                    at = next(k for k, s in enumerate(body) if s is stmt)
                    body.insert(at, ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())], value=node))
                sites.append(apply)
    return sites


@site_transform("inline_temp")
def inline_temp(tree: ast.Module, ctx: Context) -> list[Site]:
    """Remove a temporary variable used once right after it is set: ``t = e`` + ``return t * 2`` ->
    ``return e * 2``."""
    sites: list[Site] = []
    for block in blocks(tree):
        fn = block.func
        if fn is None or is_dynamic(fn):
            continue
        body = block.body
        for i in range(len(body) - 1):
            stmt, nxt = body[i], body[i + 1]
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
                continue
            name = stmt.targets[0].id
            if count_name(fn, name) != 2 or name in declared_global(fn) or not expr_ok(stmt.value):
                continue
            found = statement_expression(nxt)
            if found is None:
                continue
            field, root = found
            use = [(parent, f, index) for node, parent, f, index in eager_paths(root)
                   if isinstance(node, ast.Name) and node.id == name]
            if isinstance(root, ast.Name) and root.id == name:
                use = [(nxt, field, None)]
            if len(use) != 1:
                continue

            def apply(body=body, i=i, value=stmt.value, use=use[0]):
                replace_child(*use, value)
                del body[i]
            sites.append(apply)
    return sites


def _negated_operand(value: ast.expr, tree: ast.Module) -> ast.expr:
    """``not value`` as a bool-valued expression (``a not in b`` rather than ``not a in b``)."""
    flipped = negate(value)
    return flipped if is_boolean(flipped, tree) else ast.UnaryOp(op=ast.Not(), operand=value)


@site_transform("de_morgan_expand")
def de_morgan_expand(tree: ast.Module, ctx: Context) -> list[Site]:
    """``not (a and b)`` -> ``not a or not b`` (and ``not (a or b)`` -> ``not a and not b``)."""
    sites: list[Site] = []
    for parent, field, index, node in _expressions(tree, ast.UnaryOp):
        if isinstance(node.op, ast.Not) and isinstance(node.operand, ast.BoolOp):
            def apply(parent=parent, field=field, index=index, inner=node.operand):
                op = ast.Or() if isinstance(inner.op, ast.And) else ast.And()
                replace_child(parent, field, index,
                              ast.BoolOp(op=op, values=[_negated_operand(v, tree) for v in inner.values]))
            sites.append(apply)
    return sites


@site_transform("de_morgan_compress")
def de_morgan_compress(tree: ast.Module, ctx: Context) -> list[Site]:
    """``not a or not b`` -> ``not (a and b)`` (and ``not a and not b`` -> ``not (a or b)``)."""
    sites: list[Site] = []
    for parent, field, index, node in _expressions(tree, ast.BoolOp):
        negated = [v for v in node.values if (isinstance(v, ast.UnaryOp) and isinstance(v.op, ast.Not))
                   or (isinstance(v, ast.Compare) and len(v.ops) == 1 and isinstance(v.ops[0], (ast.NotIn, ast.IsNot)))]
        if len(negated) != len(node.values):
            continue

        def apply(parent=parent, field=field, index=index, node=node):
            op = ast.And() if isinstance(node.op, ast.Or) else ast.Or()
            inner = ast.BoolOp(op=op, values=[negate(v) for v in node.values])
            replace_child(parent, field, index, ast.UnaryOp(op=ast.Not(), operand=inner))
        sites.append(apply)
    return sites
