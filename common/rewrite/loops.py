"""Loops <-> comprehensions and accumulator builtins (sum / any / all).

Safety rules (every rewrite below checks them):
- only inside functions, never in a try/with block (a caught exception could observe a half-built result);
- loops with ``else``, ``break``/``continue`` or any statement besides the append/accumulate are left alone;
- the loop variables must not be used anywhere else in the function (a loop leaks them, a comprehension
  does not) and the accumulator must not appear inside the loop expressions or in a nested function;
- no walrus / yield / await / lambda in the moved expressions; builtins used (list, set, sum, any, all)
  must not be rebound anywhere in the module.
"""

from __future__ import annotations

import ast
from typing import Iterator

from common.rewrite._ast_names import (COMPREHENSIONS, builtins_free, count_name, declared_global, expr_ok, fresh_name, identifiers,
                         params_of, target_names)
from common.rewrite._ast_source import real
from common.rewrite._ast_utils import Block, blocks, negate
from common.rewrite.base import Context, Site, site_transform

_EMPTY_KIND = {"list": ("append", ast.ListComp), "set": ("add", ast.SetComp), "dict": (None, ast.DictComp)}


def _empty_container(value: ast.expr, tree: ast.Module) -> str | None:
    """'list' / 'set' / 'dict' when ``value`` builds an empty one of those."""
    if isinstance(value, ast.List) and not value.elts:
        return "list"
    if isinstance(value, ast.Dict) and not value.keys:
        return "dict"
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and not value.args and not value.keywords \
            and value.func.id in ("list", "set", "dict") and builtins_free(tree, value.func.id):
        return value.func.id
    return None


def _loop_nest(loop: ast.stmt) -> tuple[list[ast.comprehension], list[ast.stmt]] | None:
    """A for-loop nest as comprehension clauses (nested fors, else-less ifs as filters) and the innermost body."""
    if not isinstance(loop, ast.For) or loop.orelse or target_names(loop.target) is None:
        return None
    gens = [ast.comprehension(target=loop.target, iter=loop.iter, ifs=[], is_async=0)]
    body = real(loop.body)
    while len(body) == 1:
        inner = body[0]
        if isinstance(inner, ast.If) and not inner.orelse:
            gens[-1].ifs.append(inner.test)
            body = real(inner.body)
        elif isinstance(inner, ast.For) and not inner.orelse and target_names(inner.target) is not None:
            gens.append(ast.comprehension(target=inner.target, iter=inner.iter, ifs=[], is_async=0))
            body = real(inner.body)
        else:
            break
    return gens, body


def _binding_comprehensions(node: ast.AST, name: str, skip: ast.AST | None) -> list[ast.AST]:
    """Outermost comprehensions in ``node`` (other than ``skip``) whose own targets bind ``name``."""
    found: list[ast.AST] = []

    def visit(sub: ast.AST) -> None:
        if sub is skip:
            return
        if isinstance(sub, COMPREHENSIONS) and any(
                name in (target_names(gen.target) or []) for gen in sub.generators):
            found.append(sub)
            return
        for child in ast.iter_child_nodes(sub):
            visit(child)
    visit(node)
    return found


def names_private(fn: ast.FunctionDef, region: ast.AST, names: list[str]) -> bool:
    """Whether each of ``names`` occurs in ``fn`` only inside ``region`` or inside other comprehensions that
    bind it themselves: then moving the binding between the function scope and a comprehension scope is safe."""
    hidden = set(params_of(fn)) | declared_global(fn)
    for name in names:
        if name in hidden:
            return False
        outside = count_name(fn, name) - count_name(region, name)
        outside -= sum(count_name(comp, name) for comp in _binding_comprehensions(fn, name, region))
        if outside > 0:  # (negative when ``region`` is a new node, not yet in the tree)
            return False
    return True


