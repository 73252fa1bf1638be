r"""Turn raw LaTeX math into the one canonical token form: im2latex-100k's space-separated tokens.

The target is the convention of the im2latex-100k lists (Deng et al., KaTeX-normalised), e.g.
``\frac { a } { b }``, ``\mathrm { m a x }``, ``\operatorname { s i n }``, ``\left( x \right)``.

Tokenisation
    A control word ``\name`` (letters; ``\operatorname*``, ``\hspace*``, ``\vspace*``, ``\tag*`` keep their
    star) is one token; ``\`` plus one non-letter (``\,``, ``\{``, ``\\``, control space) is one token;
    every other character is its own token, so ``\mathrm{max}`` becomes ``\mathrm { m a x }`` and ``12``
    becomes ``1 2``. ``\begin{name}`` / ``\end{name}`` are one token each. ``\left`` / ``\right`` /
    ``\middle`` are glued to their delimiter (``\left(``, ``\right\}``, ``\left.``). Spaces are dropped,
    except inside text-mode arguments (``\text``, ``\mbox``, ...) where a run of spaces is visible and becomes
    ``~``, as control space does (see Merges).
    ``%`` starts a comment up to the end of the line.

Merges (only forms that render identically under our preamble, which loads amsmath and amssymb)
    * Aliases map to the form most frequent in im2latex-100k (``_ALIASES``): ``\to``->``\rightarrow``,
      ``\le``->``\leq``, ``\ge``->``\geq``, ``\ne``->``\neq``, ``\dag``->``\dagger``, ``\vert``->``|``,
      ``\Vert``->``\|``, ``\lbrack``->``[``, ``\lbrace``->``\{``, ``\land``->``\wedge``, ``\sp``->``^``,
      ``\sb``->``_``, ``\text``->``\textrm``, ``\>``->``\:``, ``\thinspace``->``\,`` ... and inside
      ``\left``/``\right``: ``<``->``\langle``, ``\lvert``->``|``.
    * ``\sin`` etc. -> ``\operatorname { s i n }``; ``\lim``, ``\max``, ``\det`` ... ->
      ``\operatorname* { l i m }`` (amsmath defines them exactly so).
    * ``a \over b`` -> ``\frac { a } { b }``, ``\choose`` -> ``\binom``; ``\dfrac`` -> ``{ \displaystyle
      \frac .. }``, ``\tfrac`` -> ``{ \textstyle \frac .. }`` (their amsmath definitions);
      LaTeX2e's old font switches become the commands it defines them as, over the rest of their group (or up to the
      ``\right``, ``\middle``, ``&``, ``\\`` or ``\end`` that ends their implicit group): ``{\cal D}`` ->
      ``\mathcal { D }``, ``{\bf x}`` -> ``\mathbf { x }``, ``{\rm ab}`` -> ``\mathrm { a b }``, likewise
      ``\it``, ``\sf``, ``\tt`` (math mode only: in a text-mode argument they are text switches).
    * Braces around one ordinary atom are dropped (``_drop_redundant_groups``): ``{ x }`` -> ``x``,
      ``{ \alpha }`` -> ``\alpha``, ``{ \tilde { x } }`` -> ``\tilde { x }``, ``{ \sqrt { 2 } }`` ->
      ``\sqrt { 2 }``, ``{ \mathcal { D } } _ { i }`` -> ``\mathcal { D } _ { i }`` (LaTeX2e writes a math
      alphabet as a group itself), ``{ \frac { 1 } { 2 } } ^ { n }`` -> ``\frac { 1 } { 2 } ^ { n }`` (and a
      fraction: amsmath's ``\frac`` and ``\binom`` are groups; ``{ a \over b }`` is the same group). Kept where
      TeX renders the two differently or may, or where the group may be an argument: ``{ x } ^ { 2 }``,
      ``{ \tilde { x } } _ { 1 }``, ``{ \sqrt { 2 } } ^ { 2 }`` (not shown to render the same), ``{ }``,
      ``{ , }``, a group after another group or after a command not known to take no argument.
    * ``\ast`` -> ``*`` (math mode's ``*`` is ``\ast``); control space -> ``~`` (both are an interword space).
    * ``pmatrix``/``bmatrix``/``Bmatrix``/``vmatrix``/``Vmatrix`` -> ``\left( \begin{matrix} .. \end{matrix}
      \right)`` and so on (amsmath's definition). In every tabular environment each cell is braced and every
      row ends with ``\\``, as im2latex writes arrays.
    * Not merged, because they do not render identically in general: ``\left(`` vs ``(`` (``\left`` sizes to
      its content), ``\dots`` vs ``\ldots``/``\cdots``, ``\cdot`` vs ``\cdotp``, ``\iff`` vs
      ``\Longleftrightarrow``, ``\mbox`` vs ``\textrm``, ``\bar`` vs ``\overline``, ``\mathrm`` vs
      ``\operatorname``.
    * Single-token arguments are braced, and primes written as superscripts, as im2latex-100k writes 99.8 % of
      script arguments, 98 % of accent arguments and 97 % of primes: ``x ^ 2`` -> ``x ^ { 2 }``,
      ``\frac 1 2`` -> ``\frac { 1 } { 2 }``, ``\bar K`` -> ``\bar { K }``, ``x ' '`` ->
      ``x ^ { \prime \prime }`` (``_brace_arguments``; TeX renders both forms the same). Not in text-mode
      arguments, where ``'`` is an apostrophe.
    * A subscript goes before a superscript on the same atom: ``x ^ { a } _ { b }`` -> ``x _ { b } ^ { a }``,
      ``x ' _ 1`` -> ``x _ { 1 } ^ { \prime }`` (TeX attaches both to the atom, in either order). im2markup's
      normaliser writes them so (``groupTypes.supsub`` in harvardnlp/im2markup's
      ``scripts/preprocessing/preprocess_latex.js``), and so do 6,476 of the 6,480 im2latex-100k validation and test
      lines that have both.

Spacing (a total rule: every spacing command is in exactly one of the tables below; nothing else is spacing)
    * kept as written (``_SPACING_KEEP``): ``\,`` ``\:`` ``\;`` ``\!`` ``\quad`` ``\qquad`` ``~``
      ``\enspace`` ``\enskip`` ``\hspace{..}`` ``\vspace{..}`` ``\kern`` ``\mkern`` ``\hskip``
      ``\mskip`` ``\mspace`` ``\hfill`` ``\hfil`` ``\hss`` ``\smallskip`` ``\medskip`` ``\bigskip``
      ``\vskip`` ``\negmedspace`` ``\negthickspace`` ``\phantom`` ``\hphantom`` ``\vphantom`` ``\strut``
      ``\mathstrut`` ``\/``;
    * aliased (``_SPACING_ALIASES``): ``\>`` ``\medspace``->``\:``, ``\thinspace``->``\,``,
      ``\thickspace``->``\;``, ``\negthinspace``->``\!``, ``\hspace*``->``\hspace``,
      ``\vspace*``->``\vspace``, ``\nobreakspace``, ``\space`` and control space->``~``;
    * dropped, invisible in a single formula (``_DROP``): ``\nonumber`` ``\notag`` ``\allowbreak``
      ``\nobreak`` ``\nolinebreak`` ``\linebreak`` ``\pagebreak`` ``\displaybreak`` ``\break``
      ``\newline`` ``\noindent`` ``\relax``; with their argument: ``\label{..}`` ``\tag{..}`` ``\tag*{..}``.

Wrappers: outer ``$``, ``$$``, ``\[ \]``, ``\( \)`` and ``equation``/``equation*``/``displaymath``/``math``
environments are stripped; ``align``/``flalign`` -> ``aligned``, ``alignat`` -> ``alignedat``, ``gather`` /
``multline`` -> ``gathered``, ``eqnarray`` -> ``array { r c l }`` (as the raw lists were prepared).

Errors: :func:`normalize` raises :class:`LatexNormalizationError` (a ``ValueError``) naming the formula for
unbalanced braces, ``\begin``/``\end`` mismatches, ``\left`` without a delimiter or unbalanced
``\left``/``\right``. An empty or all-comment formula normalises to ``""``.

Invariants (tests/test_normalize.py): ``normalize`` is idempotent, and leaves an im2latex-100k validation or
test line unchanged except for these documented exceptions (30.8% of lines: 5,526 of 17,919): lines with an old
font switch, a redundant group, ``\ast`` or control space (merged above), lines with a single-token argument or
a prime that gets braced (about 4%), lines with a superscript before a subscript (4), lines using a non-canonical
alias above (``\to``, ``\le``, ``\vert``, ``\dag``, ``\sp``, ``\left<`` ...), lines with ``\nonumber``/``\label``
(dropped), and lines with KaTeX artefacts that are not LaTeX tokens (``--``, ``---``, ``[object Object]`` from a
broken ``\sqrt[n]``, ``ule`` from a mangled ``\rule``, ``cm``).
"""

