"""Display text from abstracts: LaTeX debris removed, and short excerpts cut at sentence boundaries.

Abstracts in the dumps carry LaTeX the listing did not render: ``{\\it x}``, ``\\textbf{x}``,
``\\url{u}``, ``$\\textit{x}$``, ``\\( A \\)``, ``4\\%``, ``na\\"{\\i}vely``, ``Fr\\'echet``, ``\\ie``, and
math whose backslashes were already stripped (``13.7times``, ``mathcal{O}(n)``). The rules below are
general (commands, groups, accents, escapes), applied in a fixed order; text is never dropped except
for pure formatting commands.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Escaped characters are parked on private-use code points so later rules leave them alone.
_ESCAPES = {char: chr(0xE000 + i) for i, char in enumerate("%&#_${}")}
_KEPT_OPEN, _KEPT_CLOSE = "\ue010", "\ue011"  # a {group} kept as text, e.g. 'What happened {time}?'

_SYMBOLS = {
    "times": "×", "cdot": "·", "pm": "±", "mp": "∓", "approx": "≈", "sim": "~", "simeq": "≃",
    "leq": "≤", "le": "≤", "geq": "≥", "ge": "≥", "neq": "≠", "ne": "≠", "ll": "≪", "gg": "≫",
    "infty": "∞", "to": "→", "rightarrow": "→", "leftarrow": "←", "Rightarrow": "⇒", "circ": "∘",
    "ell": "ℓ", "partial": "∂", "nabla": "∇", "in": "∈", "sum": "Σ", "prod": "∏", "sqrt": "√",
    "ldots": "…", "dots": "…", "cdots": "⋯", "degree": "°", "checkmark": "✓",
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε",
    "zeta": "ζ", "eta": "η", "theta": "θ", "vartheta": "ϑ", "iota": "ι", "kappa": "κ",
    "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "pi": "π", "rho": "ρ", "sigma": "σ",
    "tau": "τ", "upsilon": "υ", "phi": "φ", "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω",
    "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ", "Xi": "Ξ", "Pi": "Π", "Sigma": "Σ",
    "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω",
    "ie": "i.e.", "eg": "e.g.", "etal": "et al.", "vs": "vs.", "etc": "etc.", "cf": "cf.", "wrt": "w.r.t.",
    "i": "ı", "j": "ȷ", "ss": "ß", "ae": "æ", "oe": "œ", "o": "ø", "aa": "å", "l": "ł",
    "AE": "Æ", "OE": "Œ", "O": "Ø", "AA": "Å", "L": "Ł",
}  # fmt: skip
# Formatting switches and sizing commands carry no text.
_DROPPED = _words(
    "it bf em sc tt rm sf sl up md normalfont itshape bfseries scshape ttfamily rmfamily sffamily "
    "tiny scriptsize footnotesize small normalsize large Large LARGE huge Huge "
    "left right big Big bigg Bigg displaystyle textstyle noindent centering hfill vfill "
    "limits nolimits"
)
# Macros authors define for the name of their method, model or dataset, and what they name.
_PLACEHOLDERS = {
    "method": "method", "ours": "method", "ourmethod": "method", "methodname": "method",
    "sysname": "system", "system": "system", "modelname": "model", "model": "model",
    "approach": "approach", "framework": "framework", "dataset": "dataset", "benchmark": "benchmark",
}  # fmt: skip
_TITLE_HEAD = re.compile(r"^\s*([^\s:]+(?:\s[^\s:]+)?)\s*(?::|\s--?\s)")  # one or two words, then ':'/'--'
_SPACING = frozenset(["quad", "qquad", "newline", "par", "linebreak", "enspace", "thinspace", "medspace"])
# Commands whose single {argument} is the text to keep. Backslash optional for the unambiguous
# math ones, since some listings strip backslashes ("mathcal{O}(n)").
_ARG_COMMANDS = (
    "textit|textbf|textsc|texttt|textrm|textsf|textsl|textup|textmd|textnormal|text|emph|underline|"
    "mathrm|mathbf|mathit|mathcal|mathbb|mathsf|mathtt|mathscr|mathfrak|mathnormal|boldsymbol|bm|"
    "mbox|hbox|operatorname|url|nolinkurl|texorpdfstring"
)
_BARE_ARG_COMMANDS = (
    "textit|textbf|texttt|emph|mathrm|mathbf|mathit|mathcal|mathbb|mathsf|mathscr|operatorname"
)
# Bare math names that are not English words: symbols whose backslash was stripped.
_BARE_SYMBOLS = ("cdot", "cdots", "ldots", "varepsilon", "vartheta", "varphi", "infty")
_ACCENT_MARKS = {
    "'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304",
    ".": "\u0307", "c": "\u0327", "v": "\u030c", "u": "\u0306", "H": "\u030b", "k": "\u0328",
}  # fmt: skip

_ESCAPE_RE = re.compile(r"\\([%&#_${}])")
_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$|\\\[\s*(.+?)\s*\\\]", re.DOTALL)
_INLINE_MATH = re.compile(r"\\\(\s*(.+?)\s*\\\)", re.DOTALL)
# $...$ only when it reads as math: no space inside the dollars, not "$5 and $10".
_DOLLAR_MATH = re.compile(r"\$(?=\S)([^$]+?)(?<=\S)\$(?!\d)")
_SYMBOL_ACCENT = re.compile(
    r"""\\(['`^"~=.])\s*(?:\{\s*(\\[ij]|[A-Za-z])\s*\}|(\\[ij](?![A-Za-z])|[A-Za-z]))"""
)
_LETTER_ACCENT = re.compile(r"\\([cvuHk])\{\s*(\\[ij]|[A-Za-z])\s*\}")
_FRAC = re.compile(r"\\?\b[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_HREF = re.compile(r"\\?\bhref\{([^{}]*)\}\{([^{}]*)\}")
_ARG = re.compile(rf"(?:\\(?:{_ARG_COMMANDS})|\b(?:{_BARE_ARG_COMMANDS}))\*?\{{([^{{}}]*)\}}")
_SCRIPT = re.compile(r"([_^])\{([^{}]*)\}")
_FLATTENED_HREF = re.compile(r"https?://[^\s{}]+\{(https?://[^\s{}]+)\}")
# \href{url}{label} whose backslash and first braces were lost: 'https://x/y{Our code is here.}'
_FLATTENED_LABEL = re.compile(r"(https?://[^\s{}]+)\{([^{}\s]+\s[^{}]*)\}")
_BACKSLASH_DIGIT = re.compile(r"\\(?=\d)")  # '(\22K' from '(\$22K' with its '$' lost
_COMMAND = re.compile(r"\\([A-Za-z]+)(?![A-Za-z])\s?")
_SPACE_COMMAND = re.compile(r"\\[,;:! ]|\\\\")
_GROUP = re.compile(r"\{([^{}]*)\}")
_TIMES_AFTER_NUMBER = re.compile(r"(\d)times\b")  # '13.7times', not the English '3 times'
_BARE_SYMBOL = re.compile(rf"\b({'|'.join(_BARE_SYMBOLS)})\b")
# LaTeX's unbreakable space ("Fig.~3", "Kipf~et~al."), not an approximation ("(~5%)") nor a URL's "/~user"
_TIE = re.compile(r"(?<=[\w.,;:])~(?=\S)")
_DOUBLE_QUOTES = re.compile(r"``(.+?)''")
_SINGLE_QUOTES = re.compile(r"`([^`']+)'")


def clean_abstract(text: str, title: str = "") -> str:
    """LaTeX debris removed for display; whitespace collapsed. Also fine for titles.

    ``title`` (the paper's) names what a placeholder macro such as ``\\method`` stands for.
    """
    text = _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(1)], text)
    for step, triggers in _STEPS:
        if any(trigger in text for trigger in triggers):  # most abstracts need few of the steps
            text = _commands(text, short_name(title)) if step is _commands else step(text)
    for char, parked in _ESCAPES.items():
        text = text.replace(parked, char)
    text = text.replace(_KEPT_OPEN, "{").replace(_KEPT_CLOSE, "}")
    return unicodedata.normalize("NFC", _tidy_spaces(text))


