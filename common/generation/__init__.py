"""Sampling from code LLMs: one interface, several backends, resumable jobs.

``make_backend(sampling, model, adapter)`` returns a ``GenerationBackend`` for ``sampling.backend``:

* ``hf`` (default): transformers with our continuous-batching decode loop (``hf.py``), CPU or GPU;
* ``vllm``: a vLLM engine with LoRA support (GPU; ``vllm_backend.py``, imported only when chosen);
* ``api``: an OpenAI-compatible chat-completions endpoint over HTTP (``api.py``).

Each imports its heavy dependencies lazily (the evalplus pattern), so ``import common.generation`` is cheap.
``run_sampling_job`` (``jobs.py``) streams samples to disk and resumes after a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.generation.base import (FINISH_LENGTH, FINISH_STOP, Completion, GenerationBackend, fence_cut, prompt_key, sample_seed,
                   to_completion)
from common.generation.jobs import SampleRequest, SamplingJobError, load_job_rows, run_sampling_job

BACKENDS = ("hf", "vllm", "api")

__all__ = ["BACKENDS", "Completion", "FINISH_LENGTH", "FINISH_STOP", "GenerationBackend", "SampleRequest",
           "SamplingJobError", "fence_cut", "free_accelerator_memory", "load_job_rows", "make_backend", "prompt_key",
           "run_sampling_job", "sample_seed", "to_completion"]


def free_accelerator_memory() -> None:
    """Give a dropped backend's memory back (Python objects, then CUDA's cache) before the next model loads."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def make_backend(sampling: Any, model: Any = None, adapter: str | Path | None = None, style: str | None = None,
                 **kwargs: Any) -> GenerationBackend:
    """The backend named by ``sampling.backend`` for model config ``model`` (with an optional PEFT adapter).

    ``style`` is the prompt style the calling stage decided (``common.prompting.style.prompt_style``); the local
    backends check their tokenizer against it instead of deciding again. kwargs go to the backend's constructor
    (e.g. ``model=``/``tokenizer=`` objects already loaded, for ``hf``)."""
    name = sampling.backend
    if name == "hf":
        from common.generation.hf import HFBackend

        loaded = kwargs.pop("loaded_model", None)
        return HFBackend(sampling, model, adapter, model=loaded, style=style, **kwargs)
    if name == "vllm":
        from common.generation.vllm_backend import VLLMBackend

        return VLLMBackend(sampling, model, adapter, style=style, **kwargs)
    if name == "api":
        from common.generation.api import APIBackend

        return APIBackend(sampling, model, **kwargs)
    raise ValueError(f"sampling.backend must be one of {BACKENDS}, got {name!r}")
