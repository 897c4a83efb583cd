"""The offline stage-1 generator: behaviour-preserving AST rewrites (common/rewrite).

Each transform is checked on small hand-written functions (applies where it should, refuses unsafe patterns,
output parses, same results on sample inputs); ``generate_variants`` is checked on the demo tasks and on the
real MBPP train split by running every variant against the task's asserts in the sandbox.
"""

from __future__ import annotations

import ast
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from common.signals.mi import maintainability_index
from common.rewrite import TRANSFORMS, Context, Variant, apply_transforms, emit, generate_variants, parse_source
from common.rewrite._ast_source import parse_with_comments
from tests.helpers import MBPP_JSONL, REPO, requires_mbpp

try:
    from common import sandbox
except ImportError:  # pragma: no cover - the sandbox module is developed separately
    sandbox = None
requires_sandbox = pytest.mark.skipif(sandbox is None, reason="common/sandbox.py (run_batch) is not available")


# ---------------------------------------------------------------------------------------------------- helpers

def outcome(code: str, func: str, args: tuple):
    """What calling ``func(*args)`` in ``code`` gives: ('ok', result) or ('raise', exception type name).
    Hand-written, trusted snippets only (MBPP code goes through the sandbox)."""
    namespace: dict = {}
    exec(compile(code, "<snippet>", "exec"), namespace)
    try:
        return "ok", namespace[func](*[json.loads(json.dumps(a)) if isinstance(a, list) else a for a in args])
    except Exception as exc:  # noqa: BLE001 - the exception type is the behaviour being compared
        return "raise", type(exc).__name__


@dataclass
class Case:
    transform: str
    source: str
    func: str
    inputs: list[tuple]
    expect: str  # a fragment the rewritten code must contain

    def __str__(self) -> str:
        return f"{self.transform}:{self.func}"