def _accumulator_ok(fn: ast.FunctionDef, acc: str, parts: list[ast.AST]) -> bool:
    """The accumulator is a plain local, absent from the loop expressions and from nested scopes."""
    if acc in declared_global(fn) or any(count_name(part, acc) for part in parts):
        return False
    for sub in ast.walk(fn):
        if isinstance(sub, (ast.FunctionDef, ast.Lambda, ast.ClassDef)) and sub is not fn and count_name(sub, acc):
            return False
    return True


def _gen_parts(gens: list[ast.comprehension]) -> list[ast.AST]:
    return [part for gen in gens for part in [gen.target, gen.iter, *gen.ifs]]


def _gen_targets(gens: list[ast.comprehension]) -> list[ast.AST]:
    return [name for gen in gens for name in (target_names(gen.target) or [])]


def _loop_blocks(tree: ast.Module) -> list[Block]:
    return [b for b in blocks(tree) if b.func is not None and not b.in_try]


def _single_statement_loops(
        tree: ast.Module) -> Iterator[tuple[Block, int, ast.For, list[ast.comprehension], ast.stmt]]:
    """(block, index, loop, clauses, stmt) for each loop nest whose innermost body is the one statement ``stmt``:
    the shape the accumulator folds (``loop_to_comprehension``, ``loop_to_sum``) turn into one expression."""
    for block in _loop_blocks(tree):
        for k, loop in enumerate(block.body):
            nest = _loop_nest(loop)
            if nest is not None and len(nest[1]) == 1:
                yield block, k, loop, nest[0], nest[1][0]


def _build_loops(gens: list[ast.comprehension], innermost: list[ast.stmt]) -> ast.For:
    """Nested for/if statements equivalent to comprehension clauses ``gens`` around ``innermost``."""
    body = innermost
    for gen in reversed(gens):
        for test in reversed(gen.ifs):
            body = [ast.If(test=test, body=body, orelse=[])]
        body = [ast.For(target=gen.target, iter=gen.iter, body=body, orelse=[])]
    return body[0]


def _init_before(body: list[ast.stmt], k: int, acc: str) -> int | None:
    """Index of the plain ``acc = value`` that last binds ``acc`` before ``body[k]``, when nothing in between
    mentions ``acc`` (then the initialisation can move down to the loop)."""
    for j in range(k - 1, -1, -1):
        stmt = body[j]
        if count_name(stmt, acc):
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                    and stmt.targets[0].id == acc and not count_name(stmt.value, acc):
                return j
            return None
    return None


