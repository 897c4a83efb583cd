"""Failures a user meets where the project meets the outside world: one line naming the fix, the traceback only
with --debug."""

from __future__ import annotations

import pytest

from common.cli import main
from common.config import ModelConfig, SamplingConfig
from common.errors import Unavailable
from tests.helpers import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")


def test_mbpp_hub_unreachable_names_mbpp_path(monkeypatch, tmp_path, capsys):
    import datasets

    def offline(*_args, **_kwargs):
        raise ConnectionError("Couldn't reach 'mbpp' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.delenv("MBPP_PATH", raising=False)
    code = main(["prepare", "--config", SMOKE, "--set", "data.source=hub", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "MBPP_PATH" in err and "data.source" in err and "Traceback" not in err


def test_a_model_the_hub_cannot_give_names_model_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from common.models.loading import load_tokenizer

    with pytest.raises(Unavailable, match=r"model 'ghost' could not be loaded .*set model.path to a local copy"):
        load_tokenizer(ModelConfig(name="ghost", source="hub", path="no-such-org/no-such-model-xyz"))


def test_a_missing_api_key_is_reported_before_any_request(monkeypatch):
    from common.generation.api import APIBackend

    class NoNetwork:
        def post(self, *_a, **_k):
            raise AssertionError("a request was sent")

    monkeypatch.delenv("MI_ALIGN_ABSENT_KEY", raising=False)
    sampling = SamplingConfig(backend="api", api_base_url="https://api.example.com/v1", api_model="m",
                              api_key_env="MI_ALIGN_ABSENT_KEY")
    with pytest.raises(Unavailable, match="set the environment variable MI_ALIGN_ABSENT_KEY"):
        APIBackend(sampling, session=NoNetwork())
    local = SamplingConfig(backend="api", api_base_url="http://127.0.0.1:8000/v1", api_model="m",
                           api_key_env="MI_ALIGN_ABSENT_KEY")
    APIBackend(local, session=NoNetwork())  # a local server without keys needs none


def test_ctrl_c_says_how_to_resume_and_debug_shows_tracebacks(monkeypatch, tmp_path, capsys):
    import common.pipeline.runner as runner

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_stage", interrupted)
    assert main(["prepare", "--config", SMOKE, "--run-dir", str(tmp_path / "r")]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err

    def broken(*_a, **_k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(runner, "run_stage", broken)
    assert main(["prepare", "--config", SMOKE, "--run-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: ZeroDivisionError: a bug (run with --debug for the traceback)"
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "prepare", "--config", SMOKE, "--run-dir", str(tmp_path / "r")])


def test_a_set_typo_is_one_line_naming_the_set(capsys):
    assert main(["config", "--config", SMOKE, "--set", "dpo.learning_rat=1e-5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: --set 'dpo.learning_rat=1e-5': unknown key 'learning_rat' in dpo")


def test_a_preset_source_that_hides_mbpp_path_is_said(monkeypatch, tmp_path, capsys):
    import common.tasks.mbpp as mbpp

    monkeypatch.setenv("MBPP_PATH", str(tmp_path / "mbpp.jsonl"))
    monkeypatch.setattr(mbpp, "_NOTED", set())
    assert mbpp.resolve_source("demo") == "demo"
    assert f"pass --set data.source={tmp_path / 'mbpp.jsonl'}" in capsys.readouterr().err


def test_a_stage_on_a_missing_run_folder_says_so_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["report", "--config", SMOKE, "--run-dir", str(missing)]) == 2
    assert f"the run folder {missing} does not exist" in capsys.readouterr().err and not missing.exists()


def test_an_endpoint_unreachable_after_its_retries_is_one_line(monkeypatch, tmp_path, capsys):
    import common.pipeline.runner as runner
    from common.generation.api import APIError

    def gave_up(*_a, **_k):
        raise APIError("https://api.example.com/v1/chat/completions: giving up after 7 attempts: "
                       "ConnectionError: Name or service not known")

    monkeypatch.setattr(runner, "run_stage", gave_up)
    assert main(["candidates", "--config", SMOKE, "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "giving up after 7 attempts" in err and "Traceback" not in err


def test_an_interrupted_sampling_job_says_what_it_saved(tmp_path, capsys):
    from common.generation import Completion, SampleRequest, run_sampling_job

    class StopsAfterOne:
        calls = 0

        def generate(self, prompts, num_samples, seed):
            StopsAfterOne.calls += 1
            if StopsAfterOne.calls > 1:
                raise KeyboardInterrupt
            return [[Completion(text="x", code="x", finish_reason="stop", num_tokens=1)] * num_samples
                    for _ in prompts]

    requests = [SampleRequest(key=str(i), prompt=f"p{i}", num_samples=2, seed=0, meta={"task_id": i})
                for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        run_sampling_job(StopsAfterOne(), requests, tmp_path / "job", chunk_size=1)
    err = capsys.readouterr().err
    assert "interrupted: 2/6 rows saved in" in err and "run the same command to resume" in err