CASES = [
    Case("loop_to_comprehension", """
def evens(nums):
    result = []
    for n in nums:
        if n % 2 == 0:
            result.append(n * 10)
    return result
""", "evens", [([1, 2, 3, 4],), ([],), ([0, -2, 7],)], "result = [n * 10 for n in nums if n % 2 == 0]"),
    Case("loop_to_comprehension", """
def index_map(words):
    out = {}
    size = len(words)
    for i, w in enumerate(words):
        out[w] = i + size
    return out
""", "index_map", [(["a", "b", "a"],), ([],)], "out = {w: i + size for i, w in enumerate(words)}"),
    Case("loop_to_comprehension", """
def pairs(xs, ys):
    seen = set()
    for x in xs:
        for y in ys:
            seen.add((x, y))
    return sorted(seen)
""", "pairs", [([1, 2], [3, 1]), ([], [1])], "seen = {(x, y) for x in xs for y in ys}"),
    Case("comprehension_to_loop", """
def squares(xs):
    return [x * x for x in xs if x > 0]
""", "squares", [([1, -2, 3],), ([],)], "result.append(x * x)"),
    Case("comprehension_to_loop", """
def lengths(words):
    table = {w: len(w) for w in words}
    return table
""", "lengths", [(["ab", "c"],), ([],)], "table[w] = len(w)"),
    Case("loop_to_sum", """
def double_total(xs):
    total = 0
    for x in xs:
        total += x * 2
    return total
""", "double_total", [([1, 2, 3],), ([],), ([1.5, 2.25],)], "total = sum(x * 2 for x in xs)"),
    Case("loop_to_sum", """
def count_big(xs, limit):
    count = 10
    print_me = limit
    for x in xs:
        if x > print_me:
            count = count + 1
    return count
""", "count_big", [([1, 5, 9], 4), ([], 0)], "count = sum((1 for x in xs if x > print_me), 10)"),
    Case("sum_to_loop", """
def odd_sum(xs):
    return sum(x for x in xs if x % 2)
""", "odd_sum", [([1, 2, 3],), ([],)], "total += x"),
    Case("sum_to_loop", """
def plain_sum(nums):
    s = sum(nums)
    return s
""", "plain_sum", [([1, 2, 3],), ([],), ([0.5, 0.25],)], "for num in nums:"),
    Case("loop_to_any_all", """
def has_negative(nums):
    for n in nums:
        if n < 0:
            return True
    return False
""", "has_negative", [([1, -2],), ([1, 2],), ([],)], "return any(n < 0 for n in nums)"),
    Case("loop_to_any_all", """
def all_known(items, known):
    for item in items:
        if item not in known:
            return False
    return True
""", "all_known", [([1, 2], [1, 2, 3]), ([4], [1]), ([], [])], "return all(item in known for item in items)"),
    Case("any_all_to_loop", """
def has_digit(s):
    return any(c.isdigit() for c in s)
""", "has_digit", [("ab1",), ("abc",), ("",)], "if c.isdigit():"),
    Case("any_all_to_loop", """
def all_truthy(values):
    return all(values)
""", "all_truthy", [([1, 2],), ([1, 0],), ([],)], "if not value:"),
    Case("if_to_ifexp", """
def absolute(x):
    if x < 0:
        return -x
    else:
        return x
""", "absolute", [(-3,), (4,), (0,)], "return -x if x < 0 else x"),
    Case("if_to_ifexp", """
def label(n):
    if n % 2 == 0:
        kind = 'even'
    else:
        kind = 'odd'
    return kind
""", "label", [(2,), (3,)], "kind = 'even' if n % 2 == 0 else 'odd'"),
    Case("if_to_ifexp", """
def sign(x):
    if x > 0:
        return 1
    elif x < 0:
        return -1
    return 0
""", "sign", [(5,), (-5,), (0,)], "return 1 if x > 0 else -1 if x < 0 else 0"),
    Case("ifexp_to_if", """
def pick(flag, a, b):
    return a if flag else b
""", "pick", [(True, 1, 2), (0, 1, 2)], "if flag:"),
    Case("else_to_guard", """
def safe_div(a, b):
    if b == 0:
        return None
    else:
        q = a / b
        return q
""", "safe_div", [(1, 0), (6, 3)], "    if b == 0:\n        return None\n    q = a / b"),
    Case("guard_to_else", """
def first(xs):
    if not xs:
        return None
    head = xs[0]
    return head
""", "first", [([],), ([3, 4],)], "else:"),
    Case("invert_if", """
def classify(x, seen):
    if x in seen:
        return 'old'
    else:
        return 'new'
""", "classify", [(1, [1]), (2, [1])], "if x not in seen:"),
    Case("bool_return_compress", """
def in_range(x, low, high):
    if x >= low and x <= high:
        return True
    else:
        return False
""", "in_range", [(5, 1, 10), (0, 1, 10)], "return x >= low and x <= high"),
    Case("bool_return_compress", """
def non_empty(s):
    if s:
        return True
    return False
""", "non_empty", [("a",), ("",), ([],)], "return bool(s)"),
    Case("bool_return_expand", """
def same(a, b):
    return a == b
""", "same", [(1, 1), (1, 2)], "return True"),
    Case("add_docstring", """
def area(width, height):
    return width * height
""", "area", [(2, 3)], "Args:"),
    Case("add_short_docstring", """
def area(width, height):
    return width * height
""", "area", [(2, 3)], '"""Compute the area."""'),
    Case("strip_docstrings", '''
def area(width, height):
    """Area of a rectangle."""
    return width * height
''', "area", [(2, 3)], "return width * height"),
    Case("strip_comments", """
def area(width, height):
    # multiply the sides
    return width * height
""", "area", [(2, 3)], "return width * height"),
    Case("add_comments", """
def total(xs):
    t = 0
    for x in xs:
        t += x
    return t
""", "total", [([1, 2],)], "# Loop over each x in xs"),
    Case("augassign_to_assign", """
def count_upper(s):
    count = 0
    for ch in s:
        if ch.isupper():
            count += 1
    return count
""", "count_upper", [("AbC",), ("",)], "count = count + 1"),
    Case("assign_to_augassign", """
def product(xs):
    p = 1
    for x in xs:
        p = p * x
    return p
""", "product", [([2, 3],), ([],)], "p *= x"),
    Case("split_comparison", """
def digit(x):
    return 0 <= x < 10
""", "digit", [(5,), (10,), (-1,)], "return 0 <= x and x < 10"),
    Case("merge_comparison", """
def within(x, low, high):
    return x >= low and x <= high
""", "within", [(5, 1, 10), (0, 1, 10), (10, 1, 10)], "return low <= x <= high"),
    Case("introduce_temp", """
def doubled_length(xs):
    return len(xs) * 2
""", "doubled_length", [([1, 2],), ([],)], "length = len(xs)"),
    Case("inline_temp", """
def double(x):
    result = x * 2
    return result
""", "double", [(3,), ("a",)], "return x * 2"),
    Case("extract_helper", """
def mean_of_positive(xs):
    total = 0
    count = 0
    for x in xs:
        if x > 0:
            total += x
            count += 1
    if count == 0:
        return 0
    return total / count
""", "mean_of_positive", [([1, -2, 3],), ([],), ([-1],)], "def compute_"),
    Case("inline_helper", """
def helper(a):
    b = a * 2
    return b + 1

def main(x):
    y = helper(x)
    return y * 3
""", "main", [(1,), (5,)], "    b = x * 2\n    y = b + 1"),
    Case("rename_locals_short", """
def total(xs):
    acc = 0
    for value in xs:
        acc += value
    return acc
""", "total", [([1, 2],)], "x1"),
    Case("rename_locals_descriptive", """
def total(n):
    s = 0
    for i in range(n):
        s += i
    return s
""", "total", [(4,), (0,)], "for index in range(n):"),
    Case("de_morgan_expand", """
def outside(x, low, high):
    return not (low <= x and x <= high)
""", "outside", [(0, 1, 3), (2, 1, 3)], "return not low <= x or not x <= high"),
    Case("de_morgan_compress", """
def neither(a, b, items):
    return a not in items and not b
""", "neither", [(1, 0, [2]), (1, 0, [1]), (2, 1, [])], "return not (a in items or b)"),
]


