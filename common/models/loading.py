"""Loading models and tokenizers from a ``ModelConfig``: hub/local checkpoints, the embedded Gemma-3 270M and tiny
random models for tests.

``load_model(cfg)`` returns ``(model, tokenizer)`` for every source, optionally with a PEFT adapter (trainable for
stage 2c, merged for fast sampling). Tiny models (``source: tiny``) are built from config with deterministic
weights (``tiny_seed``) and use either the bundled 4k byte-level BPE (``tiny_tokenizer: small``, the default: a
262k-wide output layer would make a hidden-32 model as slow as a real one) or the real Gemma-3 tokenizer
(``tiny_tokenizer: gemma``, extracted from the GGUF once); their module names include every LoRA target of the
paper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.config import RESOURCE_DIR, ModelConfig
from common.models.gguf import ensure_gemma_270m, ensure_gemma_tokenizer

RESOURCES = RESOURCE_DIR
GEMMA3_CHAT_TEMPLATE = RESOURCES / "gemma3_chat_template.jinja"
TINY_TOKENIZER = RESOURCES / "tiny_tokenizer"  # 4k byte-level BPE (scripts/build_tiny_tokenizer.py)
SOURCES = ("hub", "local", "gguf-package", "tiny")
TINY_ARCHITECTURES = ("gemma3", "qwen3", "llama")


def resolve_dtype(name: str | None, device: str | None = None):
    """'auto' -> bf16 on a GPU that supports it, else fp32 (the paper trains in fp32; CPUs sample fp32)."""
    import torch

    if name in (None, "auto"):
        on_gpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        return torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ValueError(f"model dtype must be one of {sorted(table)} or 'auto', got {name!r}")
    return table[name]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------------------------------------------
# Tokenizers


def _tokenizer_path(cfg: ModelConfig) -> tuple[str, dict]:
    if cfg.source == "tiny":
        choice = getattr(cfg, "tiny_tokenizer", "small")
        if choice == "small":
            return str(TINY_TOKENIZER), {}
        if choice == "gemma":
            return str(ensure_gemma_tokenizer()), {}
        raise ValueError(f"model {cfg.name!r}: tiny_tokenizer must be 'small' or 'gemma', got {choice!r}")
    if cfg.source == "gguf-package":
        return str(ensure_gemma_270m()), {}
    if cfg.source in ("hub", "local"):
        if not cfg.path:
            raise ValueError(f"model {cfg.name!r}: source {cfg.source!r} needs `path`")
        kwargs = {"trust_remote_code": cfg.trust_remote_code}
        if cfg.source == "hub" and cfg.revision:
            kwargs["revision"] = cfg.revision
        return cfg.path, kwargs
    raise ValueError(f"model {cfg.name!r}: source must be one of {SOURCES}, got {cfg.source!r}")


def _unavailable(cfg: ModelConfig, path: str, exc: BaseException):
    """A model the hub (or the disk) cannot give us, as one line naming the settings that would."""
    from common.errors import Unavailable, first_line

    return Unavailable(f"model {cfg.name!r} could not be loaded from {path!r} ({first_line(exc)}): set model.path to a "
                       "local copy (with model.source: local), or download it on a machine with hub access (its "
                       "cache then serves HF_HUB_OFFLINE=1 runs)")


def load_tokenizer(model_cfg: ModelConfig) -> Any:
    """The model's tokenizer with a pad token, plus the bundled Gemma-3-style chat template when the config asks
    for chat prompts and the tokenizer has no template (tiny models; a base checkpoint used as chat)."""
    from transformers import AutoTokenizer

    path, kwargs = _tokenizer_path(model_cfg)
    # A fresh object per call (the 262k-vocabulary tokenizer takes ~3 s, mostly parsing its JSON; a deep copy of a
    # loaded one is slower still): callers may change padding_side or the template without affecting each other.
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise _unavailable(model_cfg, path, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model_cfg.prompt_style == "chat" and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE.read_text()
    return tokenizer


# --------------------------------------------------------------------------------------------------------------
# Tiny random models (tests)


def tiny_config(model_cfg: ModelConfig, vocab_size: int, special: dict[str, int | None]) -> Any:
    """A transformers config for a tiny model of ``tiny_architecture``: 4 query heads, 2 KV heads (exercises GQA),
    an MLP twice the hidden size and tied embeddings (as in Gemma-3 270M)."""
    hidden = int(model_cfg.tiny_hidden_size)
    if hidden < 8 or hidden % 4:
        raise ValueError(f"tiny_hidden_size must be a multiple of 4 and >= 8, got {hidden}")
    common = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=int(model_cfg.tiny_num_layers), num_attention_heads=4, num_key_value_heads=2,
        head_dim=hidden // 4, max_position_embeddings=4096, tie_word_embeddings=True, **special,
    )
    arch = model_cfg.tiny_architecture
    if arch == "gemma3":
        from transformers import Gemma3TextConfig

        # Alternating sliding/full layers and a 32-token window, so short test sequences exercise both cache
        # kinds the real Gemma-3 uses (its window is 512, five sliding layers per full one).
        layers = int(model_cfg.tiny_num_layers)
        layer_types = ["full_attention" if i % 2 else "sliding_attention" for i in range(layers)]
        return Gemma3TextConfig(**common, query_pre_attn_scalar=hidden // 4, sliding_window=32,
                                layer_types=layer_types)
    if arch == "qwen3":
        from transformers import Qwen3Config

        return Qwen3Config(**common)
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    raise ValueError(f"tiny_architecture must be one of {TINY_ARCHITECTURES}, got {arch!r}")


def build_tiny_model(model_cfg: ModelConfig, tokenizer: Any | None = None) -> Any:
    """A randomly initialised causal LM; the same config (``tiny_seed``) always gives the same weights."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_cfg)
    special = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
    config = tiny_config(model_cfg, len(tokenizer), special)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(model_cfg.tiny_seed))
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