from __future__ import annotations

import re

__all__ = ["LatexNormalizationError", "canonical", "normalize", "tokenize", "detokenize", "is_canonical"]


class LatexNormalizationError(ValueError):
    """A formula that cannot be normalised (unbalanced braces or environments)."""


_STAR_COMMANDS = {"\\operatorname", "\\hspace", "\\vspace", "\\tag"}
_TOKEN_RE = re.compile(r"\\(begin|end)\s*\{\s*([A-Za-z]+\*?)\s*\}|\\[A-Za-z]+|\\.|\\$|%[^\n]*|\s+|.", re.S)
_TEXT_COMMANDS = {
    "\\text", "\\textrm", "\\textup", "\\textnormal", "\\textit", "\\textbf", "\\textsf", "\\texttt",
    "\\textsl", "\\emph", "\\mbox", "\\hbox", "\\fbox",
}  # fmt: skip
_SPACING_KEEP = {
    "\\,", "\\:", "\\;", "\\!", "\\quad", "\\qquad", "~", "\\enspace", "\\enskip", "\\hspace",
    "\\vspace", "\\kern", "\\mkern", "\\hskip", "\\mskip", "\\mspace", "\\hfill", "\\hfil", "\\hss",
    "\\smallskip", "\\medskip", "\\bigskip", "\\vskip", "\\negmedspace", "\\negthickspace", "\\phantom",
    "\\hphantom", "\\vphantom", "\\strut", "\\mathstrut", "\\/",
}  # fmt: skip
_SPACING_ALIASES = {
    "\\>": "\\:", "\\medspace": "\\:", "\\thinspace": "\\,", "\\thickspace": "\\;", "\\negthinspace": "\\!",
    "\\hspace*": "\\hspace", "\\vspace*": "\\vspace", "\\nobreakspace": "~", "\\space": "~", "\\ ": "~",
}  # fmt: skip
_DROP = {
    "\\nonumber", "\\notag", "\\allowbreak", "\\nobreak", "\\nolinebreak", "\\linebreak", "\\pagebreak",
    "\\displaybreak", "\\break", "\\newline", "\\noindent", "\\relax",
}  # fmt: skip
_DROP_WITH_ARG = {"\\label", "\\tag", "\\tag*"}
_ALIASES = {
    **_SPACING_ALIASES,
    "\\to": "\\rightarrow", "\\le": "\\leq", "\\ge": "\\geq", "\\ne": "\\neq", "\\dag": "\\dagger",
    "\\ddag": "\\ddagger", "\\vert": "|", "\\Vert": "\\|", "\\lbrack": "[", "\\rbrack": "]",
    "\\lbrace": "\\{", "\\rbrace": "\\}", "\\land": "\\wedge", "\\lor": "\\vee", "\\lnot": "\\neg",
    "\\gets": "\\leftarrow", "\\owns": "\\ni", "\\sp": "^", "\\sb": "_", "\\text": "\\textrm",
    "\\bgroup": "{", "\\egroup": "}",
    "\\lt": "<", "\\gt": ">", "\\colonequals": "\\coloneqq", "\\ast": "*",
}  # fmt: skip
# LaTeX2e's old font switches: in math mode each is its new command applied to the rest of the group.
_FONT_SWITCHES = {
    "\\rm": "\\mathrm", "\\cal": "\\mathcal", "\\bf": "\\mathbf", "\\it": "\\mathit", "\\sf": "\\mathsf",
    "\\tt": "\\mathtt",
}  # fmt: skip
_DELIMITER_ALIASES = {
    "<": "\\langle", ">": "\\rangle", "\\lvert": "|", "\\rvert": "|", "\\vert": "|", "\\lVert": "\\|",
    "\\rVert": "\\|", "\\Vert": "\\|", "\\lbrack": "[", "\\rbrack": "]", "\\lbrace": "\\{", "\\rbrace": "\\}",
}  # fmt: skip
_OPERATORS = {
    "arccos", "arcsin", "arctan", "arg", "cos", "cosh", "cot", "coth", "csc", "deg", "dim", "exp", "hom",
    "ker", "lg", "ln", "log", "sec", "sin", "sinh", "tan", "tanh",
}  # fmt: skip
_LIMIT_OPERATORS = {
    "lim": "lim", "max": "max", "min": "min", "sup": "sup", "inf": "inf", "det": "det", "gcd": "gcd",
    "Pr": "Pr", "liminf": "lim\\,inf", "limsup": "lim\\,sup",
}  # fmt: skip
_STYLE_FRACTIONS = {
    "\\dfrac": ("\\displaystyle", "\\frac"), "\\tfrac": ("\\textstyle", "\\frac"),
    "\\dbinom": ("\\displaystyle", "\\binom"), "\\tbinom": ("\\textstyle", "\\binom"),
}  # fmt: skip
_DELIMITED_MATRICES = {
    "pmatrix": ("(", ")"), "bmatrix": ("[", "]"), "Bmatrix": ("\\{", "\\}"), "vmatrix": ("|", "|"),
    "Vmatrix": ("\\|", "\\|"),
}  # fmt: skip
# Symbols of TeX's class Ord: a brace group holding only one of them renders as the symbol alone.
_ORDINARY = {
    "\\alpha", "\\beta", "\\gamma", "\\delta", "\\epsilon", "\\varepsilon", "\\zeta", "\\eta", "\\theta",
    "\\vartheta", "\\iota", "\\kappa", "\\lambda", "\\mu", "\\nu", "\\xi", "\\pi", "\\varpi", "\\rho", "\\varrho",
    "\\sigma", "\\varsigma", "\\tau", "\\upsilon", "\\phi", "\\varphi", "\\chi", "\\psi", "\\omega", "\\Gamma",
    "\\Delta", "\\Theta", "\\Lambda", "\\Xi", "\\Pi", "\\Sigma", "\\Upsilon", "\\Phi", "\\Psi", "\\Omega",
    "\\infty", "\\partial", "\\nabla", "\\hbar", "\\ell", "\\emptyset", "\\aleph", "\\imath", "\\jmath", "\\wp",
    "\\Re", "\\Im", "\\forall", "\\exists", "\\neg", "\\top", "\\bot", "\\prime",
}  # fmt: skip
# Math alphabets: LaTeX2e writes ``\mathcal { D }`` as a group itself, so a group around it changes nothing, even
# under scripts. Accents make an Ord atom, but a group around one moves its scripts, so only unscripted ones.
_ALPHABETS = {
    "\\mathrm", "\\mathbf", "\\mathit", "\\mathsf", "\\mathtt", "\\mathcal", "\\mathbb", "\\mathfrak", "\\mathscr",
}  # fmt: skip
# LaTeX writes a fraction as a group itself (amsmath: ``\frac`` is ``{\begingroup#1\endgroup\@@over#2}``, and
# ``\binom`` a ``\genfrac``, ``{{..}}``), so a group around one changes nothing, even under scripts: TeX makes a
# group that holds one unscripted Ord atom that atom itself (tex.web, ``math_group``).
_FRACTIONS = {"\\frac", "\\binom"}
_ACCENTS = {
    "\\bar", "\\hat", "\\tilde", "\\vec", "\\dot", "\\ddot", "\\check", "\\breve", "\\acute", "\\grave",
    "\\widehat", "\\widetilde", "\\overline", "\\underline",
}  # fmt: skip
# An accent or a radical makes one atom that TeX spaces as Ord. Under scripts the group stays: TeX folds a group
# into the atom it holds only for an Ord atom (tex.web, ``math_group``), so the scripts then sit on another kind
# of atom; three scripted radicals tried rendered the same either way, which is too few to merge them.
_UNSCRIPTED_ATOMS = _ACCENTS | {"\\sqrt"}
# Commands whose arguments are braced when written as a single token (``\frac 1 2`` -> ``\frac { 1 } { 2 }``),
# with their number of arguments; a script's unbraced argument takes a command's arguments with it
# (``x ^ \textrm { F }`` -> ``x ^ { \textrm { F } }``; braced alone, the command would lose its argument).
_ARGUMENT_COUNTS = {
    **dict.fromkeys(
        _ACCENTS | _ALPHABETS | _TEXT_COMMANDS | {
            "\\dddot", "\\mathring", "\\overrightarrow", "\\overleftarrow", "\\overbrace", "\\underbrace",
            "\\boldsymbol", "\\bm", "\\pmb",
        },
        1,
    ),
    **dict.fromkeys(["\\frac", "\\binom", "\\stackrel", "\\overset", "\\underset"], 2),
}  # fmt: skip
# Commands known to take no argument, so that a group after one of them is not its argument.
_NO_ARGUMENT = _ORDINARY | {
    "\\quad", "\\qquad", "\\cdot", "\\times", "\\pm", "\\mp", "\\otimes", "\\oplus", "\\circ", "\\cup", "\\cap",
    "\\wedge", "\\vee", "\\leq", "\\geq", "\\neq", "\\equiv", "\\sim", "\\simeq", "\\approx", "\\cong", "\\propto",
    "\\in", "\\ni", "\\subset", "\\subseteq", "\\supset", "\\supseteq", "\\rightarrow", "\\leftarrow",
    "\\Rightarrow", "\\Leftarrow", "\\leftrightarrow", "\\Leftrightarrow", "\\longrightarrow", "\\mapsto", "\\ll",
    "\\gg", "\\perp", "\\mid", "\\sum", "\\prod", "\\int", "\\oint", "\\ldots", "\\cdots", "\\dots",
    "\\displaystyle", "\\textstyle", "\\scriptstyle", "\\scriptscriptstyle",
}  # fmt: skip
_STRIPPED_ENVS = {"equation", "equation*", "displaymath", "math"}
_RENAMED_ENVS = {
    "align": "aligned", "align*": "aligned", "flalign": "aligned", "flalign*": "aligned",
    "alignat": "alignedat", "alignat*": "alignedat", "gather": "gathered", "gather*": "gathered",
    "multline": "gathered", "multline*": "gathered", "eqnarray": "array", "eqnarray*": "array",
}  # fmt: skip
_ENV_ARGS = {"array": 1, "tabular": 1, "alignedat": 1, "subarray": 1, "darray": 1}
_ROW_RULES = {"\\hline", "\\hdashline", "\\cline"}
_BEGIN_WITH_ARGUMENT = {f"\\begin{{{env}}}" for env in _ENV_ARGS}
_CONTROL_WORD = re.compile(r"\\[A-Za-z]+")
_DIMENSION = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)(pt|em|ex|mm|cm|in|bp|pc|dd|cc|sp|mu)")
_WRAPPERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))

