"""The default backend: transformers models sampled with our own continuous-batching decode loop.

Why not ``model.generate`` once per prompt with ``num_return_sequences=10`` (the reference notebooks)? On a CPU the
270M model's cost per step is dominated by its tied 262k-vocabulary lm_head (168M of its 268M parameters), and
that weight is read once per step whatever the batch size, so throughput grows almost linearly with the number of
sequences decoded together. This loop therefore:

* prefills each prompt ONCE and copies its KV cache to its ``num_samples`` rows (``generate`` prefills every
  returned sequence separately);
* drops a row from the batch the moment it finishes (closing fence, EOS or ``max_new_tokens``) and refills the
  freed slots from a queue of pending prompts, merging the newcomers' caches into the running batch (left-padded
  alignment, exactly the layout of a left-padded batch), so one rambling sample never leaves the batch at size 1;
* samples top-p exactly but cheaply: the nucleus is searched among the 64 most likely tokens and falls back to a
  full sort only for rows whose nucleus is larger (``generate`` sorts all 262k logits of every row every step);
* gives every (prompt, sample) its own random stream (``sample_seed``): a row's draws do not depend on its batch
  neighbours, so results are identical for the same config and differ across batch layouts only through
  floating-point differences of batched matrix products (rarely enough to flip a sampled token);
* halves the batch and restarts the affected rows (same seeds, same draws) when memory runs out;
* on CPU computes the Linear layers of decode steps as ``(W @ x^T)^T``, which this machine's BLAS runs twice as
  fast as torch's ``linear`` for a few dozen rows (``cpu_fast_linear``; same product up to float32 rounding);
* appends to the KV cache in place (buffers with headroom) instead of ``torch.cat``-ing it every step, and removes
  finished rows in groups (each removal copies the cache once).

The top-p sampler lives in ``nucleus``, the two CPU speedups (buffered cache layers, ``cpu_fast_linear``) in
``cpu_speedups``; this module is the decode loop.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from common.config import ModelConfig, SamplingConfig
from common.prompting.style import check_style, prompt_style
from common.prompting.templates import Prompt, render_prompt
from common.generation.base import (FINISH_LENGTH, FINISH_STOP, Completion, GenerationBackend, fence_cut, fences_opened_by_prompt,
                   sample_seed, to_completion)
from common.generation.cpu_speedups import BufferedLayer, BufferedSlidingLayer, buffered_layers, cpu_fast_linear
from common.generation.nucleus import sample_top_p

PREFILL_TOKENS = 4096  # padded prompt tokens per prefill forward (bounds the prefill's activation memory)
CPU_DEFAULT_CAPACITY = 48  # sequences decoded together on CPU (measured: benchmarks/bench_generation.py)
_CHAT_END_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")



def cache_kwarg(model) -> str:
    """transformers 5.24 renamed the forward's ``past_key_values`` to ``cache`` (the old name warns on every step)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@dataclass
class _Row:
    item: int  # index into the stream's items
    sample: int  # sample index within the item
    gen: torch.Generator | None  # its own random stream (None: greedy)
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None
    reported: bool = False


