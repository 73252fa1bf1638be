r"""Hand spacing for training labels: spacing commands put between a formula's atoms before it is rendered.

im2latex-100k's formulas were typed by hand, with spacing commands wherever their authors liked (``\int f ( x ) \,
d x``, ``a \; , \; b``); the training labels hold about a third as many. A model trained on them learns that a gap
is rarely written, and reads ``\,``, ``\;`` and ``~`` as nothing. `add_spacing` puts such commands at random
places between atoms of a canonical formula, so that the image rendered from the result shows each gap where its
label says, and the model learns to read gaps from the image rather than guess them.

A command goes only where TeX spaces it as written and where it shows: between two tokens of which neither is a
script sign (``^ _ '``), the first takes no argument and the second does not open a group (so no argument is
split from its command), outside the groups that hold no math (an array's column spec, an operator's name, a
length) or a length written without braces (``\kern - 0 . 4 e x``), not at either end of the formula nor beside
``&``, ``\\`` or another spacing command.

`add_typed_spacing` spaces a formula the way those authors type (``--spacing-style typed``): a formula mostly keeps
to one command, some gaps get a run of it (``~ ~ ~``, ``\; \;``), and a few formulas get many gaps, at the rates of
im2latex-100k's training sample.

    python -m data.prepare ... --spacing 0.5    # half the training formulas get 1-3 commands each
    python -m data.prepare ... --spacing 0.5 --spacing-style typed
"""

from __future__ import annotations

import random
import re
from typing import TypeVar

from .normalize import _ARGUMENT_COUNTS, _BEGIN_WITH_ARGUMENT, _SPACING_KEEP

# The spacing commands and their shares among the 1,272 in im2latex-100k's training sample
# (`im2latex-100k/train_sample.txt`, 897 formulas, normalised).
SPACING_WEIGHTS = {"~": 0.38, "\\,": 0.28, "\\;": 0.19, "\\quad": 0.07, "\\qquad": 0.03, "\\!": 0.03, "\\:": 0.02}
# How the sample's 451 spaced formulas are typed, counted by gap (a run such as `~ ~ ~` fills one gap): the number of
# gaps spaced in a formula (8: eight or more), each gap's command (992 gaps), how often a gap's command is typed as a
# run and the run's length (121 runs), and how often a later gap keeps the formula's first command rather than
# drawing afresh (68 % of the later gaps repeat the first: 0.56 + 0.44 x the chance that a fresh draw repeats it).
TYPED_GAPS = {1: 0.54, 2: 0.21, 3: 0.12, 4: 0.04, 5: 0.03, 6: 0.01, 7: 0.01, 8: 0.04}
TYPED_WEIGHTS = {"~": 0.34, "\\,": 0.33, "\\;": 0.16, "\\quad": 0.09, "\\qquad": 0.04, "\\!": 0.03, "\\:": 0.02}
TYPED_RUNS = {"~": 0.21, "\\,": 0.05, "\\;": 0.21, "\\quad": 0.04, "\\qquad": 0.02, "\\!": 0.2, "\\:": 0.0}
TYPED_RUN_LENGTHS = {2: 0.46, 3: 0.30, 4: 0.24}
TYPED_KEEP = 0.56
# Commands followed by a length without braces (`\kern - 0 . 4 e x`): the length runs to its two-letter unit.
_TAKES_LENGTH = {"\\kern", "\\mkern", "\\hskip", "\\mskip", "\\vskip"}
_LENGTH_SIGNS = set("+-.,0123456789")
# Tokens after which a command would become an argument, a script or a modifier of what follows (besides
# `_ARGUMENT_COUNTS`, and the spacing commands, `_SPACING_KEEP`, checked on their own; `\left(` and its kin are
# one token in the canonical form, so a command after one is inside the delimiters).
_TAKES_ARGUMENT = set(_ARGUMENT_COUNTS) | {
    "^", "_", "\\sqrt", "\\operatorname", "\\operatorname*", "\\mathop", "\\mathrel", "\\mathbin", "\\not",
    "\\color", "\\textcolor", "\\boxed", "\\fbox", "\\mbox", "\\limits", "\\nolimits", "\\displaystyle",
    "\\textstyle", "\\scriptstyle", "\\scriptscriptstyle", "\\rule", "\\raisebox", "\\label", "\\tag",
}  # fmt: skip
# Tokens before which a command would separate something from what it belongs to.
_BINDS_LEFT = {"^", "_", "'", "{", "[", "\\limits", "\\nolimits", "&", "\\\\"}
# Groups that hold no math, after these tokens: no spacing command goes inside.
_PROTECTS_GROUP = _BEGIN_WITH_ARGUMENT | {
    "\\operatorname", "\\operatorname*", "\\hspace", "\\vspace", "\\color", "\\textcolor", "\\rule", "\\raisebox",
}  # fmt: skip
_SIZED_DELIMITER = re.compile(r"\\[bB]igg?[lrm]?$")


