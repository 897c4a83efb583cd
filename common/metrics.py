"""Evaluation metrics. pass@k follows Chen et al. 2021 ("Evaluating Large Language Models Trained on Code")."""

from __future__ import annotations


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` passed.

    pass@k = 1 - C(n - c, k) / C(n, k): one minus the chance that k samples drawn without replacement from
    the n are all failures. Computed as the product form 1 - prod_{i = n-c+1}^{n} (1 - k / i) (Chen et al.,
    Fig. 3), which never forms the huge binomials and stays exact to float precision for any n.
    With n = k (the paper's protocol: 10 samples, pass@10) it is 1.0 if any sample passed, else 0.0.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail
