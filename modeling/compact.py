r"""Turn the canonical token form into compact LaTeX as people write it, rendering the very same picture.

The model writes im2latex-100k tokens (``\frac { a } { b }``, ``\operatorname { s i n } x ^ { 2 }``);
:func:`to_compact` writes ``\frac{a}{b}``, ``\sin x^2``. It is a pure string function (no TeX, no
``data/``), so the server can use it. Every rule keeps the rendering pixel-identical under the project's
renderer (``tests/test_compact.py`` renders both forms of real formulas and compares the pixels):

* Spaces in math mode go: TeX ignores them (``1 2 3`` -> ``123``, ``\mathrm { m a x }`` -> ``\mathrm{max}``).
  A space stays where it is part of the meaning: after a control word before a letter or digit
  (``\alpha x``, where ``\alphax`` would be another command) and in control space ``\ ``.
* In the arguments of text-mode commands (``\textrm``, ``\mbox``, ``\makebox`` ...) a space would be visible.
  The token form spells words out (``\textrm { i f ~ x }``, ``~`` being the real space) and means
  ``\textrm{if~x}``, which is how the renderer typesets it (:func:`spell_text_mode`): the spaces go, except
  between a control word and a letter (``\bf a``).
  Verbatim (whitespace runs as one space): ``tabular`` environments and the characters after ``\vrule``, ``\hskip``
  ... (in ``\vrule h e i g h t`` the spaced letters are no keyword; in ``\vrule height`` they would be).
* A space between ``\\`` or ``\begin{..}`` and a following ``[`` or ``*`` is kept when the input had it:
  amsmath's ``matrix``/``aligned`` look for ``\\[2pt]``, ``\\*`` and ``\begin{aligned}[t]`` without
  skipping spaces, so there ``\\ [a]`` is content and ``\\[a]`` an optional argument.
* ``\operatorname { s i n }`` -> ``\sin`` and ``\operatorname* { l i m }`` -> ``\lim``, only for the operators
  that amsmath defines as exactly that ``\qopname`` (``_OPERATORS``, ``_LIMIT_OPERATORS``); never
  ``\operatorname { l i m }`` -> ``\lim`` (limits placement differs) nor ``\mathrm { m a x }`` -> ``\max``
  (operator spacing differs).
* Script braces around one safe token go: ``x ^ { 2 }`` -> ``x^2``, ``f ^ { \prime }`` -> ``f^\prime``,
  ``x _ { \alpha }`` -> ``x_\alpha`` (TeX treats a one-atom script group as the atom itself). Safe means a
  letter, digit, ``+``, ``-``, ``*`` or a symbol that is one math character (``_SCRIPT_SYMBOLS``); a macro
  such as ``\cdots`` or ``\neq`` keeps its braces (``x^\cdots`` does not compile, ``x^\neq`` looks
  different). An unbraced script is followed by a space before a letter or digit (``x^2 y``, not ``x^2y``).
* All other braces stay: ``\frac{a}{b}``, ``\sqrt{2}``, ``{\bf M}``, array cells ``{a} & {b}\\`` (a group
  is an atom of its own, so dropping one can change spacing).
* For reading only: spaces around ``&`` and after ``\\``.

Errors: unbalanced braces raise :class:`ValueError` naming the formula. The function is idempotent.
"""

from __future__ import annotations

import re

__all__ = ["compact_or_tokens", "spell_text_mode", "to_compact"]

_TOKEN_RE = re.compile(r"\\(?:begin|end)\s*\{\s*[A-Za-z]+\*?\s*\}|\\[A-Za-z]+\*?|\\.|\\$|%[^\n]*|\s+|.", re.S)
_CONTROL_WORD_END = re.compile(r"\\[A-Za-z]+$")
# Text-mode commands and how many mandatory arguments they take; optional [..] arguments come along.
_TEXT_COMMANDS = {
    "\\text": 1, "\\textrm": 1, "\\textup": 1, "\\textnormal": 1, "\\textit": 1, "\\textbf": 1, "\\textsf": 1,
    "\\texttt": 1, "\\textsl": 1, "\\textsc": 1, "\\emph": 1, "\\mbox": 1, "\\hbox": 1, "\\fbox": 1,
    "\\makebox": 1, "\\framebox": 1, "\\parbox": 2, "\\raisebox": 2, "\\rlap": 1, "\\llap": 1,
    "\\textcircled": 1, "\\symbol": 1, "\\d": 1, "\\b": 1, "\\c": 1,
}  # fmt: skip
_TEXT_ENVIRONMENTS = ("tabular", "tabular*")  # cells are in text mode
# Primitives that scan keywords (height, plus ...): spaced ``h e i g h t`` is no keyword, so the
# run of characters after them is copied verbatim.
_KEYWORD_PRIMITIVES = {"\\vrule", "\\hrule", "\\hskip", "\\vskip", "\\mskip"}
_KEYWORD_RUN = re.compile(r"[A-Za-z0-9.,+\-~ ]")
# amsopn.sty: \sin is \qopname\relax o{sin}, like \operatorname{sin}; \lim is \qopname\relax m{lim}.
_OPERATORS = {
    "arccos", "arcsin", "arctan", "arg", "cos", "cosh", "cot", "coth", "csc", "deg", "dim", "exp", "hom",
    "ker", "lg", "ln", "log", "sec", "sin", "sinh", "tan", "tanh",
}  # fmt: skip
_LIMIT_OPERATORS = {
    "det": "det", "gcd": "gcd", "inf": "inf", "lim": "lim", "max": "max", "min": "min", "Pr": "Pr",
    "sup": "sup", "lim\\,inf": "liminf", "lim\\,sup": "limsup", "inj\\,lim": "injlim", "proj\\,lim": "projlim",
}  # fmt: skip
# Symbols that are one math character (\mathchardef), so ``x^\alpha`` is ``x^{\alpha}``.
_SCRIPT_SYMBOLS = {
    "\\" + name
    for name in (
        "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi pi varpi "
        "rho varrho sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma "
        "Upsilon Phi Psi Omega prime infty dagger ddagger ast star circ bullet pm mp ell partial nabla imath "
        "jmath wp aleph emptyset top bot perp natural sharp flat times cdot"
    ).split()
}
_SCRIPT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-*")
_PEEKERS_SPACE_BEFORE = ("[", "*")