# A parsed formula: a list whose items are tokens (str) or brace groups (nested lists).
Node = list


class _Flat(list):
    """A processed environment: written inline (no braces) but opaque to the enclosing cell splitting."""


def tokenize(latex: str) -> list[str]:
    """Split LaTeX into tokens; whitespace runs come out as ``" "`` and comments are dropped.

    Args:
        latex: raw LaTeX source.

    Returns:
        The token list, e.g. ``["\\frac", "{", "a", "}", " ", "{", "b", "}"]``.
    """
    tokens: list[str] = []
    for match in _TOKEN_RE.finditer(latex):
        token = match.group(0)
        if match.group(1):
            env = match.group(2)
            tokens.append(f"\\{match.group(1)}{{{env}}}")
        elif token.startswith("%"):
            continue
        elif token.isspace():
            if tokens and tokens[-1] != " ":
                tokens.append(" ")
        elif token == "*" and tokens and tokens[-1] in _STAR_COMMANDS:
            tokens[-1] += "*"
        elif token in ("\\", "\\\n", "\\\t", "\\\r"):
            tokens.append("\\ ")
        else:
            tokens.append(token)
    return tokens


def detokenize(tree: Node) -> str:
    """Write a parsed formula in the canonical space-separated form (control space as ``\\``)."""
    out: list[str] = []
    for item in tree:
        if isinstance(item, _Flat):
            out.append(detokenize(item))
        elif isinstance(item, list):
            out.append("{ " + detokenize(item) + " }" if item else "{ }")
        else:
            out.append("\\" if item == "\\ " else item)
    return " ".join(out)


