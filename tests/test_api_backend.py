"""The OpenAI-compatible API backend against a real HTTP server on localhost (http.server in a thread)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common.config import SamplingConfig
from common.generation import make_backend
from common.generation.api import APIBackend, APIError, RateLimiter, retry_after_seconds

SCHEMA = {"type": "object", "properties": {"task_id": {"type": "integer"}, "code_output_1": {"type": "string"},
                                           "code_output_2": {"type": "string"}},
          "required": ["task_id", "code_output_1", "code_output_2"], "additionalProperties": False}


class Server:
    """A chat-completions endpoint whose replies are scripted per test; records every request it receives."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script: list = []  # items: (status, body_dict_or_text, headers) or a callable(body) -> such a tuple
        self.default = None
        self.delay = 0.0
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                    step = server.script.pop(0) if server.script else server.default
                counted = True
                try:
                    if server.delay:
                        time.sleep(server.delay)
                    status, payload, headers = step(body) if callable(step) else step
                    if status is None:  # simulate a hung server: the client times out
                        time.sleep(payload)
                        status, payload, headers = 200, reply(body, "late"), {}
                    data = payload if isinstance(payload, str) else json.dumps(payload)
                    # no longer active once the reply is decided: the client may start its next request as soon
                    # as it has read this one, before this thread's `finally` runs (seen on a loaded machine)
                    with server.lock:
                        server.active -= 1
                    counted = False
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data.encode())))
                    self.end_headers()
                    self.wfile.write(data.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    if counted:
                        with server.lock:
                            server.active -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(body: dict, content: str | None = None, n: int | None = None) -> dict:
    n = body.get("n", 1) if n is None else n
    choices = [{"index": i, "finish_reason": "stop",
                "message": {"role": "assistant",
                            "content": content if content is not None else
                            f"```python\ndef f():\n    return {i}\n```\nExplanation {i}."}} for i in range(n)]
    return {"id": "x", "object": "chat.completion", "choices": choices,
            "usage": {"prompt_tokens": 11, "completion_tokens": 7 * n, "total_tokens": 11 + 7 * n}}


def ok(body):
    return 200, reply(body), {}


@pytest.fixture
def server():
    srv = Server()
    srv.default = ok
    yield srv
    srv.close()


def backend_for(server, **sampling):
    options = {"api_base_url": server.url, "api_model": "test-model", "api_max_retries": 3, "api_timeout": 5.0,
               "max_new_tokens": 64, "api_key_env": "MI_ALIGN_TEST_KEY", **sampling}
    return APIBackend(SamplingConfig(backend="api", **options), backoff_base=0.01)


def test_normal_replies_fences_usage_log_and_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MI_ALIGN_TEST_KEY", "sk-test")
    log = tmp_path / "usage.jsonl"
    backend = APIBackend(SamplingConfig(backend="api", api_base_url=server.url, api_model="test-model",
                                        api_key_env="MI_ALIGN_TEST_KEY", temperature=0.6, top_p=0.9,
                                        max_new_tokens=64), usage_log=log)
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "task"}]
    out = backend.generate([messages, "plain prompt"], 2, seed=3)
    assert [[c.code for c in group] for group in out] == [["def f():\n    return 0", "def f():\n    return 1"]] * 2
    assert out[0][0].text == "```python\ndef f():\n    return 0\n```"  # cut at the closing fence
    assert out[0][0].finish_reason == "stop" and out[0][0].num_tokens == 7
    body = server.requests[0]
    assert body["model"] == "test-model" and body["n"] == 2 and body["temperature"] == 0.6 and body["top_p"] == 0.9
    assert body["max_tokens"] == 64
    assert {json.dumps(r["messages"]) for r in server.requests} == {
        json.dumps(messages), json.dumps([{"role": "user", "content": "plain prompt"}])}
    assert all(h.get("Authorization") == "Bearer sk-test" for h in server.headers)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 2 and all(l["prompt_tokens"] == 11 and l["completion_tokens"] == 14 for l in lines)
    assert backend.usage == {"requests": 2, "prompt_tokens": 22, "completion_tokens": 28, "retries": 0}


def test_make_backend_builds_the_api_backend(server):
    backend = make_backend(SamplingConfig(backend="api", api_base_url=server.url, api_model="m"), None)
    assert isinstance(backend, APIBackend) and backend.style == "chat"
    with pytest.raises(ValueError, match="api_base_url"):
        make_backend(SamplingConfig(backend="api", api_model="m"), None)


