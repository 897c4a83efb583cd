import pytest

from common.prompting.extract import extract_code, strip_fence

CODE = "def f(x):\n    return x + 1"


@pytest.mark.parametrize(
    "reply",
    [
        f"```python\n{CODE}\n```",
        f"Here is the solution:\n\n```python\n{CODE}\n```\nIt adds one.",
        f"```py\n{CODE}\n```",
        f"```\n{CODE}\n```",
        f"```python\r\n{CODE}\r\n```".replace("\n    ", "\n    "),
        f"```python\n{CODE}\n```\n\n```python\ndef g():\n    pass\n```",  # multi-block: the first one
        f"```bash\npip install x\n```\n```python\n{CODE}\n```",  # non-Python blocks are skipped
        f"```python\n{CODE}",  # cut off at max_new_tokens: the unclosed block runs to the end
    ],
)
def test_first_python_block(reply):
    assert extract_code(reply).replace("\r\n", "\n") == CODE


def test_unfenced_reply_is_the_whole_text():
    assert extract_code(f"\n{CODE}\n") == CODE
    assert extract_code("") == "" and extract_code(None) == ""


def test_no_fence_markers_survive():
    # the reference notebooks stripped "python```" instead of the opening fence and left "```python" in the code
    for reply in [f"```python\n{CODE}\n```", f"Text\n```python\n{CODE}\n```\n"]:
        assert "```" not in extract_code(reply) and "python" not in extract_code(reply).splitlines()[0]


def test_strip_fence_only_touches_surrounding_fences():
    assert strip_fence(f"```python\n{CODE}\n```") == CODE
    assert strip_fence(CODE) == CODE