def _append_target(stmt: ast.stmt) -> tuple[str, str, list[ast.expr]] | None:
    """(accumulator, container kind, element parts) for ``acc.append(e)``, ``acc.add(e)`` or ``acc[k] = v``."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Subscript) \
            and isinstance(stmt.targets[0].value, ast.Name) and not isinstance(stmt.targets[0].slice, ast.Slice):
        return stmt.targets[0].value.id, "dict", [stmt.targets[0].slice, stmt.value]
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Attribute) \
            and stmt.value.func.attr in ("append", "add") and isinstance(stmt.value.func.value, ast.Name) \
            and len(stmt.value.args) == 1 and not stmt.value.keywords \
            and not isinstance(stmt.value.args[0], ast.Starred):
        kind = "list" if stmt.value.func.attr == "append" else "set"
        return stmt.value.func.value.id, kind, [stmt.value.args[0]]
    return None


@site_transform("loop_to_comprehension")
def loop_to_comprehension(tree: ast.Module, ctx: Context) -> list[Site]:
    """``acc = []`` + ``for x in xs: [if c:] acc.append(e)`` -> ``acc = [e for x in xs if c]`` (also set/dict)."""
    sites: list[Site] = []
    for block, k, loop, gens, stmt in _single_statement_loops(tree):
        body = block.body
        found = _append_target(stmt)
        if found is None:
            continue
        acc, kind, elements = found
        j = _init_before(body, k, acc)
        if j is None or _empty_container(body[j].value, tree) != kind:
            continue
        parts = _gen_parts(gens) + elements
        if not expr_ok(*parts) or not _accumulator_ok(block.func, acc, parts):
            continue
        if not names_private(block.func, loop, _gen_targets(gens)):
            continue

        def apply(body=body, j=j, k=k, gens=gens, elements=elements, kind=kind, acc=acc):
            if kind == "dict":
                comp: ast.expr = ast.DictComp(key=elements[0], value=elements[1], generators=gens)
            else:
                comp = _EMPTY_KIND[kind][1](elt=elements[0], generators=gens)
            body[k] = ast.Assign(targets=[ast.Name(id=acc, ctx=ast.Store())], value=comp)
            del body[j]
        sites.append(apply)
    return sites


def _comprehension_sites(tree: ast.Module, want_types: tuple, make) -> list[tuple]:
    """Sites ``x = <comp>`` / ``return <comp>`` in functions where the comprehension may become a loop."""
    sites: list[Site] = []
    for block in _loop_blocks(tree):
        for i, stmt in enumerate(block.body):
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                acc, value = stmt.targets[0].id, stmt.value
            elif isinstance(stmt, ast.Return) and stmt.value is not None:
                acc, value = None, stmt.value
            else:
                continue
            found = make(value, tree)
            if found is None:
                continue
            comp, kind = found
            if not isinstance(comp, want_types) or any(gen.is_async for gen in comp.generators):
                continue
            if not expr_ok(value) or any(target_names(gen.target) is None for gen in comp.generators):
                continue
            if acc is not None and not _accumulator_ok(block.func, acc, [value]):
                continue
            if not names_private(block.func, comp, _gen_targets(comp.generators)):
                continue
            sites.append((block, i, acc, comp, kind))
    return sites


def _comp_as_is(value: ast.expr, tree: ast.Module):
    if isinstance(value, (ast.ListComp, ast.SetComp, ast.DictComp)):
        kind = {ast.ListComp: "list", ast.SetComp: "set", ast.DictComp: "dict"}[type(value)]
        if kind == "set" and not builtins_free(tree, "set"):
            return None
        return value, kind
    return None


@site_transform("comprehension_to_loop")
def comprehension_to_loop(tree: ast.Module, ctx: Context) -> list[Site]:
    """``acc = [e for x in xs if c]`` (or ``return [...]``) -> ``acc = []`` + ``for`` loop appending."""
    taken = identifiers(tree)
    sites: list[Site] = []
    for block, i, acc, comp, kind in _comprehension_sites(tree, (ast.ListComp, ast.SetComp, ast.DictComp),
                                                          _comp_as_is):
        def apply(block=block, i=i, acc=acc, comp=comp, kind=kind):
            if kind == "list":
                init: ast.expr = ast.List(elts=[], ctx=ast.Load())
            elif kind == "dict":
                init = ast.Dict(keys=[], values=[])
            else:
                init = ast.Call(func=ast.Name(id="set", ctx=ast.Load()), args=[], keywords=[])

            def innermost(name: str) -> list[ast.stmt]:
                target = ast.Name(id=name, ctx=ast.Load())
                if kind == "dict":
                    sub = ast.Subscript(value=target, slice=comp.key, ctx=ast.Store())
                    return [ast.Assign(targets=[sub], value=comp.value)]
                method = "append" if kind == "list" else "add"
                call = ast.Call(func=ast.Attribute(value=target, attr=method, ctx=ast.Load()), args=[comp.elt],
                                keywords=[])
                return [ast.Expr(value=call)]
            _unroll_named(block, i, acc, init, comp.generators, innermost, "result", taken)
        sites.append(apply)
    return sites


def _unroll_named(block: Block, i: int, acc: str | None, init: ast.expr, gens, innermost, base: str,
                  taken: set[str]) -> None:
    stmt = block.body[i]
    returning = isinstance(stmt, ast.Return)
    if acc is None:
        acc = fresh_name(base, taken)
    new: list[ast.stmt] = [ast.Assign(targets=[ast.Name(id=acc, ctx=ast.Store())], value=init),
                           _build_loops(gens, innermost(acc))]
    if returning:
        new.append(ast.Return(value=ast.Name(id=acc, ctx=ast.Load())))
    block.body[i:i + 1] = new


def _numeric_constant(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


@site_transform("loop_to_sum")
def loop_to_sum(tree: ast.Module, ctx: Context) -> list[Site]:
    """``total = 0`` + ``for x in xs: [if c:] total += e`` -> ``total = sum(e for x in xs if c)``."""
    if not builtins_free(tree, "sum"):
        return []
    sites: list[Site] = []
    for block, k, loop, gens, stmt in _single_statement_loops(tree):
        body = block.body
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add) and isinstance(stmt.target, ast.Name):
            acc, element = stmt.target.id, stmt.value
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                and isinstance(stmt.value, ast.BinOp) and isinstance(stmt.value.op, ast.Add) \
                and isinstance(stmt.value.left, ast.Name) and stmt.value.left.id == stmt.targets[0].id:
            acc, element = stmt.targets[0].id, stmt.value.right
        else:
            continue
        j = _init_before(body, k, acc)
        if j is None or not _numeric_constant(body[j].value):
            continue
        parts = _gen_parts(gens) + [element]
        if not expr_ok(*parts) or not _accumulator_ok(block.func, acc, parts):
            continue
        if not names_private(block.func, loop, _gen_targets(gens)):
            continue

        def apply(body=body, j=j, k=k, gens=gens, element=element, acc=acc):
            start = body[j].value
            args: list[ast.expr] = [ast.GeneratorExp(elt=element, generators=gens)]
            if not (start.value == 0 and type(start.value) is int):
                args.append(start)
            call = ast.Call(func=ast.Name(id="sum", ctx=ast.Load()), args=args, keywords=[])
            body[k] = ast.Assign(targets=[ast.Name(id=acc, ctx=ast.Store())], value=call)
            del body[j]
        sites.append(apply)
    return sites


def _element_name(iterable: ast.expr, taken: set[str]) -> str:
    """A fresh loop-variable name for the elements of ``iterable`` (``nums`` -> ``num``, else ``item``)."""
    if isinstance(iterable, ast.Name) and len(iterable.id) > 3 and iterable.id.endswith("s") \
            and not iterable.id.endswith("ss"):
        return fresh_name(iterable.id[:-1], taken)
    return fresh_name("item", taken)


def _as_generator(arg: ast.expr, taken: set[str]) -> ast.expr | None:
    """``arg`` itself when it is a comprehension, else ``item for item in arg`` (same iteration)."""
    if isinstance(arg, (ast.GeneratorExp, ast.ListComp)):
        return arg
    if isinstance(arg, (ast.Starred, ast.SetComp, ast.DictComp)):
        return None
    name = _element_name(arg, taken)
    target = ast.Name(id=name, ctx=ast.Store())
    return ast.GeneratorExp(elt=ast.Name(id=name, ctx=ast.Load()),
                            generators=[ast.comprehension(target=target, iter=arg, ifs=[], is_async=0)])


def _sum_call(taken: set[str]):
    def make(value: ast.expr, tree: ast.Module):
        """``sum(iterable[, numeric start])`` -> (comprehension, start)."""
        if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "sum"
                and not value.keywords and 1 <= len(value.args) <= 2):
            return None
        start = value.args[1] if len(value.args) == 2 else ast.Constant(value=0)
        if not _numeric_constant(start):
            return None
        comp = _as_generator(value.args[0], taken)
        return None if comp is None else (comp, start)
    return make


@site_transform("sum_to_loop")
def sum_to_loop(tree: ast.Module, ctx: Context) -> list[Site]:
    """``total = sum(e for x in xs if c)`` / ``return sum(xs)`` -> ``total = 0`` + loop with ``total += e``."""
    if not builtins_free(tree, "sum"):
        return []
    taken = identifiers(tree)
    sites: list[Site] = []
    for block, i, acc, comp, start in _comprehension_sites(tree, (ast.GeneratorExp, ast.ListComp),
                                                           _sum_call(taken)):
        def apply(block=block, i=i, acc=acc, comp=comp, start=start):
            def innermost(name: str) -> list[ast.stmt]:
                return [ast.AugAssign(target=ast.Name(id=name, ctx=ast.Store()), op=ast.Add(), value=comp.elt)]
            _unroll_named(block, i, acc, start, comp.generators, innermost, "total", taken)
        sites.append(apply)
    return sites


@site_transform("loop_to_any_all")
def loop_to_any_all(tree: ast.Module, ctx: Context) -> list[Site]:
    """``for x in xs: if c: return True`` + ``return False`` -> ``return any(c for x in xs)`` (all() for the
    mirror image)."""
    sites: list[Site] = []
    for block in _loop_blocks(tree):
        body = block.body
        for i in range(len(body) - 1):
            loop, after = body[i], body[i + 1]
            nest = _loop_nest(loop)
            if nest is None or not isinstance(after, ast.Return) or not isinstance(after.value, ast.Constant):
                continue
            gens, inner = nest
            if not gens[-1].ifs or len(inner) != 1 or not isinstance(inner[0], ast.Return):
                continue
            hit, miss = inner[0].value, after.value.value
            if not (isinstance(hit, ast.Constant) and isinstance(hit.value, bool) and isinstance(miss, bool)
                    and hit.value != miss):
                continue
            builtin = "any" if hit.value else "all"
            if not builtins_free(tree, builtin) or not expr_ok(*_gen_parts(gens)):
                continue
            if not names_private(block.func, loop, _gen_targets(gens)):
                continue

            def apply(body=body, i=i, gens=gens, builtin=builtin):
                condition = gens[-1].ifs.pop()
                element = condition if builtin == "any" else negate(condition)
                call = ast.Call(func=ast.Name(id=builtin, ctx=ast.Load()),
                                args=[ast.GeneratorExp(elt=element, generators=gens)], keywords=[])
                body[i:i + 2] = [ast.Return(value=call)]
            sites.append(apply)
    return sites


@site_transform("any_all_to_loop")
def any_all_to_loop(tree: ast.Module, ctx: Context) -> list[Site]:
    """``return any(c for x in xs)`` -> ``for x in xs: if c: return True`` + ``return False`` (all() alike)."""
    taken = identifiers(tree)
    sites: list[Site] = []
    for block in _loop_blocks(tree):
        for i, stmt in enumerate(block.body):
            if not (isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Call)
                    and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id in ("any", "all")
                    and len(stmt.value.args) == 1 and not stmt.value.keywords):
                continue
            builtin, comp = stmt.value.func.id, stmt.value.args[0]
            if isinstance(comp, ast.ListComp):
                continue  # any([...]) evaluates every element first: a loop would short-circuit
            comp = _as_generator(comp, taken)
            if comp is None or not builtins_free(tree, builtin) or not expr_ok(comp) \
                    or any(g.is_async for g in comp.generators):
                continue
            if any(target_names(gen.target) is None for gen in comp.generators):
                continue
            if not names_private(block.func, comp, _gen_targets(comp.generators)):
                continue

            def apply(body=block.body, i=i, builtin=builtin, comp=comp):
                found = builtin == "any"
                test = comp.elt if found else negate(comp.elt)
                inner = [ast.If(test=test, body=[ast.Return(value=ast.Constant(value=found))], orelse=[])]
                body[i:i + 1] = [_build_loops(comp.generators, inner), ast.Return(value=ast.Constant(value=not found))]
            sites.append(apply)
    return sites
