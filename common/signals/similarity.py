"""Reference-similarity metrics of generated code: BLEU (sacrebleu), CodeBLEU (``codebleu``) and BERTScore.

Every function takes ``(references, predictions)`` in THAT order, one reference per prediction, and raises
ValueError when the two lengths differ. The order matters: BLEU's brevity penalty, CodeBLEU's syntax and dataflow
matches (the share of the *reference's* subtrees / data-flow edges found in the prediction) and BERTScore's
precision/recall are all asymmetric; one published study called ``calc_codebleu(predictions, references)`` and
reported a gain that was the swap.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

CODEBLEU_KEYS = ("codebleu", "ngram_match_score", "weighted_ngram_match_score", "syntax_match_score",
                 "dataflow_match_score")


def _check_pairs(references: Sequence[str], predictions: Sequence[str]) -> tuple[list[str], list[str]]:
    for name, texts in (("references", references), ("predictions", predictions)):
        if isinstance(texts, str):
            raise ValueError(f"{name} must be a sequence of strings, not one string")
        if not all(isinstance(text, str) for text in texts):
            raise ValueError(f"{name} must contain only strings")
    if len(references) != len(predictions):
        raise ValueError(f"references and predictions differ in length: {len(references)} references, "
                         f"{len(predictions)} predictions (one reference per prediction)")
    if not references:
        raise ValueError("references and predictions are empty: a corpus score needs at least one pair")
    return list(references), list(predictions)


def bleu(references: Sequence[str], predictions: Sequence[str], tokenize: str = "13a") -> float:
    """Corpus BLEU (0-100) of ``predictions`` against one reference each: ``sacrebleu.corpus_bleu`` with its defaults
    (exponential smoothing, mixed case) and sacrebleu's standard ``13a`` tokenizer.

    Why 13a for code: it splits brackets, operators, ``:``/``=``/``,`` and attribute dots (``self.x`` -> ``self . x``)
    from identifiers, so ``f(x)`` and ``f( x )`` tokenise alike, and line breaks and indentation count as plain
    whitespace (BLEU compares tokens, not layout). It also splits ``_``, so ``max_len`` counts as ``max _ len``:
    partial credit for identifiers sharing parts. ``tokenize="none"`` gives whitespace-only tokens (CodeBLEU's n-gram
    part uses ``str.split``), where ``f(x):`` is one token.
    """
    import sacrebleu

    references, predictions = _check_pairs(references, predictions)
    return float(sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score)


def codebleu(references: Sequence[str], predictions: Sequence[str], lang: str = "python",
             weights: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)) -> dict[str, float]:
    """CodeBLEU (Ren et al. 2020, 0-1) and its four parts: ``calc_codebleu(references, predictions, lang, weights)``.

    ``weights`` weigh n-gram match, keyword-weighted n-gram match, AST subtree (syntax) match and data-flow match.
    codebleu scores a data-flow match of 0 when no reference has a data flow (e.g. only ``pass`` bodies) and logs a
    warning then: read ``dataflow_match_score`` with care on very short references.
    """
    from codebleu import calc_codebleu

    references, predictions = _check_pairs(references, predictions)
    if len(weights) != 4 or not all(isinstance(w, (int, float)) and w >= 0 for w in weights):
        raise ValueError(f"weights must be 4 non-negative numbers (ngram, weighted ngram, syntax, dataflow), "
                         f"got {weights!r}")
    from codebleu.utils import AVAILABLE_LANGS

    if lang not in AVAILABLE_LANGS:
        raise ValueError(f"lang {lang!r} is not one of codebleu's languages {sorted(AVAILABLE_LANGS)}")
    scores = calc_codebleu(references, predictions, lang=lang, weights=tuple(float(w) for w in weights))
    return {key: float(scores[key]) for key in CODEBLEU_KEYS}


def bertscore(references: Sequence[str], predictions: Sequence[str], model: str, num_layers: int | None = None,
              batch_size: int = 32, device: str = "cpu", *, idf: bool = False, max_length: int | None = None,
              per_sample: bool = False) -> dict[str, float | list[float]]:
    """BERTScore (Zhang et al. 2020): mean precision/recall/F1 of greedy token matching by cosine similarity.

    Each text is encoded with ``model`` (a local folder or hub id: ``AutoTokenizer``/``AutoModel``; nothing is
    downloaded when ``HF_HUB_OFFLINE=1``); its tokens' hidden states after layer ``num_layers`` (default: the last
    layer) are L2-normalised; every prediction token is matched to its most similar reference token (precision) and
    every reference token to its most similar prediction token (recall); F1 = 2PR/(P+R). With ``idf=True`` token
    weights are ``log((M+1)/(df+1))`` over the M references, as bert-score computes them; otherwise all are 1.
    Returns ``{"precision", "recall", "f1"}`` (means over pairs) and, with ``per_sample``, ``"f1_per_sample"``.

    ``model="neulab/codebert-python"`` with ``num_layers=11`` (the layer code-bert-score uses for it) gives
    CodeBERTScore (Zhou et al. 2023) without its optional extras (encoding the NL prompt as context, dropping
    punctuation tokens, sliding windows past 512 tokens). The classic BERTScore is e.g. ``model="roberta-large",
    num_layers=17`` (bert-score's default; it also prefixes a space for RoBERTa/GPT-2 tokenizers, which we don't).

    Why by hand rather than the ``bert-score`` package (0.3.13, last released in 2023): on transformers 5 it crashes
    on an empty text (``build_inputs_with_special_tokens`` is gone) and on tokenizers without a ``model_max_length``
    (OverflowError), needs ``num_layers`` for any model not in its table, and fills padding with similarity 0, so a
    token whose true similarities are all negative scores differently depending on what else is in its batch. This
    implementation follows bert-score's conventions otherwise -- texts are ``strip()``-ed; ``[CLS]``/``[SEP]`` (any
    special token) may be matched but carry weight 0; a pair with an empty side scores 0 -- and the tests check it
    matches bert-score where both are defined.
    Texts longer than ``max_length`` tokens (default: the tokenizer's ``model_max_length``, else 512) are truncated.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    references, predictions = _check_pairs(references, predictions)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of texts, got {batch_size}")
    tokenizer = AutoTokenizer.from_pretrained(model)
    encoder = AutoModel.from_pretrained(model).to(device).eval()
    if getattr(encoder.config, "is_encoder_decoder", False):
        encoder = encoder.get_encoder()
    depth = encoder.config.num_hidden_layers
    if num_layers is not None and not 1 <= num_layers <= depth:
        raise ValueError(f"num_layers must be between 1 and {depth} (the layers of {model}), got {num_layers}")
    if max_length is None:
        max_length = tokenizer.model_max_length if tokenizer.model_max_length < 100_000 else 512

    with torch.no_grad():
        encoded = _embed(references + predictions, tokenizer, encoder, num_layers or depth, batch_size, device,
                         max_length)
    weight = _idf_weights([encoded[text.strip()][1] for text in references]) if idf else None
    scores = [_greedy_match(encoded[reference.strip()], encoded[prediction.strip()], weight)
              for reference, prediction in zip(references, predictions)]
    result: dict[str, float | list[float]] = {
        name: sum(score[column] for score in scores) / len(scores)
        for column, name in enumerate(("precision", "recall", "f1"))
    }
    if per_sample:
        result["f1_per_sample"] = [score[2] for score in scores]
    return result


def _embed(texts: list[str], tokenizer, encoder, layer: int, batch_size: int, device: str, max_length: int) -> dict:
    """``{stripped text: (normalised hidden states of its tokens at ``layer``, token ids with -1 for special)}``."""
    import torch

    distinct = sorted({text.strip() for text in texts}, key=len)  # similar lengths share a batch: less padding
    encoded = {}
    for start in range(0, len(distinct), batch_size):
        batch = distinct[start: start + batch_size]
        inputs = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                           return_special_tokens_mask=True)
        special = inputs.pop("special_tokens_mask").bool()
        hidden = encoder(**inputs.to(device), output_hidden_states=True).hidden_states[layer]
        hidden = torch.nn.functional.normalize(hidden.float(), dim=-1).cpu()
        mask = inputs["attention_mask"].cpu().bool()
        ids = inputs["input_ids"].cpu().masked_fill(special, -1)
        for row, text in enumerate(batch):
            encoded[text] = (hidden[row][mask[row]], ids[row][mask[row]].tolist())
    return encoded