def spacing_gaps(tokens: list[str]) -> list[int]:
    """The indices ``i`` at which a spacing command may go before ``tokens[i]`` (see the module's rules)."""
    gaps = []
    protected = [False]  # one entry per open group: is it a group that holds no math?
    unit_letters = None  # inside a braceless length: how many letters of its unit have been seen
    for i, token in enumerate(tokens):
        is_letter = len(token) == 1 and token.isalpha()
        if unit_letters is not None and unit_letters < 2 and (token in _LENGTH_SIGNS or is_letter):
            unit_letters += is_letter
            continue  # no gap inside a length
        unit_letters = 0 if token in _TAKES_LENGTH else None
        if i > 0 and not any(protected):
            before = tokens[i - 1]
            if (
                before not in _TAKES_ARGUMENT
                and not _SIZED_DELIMITER.match(before)
                and before not in _SPACING_KEEP
                and before not in ("&", "\\\\", "{")
                and not before.startswith("\\begin{")
                and not token.startswith("\\end{")
                and token not in _BINDS_LEFT
                and token not in _SPACING_KEEP
                and token != "}"
            ):
                gaps.append(i)
        if token == "{":
            protected.append(i > 0 and tokens[i - 1] in _PROTECTS_GROUP)
        elif token == "}" and len(protected) > 1:
            protected.pop()
    return gaps


def add_spacing(formula: str, rng: random.Random, count: int) -> str:
    """`formula` (canonical tokens) with up to `count` spacing commands, drawn by `SPACING_WEIGHTS`, at distinct
    random gaps of `spacing_gaps`; fewer where the formula has fewer gaps, none where it has none."""
    tokens = formula.split()
    gaps = spacing_gaps(tokens)
    chosen = sorted(rng.sample(gaps, min(count, len(gaps))), reverse=True)
    commands = rng.choices(list(SPACING_WEIGHTS), weights=list(SPACING_WEIGHTS.values()), k=len(chosen))
    for gap, command in zip(chosen, commands, strict=True):
        tokens.insert(gap, command)
    return " ".join(tokens)


def has_hand_spacing(formula: str) -> bool:
    """Whether `formula` (canonical tokens) holds a hand spacing command (a key of `SPACING_WEIGHTS`)."""
    return not SPACING_WEIGHTS.keys().isdisjoint(formula.split())


def without_spacing(formula: str) -> list[str]:
    """The tokens of `formula` (canonical tokens) but its hand spacing commands (the keys of `SPACING_WEIGHTS`)."""
    return [token for token in formula.split() if token not in SPACING_WEIGHTS]


T = TypeVar("T")


def _draw(rng: random.Random, weights: dict[T, float]) -> T:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def add_typed_spacing(formula: str, rng: random.Random) -> str:
    """`formula` (canonical tokens) spaced as im2latex-100k's authors type: `TYPED_GAPS` distinct gaps of
    `spacing_gaps` (fewer where the formula has fewer), the first command drawn by `TYPED_WEIGHTS` and each later one
    the same with probability `TYPED_KEEP`, else drawn afresh; a gap's command becomes a run by `TYPED_RUNS`."""
    tokens = formula.split()
    gaps = spacing_gaps(tokens)
    chosen = rng.sample(gaps, min(_draw(rng, TYPED_GAPS), len(gaps)))
    runs = []
    for _ in chosen:
        keep = runs and rng.random() < TYPED_KEEP
        command = runs[0][0] if keep else _draw(rng, TYPED_WEIGHTS)
        runs.append([command] * (_draw(rng, TYPED_RUN_LENGTHS) if rng.random() < TYPED_RUNS[command] else 1))
    for gap, run in sorted(zip(chosen, runs, strict=True), reverse=True):
        tokens[gap:gap] = run
    return " ".join(tokens)


def add_scattered_spacing(formula: str, rng: random.Random) -> str:
    """`add_spacing` with 1-3 commands."""
    return add_spacing(formula, rng, rng.randint(1, 3))


# `data.prepare --spacing-style`: how a chosen formula is spaced.
SPACING_STYLES = {"scattered": add_scattered_spacing, "typed": add_typed_spacing}
