"""Exact match of formulas: the fraction whose whitespace-separated token sequences are identical."""

import datasets
import evaluate

_DESCRIPTION = """
The fraction of examples whose prediction has exactly the reference's LaTeX tokens, in order. Whitespace is
normalised (any run of spaces, tabs or newlines separates tokens; leading and trailing whitespace is ignored);
nothing else is: `\\frac{a}{b}` and `\\frac { a } { b }` differ.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted formulas, one string each.
    references: reference formulas, one string each.
Returns:
    exact_match: fraction in [0, 1].
"""


class ExactMatch(evaluate.Metric):
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
        matches = sum(p.split() == r.split() for p, r in zip(predictions, references, strict=True))
        return {"exact_match": matches / len(predictions) if predictions else 0.0}
