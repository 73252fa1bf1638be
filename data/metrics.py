r"""Formula metrics, shared by training (`Seq2SeqTrainer(compute_metrics=...)`) and `evaluate.py`.

Formulas are compared in the canonical token form (LaTeX tokens separated by spaces): both sides go through
`data.normalize.normalize` first, so that aliases the model was taught to merge (`\to` and `\rightarrow`, `\le` and
`\leq`, ...) count as the same; a side that cannot be normalised is compared as it is. Each metric is an
`evaluate.Metric` script in `data/metric_modules/`, loaded by path, so nothing is fetched from the Hub:

- `bleu`: corpus BLEU-4 on whitespace tokens, multi-bleu style (sacrebleu, `tokenize="none"`), in [0, 1].
- `token_edit_similarity`: mean of 1 - token Levenshtein distance / longer length.
- `cer`: character error rate with all whitespace removed (total edits / total reference characters).
- `exact_match`: fraction of identical token sequences.
"""

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
from transformers import EvalPrediction

from .normalize import canonical

METRIC_MODULES = Path(__file__).parent / "metric_modules"
METRIC_NAMES = ("bleu", "token_edit_similarity", "cer", "exact_match")


def _import_evaluate_library() -> ModuleType:
    """The `evaluate` library, never the repository's own `evaluate.py` script.

    The repository root holds the script `evaluate.py`, and the root comes first on `sys.path` whenever a root script
    runs (`python evaluate.py`, `python train.py`) or pytest runs (`pythonpath = ["."]`); a plain `import evaluate`
    would then import the script. The library is a package and the script a single file, so this takes the first
    `evaluate` package on `sys.path` and registers it as `sys.modules["evaluate"]`, where the library's own imports
    and the metric scripts' `import evaluate` find it. This is the one place that deals with the name clash: code
    that needs the library imports it from here.
    """
    loaded = sys.modules.get("evaluate")
    if loaded is not None and hasattr(loaded, "__path__"):  # already the package
        return loaded
    for entry in sys.path:
        spec = importlib.machinery.PathFinder.find_spec("evaluate", [entry])
        if spec is None or not spec.submodule_search_locations or spec.loader is None:  # a plain file, or nothing
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules["evaluate"] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop("evaluate", None)
            raise
        return module
    raise ImportError("the `evaluate` library is not installed: pip install -r requirements.txt")


evaluate = _import_evaluate_library()


@cache
def load_formula_metrics():
    """The four formula metrics as one `evaluate.CombinedEvaluations`, loaded once per process from local scripts."""
    modules = [evaluate.load(str(METRIC_MODULES / f"{name}.py"), keep_in_memory=True) for name in METRIC_NAMES]
    return evaluate.combine(modules)


def compute_formula_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Score predicted formulas against references, both in the canonical token form.

    Args:
        predictions: predicted formulas, one string each.
        references: reference formulas, in the same order.

    Returns:
        `{"bleu", "token_edit_similarity", "cer", "exact_match"}` as floats.

    Raises:
        ValueError: the lists differ in length or are empty.
    """
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references; they must pair up")
    if not predictions:
        raise ValueError("no predictions to score")
    predictions, references = [canonical(p) for p in predictions], [canonical(r) for r in references]
    results = load_formula_metrics().compute(predictions=predictions, references=references)
    return {name: float(results[name]) for name in METRIC_NAMES}


def build_compute_metrics(tokenizer) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `compute_metrics` for `Seq2SeqTrainer(predict_with_generate=True)`: decodes generated ids and label ids
    (-100, the loss's and the trainer's padding, becomes the pad id) and scores them with `compute_formula_metrics`.

    Args:
        tokenizer: the model's tokenizer (`processor.tokenizer`).
    """

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        predictions = np.where(predictions != -100, predictions, tokenizer.pad_token_id)
        labels = np.where(labels != -100, labels, tokenizer.pad_token_id)
        decoded = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return compute_formula_metrics(decoded, references)

    return compute_metrics