def _strip_wrappers(latex: str) -> str:
    text = latex.strip()
    for left, right in _WRAPPERS:
        if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
            inner = text[len(left) : len(text) - len(right)]
            if left.startswith("$") and "$" in inner:
                continue
            if not inner.rstrip().endswith("\\") or inner.rstrip().endswith("\\\\"):
                return inner.strip()
    return text


def is_canonical(latex: str) -> bool:
    """True when ``latex`` is written like the canonical form: every token separated by one space."""
    return _is_canonical(tokenize(latex))


def _is_canonical(tokens: list[str]) -> bool:
    """True when every token is already separated by one space, as in the canonical form."""
    glue = {"\\left", "\\right", "\\middle", "\\ "}
    return all(a == " " or b == " " or a in glue for a, b in zip(tokens, tokens[1:], strict=False))


def _parse(tokens: list[str], latex: str) -> Node:
    """Nest brace groups; glue ``\\left``/``\\right`` to their delimiter; keep spaces only inside text mode.

    In raw LaTeX a space inside a text-mode argument is visible and becomes ``~``; in an input that is already
    in the canonical space-separated form every space is a separator (this keeps ``normalize`` idempotent).
    """
    keep_text_spaces = not _is_canonical(tokens)
    root: Node = []
    stack: list[Node] = [root]
    text_depth: list[bool] = [False]
    pending_text = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == "{":
            group: Node = []
            stack[-1].append(group)
            stack.append(group)
            text_depth.append(text_depth[-1] or pending_text)
            pending_text = False
            continue
        if token == "}":
            if len(stack) == 1:
                raise LatexNormalizationError(f"unbalanced '}}' in formula {latex!r}")
            stack.pop()
            text_depth.pop()
            continue
        if token == " ":
            # TeX skips the spaces after a control word (``\\bf x``).
            after_word = i > 1 and _CONTROL_WORD.fullmatch(tokens[i - 2]) is not None
            if keep_text_spaces and text_depth[-1] and not pending_text and not after_word:
                stack[-1].append("~")
            continue
        if token == "\\hbox" and next((t for t in tokens[i:] if t != " "), None) != "{":
            # ``\hbox to 2em {...}`` and ``\hbox spread``: a box size, which no label or reading needs
            raise LatexNormalizationError(f"\\hbox without a braced box in formula {latex!r}")
        if token in ("\\left", "\\right", "\\middle"):
            while i < len(tokens) and tokens[i] == " ":
                i += 1
            if i >= len(tokens) or tokens[i] in ("{", "}"):
                raise LatexNormalizationError(f"{token} without a delimiter in formula {latex!r}")
            delimiter = _DELIMITER_ALIASES.get(tokens[i], tokens[i])
            i += 1
            token = token + delimiter
        pending_text = token in _TEXT_COMMANDS
        stack[-1].append(token)
    if len(stack) != 1:
        raise LatexNormalizationError(f"unbalanced '{{' in formula {latex!r}")
    return root


