import json

import pytest

from common.tasks.mbpp import DataError, load_mbpp, read_tasks_jsonl
from tests.helpers import MBPP_JSONL, requires_mbpp


@requires_mbpp
def test_paper_splits_have_exact_sizes_and_ids():
    train = load_mbpp("train", MBPP_JSONL)
    test = load_mbpp("test", MBPP_JSONL)
    assert len(train) == 372 and len(test) == 500
    assert list(train["task_id"]) == [t for t in range(602, 975) if t != 927]
    assert list(test["task_id"]) == list(range(11, 511))
    assert len(load_mbpp("validation", MBPP_JSONL)) == 90
    assert list(load_mbpp("prompt", MBPP_JSONL)["task_id"]) == list(range(1, 11))
    assert len(load_mbpp("all", MBPP_JSONL)) == 974
    assert all(len(tests) == 3 for tests in test["test_list"])
    assert not any("class" in code for code in train["code"])


@requires_mbpp
def test_mbpp_path_environment_variable_is_the_default_source(monkeypatch):
    monkeypatch.setenv("MBPP_PATH", str(MBPP_JSONL))
    assert len(load_mbpp("test", limit=7)) == 7


def test_demo_tasks_have_train_and_test_splits():
    train, test = load_mbpp("train", "demo"), load_mbpp("test", "demo")
    assert len(train) >= 10 and len(test) >= 10
    assert not set(train["task_id"]) & set(test["task_id"])


def _write(tmp_path, rows):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = {"task_id": 11, "text": "t", "code": "def f(x):\n  return x", "test_list": ["assert f(1) == 1"]}


@pytest.mark.parametrize(
    "rows, message",
    [
        ([GOOD, "{not json"], "bad.jsonl:2: invalid JSON"),
        ([GOOD, {**GOOD, "task_id": 12, "text": None}], "bad.jsonl:2: field 'text' must be str"),
        ([{k: v for k, v in GOOD.items() if k != "test_list"}], "bad.jsonl:1: missing field 'test_list'"),
        ([{**GOOD, "test_list": []}], "bad.jsonl:1: field 'test_list' must be a non-empty list"),
        ([GOOD, GOOD], "bad.jsonl:2: task_id 11 repeats line 1"),
        ([{**GOOD, "task_id": "11"}], "bad.jsonl:1: field 'task_id' must be int"),
    ],
)
def test_malformed_file_names_file_line_and_field(tmp_path, rows, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        read_tasks_jsonl(_write(tmp_path, rows))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_mbpp("test", tmp_path / "nope.jsonl")


def test_every_faulty_line_is_reported(tmp_path):
    import json

    from common.tasks.mbpp import DataError, read_tasks_jsonl

    good = {"task_id": 1, "text": "t", "code": "def f():\n    return 1", "test_list": ["assert f() == 1"]}
    path = tmp_path / "two.jsonl"
    path.write_text("\n".join([json.dumps(good), json.dumps({**good, "task_id": 2, "test_list": []}),
                               "{not json", json.dumps({k: v for k, v in good.items() if k != "code"})]) + "\n")
    with pytest.raises(DataError) as info:
        read_tasks_jsonl(path)
    text = str(info.value)
    assert "3 faulty lines" in text and f"{path}:2:" in text and f"{path}:3: invalid JSON" in text
    assert f"{path}:4: missing field 'code'" in text