REFUSALS = [
    ("loop_to_comprehension", "loop with break", """
def f(xs):
    out = []
    for x in xs:
        if x < 0:
            break
        out.append(x)
    return out
"""),
    ("loop_to_comprehension", "loop variable used after the loop", """
def f(xs):
    out = []
    x = None
    for x in xs:
        out.append(x)
    return out, x
"""),
    ("loop_to_comprehension", "accumulator read inside the loop", """
def f(xs):
    out = []
    for x in xs:
        out.append(len(out) + x)
    return out
"""),
    ("loop_to_comprehension", "inside try: a caught error would see a half-built list", """
def f(xs):
    try:
        out = []
        for x in xs:
            out.append(1 / x)
    except ZeroDivisionError:
        return out
    return out
"""),
    ("loop_to_comprehension", "for/else", """
def f(xs):
    out = []
    for x in xs:
        out.append(x)
    else:
        out.append(0)
    return out
"""),
    ("loop_to_comprehension", "accumulator is a parameter (aliasing)", """
def f(xs, out):
    for x in xs:
        out.append(x)
    return out
"""),
    ("comprehension_to_loop", "comprehension variable shadows a local", """
def f(xs):
    x = 10
    ys = [x for x in xs]
    return ys, x
"""),
    ("comprehension_to_loop", "comprehension variable shadows a parameter", """
def f(x, xs):
    return [x for x in xs], x
"""),
    ("loop_to_sum", "accumulator starts as a list", """
def f(xs):
    total = []
    for x in xs:
        total += x
    return total
"""),
    ("loop_to_sum", "two statements in the loop", """
def f(xs):
    total = 0
    for x in xs:
        total += x
        print(x)
    return total
"""),
    ("sum_to_loop", "sum is shadowed", """
def f(xs, sum):
    return sum(xs)
"""),
    ("loop_to_any_all", "side effect before the test", """
def f(xs, log):
    for x in xs:
        log.append(x)
        if x < 0:
            return True
    return False
"""),
    ("any_all_to_loop", "any() over a list evaluates every element first", """
def f(xs):
    return any([x > 0 for x in xs])
"""),
    ("if_to_ifexp", "branch with two statements", """
def f(x, log):
    if x:
        log.append(x)
        return 1
    else:
        return 2
"""),
    ("else_to_guard", "if-branch falls through", """
def f(x):
    if x:
        y = 1
    else:
        y = 2
    return y
"""),
    ("guard_to_else", "guard does not return", """
def f(x):
    if x:
        x = 1
    return x
"""),
    ("bool_return_compress", "returns are not both booleans", """
def f(x):
    if x:
        return True
    return 1
"""),
    ("bool_return_expand", "return value is not a boolean", """
def f(a, b):
    return a + b
"""),
    ("augassign_to_assign", "list accumulator (+= mutates in place)", """
def f(xs):
    acc = []
    alias = acc
    for x in xs:
        acc += [x]
    return alias
"""),
    ("augassign_to_assign", "parameter of unknown type", """
def f(xs, x):
    xs += x
    return xs
"""),
    ("split_comparison", "middle operand has side effects", """
def f(a, g, b):
    return a < g() < b
"""),
    ("inline_temp", "temporary used twice", """
def f(x):
    t = x * 2
    return t + t
"""),
    ("inline_temp", "a call with side effects runs before the use", """
def f(x, log):
    t = x * 2
    return log.pop() + t
"""),
    ("introduce_temp", "nothing worth naming", """
def f(x):
    return x
"""),
    ("extract_helper", "block contains a return", """
def f(x):
    if x:
        return 1
    return 2
"""),
    ("inline_helper", "recursive helper", """
def fact(n):
    return 1 if n < 2 else n * fact(n - 1)

def g(x):
    y = fact(x)
    return y
"""),
    ("rename_locals_short", "locals() reads names", """
def f(a):
    b = a
    return locals()
"""),
    ("strip_docstrings", "no docstring", """
def f(a):
    return a
"""),
    ("strip_comments", "no comment", """
def f(a):
    return a
"""),
]