def _take_arg(items: Node, i: int) -> tuple[object | None, int]:
    """Return the argument starting at ``items[i]`` (a group or one token) and the index after it."""
    if i < len(items):
        return items[i], i + 1
    return None, i


def _rewrite_tokens(items: Node, text: bool = False) -> Node:
    """Apply token-level aliases, operator expansion, drops, and style fractions within one list."""
    out: Node = []
    i = 0
    while i < len(items):
        item = items[i]
        i += 1
        if isinstance(item, list):
            text_argument = bool(out) and isinstance(out[-1], str) and out[-1] in _TEXT_COMMANDS
            out.append(_transform(item, text or text_argument))
            continue
        item = _ALIASES.get(item, item)
        if item in _DROP:
            continue
        if item in _DROP_WITH_ARG:
            _, i = _take_arg(items, i)
            continue
        name = item[1:]
        if item.startswith("\\") and name in _OPERATORS:
            out += ["\\operatorname", list(name)]
        elif item.startswith("\\") and name in _LIMIT_OPERATORS:
            out += ["\\operatorname*", [t for t in tokenize(_LIMIT_OPERATORS[name]) if t != " "]]
        elif item in _STYLE_FRACTIONS:
            style, command = _STYLE_FRACTIONS[item]
            first, i = _take_arg(items, i)
            second, i = _take_arg(items, i)
            args = [_transform(a) if isinstance(a, list) else a for a in (first, second) if a is not None]
            out.append([style, *_brace_arguments([command, *args])])
        elif item in _FONT_SWITCHES and not text:
            end = _switch_scope_end(items, i)
            scope = _transform(items[i:end])
            if len(scope) == 1 and type(scope[0]) is list:
                scope = scope[0]
            if scope:
                out += [_FONT_SWITCHES[item], scope]
            i = end
        elif item.startswith("\\begin{") or item.startswith("\\end{"):
            out += _rename_env(item)
        else:
            out.append(item)
    return out


