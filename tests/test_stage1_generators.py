"""The 'api' and 'local' stage-1 generators, offline: a real HTTP server on localhost and a tiny local model."""

import json
import re

import pytest

from common.pipeline.artifacts import RunDir, load_dataset_dir, read_manifest
from common.config import CONFIG_DIR, load_config
from common.tasks.mbpp import load_mbpp
from tests.helpers import run_stages, smoke_config
from tests.test_api_backend import Server


@pytest.fixture
def api_server():
    """Answers the two-implementation prompt like a strong generator: the reference and a commented copy of it."""
    tasks = {t["task_id"]: t for t in load_mbpp("train", "demo")}
    server = Server()

    def answer(body):
        prompt = body["messages"][-1]["content"]
        task_id = int(re.match(r"Task_ID:(\d+)", prompt).group(1))
        assert body["response_format"]["type"] == "json_schema"
        assert "assert" not in prompt  # the asserts never reach the generator
        code = tasks[task_id]["code"]
        content = json.dumps({"task_id": task_id, "code_output_1": f"```python\n{code}\n```",
                              "code_output_2": "# Commented twin.\n# Comments raise MI.\n" + code})
        return 200, {"choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": content}}],
                     "usage": {"prompt_tokens": 50, "completion_tokens": 40}}, {}

    server.default = answer
    yield server
    server.close()


def test_api_generator_builds_pairs_from_a_local_openai_compatible_server(api_server, tmp_path):
    config = load_config(CONFIG_DIR / "smoke.yaml", [
        "stage1.generator=api", "stage1_sampling.backend=api", f"stage1_sampling.api_base_url={api_server.url}",
        "stage1_sampling.api_model=fake-gemini", "stage1_sampling.api_max_concurrency=3",
        "stage1_sampling.api_key_env=MI_ALIGN_NO_KEY",
    ])
    run = RunDir(tmp_path / "run")
    candidates = load_dataset_dir(run_stages(config, run.root, "prepare", "candidates"))
    n_tasks = config.data.max_train_tasks
    assert len(candidates) == 2 * n_tasks and all(candidates["passed"])
    assert set(candidates["origin"]) == {"code_output_1", "code_output_2"}
    assert not any("```" in code for code in candidates["code"])  # fences stripped before MI
    assert len(api_server.requests) == n_tasks
    pairs = load_dataset_dir(run_stages(config, run.root, "pairs"))
    assert len(pairs) == n_tasks and all("# Commented twin." in c for c in pairs["chosen"])
    assert set(pairs["generator"]) == {"api:fake-gemini"}
    run_stages(config, run.root, "candidates")  # up to date: no new requests
    assert len(api_server.requests) == n_tasks


def test_local_generator_samples_runs_and_records_every_candidate(tmp_path):
    config = load_config(CONFIG_DIR / "smoke.yaml", [
        "stage1.generator=local", "stage1.num_candidates=3", "stage1_sampling.max_new_tokens=16",
        "data.max_train_tasks=3",
    ])
    run = RunDir(tmp_path / "run")
    candidates = load_dataset_dir(run_stages(config, run.root, "prepare", "candidates"))
    assert len(candidates) == 9
    assert sorted(set(candidates["candidate_index"])) == [0, 1, 2]
    assert set(candidates["generator"]) == {"local:tiny-gemma3"}
    # a random tiny model writes no working code: every candidate is executed and fails, none is paired
    assert set(candidates["status"]) <= {"failed", "error", "timeout"} and not any(candidates["passed"])
    assert read_manifest(run.stage_dir("candidates"))["summary"]["tasks_with_2_passing"] == 0
    empty = load_dataset_dir(run_stages(config, run.root, "pairs"))
    assert len(empty) == 0
    # an empty pairs dataset has the same schema as a full one (common.preference.pairing.pair_features)
    full = load_dataset_dir(run_stages(smoke_config(), tmp_path / "full", "prepare", "candidates", "pairs"))
    assert len(full) > 0 and empty.features == full.features