def _apply(case_transform: str, source: str, seed: int, ctx: Context | None = None):
    tree = parse_with_comments(source)
    assert tree is not None
    return TRANSFORMS[case_transform](tree, random.Random(seed), ctx)


# ---------------------------------------------------------------------------------------------------- transforms

def test_every_transform_has_a_case():
    assert set(TRANSFORMS) == {c.transform for c in CASES}
    assert len(TRANSFORMS) >= 25


@pytest.mark.parametrize("case", CASES, ids=str)
def test_transform_applies_and_preserves_behaviour(case: Case):
    outputs = set()
    for seed in range(4):
        tree = _apply(case.transform, case.source, seed)
        assert tree is not None, f"{case.transform} did not apply"
        code = emit(tree)
        ast.parse(code)
        outputs.add(code)
        for args in case.inputs:
            assert outcome(code, case.func, args) == outcome(case.source, case.func, args), (code, args)
    assert any(case.expect in code for code in outputs), outputs


@pytest.mark.parametrize("transform,why,source", REFUSALS, ids=[f"{t}:{w}" for t, w, _ in REFUSALS])
def test_transform_refuses_unsafe_pattern(transform: str, why: str, source: str):
    for seed in range(3):
        assert _apply(transform, source, seed) is None, why


def test_transforms_do_not_modify_their_input():
    for case in CASES:
        tree = parse_with_comments(case.source)
        before = ast.dump(tree)
        TRANSFORMS[case.transform](tree, random.Random(0))
        assert ast.dump(tree) == before, case.transform


def test_inline_helper_removes_a_helper_only_when_it_is_not_original():
    source = CASES[[str(c) for c in CASES].index("inline_helper:main")].source
    kept = emit(_apply("inline_helper", source, 0))
    assert "def helper(a):" in kept  # the asserts may call any function of the original
    removed = emit(_apply("inline_helper", source, 0, Context(protected=frozenset({"main"}))))
    assert "def helper" not in removed and "def main(x):" in removed


def test_extract_then_inline_round_trips():
    source = """
def mean_of_positive(xs):
    total = 0
    count = 0
    for x in xs:
        if x > 0:
            total += x
            count += 1
    return total / count if count else 0
"""
    tree = parse_source(source)
    ctx = Context.for_tree(tree)
    extracted = TRANSFORMS["extract_helper"](tree, random.Random(1), ctx)
    assert extracted is not None and len([s for s in extracted.body if isinstance(s, ast.FunctionDef)]) == 2
    back = TRANSFORMS["inline_helper"](extracted, random.Random(0), ctx)
    assert back is not None and len([s for s in back.body if isinstance(s, ast.FunctionDef)]) == 1
    for args in ([1, -2, 3],), ([],):
        assert outcome(emit(back), "mean_of_positive", args) == outcome(source, "mean_of_positive", args)


def test_docstrings_and_comments_move_mi():
    source = "def area(width, height):\n    w = width * 2\n    h = height * 2\n    return w * h / 4\n"
    base = maintainability_index(source)
    long_doc = apply_transforms(source, ["add_docstring"], task_text="Write a function to find the area.")
    commented = apply_transforms(source, ["add_comments"])
    short_doc = apply_transforms(source, ["add_short_docstring"])
    assert '"""Find the area.' in long_doc  # the task sentence, without "Write a function to"
    assert maintainability_index(long_doc) > base
    assert maintainability_index(commented) > base
    assert maintainability_index(short_doc) < base  # radon: a one-line docstring is not a comment
    assert apply_transforms(commented, ["strip_comments"]).strip() == emit(parse_source(source)).strip()