def _switch_scope_end(items: Node, i: int) -> int:
    """Where the scope of a font switch before ``items[i]`` ends: at the end of its group, or at the ``\\right`` /
    ``\\middle`` / ``\\end`` / ``&`` / ``\\\\`` that closes the implicit group it is in."""
    depth = 0
    for j in range(i, len(items)):
        token = items[j]
        if not isinstance(token, str):
            continue
        if _is_glued(token, "\\left") or token.startswith("\\begin{"):
            depth += 1
        elif _is_glued(token, "\\right") or token.startswith("\\end{"):
            if depth == 0:
                return j
            depth -= 1
        elif depth == 0 and (token in ("&", "\\\\") or _is_glued(token, "\\middle")):
            return j
    return len(items)


def _rename_env(token: str) -> list:
    kind, env = token[1:].split("{", 1)
    env = env[:-1]
    if env in _STRIPPED_ENVS:
        return []
    if env in _DELIMITED_MATRICES:
        left, right = _DELIMITED_MATRICES[env]
        return ["\\left" + left, "\\begin{matrix}"] if kind == "begin" else ["\\end{matrix}", "\\right" + right]
    renamed = _RENAMED_ENVS.get(env, env)
    if kind == "begin" and env.startswith("eqnarray"):
        return ["\\begin{array}", ["r", "c", "l"]]
    return [f"\\{kind}{{{renamed}}}"]


def _split_over(items: Node) -> Node:
    """``a \\over b`` -> ``\\frac { a } { b }`` within one group (left alone next to ``&`` or ``\\\\``)."""
    infix = {"\\over": "\\frac", "\\choose": "\\binom"}
    positions = [k for k, t in enumerate(items) if isinstance(t, str) and t in infix]
    if len(positions) != 1 or any(t in ("&", "\\\\") for t in items if isinstance(t, str)):
        return items
    k = positions[0]
    return [infix[items[k]], items[:k], items[k + 1 :]]


