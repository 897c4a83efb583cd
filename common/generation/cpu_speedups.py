"""The two CPU speedups of the HF backend's decode loop (``common.generation.hf``), both exact up to float32 rounding:

* KV-cache layers that append in place into buffers with headroom instead of ``torch.cat``-ing the whole cache
  every step (a 48-row step of the 270M at 250 tokens: 440 -> 320 ms; identical samples);
* ``cpu_fast_linear``: decode-step ``nn.Linear`` layers computed as ``(W @ x^T)^T``, which this machine's BLAS runs
  about twice as fast as torch's ``linear`` for a few dozen rows (a 48-row step: 645 -> 440 ms).

Measurements: ``docs/generation.md`` and ``benchmarks/bench_generation.py``.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any, Iterator

import torch
from transformers.cache_utils import DynamicLayer as _DynamicLayer
from transformers.cache_utils import DynamicSlidingWindowLayer as _DynamicSlidingWindowLayer


def buffered_layers(cache: Any) -> None:
    """Swap the cache's plain dynamic layers for buffered ones (see ``_Appender``); other layer kinds stay."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[i] = BufferedLayer()
        elif type(layer) is DynamicSlidingWindowLayer:
            cache.layers[i] = BufferedSlidingLayer(sliding_window=layer.sliding_window)


class _Appender:
    """Keys/values kept in a buffer with headroom, so a decode step writes one position instead of ``torch.cat``-ing
    the whole cache (the cat was ~20 % of a CPU decode step at 48 rows). ``keys``/``values`` stay views of the
    buffer; when anything else replaces them (our row removal, merges, compaction) the next update notices and
    copies them into a fresh buffer."""

    HEADROOM = 64

    def _append(self, key_states: torch.Tensor, value_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        add = key_states.shape[-2]
        current = self.keys if self.keys is not None and self.keys.dim() == 4 else None
        if current is None or current is not getattr(self, "_view", None) or self._end + add > self._buf_k.shape[-2]:
            n = current.shape[-2] if current is not None else 0
            shape = list(key_states.shape)
            shape[-2] = n + add + self.HEADROOM
            self._buf_k, self._buf_v = key_states.new_empty(shape), value_states.new_empty(shape)
            if n:
                self._buf_k[:, :, :n] = current
                self._buf_v[:, :, :n] = self.values
            self._start, self._end = 0, n
        self._buf_k[:, :, self._end:self._end + add] = key_states
        self._buf_v[:, :, self._end:self._end + add] = value_states
        full = (self._buf_k[:, :, self._start:self._end + add], self._buf_v[:, :, self._start:self._end + add])
        self._end += add
        return full

    def _expose(self, start: int) -> None:
        self._start = start
        self.keys = self._view = self._buf_k[:, :, start:self._end]
        self.values = self._buf_v[:, :, start:self._end]


class BufferedLayer(_Appender, _DynamicLayer):  # full attention: keeps everything
    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        full = self._append(key_states, value_states)
        self._expose(self._start)
        return full


class BufferedSlidingLayer(_Appender, _DynamicSlidingWindowLayer):  # keeps the last sliding_window - 1
    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.cumulative_length += key_states.shape[-2]
        full = self._append(key_states, value_states)
        self._expose(max(self._start, self._end - (self.sliding_window - 1)))
        return full


FAST_LINEAR_MAX_ROWS = 256  # above this many rows (prefill) torch's own linear is as fast


def _transposed_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``F.linear`` computed as ``(W @ x^T)^T``: the same product, a different BLAS call. For the few rows of a
    decode step torch's CPU ``linear`` runs at ~50 GFLOP/s on our 2-core machine while ``W @ x^T`` runs at ~100-120
    (measured for every projection shape of Gemma-3 270M and its 262k lm_head at 10-48 rows)."""
    rows = x.numel() // x.shape[-1]
    if rows > FAST_LINEAR_MAX_ROWS or x.dtype != self.weight.dtype:
        return torch.nn.functional.linear(x, self.weight, self.bias)
    # contiguous: attention kernels (SDPA flash on CPU) fall back to a slow path on transposed q/k/v
    out = torch.mm(self.weight, x.reshape(rows, x.shape[-1]).t()).t().contiguous()
    if self.bias is not None:
        out = out + self.bias
    return out.view(*x.shape[:-1], self.weight.shape[0])


@contextlib.contextmanager
def cpu_fast_linear(model: Any) -> Iterator[None]:
    """While sampling on CPU, route the model's ``nn.Linear`` layers (exact classes only: not quantised or LoRA
    wrappers, whose inner Linear is patched instead) through ``_transposed_linear``; restored on exit, so a model
    shared with training or other code is left as it was. Decode steps get ~1.4x faster; logits differ from
    ``F.linear`` only by float32 rounding (max |diff| 5e-5 at logit std 6, same argmax, on the 270M)."""
    patched = []
    if next(model.parameters()).device.type == "cpu":
        for module in model.modules():
            if type(module) is torch.nn.Linear and "forward" not in module.__dict__:
                module.forward = types.MethodType(_transposed_linear, module)
                patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward
