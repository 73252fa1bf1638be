"""Formula metrics: exact values on small cases, the Trainer hook, and the `evaluate` name clash."""

import importlib.machinery
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from transformers import EvalPrediction

import data.metrics
from data.metrics import build_compute_metrics, compute_formula_metrics

ROOT = Path(__file__).resolve().parents[1]


def test_perfect_predictions():
    formulas = ["\\frac { a } { b } + c ^ { 2 }", "x _ { i } = \\sum _ { j } y _ { j }"]
    assert compute_formula_metrics(formulas, formulas) == {
        "bleu": pytest.approx(1.0),
        "token_edit_similarity": 1.0,
        "cer": 0.0,
        "exact_match": 1.0,
    }


def test_partial_predictions_hand_computed():
    # One token of six replaced: n-gram precisions 5/6, 4/5, 3/4, 2/3, equal lengths so no brevity penalty.
    scores = compute_formula_metrics(["a b c d e f"], ["a b c d e g"])
    assert scores["bleu"] == pytest.approx((5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25)
    assert scores["token_edit_similarity"] == pytest.approx(1 - 1 / 6)
    assert scores["cer"] == pytest.approx(1 / 6)
    assert scores["exact_match"] == 0.0

    # One token short: all precisions 1, brevity penalty exp(1 - 5/4).
    scores = compute_formula_metrics(["a b c d"], ["a b c d e"])
    assert scores["bleu"] == pytest.approx(math.exp(1 - 5 / 4))
    assert scores["token_edit_similarity"] == pytest.approx(0.8)
    assert scores["cer"] == pytest.approx(1 / 5)


def test_bleu_pools_ngram_counts_over_the_corpus():
    # Corpus BLEU (not a mean of sentence scores): matches and totals are summed, then combined.
    scores = compute_formula_metrics(["a b c d e f", "a b c d"], ["a b c d e g", "a b c d"])
    assert scores["bleu"] == pytest.approx((9 / 10 * 7 / 8 * 5 / 6 * 3 / 4) ** 0.25)
    assert scores["exact_match"] == 0.5
    assert scores["token_edit_similarity"] == pytest.approx((5 / 6 + 1) / 2)
    assert scores["cer"] == pytest.approx(1 / 10)


def test_bleu_is_unsmoothed_and_case_and_token_exact():
    # multi-bleu style: no 4-gram in the corpus -> 0; no lowercasing; no re-tokenisation of `\frac{a}`.
    assert compute_formula_metrics(["x + y"], ["x + y"])["bleu"] == 0.0
    assert compute_formula_metrics(["A b c d"], ["a b c d"])["bleu"] < 1.0
    different = compute_formula_metrics(["\\frac { a } { b } c d e"], ["\\frac { a } { c } c d e"])
    assert different["bleu"] < 1.0 and different["exact_match"] == 0.0


def test_formulas_are_compared_in_canonical_form():
    # Both sides are normalised: glued LaTeX and merged aliases score as the same formula.
    same = compute_formula_metrics(["\\frac{a}{b} \\to c d e"], ["\\frac { a } { b } \\rightarrow c d e"])
    assert same == {"bleu": 1.0, "token_edit_similarity": 1.0, "cer": 0.0, "exact_match": 1.0}
    # A side that cannot be normalised (unbalanced braces) is still scored, as written.
    broken = compute_formula_metrics(["\\frac { a"], ["\\frac { a"])
    assert broken["exact_match"] == 1.0


def test_cer_ignores_whitespace_and_counts_edits_over_reference_characters():
    scores = compute_formula_metrics(["x ^ { 2 }", "ab"], ["x^{2}", "abc d"])  # 0 + 2 edits over 5 + 4 chars
    assert scores["cer"] == pytest.approx(2 / 9)
    assert compute_formula_metrics(["a b c d e"], ["a"])["cer"] == pytest.approx(4.0)  # insertions can pass 1


def test_empty_formulas():
    assert compute_formula_metrics([""], ["a b"]) == {
        "bleu": 0.0,
        "token_edit_similarity": 0.0,
        "cer": 1.0,
        "exact_match": 0.0,
    }
    both_empty = compute_formula_metrics(["", "  "], ["", ""])
    assert both_empty["token_edit_similarity"] == 1.0 and both_empty["exact_match"] == 1.0
    assert both_empty["cer"] == 0.0


def test_whitespace_is_normalised():
    scores = compute_formula_metrics(["  x  ^ {\t2 }\n"], ["x ^ { 2 }"])
    assert scores["exact_match"] == 1.0 and scores["token_edit_similarity"] == 1.0 and scores["cer"] == 0.0


def test_length_mismatch_and_empty_input_are_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        compute_formula_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        compute_formula_metrics([], [])


def test_build_compute_metrics_decodes_ids_and_ignores_minus_100(tiny_processor):
    tokenizer = tiny_processor.tokenizer
    references = ["x ^ { 2 } + y ^ { 2 } = r ^ { 2 }", "E = m c ^ { 2 }"]
    predictions = ["x ^ { 2 } + y ^ { 2 } = r ^ { 2 }", "E = m c"]
    labels = tokenizer(references).input_ids  # each ends with </s>
    generated = [[tokenizer.bos_token_id, *ids] for ids in tokenizer(predictions).input_ids]

    def padded(rows, value):
        width = max(len(row) for row in rows)
        return np.array([row + [value] * (width - len(row)) for row in rows])

    # Labels are padded with -100 by the collator; the trainer pads generated ids across batches with -100 too.
    compute_metrics = build_compute_metrics(tokenizer)
    scores = compute_metrics(EvalPrediction(predictions=padded(generated, -100), label_ids=padded(labels, -100)))
    assert scores == pytest.approx(compute_formula_metrics(predictions, references))
    assert scores["exact_match"] == 0.5
    as_tuple = compute_metrics(EvalPrediction(predictions=(padded(generated, -100),), label_ids=padded(labels, -100)))
    assert as_tuple == scores


def test_the_library_not_the_root_script_is_imported_under_pytest():
    # The trap is live: the repository root is on sys.path (pythonpath = ["."]) and holds evaluate.py.
    assert str(ROOT) in [str(Path(entry).resolve()) for entry in sys.path if entry]
    shadow = importlib.machinery.PathFinder.find_spec("evaluate", [str(ROOT)])
    assert shadow is not None and shadow.origin == str(ROOT / "evaluate.py")
    library = data.metrics.evaluate
    assert Path(library.__file__).parent.name == "evaluate" and Path(library.__file__).parent != ROOT
    assert hasattr(library, "load") and hasattr(library, "Metric")
    import evaluate

    assert evaluate is library


def test_root_first_on_sys_path_and_no_network(tmp_path):
    """As `python evaluate.py` / `python train.py` see it (the root first on sys.path), with HF_HUB_OFFLINE unset
    and every socket refused, in a fresh module cache: the metrics load from the local scripts and compute."""
    script = textwrap.dedent(
        """
        import json, socket, sys

        attempts = []

        def refuse(*args, **kwargs):
            attempts.append(repr(args))
            raise OSError("network access attempted")

        socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse
        assert sys.path[0] == ""  # `python -c` in the root puts it first, as running a root script does
        import data.metrics
        from data.metrics import compute_formula_metrics

        print(json.dumps({
            "library": data.metrics.evaluate.__file__,
            "registered": sys.modules["evaluate"] is data.metrics.evaluate,
            "scores": compute_formula_metrics(["a b c d e f"], ["a b c d e g"]),
            "network_attempts": attempts,
        }))
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HOME=str(tmp_path / "hf"), PYTHONPATH="")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(out["library"]).parent.name == "evaluate" and Path(out["library"]).parent != ROOT
    assert out["registered"] and out["network_attempts"] == []
    assert out["scores"]["bleu"] == pytest.approx((1 / 3) ** 0.25)
    assert any((tmp_path / "modules").rglob("bleu.py"))  # loaded through evaluate's local-script path
