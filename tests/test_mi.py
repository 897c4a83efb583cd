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


def test_mi_and_pylint_from_a_script_on_standard_input():
    """Spawned workers cannot re-import a `python -` script: the scoring then runs in the caller, same results."""
    import subprocess
    import sys

    from tests.helpers import REPO

    script = (
        "from common.signals.mi import maintainability_indices\n"
        "from common.signals.pylint_score import pylint_scores\n"
        "codes = [f'def f{i}(x):\\n    return x + {i}\\n' for i in range(300)]\n"
        "mi = maintainability_indices(codes, workers=2)\n"
        "assert mi == maintainability_indices(codes, workers=1), 'pool and in-process differ'\n"
        "pl = pylint_scores(codes, workers=2, progress=False)\n"
        "assert pl == pylint_scores(codes, workers=1, progress=False)\n"
        "print('ok', len(mi), len(pl))\n")
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.split() == ["ok", "300", "300"], done.stderr[-2000:]
