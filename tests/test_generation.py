"""Generation: stop rules, exact top-p, per-sample seeds, the continuous-batching HF loop (against
``model.generate``), and resumable sampling jobs (including a real SIGKILL mid-job)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.config import SamplingConfig
from common.generation import (Completion, SampleRequest, SamplingJobError, fence_cut, make_backend,
                               run_sampling_job, sample_seed, to_completion)
from common.generation.cpu_speedups import cpu_fast_linear
from common.generation.hf import HFBackend
from common.generation.nucleus import sample_top_p
from common.generation.jobs import ROWS_FILE, load_job_rows
from common.prompting.templates import build_prompt, render_prompt

REPO = Path(__file__).resolve().parent.parent
PINNED_SEED = 8795869279076477962  # sample_seed(7, "a", 0)
TASKS = [
    {"task_id": 1, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b\n"},
    {"task_id": 2, "text": "Write a python function to find the maximum of three numbers given as a list, "
                           "ignoring None values and returning None for an empty list.",
     "code": "def max3(xs):\n    return max(x for x in xs if x is not None)\n"},
    {"task_id": 3, "text": "Reverse a string.", "code": ""},
    {"task_id": 4, "text": "Write a function that counts the vowels in a string. " * 3, "code": "def vowels(s):\n"},
    {"task_id": 5, "text": "Sum a list.", "code": "def total(xs):\n"},
]


# ----------------------------------------------------------------------------------------------------------------
# Stop rule and extraction (strings)


@pytest.mark.parametrize("text, before, cut", [
    ("def f():\n    return 1\n```\nmore", 1, len("def f():\n    return 1\n```")),
    ("def f():\n    return 1\n``", 1, None),  # fence not complete yet
    ("x = '```'\n", 1, None),  # backticks inside a line are not a fence
    ("def f():\n    pass\n```python\ndef g(): pass\n```", 1, len("def f():\n    pass\n```")),  # new block = end
    ("```python\ndef f():\n    return 1\n```\n", 0, len("```python\ndef f():\n    return 1\n```")),
    ("```python\ndef f():\n    return 1\n", 0, None),  # chat reply: only the opening fence so far
    ("Here it is:\n```python\nx = 1\n    ```\nbye", 0, len("Here it is:\n```python\nx = 1\n    ```")),
])
def test_fence_cut(text, before, cut):
    assert fence_cut(text, before) == cut


def test_to_completion_cuts_and_extracts_per_style():
    done = to_completion("def f():\n    return 1\n```\nprint(f())\n```python\n", "completion", "length", 30)
    assert (done.text, done.code, done.finish_reason, done.num_tokens) == (
        "def f():\n    return 1\n```", "def f():\n    return 1", "stop", 30)
    chat = to_completion("```python\ndef f():\n    return 1\n```\nThis returns 1.", "chat", "length", 9)
    assert (chat.text, chat.code, chat.finish_reason) == ("```python\ndef f():\n    return 1\n```",
                                                          "def f():\n    return 1", "stop")
    unfinished = to_completion("def f():\n    return [", "completion", "length", 5)
    assert (unfinished.code, unfinished.finish_reason) == ("def f():\n    return [", "length")
    kept = to_completion("def f():\n    return 1\n```\nrest", "completion", "length", 5, stop_at_fence=False)
    assert kept.text.endswith("rest") and kept.code == "def f():\n    return 1"


def test_sample_seed_is_stable_and_distinct():
    prompt = [{"role": "user", "content": "x"}]
    assert sample_seed(0, prompt, 3) == sample_seed(0, [{"content": "x", "role": "user"}], 3)  # key order
    seeds = {sample_seed(s, p, i) for s in (0, 1) for p in ("a", "b", prompt) for i in range(10)}
    assert len(seeds) == 60
    assert sample_seed(7, "a", 0) == PINNED_SEED  # a reproducibility contract: changing the rule changes every run


# ----------------------------------------------------------------------------------------------------------------
# Exact top-p sampling


def _reference_nucleus(probs: torch.Tensor, top_p: float) -> set[int]:
    """transformers' TopPLogitsWarper on the same distribution: the tokens it keeps."""
    from transformers.generation.logits_process import TopPLogitsWarper

    warped = TopPLogitsWarper(top_p=top_p)(None, probs.log()[None])
    return set(torch.isfinite(warped[0]).nonzero().flatten().tolist())


