"""The transform protocol and registry.

A transform takes an ``ast.Module``, a ``random.Random`` and an optional ``Context`` and returns a *new* tree
(the input is never modified) or None when it does not apply. Most transforms look for every site where their
pattern is safe and rewrite one site chosen by the rng.
"""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass, field
from typing import Callable, Optional

from common.rewrite._ast_source import clone
from common.rewrite._ast_utils import top_level_names

Site = Callable[[], None]


@dataclass(frozen=True)
class Context:
    """What a transform must know beyond the tree.

    ``protected``: top-level names of the *original* solution (the asserts may call any of them): never removed
    or renamed, signatures kept. ``task_text``: the task sentence, used to write docstrings.
    """

    protected: frozenset[str] = field(default_factory=frozenset)
    task_text: Optional[str] = None

    @classmethod
    def for_tree(cls, tree: ast.Module, task_text: str | None = None) -> "Context":
        return cls(protected=top_level_names(tree), task_text=task_text)


Transform = Callable[..., Optional[ast.Module]]
TRANSFORMS: dict[str, Transform] = {}


def register(name: str):
    """Decorator: register a transform under ``name``."""
    def wrap(fn: Transform) -> Transform:
        if name in TRANSFORMS:
            raise ValueError(f"transform {name!r} registered twice")
        fn.transform_name = name  # type: ignore[attr-defined]
        TRANSFORMS[name] = fn
        return fn
    return wrap


def site_transform(name: str):
    """Decorator for a site finder ``find(tree, ctx) -> list[Site]``: the registered transform copies the tree,
    finds the sites, applies one chosen by the rng and returns the copy (None when there is no site)."""
    def wrap(find: Callable[[ast.Module, Context], list[Site]]) -> Transform:
        def transform(tree: ast.Module, rng: random.Random | None = None,
                      ctx: Context | None = None) -> ast.Module | None:
            rng = rng or random.Random(0)
            ctx = ctx or Context.for_tree(tree)
            if not find(tree, ctx):  # finders only read the tree: no copy when there is nothing to do
                return None
            work = clone(tree)
            sites = find(work, ctx)
            rng.choice(sites)()
            return ast.fix_missing_locations(work)
        def applies(tree: ast.Module, ctx: Context | None = None) -> bool:
            return bool(find(tree, ctx or Context.for_tree(tree)))

        transform.__name__ = find.__name__
        transform.__doc__ = find.__doc__
        transform.applies = applies  # type: ignore[attr-defined]
        return register(name)(transform)
    return wrap
