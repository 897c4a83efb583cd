"""Behaviour-preserving AST rewrites of a reference solution: the offline stage-1 generator (docs/design.md §3).

``generate_variants(code)`` applies random sequences of transforms (``TRANSFORMS``: loops <-> comprehensions,
accumulators <-> sum/any/all, if/else <-> conditional expressions, guard clauses, helper extraction/inlining,
renames, temporaries, chained comparisons, docstrings and comments) and returns distinct, functionally
equivalent variants whose Maintainability Index differs, so MI-labelled (chosen, rejected) pairs can be built
without an LLM. Every transform is conservative: it only rewrites a site where its pattern is safe, and it
never renames, removes or re-signs a top-level name of the original (the asserts call them). Callers still run
each variant against the task's asserts (stage 1 does); on the 974 MBPP references every transform, applied
alone, kept every passing reference passing.

Assumptions beyond plain Python semantics (true for builtin numbers, strings and containers): comparisons
return bools (``bool_return_*``), ``a >= b`` equals ``b <= a`` (``merge_comparison``), ``x += e`` equals
``x = x + e`` for a local only ever bound to numbers/strings, and a call does not rebind a global that the same
statement reads before it (temporaries are only moved across names, constants and ``name.attr``).

Transforms take ``(tree, rng, ctx=None)`` and return a new ``ast.Module`` or None; see ``base``.
"""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass, field

from common.rewrite import control, docs, functions, loops, statements  # noqa: F401  (register the transforms)
from common.rewrite._ast_source import emit, normalise_source, parse_source, parse_with_comments
from common.rewrite.base import TRANSFORMS, Context, Transform, register

__all__ = ["TRANSFORMS", "Context", "Transform", "Variant", "generate_variants", "apply_transforms", "emit",
           "parse_source", "register", "REFORMAT"]

REFORMAT = "reformat"
# Tries per requested variant before giving up (small solutions have few distinct rewrites).
_ATTEMPTS_PER_VARIANT = 8
# With spread_mi, candidates drawn per variant kept (the kept ones span the widest MI range).
_POOL_FACTOR = 3
# Stop drawing after this many candidates in a row brought nothing new (the solution has few rewrites).
_MAX_MISSES = 24


@dataclass
class Variant:
    """One rewrite of a solution: its code and the transforms applied, in order ([REFORMAT] for the
    reference itself re-emitted by ``ast.unparse``)."""

    code: str
    transforms: list[str] = field(default_factory=list)


def _signatures(tree: ast.Module) -> dict[str, str]:
    return {stmt.name: ast.dump(stmt.args) for stmt in tree.body
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _valid(text: str, signatures: dict[str, str]) -> bool:
    """The variant compiles and still defines the original's top-level functions with the same parameters."""
    try:
        tree = ast.parse(text)
        compile(tree, "<variant>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    found = _signatures(tree)
    return all(found.get(name) == args for name, args in signatures.items())


def apply_transforms(code: str, names: list[str], seed: int = 0, task_text: str | None = None) -> str | None:
    """Apply the named transforms in order (each at a site chosen with ``seed``); None when one does not apply."""
    tree = parse_with_comments(code)
    if tree is None:
        return None
    ctx = Context.for_tree(tree, task_text)
    rng = random.Random(seed)
    for name in names:
        tree = TRANSFORMS[name](tree, rng, ctx)
        if tree is None:
            return None
    return emit(tree)


def generate_variants(code: str, max_variants: int = 8, seed: int = 0, max_depth: int = 3, *,
                      task_text: str | None = None, include_reformat: bool = True,
                      transforms: list[str] | None = None, spread_mi: bool = True) -> list[Variant]:
    """Up to ``max_variants`` distinct rewrites of ``code`` (never ``code`` itself), deterministic for a seed.

    Each candidate applies a random sequence of 1..``max_depth`` transforms, each drawn uniformly among those
    that apply. With ``include_reformat`` the first variant is the reference re-emitted by ``ast.unparse``
    (transforms ``["reformat"]``), so a pair can be (reference, rewrite). With ``spread_mi`` a pool of
    ``_POOL_FACTOR * max_variants`` candidates is drawn and the lowest- and highest-MI candidates are kept
    first (so an MI-labelled pair exists whenever the rewrites can move MI at all), then the others in the
    order drawn. ``task_text`` (the task sentence) feeds the docstrings; ``transforms`` restricts the registry.
    Unparsable code gives [].
    """
    tree = parse_with_comments(code)
    if tree is None or max_variants <= 0:
        return []
    ctx = Context.for_tree(tree, task_text)
    signatures = _signatures(tree)
    names = [name for name in TRANSFORMS if transforms is None or name in transforms]
    rng = random.Random(seed)
    seen = {normalise_source(code).strip()}
    reformat: list[Variant] = []
    pool: list[Variant] = []

    def add(candidate: ast.Module, applied: list[str], into: list[Variant]) -> None:
        text = emit(candidate)
        key = text.strip()
        if key not in seen and _valid(text, signatures):
            seen.add(key)
            into.append(Variant(code=text, transforms=list(applied)))

    if include_reformat:
        add(tree, [REFORMAT], reformat)
    seen.add(emit(tree).strip())
    # Which transforms apply to the reference itself (every draw starts there): found once, not per draw.
    base_applicable = [name for name in names
                       if (TRANSFORMS[name].applies(tree, ctx) if hasattr(TRANSFORMS[name], "applies")
                           else TRANSFORMS[name](tree, rng, ctx) is not None)]
    wanted = max_variants - len(reformat)
    pool_size = wanted * (_POOL_FACTOR if spread_mi else 1)
    misses = 0
    for _ in range(max(1, wanted) * _ATTEMPTS_PER_VARIANT * (_POOL_FACTOR if spread_mi else 1)):
        if len(pool) >= pool_size or misses >= _MAX_MISSES:
            break
        current, applied = tree, []
        for _ in range(rng.randint(1, max(1, max_depth))):
            order = list(base_applicable if current is tree else names)
            rng.shuffle(order)
            for name in order:
                new = TRANSFORMS[name](current, rng, ctx)
                if new is not None:
                    current = new
                    applied.append(name)
                    break
            else:
                break
        before = len(pool)
        if applied:
            add(current, applied, pool)
        misses = 0 if len(pool) > before else misses + 1
    if spread_mi and len(pool) > wanted > 0:
        pool = _spread(pool, wanted)
    return (reformat + pool)[:max_variants]


def _spread(pool: list[Variant], wanted: int) -> list[Variant]:
    """``wanted`` candidates of ``pool``: its lowest- and highest-MI ones, then the rest in pool order (the
    result keeps pool order)."""
    from common.signals.mi import maintainability_index

    scores = [maintainability_index(v.code) for v in pool]
    scored = [i for i, s in enumerate(scores) if s is not None]
    chosen: list[int] = []
    if scored:
        chosen.append(min(scored, key=lambda i: (scores[i], i)))
        high = max(scored, key=lambda i: (scores[i], -i))
        if high not in chosen:
            chosen.append(high)
    chosen += [i for i in range(len(pool)) if i not in chosen]
    return [pool[i] for i in sorted(chosen[:wanted])]