@pytest.mark.parametrize("vocab, spread", [(50, 3.0), (3000, 0.01)])  # peaked; flat (nucleus > 64 tokens)
def test_sample_top_p_matches_the_nucleus_and_its_probabilities(vocab, spread):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(vocab, generator=gen) * spread
    temperature, top_p = 0.6, 0.9
    probs = torch.softmax(logits / temperature, -1)
    nucleus = _reference_nucleus(probs, top_p)
    draws = 20000 if vocab < 1000 else 5000
    uniforms = (torch.arange(draws, dtype=torch.float32) + 0.5) / draws  # a fine grid over [0, 1)
    tokens = sample_top_p(logits.expand(draws, -1), temperature, top_p, uniforms)
    assert set(tokens.tolist()) <= nucleus
    kept = torch.tensor(sorted(nucleus))
    expected = probs[kept] / probs[kept].sum()
    observed = torch.bincount(tokens, minlength=vocab)[kept].float() / draws
    assert (observed - expected).abs().max() < 2.0 / draws + 1e-3


def test_sample_top_p_one_and_greedy_rows():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    # uniform 0 picks the first token of the CDF; at top_p=1 the order is the vocabulary order
    assert sample_top_p(logits, 1.0, 1.0, torch.tensor([0.0, 0.999])).tolist() == [0, 2]
    # a nucleus of one token always returns that token
    assert sample_top_p(logits * 100, 1.0, 0.5, torch.tensor([0.3, 0.99])).tolist() == [1, 0]


# ----------------------------------------------------------------------------------------------------------------
# The HF backend on tiny models


def _backend(tiny_model, name, **sampling):
    model, tokenizer, cfg = tiny_model(name)
    capacity = sampling.pop("capacity", None)
    params = {"max_new_tokens": 8, **sampling}
    return HFBackend(SamplingConfig(**params), cfg, model=model, tokenizer=tokenizer, capacity=capacity)


@pytest.mark.parametrize("name", ["tiny-gemma3", "tiny-qwen3", "tiny-llama"])
@pytest.mark.parametrize("style", ["chat", "completion"])
def test_tiny_models_generate_in_each_prompt_style(tiny_model, name, style):
    model, tokenizer, cfg = tiny_model(name)
    if style == "chat" and not tokenizer.chat_template:
        model, tokenizer, cfg = tiny_model(name, prompt_style="chat")
    backend = HFBackend(SamplingConfig(max_new_tokens=6), dataclasses.replace(cfg, prompt_style=style),
                        model=model, tokenizer=tokenizer, capacity=4)
    assert backend.style == style
    prompts = [build_prompt(t, style) for t in TASKS[:3]]
    out = backend.generate(prompts, 3, seed=11)
    assert [len(group) for group in out] == [3, 3, 3]
    for group in out:
        for sample in group:
            assert isinstance(sample, Completion)
            assert 1 <= sample.num_tokens <= 6
            assert sample.finish_reason in ("stop", "length")
            expected = to_completion(sample.text, style, sample.finish_reason, sample.num_tokens)
            assert sample.code == expected.code
    assert len({s.text for g in out for s in g}) > 3  # samples differ
    assert backend.generate(prompts, 3, seed=11) == out  # same config, same samples
    assert backend.generate(prompts, 3, seed=12) != out


class Scripted(HFBackend):
    """Forces each row's tokens (the model still runs): tests stop logic and bookkeeping on real token ids."""

    scripts: dict[int, list[int]] = {}

    def _sample(self, logits, rows):
        filler = self.tokenizer.convert_tokens_to_ids("x")
        return torch.tensor([self.scripts[r.item][len(r.tokens)] if len(r.tokens) < len(self.scripts[r.item])
                             else filler for r in rows])


