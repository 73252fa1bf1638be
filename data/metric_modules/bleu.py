"""Corpus BLEU-4 on whitespace tokens, as im2markup scored formulas (multi-bleu.perl style), through sacrebleu."""

import datasets
import evaluate
from sacrebleu.metrics import BLEU

_DESCRIPTION = """
Corpus BLEU-4 over LaTeX formulas in the canonical token form (tokens separated by spaces): n-grams are counted on
whitespace tokens with no further tokenisation, no lowercasing and no smoothing, as multi-bleu.perl does; a corpus
with no matching 4-gram scores 0. The score is a fraction in [0, 1], not a percentage.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted formulas, one string each.
    references: reference formulas, one string each (a single reference per prediction).
Returns:
    bleu: corpus BLEU-4 in [0, 1].
"""

_CITATION = """
@inproceedings{papineni2002bleu, title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing}, booktitle={ACL}, year={2002}}
@inproceedings{post2018call, title={A Call for Clarity in Reporting BLEU Scores}, author={Post, Matt},
  booktitle={WMT}, year={2018}}
"""


class Bleu(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        # force=True: the input is tokenised on purpose, so sacrebleu's "looks tokenised" warning does not apply.
        scorer = BLEU(tokenize="none", lowercase=False, smooth_method="none", max_ngram_order=4, force=True)
        score = scorer.corpus_score(predictions, [references]).score / 100.0
        return {"bleu": min(score, 1.0)}  # exp(mean of logs) can round a hair above 1 for a perfect corpus