def _unwrap_math(text: str) -> str:
    text = _DISPLAY_MATH.sub(lambda m: m.group(1) or m.group(2), text)
    text = _INLINE_MATH.sub(r"\1", text)
    return _DOLLAR_MATH.sub(r"\1", text)


def _accents(text: str) -> str:
    def combine(mark: str, letter: str) -> str:
        base = {"\\i": "i", "\\j": "j"}.get(letter, letter)
        return base + _ACCENT_MARKS[mark]

    text = _SYMBOL_ACCENT.sub(lambda m: combine(m.group(1), m.group(2) or m.group(3)), text)
    return _LETTER_ACCENT.sub(lambda m: combine(m.group(1), m.group(2)), text)


def _arguments(text: str) -> str:
    """Innermost first, until nothing changes: \\frac, \\href, \\textbf{x}-style, ^{x} and _{x}."""
    while True:
        before = text
        text = _FRAC.sub(r"\1/\2", text)
        text = _HREF.sub(_href, text)
        text = _ARG.sub(r"\1", text)
        text = _SCRIPT.sub(_script, text)
        if text == before:
            return _FLATTENED_LABEL.sub(_labelled_url, _FLATTENED_HREF.sub(r"\1", text))


def _href(match: re.Match[str]) -> str:
    url, label = match.group(1).strip(), match.group(2).strip()
    return url if not label or label == url or label.startswith("http") else f"{label} ({url})"


def _labelled_url(match: re.Match[str]) -> str:
    """'https://x{Our code is here.}' -> 'Our code is here (https://x).'"""
    url, label = match.group(1), " ".join(match.group(2).split())
    stop = label[-1] if label[-1] in ".!?;:," else ""
    return f"{label.removesuffix(stop)} ({url}){stop}"


