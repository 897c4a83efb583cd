"""vLLM backend (GPU): the same interface as the HF backend, with LoRA adapters served by vLLM itself.

vLLM is imported only when this backend is chosen (it is not a dependency of the rest of the project).

Details that matter for correctness:

* Prompts are rendered with the model's chat template (``render_prompt``) and passed as token ids: a Gemma chat
  template already starts with ``<bos>`` and vLLM would add a second one if given the text.
* Every (prompt, sample) is its own request with its own seed (``sample_seed``), so a sample does not depend on the
  batch; vLLM's prefix cache makes the repeated prompt nearly free.
* Stopping at the closing fence: a completion prompt already opened the block, so any ``` closes it
  (``stop=["```"]``). A chat reply *starts* with its opening fence, so it stops on "\\n```" instead (the closing
  fence is on its own line). When a stop string turns out to have been an opening fence (a reply that begins with
  prose, then ```python), the sample is continued from where it stopped (prompt + text so far, ``stop=["```"]``)
  instead of being returned unfinished. ``include_stop_str_in_output`` keeps the fence, as the HF backend does.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from common.config import ModelConfig, SamplingConfig
from common.prompting.style import check_style, prompt_style
from common.prompting.templates import Prompt, render_prompt
from common.generation.base import FINISH_LENGTH, FINISH_STOP, Completion, GenerationBackend, fence_cut, fences_opened_by_prompt, \
    prompt_key, sample_seed, to_completion

MAX_CONTINUATIONS = 3


def _model_path(model_cfg: ModelConfig) -> tuple[str, dict]:
    """Where vLLM reads weights and tokenizer from, plus LLM(...) kwargs for the source."""
    if model_cfg.source == "gguf-package":
        from common.models.loading import ensure_gemma_270m

        return str(ensure_gemma_270m()), {}
    if model_cfg.source == "tiny":
        return str(_saved_tiny_model(model_cfg)), {}
    if not model_cfg.path:
        raise ValueError(f"model {model_cfg.name!r}: source {model_cfg.source!r} needs `path`")
    kwargs: dict[str, Any] = {"trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.source == "hub" and model_cfg.revision:
        kwargs["revision"] = model_cfg.revision
    return model_cfg.path, kwargs


def _saved_tiny_model(model_cfg: ModelConfig) -> Path:
    """vLLM loads from a directory: save the tiny random model (deterministic per config) once under the cache."""
    import hashlib
    import json

    from common.config import to_dict
    from common.models.gguf import cache_root
    from common.models.loading import load_model

    digest = hashlib.sha256(json.dumps(to_dict(model_cfg), sort_keys=True).encode()).hexdigest()[:12]
    target = cache_root() / "tiny" / f"{model_cfg.name}-{digest}"
    if not (target / "config.json").exists():
        model, tokenizer = load_model(model_cfg, device="cpu")
        target.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
    return target


class VLLMBackend(GenerationBackend):
    def __init__(self, sampling: SamplingConfig, model_cfg: ModelConfig, adapter: str | Path | None = None,
                 style: str | None = None, **llm_kwargs: Any):
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError("sampling.backend 'vllm' needs the vllm package (GPU); use backend 'hf'") from exc
        path, kwargs = _model_path(model_cfg)
        kwargs.update(dtype=model_cfg.dtype if model_cfg.dtype != "auto" else "auto",
                      gpu_memory_utilization=sampling.vllm_gpu_memory_utilization, seed=sampling.seed)
        if model_cfg.quantization in ("4bit", "8bit"):
            kwargs["quantization"] = "bitsandbytes"
        if adapter is not None:
            kwargs.update(enable_lora=True, max_lora_rank=sampling.vllm_max_lora_rank, max_loras=1)
        kwargs.update(llm_kwargs)
        self.sampling = sampling
        self.llm = LLM(model=path, tokenizer=path, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        if model_cfg.prompt_style == "chat" and not getattr(self.tokenizer, "chat_template", None):
            from common.models.loading import GEMMA3_CHAT_TEMPLATE

            self.tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE.read_text()
        self.style = (check_style(style, self.tokenizer, model_cfg.name) if style
                      else prompt_style(model_cfg, self.tokenizer))
        self.lora = LoRARequest("adapter", 1, str(adapter)) if adapter is not None else None

    def _ids(self, text: str) -> list[int]:
        bos = self.tokenizer.bos_token
        return list(self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"])

    def _params(self, seed: int, max_tokens: int, stop: list[str]) -> Any:
        from vllm import SamplingParams

        greedy = self.sampling.temperature <= 0
        return SamplingParams(n=1, temperature=0.0 if greedy else self.sampling.temperature,
                              top_p=1.0 if greedy else self.sampling.top_p, max_tokens=max(1, max_tokens),
                              seed=None if greedy else seed, stop=stop if self.sampling.stop_at_fence else None,
                              include_stop_str_in_output=True, skip_special_tokens=True)

    def generate(self, prompts: list[Prompt], num_samples: int, seed: int) -> list[list[Completion]]:
        if self.sampling.temperature <= 0 and num_samples > 1:  # greedy samples are all one sequence
            return [group * num_samples for group in self.generate(prompts, 1, seed)]
        texts = [render_prompt(self.tokenizer, p) for p in prompts]
        fences = fences_opened_by_prompt(self.style)
        first_stop = ["```"] if fences else ["\n```"]
        # state per (prompt, sample): generated text, token count, finish reason
        jobs = [(p, s) for p in range(len(prompts)) for s in range(num_samples)]
        text = {job: "" for job in jobs}
        tokens = {job: 0 for job in jobs}
        finish = {job: FINISH_LENGTH for job in jobs}
        todo = list(jobs)
        for round_no in range(MAX_CONTINUATIONS + 1):
            if not todo:
                break
            requests, params = [], []
            for p, s in todo:
                key = prompt_key(prompts[p]) + ("" if round_no == 0 else f"\x00continue{round_no}")
                requests.append({"prompt_token_ids": self._ids(texts[p] + text[(p, s)])})
                stop = first_stop if round_no == 0 else ["```"]
                params.append(self._params(sample_seed(seed, key, s), self.sampling.max_new_tokens - tokens[(p, s)],
                                           stop))
            outputs = self.llm.generate(requests, sampling_params=params, lora_request=self.lora, use_tqdm=False)
            again = []
            for job, output in zip(todo, outputs):
                piece = output.outputs[0]
                text[job] += piece.text
                tokens[job] += len(piece.token_ids)
                finish[job] = FINISH_STOP if piece.finish_reason == "stop" else FINISH_LENGTH
                stopped_on_string = piece.finish_reason == "stop" and isinstance(piece.stop_reason, str)
                if (stopped_on_string and fence_cut(text[job], fences) is None
                        and tokens[job] < self.sampling.max_new_tokens):
                    again.append(job)  # the stop string was an opening fence: keep going inside the block
            todo = again
        return [[to_completion(text[(p, s)], self.style, finish[(p, s)], tokens[(p, s)], self.sampling.stop_at_fence)
                 for s in range(num_samples)] for p in range(len(prompts))]

    def close(self) -> None:
        """Release the engine and its GPU memory (evaluation loads one engine per model variant)."""
        llm = getattr(self, "llm", None)
        self.llm = None
        del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass
