"""Two speed-ups for LoRA training on CPU, each switching one narrow behaviour of a library (TRL, datasets), and
FSDP on CPU processes (``fsdp_on_cpu``) so the sharded path can be tested without GPUs.

Both leave results unchanged: ``tests/test_training.py`` compares the reference log-probs computed through TRL with
direct forward passes, and dataset fingerprints stay content-based.
"""

from __future__ import annotations

from typing import Any


def _tokenizer_token(module: str, name: str, digest: str) -> None:
    """Stands for a tokenizer in dataset fingerprints (never called; pickled by reference)."""


def fast_tokenizer_fingerprint(tokenizer: Any) -> None:
    """Make ``datasets`` fingerprint this tokenizer class from its content digest instead of pickling it.

    TRL tokenises with ``dataset.map(..., fn_kwargs={"processing_class": tokenizer})`` and ``datasets`` hashes
    those arguments with dill: for Gemma's tokenizer (262k-entry vocab dict, 515k merges as Python objects) that
    takes 4-10 s per trainer on 2 cores. The digest of the backend's JSON plus the small attributes (chat
    template, special tokens, padding side) identifies the same content in ~1 s. Only ``datasets``' own hashing
    pickler is affected.
    """
    from datasets.fingerprint import Hasher
    from datasets.utils._dill import Pickler, pklregister

    cls = type(tokenizer)
    backend = getattr(tokenizer, "_tokenizer", None)
    if cls in Pickler.dispatch or not hasattr(backend, "to_str"):
        return
    heavy = {"_vocab", "_merges", "_tokenizer", "cache", "deprecation_warnings"}

    def save(pickler: Any, obj: Any) -> None:
        light = {key: value for key, value in obj.__dict__.items() if key not in heavy}
        digest = Hasher.hash(light) + Hasher.hash_bytes(obj._tokenizer.to_str().encode())
        pickler.save_reduce(_tokenizer_token, (cls.__module__, cls.__qualname__, digest), obj=obj)

    pklregister(cls)(save)


def score_only_completions_on_cpu() -> None:
    """Make TRL's fused LM head score only completion positions on CPU, as it does on CUDA.

    TRL 1.16 projects only the positions with a label through the LM head when Triton runs (CUDA/XPU) and every
    position elsewhere, because on Neuron a data-dependent shape recompiles the graph. A CPU has no such
    constraint, and with Gemma's 262k-token LM head the prompt and padding positions cost as much as the
    completions: scoring only the completions gives identical log-probs (tests compare them with direct forward
    passes) and made a Gemma-3 270M DPO forward+backward 1.3-2.2x cheaper on 2 cores (docs_training.md). The
    switch is TRL's own (``compact``); only its device test is widened to CPUs.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None or getattr(original, "_mi_align_cpu", False):
        return

    def compact_here(device: Any) -> bool:
        return original(device) or device.type == "cpu"

    compact_here._mi_align_cpu = True
    trl_utils._use_triton = compact_here


def fsdp_on_cpu() -> None:
    """Let ``accelerate launch --config_file configs/accelerate/fsdp.yaml`` shard on CPU processes (gloo).

    accelerate 1.x turns FSDP on only for GPU-like multi-device types (``AcceleratorState.__init__``): on a CPU
    machine the launch silently becomes plain multi-CPU DDP, so the FSDP path (sharded parameters, the gathered
    full state dict when saving) would never run before a GPU box. torch's FSDP2 itself works on CPU with gloo, so
    after accelerate's own initialisation a MULTI_CPU state of an FSDP launch is marked FSDP with the plugin
    accelerate built from the launcher's environment. Only used when launched with FSDP on a machine without CUDA.
    """
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    if getattr(AcceleratorState.__init__, "_mi_align_fsdp", False):
        return
    original = AcceleratorState.__init__

    def __init__(self, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    __init__._mi_align_fsdp = True
    AcceleratorState.__init__ = __init__