class _Verbatim(str):
    """Text-mode material, left alone by the math-mode rules."""


class _Script(str):
    """A script argument whose braces were dropped (``2`` in ``x^2``)."""


def _tokenize(latex: str) -> list[str]:
    """Split LaTeX into tokens; whitespace runs become ``" "``, control space ``"\\ "``, comments vanish."""
    tokens: list[str] = []
    for match in _TOKEN_RE.finditer(latex):
        token = match.group(0)
        if token.startswith("%"):
            continue
        if token.isspace():
            token = " "
        elif token.startswith("\\begin") or token.startswith("\\end"):
            token = re.sub(r"\s+", "", token)
        elif token == "\\" or (token.startswith("\\") and token[1:].isspace()):
            token = "\\ "  # control space, however it was typed
        if token == " " and tokens and tokens[-1] == " ":
            continue
        tokens.append(token)
    return tokens


def _skip_space(tokens: list[str], i: int) -> int:
    while i < len(tokens) and tokens[i] == " ":
        i += 1
    return i


def _end_of_group(tokens: list[str], i: int, latex: str) -> int:
    """Index after the group opening at ``tokens[i] == "{"``."""
    depth = 0
    for j in range(i, len(tokens)):
        depth += {"{": 1, "}": -1}.get(tokens[j], 0)
        if depth == 0:
            return j + 1
    raise ValueError(f"unbalanced '{{' in formula {latex!r}")


def _end_of_environment(tokens: list[str], i: int, latex: str) -> int:
    """Index after the ``\\end{..}`` matching the ``\\begin{..}`` at ``tokens[i]``."""
    begin, end = tokens[i], "\\end" + tokens[i][len("\\begin") :]
    depth = 0
    for j in range(i, len(tokens)):
        depth += (tokens[j] == begin) - (tokens[j] == end)
        if depth == 0:
            return j + 1
    raise ValueError(f"{begin} without {end} in formula {latex!r}")


def _take_text_args(tokens: list[str], i: int, count: int, latex: str) -> tuple[_Verbatim, int]:
    """Collect a text command's arguments (``count`` mandatory, optional ``[..]`` between) verbatim."""
    start = i = _skip_space(tokens, i)
    end = i
    while count and i < len(tokens):
        if tokens[i] == "[" and "]" in tokens[i:]:
            i = tokens.index("]", i) + 1
        elif tokens[i] == "{":
            i = _end_of_group(tokens, i, latex)
            count -= 1
        elif tokens[i] == "}":
            break
        else:
            i += 1
            count -= 1
        end = i
        i = _skip_space(tokens, i)
    return _Verbatim(_join_text(tokens[start:end])), end


def _join_text(tokens: list[str]) -> str:
    """Text-mode tokens written as words. The token form spaces out every character (``a n d``) and writes a real
    space as ``~``, so its spaces go, except between a control word and a letter (``\\bf a``)."""
    pieces = []
    for k, token in enumerate(tokens):
        if token != " ":
            pieces.append(token)
        elif 0 < k < len(tokens) - 1 and _CONTROL_WORD_END.search(tokens[k - 1]) and tokens[k + 1][0].isalpha():
            pieces.append(" ")
    return "".join(pieces)


def spell_text_mode(latex: str) -> str:
    """Join the spaced-out characters of the text-mode arguments of a token-form formula into words.

    This is how the token form reads (im2latex-100k splits ``\\textrm{and}`` into ``\\textrm { a n d }``;
    typeset as it stands, text mode would show the spaces). The renderer applies it to token-form formulas.

    Args:
        latex: e.g. ``\\textrm { i f ~ x } > 0``.

    Returns:
        e.g. ``\\textrm {if~x} > 0``: only the text-mode arguments change.

    Raises:
        ValueError: unbalanced braces.
    """
    tokens = _tokenize(latex)
    pieces: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        pieces.append(token)
        if token in _TEXT_COMMANDS:
            argument, i = _take_text_args(tokens, i, _TEXT_COMMANDS[token], latex)
            pieces.append(" " + argument if argument else "")
    return "".join(pieces)