def _scripted(tiny_model, name, texts, capacity=2, **sampling):
    model, tokenizer, cfg = tiny_model(name)
    backend = Scripted(SamplingConfig(**{"max_new_tokens": 40, **sampling}), cfg, model=model, tokenizer=tokenizer,
                       capacity=capacity)
    backend.scripts = {}
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if isinstance(text, str) else text
        backend.scripts[i] = ids
    return backend, tokenizer


def test_completion_style_stops_at_the_closing_fence(tiny_model):
    body = "def f(x):\n    return x + 1\n"
    backend, tok = _scripted(tiny_model, "tiny-llama", [body + "```\nprint(f(1))\n```python\nmore = 1\n", body + "``"])
    [[fenced], [unclosed]] = backend.generate(["p1 ```python\n", "p2 ```python\n"], 1, seed=0)
    assert fenced.finish_reason == "stop"
    assert fenced.text == body + "```"
    assert fenced.code == body.rstrip("\n")
    head = tok(body + "```", add_special_tokens=False)["input_ids"]
    assert fenced.num_tokens <= len(head) + 1  # stopped on the token that completed the fence
    assert unclosed.finish_reason == "length" and unclosed.num_tokens == 40


def test_chat_style_keeps_the_opening_fence_and_stops_at_the_closing_one(tiny_model):
    reply = "```python\ndef f(x):\n    return x * 2\n```"
    backend, _ = _scripted(tiny_model, "tiny-gemma3", [reply + "\nThis doubles x.<end_of_turn>"])
    [[sample]] = backend.generate([[{"role": "user", "content": "double"}]], 1, seed=0)
    assert sample.text == reply
    assert sample.code == "def f(x):\n    return x * 2"
    assert sample.finish_reason == "stop"


def test_eos_and_end_of_turn_stop_and_length_limit(tiny_model):
    _, tok, _ = tiny_model("tiny-gemma3")
    words = tok("def f(): pass", add_special_tokens=False)["input_ids"]
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    backend, _ = _scripted(tiny_model, "tiny-gemma3", [words + [tok.eos_token_id], words + [end_of_turn], words * 20],
                           max_new_tokens=12)
    eos, eot, long = backend.generate([[{"role": "user", "content": f"t{i}"}] for i in range(3)], 1, seed=0)
    assert (eos[0].finish_reason, eos[0].num_tokens, eos[0].text) == ("stop", len(words) + 1, "def f(): pass")
    assert (eot[0].finish_reason, eot[0].num_tokens) == ("stop", len(words) + 1)
    assert (long[0].finish_reason, long[0].num_tokens) == ("length", 12)


def test_finished_rows_leave_and_free_slots_are_refilled(tiny_model):
    """Rows of very different lengths through a 3-slot batch: every result is right and slots were refilled."""
    lengths = [2, 30, 5, 3, 18, 1, 9]
    texts = [" ".join(["w"] * (n - 1)) + "\n```" if n > 1 else "```" for n in lengths]
    backend, tok = _scripted(tiny_model, "tiny-gemma3", texts, capacity=3)
    prompts = [[{"role": "user", "content": "q" * (i + 1)}] for i in range(len(texts))]
    backend.scripts = {i: tok("```python\n" + t, add_special_tokens=False)["input_ids"] for i, t in enumerate(texts)}
    out = backend.generate(prompts, 2, seed=0)
    for text, group in zip(texts, out):
        for sample in group:
            assert sample.text == "```python\n" + text
            assert sample.finish_reason == "stop"
    assert backend.stats["merges"] > 0


class CutAt(HFBackend):
    """Ends item i after ``lengths[i]`` tokens: makes rows finish at different steps under greedy decoding."""

    lengths: list[int] = []

    def _accept(self, batch, tokens):
        super()._accept(batch, tokens)
        for row in batch.rows:
            if row.finish is None and len(row.tokens) >= self.lengths[row.item]:
                row.finish = "length"


