"""Names and scopes for the rewrite transforms: which identifiers a tree uses, binds or rebinds, fresh names,
and whether an expression is pure or safe to move."""

from __future__ import annotations

import ast
import builtins
import keyword
from typing import Iterator

BUILTIN_NAMES = frozenset(dir(builtins))
# Calls that read or write a frame's variables by name: renaming or moving variables would change them.
DYNAMIC_CALLS = frozenset({"locals", "vars", "eval", "exec", "globals", "dir", "__import__"})
SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def identifiers(node: ast.AST) -> set[str]:
    """Every identifier that appears in ``node``: the variables ``variable_names`` finds (names, parameters,
    definitions, imports, handlers) plus attributes, keyword-argument names and match captures - none of which a
    fresh name may shadow either."""
    names = variable_names(node)
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            names.add(sub.attr)
        elif isinstance(sub, ast.keyword) and sub.arg:
            names.add(sub.arg)
        elif isinstance(sub, (ast.MatchAs, ast.MatchStar)) and sub.name:
            names.add(sub.name)
        elif isinstance(sub, ast.MatchMapping) and sub.rest:
            names.add(sub.rest)
    return names


def fresh_name(base: str, taken: set[str]) -> str:
    """``base`` or ``base_1``, ``base_2``... : not in ``taken``, not a builtin or keyword. Adds it to ``taken``."""
    candidate, n = base, 0
    while candidate in taken or candidate in BUILTIN_NAMES or keyword.iskeyword(candidate):
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


def rebinds(tree: ast.AST, name: str) -> bool:
    """Whether ``name`` is (or may be) bound anywhere in ``tree``: then a builtin of that name may be shadowed."""
    for sub in ast.walk(tree):
        if isinstance(sub, ast.Name) and sub.id == name and not isinstance(sub.ctx, ast.Load):
            return True
        if isinstance(sub, ast.arg) and sub.arg == name:
            return True
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub.name == name:
            return True
        if isinstance(sub, ast.alias) and (sub.name == "*" or (sub.asname or sub.name).split(".")[0] == name):
            return True
        if isinstance(sub, ast.ExceptHandler) and sub.name == name:
            return True
        if isinstance(sub, (ast.Global, ast.Nonlocal)) and name in sub.names:
            return True
        if isinstance(sub, (ast.MatchAs, ast.MatchStar)) and sub.name == name:
            return True
    return False


def builtins_free(tree: ast.AST, *names: str) -> bool:
    """True when none of the builtins ``names`` can be shadowed in ``tree``."""
    return not any(rebinds(tree, name) for name in names)


def count_name(node: ast.AST, name: str) -> int:
    """Occurrences of identifier ``name`` in ``node`` as a variable or parameter (any context, nested scopes too)."""
    count = 0
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id == name:
            count += 1
        elif isinstance(sub, ast.arg) and sub.arg == name:
            count += 1
        elif isinstance(sub, (ast.Global, ast.Nonlocal)) and name in sub.names:
            count += 1
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub.name == name:
            count += 1
        elif isinstance(sub, ast.ExceptHandler) and sub.name == name:
            count += 1
        elif isinstance(sub, ast.alias) and (sub.asname or sub.name).split(".")[0] == name:
            count += 1
    return count


def variable_names(node: ast.AST) -> set[str]:
    """The identifiers ``count_name`` counts, all at once."""
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.add(sub.id)
        elif isinstance(sub, ast.arg):
            names.add(sub.arg)
        elif isinstance(sub, (ast.Global, ast.Nonlocal)):
            names.update(sub.names)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            names.add(sub.name)
        elif isinstance(sub, ast.alias):
            names.add((sub.asname or sub.name).split(".")[0])
    return names


def mentions(nodes, name: str) -> bool:
    return any(count_name(node, name) for node in nodes if node is not None)


