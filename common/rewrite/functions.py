"""Function-level rewrites: extract a helper function / inline a helper, and rename local variables.

Top-level names of the original solution (``Context.protected``) are never renamed or removed and keep their
signatures: the asserts may call any of them. Helpers this module creates get fresh names.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from common.rewrite._ast_names import (BUILTIN_NAMES, COMPREHENSIONS, bound_in, count_name, declared_global, expr_ok, fresh_name,
                         function_locals, has_any, has_nested_scope, identifiers, is_dynamic, is_pure,
                         own_scope_nodes, params_of, rebinds, target_names, variable_names)
from common.rewrite._ast_source import clone, is_marker, real
from common.rewrite._ast_utils import blocks, body_start
from common.rewrite.base import Context, Site, site_transform
from common.rewrite.statements import suggest_name

_MAX_BLOCK = 8  # statements moved into one helper at most
_JUMPS = (ast.Return, ast.Yield, ast.YieldFrom, ast.Await, ast.Global, ast.Nonlocal, ast.Delete)


def _plain_function(fn: ast.AST) -> bool:
    """A function whose locals can be reasoned about: no decorators, closures, dynamic calls or generators."""
    return (isinstance(fn, ast.FunctionDef) and not fn.decorator_list and not has_nested_scope(fn)
            and not is_dynamic(fn) and not declared_global(fn) and not has_any(fn, ast.Yield, ast.YieldFrom))


def _loose_jumps(stmts: list[ast.stmt]) -> bool:
    """Whether ``stmts`` contain a break/continue that would leave them (not inside a loop of their own)."""
    def visit(node: ast.AST, in_loop: bool) -> bool:
        if isinstance(node, (ast.Break, ast.Continue)) and not in_loop:
            return True
        for child in ast.iter_child_nodes(node):
            if visit(child, in_loop or isinstance(node, (ast.For, ast.While)) and child in node.body):
                return True
        return False
    return any(visit(stmt, False) for stmt in stmts)


def _loads_in_order(nodes: list[ast.AST]) -> list[str]:
    """Names read in ``nodes``, by first appearance (source order)."""
    found: list[tuple[int, int, str]] = []
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                found.append((getattr(sub, "lineno", 0), getattr(sub, "col_offset", 0), sub.id))
    return list(dict.fromkeys(name for _, _, name in sorted(found)))


def _comprehension_targets(nodes: list[ast.AST]) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, COMPREHENSIONS):
                for gen in sub.generators:
                    names.update(target_names(gen.target) or ["<complex>"])
    return names


def _definitely_assigned(stmts: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for stmt in stmts:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                names.update(target_names(target) or [])
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name):
            names.add(stmt.target.id)
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            names.add(stmt.target.id)
        elif isinstance(stmt, ast.If) and stmt.orelse:
            names |= _definitely_assigned(stmt.body) & _definitely_assigned(stmt.orelse)
    return names


def _helper_def(name: str, params: list[str], body: list[ast.stmt]) -> ast.FunctionDef:
    args = ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in params], vararg=None, kwonlyargs=[],
                         kw_defaults=[], kwarg=None, defaults=[])
    return ast.FunctionDef(name=name, args=args, body=body, decorator_list=[], returns=None, type_comment=None)


def _call(name: str, params: list[str]) -> ast.Call:
    return ast.Call(func=ast.Name(id=name, ctx=ast.Load()), args=[ast.Name(id=p, ctx=ast.Load()) for p in params],
                    keywords=[])


def _store(names: list[str]) -> ast.expr:
    if len(names) == 1:
        return ast.Name(id=names[0], ctx=ast.Store())
    return ast.Tuple(elts=[ast.Name(id=n, ctx=ast.Store()) for n in names], ctx=ast.Store())


def _load(names: list[str]) -> ast.expr:
    if len(names) == 1:
        return ast.Name(id=names[0], ctx=ast.Load())
    return ast.Tuple(elts=[ast.Name(id=n, ctx=ast.Load()) for n in names], ctx=ast.Load())


@dataclass
class _StmtInfo:
    """What block extraction needs to know about one statement of a function body."""

    movable: bool  # no return/yield/global/del, no break/continue leaving it, no walrus/lambda
    compound: bool
    bound: set[str]
    loads: list[str]
    names: set[str]
    definite: set[str]
    comp_targets: set[str]

    @classmethod
    def of(cls, stmt: ast.stmt) -> "_StmtInfo":
        if is_marker(stmt):
            return cls(True, False, set(), [], set(), set(), set())
        movable = not has_any(stmt, *_JUMPS) and not _loose_jumps([stmt]) and expr_ok(stmt)
        compound = isinstance(stmt, (ast.For, ast.While, ast.If, ast.With, ast.Try))
        return cls(movable, compound, bound_in([stmt]), _loads_in_order([stmt]), variable_names(stmt),
                   _definitely_assigned([stmt]), _comprehension_targets([stmt]))


@site_transform("extract_helper")
def extract_helper(tree: ast.Module, ctx: Context) -> list[Site]:
    """Move a block of statements (or a returned expression) of a top-level function into a new helper
    function; the block's inputs become parameters and the values used afterwards its return value."""
    taken = identifiers(tree) | set(BUILTIN_NAMES)
    sites: list[Site] = []
    for position, fn in enumerate(tree.body):
        if not _plain_function(fn):
            continue
        local = function_locals(fn)
        body = fn.body
        infos = [_StmtInfo.of(stmt) for stmt in body]
        after_names: list[set[str]] = [set() for _ in range(len(body) + 1)]
        after_real = [False] * (len(body) + 1)
        for k in range(len(body) - 1, -1, -1):
            after_names[k] = after_names[k + 1] | infos[k].names
            after_real[k] = after_real[k + 1] or not is_marker(body[k])
        bound_before = set(params_of(fn))
        for i in range(len(body)):
            if i >= body_start(fn) and not is_marker(body[i]):
                for j in range(i, min(len(body), i + _MAX_BLOCK)):
                    if not infos[j].movable:
                        break
                    site = _block_site(tree, fn, position, i, j, infos, local, bound_before, after_names[j + 1],
                                       after_real[j + 1], taken)
                    if site is not None:
                        sites.append(site)
            bound_before = bound_before | infos[i].bound
        for block in blocks(tree):
            if block.func is not fn:
                continue
            for stmt in block.body:
                site = _expression_site(tree, fn, position, stmt, local, taken)
                if site is not None:
                    sites.append(site)
    return sites


