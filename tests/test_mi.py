from radon.metrics import mi_visit

from common.tasks.mbpp import load_mbpp
from common.signals.mi import maintainability_index, maintainability_indices
from common.prompting.templates import fence
from tests.helpers import MBPP_JSONL, requires_mbpp


@requires_mbpp
def test_mi_equals_radon_on_all_974_references_fenced_and_unfenced():
    codes = list(load_mbpp("all", MBPP_JSONL)["code"])
    expected = [mi_visit(code, multi=True) for code in codes]
    assert [maintainability_index(code) for code in codes] == expected
    assert [maintainability_index(fence(code)) for code in codes] == [
        mi_visit(code.strip("\n"), multi=True) for code in codes
    ]


@requires_mbpp
def test_batch_form_uses_a_pool_and_keeps_order_and_duplicates():
    codes = list(load_mbpp("all", MBPP_JSONL)["code"])
    doubled = codes + codes[::-1] + ["def broken(:\n  pass"]
    scores = maintainability_indices(doubled, workers=2)  # > pool threshold: really runs in worker processes
    assert scores[: len(codes)] == [mi_visit(code, multi=True) for code in codes]
    assert scores[len(codes): 2 * len(codes)] == scores[: len(codes)][::-1]
    assert scores[-1] is None


def test_unparsable_code_has_no_mi():
    assert maintainability_index("def f(:\n    return") is None
    assert maintainability_index("def f():\nreturn 1") is None  # IndentationError
    assert maintainability_index("") == 100.0  # radon scores empty code 100 (docs/design.md)


def test_comments_and_docstrings_raise_mi():
    bare = "def f(a, b):\n    if a > b:\n        return a - b\n    return b - a\n"
    documented = 'def f(a, b):\n    """Absolute difference of a and b."""\n    # larger minus smaller\n' + bare.split("\n", 1)[1]
    assert maintainability_index(documented) > maintainability_index(bare)