def target_names(target: ast.AST) -> list[str] | None:
    """Names bound by a for/comprehension target made of names, tuples and lists; None for anything else."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        names: list[str] = []
        for elt in target.elts:
            sub = target_names(elt.value if isinstance(elt, ast.Starred) else elt)
            if sub is None:
                return None
            names.extend(sub)
        return names
    return None


def scope_nodes(nodes) -> Iterator[ast.AST]:
    """``nodes`` (statements or expressions of one scope) and their descendants in that scope: a nested
    function, lambda or class is yielded (it binds its name) with its decorators and defaults, but its body is
    not entered; of a comprehension only the first iterable is evaluated in the enclosing scope."""
    stack = list(reversed(list(nodes)))
    while stack:
        sub = stack.pop()
        yield sub
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            outer = list(getattr(sub, "decorator_list", [])) + sub.args.defaults + \
                [d for d in sub.args.kw_defaults if d is not None]
            stack.extend(reversed(outer))
        elif isinstance(sub, ast.ClassDef):
            stack.extend(reversed(sub.decorator_list + sub.bases + [k.value for k in sub.keywords]))
        elif isinstance(sub, COMPREHENSIONS):
            stack.append(sub.generators[0].iter)
        else:
            stack.extend(reversed(list(ast.iter_child_nodes(sub))))


def own_scope_nodes(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """The nodes of ``fn``'s body that belong to its own scope (see ``scope_nodes``)."""
    return scope_nodes(fn.body)


def bound_in(nodes) -> set[str]:
    """Names bound in the scope that owns ``nodes`` (statements or expressions), not counting nested scopes."""
    names: set[str] = set()
    for sub in scope_nodes(nodes):
        if isinstance(sub, ast.Name) and not isinstance(sub.ctx, ast.Load):
            names.add(sub.id)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
        elif isinstance(sub, ast.alias) and sub.name != "*":
            names.add((sub.asname or sub.name).split(".")[0])
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            names.add(sub.name)
        elif isinstance(sub, (ast.MatchAs, ast.MatchStar)) and sub.name:
            names.add(sub.name)
        elif isinstance(sub, ast.MatchMapping) and sub.rest:
            names.add(sub.rest)
    return names


def params_of(fn: ast.FunctionDef | ast.Lambda) -> list[str]:
    args = fn.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return names


def declared_global(fn: ast.AST) -> set[str]:
    """Names declared ``global``/``nonlocal`` anywhere in ``fn`` (nested functions included)."""
    names: set[str] = set()
    for sub in ast.walk(fn):
        if isinstance(sub, (ast.Global, ast.Nonlocal)):
            names.update(sub.names)
    return names


def function_locals(fn: ast.FunctionDef) -> set[str]:
    """Parameters and names bound in ``fn``'s own scope, minus global/nonlocal declarations."""
    return (set(params_of(fn)) | bound_in(fn.body)) - declared_global(fn)


def is_dynamic(node: ast.AST) -> bool:
    """Whether ``node`` calls something that inspects variables by name (locals(), eval, ...)."""
    return any(isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in DYNAMIC_CALLS
               for sub in ast.walk(node))


def has_nested_scope(node: ast.AST) -> bool:
    return any(isinstance(sub, SCOPE_NODES) for sub in ast.walk(node) if sub is not node)


def has_any(node: ast.AST, *types: type) -> bool:
    return any(isinstance(sub, types) for sub in ast.walk(node))


UNSAFE_EXPR = (ast.NamedExpr, ast.Yield, ast.YieldFrom, ast.Await, ast.Lambda)


def expr_ok(*nodes: ast.AST | None) -> bool:
    """No walrus, yield, await or lambda inside: such expressions change meaning when moved between scopes."""
    return not any(node is not None and has_any(node, *UNSAFE_EXPR) for node in nodes)


def is_pure(node: ast.AST) -> bool:
    """Evaluating ``node`` has no side effects and its value cannot change between two evaluations nearby."""
    if isinstance(node, (ast.Name, ast.Constant)):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant)
    return False


def same(a: ast.AST, b: ast.AST) -> bool:
    return ast.dump(a) == ast.dump(b)