def _block_site(tree, fn, position, i, j, infos, local, bound_before, after, any_after, taken):
    chunk = infos[i:j + 1]
    compound = any(info.compound for info in chunk)
    if not any_after or not (compound or sum(not is_marker(s) for s in fn.body[i:j + 1]) >= 2):
        return None
    bound_block = set().union(*(info.bound for info in chunk))
    loads = [n for n in dict.fromkeys(n for info in chunk for n in info.loads) if n in local]
    if set().union(*(info.comp_targets for info in chunk)) & local:
        return None
    if any(n not in bound_before and n not in bound_block for n in loads):
        return None
    outputs = [n for n in sorted(bound_block) if n in after]
    if len(outputs) > 2:
        return None
    definite = set().union(*(info.definite for info in chunk))
    if any(n not in bound_before and n not in definite for n in outputs):
        return None
    inputs = [n for n in loads if n in bound_before]
    inputs += [n for n in outputs if n in bound_before and n not in inputs]
    if not compound and not inputs:
        return None  # a few constant assignments: not worth a function

    def apply():
        base = f"compute_{'_and_'.join(outputs)}" if outputs else f"{fn.name}_step"
        name = fresh_name(base, taken)
        helper_body = list(fn.body[i:j + 1])
        if outputs:
            helper_body.append(ast.Return(value=_load(outputs)))
        call = _call(name, inputs)
        replacement = ast.Assign(targets=[_store(outputs)], value=call) if outputs else ast.Expr(value=call)
        fn.body[i:j + 1] = [replacement]
        tree.body.insert(position, _helper_def(name, inputs, helper_body))
    return apply