@pytest.mark.parametrize("name", ["tiny-gemma3", "tiny-qwen3", "tiny-llama"])
def test_continuous_batching_equals_model_generate(tiny_model, name):
    """Greedy through a 3-slot batch with refills, merges of different lengths, compaction, buffered cache appends
    and (Gemma) the sliding window, token for token equal to ``model.generate`` on each prompt alone."""
    model, tokenizer, cfg = tiny_model(name)
    style = "chat" if tokenizer.chat_template else "completion"
    prompts = [build_prompt(t, style) for t in TASKS] + [build_prompt(TASKS[0], style, system_prompt="")]
    lengths = [3, 90, 7, 25, 12, 50][: len(prompts)]  # 90 > the cache buffers' headroom: exercises regrowth
    backend = CutAt(SamplingConfig(temperature=0.0, max_new_tokens=100, stop_at_fence=False), cfg, model=model,
                    tokenizer=tokenizer, capacity=3)
    backend.lengths = lengths
    backend._stop_mask[:] = False  # random weights may emit EOS; generate below ignores it too
    out = backend.generate(prompts, 1, seed=0)
    assert backend.stats["merges"] >= 2
    for prompt, length, [sample] in zip(prompts, lengths, out):
        text = render_prompt(tokenizer, prompt)
        bos = tokenizer.bos_token
        enc = tokenizer(text, add_special_tokens=not text.startswith(bos), return_tensors="pt")
        with torch.no_grad():
            ref = model.generate(**enc, do_sample=False, max_new_tokens=length, min_new_tokens=length,
                                 pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(ref[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        assert sample.num_tokens == length
        assert sample.text == expected


def test_greedy_samples_are_identical_and_cheap(tiny_model):
    backend = _backend(tiny_model, "tiny-llama", temperature=0.0, capacity=8)
    [group] = backend.generate(["Task: add\n```python\n"], 5, seed=0)
    assert len(group) == 5 and len({c.text for c in group}) == 1
    assert backend.stats["prefill_tokens"] == len(backend._tokenize("Task: add\n```python\n"))


def test_samples_do_not_depend_on_the_other_prompts_at_batch_one(tiny_model):
    backend = _backend(tiny_model, "tiny-qwen3", capacity=1)
    prompts = [build_prompt(t, "chat") for t in TASKS[:3]]
    together = backend.generate(prompts, 2, seed=5)
    alone = [backend.generate([p], 2, seed=5)[0] for p in reversed(prompts)][::-1]
    assert together == alone


def test_out_of_memory_halves_the_batch_and_redraws_the_same_samples(tiny_model):
    reference = _backend(tiny_model, "tiny-llama", capacity=1).generate(["A\n```python\n", "B\n```python\n"], 3, 1)

    class Flaky(HFBackend):
        failures = 2

        def _step(self, batch):
            if self.failures and len(batch) > 1:
                self.failures -= 1
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
            super()._step(batch)

    model, tokenizer, cfg = tiny_model("tiny-llama")
    flaky = Flaky(SamplingConfig(max_new_tokens=8), cfg, model=model, tokenizer=tokenizer, capacity=4)
    out = flaky.generate(["A\n```python\n", "B\n```python\n"], 3, 1)
    assert flaky.stats["oom_halvings"] == 2 and flaky.capacity == 1
    assert out == reference


def test_cpu_fast_linear_is_the_same_product_and_is_undone(tiny_model):
    model, _, _ = tiny_model("tiny-qwen3")
    ids = torch.tensor([[2, 100, 200, 300, 400]])
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with cpu_fast_linear(model):
            assert all("forward" in m.__dict__ for m in linears)
            fast = model(input_ids=ids).logits
    assert not any("forward" in m.__dict__ for m in linears)  # the shared model is left as it was
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_make_backend_builds_the_hf_backend_and_rejects_unknown_names(tiny_model):
    model, tokenizer, cfg = tiny_model("tiny-llama")
    backend = make_backend(SamplingConfig(max_new_tokens=2), cfg, loaded_model=model, tokenizer=tokenizer)
    assert isinstance(backend, HFBackend) and backend.style == "completion"
    with pytest.raises(ValueError, match="backend"):
        make_backend(SamplingConfig(backend="tgi"), cfg)


def test_vllm_backend_needs_vllm():
    pytest.importorskip("vllm")  # not installed here (CPU-only machine): the backend is exercised on GPU hosts


# ----------------------------------------------------------------------------------------------------------------
# Resumable sampling jobs


class FakeBackend:
    """Deterministic, generate-only (like the stage-1 two-solution adapter): sample text depends on prompt/seed/i."""

    def __init__(self):
        self.calls: list[list] = []

    def generate(self, prompts, num_samples, seed):
        self.calls.append(list(prompts))
        return [[Completion(text=f"{json.dumps(p)}|{seed}|{i}", code=f"x = {i}", finish_reason="stop", num_tokens=i)
                 for i in range(num_samples)] for p in prompts]


def _requests(n=5, samples=3):
    return [SampleRequest(key=f"{i}/r1", prompt=f"prompt {i}" if i % 2 else [{"role": "user", "content": str(i)}],
                          num_samples=samples, seed=100 + i, meta={"task_id": i, "round": 1}) for i in range(n)]


def test_job_writes_rows_in_request_order_and_does_not_resample(tmp_path):
    backend = FakeBackend()
    reqs = _requests()
    data = run_sampling_job(backend, reqs, tmp_path / "job", chunk_size=2)
    assert len(data) == 15
    assert [(r["key"], r["sample_index"]) for r in data] == [(q.key, i) for q in reqs for i in range(3)]
    row = data[4]
    assert row["task_id"] == 1 and row["round"] == 1 and row["seed"] == 101 and row["num_samples"] == 3
    assert json.loads(row["prompt"]) == "prompt 1" and row["text"] == '"prompt 1"|101|1' and row["code"] == "x = 1"
    assert (tmp_path / "job" / "dataset").is_dir()
    from datasets import load_from_disk

    assert load_from_disk(str(tmp_path / "job" / "dataset")).to_list() == data.to_list()
    calls = len(backend.calls)
    again = run_sampling_job(backend, reqs, tmp_path / "job")
    assert len(backend.calls) == calls and again.to_list() == data.to_list()


def test_job_resumes_after_a_torn_line_and_an_incomplete_request(tmp_path):
    reqs = _requests()
    full = run_sampling_job(FakeBackend(), reqs, tmp_path / "full").to_list()
    job = tmp_path / "job"
    run_sampling_job(FakeBackend(), reqs[:2], job)
    lines = (job / ROWS_FILE).read_bytes().splitlines(keepends=True)
    extra = [json.dumps(r) + "\n" for r in full[6:8]]  # request 2: 2 of 3 rows made it to disk ...
    torn = json.dumps(full[8])[:25]  # ... and the third was cut mid-line by the crash
    (job / ROWS_FILE).write_bytes(b"".join(lines) + "".join(extra).encode() + torn.encode())
    assert sorted(load_job_rows(job)) == ["0/r1", "1/r1"]
    backend = FakeBackend()
    resumed = run_sampling_job(backend, reqs, job)
    assert resumed.to_list() == full
    assert sum(len(c) for c in backend.calls) == 3  # only requests 2, 3, 4
    assert len((job / ROWS_FILE).read_bytes().splitlines()) == 15  # the partial rows were truncated, not kept


def test_job_refuses_a_directory_of_another_request_list(tmp_path):
    reqs = _requests()
    run_sampling_job(FakeBackend(), reqs, tmp_path / "job")
    with pytest.raises(SamplingJobError, match="not in this job"):
        run_sampling_job(FakeBackend(), reqs[1:], tmp_path / "job")
    changed = [dataclasses.replace(r, num_samples=4) if r.key == "2/r1" else r for r in reqs]
    with pytest.raises(SamplingJobError, match="num_samples 3 -> 4"):
        run_sampling_job(FakeBackend(), changed, tmp_path / "job")
    reworded = [dataclasses.replace(r, prompt="other") if r.key == "1/r1" else r for r in reqs]
    with pytest.raises(SamplingJobError, match="prompt"):
        run_sampling_job(FakeBackend(), reworded, tmp_path / "job")
    with pytest.raises(SamplingJobError, match="seed"):
        run_sampling_job(FakeBackend(), [dataclasses.replace(r, seed=0) for r in reqs], tmp_path / "job")
    with pytest.raises(ValueError, match="duplicate"):
        run_sampling_job(FakeBackend(), reqs + reqs[:1], tmp_path / "other")
    with pytest.raises(ValueError, match="reserved"):
        run_sampling_job(FakeBackend(), [SampleRequest("k", "p", 1, 0, {"code": 1})], tmp_path / "other")


def test_job_refuses_a_file_damaged_in_the_middle(tmp_path):
    run_sampling_job(FakeBackend(), _requests(), tmp_path / "job")
    lines = (tmp_path / "job" / ROWS_FILE).read_text().splitlines(keepends=True)
    del lines[4]  # a row missing in the middle is not what a crash leaves
    (tmp_path / "job" / ROWS_FILE).write_text("".join(lines))
    with pytest.raises(SamplingJobError):
        run_sampling_job(FakeBackend(), _requests(), tmp_path / "job")


JOB_SCRIPT = """
import json, sys, time
from common.config import SamplingConfig, load_model_config
from common.generation import SampleRequest, run_sampling_job
from common.generation.hf import HFBackend
out, delay = sys.argv[1], float(sys.argv[2])
spec = json.loads(sys.argv[3])

class Slow(HFBackend):
    def stream(self, items):
        for result in super().stream(items):
            yield result
            time.sleep(delay)  # leaves time to kill the job between (and during) commits

backend = Slow(SamplingConfig(**spec["sampling"]), load_model_config("tiny-llama"), capacity=spec["capacity"])
requests = [SampleRequest(**r) for r in spec["requests"]]
run_sampling_job(backend, requests, out)
print("DONE")
"""


def test_killed_job_resumes_to_exactly_the_uninterrupted_rows(tmp_path, tiny_model):
    model, tokenizer, cfg = tiny_model("tiny-llama")
    sampling = {"max_new_tokens": 10, "temperature": 0.6, "top_p": 0.9}
    requests = [{"key": f"t{i}", "prompt": f"Task {i}: {TASKS[i % 5]['text']}\n```python\n", "num_samples": 3,
                 "seed": 7, "meta": {"task_id": i}} for i in range(10)]
    spec = json.dumps({"sampling": sampling, "capacity": 1, "requests": requests})
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    job = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", JOB_SCRIPT, str(job), "0.5", spec], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rows_file = job / ROWS_FILE
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if rows_file.exists() and len(rows_file.read_bytes().splitlines()) >= 9:  # 3 requests committed
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(load_job_rows(job))
    assert 3 <= committed < 10
    finished = subprocess.run([sys.executable, "-c", JOB_SCRIPT, str(job), "0", spec], env=env,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0 and "DONE" in finished.stdout, finished.stderr[-2000:]

    backend = HFBackend(SamplingConfig(**sampling), cfg, model=model, tokenizer=tokenizer, capacity=1)
    uninterrupted = run_sampling_job(backend, [SampleRequest(**r) for r in requests], tmp_path / "straight")
    from datasets import load_from_disk

    resumed = load_from_disk(str(job / "dataset"))
    assert resumed.to_list() == uninterrupted.to_list()
    assert len(resumed) == 30 and len({(r["key"], r["sample_index"]) for r in resumed}) == 30
