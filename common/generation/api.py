"""OpenAI-compatible chat-completions over HTTP (Gemini's compatible endpoint, a vLLM/llama.cpp server, OpenAI).

Plain ``requests``, no SDK. What a long stage-1 run against a paid, rate-limited API needs:

* a thread pool (``api_max_concurrency``) and a client-side rate limit (``api_requests_per_minute``) shared by all
  threads, so a run does not trip the server's limit in the first place;
* retries (``api_max_retries``) with exponential back-off and full jitter on 429, 5xx, timeouts and dropped
  connections, honouring ``Retry-After`` (seconds or an HTTP date) when the server sends one; other 4xx errors
  are raised at once (retrying a bad request only spends money);
* ``generate_json(messages, schema)``: ``response_format`` with a JSON schema (stage 1's {task_id,
  code_output_1, code_output_2}); a reply that is not valid JSON or misses a required key is retried;
* ``n > 1`` where the server supports it, else (fewer choices back, or a 400 about ``n``) one request per sample;
* a usage log: prompt/completion tokens per request, appended to a JSONL file when ``usage_log`` is given, and
  running totals in ``self.usage``.

The API key is read from the environment variable named by ``api_key_env`` (never from a config file).
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common.config import ModelConfig, SamplingConfig
from common.errors import Unavailable
from common.generation.base import (
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    GenerationBackend,
    prompt_key,
    sample_seed,
    to_completion,
)
from common.prompting.templates import Prompt

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_BACKOFF = 60.0


def _is_local(url: str) -> bool:
    from urllib.parse import urlparse

    return (urlparse(url).hostname or "") in ("localhost", "127.0.0.1", "::1", "0.0.0.0")


class APIError(Unavailable):
    """A request failed for good (non-retryable status, or retries exhausted); one line in the CLI."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RateLimiter:
    """At most ``per_minute`` request starts per minute, evenly spaced, shared by all threads."""

    def __init__(self, per_minute: float | None, clock: Any = time.monotonic, sleep: Any = time.sleep):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _json_from_text(text: str) -> Any:
    """Parse a JSON reply, also when the server wrapped it in a ```json fence."""
    stripped = text.strip()
    fenced = re.match(r"^```[\w-]*\s*\n(.*)\n```\s*$", stripped, re.S)
    return json.loads(fenced.group(1) if fenced else stripped)