def _expression_site(tree, fn, position, stmt, local, taken):
    if not isinstance(stmt, ast.Return) or stmt.value is None:
        return None
    value = stmt.value
    size = sum(1 for _ in ast.walk(value))
    if size < 6 or not expr_ok(value) or _comprehension_targets([value]) & local:
        return None
    inputs = [n for n in _loads_in_order([value]) if n in local]

    def apply():
        base = f"{fn.name}_value" if fn.name.startswith("compute") else f"compute_{fn.name}"
        name = fresh_name(base, taken)
        stmt.value = _call(name, inputs)
        tree.body.insert(position, _helper_def(name, inputs, [ast.Return(value=value)]))
    return apply


def _inlinable(h: ast.AST, tree: ast.Module) -> bool:
    if not _plain_function(h):
        return False
    args = h.args
    if args.posonlyargs or args.vararg or args.kwonlyargs or args.kwarg or args.defaults:
        return False
    stmts = real(h.body[body_start(h):])
    if not stmts or not isinstance(stmts[-1], ast.Return):
        return False
    if sum(isinstance(sub, ast.Return) for sub in ast.walk(h)) != 1 or count_name(ast.Module(body=h.body), h.name):
        return False
    return not has_any(h, ast.Try, ast.With)


def _call_site(stmt: ast.stmt, name: str) -> ast.Call | None:
    value = stmt.value if isinstance(stmt, (ast.Assign, ast.Return, ast.Expr)) else None
    if isinstance(stmt, ast.Assign) and not (len(stmt.targets) == 1 and target_names(stmt.targets[0])):
        return None
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == name \
            and not value.keywords and not any(isinstance(a, ast.Starred) for a in value.args):
        return value
    return None


@site_transform("inline_helper")
def inline_helper(tree: ast.Module, ctx: Context) -> list[Site]:
    """Replace a call ``r = helper(a, b)`` by the helper's body (its locals renamed where they would clash);
    a helper that is then unused and not part of the original solution is deleted."""
    taken = identifiers(tree) | set(BUILTIN_NAMES)
    top = {stmt.name: stmt for stmt in tree.body if isinstance(stmt, ast.FunctionDef)}
    sites: list[Site] = []
    for h in top.values():
        if not _inlinable(h, tree) or h.name in bound_in([s for s in tree.body if s is not h]):
            continue
        h_locals = function_locals(h)
        free = set(_loads_in_order(h.body)) - h_locals
        for f in top.values():
            if f is h or is_dynamic(f) or rebinds(f, h.name) or free & function_locals(f):
                continue
            if any(isinstance(sub, (ast.Global, ast.Nonlocal)) for sub in ast.walk(f)):
                continue
            for block in blocks(tree):
                if block.func is not f:
                    continue
                for i, stmt in enumerate(block.body):
                    call = _call_site(stmt, h.name)
                    if call is None or len(call.args) != len(h.args.args):
                        continue
                    sites.append(_inline_apply(tree, ctx, h, f, block.body, i, stmt, call, h_locals, taken))
    return sites


