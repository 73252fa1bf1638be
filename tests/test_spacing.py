"""data/spacing.py: hand spacing commands go only where they render as written and show in the image."""

import random
import shutil
from collections import Counter

import numpy as np
import pytest

from data.normalize import _SPACING_KEEP, normalize
from data.render import DENG, render
from data.spacing import (
    SPACING_WEIGHTS,
    TYPED_GAPS,
    TYPED_RUNS,
    add_spacing,
    add_typed_spacing,
    has_hand_spacing,
    spacing_gaps,
    without_spacing,
)

FORMULAS = [
    "\\int _ { 0 } ^ { 1 } f ( x ) d x = \\frac { a } { b }",
    "\\begin{array} { c c } { a + b } & { b } \\\\ { c } & { d } \\\\ \\end{array}",
    "x ^ { 2 } + \\operatorname { l n } y",
    "\\sqrt { a + b } \\sum \\limits _ { i } x _ { i }",
    "\\left( a , b \\right) = \\mathrm { d } x",
]


@pytest.mark.parametrize("formula", FORMULAS)
def test_spaced_formulas_stay_canonical_and_keep_their_tokens(formula):
    rng = random.Random(0)
    for count in (1, 2, 3):
        spaced = add_spacing(formula, rng, count)
        assert normalize(spaced) == spaced
        assert without_spacing(spaced) == formula.split()
        assert len(spaced.split()) - len(formula.split()) == min(count, len(spacing_gaps(formula.split())))
        typed = add_typed_spacing(formula, rng)
        assert normalize(typed) == typed
        assert without_spacing(typed) == formula.split()


def test_gaps_keep_arguments_scripts_and_ends_whole():
    tokens = "x ^ { 2 } + \\frac { a } { b } - \\operatorname { l n } y".split()
    allowed = {(tokens[i - 1], tokens[i]) for i in spacing_gaps(tokens)}
    assert allowed == {("}", "+"), ("+", "\\frac"), ("}", "-"), ("-", "\\operatorname"), ("}", "y")}
    # the column spec of an array, the inside of an operator's name, the ends of a group or of the formula
    array = "\\begin{array} { c c } { a + b } & { c } \\\\ \\end{array}".split()
    assert [(array[i - 1], array[i]) for i in spacing_gaps(array)] == [("a", "+"), ("+", "b")]
    # a sized delimiter is two tokens, kept together
    sized = "\\big ( x \\big )".split()
    assert [(sized[i - 1], sized[i]) for i in spacing_gaps(sized)] == [("(", "x"), ("x", "\\big")]
    # a length without braces runs to its unit
    kern = "| \\mkern - 1 . 5 m u | x \\kern 2 p t y".split()
    assert [(kern[i - 1], kern[i]) for i in spacing_gaps(kern)] == [("u", "|"), ("|", "x"), ("t", "y")]
    assert spacing_gaps(["x"]) == []
    assert add_spacing("x", random.Random(0), 3) == "x"


def test_commands_follow_their_weights():
    rng = random.Random(1)
    counts = Counter(token for _ in range(2000) for token in add_spacing("a + b", rng, 1).split() if token != "+")
    counts -= Counter({"a": 2000, "b": 2000})
    assert set(counts) == set(SPACING_WEIGHTS) and set(SPACING_WEIGHTS) <= _SPACING_KEEP
    assert counts.most_common(1)[0][0] == "~" and counts["\\:"] < counts["\\;"] < counts["\\,"]


def test_each_command_shows_as_its_own_gap():
    """Rendered in the benchmark's look, every command widens `a + b` by its own amount, so the image tells them
    apart; the negative thin space narrows it."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    formulas = ["a + b", *(f"a {command} + b" for command in SPACING_WEIGHTS)]
    results = render(formulas, style=lambda i, f: DENG, workers=1)
    assert all(result.image is not None for result in results), [result.error for result in results]
    widths = dict(zip(formulas, (np.asarray(result.image).shape[1] for result in results), strict=True))
    base = widths.pop("a + b")
    assert widths["a \\! + b"] < base
    spaced = sorted(widths[f"a {command} + b"] for command in ("\\,", "\\:", "\\;", "~", "\\quad", "\\qquad"))
    assert base < spaced[0] and len(set(spaced)) == len(spaced)


def runs_of(formula: str) -> list[list[str]]:
    """The spacing commands of `formula`, grouped by the gap they fill."""
    runs, previous = [], None
    for token in formula.split():
        if token in SPACING_WEIGHTS:
            if previous in SPACING_WEIGHTS:
                runs[-1].append(token)
            else:
                runs.append([token])
        previous = token
    return runs


def test_typed_spacing_spaces_as_the_authors_do():
    """Gaps per formula, runs and a formula keeping to one command come at im2latex-100k's rates; scattered spacing
    has no runs and changes command far more often."""
    formula = "a + b = c - d \\times e + f = g + h - i + j = k"  # 20 gaps
    rng = random.Random(2)
    typed = [runs_of(add_typed_spacing(formula, rng)) for _ in range(3000)]
    gaps = Counter(len(runs) for runs in typed)
    assert set(gaps) == set(TYPED_GAPS)
    assert abs(gaps[1] / 3000 - TYPED_GAPS[1]) < 0.04 and abs(gaps[8] / 3000 - TYPED_GAPS[8]) < 0.02
    flat = [run for runs in typed for run in runs]
    assert all(len(set(run)) == 1 and len(run) <= 4 for run in flat)
    tilde = [run for run in flat if run[0] == "~"]
    assert abs(sum(len(run) > 1 for run in tilde) / len(tilde) - TYPED_RUNS["~"]) < 0.04
    assert not any(len(run) > 1 for run in flat if run[0] == "\\:")

    def one_command(formulas):
        several = [{run[0] for run in runs} for runs in formulas if len(runs) >= 2]
        return sum(len(commands) == 1 for commands in several) / len(several)

    scattered = [runs_of(add_spacing(formula, rng, 2)) for _ in range(1000)]
    assert all(len(run) == 1 for runs in scattered for run in runs)
    assert one_command(typed) > 0.4 > 0.3 > one_command(scattered)


def test_has_hand_spacing_looks_for_the_commands_as_tokens():
    assert has_hand_spacing("a \\, b") and has_hand_spacing("a ~ ~ b") and has_hand_spacing("x \\qquad y")
    assert not has_hand_spacing("a + b") and not has_hand_spacing("\\sqrt { x }")
    assert not has_hand_spacing("a \\,b")  # tokens, not characters: "\\,b" is none of the commands
    assert all(has_hand_spacing(add_spacing(FORMULAS[0], random.Random(seed), 1)) for seed in range(5))


def test_without_spacing_drops_exactly_the_commands_as_tokens():
    assert without_spacing("a \\, b ~ ~ c \\quad d \\! e \\: f \\; g \\qquad h") == list("abcdefgh")
    assert without_spacing("a \\,b \\hspace { 1 e m } c") == ["a", "\\,b", "\\hspace", "{", "1", "e", "m", "}", "c"]
    assert without_spacing("\\, ~") == [] and without_spacing("") == []
