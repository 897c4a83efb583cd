"""Docstrings and comments: the biggest MI lever. radon (``multi=True``) counts multi-line strings and ``#``
lines as comments, and the comment share enters MI through ``50 * sin(sqrt(2.4 * percent))``; a one-line
docstring is *not* counted as a comment (it only adds a logical line, so it lowers MI a little).

Comments are carried as markers (see ``_ast_source``) and written as ``#`` lines by ``emit``.
"""

from __future__ import annotations

import ast
import re
import textwrap

from common.rewrite._ast_names import params_of
from common.rewrite._ast_source import clean_comment, clone, comment_marker, is_marker, real, strip_markers
from common.rewrite._ast_utils import blocks, body_start, docstring_node, functions
from common.rewrite.base import Context, Site, register, site_transform

_TASK_PREFIX = re.compile(
    r"^\s*write\s+(?:an?\s+)?(?:python\s+)?(?:function|program|lambda\s+function|code)\s+"
    r"(?:(?:to|that|which|for|in\s+order\s+to)\s+)?", re.IGNORECASE)
_VERBS = frozenset({"get", "find", "count", "check", "is", "has", "compute", "calculate", "return", "remove",
                    "sort", "convert", "add", "sum", "reverse", "merge", "split", "filter", "extract", "search",
                    "replace", "max", "min", "make", "print", "generate", "move", "rotate", "toggle", "set",
                    "swap", "match", "validate", "insert", "delete", "multiply", "divide", "concatenate", "join"})
_WIDTH = 88
_MAX_ONE_LINE = 120


def _sentence(text: str) -> str:
    text = " ".join(text.replace('"', "'").replace("\\", "/").split())
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def summary_for(fn: ast.FunctionDef, ctx: Context, main: bool) -> str:
    """One sentence describing ``fn``: from the task text for the main function, else from its name."""
    if main and ctx.task_text:
        return _sentence(_TASK_PREFIX.sub("", ctx.task_text.strip(), count=1))
    words = [w for w in fn.name.strip("_").split("_") if w] or [fn.name]
    if words[0].lower() in _VERBS:
        if words[0].lower() in ("is", "has"):
            return _sentence("Check whether the input " + " ".join(words).lower())
        return _sentence(" ".join(words).lower())
    return _sentence("Compute the " + " ".join(words).lower())


def _returns_bool(fn: ast.FunctionDef) -> bool:
    values = [sub.value for sub in ast.walk(fn) if isinstance(sub, ast.Return)]
    return bool(values) and all(isinstance(v, (ast.Compare, ast.BoolOp)) or (isinstance(v, ast.Constant)
                                and isinstance(v.value, bool)) for v in values)


def _returns_value(fn: ast.FunctionDef) -> bool:
    return any(isinstance(sub, ast.Return) and sub.value is not None for sub in ast.walk(fn))


def docstring_text(fn: ast.FunctionDef, ctx: Context, main: bool, indent: str, long: bool) -> str:
    """The docstring value for ``fn``; multi-line (Google style) when ``long``."""
    summary = summary_for(fn, ctx, main)
    if not long:
        # One line: the task sentence when it fits a (long) line, else the summary made from the name.
        return summary if len(summary) + len(indent) + 6 <= _MAX_ONE_LINE else summary_for(fn, ctx, False)
    wrap = textwrap.TextWrapper(width=_WIDTH - len(indent), subsequent_indent=indent, break_long_words=False)
    lines = [wrap.fill(summary), ""]
    params = [p for p in params_of(fn) if p not in ("self", "cls")]
    if params:
        lines.append(f"{indent}Args:")
        lines += [f"{indent}    {p}: The {p.replace('_', ' ').strip()} value." for p in params]
        lines.append("")
    if _returns_value(fn):
        lines.append(f"{indent}Returns:")
        described = "True if the condition holds, otherwise False." if _returns_bool(fn) else "The computed result."
        lines.append(f"{indent}    {described}")
    return "\n".join(lines).rstrip() + f"\n{indent}"


def _indent_of(tree: ast.Module, fn: ast.FunctionDef) -> str:
    # Depth = number of enclosing statements with bodies (+1 for the function body itself).
    def find(body: list[ast.stmt], level: int) -> int | None:
        for stmt in body:
            if stmt is fn:
                return level
            for field in ("body", "orelse", "finalbody"):
                sub = getattr(stmt, field, None)
                if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                    found = find(sub, level + 1)
                    if found is not None:
                        return found
            for handler in getattr(stmt, "handlers", []) or []:
                found = find(handler.body, level + 1)
                if found is not None:
                    return found
        return None
    depth = find(tree.body, 0) or 0
    return "    " * (depth + 1)