# ---------------------------------------------------------------------------------------------------- generate_variants

SOURCE = """
def count_vowels(s):
    count = 0
    for ch in s.lower():
        if ch in 'aeiou':
            count += 1
    return count
"""


def test_generate_variants_distinct_valid_and_deterministic():
    variants = generate_variants(SOURCE, max_variants=8, seed=3)
    assert 2 <= len(variants) <= 8
    assert all(isinstance(v, Variant) and v.transforms for v in variants)
    codes = [v.code.strip() for v in variants]
    assert len(set(codes)) == len(codes) and SOURCE.strip() not in codes
    for v in variants:
        ast.parse(v.code)
        for word in ("Hello", "", "AEIOU xyz"):
            assert outcome(v.code, "count_vowels", (word,)) == outcome(SOURCE, "count_vowels", (word,))
    again = generate_variants(SOURCE, max_variants=8, seed=3)
    assert [(v.code, v.transforms) for v in again] == [(v.code, v.transforms) for v in variants]
    other = generate_variants(SOURCE, max_variants=8, seed=4)
    assert [v.code for v in other] != [v.code for v in variants]
    assert {name for v in variants for name in v.transforms} <= set(TRANSFORMS) | {"reformat"}


def test_generate_variants_same_in_every_process():
    """No dependence on set/hash order: two interpreters with different hash seeds give the same variants."""
    script = ("import json, sys\nfrom common.rewrite import generate_variants\n"
              "out = [(v.code, v.transforms) for s in range(3) for v in generate_variants(sys.argv[1], seed=s)]\n"
              "print(json.dumps(out))\n")
    runs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run([sys.executable, "-c", script, SOURCE], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120, check=True)
        runs.append(done.stdout)
    assert runs[0] == runs[1] and len(json.loads(runs[0])) >= 6


def test_generate_variants_reformat_first_and_optional():
    variants = generate_variants("def f(x):\n  return x+1\n", seed=0)
    assert variants[0].transforms == ["reformat"] and variants[0].code == "def f(x):\n    return x + 1\n"
    assert all(v.transforms != ["reformat"] for v in generate_variants("def f(x):\n  return x+1\n",
                                                                      include_reformat=False))
    # Already in ast.unparse form: the reformat would be the original text, which is never returned.
    assert all(v.transforms != ["reformat"] for v in generate_variants("def f(x):\n    return x + 1\n"))


def test_generate_variants_handles_mbpp_formatting_and_bad_input():
    crlf_tabs = "def add_all(nums):\r\n\ttotal = 0\r\n\tfor n in nums:\r\n\t\ttotal += n\r\n\treturn total"
    variants = generate_variants(crlf_tabs, seed=1)
    assert len(variants) >= 2
    for v in variants:
        assert "\r" not in v.code and "\t" not in v.code
        assert outcome(v.code, "add_all", ([1, 2, 3],)) == ("ok", 6)
    assert generate_variants("def broken(:\n    pass") == []
    assert generate_variants("") == [] or all(v.code.strip() for v in generate_variants(""))
    assert generate_variants(SOURCE, max_variants=0) == []


def test_generate_variants_keeps_original_comments():
    source = "def f(x):\n    # double it\n    y = x*2\n    return y\n"
    reformat = generate_variants(source, seed=0)[0]
    assert reformat.transforms == ["reformat"] and "# double it" in reformat.code


def test_generate_variants_never_changes_signatures():
    source = "def helper(a, b=2):\n    return a * b\n\ndef main(x, *rest, flag=False):\n    y = helper(x)\n" \
             "    return y if flag else -y\n"
    for seed in range(5):
        for v in generate_variants(source, seed=seed):
            tree = ast.parse(v.code)
            defs = {s.name: ast.dump(s.args) for s in tree.body if isinstance(s, ast.FunctionDef)}
            original = {s.name: ast.dump(s.args) for s in ast.parse(source).body}
            assert all(defs.get(name) == args for name, args in original.items()), v.code


# ---------------------------------------------------------------------------------------------------- sandboxed checks

def _run(jobs: list[dict]) -> list[bool]:
    return [bool(result.passed) for result in sandbox.run_batch(jobs, progress=False)]


