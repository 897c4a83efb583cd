"""Shared fixtures. Keep them small and session-scoped: model loading dominates test time.

``tiny_model(name, **overrides)`` builds a tiny random model once per session (the 262k-vocabulary Gemma tokenizer
takes a few seconds to parse); ``gemma_270m`` loads the real embedded model (converted once per machine, then
cached under ``$MI_ALIGN_CACHE`` or ``~/.cache/mi-align``).
"""

from __future__ import annotations

import dataclasses
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the test suite may download


@pytest.fixture(scope="session")
def tiny_model():
    """Factory: ``tiny_model("tiny-gemma3", tiny_seed=1) -> (model, tokenizer, model_cfg)``, cached per session.
    Callers must not train or modify the returned model in place (it is shared); build their own instead."""
    from common.config import load_model_config
    from common.models.loading import load_model

    built: dict = {}

    def get(name: str, **overrides):
        key = (name, tuple(sorted(overrides.items())))
        if key not in built:
            cfg = dataclasses.replace(load_model_config(name), **overrides)
            model, tokenizer = load_model(cfg, device="cpu")
            built[key] = (model, tokenizer, cfg)
        return built[key]

    return get


@pytest.fixture(scope="session")
def gemma_270m():
    """``(model, tokenizer, model_cfg)`` of the embedded Gemma-3 270M on CPU (first use converts the GGUF, ~1-2 min)."""
    from common.config import load_model_config
    from common.models.loading import load_model

    cfg = load_model_config("gemma-3-270m")
    model, tokenizer = load_model(cfg, device="cpu")
    return model, tokenizer, cfg


# Sandbox handles, one executor per test module: every isolation level this machine offers ("auto": namespaces
# where the kernel allows) and the forced fallback; nsbox for guarantees only namespaces give.
@pytest.fixture(scope="module", params=["auto", "rlimits"])
def box(request):
    from common.sandbox import Sandbox

    sandbox = Sandbox(request.param)
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="module")
def nsbox():
    from common.sandbox import Sandbox

    sandbox = Sandbox("auto")
    if not sandbox.isolation_level().startswith("namespaces"):
        pytest.skip(f"namespaces unavailable here: {sandbox._hello.get('reason')}")
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random BERT and a WordPiece tokenizer over a hand-made vocabulary, saved to a folder."""
    import string

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = ("def return if else elif for while in import from class self print range len None True False and or "
             "not is lambda yield with as try except pass total value values item items add first").split()
    pieces = [f"##{char}" for char in string.ascii_letters + string.digits + "_"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *string.ascii_letters, *string.digits,
             *string.punctuation, *pieces]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 takes the vocabulary file as ``vocab=`` (``vocab_file=`` is ignored: every token would be UNK)
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=False, model_max_length=512)
    assert tokenizer.unk_token not in tokenizer.tokenize("def add(a, b): return a + b")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