def _add_docstrings(tree: ast.Module, ctx: Context, long: bool) -> list[Site]:
    targets = [fn for fn in functions(tree) if docstring_node(fn) is None]
    if not targets:
        return []
    top = [stmt for stmt in tree.body if isinstance(stmt, ast.FunctionDef)]
    main = top[-1] if top else None

    def apply():
        for fn in targets:
            indent = _indent_of(tree, fn)
            text = docstring_text(fn, ctx, fn is main, indent, long)
            fn.body.insert(0, ast.Expr(value=ast.Constant(value=text)))
    return [apply]


@site_transform("add_docstring")
def add_docstring(tree: ast.Module, ctx: Context) -> list[Site]:
    """Give every function without one a multi-line docstring (summary, Args, Returns): raises MI."""
    return _add_docstrings(tree, ctx, long=True)


@site_transform("add_short_docstring")
def add_short_docstring(tree: ast.Module, ctx: Context) -> list[Site]:
    """Give every function without one a one-line docstring (radon does not count it as a comment)."""
    return _add_docstrings(tree, ctx, long=False)


@site_transform("strip_docstrings")
def strip_docstrings(tree: ast.Module, ctx: Context) -> list[Site]:
    """Remove every docstring (module and functions)."""
    owners = [tree] + functions(tree)
    owners = [owner for owner in owners if docstring_node(owner) is not None]
    if not owners:
        return []

    def apply():
        for owner in owners:
            del owner.body[0]
            if not real(owner.body):
                owner.body[:] = [ast.Pass()]
    return [apply]


@register("strip_comments")
def strip_comments(tree: ast.Module, rng=None, ctx: Context | None = None) -> ast.Module | None:
    """Remove every ``#`` comment."""
    if not any(is_marker(node) for node in ast.walk(tree)):
        return None
    return ast.fix_missing_locations(strip_markers(clone(tree)))


def _describe(stmt: ast.stmt) -> str | None:
    """A comment for ``stmt`` (None when there is nothing useful to say)."""
    def src(node: ast.AST, limit: int = 48) -> str | None:
        text = clean_comment(ast.unparse(node))
        return text if text and len(text) <= limit else None
    if isinstance(stmt, ast.For):
        target, source = src(stmt.target, 20), src(stmt.iter)
        return f"Loop over each {target} in {source}" if target and source else "Loop over the items"
    if isinstance(stmt, ast.While):
        test = src(stmt.test)
        return f"Repeat while {test}" if test else "Repeat until the condition fails"
    if isinstance(stmt, ast.If):
        test = src(stmt.test)
        return f"Check whether {test}" if test else "Handle the special case"
    if isinstance(stmt, ast.Return):
        if stmt.value is None:
            return "Nothing more to do"
        if isinstance(stmt.value, ast.Name):
            return f"Return {stmt.value.id}"
        if isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, bool):
            return f"The answer is {stmt.value.value}"
        return "Return the result"
    if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
        name = src(target, 30)
        if name is None:
            return None
        if isinstance(stmt, ast.AugAssign):
            return f"Update {name}"
        if not isinstance(target, ast.Name):
            return f"Set {name}"
        empty = isinstance(stmt.value, (ast.List, ast.Set, ast.Tuple)) and not stmt.value.elts \
            or isinstance(stmt.value, ast.Dict) and not stmt.value.keys
        if isinstance(stmt.value, ast.Constant) or empty:
            return f"Initialise {name}"
        return f"Compute {name}"
    if isinstance(stmt, ast.Try):
        return "Guard against errors"
    return None


@site_transform("add_comments")
def add_comments(tree: ast.Module, ctx: Context) -> list[Site]:
    """Put a short ``#`` comment before the loops, branches, assignments and returns of one function."""
    sites: list[Site] = []
    for fn in functions(tree):
        spots = []
        for block in blocks(tree):
            if block.func is not fn:
                continue
            start = body_start(fn) if block.body is fn.body else 0
            for i in range(start, len(block.body)):
                stmt = block.body[i]
                if is_marker(stmt) or (i and is_marker(block.body[i - 1])):
                    continue
                text = _describe(stmt)
                if text:
                    spots.append((block.body, stmt, text))
        if not spots:
            continue

        def apply(spots=spots):
            for body, stmt, text in spots:
                at = next(k for k, s in enumerate(body) if s is stmt)
                body.insert(at, comment_marker(text))
        sites.append(apply)
    return sites
