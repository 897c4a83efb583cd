"""Parsing MBPP sources and emitting code for the rewrite transforms, with comments.

Comments do not exist in an AST, so a comment is carried through the transforms as a *marker*: an expression
statement holding a string that starts with ``COMMENT_PREFIX``. ``emit`` writes markers as ``# ...`` lines.
"""

from __future__ import annotations

import ast
import io
import re
import textwrap
import tokenize

COMMENT_PREFIX = "__mi_rewrite_comment__: "
_SAFE_COMMENT = re.compile(r"[^ -~]")  # printable ASCII only


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
