"""Token edit similarity: 1 - Levenshtein distance over LaTeX tokens / the longer sequence's length, averaged."""

import datasets
import evaluate
from rapidfuzz.distance import Levenshtein

_DESCRIPTION = """
For each example, 1 - (token-level Levenshtein distance between prediction and reference) / (number of tokens in
the longer of the two), where tokens are the formula's whitespace-separated LaTeX tokens; 1.0 when both are empty.
The result is the mean over examples, in [0, 1].
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted formulas, one string each.
    references: reference formulas, one string each.
Returns:
    token_edit_similarity: mean per-example similarity in [0, 1].
"""


class TokenEditSimilarity(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        total = 0.0
        for prediction, reference in zip(predictions, references, strict=True):
            predicted, expected = prediction.split(), reference.split()
            longest = max(len(predicted), len(expected))
            total += 1.0 - Levenshtein.distance(predicted, expected) / longest if longest else 1.0
        return {"token_edit_similarity": total / len(predictions) if predictions else 0.0}
