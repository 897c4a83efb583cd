"""AST helpers shared by the rewrite transforms: parsing MBPP sources, emitting code (with comments), scopes,
names, purity and the statement blocks a transform may edit.

Comments do not exist in an AST, so a comment is carried through the transforms as a *marker*: an expression
statement holding a string that starts with ``COMMENT_PREFIX``. ``emit`` writes markers as ``# ...`` lines.
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import re
import textwrap
import tokenize
from dataclasses import dataclass
from typing import Iterator

COMMENT_PREFIX = "__mi_rewrite_comment__: "
BUILTIN_NAMES = frozenset(dir(builtins))
# Calls that read or write a frame's variables by name: renaming or moving variables would change them.
DYNAMIC_CALLS = frozenset({"locals", "vars", "eval", "exec", "globals", "dir", "__import__"})
SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_SAFE_COMMENT = re.compile(r"[^ -~]")  # printable ASCII only


# ---------------------------------------------------------------------------------------------------- parse / emit

def normalise_source(code: str) -> str:
    """LF line ends, no BOM, no common indentation, no trailing blank lines (MBPP uses CRLF and tabs)."""
    code = (code or "").lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return textwrap.dedent(code).strip("\n") + "\n"


def parse_source(code: str) -> ast.Module | None:
    """The module of ``code`` (normalised; tab indentation tried as-is, then expanded), or None."""
    text = normalise_source(code)
    for candidate in (text, text.expandtabs(8), text.expandtabs(4)):
        try:
            return ast.parse(candidate)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return None


def parse_with_comments(code: str) -> ast.Module | None:
    """Like ``parse_source`` but full-line comments become comment markers (so they survive the rewrites).

    A comment is kept only where a statement may stand (its own line, followed by a statement at the same
    indentation); when the annotated source fails to parse, the comments are dropped instead.
    """
    tree = parse_source(code)
    if tree is None:
        return None
    text = normalise_source(code)
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return tree
    lines = text.split("\n")
    inserts: dict[int, str] = {}
    for tok in tokens:
        if tok.type != tokenize.COMMENT:
            continue
        row, col = tok.start
        if lines[row - 1][:col].strip():
            continue  # trailing comment after code: dropped
        body = clean_comment(tok.string.lstrip("#"))
        nxt = next((i for i in range(row, len(lines)) if lines[i].strip() and not lines[i].lstrip().startswith("#")),
                   None)
        if not body or nxt is None:
            continue
        follower = lines[nxt]
        indent = follower[: len(follower) - len(follower.lstrip())]
        if re.match(r"(else|elif|except|finally|case)\b", follower.lstrip()) or follower.lstrip().startswith(")"):
            continue
        inserts[row - 1] = f"{indent}{COMMENT_PREFIX}{body}"
    if not inserts:
        return tree
    out = [repr_marker_line(inserts[i]) if i in inserts else line for i, line in enumerate(lines)]
    for candidate in ("\n".join(out), "\n".join(out).expandtabs(8)):
        try:
            annotated = ast.parse(candidate)
        except (SyntaxError, ValueError):
            continue
        if ast.dump(strip_markers(clone(annotated))) == ast.dump(tree):
            return annotated
    return tree


def repr_marker_line(line: str) -> str:
    stripped = line.lstrip()
    return line[: len(line) - len(stripped)] + repr(stripped)


def clean_comment(text: str) -> str:
    """A comment body safe to carry in a marker: one line of printable ASCII."""
    text = " ".join(text.replace("\t", " ").split())
    return _SAFE_COMMENT.sub("", text).strip()[:100]


def comment_marker(text: str) -> ast.Expr:
    return ast.Expr(value=ast.Constant(value=COMMENT_PREFIX + clean_comment(text)))


def is_marker(node: ast.AST) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str) and node.value.value.startswith(COMMENT_PREFIX))


def real(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements of a block without comment markers."""
    return [stmt for stmt in body if not is_marker(stmt)]


def strip_markers(tree: ast.AST) -> ast.AST:
    """Remove every comment marker (in place); a block left empty gets ``pass``."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list) and any(is_marker(s) for s in body):
                kept = real(body)
                body[:] = kept or ([ast.Pass()] if field == "body" else [])
    return tree


def _tidy_markers(tree: ast.AST) -> None:
    """Drop markers that would dangle: at the end of a block or right before another marker."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not any(is_marker(s) for s in body):
                continue
            kept: list[ast.stmt] = []
            for i, stmt in enumerate(body):
                if is_marker(stmt) and (i + 1 == len(body) or is_marker(body[i + 1])):
                    continue
                kept.append(stmt)
            body[:] = kept if real(kept) else body


class _Unparser(ast._Unparser):  # type: ignore[name-defined,misc]
    """``ast.unparse`` that writes comment markers as comments and ``f(x for x in y)`` without double parens."""

    def get_raw_docstring(self, node):
        found = super().get_raw_docstring(node)
        if found is not None and found.value.startswith(COMMENT_PREFIX):
            return None
        return found

    def visit_Expr(self, node):
        if is_marker(node):
            self.fill("# " + node.value.value[len(COMMENT_PREFIX):])
            return
        super().visit_Expr(node)

    def visit_Call(self, node):
        if len(node.args) == 1 and not node.keywords and isinstance(node.args[0], ast.GeneratorExp):
            self.set_precedence(ast._Precedence.ATOM, node.func)  # type: ignore[attr-defined]
            self.traverse(node.func)
            gen = node.args[0]
            with self.delimit("(", ")"):
                self.traverse(gen.elt)
                for comp in gen.generators:
                    self.traverse(comp)
            return
        super().visit_Call(node)


def emit(tree: ast.Module) -> str:
    """Source text of ``tree`` (markers as ``#`` comments), ending in a newline. ``tree`` is not modified."""
    if any(is_marker(node) for node in ast.walk(tree)):
        tree = clone(tree)
        _tidy_markers(tree)
    try:
        text = _Unparser().visit(tree)
    except Exception:  # pragma: no cover - private API changed: fall back to the public one, comments lost
        text = ast.unparse(strip_markers(clone(tree)))
    return text.strip("\n") + "\n"


def clone(node):
    """A deep copy of an AST (much faster than ``copy.deepcopy``: no memo; leaf values are immutable and the
    shared Load/Store/operator singletons stay shared)."""
    if isinstance(node, list):
        return [clone(item) for item in node]
    if not isinstance(node, ast.AST) or not node._fields:
        return node
    new = node.__class__.__new__(node.__class__)
    for name in node._fields:
        setattr(new, name, clone(getattr(node, name, None)))
    for name in node._attributes:
        if hasattr(node, name):
            setattr(new, name, getattr(node, name))
    return new


# ---------------------------------------------------------------------------------------------------- names

def identifiers(node: ast.AST) -> set[str]:
    """Every identifier that appears in ``node`` (names, parameters, definitions, imports, attributes, keywords)."""
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.add(sub.id)
        elif isinstance(sub, ast.arg):
            names.add(sub.arg)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
        elif isinstance(sub, ast.alias):
            names.add((sub.asname or sub.name).split(".")[0])
        elif isinstance(sub, (ast.Global, ast.Nonlocal)):
            names.update(sub.names)
        elif isinstance(sub, ast.Attribute):
            names.add(sub.attr)
        elif isinstance(sub, ast.keyword) and sub.arg:
            names.add(sub.arg)
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            names.add(sub.name)
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