def _cellify(body: Node) -> Node:
    """Brace every cell of a tabular body and end every row with ``\\\\`` (im2latex's array form)."""
    rows: list[tuple[Node, Node, Node]] = []  # (leading rules, row tokens, "[dimen]" after its \\)
    current: Node = []
    rules: Node = []
    i = 0
    while i < len(body):
        item = body[i]
        i += 1
        if item == "\\\\":
            spacing: Node = []
            end = body.index("]", i) if i < len(body) and body[i] == "[" and "]" in body[i:] else -1
            if end > 0 and _DIMENSION.fullmatch("".join(map(str, body[i + 1 : end]))):
                spacing, i = body[i : end + 1], end + 1
            rows.append((rules, current, spacing))
            current, rules = [], []
        elif not current and isinstance(item, str) and item in _ROW_RULES:
            rules.append(item)
            if item == "\\cline" and i < len(body):
                rules.append(body[i])
                i += 1
        else:
            current.append(item)
    rows.append((rules, current, []))
    out: Node = []
    for index, (rules, row, spacing) in enumerate(rows):
        out += rules
        if not row and index == len(rows) - 1:
            break
        cells: list[Node] = [[]]
        for item in row:
            if item == "&":
                cells.append([])
            else:
                cells[-1].append(item)
        for c, cell in enumerate(cells):
            if c:
                out.append("&")
            out.append(cell[0] if len(cell) == 1 and type(cell[0]) is list else cell)
        out += ["\\\\", *spacing]
    return out


def _environments(items: Node) -> Node:
    """Find ``\\begin{X} .. \\end{X}`` pairs in one list and cellify their bodies."""
    out: Node = []
    i = 0
    while i < len(items):
        item = items[i]
        i += 1
        if not (isinstance(item, str) and item.startswith("\\begin{")):
            if isinstance(item, str) and item.startswith("\\end{"):
                raise LatexNormalizationError(f"{item} without \\begin")
            out.append(item)
            continue
        env = item[len("\\begin{") : -1]
        depth, j = 1, i
        while j < len(items) and depth:
            if items[j] == item:
                depth += 1
            elif items[j] == f"\\end{{{env}}}":
                depth -= 1
            j += 1
        if depth:
            raise LatexNormalizationError(f"{item} without \\end{{{env}}}")
        body = items[i : j - 1]
        head: Node = [item]
        if body and body[0] == "[" and "]" in body:
            end = body.index("]")
            head += body[: end + 1]
            body = body[end + 1 :]
        for _ in range(_ENV_ARGS.get(env, 0)):
            if body:
                head.append(body[0])
                body = body[1:]
        out.append(_Flat(head + _cellify(_environments(body)) + [items[j - 1]]))
        i = j
    return out


def _brace(item: object) -> Node:
    return item if isinstance(item, list) and not isinstance(item, _Flat) else [item]


def _with_arguments(items: Node, i: int) -> tuple[Node, int]:
    """The `_ARGUMENT_COUNTS` command at ``items[i]`` followed by its arguments, each braced, and the index after."""
    count = _ARGUMENT_COUNTS[items[i]]
    return [items[i], *(_brace(a) for a in items[i + 1 : i + 1 + count])], i + 1 + count


def _brace_arguments(items: Node) -> Node:
    """Write the arguments of scripts and of `_ARGUMENT_COUNTS` commands braced, and primes as superscripts, as
    im2latex-100k does (``x ^ { 2 }``, ``\\bar { K }``, ``x ^ { \\prime }``); TeX renders both forms the same:

    * ``x ^ 2`` -> ``x ^ { 2 }``; ``x _ \\mathrm { a }`` -> ``x _ { \\mathrm { a } }`` (a command's arguments go
      along);
    * ``\\frac 1 2`` -> ``\\frac { 1 } { 2 }``, ``\\bar K`` -> ``\\bar { K }``;
    * ``x ' '`` -> ``x ^ { \\prime \\prime }``, and ``x ' ^ { 2 }`` -> ``x ^ { \\prime 2 }`` (TeX's ``'`` opens
      a superscript that a following ``^`` joins);
    * a subscript written after a superscript goes first: ``x ^ { a } _ { b }`` -> ``x _ { b } ^ { a }``, ``x ' _ 1``
      -> ``x _ { 1 } ^ { \\prime }`` (both scripts attach to the same atom, in either order).
    """
    out: Node = []
    i = 0
    while i < len(items):
        item = items[i]
        i += 1
        if item == "'":
            primes = ["\\prime"]
            while i < len(items) and items[i] == "'":
                primes.append("\\prime")
                i += 1
            if i + 1 < len(items) and items[i] == "^":
                primes += _brace(items[i + 1])
                i += 2
            out += ["^", primes]
        elif item in ("^", "_") and i < len(items) and items[i] not in ("^", "_", "'"):
            if isinstance(items[i], str) and items[i] in _ARGUMENT_COUNTS:
                argument, i = _with_arguments(items, i)
            else:
                argument, i = _brace(items[i]), i + 1
            if item == "_" and len(out) >= 2 and out[-2] == "^":  # the subscript goes first
                out[-2:-2] = [item, argument]
            else:
                out += [item, argument]
        elif isinstance(item, str) and item in _ARGUMENT_COUNTS:
            command, i = _with_arguments(items, i - 1)
            out += command
        else:
            out.append(item)
    return out