def _parse(tokens: list[str], latex: str) -> list:
    """Nest brace groups into lists; text-mode arguments become :class:`_Verbatim` strings.

    Math-mode whitespace is dropped, except before ``[``/``*`` right after ``\\\\`` or ``\\begin{..}``.
    """
    root: list = []
    stack = [root]
    previous = ""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == " ":
            if previous == "\\\\" or previous.startswith("\\begin{"):
                if i < len(tokens) and tokens[i] in _PEEKERS_SPACE_BEFORE:
                    stack[-1].append(" ")
            continue
        previous = token
        if token == "{":
            stack[-1].append([])
            stack.append(stack[-1][-1])
        elif token == "}":
            if len(stack) == 1:
                raise ValueError(f"unbalanced '}}' in formula {latex!r}")
            stack.pop()
        elif token[7:-1] in _TEXT_ENVIRONMENTS and token.startswith("\\begin{"):
            end = _end_of_environment(tokens, i - 1, latex)
            stack[-1].append(_Verbatim("".join(tokens[i - 1 : end])))
            i, previous = end, "}"
        elif token in _KEYWORD_PRIMITIVES and i < len(tokens) and tokens[i] == " ":
            end = i
            while end < len(tokens) and _KEYWORD_RUN.fullmatch(tokens[end]):
                end += 1
            run = "".join(tokens[i:end]).strip()
            stack[-1] += [token, _Verbatim(" " + run)] if run else [token]
            i = end
        elif token in _TEXT_COMMANDS:
            argument, i = _take_text_args(tokens, i, _TEXT_COMMANDS[token], latex)
            stack[-1] += [token, argument] if argument else [token]
            previous = "}"
        else:
            stack[-1].append(token)
    if len(stack) != 1:
        raise ValueError(f"unbalanced '{{' in formula {latex!r}")
    return root


def _simplify(items: list) -> list:
    """Merge operator names into their commands and drop braces around one-token scripts."""
    out: list = []
    i = 0
    while i < len(items):
        item = items[i]
        i += 1
        if isinstance(item, list):
            group = _simplify(item)
            previous = out[-1] if out else None
            if previous in ("^", "_") and len(group) == 1 and _is_script_token(group[0]):
                out.append(_Script(group[0]))
            elif previous in ("\\operatorname", "\\operatorname*") and _operator(previous, group):
                out[-1] = _operator(previous, group)
            else:
                out.append(group)
        elif out and out[-1] in ("^", "_") and _is_script_token(item):
            out.append(_Script(item))  # already unbraced (``x^2``): same spacing rule as a dropped brace
        else:
            out.append(item)
    return out


def _is_script_token(token: object) -> bool:
    return isinstance(token, str) and (token in _SCRIPT_SYMBOLS or token in _SCRIPT_CHARS)


def _operator(command: str, group: list) -> str | None:
    """``\\sin`` for ``\\operatorname`` + ``{sin}``, ``\\lim`` for ``\\operatorname*`` + ``{lim}``, else None."""
    if not all(isinstance(t, str) and not isinstance(t, _Verbatim) for t in group):
        return None
    name = "".join(group)
    if command == "\\operatorname" and name in _OPERATORS:
        return "\\" + name
    if command == "\\operatorname*" and name in _LIMIT_OPERATORS:
        return "\\" + _LIMIT_OPERATORS[name]
    return None


def _flatten(items: list) -> list[str]:
    out: list[str] = []
    for item in items:
        if isinstance(item, list):
            out += ["{", *_flatten(item), "}"]
        else:
            out.append(item)
    return out


def _needs_space(left: str, right: str) -> bool:
    """A space between two written tokens: required after a control word, or for reading."""
    if right == " " or left == " ":
        return False
    if right[:1].isascii() and right[:1].isalnum() and (_CONTROL_WORD_END.search(left) or isinstance(left, _Script)):
        return True
    if left == "\\\\":
        return right not in _PEEKERS_SPACE_BEFORE  # a space there means something: kept only if it was there
    return "&" in (left, right)


def to_compact(latex: str) -> str:
    """Write a formula in the canonical token form (or any LaTeX math) as compact, render-identical LaTeX.

    Args:
        latex: e.g. ``\\operatorname { s i n } ( x ) ^ { 2 } + \\frac { 1 } { 2 }``.

    Returns:
        e.g. ``\\sin(x)^2+\\frac{1}{2}`` (``""`` for an empty formula).

    Raises:
        ValueError: unbalanced braces.
    """
    tokens = _flatten(_simplify(_parse(_tokenize(latex), latex)))
    pieces: list[str] = []
    for token in tokens:
        if pieces and _needs_space(pieces[-1], token):
            pieces.append(" ")
        pieces.append(token)
    return "".join(pieces)


def compact_or_tokens(latex: str) -> str:
    """The compact form, or the token form itself when the output cannot be compacted (unbalanced braces: an
    unfinished reading can end mid-group)."""
    try:
        return to_compact(latex)
    except ValueError:
        return latex
