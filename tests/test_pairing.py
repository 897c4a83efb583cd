from common.preference.pairing import Candidate, pair_row, pair_summary, select_pairs, usable
from common.prompting.templates import completion_prompt

TASK = {"task_id": 7, "text": "Write a function to add.", "code": "def add(a, b):\n    return a + b"}


def c(code, mi, passed=True, index=0):
    return Candidate(code, mi, passed, index)


def test_only_passing_parsable_distinct_candidates_are_used():
    pool = [c("a", 80, index=0), c("a ", 70, index=1), c("b", None, index=2), c("d", 90, False, 3), c("e", 60, index=4)]
    assert [x.code for x in usable(pool)] == ["a", "e"]


def test_extremes_pairs_max_against_min():
    pool = [c("x", 70, index=0), c("y", 95, index=1), c("z", 60, index=2), c("w", 80, index=3)]
    [(chosen, rejected)] = select_pairs(pool, "extremes")
    assert (chosen.code, rejected.code) == ("y", "z")


def test_ties_are_dropped_by_default_and_kept_first_chosen_in_paper_mode():
    pool = [c("first", 100, index=0), c("second", 100, index=1)]
    assert select_pairs(pool) == []
    [(chosen, rejected)] = select_pairs(pool, keep_ties=True, min_margin=0.0)
    assert (chosen.code, rejected.code) == ("first", "second")  # the paper: output 1 chosen on a tie


def test_margin_filters_small_differences():
    pool = [c("a", 80.0, index=0), c("b", 79.5, index=1)]
    assert select_pairs(pool, min_margin=1.0) == []
    assert len(select_pairs(pool, min_margin=0.5)) == 1


def test_identical_code_never_pairs_even_with_keep_ties():
    assert select_pairs([c("same", 90, index=0), c("same", 90, index=1)], keep_ties=True, min_margin=0) == []


def test_all_pairing_orders_every_pair_by_mi():
    pool = [c("a", 70, index=0), c("b", 90, index=1), c("c", 80, index=2)]
    pairs = [(x.code, y.code) for x, y in select_pairs(pool, "all")]
    assert pairs == [("b", "c"), ("b", "a"), ("c", "a")]


def test_pair_row_matches_the_prompt_style():
    row = pair_row(TASK, completion_prompt(TASK), "completion", c("def add(a, b):\n    return a + b", 90),
                   c("def add(a,b): return a+b", 80), "rewrite")
    assert row["chosen"].endswith("\n```") and not row["chosen"].startswith("```")
    chat = pair_row(TASK, [{"role": "user", "content": "x"}], "chat", c("x = 1", 90), c("y = 2", 80), "rewrite")
    assert chat["chosen"] == "```python\nx = 1\n```" and chat["mi_margin"] == 10
    summary = pair_summary([row, chat], n_tasks=3)
    assert summary["pairs"] == 2 and summary["tasks_with_pairs"] == 1 and summary["mean_margin"] == 10