def test_servers_without_n_get_one_request_per_sample(server):
    server.default = lambda body: (200, reply(body, n=1), {})  # ignores n
    backend = backend_for(server)
    [group] = backend.generate([[{"role": "user", "content": "t"}]], 3, seed=1)
    assert len(group) == 3
    assert [r.get("n", 1) for r in server.requests] == [3, 1, 1]
    seeds = [r["seed"] for r in server.requests[1:]]
    assert len(set(seeds)) == 2  # each extra sample has its own seed
    server.requests.clear()
    backend.generate([[{"role": "user", "content": "u"}]], 2, seed=1)
    assert [r.get("n", 1) for r in server.requests] == [1, 1]  # remembered: no more n > 1


def test_a_400_on_n_falls_back_to_single_requests(server):
    server.default = lambda body: ((400, {"error": {"message": "n must be 1"}}, {}) if body.get("n", 1) > 1
                                   else (200, reply(body), {}))
    [group] = backend_for(server).generate([[{"role": "user", "content": "t"}]], 2, seed=0)
    assert len(group) == 2 and [r.get("n", 1) for r in server.requests] == [2, 1, 1]


def test_json_schema_replies(server):
    good = {"task_id": 602, "code_output_1": "def a(): pass", "code_output_2": "def b(): pass"}

    def check(body):
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == SCHEMA
        return 200, reply(body, json.dumps(good)), {}

    server.script = [check, (200, reply({}, "```json\n" + json.dumps(good) + "\n```"), {}),
                     (200, reply({}, "not json at all"), {}), (200, reply({}, json.dumps({"task_id": 1})), {}),
                     (200, reply({}, json.dumps(good)), {})]
    backend = backend_for(server)
    messages = [{"role": "user", "content": "Task_ID:602 ..."}]
    assert backend.generate_json(messages, SCHEMA) == good
    assert backend.generate_json(messages, SCHEMA) == good  # fenced JSON is accepted
    assert backend.generate_json(messages, SCHEMA) == good  # invalid, then incomplete, then good: asked again
    assert len(server.requests) == 5
    server.default = lambda body: (200, reply(body, "nope"), {})
    with pytest.raises(APIError, match="no valid JSON"):
        backend.generate_json(messages, SCHEMA)


def test_429_with_retry_after_is_honoured(server):
    server.script = [(429, {"error": "slow down"}, {"Retry-After": "1"})]
    backend = backend_for(server)
    start = time.monotonic()
    [group] = backend.generate(["p"], 1, seed=0)
    assert time.monotonic() - start >= 0.95  # waited what the server asked, not the 10 ms back-off
    assert group[0].code == "def f():\n    return 0"
    assert len(server.requests) == 2 and backend.usage["retries"] == 1


def test_5xx_and_timeouts_are_retried_then_give_up(server):
    server.script = [(500, "boom", {}), (503, "busy", {}), (None, 2.0, {})]  # 500, 503, then a timeout
    backend = backend_for(server, api_timeout=0.5)
    [group] = backend.generate(["p"], 1, seed=0)
    assert group[0].code.startswith("def f")
    assert len(server.requests) == 4 and backend.usage["retries"] == 3
    server.default = lambda body: (502, "bad gateway", {})
    with pytest.raises(APIError, match="giving up after 4 attempts"):
        backend.generate(["p"], 1, seed=0)


def test_client_errors_are_not_retried(server):
    server.default = lambda body: (401, {"error": "bad key"}, {})
    with pytest.raises(APIError, match="HTTP 401"):
        backend_for(server).generate(["p"], 1, seed=0)
    assert len(server.requests) == 1


def test_concurrency_and_rate_limit(server):
    server.delay = 0.2
    backend = backend_for(server, api_max_concurrency=3)
    backend.generate([f"p{i}" for i in range(9)], 1, seed=0)
    assert server.max_active == 3
    server.delay = 0.0
    limited = backend_for(server, api_max_concurrency=4, api_requests_per_minute=600)  # one start per 0.1 s
    start = time.monotonic()
    limited.generate([f"q{i}" for i in range(6)], 1, seed=0)
    assert time.monotonic() - start >= 0.45


def test_rate_limiter_spacing_and_retry_after_parsing():
    now = [100.0]
    slept = []
    limiter = RateLimiter(120, clock=lambda: now[0], sleep=slept.append)
    for _ in range(3):
        limiter.wait()
    assert slept == [0.5, 1.0]
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after_seconds(future) <= 31