# --------------------------------------------------------------------------------------------------------------
# The one entry point


def _quantization_config(kind: str | None, dtype: Any) -> Any:
    if kind is None:
        return None
    from transformers import BitsAndBytesConfig

    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=dtype)
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization must be None, '4bit' or '8bit', got {kind!r}")


def load_model(
    model_cfg: ModelConfig,
    adapter: str | Path | None = None,
    merge_adapter: bool = False,
    trainable_adapter: bool = False,
    device: str | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``model_cfg``, optionally with a PEFT adapter.

    adapter: a directory written by PEFT ``save_pretrained``. ``trainable_adapter=True`` keeps training it
    (stage 2c; loading it frozen makes training fail at step 1), ``merge_adapter=True`` folds it into the weights
    (faster sampling; not with quantised weights). device: defaults to CUDA when present; ignored when the config
    sets ``device_map`` or quantisation (accelerate places those).
    """
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    dtype = resolve_dtype(model_cfg.dtype, device)
    tokenizer = load_tokenizer(model_cfg)
    placed = False
    if model_cfg.source == "tiny":
        model = build_tiny_model(model_cfg, tokenizer).to(dtype)
    else:
        path, kwargs = _tokenizer_path(model_cfg)  # same location as the weights
        kwargs["dtype"] = dtype
        if model_cfg.attn_implementation:
            kwargs["attn_implementation"] = model_cfg.attn_implementation
        quant = _quantization_config(model_cfg.quantization, dtype)
        if quant is not None:
            kwargs["quantization_config"] = quant
            kwargs["device_map"] = model_cfg.device_map or {"": device}
            placed = True
        elif model_cfg.device_map:
            kwargs["device_map"] = model_cfg.device_map
            placed = True
        try:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except OSError as exc:
            raise _unavailable(model_cfg, path, exc) from exc
    if not placed:
        model = model.to(device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable_adapter)
        if merge_adapter:
            if trainable_adapter:
                raise ValueError("merge_adapter and trainable_adapter exclude each other")
            model = model.merge_and_unload()
    if not trainable_adapter:
        model.eval()
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