def _greedy_match(reference: tuple, prediction: tuple, weight) -> tuple[float, float, float]:
    """(P, R, F1) of one pair; special tokens (id -1) can be matched but weigh 0, as in bert-score."""
    import torch

    (ref_emb, ref_ids), (pred_emb, pred_ids) = reference, prediction
    ref_w = torch.tensor([0.0 if i < 0 else weight(i) if weight else 1.0 for i in ref_ids])
    pred_w = torch.tensor([0.0 if i < 0 else weight(i) if weight else 1.0 for i in pred_ids])
    if ref_w.sum() == 0 or pred_w.sum() == 0:  # an empty side (only special tokens): bert-score scores 0
        return 0.0, 0.0, 0.0
    similarity = pred_emb @ ref_emb.T  # cosines: a row per prediction token, a column per reference token
    precision = float((similarity.max(dim=1).values * pred_w).sum() / pred_w.sum())
    recall = float((similarity.max(dim=0).values * ref_w).sum() / ref_w.sum())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall != 0 else 0.0
    return precision, recall, f1


def _idf_weights(reference_ids: list[list[int]]):
    """bert-score's idf: ``log((M+1)/(df+1))`` with df the number of the M references holding the token."""
    df = Counter(i for ids in reference_ids for i in set(ids))
    total = len(reference_ids)
    return lambda i: math.log((total + 1) / (df.get(i, 0) + 1))