def _script(match: re.Match[str]) -> str:
    body = match.group(2).strip()
    return match.group(1) + (body if len(body) <= 1 else f"({body})")


def _commands(text: str, name: str | None = None) -> str:
    text = _BACKSLASH_DIGIT.sub("", _SPACE_COMMAND.sub(" ", text))
    return _COMMAND.sub(lambda match: _command(match, name), text)


def _command(match: re.Match[str], paper_name: str | None) -> str:
    name = match.group(1)
    if name in _DROPPED:
        return ""
    if name in _SPACING:
        return " "
    trailing = match.group(0)[len(name) + 1 :]
    if name in _PLACEHOLDERS:  # the authors' macro for their method's name: \method, \ours
        return (paper_name or f"the proposed {_PLACEHOLDERS[name]}") + trailing
    return _SYMBOLS.get(name, name) + trailing  # unknown macro (e.g. \DumpsterCluster): keep its name


def short_name(title: str) -> str | None:
    """A title's short name: 'Kestrel' in 'Kestrel: Sparse Message ...' or 'SPARK -- Sparse Graph ...'."""
    head = _TITLE_HEAD.match(title)
    return head.group(1) if head else None


def _stripped_math(text: str) -> str:
    """Math whose backslashes were lost upstream: '13.7times' -> '13.7×', 'cdot' -> '·'."""
    text = _TIMES_AFTER_NUMBER.sub(r"\1×", text)
    return _BARE_SYMBOL.sub(lambda m: _SYMBOLS[m.group(1)], text)


def _groups(text: str) -> str:
    """Drop grouping braces; keep a one-word {group} as written ('{time}', '8{255}')."""
    while True:
        before = text
        text = _GROUP.sub(_group, text)
        if text == before:
            break
    return text.replace("{", "").replace("}", "")  # unmatched leftovers


def _group(match: re.Match[str]) -> str:
    body, text = match.group(1), match.string
    before = text[match.start() - 1] if match.start() else ""
    one_word = any(c.isalnum() for c in body) and not any(c.isspace() for c in body)
    glued = before.isalnum() or before in ("}", _KEPT_CLOSE) or text.startswith("{", match.end())
    return f"{_KEPT_OPEN}{body}{_KEPT_CLOSE}" if one_word and glued else body


def _punctuation(text: str) -> str:
    text = _TIE.sub(" ", text)
    text = _DOUBLE_QUOTES.sub(r"“\1”", text)
    return _SINGLE_QUOTES.sub(r"‘\1’", text)


def _tidy_spaces(text: str) -> str:
    return " ".join(text.split())


# Each step with the substrings that make it worth running.
_STEPS: tuple[tuple[Callable[[str], str], tuple[str, ...]], ...] = (
    (_unwrap_math, ("$", "\\")),
    (_accents, ("\\",)),
    (_arguments, ("{",)),
    (_commands, ("\\",)),
    (_stripped_math, ("times", *_BARE_SYMBOLS)),
    (_groups, ("{", "}")),
    (_punctuation, ("~", "`")),
)


# --- excerpts -----------------------------------------------------------------------------------

ELLIPSIS = "…"
_ABBREVIATIONS = _words(
    "e.g. i.e. al. cf. vs. viz. approx. resp. fig. figs. eq. eqs. sec. ref. refs. no. vol. pp. ca. "
    "dr. mr. ms. prof. st. jr. sr. inc. ltd. co. corp."
)
_SENTENCE_END = re.compile(r"[.!?][\"')\]”’]*(?=\s+[\"'(\[“‘]?[A-Z0-9])")
_DOTTED = re.compile(r"^\(?([A-Za-z]\.){2,}$")  # 'U.S.', 'e.g.' (not 'A.': "the matrix A. We")


def excerpt(text: str, max_sentences: int = 3, max_chars: int = 400) -> str:
    """The first sentences of the cleaned ``text`` that fit in ``max_chars``; '…' when cut."""
    sentences = split_sentences(clean_abstract(text))
    kept: list[str] = []
    for sentence in sentences[:max_sentences]:
        room = max_chars - (len(ELLIPSIS) + 1 if len(kept) + 1 < len(sentences) else 0)
        if len(" ".join([*kept, sentence])) > room:
            break
        kept.append(sentence)
    if not kept:
        return _cut_words(sentences[0], max_chars) if sentences else ""  # first sentence too long
    joined = " ".join(kept)
    return joined if len(kept) == len(sentences) else f"{joined}\u00a0{ELLIPSIS}"  # keeps … on the line


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``; no break after 'e.g.', 'et al.', initials, or inside '3.5T'."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if _is_abbreviation(text[start : match.end()]):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    return [*sentences, tail] if tail else sentences


def _is_abbreviation(sentence: str) -> bool:
    words = sentence.split()
    last = words[-1] if words else ""
    return last.lower().strip("()[]\"'“”‘’") in _ABBREVIATIONS or bool(_DOTTED.match(last))


def _cut_words(sentence: str, max_chars: int) -> str:
    cut = sentence[: max_chars - len(ELLIPSIS)].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:-–—") + ELLIPSIS