class APIBackend(GenerationBackend):
    style = "chat"

    def __init__(self, sampling: SamplingConfig, model_cfg: ModelConfig | None = None, *,
                 base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 usage_log: str | Path | None = None, backoff_base: float = 1.0, send_seed: bool = True,
                 session: Any = None):
        import requests

        self.sampling = sampling
        base_url = base_url or sampling.api_base_url
        if not base_url:
            raise ValueError("the api backend needs sampling.api_base_url (an OpenAI-compatible endpoint)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model or sampling.api_model or (model_cfg.path or model_cfg.name if model_cfg else None)
        if not self.model:
            raise ValueError("the api backend needs sampling.api_model")
        key = api_key if api_key is not None else os.environ.get(sampling.api_key_env)
        if not key and sampling.api_key_env and not _is_local(self.url):
            raise Unavailable(f"no API key for {self.url}: set the environment variable {sampling.api_key_env} "
                              "(sampling.api_key_env names it; a local server without keys needs none)")
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.session = session or requests.Session()
        self.limiter = RateLimiter(sampling.api_requests_per_minute)
        self.backoff_base = backoff_base
        self.send_seed = send_seed
        self.usage_log = Path(usage_log) if usage_log else None
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "retries": 0}
        self._lock = threading.Lock()
        self._n_supported: bool | None = None
        self.stream_chunk = max(1, sampling.api_max_concurrency) * 4

    # ----------------------------------------------------------------------------------------------------------
    # One request, with retries

    def chat(self, messages: list[dict], **extra: Any) -> dict:
        """POST one chat-completions request (retrying transient failures); returns the parsed response."""
        import requests

        body = {"model": self.model, "messages": messages, **extra}
        attempts = self.sampling.api_max_retries + 1
        for attempt in range(attempts):
            self.limiter.wait()
            started = time.monotonic()
            wait: float | None = None
            try:
                response = self.session.post(self.url, json=body, headers=self.headers,
                                             timeout=self.sampling.api_timeout)
            except (requests.Timeout, requests.ConnectionError) as exc:
                error: Exception = exc
                status = None
            else:
                if response.status_code == 200:
                    try:
                        data = response.json()
                    except ValueError as exc:  # a proxy's HTML error page with status 200
                        error, status = exc, 200
                    else:
                        self._record(data, body, time.monotonic() - started, attempt)
                        return data
                else:
                    status = response.status_code
                    error = APIError(f"HTTP {status} from {self.url}: {response.text[:500]}", status)
                    if status not in RETRY_STATUS:
                        raise error
                    wait = retry_after_seconds(response.headers.get("Retry-After"))
            if attempt == attempts - 1:
                raise APIError(f"{self.url}: giving up after {attempts} attempts: {error}", status) from error
            if wait is None:  # exponential back-off with full jitter
                wait = random.uniform(0, min(MAX_BACKOFF, self.backoff_base * 2 ** attempt))
            with self._lock:
                self.usage["retries"] += 1
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _record(self, data: dict, body: dict, latency: float, attempt: int) -> None:
        usage = data.get("usage") or {}
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": self.model, "n": body.get("n", 1),
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "completion_tokens": int(usage.get("completion_tokens") or 0),
                "total_tokens": int(usage.get("total_tokens") or 0), "latency_s": round(latency, 3),
                "retries": attempt}
        with self._lock:
            self.usage["requests"] += 1
            self.usage["prompt_tokens"] += line["prompt_tokens"]
            self.usage["completion_tokens"] += line["completion_tokens"]
            if self.usage_log is not None:
                self.usage_log.parent.mkdir(parents=True, exist_ok=True)
                with self.usage_log.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(line) + "\n")

    # ----------------------------------------------------------------------------------------------------------
    # The generation interface

    def _sampling_body(self) -> dict:
        return {"temperature": self.sampling.temperature, "top_p": self.sampling.top_p,
                "max_tokens": self.sampling.max_new_tokens}

    def _messages(self, prompt: Prompt) -> list[dict]:
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)

    def _samples(self, prompt: Prompt, num_samples: int, seed: int) -> list[Completion]:
        messages = self._messages(prompt)
        choices: list[dict] = []
        if num_samples > 1 and self._n_supported is not False:
            body = {**self._sampling_body(), "n": num_samples}
            if self.send_seed:
                body["seed"] = sample_seed(seed, prompt, 0) % 2**31
            try:
                data = self.chat(messages, **body)
                choices = list(data.get("choices") or [])
                per_choice = int((data.get("usage") or {}).get("completion_tokens") or 0) // max(1, len(choices))
                for choice in choices:
                    choice.setdefault("_tokens", per_choice)
                self._n_supported = len(choices) >= num_samples
            except APIError as exc:
                if exc.status != 400:
                    raise
                self._n_supported = False  # some servers reject n > 1: fall back to one request per sample
                choices = []
        for index in range(len(choices), num_samples):
            body = self._sampling_body()
            if self.send_seed:
                body["seed"] = sample_seed(seed, prompt, index) % 2**31
            data = self.chat(messages, **body)
            choice = dict((data.get("choices") or [{}])[0])
            choice["_tokens"] = int((data.get("usage") or {}).get("completion_tokens") or 0)
            choices.append(choice)
        return [self._completion(choice) for choice in choices[:num_samples]]

    def _completion(self, choice: dict) -> Completion:
        text = ((choice.get("message") or {}).get("content")) or ""
        reason = choice.get("finish_reason") or FINISH_STOP
        reason = FINISH_LENGTH if reason == "length" else FINISH_STOP if reason == "stop" else str(reason)
        return to_completion(text, self.style, reason, int(choice.get("_tokens") or 0), self.sampling.stop_at_fence)

    def generate(self, prompts: list[Prompt], num_samples: int, seed: int) -> list[list[Completion]]:
        workers = max(1, min(self.sampling.api_max_concurrency, len(prompts)))
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda p: self._samples(p, num_samples, seed), prompts))

    def generate_json(self, messages: list[dict], schema: dict, name: str = "response") -> dict:
        """One reply constrained to ``schema`` (OpenAI ``response_format`` json_schema), parsed. A reply that is not
        JSON or lacks a required key is asked again (up to api_max_retries times)."""
        body = {**self._sampling_body(),
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": name, "schema": schema, "strict": True}}}
        required = list(schema.get("required") or [])
        problem = ""
        for _ in range(self.sampling.api_max_retries + 1):
            data = self.chat(messages, **body)
            text = (((data.get("choices") or [{}])[0].get("message") or {}).get("content")) or ""
            try:
                parsed = _json_from_text(text)
            except ValueError as exc:
                problem = f"reply is not JSON ({exc}): {text[:200]!r}"
                continue
            if not isinstance(parsed, dict):
                problem = f"reply is not a JSON object: {text[:200]!r}"
                continue
            missing = [key for key in required if key not in parsed]
            if missing:
                problem = f"reply lacks required key(s) {missing}: {text[:200]!r}"
                continue
            return parsed
        raise APIError(f"{self.url}: no valid JSON reply after {self.sampling.api_max_retries + 1} tries: {problem}")

    def close(self) -> None:
        self.session.close()


__all__ = ["APIBackend", "APIError", "RateLimiter", "prompt_key", "retry_after_seconds"]
