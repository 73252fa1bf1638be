r"""Short formulas that show every symbol of a vocabulary alone and in a few small contexts.

People screenshot a single symbol or a short inline snippet as often as a long equation, and a model that saw
``\aleph`` only deep inside long formulas reads it badly on its own. :func:`coverage_formulas` takes the training
formulas (canonical tokens, :mod:`data.normalize`), and for every command (a token starting with ``\``) and every
single-character token writes formulas in which it appears alone and in small contexts (``x ^ { U }``,
``U _ { i }``, ``\frac { U } { 2 }``, ...).

``U``, the token's unit, is how the data uses it, chosen per token class from its occurrences: the most frequent
short unit wins.

* a command followed by brace groups in most of its occurrences takes that many arguments, with the data's
  arguments (``\frac { 1 } { 2 }``, ``\mathbf { x }``), an optional ``[ .. ]`` kept (``\sqrt [ 3 ] { x }``);
  ``\big`` and its kin take the next token (``\Big (``);
* an opener runs to its closer (``\begin{matrix} .. \end{matrix}``, ``\left( .. \right)``); closers and inner
  tokens (``\end{..}``, ``\right..``, ``\middle..``, ``&``, ``\\``) take the innermost such span around them;
* scripts and primes bring the atom before them (``x ^ { 2 }``, ``f '``), as do ``\limits`` / ``\nolimits``;
* switches that start a group (``{ \bf x }``, ``{ \displaystyle .. }``) and infix fractions (``{ a \atop b }``)
  take the group around them;
* anything else stands alone (``\alpha``, ``+``). ``{`` and ``}`` are structure and get no formulas of their own.

Deterministic: the output depends only on the formulas, ``per_token`` and ``seed``.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from .normalize import _SPACING_KEEP

__all__ = ["vocabulary", "coverage_formulas"]

TEMPLATES = (
    "x ^ {{ {u} }}",
    "{u} _ {{ i }}",
    "\\frac {{ {u} }} {{ 2 }}",
    "a = {u}",
    "( {u} )",
    "\\sqrt {{ {u} }}",
    "{u} + 1",
    "2 {u} b",
    "f ( {u} )",
)
# Spacing makes no ink of its own: it is shown between two symbols only.
BETWEEN_TEMPLATES = ("a {u} b", "x {u} y", "2 {u} n", "( a {u} b )", "f {u} g", "A {u} B")
MAX_UNIT_TOKENS = 12  # a unit longer than this is not "short" (environments may run to MAX_SPAN_TOKENS)
MAX_SPAN_TOKENS = 40
_DELIMITER_SIZE = re.compile(r"\\[bB]igg?[lrm]?")
_POSTFIX = {"^", "_", "'", "\\limits", "\\nolimits"}
_SPACING = _SPACING_KEEP | {"\\"}  # "\\ " (control space) is the token "\\" once split on spaces
_INFIX_GROUP = {"\\atop", "\\over", "\\choose", "\\brace", "\\brack", "\\above"}


def vocabulary(formulas: Iterable[str]) -> Counter:
    """Occurrences of each command and single-character token (``{`` and ``}`` excluded) in `formulas`."""
    counts: Counter = Counter()
    for formula in formulas:
        counts.update(t for t in formula.split() if (t.startswith("\\") or len(t) == 1) and t not in "{}")
    return counts


def _group_end(tokens: list[str], start: int) -> int:
    """The index after the balanced ``{ .. }`` (or ``[ .. ]``) group opening at `start`, or -1."""
    opener = tokens[start]
    closer = "}" if opener == "{" else "]"
    depth = 0
    for k in range(start, len(tokens)):
        depth += (tokens[k] == opener) - (tokens[k] == closer)
        if depth == 0:
            return k + 1
    return -1


def _spans(tokens: list[str]) -> list[tuple[int, int]]:
    """Every ``\\begin .. \\end`` and ``\\left .. \\right`` span (start, end exclusive) and every brace group."""
    spans, stack = [], []
    for k, token in enumerate(tokens):
        if token.startswith(("\\begin{", "\\left")) or token == "{":
            stack.append(k)
        elif (token.startswith(("\\end{", "\\right")) or token == "}") and stack:
            start = stack.pop()
            spans.append((start, k + 1))
    return spans


def _enclosing(spans: list[tuple[int, int]], k: int) -> tuple[int, int] | None:
    """The innermost of `spans` around position `k` (a span's own closer counts as inside)."""
    return min(((s, e) for s, e in spans if s < k < e), key=lambda span: span[1] - span[0], default=None)


def _arguments(tokens: list[str], k: int, count: int) -> int:
    """The index after `count` brace groups (and an optional ``[ .. ]`` first) following position `k`."""
    end = k + 1
    if end < len(tokens) and tokens[end] == "[" and count:
        close = _group_end(tokens, end)
        end = close if close > 0 else end
    for _ in range(count):
        if end >= len(tokens) or tokens[end] != "{":
            break
        end = _group_end(tokens, end)
        if end < 0:
            return -1
    return end


def _units(formulas: Iterable[str], vocab: Counter) -> dict[str, Counter]:
    """For each vocabulary token, the units (token strings) it forms in the data, counted."""
    sentences = [formula.split() for formula in formulas]
    places: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for n, tokens in enumerate(sentences):
        for k, token in enumerate(tokens):
            if token in vocab:
                places[token].append((n, k))
    kinds = {}
    for token, where in places.items():
        # A command followed by a group in a third of its uses takes arguments (\\widehat x is also seen)
        groups = Counter(_count_groups(sentences[n], k) for n, k in where) if token.startswith("\\") else Counter()
        arity = 0
        if sum(count for number, count in groups.items() if number) * 3 >= len(where):
            arity = max((number for number in groups if number), key=lambda number: groups[number])
        starts_group = sum(
            k > 0 and sentences[n][k - 1] == "{" and sentences[n][k + 1 : k + 2] != ["}"] for n, k in where
        )
        kinds[token] = (arity, not arity and len(token) > 2 and starts_group * 2 > len(where))
    units: dict[str, Counter] = defaultdict(Counter)
    for tokens in sentences:
        spans = None
        for k, token in enumerate(tokens):
            if token not in kinds:
                continue
            if spans is None:
                spans = _spans(tokens)
            span = _unit(tokens, spans, k, *kinds[token])
            if span is not None:
                units[token][" ".join(tokens[span[0] : span[1]])] += 1
    return units


def _starts_group(tokens: list[str], k: int) -> bool:
    """Whether the token at `k` opens a group that holds more than it (``{ \\bf x }``, not ``{ \\alpha }``)."""
    return 0 < k and tokens[k - 1] == "{" and tokens[k + 1 : k + 2] != ["}"]


def _count_groups(tokens: list[str], k: int) -> int:
    count, end = 0, k + 1
    while end < len(tokens) and tokens[end] == "{" and count < 3:
        end = _group_end(tokens, end)
        if end < 0:
            break
        count += 1
    return count


def _unit(tokens: list[str], spans: list[tuple[int, int]], k: int, arity: int, switch: bool) -> tuple[int, int] | None:
    """The span (start, end exclusive) of the unit that the token at `k` forms, or None if it has none."""
    token = tokens[k]
    if token.startswith(("\\begin{", "\\left")):
        span = next(((s, e) for s, e in spans if s == k), None)
    elif token.startswith(("\\end{", "\\right", "\\middle")) or token in ("&", "\\\\"):
        span = _enclosing([s for s in spans if tokens[s[0]] != "{"], k)
    elif switch or token in _INFIX_GROUP:
        span = _enclosing([s for s in spans if tokens[s[0]] == "{"], k)
    elif token in _POSTFIX:
        if k == 0:
            return None
        start = k - 1
        if tokens[start] == "}":
            start = next((s for s, e in spans if e == k and tokens[s] == "{"), k - 1)
            start -= start > 0 and tokens[start - 1].startswith("\\")  # the command that the group belongs to
        end = _arguments(tokens, k, 1) if token in ("^", "_") else k + 1
        end = k + 2 if token in ("^", "_") and end == k + 1 else end  # unbraced script: x ^ 2
        span = (start, end)
    elif _DELIMITER_SIZE.fullmatch(token):
        span = (k, k + 2)
    else:
        span = (k, _arguments(tokens, k, arity))
    if span is None or span[1] < 0 or span[1] > len(tokens):
        return None
    limit = MAX_SPAN_TOKENS if token.startswith(("\\begin{", "\\end{")) or token in ("&", "\\\\") else MAX_UNIT_TOKENS
    return span if span[1] - span[0] <= max(limit, arity * 4 + 1) else None


def coverage_formulas(
    formulas: list[str], per_token: int = 5, seed: int = 0, exclude: set[str] | None = None
) -> list[str]:
    """Formulas in which every command and single-character token of `formulas` appears, alone and in context.

    Args:
        formulas: training formulas in canonical token form; their tokens are the vocabulary to cover.
        per_token: formulas per token: its unit alone, then `per_token - 1` small contexts.
        seed: picks the contexts.
        exclude: formulas (compared with all whitespace removed) that must not be produced, e.g. benchmark ones.

    Returns:
        Distinct formulas, sorted by token then position, at most `per_token` per vocabulary token (fewer when a
        token has no short unit in the data or its contexts are excluded).
    """
    if per_token < 0:
        raise ValueError(f"per_token must be >= 0, got {per_token}")
    if per_token == 0:
        return []
    vocab = vocabulary(formulas)
    units = _units(formulas, vocab)
    blocked = {"".join(f.split()) for f in exclude or ()}
    produced: list[str] = []
    for token in sorted(units):
        rng = random.Random(f"{seed}\0{token}")
        best = [unit for unit, _ in sorted(units[token].items(), key=lambda item: (-item[1], len(item[0])))[:3]]
        if token in _SPACING:
            head, rest = [], [template.format(u=u) for u in best for template in BETWEEN_TEMPLATES]
        else:
            head, rest = best[:1], [template.format(u=best[0]) for template in TEMPLATES]
            rest += best[1:] + [template.format(u=u) for u in best[1:] for template in TEMPLATES]
        rng.shuffle(rest)
        chosen = []
        for formula in head + rest:
            key = "".join(formula.split())
            if key not in blocked:
                blocked.add(key)
                chosen.append(formula)
            if len(chosen) == per_token:
                break
        produced += chosen
    return produced
