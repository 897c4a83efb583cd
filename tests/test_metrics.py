"""pass@k against the exact combinatorial definition."""

from fractions import Fraction
from math import comb

import pytest

from common.evaluation.metrics import pass_at_k


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 20, 37])
def test_matches_exact_formula_on_a_grid(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), abs=1e-12), (n, c, k)


def test_paper_protocol_n_equals_k_is_any_pass():
    assert pass_at_k(10, 0, 10) == 0.0
    assert all(pass_at_k(10, c, 10) == 1.0 for c in range(1, 11))


def test_pass_at_1_is_the_pass_rate():
    assert pass_at_k(200, 37, 1) == pytest.approx(37 / 200)


@pytest.mark.parametrize("n,c,k", [(10_000, 1, 100), (100_000, 3, 1000), (5000, 4999, 10), (2000, 1000, 1000)])
def test_large_n_is_stable(n, c, k):
    got = pass_at_k(n, c, k)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(float(exact(n, c, k)), rel=1e-9, abs=1e-12)


def test_monotone_in_c_and_k():
    values = [pass_at_k(50, c, 5) for c in range(51)]
    assert values == sorted(values)
    values = [pass_at_k(50, 3, k) for k in range(1, 51)]
    assert values == sorted(values)


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)
