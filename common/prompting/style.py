"""The prompt style of a model, decided in one place: ``chat`` (the tokenizer's chat template) or ``completion`` (a
plain prompt that opens a ```python fence, for base models).

``model.prompt_style`` is explicit in every shipped model config. ``auto`` means chat when the tokenizer ships a
chat template. A stage decides the style once with :func:`prompt_style`, builds its prompts in that style and
hands the same style to the generation backend (``make_backend(..., style=...)``). The backend only checks that its
tokenizer can take that style, so prompts and replies can never be built and parsed in two different styles.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from common.config import ModelConfig, to_dict

STYLES = ("chat", "completion")


def style_for_tokenizer(configured: str, tokenizer: Any) -> str:
    """``configured`` itself, or for 'auto': chat when ``tokenizer`` ships a chat template, else completion."""
    if configured == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "completion"
    if configured not in STYLES:
        raise ValueError(f"model.prompt_style must be 'auto' or one of {STYLES}, got {configured!r}")
    return configured


@lru_cache(maxsize=16)
def _auto_style(model_json: str) -> str:
    from common.models.loading import load_tokenizer

    return style_for_tokenizer("auto", load_tokenizer(ModelConfig(**json.loads(model_json))))


def prompt_style(model_cfg: ModelConfig, tokenizer: Any = None) -> str:
    """The style for ``model_cfg``. 'auto' looks at ``tokenizer``, or loads the model's tokenizer once per process."""
    if model_cfg.prompt_style != "auto":
        return style_for_tokenizer(model_cfg.prompt_style, None)
    if tokenizer is not None:
        return style_for_tokenizer("auto", tokenizer)
    return _auto_style(json.dumps(to_dict(model_cfg), sort_keys=True))


def check_style(style: str, tokenizer: Any, model_name: str) -> str:
    """A backend's check of the style a stage decided: chat prompts need a chat template."""
    if style not in STYLES:
        raise ValueError(f"prompt style must be one of {STYLES}, got {style!r}")
    if style == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"model {model_name!r}: chat prompts need a chat template, and its tokenizer has none")
    return style
