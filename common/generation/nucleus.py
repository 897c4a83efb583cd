"""Exact top-p (nucleus) sampling without sorting the whole vocabulary every step (see ``sample_top_p``)."""

from __future__ import annotations

import torch

NUCLEUS_CANDIDATES = 64  # top-p is searched among this many tokens first (then 16x more, then by bisection)


def sample_top_p(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    """Exact nucleus sampling by inverse CDF with one uniform per row.

    Keeps the most likely tokens until their mass reaches ``top_p`` (the same set as transformers' TopPLogitsWarper:
    a token stays when the mass of strictly more likely tokens is below top_p), renormalises and picks the token
    where the row's uniform falls. A full sort of 262k probabilities per row per step costs more than the model's
    forward pass on a CPU, so the nucleus is looked for among the top 64, then the top 1024 tokens (ordered by
    probability); rows with a larger nucleus (flat distributions: random tiny models, rambling text) find its
    boundary by bisection on the probability threshold instead (``_wide_nucleus``) and are sampled in vocabulary
    order. Both give exactly the nucleus distribution.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    vocab = probs.shape[-1]
    if top_p >= 1.0:
        return _inverse_cdf(probs, uniforms)
    tokens = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    rows = torch.arange(probs.shape[0], device=probs.device)
    for k in (NUCLEUS_CANDIDATES, NUCLEUS_CANDIDATES * 16):
        if not rows.numel() or k >= vocab:
            break
        values, indices = probs[rows].topk(k, dim=-1)
        covered = values.sum(-1) >= top_p
        if covered.any():
            tokens[rows[covered]] = _pick(values[covered], indices[covered], top_p, uniforms[rows[covered]])
        rows = rows[~covered]
    if rows.numel():
        wide = probs[rows]
        tokens[rows] = _inverse_cdf(wide * _wide_nucleus(wide, top_p), uniforms[rows])
    return tokens


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    cdf = weights.cumsum(-1)
    pick = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(-1).contiguous(), right=True)
    return pick.clamp(max=weights.shape[-1] - 1).squeeze(-1)


def _wide_nucleus(probs: torch.Tensor, top_p: float, iterations: int = 24) -> torch.Tensor:
    """The top-p set as a 0/1 mask without sorting: bisect the threshold t with mass(p >= lo) >= top_p >
    mass(p >= hi), then settle the few probabilities left inside [lo, hi) by sorting just those."""
    lo = torch.zeros(probs.shape[0], 1, dtype=probs.dtype, device=probs.device)
    hi = probs.max(-1, keepdim=True).values * 2
    for _ in range(iterations):
        mid = (lo + hi) / 2
        enough = (probs * (probs >= mid)).sum(-1, keepdim=True) >= top_p
        lo, hi = torch.where(enough, mid, lo), torch.where(enough, hi, mid)
    keep = probs >= hi
    base = (probs * keep).sum(-1).tolist()
    window = (probs >= lo) & ~keep
    for r in range(probs.shape[0]):
        index = window[r].nonzero().flatten()
        values, order = probs[r, index].sort(descending=True)
        mass = base[r]
        for value, token in zip(values.tolist(), index[order].tolist()):
            if mass >= top_p:
                break
            keep[r, token] = True
            mass += value
    return keep.to(probs.dtype)


def _pick(values: torch.Tensor, indices: torch.Tensor, top_p: float, uniforms: torch.Tensor) -> torch.Tensor:
    cum = values.cumsum(-1)
    kept = torch.where((cum - values) < top_p, values, torch.zeros_like(values))
    return indices.gather(-1, _inverse_cdf(kept, uniforms).unsqueeze(-1)).squeeze(-1)
