"""Character error rate of formulas with all whitespace removed: total character edits / total reference characters."""

import datasets
import evaluate
from rapidfuzz.distance import Levenshtein

_DESCRIPTION = """
Character error rate over the corpus: the Levenshtein distances between predictions and references, summed, divided
by the total number of reference characters. All whitespace is removed first, so the spacing of the token form
does not count. It can exceed 1 when predictions are longer than references. With no reference characters at all it
is 0.0 if the predictions are empty too, else 1.0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted formulas, one string each.
    references: reference formulas, one string each.
Returns:
    cer: character error rate, 0 for a perfect corpus.
"""


class Cer(evaluate.Metric):
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
        edits = characters = 0
        for prediction, reference in zip(predictions, references, strict=True):
            predicted, expected = "".join(prediction.split()), "".join(reference.split())
            edits += Levenshtein.distance(predicted, expected)
            characters += len(expected)
        if characters == 0:
            return {"cer": 0.0 if edits == 0 else 1.0}
        return {"cer": edits / characters}
