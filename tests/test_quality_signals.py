"""Per-sample quality and similarity signals agree with the libraries they wrap, called directly.

pylint_scores (bulk runs) against a pylint run per file; bleu against sacrebleu; codebleu against calc_codebleu,
argument order included; bertscore against bert-score (where installed) and a plain reference computation, on a
tiny BERT built from a config here (nothing is downloaded).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from common.signals import pylint_score
from common.signals.pylint_score import pylint_scores
from common.signals.similarity import bertscore, bleu, codebleu

CLEAN = '''"""Arithmetic helpers."""


def add(first, second):
    """Return the sum of first and second."""
    return first + second
'''
WARNINGS = '''"""Module with warnings."""
import os


def scale(values, factor):
    """Scale values; report their mean."""
    unused = 3
    scaled = [value * factor for value in values]
    total = sum(scaled)
    count = len(scaled)
    return scaled, total / count
'''
ERRORS = '''"""Module with an error."""


def broken(values):
    """Use a name nobody defined."""
    total = 0
    for value in values:
        total += value
    count = len(values)
    mean = total / count
    spread = max(values) - min(values)
    return mean + spread + undefined_name
'''
CONVENTIONS = '''"""A function name pylint dislikes."""


def Scale(values, factor):
    """Scale values; report their mean."""
    scaled = [value * factor for value in values]
    total = sum(scaled)
    count = len(scaled)
    return scaled, total / count
'''
BODY = "    total = 0\n    for value in values:\n        if value > 0:\n            total += value * 2\n" \
       "        else:\n            total -= value\n    return total\n"
# Two distinct files sharing a 7-line body: a joint pylint run would flag duplicate-code (R0801), alone neither is.
TWIN_A = f'"""Twin A."""\n\n\ndef twin_a(values):\n    """Sum."""\n{BODY}'
TWIN_B = f'"""Twin B."""\n\n\ndef twin_b(values):\n    """Sum."""\n{BODY}'
SYNTAX_ERROR = "def f(:\n    return 1\n"
SNIPPETS = [CLEAN, WARNINGS, "", SYNTAX_ERROR, CLEAN, ERRORS, CONVENTIONS, TWIN_A, TWIN_B, CLEAN, "# only a comment\n"]


@pytest.fixture(scope="module")
def alone_scores(tmp_path_factory):
    """Reference: ``pylint.lint.Run([file])`` per distinct snippet, default configuration, global note."""
    from pylint.lint import Run
    from pylint.reporters import CollectingReporter

    folder = tmp_path_factory.mktemp("alone")
    rcfile = folder / "empty.pylintrc"
    rcfile.touch()
    notes = {}
    for index, code in enumerate(dict.fromkeys(SNIPPETS)):
        path = folder / f"alone_module_{index}.py"
        path.write_text(code, encoding="utf-8")
        run = Run([str(path), f"--rcfile={rcfile}", "--persistent=n"], reporter=CollectingReporter(), exit=False)
        notes[code] = run.linter.stats.global_note
    return notes


def test_pylint_scores_equal_pylint_run_per_file(alone_scores):
    scores = pylint_scores(SNIPPETS, workers=1, progress=False)
    assert scores == pytest.approx([alone_scores[code] for code in SNIPPETS], abs=1e-9)
    assert scores[0] == 10.0 and all(0 < scores[i] < 10 for i in (1, 5, 6))
    assert scores[2] == scores[3] == scores[-1] == 0.0  # empty, syntax error, no statement: pylint gives no rating
    assert scores[7] == scores[8] == alone_scores[TWIN_A]  # no duplicate-code between the two files of one run


def test_pylint_score_is_the_rating_the_cli_prints(tmp_path):
    path = tmp_path / "warned_module.py"
    path.write_text(WARNINGS, encoding="utf-8")
    (tmp_path / "empty.pylintrc").touch()
    out = subprocess.run([sys.executable, "-m", "pylint", str(path), f"--rcfile={tmp_path / 'empty.pylintrc'}",
                          "--persistent=n"], capture_output=True, text=True, check=False).stdout
    printed = float(out.split("rated at ")[1].split("/10")[0])
    assert pylint_scores([WARNINGS], progress=False)[0] == pytest.approx(printed, abs=0.005)


def test_pylint_lints_each_distinct_code_once(monkeypatch):
    linted: list[str] = []
    real = pylint_score._run_pylint

    def spy(rcfile, paths):
        linted.extend(paths)
        return real(rcfile, paths)

    monkeypatch.setattr(pylint_score, "_run_pylint", spy)
    scores = pylint_scores(SNIPPETS, workers=1, progress=False)
    assert len(linted) == len(set(linted)) == len(set(SNIPPETS))
    assert scores[0] == scores[4] == scores[9]


def test_pylint_pool_gives_the_same_scores(monkeypatch, alone_scores):
    monkeypatch.setattr(pylint_score, "_POOL_THRESHOLD", 0)  # force the spawned pool on a few codes
    assert pylint_scores(SNIPPETS, workers=2, progress=False) == pytest.approx(
        [alone_scores[code] for code in SNIPPETS], abs=1e-9)


def test_a_pylint_crash_on_a_chunk_retries_file_by_file(monkeypatch, alone_scores):
    real = pylint_score._run_pylint

    def crash_on_chunks(rcfile, paths):
        if len(paths) > 1:
            raise RecursionError("astroid gave up")
        if "snippet_" in paths[0] and open(paths[0], encoding="utf-8").read() == ERRORS:
            raise RecursionError("and on this file alone too")
        return real(rcfile, paths)

    monkeypatch.setattr(pylint_score, "_run_pylint", crash_on_chunks)
    scores = pylint_scores([CLEAN, ERRORS, WARNINGS], workers=1, progress=False)
    assert scores == pytest.approx([alone_scores[CLEAN], 0.0, alone_scores[WARNINGS]], abs=1e-9)


def test_pylint_scores_rejects_bad_arguments():
    assert pylint_scores([], progress=False) == []
    with pytest.raises(ValueError, match="codes"):
        pylint_scores(CLEAN)
    with pytest.raises(ValueError, match="workers"):
        pylint_scores([CLEAN], workers=0)


REFERENCES = ["def add(a, b):\n    return a + b\n", "def first(xs):\n    return xs[0]\n",
              "for i in range(10):\n    print(i)\n"]
PREDICTIONS = ["def add(a, b):\n    total = a + b\n    if total > 10:\n        print(total)\n    return total\n",
               "def first(items):\n    for item in items:\n        return item\n",
               "for i in range(10):\n    print(i * 2)\n"]


def test_bleu_is_sacrebleu_corpus_bleu():
    import sacrebleu

    expected = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score
    assert bleu(REFERENCES, PREDICTIONS) == pytest.approx(expected, abs=1e-9)
    assert bleu(REFERENCES, PREDICTIONS) != pytest.approx(sacrebleu.corpus_bleu(REFERENCES, [PREDICTIONS]).score)
    assert bleu(REFERENCES, PREDICTIONS, tokenize="none") == pytest.approx(
        sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES], tokenize="none").score, abs=1e-9)
    assert bleu(REFERENCES, REFERENCES) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="3 references, 2 predictions"):
        bleu(REFERENCES, PREDICTIONS[:2])


def test_codebleu_is_calc_codebleu_with_references_first():
    from codebleu import calc_codebleu

    ours = codebleu(REFERENCES, PREDICTIONS)
    right = calc_codebleu(REFERENCES, PREDICTIONS, lang="python")
    swapped = calc_codebleu(PREDICTIONS, REFERENCES, lang="python")
    assert set(ours) == set(right) == {"codebleu", "ngram_match_score", "weighted_ngram_match_score",
                                       "syntax_match_score", "dataflow_match_score"}
    assert ours == pytest.approx(right, abs=1e-12)
    assert abs(right["codebleu"] - swapped["codebleu"]) > 0.05  # the order matters on this asymmetric case
    assert codebleu(PREDICTIONS, REFERENCES) == pytest.approx(swapped, abs=1e-12)
    weighted = codebleu(REFERENCES, PREDICTIONS, weights=(0, 0, 1, 0))
    assert weighted["codebleu"] == pytest.approx(right["syntax_match_score"])
    assert codebleu(REFERENCES, REFERENCES)["codebleu"] == pytest.approx(1.0)


def test_codebleu_rejects_bad_arguments():
    with pytest.raises(ValueError, match="references and predictions differ in length: 3 references, 1 pred"):
        codebleu(REFERENCES, PREDICTIONS[:1])
    with pytest.raises(ValueError, match="weights"):
        codebleu(REFERENCES, PREDICTIONS, weights=(0.5, 0.5))
    with pytest.raises(ValueError, match="lang"):
        codebleu(REFERENCES, PREDICTIONS, lang="cobol")
    with pytest.raises(ValueError, match="empty"):
        codebleu([], [])


def _reference_bertscore(references, predictions, model, layer):
    """Straight from the paper: embeddings -> cosine matrix -> greedy max -> P/R/F, one pair at a time, CLS/SEP
    kept as matching candidates with weight 0 (bert-score's convention)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer, encoder = AutoTokenizer.from_pretrained(model), AutoModel.from_pretrained(model).eval()
    rows = []
    with torch.no_grad():
        for reference, prediction in zip(references, predictions):
            ref, pred = (torch.nn.functional.normalize(encoder(**tokenizer(text.strip(), return_tensors="pt"),
                                                               output_hidden_states=True).hidden_states[layer][0],
                                                       dim=-1) for text in (reference, prediction))
            cosines = pred @ ref.T
            p = cosines.max(dim=1).values[1:-1].mean().item()
            r = cosines.max(dim=0).values[1:-1].mean().item()
            rows.append((p, r, 2 * p * r / (p + r)))
    return [sum(row[column] for row in rows) / len(rows) for column in range(3)], [row[2] for row in rows]


def test_bertscore_identity_difference_and_determinism(tiny_bert):
    same = bertscore(REFERENCES, REFERENCES, tiny_bert, per_sample=True)
    assert same["f1"] == pytest.approx(1.0, abs=1e-4)
    assert same["f1_per_sample"] == pytest.approx([1.0] * 3, abs=1e-4)
    different = bertscore(REFERENCES, PREDICTIONS, tiny_bert, per_sample=True)
    assert all(f1 < 1 - 1e-3 for f1 in different["f1_per_sample"])
    assert bertscore(REFERENCES, PREDICTIONS, tiny_bert, per_sample=True) == different
    unpadded = bertscore(REFERENCES, PREDICTIONS, tiny_bert, batch_size=1, per_sample=True)
    assert unpadded["f1_per_sample"] == pytest.approx(different["f1_per_sample"], abs=1e-5)  # padding changes nothing
    assert set(bertscore(REFERENCES, PREDICTIONS, tiny_bert)) == {"precision", "recall", "f1"}


@pytest.mark.parametrize("layer", [1, 2])
def test_bertscore_equals_the_reference_computation(tiny_bert, layer):
    (p, r, f), per_sample = _reference_bertscore(REFERENCES, PREDICTIONS, tiny_bert, layer)
    ours = bertscore(REFERENCES, PREDICTIONS, tiny_bert, num_layers=layer, batch_size=2, per_sample=True)
    assert [ours["precision"], ours["recall"], ours["f1"]] == pytest.approx([p, r, f], abs=1e-5)
    assert ours["f1_per_sample"] == pytest.approx(per_sample, abs=1e-5)


@pytest.mark.parametrize("idf", [False, True])
def test_bertscore_equals_the_bert_score_package(tiny_bert, idf):
    bert_score = pytest.importorskip("bert_score")
    # batch_size=1 in bert-score: it fills padding with similarity 0, which our masking does not (docstring)
    p, r, f = bert_score.score(PREDICTIONS, REFERENCES, model_type=tiny_bert, num_layers=1, idf=idf, batch_size=1)
    ours = bertscore(REFERENCES, PREDICTIONS, tiny_bert, num_layers=1, idf=idf, per_sample=True)
    assert ours["precision"] == pytest.approx(p.mean().item(), abs=1e-5)
    assert ours["recall"] == pytest.approx(r.mean().item(), abs=1e-5)
    assert ours["f1_per_sample"] == pytest.approx(f.tolist(), abs=1e-5)
    if idf:  # idf weights really differ from uniform ones
        assert ours["f1"] != pytest.approx(bertscore(REFERENCES, PREDICTIONS, tiny_bert, num_layers=1)["f1"])


def test_bertscore_edge_cases_and_bad_arguments(tiny_bert):
    scores = bertscore(["", "x = 1"], ["x = 1", "  x = 1\n"], tiny_bert, per_sample=True)
    assert scores["f1_per_sample"][0] == 0.0  # an empty side scores 0, as in bert-score
    assert scores["f1_per_sample"][1] == pytest.approx(1.0, abs=1e-4)  # texts are strip()-ed
    with pytest.raises(ValueError, match="2 references, 1 predictions"):
        bertscore(["a", "b"], ["a"], tiny_bert)
    with pytest.raises(ValueError, match="num_layers"):
        bertscore(["a"], ["a"], tiny_bert, num_layers=3)
    with pytest.raises(ValueError, match="batch_size"):
        bertscore(["a"], ["a"], tiny_bert, batch_size=0)