@requires_sandbox
def test_demo_task_variants_pass_their_asserts():
    tasks = [json.loads(line) for line in (REPO / "common" / "resources" / "demo_tasks.jsonl").read_text().splitlines()]
    jobs, owners = [], []
    for task in tasks:
        for variant in generate_variants(task["code"], max_variants=6, seed=task["task_id"], task_text=task["text"]):
            jobs.append({"code": variant.code, "tests": task["test_list"], "setup": task["test_setup_code"]})
            owners.append((task["task_id"], variant))
    results = _run(jobs)
    failed = [(tid, v.transforms, v.code) for (tid, v), ok in zip(owners, results) if not ok]
    assert not failed, failed[:3]
    per_task = {tid for tid, _ in owners}
    assert len(per_task) == len(tasks)


def _train_tasks() -> list[dict]:
    rows = [json.loads(line) for line in MBPP_JSONL.read_text().splitlines() if line.strip()]
    return [t for t in rows if 601 <= t["task_id"] <= 974 and "class" not in t["code"]]


@dataclass
class Measured:
    tasks: int
    variants: int
    failed: int
    with_two_passing: int
    with_mi_gap: int
    mean_gap: float
    seconds: float

    def report(self) -> str:
        return (f"{self.tasks} MBPP train tasks: {self.variants} variants, {self.failed} failing their asserts "
                f"({self.failed / max(1, self.variants):.2%}); tasks with >=2 passing variants: "
                f"{self.with_two_passing}/{self.tasks}; tasks with a pair of MI difference > 0: "
                f"{self.with_mi_gap}/{self.tasks}; mean largest MI gap {self.mean_gap:.1f}; {self.seconds:.1f} s")


def _measure(tasks: list[dict]) -> Measured:
    start = time.perf_counter()
    jobs, owners = [], []
    for task in tasks:
        for variant in generate_variants(task["code"], max_variants=8, seed=task["task_id"], task_text=task["text"]):
            jobs.append({"code": variant.code, "tests": task["test_list"], "setup": task["test_setup_code"]})
            owners.append((task["task_id"], variant))
    results = _run(jobs)
    passing: dict[int, list[str]] = {t["task_id"]: [] for t in tasks}
    failed = []
    for (tid, variant), ok in zip(owners, results):
        if ok:
            passing[tid].append(variant.code)
        else:
            failed.append((tid, variant.transforms))
    gaps = []
    for codes in passing.values():
        scores = [s for s in (maintainability_index(c) for c in codes) if s is not None]
        if len(scores) >= 2 and max(scores) - min(scores) > 0:
            gaps.append(max(scores) - min(scores))
    measured = Measured(len(tasks), len(jobs), len(failed), sum(len(c) >= 2 for c in passing.values()),
                        len(gaps), statistics.mean(gaps) if gaps else 0.0, time.perf_counter() - start)
    print(measured.report())
    if failed:
        print("failing variants (task, transforms):", failed[:20])
    return measured


@requires_mbpp
@requires_sandbox
def test_mbpp_train_sample_variants_pass_and_differ_in_mi():
    """40 train tasks (every 9th): measured 40/40 with >=2 passing variants, 32/40 with an MI gap, 0 failing."""
    tasks = _train_tasks()[::9][:40]
    m = _measure(tasks)
    assert m.tasks == 40
    assert m.with_two_passing >= 38
    assert m.with_mi_gap >= 29
    assert m.failed <= max(1, m.variants // 100)


@requires_mbpp
@requires_sandbox
@pytest.mark.slow
def test_mbpp_train_all_372_tasks():
    """All 372 train tasks: measured 372/372 with >=2 passing variants, 288/372 with an MI gap (the rest have
    no Halstead operators at all, so radon scores every variant 100), 0 failing variants."""
    tasks = _train_tasks()
    assert len(tasks) == 372
    m = _measure(tasks)
    assert m.with_two_passing >= 0.95 * m.tasks
    assert m.with_mi_gap >= 0.72 * m.tasks
    assert m.failed <= m.variants // 100


def test_renaming_keeps_generated_comments_true():
    from common.rewrite import apply_transforms

    code = "def total(nums):\n    s = 0\n    for n in nums:\n        s += n\n    return s\n"
    out = apply_transforms(code, ["add_comments", "rename_locals_short"], seed=0)
    assert out is not None and "x1" in out
    comments = [line.strip() for line in out.splitlines() if line.strip().startswith("#")]
    assert comments, out
    for comment in comments:  # no comment names a variable that no longer exists
        for old in ("s", "n"):
            assert f" {old} " not in f" {comment} " and f"Update {old}" not in comment, (comment, out)
