import pytest

from common.tasks.mbpp import load_mbpp
from common.prompting.extract import extract_code
from common.prompting.templates import (
    OPEN_FENCE, SYSTEM_PROMPT, build_prompt, chat_messages, completion_prompt, completion_target, fence,
    retry_prompt, signature_of, user_message,
)
from tests.helpers import MBPP_JSONL, requires_mbpp

TASK = {"text": "Write a function to add two numbers.", "code": "def helper(a):\r\n  pass\r\ndef add(a, b):\r\n  return a+b"}
NO_SIG = {"text": "Write a python function to find x.", "code": "def check_last (arr,n,p): \r\n    return 1"}


def test_signature_is_last_def_without_colon():
    assert signature_of(TASK["code"]) == "def add(a, b)"
    assert user_message(TASK) == TASK["text"] + "\nThe main function is defined by the function signature: def add(a, b)\n"


def test_task_without_signature_gets_only_the_text():
    assert signature_of(NO_SIG["code"]) is None
    assert user_message(NO_SIG) == NO_SIG["text"]


@requires_mbpp
def test_exactly_the_five_paper_test_tasks_lack_a_signature():
    test = load_mbpp("test", MBPP_JSONL)
    missing = [row["task_id"] for row in test if signature_of(row["code"]) is None]
    assert missing == [32, 134, 160, 318, 392]
    assert all(signature_of(code) for code in load_mbpp("train", MBPP_JSONL)["code"])
    # a trailing comment after the parameters (task 966) stays out of the signature
    row = load_mbpp("train", MBPP_JSONL).filter(lambda r: r["task_id"] == 966)[0]
    assert signature_of(row["code"]) == "def remove_empty(tuple1)"


def test_chat_messages_have_the_paper_system_prompt_and_never_the_asserts():
    task = {**TASK, "test_list": ["assert add(1, 2) == 3"]}
    messages = chat_messages(task)
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert messages[1]["role"] == "user" and "assert" not in messages[1]["content"]
    assert build_prompt(task, "chat") == messages


def test_completion_prompt_ends_in_an_open_fence():
    prompt = completion_prompt(TASK)
    assert prompt.endswith(OPEN_FENCE) and "def add(a, b)" in prompt and SYSTEM_PROMPT in prompt
    assert extract_code(prompt + completion_target("def add(a, b):\n    return a + b", "completion") + "\ntrailing") \
        == "def add(a, b):\n    return a + b"
    with pytest.raises(ValueError):
        build_prompt(TASK, "other")


def test_retry_prompt_appends_failed_solution_for_both_styles():
    chat = retry_prompt(chat_messages(TASK), "def add(a, b): return a - b", "please try again")
    assert "return a - b" in chat[-1]["content"] and chat[-1]["content"].endswith("please try again\n")
    assert chat_messages(TASK)[-1]["content"] in chat[-1]["content"]
    text = retry_prompt(completion_prompt(TASK), "def add(a, b): return a - b", "please try again")
    assert text.endswith(OPEN_FENCE) and "return a - b" in text and text.count(OPEN_FENCE) == 2


def test_fence_and_targets_match_the_prompt_style():
    assert fence("x = 1\n") == "```python\nx = 1\n```"
    assert completion_target("x = 1", "chat") == "```python\nx = 1\n```"
    assert completion_target("x = 1", "completion") == "x = 1\n```"