class _Batch:
    """The running batch: KV cache, 2D attention mask (left padding), next position and last token per row."""

    def __init__(self, cache: Any, mask: torch.Tensor, pos: torch.Tensor, last: torch.Tensor, rows: list[_Row]):
        self.cache, self.mask, self.pos, self.last, self.rows = cache, mask, pos, last, rows

    def __len__(self) -> int:
        return len(self.rows)

    def live(self) -> int:
        """Rows still decoding. Finished rows stay (their outputs ignored) until enough have finished to make
        removing them worth a copy of the whole cache."""
        return sum(row.finish is None for row in self.rows)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class HFBackend(GenerationBackend):
    """Batched sampling with a transformers causal LM (any device)."""

    def __init__(self, sampling: SamplingConfig, model_cfg: ModelConfig | None = None,
                 adapter: str | Path | None = None, *, model: Any = None, tokenizer: Any = None,
                 device: str | None = None, capacity: int | None = None, style: str | None = None):
        if model is None:
            if model_cfg is None:
                raise ValueError("HFBackend needs a model config or a loaded model")
            from common.models.loading import load_model

            # A merged adapter samples as fast as the base model (no extra LoRA matmuls); quantised weights cannot
            # be merged, so there the adapter stays separate.
            model, tokenizer = load_model(model_cfg, adapter=adapter, merge_adapter=model_cfg.quantization is None,
                                          device=device)
        if tokenizer is None:
            raise ValueError("HFBackend: pass the tokenizer with the model")
        self.model, self.tokenizer, self.sampling = model, tokenizer, sampling
        self._cache_kwarg = cache_kwarg(model)
        # the stage decided the style (common.prompting.style); a direct caller gets the same rule from the tokenizer
        self.style = (check_style(style, tokenizer, model_cfg.name if model_cfg else "model") if style
                      else prompt_style(model_cfg or ModelConfig(prompt_style="auto"), tokenizer))
        self.device = next(model.parameters()).device
        text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.vocab = int(text_config.vocab_size)  # the logits' width
        self.stop_ids = stop_token_ids(model, tokenizer)
        self._stop_mask = torch.zeros(self.vocab, dtype=torch.bool)
        self._stop_mask[[i for i in self.stop_ids if i < self.vocab]] = True
        self._backtick = backtick_token_mask(tokenizer, self.vocab)
        self.capacity = int(capacity or sampling.batch_size or default_capacity(model, self.device))
        self._can_merge = None  # decided on the first cache we see
        # Counters and seconds spent (forward_s: decode forwards; sample_s: sampling + stop checks), for benchmarks.
        self.stats = {"steps": 0, "tokens": 0, "prefill_tokens": 0, "merges": 0, "oom_halvings": 0,
                      "prefill_s": 0.0, "forward_s": 0.0, "sample_s": 0.0}

    # ----------------------------------------------------------------------------------------------------------
    # Public API

    def generate(self, prompts: list[Prompt], num_samples: int, seed: int) -> list[list[Completion]]:
        results: list[list[Completion] | None] = [None] * len(prompts)
        for index, completions in self.stream([(p, num_samples, seed) for p in prompts]):
            results[index] = completions
        return results  # type: ignore[return-value]

    def stream(self, items: Sequence[tuple[Prompt, int, int]]) -> Iterator[tuple[int, list[Completion]]]:
        greedy = self.sampling.temperature <= 0
        texts = [render_prompt(self.tokenizer, prompt) for prompt, _, _ in items]
        wanted = [int(n) for _, n, _ in items]
        # Greedy samples are all the same sequence: decode it once and copy it.
        todo = [1 if greedy and n > 0 else n for n in wanted]
        done: list[list[Completion | None]] = [[None] * n for n in todo]
        left = list(todo)
        queue: deque[tuple[int, int]] = deque((i, s) for i, n in enumerate(todo) for s in range(n))
        for i, n in enumerate(todo):
            if n == 0:
                yield i, []
        tokenized: dict[int, list[int]] = {}
        batch: _Batch | None = None
        with torch.inference_mode(), cpu_fast_linear(self.model):
            while queue or batch is not None:
                take: list[tuple[int, int]] = []
                try:
                    free = self.capacity - (batch.live() if batch is not None else 0)
                    if queue and free > 0 and (batch is None or (self._merge_ok(batch) and free >= self._admit_min())):
                        batch = self._remove_finished(batch)
                        take = [queue.popleft() for _ in range(min(free, len(queue)))]
                        batch = self._admit(batch, take, items, texts, tokenized)
                    else:
                        self._step(batch)
                except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                    if not _is_oom(exc) or self.capacity <= 1:
                        raise
                    batch = self._recover(batch, take, queue, exc)
                    continue
                for row in batch.rows if batch is not None else []:
                    if row.finish is None or row.reported:
                        continue
                    row.reported = True
                    done[row.item][row.sample] = self._completion(row)
                    left[row.item] -= 1
                    if left[row.item] == 0:
                        completions = done[row.item]
                        if greedy:
                            completions = completions * wanted[row.item]
                        yield row.item, list(completions)  # type: ignore[arg-type]
                if batch is not None and len(batch) - batch.live() >= max(1, len(batch) // 8):
                    batch = self._remove_finished(batch)

    # ----------------------------------------------------------------------------------------------------------
    # Decode loop pieces

    def _admit_min(self) -> int:
        # Merging copies the running cache once (~a tenth of a decode step at capacity 48 on CPU): refill as soon as
        # an eighth of the slots is free, which keeps the batch ~95% full without merging on every step.
        return max(1, self.capacity // 8)

    def _merge_ok(self, batch: _Batch) -> bool:
        if self._can_merge is None:
            from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

            kinds = (DynamicLayer, DynamicSlidingWindowLayer, BufferedLayer, BufferedSlidingLayer)
            self._can_merge = all(type(layer) in kinds for layer in batch.cache.layers)
        return self._can_merge

    def _admit(self, batch: _Batch | None, take: list[tuple[int, int]], items: Sequence, texts: list[str],
               tokenized: dict[int, list[int]]) -> _Batch:
        """Prefill the prompts of ``take`` (each prompt once), copy each cache to its sample rows, sample every
        row's first token and merge the result into ``batch``."""
        by_item: dict[int, list[int]] = {}
        for item, sample in take:
            by_item.setdefault(item, []).append(sample)
        for item in by_item:
            if item not in tokenized:
                tokenized[item] = self._tokenize(texts[item])
        groups: list[list[int]] = [[]]
        budget = 0
        for item in by_item:  # chunks of prompts within the prefill token budget
            cost = len(tokenized[item])
            if groups[-1] and budget + cost > PREFILL_TOKENS:
                groups.append([])
                budget = 0
            groups[-1].append(item)
            budget += cost
        for group in groups:
            new = self._prefill(group, by_item, items, tokenized)
            batch = new if batch is None else self._merge(batch, new)
        assert batch is not None
        return batch

    def _tokenize(self, text: str) -> list[int]:
        bos = self.tokenizer.bos_token
        add_special = not (bos and text.startswith(bos))  # chat templates already start with <bos>
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def _prefill(self, group: list[int], by_item: dict[int, list[int]], items: Sequence,
                 tokenized: dict[int, list[int]]) -> _Batch:
        from transformers import DynamicCache

        length = max(len(tokenized[i]) for i in group)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(group), length), pad, dtype=torch.long)
        mask = torch.zeros((len(group), length), dtype=torch.long)
        for r, item in enumerate(group):
            seq = tokenized[item]
            ids[r, length - len(seq):] = torch.tensor(seq)
            mask[r, length - len(seq):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        buffered_layers(cache)
        start = time.perf_counter()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, **{self._cache_kwarg: cache},
                         use_cache=True, logits_to_keep=1)
        self.stats["prefill_s"] += time.perf_counter() - start
        self.stats["prefill_tokens"] += int(mask.sum())
        # One cache row per sample: the prompt's KV copied, never recomputed.
        expand = [r for r, item in enumerate(group) for _ in by_item[item]]
        index = torch.tensor(expand, device=self.device)
        cache = _returned_cache(out)
        for layer in cache.layers:
            if getattr(layer, "is_initialized", False) and layer.keys is not None and layer.keys.numel():
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        greedy = self.sampling.temperature <= 0
        rows = []
        for item in group:
            for sample in by_item[item]:
                gen = None
                if not greedy:
                    gen = torch.Generator().manual_seed(sample_seed(items[item][2], items[item][0], sample))
                rows.append(_Row(item=item, sample=sample, gen=gen))
        logits = out.logits[:, -1, :][index]
        batch = _Batch(cache, mask[index], mask[index].sum(-1), torch.zeros(len(rows), dtype=torch.long,
                                                                              device=self.device), rows)
        self._accept(batch, self._sample(logits.float(), rows))
        return batch

    def _step(self, batch: _Batch | None) -> None:
        assert batch is not None
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch), 1))], dim=-1)
        start = time.perf_counter()
        out = self.model(input_ids=batch.last[:, None], attention_mask=batch.mask, position_ids=batch.pos[:, None],
                         **{self._cache_kwarg: batch.cache}, use_cache=True, logits_to_keep=1)
        middle = time.perf_counter()
        batch.pos = batch.pos + 1
        self.stats["steps"] += 1
        self._accept(batch, self._sample(out.logits[:, -1, :].float(), batch.rows))
        self.stats["forward_s"] += middle - start
        self.stats["sample_s"] += time.perf_counter() - middle

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """One token per row: greedy at temperature 0, else exact top-p from each row's own random stream."""
        if self.sampling.temperature <= 0:
            return logits.argmax(-1)
        uniforms = torch.tensor([float(torch.rand((), generator=row.gen)) if row.finish is None else 0.5
                                 for row in rows],
                                dtype=torch.float32, device=logits.device)
        return sample_top_p(logits, self.sampling.temperature, self.sampling.top_p, uniforms)

    def _accept(self, batch: _Batch, tokens: torch.Tensor) -> None:
        """Record each row's new token and decide whether the row is finished."""
        batch.last = tokens
        cpu = tokens.tolist()
        self.stats["tokens"] += len(cpu)
        stop = self._stop_mask[tokens.cpu()].tolist()
        tick = self._backtick[tokens.cpu()].tolist()
        fences = fences_opened_by_prompt(self.style)
        limit = self.sampling.max_new_tokens
        for row, token, is_stop, has_tick in zip(batch.rows, cpu, stop, tick):
            if row.finish is not None:  # finished earlier, still in the batch until the next removal
                continue
            row.tokens.append(token)
            if is_stop:
                row.finish = FINISH_STOP
            elif has_tick and self.sampling.stop_at_fence and fence_cut(self._decode(row), fences) is not None:
                row.finish = FINISH_STOP
            elif len(row.tokens) >= limit:
                row.finish = FINISH_LENGTH

    def _decode(self, row: _Row) -> str:
        return self.tokenizer.decode(row.tokens, skip_special_tokens=True)

    def _completion(self, row: _Row) -> Completion:
        return to_completion(self._decode(row), self.style, row.finish or FINISH_LENGTH, len(row.tokens),
                             self.sampling.stop_at_fence)

    def _remove_finished(self, batch: _Batch | None) -> _Batch | None:
        """Physically remove finished rows (one copy of the cache for all of them)."""
        if batch is None:
            return None
        keep = [i for i, row in enumerate(batch.rows) if row.finish is None]
        if len(keep) == len(batch):
            return batch
        if not keep:
            return None
        index = torch.tensor(keep, device=self.device)
        for layer in batch.cache.layers:
            if getattr(layer, "is_initialized", False) and layer.keys is not None and layer.keys.numel():
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        batch.mask, batch.pos, batch.last = batch.mask[index], batch.pos[index], batch.last[index]
        batch.rows = [batch.rows[i] for i in keep]
        if self._merge_ok(batch):
            self._compact(batch)
        return batch

    # ----------------------------------------------------------------------------------------------------------
    # Cache surgery: the running batch always looks like one left-padded batch of its current virtual length.

    @staticmethod
    def _layer_len(layer: Any) -> int:
        return int(layer.cumulative_length) if hasattr(layer, "cumulative_length") else int(layer.keys.shape[-2])

    def _merge(self, a: _Batch, b: _Batch) -> _Batch:
        """Concatenate two batches: the shorter one is left-padded (zeros, masked out) to the longer's length."""
        self.stats["merges"] += 1
        length = max(a.mask.shape[1], b.mask.shape[1])

        def pad_left(t: torch.Tensor, to: int, dim: int) -> torch.Tensor:
            missing = to - t.shape[dim]
            if missing <= 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for la, lb in zip(a.cache.layers, b.cache.layers):
            stored = max(la.keys.shape[-2], lb.keys.shape[-2])
            la.keys = torch.cat([pad_left(la.keys, stored, 2), pad_left(lb.keys, stored, 2)], dim=0)
            la.values = torch.cat([pad_left(la.values, stored, 2), pad_left(lb.values, stored, 2)], dim=0)
            if hasattr(la, "cumulative_length"):
                la.cumulative_length = max(int(la.cumulative_length), int(lb.cumulative_length))
        a.mask = torch.cat([pad_left(a.mask, length, 1), pad_left(b.mask, length, 1)], dim=0)
        a.pos = torch.cat([a.pos, b.pos])
        a.last = torch.cat([a.last, b.last])
        a.rows = a.rows + b.rows
        return a

    def _compact(self, batch: _Batch) -> None:
        """Drop leading columns that are padding in every row (left behind by finished long rows)."""
        lead = int((batch.mask.cumsum(-1) == 0).sum(-1).min())
        if lead <= 0:
            return
        batch.mask = batch.mask[:, lead:]
        for layer in batch.cache.layers:
            if hasattr(layer, "cumulative_length"):
                new_len = int(layer.cumulative_length) - lead
                stored = layer.keys.shape[-2]
                if stored > new_len:
                    drop = stored - new_len
                    layer.keys, layer.values = layer.keys[:, :, drop:], layer.values[:, :, drop:]
                layer.cumulative_length = new_len
            else:
                layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]

    def _recover(self, batch: _Batch | None, take: list[tuple[int, int]], queue: deque, exc: BaseException) -> None:
        """Out of memory: halve the batch, put the running rows (and those being admitted) back at the front of the
        queue (same seeds, so they redraw the same tokens) and free what we can."""
        self.stats["oom_halvings"] += 1
        self.capacity = max(1, self.capacity // 2)
        pending = [(row.item, row.sample) for row in batch.rows if not row.reported] if batch is not None else []
        pending += [key for key in take if key not in set(pending)]
        for key in reversed(pending):
            queue.appendleft(key)
        del batch
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        print(f"[generation] out of memory ({type(exc).__name__}); batch capacity -> {self.capacity}")
        return None


# --------------------------------------------------------------------------------------------------------------
# Helpers shared with the benchmark and tests


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids from the tokenizer and generation config, plus chat end-of-turn tokens present in the vocabulary."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in _CHAT_END_TOKENS if t in vocab)
    return sorted(ids)


def backtick_token_mask(tokenizer: Any, size: int) -> torch.Tensor:
    """True for tokens whose text contains a backtick: only those can complete a fence, so only they trigger the
    (comparatively costly) decode-and-check of a row's text."""
    mask = torch.zeros(size, dtype=torch.bool)
    for token, index in tokenizer.get_vocab().items():
        if index < size and ("`" in token or token == "<0x60>"):
            mask[index] = True
    return mask


def default_capacity(model: Any, device: torch.device) -> int:
    """Sequences decoded together when SamplingConfig.batch_size is None. On CPU, measured best (~48 on 2 cores);
    on GPU, what half the free memory holds for 2048-token rows, capped at 256."""
    if device.type != "cuda":
        return CPU_DEFAULT_CAPACITY
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_token = 2 * cfg.num_hidden_layers * heads * head_dim * next(model.parameters()).element_size()
    per_row = per_token * 2048 + 4 * model.config.vocab_size * 3  # KV cache + fp32 logits/probs
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(256, (free * 0.5) // per_row)))