def _inline_apply(tree, ctx, h, f, body, i, stmt, call, h_locals, taken):
    def apply():
        f_names = identifiers(f)
        rename = {n: (fresh_name(n, taken) if n in f_names else n) for n in sorted(h_locals)}
        params = params_of(h)
        rebound = bound_in(h.body)
        substitute = {p: arg for p, arg in zip(params, call.args) if is_pure(arg) and p not in rebound}
        new_body = [clone(s) for s in h.body[body_start(h):]]
        for node in new_body:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and sub.id in rename:
                    sub.id = rename[sub.id]
        by_new_name = {rename[p]: arg for p, arg in substitute.items()}
        for node in new_body:
            for sub in ast.walk(node):
                for field, value in ast.iter_fields(sub):
                    if isinstance(value, ast.Name) and value.id in by_new_name:
                        setattr(sub, field, clone(by_new_name[value.id]))
                    elif isinstance(value, list):
                        for idx, item in enumerate(value):
                            if isinstance(item, ast.Name) and item.id in by_new_name:
                                value[idx] = clone(by_new_name[item.id])
        binds = [ast.Assign(targets=[ast.Name(id=rename[p], ctx=ast.Store())], value=arg)
                 for p, arg in zip(params, call.args) if p not in substitute]
        final = real(new_body)[-1]
        new_body = new_body[:new_body.index(final)]
        result = final.value if final.value is not None else ast.Constant(value=None)
        if isinstance(stmt, ast.Assign):
            new_body.append(ast.Assign(targets=stmt.targets, value=result))
        elif isinstance(stmt, ast.Return):
            new_body.append(ast.Return(value=result))
        elif not is_pure(result):
            new_body.append(ast.Expr(value=result))
        replacement = binds + new_body
        body[i:i + 1] = replacement or [ast.Pass()]
        if h.name not in ctx.protected and count_name(tree, h.name) == 1:
            tree.body.remove(h)
    return apply


# ---------------------------------------------------------------------------------------------------- renaming

# Alternatives tried in turn before a numeric suffix when a role name is taken.
_ROLE_NAMES = {"index": ["index", "position", "offset", "step"], "item": ["item", "element", "entry", "member"],
               "value": ["value", "current", "candidate"], "result": ["result", "answer", "output"],
               "count": ["count", "counter", "tally"], "total": ["total", "running_total", "accumulated"],
               "char": ["char", "symbol", "letter"], "key": ["key", "name"], "items": ["items", "collected"]}

_GENERIC = frozenset({"res", "tmp", "temp", "ans", "lst", "arr", "val", "cnt", "num", "str1", "list1", "ret",
                      "out", "output", "arr1", "li", "ls", "dic", "dct", "st"})


def _renamable(fn: ast.FunctionDef) -> list[str]:
    """Locals of ``fn`` that can be renamed uniformly inside it (not parameters, nested definitions, imports,
    exception names, nor names also used as keyword arguments or declared global)."""
    if fn.decorator_list or is_dynamic(fn) or has_any(fn, ast.ClassDef):
        return []  # (a class body would turn a renamed local into a renamed attribute)
    names = bound_in(fn.body)
    excluded = set(params_of(fn)) | declared_global(fn)
    for sub in ast.walk(fn):
        if isinstance(sub, ast.keyword) and sub.arg:
            excluded.add(sub.arg)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not fn:
            excluded.add(sub.name)
        elif isinstance(sub, ast.alias):
            excluded.add((sub.asname or sub.name).split(".")[0])
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            excluded.add(sub.name)
        elif isinstance(sub, (ast.MatchAs, ast.MatchStar, ast.MatchMapping)):
            excluded.update(n for n in (getattr(sub, "name", None), getattr(sub, "rest", None)) if n)
    # Names bound only by comprehensions, when every use sits inside a comprehension that binds them.
    for name in _comprehension_targets(fn.body) - names - excluded:
        if name == "<complex>":
            continue
        from common.rewrite.loops import _binding_comprehensions
        if count_name(fn, name) == sum(count_name(c, name) for c in _binding_comprehensions(fn, name, None)):
            names.add(name)
    return sorted(names - excluded - {"_"})


def _rename_in(fn: ast.FunctionDef, mapping: dict[str, str]) -> None:
    """Rename locals, and the same words in the function's comments and docstring, so that a comment such as
    "Loop over each n in nums" stays true after ``n`` became ``x1`` (a stale comment would still earn MI)."""
    import re

    words = re.compile(r"\b(" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True))) + r")\b")
    for node in fn.body:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and sub.id in mapping:
                sub.id = mapping[sub.id]
            elif isinstance(sub, ast.arg) and sub.arg in mapping:
                sub.arg = mapping[sub.arg]
            elif isinstance(sub, ast.Expr) and isinstance(sub.value, ast.Constant) and isinstance(sub.value.value, str):
                sub.value.value = words.sub(lambda m: mapping[m.group(1)], sub.value.value)  # comments, docstrings