def _is_argument(before: object) -> bool:
    """True when a group after `before` may be an argument: after a script sign, a group, ``]``, a command that is
    not known to take no argument, or ``\\begin`` of an environment that takes one."""
    if isinstance(before, list):
        return True
    if before in ("^", "_", "]") or before in _BEGIN_WITH_ARGUMENT:
        return True
    return _CONTROL_WORD.fullmatch(before.removesuffix("*")) is not None and before not in _NO_ARGUMENT


def _drop_redundant_groups(items: Node) -> Node:
    """Write a brace group that holds one ordinary atom without its braces where TeX renders both the same, in the
    whole normalised tree: ``{ x }`` -> ``x``, ``{ \\alpha }`` -> ``\\alpha``, ``{ \\bar { x } }`` -> ``\\bar { x }``,
    ``{ \\mathcal { D } } _ { i }`` -> ``\\mathcal { D } _ { i }``, ``{ \\frac { a } { b } }`` ->
    ``\\frac { a } { b }``. Kept: groups that may be an argument (`_is_argument`, judged on the output so far,
    which keeps the pass idempotent), tabular cells, text-mode arguments, and groups of a symbol, accent or radical
    under scripts (``{ x } ^ { 2 }``: TeX places scripts on a group and on a symbol differently)."""
    out: Node = []
    for k, item in enumerate(items):
        if isinstance(item, _Flat):  # an environment: its cells stay groups, their contents are processed
            out.append(_Flat(_drop_redundant_groups(c) if type(c) is list else c for c in item))
            continue
        if type(item) is not list:
            out.append(item)
            continue
        before = out[-1] if out else None
        if isinstance(before, str) and before in _TEXT_COMMANDS:
            out.append(item)
            continue
        item = _drop_redundant_groups(item)
        scripted = k + 1 < len(items) and items[k + 1] in ("^", "_", "'")
        symbol = len(item) == 1 and isinstance(item[0], str) and not scripted
        symbol = symbol and (len(item[0]) == 1 and item[0].isalnum() or item[0] in _ORDINARY)
        pair = len(item) == 2 and type(item[1]) is list and isinstance(item[0], str)
        pair = pair and (item[0] in _ALPHABETS or item[0] in _UNSCRIPTED_ATOMS and not scripted)
        fraction = len(item) == 3 and isinstance(item[0], str) and item[0] in _FRACTIONS
        fraction = fraction and all(type(argument) is list for argument in item[1:])
        redundant = (symbol or pair or fraction) and (before is None or not _is_argument(before))
        out += item if redundant else [item]
    return out


def _transform(items: Node, text: bool = False) -> Node:
    """Normalise one brace group; `text`: the group is a text-mode argument, where ``'`` and ``^`` are plain."""
    items = _rewrite_tokens(items, text)
    return _split_over(_environments(items if text else _brace_arguments(items)))


def _is_glued(token: str, command: str) -> bool:
    """True for ``\\left(`` / ``\\left\\{`` (command + delimiter), false for ``\\leftarrow``."""
    rest = token[len(command) :]
    return token.startswith(command) and bool(rest) and not rest[0].isalpha()


def _check_left_right(tree: Node, latex: str) -> None:
    depth = 0
    for item in tree:
        if isinstance(item, list):
            _check_left_right(item, latex)
        elif _is_glued(item, "\\left"):
            depth += 1
        elif _is_glued(item, "\\right"):
            depth -= 1
            if depth < 0:
                raise LatexNormalizationError(f"\\right without \\left in formula {latex!r}")
    if depth:
        raise LatexNormalizationError(f"\\left without \\right in formula {latex!r}")


def normalize(latex: str) -> str:
    """Normalise raw LaTeX math to the canonical im2latex-100k token form.

    Args:
        latex: one formula, raw LaTeX or already canonical; may be wrapped in ``$``, ``\\[``, ``equation`` ...

    Returns:
        The canonical space-separated token string (``""`` for an empty formula).

    Raises:
        LatexNormalizationError: unbalanced braces, environments or ``\\left``/``\\right``.
    """
    tokens = tokenize(_strip_wrappers(latex))
    try:
        tree = _drop_redundant_groups(_transform(_parse(tokens, latex)))
    except LatexNormalizationError as error:
        if "formula" in str(error):
            raise
        raise LatexNormalizationError(f"{error} in formula {latex!r}") from None
    _check_left_right(tree, latex)
    return detokenize(tree)


def canonical(formula: str) -> str:
    """The formula in the canonical token form, or with its whitespace normalised if it cannot be normalised: for
    labels and metrics, which take any formula."""
    try:
        return normalize(formula)
    except LatexNormalizationError:
        return " ".join(formula.split())