def _role(name: str, fn: ast.FunctionDef) -> str:
    """A descriptive name for local ``name`` from how it is bound and used."""
    for sub in ast.walk(fn):
        gens = []
        if isinstance(sub, ast.For):
            gens = [(sub.target, sub.iter)]
        elif isinstance(sub, COMPREHENSIONS):
            gens = [(g.target, g.iter) for g in sub.generators]
        for target, source in gens:
            names = target_names(target) or []
            if name not in names:
                continue
            if isinstance(source, ast.Call) and isinstance(source.func, ast.Name):
                if source.func.id == "range":
                    return "index"
                if source.func.id == "enumerate" and len(names) == 2:
                    return "index" if names[0] == name else "item"
            if isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute) and source.func.attr == "items" \
                    and len(names) == 2:
                return "key" if names[0] == name else "value"
            if isinstance(source, ast.Name) and len(source.id) > 3 and source.id.endswith("s") and len(names) == 1:
                return source.id[:-1]
            if isinstance(source, ast.Name) and source.id in ("s", "string", "text", "word", "str1", "sentence"):
                return "char"
            return "item"
    for sub in own_scope_nodes(fn):
        if isinstance(sub, ast.Return) and isinstance(sub.value, ast.Name) and sub.value.id == name:
            return "result"
    for sub in own_scope_nodes(fn):
        if isinstance(sub, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in sub.targets):
            value = sub.value
            if isinstance(value, ast.Constant) and type(value.value) in (int, float):
                increments = [a for a in ast.walk(fn) if isinstance(a, ast.AugAssign)
                              and isinstance(a.target, ast.Name) and a.target.id == name]
                if increments and all(isinstance(a.value, ast.Constant) and a.value.value == 1 for a in increments):
                    return "count"
                return "total" if increments else "value"
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return "text"
            return suggest_name(value)
    return "value"


def _rename_sites(tree: ast.Module, ctx: Context, choose) -> list:
    taken = identifiers(tree) | set(BUILTIN_NAMES)
    sites = []
    for fn in {id(b.func): b.func for b in blocks(tree) if b.func is not None}.values():
        names = [n for n in _renamable(fn) if choose(n) is not None]
        if not names:
            continue

        def apply(fn=fn, names=names):
            mapping = {}
            for index, name in enumerate(names, 1):
                base = choose(name, fn=fn, index=index)
                options = [o for o in _ROLE_NAMES.get(base, [base]) if o not in taken]
                mapping[name] = fresh_name(options[0] if options else base, taken)
            _rename_in(fn, mapping)
        sites.append(apply)
    return sites


@site_transform("rename_locals_short")
def rename_locals_short(tree: ast.Module, ctx: Context) -> list[Site]:
    """Rename the local variables of one function to ``x1, x2, ...`` (MI barely changes: readability does)."""
    def choose(name, fn=None, index=0):
        if len(name) <= 2 and name[0] in "xv" and name[1:].isdigit():
            return None
        return f"x{index}"
    return _rename_sites(tree, ctx, choose)


@site_transform("rename_locals_descriptive")
def rename_locals_descriptive(tree: ast.Module, ctx: Context) -> list[Site]:
    """Rename one-letter or generic local variables of one function after their role (``i`` -> ``index``,
    ``s`` -> ``total``, ``res`` -> ``result``...)."""
    def choose(name, fn=None, index=0):
        if not (len(name) == 1 or name in _GENERIC or (name[0] == "x" and name[1:].isdigit())):
            return None
        if fn is None:
            return name
        return _role(name, fn)
    return _rename_sites(tree, ctx, choose)
