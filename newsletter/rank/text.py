"""Text helpers shared by the rankers: tokens, light stemming, phrase matching and acronyms."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from functools import lru_cache

from newsletter.models import StoredPaper

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*|[0-9]+[A-Za-z][A-Za-z0-9]*")
_COMPOUND = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z][A-Za-z0-9]*)+")  # 'fine-tuning', 'speech-to-text'
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_SHORT = re.compile(r"(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")  # one word: 3D, GPT-4
_LATEX = re.compile(r"\\[a-zA-Z]+|[{}$]")

_STOPWORD_TEXT = """a about above after again against all also am an and any are as at be because been before
    being
    below between both but by can could did do does doing down during each few for from further had has
    have having here how i if in into is it its itself just more most no nor not of off on once only or
    other our out over own same she should so some such than that the their them then there these they
    this those through to too under until up very was we were what when where which while who why will
    with would you your via using use used based towards toward new novel propose proposed show paper
    approach method methods results work study"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
SAME_WORD = {"visual": "vision", "visually": "vision"}  # read as one word when matching phrases


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A deliberately light stemmer: plurals, -ing/-ed and a silent final e, so 'models' == 'model' ==
    'modeling' and 'scales' == 'scaling' == 'scaled'."""
    w = word.lower()
    if w in SAME_WORD:
        return SAME_WORD[w]
    if len(w) <= 3:
        return w
    return _silent_e(_suffixless(w))


def _suffixless(w: str) -> str:
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ings", ""), ("ing", ""), ("ed", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 4:
            return w[: -len(suffix)] + repl
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def _silent_e(w: str) -> str:
    """'scale' -> 'scal', as 'scaling' and 'scaled' lose their endings ('image' / 'imaging' alike)."""
    return w[:-1] if len(w) >= 5 and w.endswith("e") and not w.endswith("ee") else w


def _split_word(word: str) -> list[str]:
    """'PointNeRF' -> ['pointnerf', 'point', 'nerf']; plain words stay whole. A name that is itself
    written in mixed case stays whole as the end of a compound: 'KNeRF' -> ['knerf', 'nerf'] (last,
    so 'KNeRF fields' still states 'NeRF fields')."""
    parts = _CAMEL.findall(word)
    whole = word.lower()
    if len(parts) <= 1:
        return [whole]
    ends = ["".join(parts[i:]).lower() for i in range(1, len(parts) - 1)]
    return [whole, *(p.lower() for p in parts if len(p) >= 3), *(e for e in ends if len(e) >= 3)]


def words(text: str) -> list[str]:
    """The words of a text as written (LaTeX commands and braces dropped)."""
    return _WORD.findall(_LATEX.sub(" ", text))


def tokens(text: str) -> list[str]:
    """Stemmed content tokens in order; camel-case compounds also yield their parts."""
    out: list[str] = []
    for word in words(text):
        out.extend(_word_tokens(word))
    return out


def tokens_as_written(text: str) -> list[tuple[str, str]]:
    """(token, word) pairs: each stemmed token with the word it came from, as written."""
    return [(token, word) for word in words(text) for token in _word_tokens(word)]


@lru_cache(maxsize=1 << 17)
def _word_tokens(word: str) -> tuple[str, ...]:
    return tuple(stem(part) for part in _split_word(word) if part not in STOPWORDS)


def phrase_tokens(phrase: str) -> tuple[str, ...]:
    """The stemmed content words of an interest phrase ('graph neural networks' -> graph, neural, network)."""
    words = [w.lower() for w in _WORD.findall(phrase.replace("-", " "))]
    return tuple(stem(w) for w in words if w not in STOPWORDS)


def plain_word(phrase: str) -> bool:
    """Is the phrase one word written in lower case ("kernels")? Names are written as names
    ("NeRF", "ViT", "BERT")."""
    return phrase.isalpha() and phrase.islower()


def short_term(phrase: str) -> bool:
    """Is the phrase one acronym or short name ("3D", "RL", "GANs", "NeRF", "T5", "3D-GS", "GPT-4")? One
    word, or words joined by hyphens, one of them with two capitals or digits, or with a digit. A
    sentence model finds such a term close to much of its field (the vectors of "3D" and of a video
    paper are close), so only its letters can tell."""
    word = phrase.strip()
    return bool(_SHORT.fullmatch(word)) and any(_marked(part) for part in word.split("-"))


def _marked(word: str) -> bool:
    marks = sum(c.isupper() or c.isdigit() for c in word)
    return marks >= 2 or any(c.isdigit() for c in word)


def other_spelling(term: str) -> re.Pattern[str] | None:
    """How papers also write a short name with digits: a hyphen between its digits and letters, and a
    space or none at its own hyphens ("3D" as "3-D", "GPT-4" as "GPT4", "Llama-2" as "Llama 2"; not
    "GPT-4.5"). The words drop the lone "3" of "3-D", so only the text as written shows it. None for any
    other term."""
    word = term.strip()
    if not short_term(word) or not any(c.isdigit() for c in word):
        return None
    parts = "[- ]?".join(_spelled_part(part) for part in word.split("-"))
    return re.compile(rf"(?<![\w-]){parts}(?!\w|\.[0-9])", re.IGNORECASE)


def _spelled_part(part: str) -> str:
    """One hyphen-free part of a short name, a hyphen allowed between its digits and letters, and a
    hyphen or space after a leading number of dimensions ("3DGS" as "3D-GS" or "3D GS", as "3D-GS"
    is also found as "3DGS"). After a space the letters must be capitals: "3DIS" is not "in 3D is"."""
    found = _DIMENSIONS_FIRST.fullmatch(part)
    if found:
        letters = re.escape(found[2])
        return f"{_spelled_part(found[1])}(?:-?{letters}|(?-i: {letters.upper()}))"
    return "-?".join(map(re.escape, _PIECE.findall(part)))


def lossy(term: str) -> bool:
    """Do the words drop part of the term: the "4" of "GPT-4", the "19" of "COVID-19"? Its words
    alone ("GPT") then stand for other names too ("GPT-3.5")."""
    return any(part.isdigit() for part in term.strip().split("-"))


def dimensions(term: str) -> str | None:
    """The words a paper writes a number of dimensions in: "3D" -> "three dimensional"."""
    found = _DIMENSIONS.fullmatch(term.strip())
    return f"{_NUMBERS[int(found[1])]} dimensional" if found else None


_PIECE = re.compile(r"[0-9]+|[A-Za-z]+")
_DIMENSIONS = re.compile(r"([1-4])[Dd]")
_DIMENSIONS_FIRST = re.compile(r"([1-4][Dd])([A-Za-z]+)")
_NUMBERS = ("zero", "one", "two", "three", "four")


def compounds(text: str) -> Iterator[tuple[str, tuple[str, ...]]]:
    """The text's hyphenated compounds: (the compound's token written as one word, its parts' tokens),
    'fine-tuning' -> ('finetun', ('fine', 'tuning'))."""
    for piece in (w for w in text.split() if "-" in w):  # few pieces have a hyphen: no regex for the rest
        for word in _COMPOUND.findall(piece):
            found = _compound(word)
            if found:
                yield found


@lru_cache(maxsize=1 << 16)
def _compound(word: str) -> tuple[str, tuple[str, ...]] | None:
    parts, joined = phrase_tokens(word), stem(word.replace("-", ""))
    return (joined, parts) if len(parts) > 1 and joined not in STOPWORDS else None


def acronym(phrase: str) -> str | None:
    """'neural architecture search' -> 'nas', 'graph neural networks' -> 'gnn'; None when under 3 letters."""
    words = _WORD.findall(phrase.replace("-", " "))
    if len(words) < 2:
        return None
    letters = "".join(w[0].lower() for w in words if w.lower() not in {"the", "a", "an", "for", "and"})
    return letters if len(letters) >= 3 else None


def acronym_mentions(text: str, short: str) -> int:
    """How often ``text`` writes the acronym ``short`` as one: two capitals or more, alone or ending a
    compound ("NAS", "NASs", "KNeRF", "DeepSeekViT"), not the "Nas" of "NasNet" or inside "NASDAQ"."""
    found = re.finditer(rf"(?i:{re.escape(short)})(?=s?(?:[^A-Za-z]|$)|[A-Z][a-z])", text)
    return sum(1 for m in found if sum(c.isupper() for c in m.group()) >= 2)


def count_phrase(doc: Sequence[str], phrase: Sequence[str]) -> int:
    """How often ``phrase`` occurs as consecutive tokens in ``doc`` (both already stemmed)."""
    n = len(phrase)
    if n == 0 or n > len(doc):
        return 0
    if n == 1:
        return sum(1 for t in doc if t == phrase[0])
    first = phrase[0]
    return sum(1 for i in range(len(doc) - n + 1) if doc[i] == first and tuple(doc[i : i + n]) == phrase)


def lead(paper: StoredPaper) -> str:
    """The abstract's first sentence (the title when there is no abstract)."""
    return sentences(paper)[0]


def paper_words(paper: StoredPaper) -> str:
    """A paper's title and abstract: the text its words are counted in when it is a query."""
    return f"{paper.title} {paper.abstract}"


def paper_text(paper: StoredPaper) -> str:
    """What a model reads for a paper: its title, the listing's summary, its abstract, its keywords."""
    summary, keywords = paper.details.ai_summary, paper.details.ai_keywords
    head = f"{paper.title}. {summary.rstrip('. ')}" if summary else paper.title
    tail = f" Keywords: {', '.join(keywords)}." if keywords else ""
    return f"{head}. {paper.abstract}{tail}".strip()


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")
MIN_SENTENCE = 20  # characters: shorter pieces ("e.g.", stray headings) join the sentence before them


def sentences(paper: StoredPaper) -> list[str]:
    """The abstract's sentences (never none: a paper without an abstract is its title)."""
    out: list[str] = []
    for piece in _SENTENCE_END.split(" ".join(paper.abstract.split())):
        if out and len(piece) < MIN_SENTENCE:
            out[-1] = f"{out[-1]} {piece}"
        elif piece:
            out.append(piece)
    return out or [paper.title]


_NEGATION = re.compile(
    r"\b(?:not(?!\s+only\b)|never|nor|neither)\b|n't\b|\bno\s+(?:interest|need)\b", re.IGNORECASE
)
_TEXT_SENTENCE = re.compile(r"(?<=[.!?;])\s+")
_CLAUSE = re.compile(r"(?<=,)\s+")


def affirmed(text: str) -> str:
    """``text`` without its negated clauses: "I study protein folding, not drug discovery. I do not care
    about chemistry." -> "I study protein folding." A sentence model reads a sentence about chemistry
    as one about chemistry, "not" or no, and TF-IDF counts its words alike; the topics a subscriber does
    not want belong in ``exclude``."""
    if not _NEGATION.search(text):
        return text  # as written (and as cached)
    kept = []
    for sentence in _TEXT_SENTENCE.split(text.strip()):
        clauses = [c for c in _CLAUSE.split(sentence) if not _NEGATION.search(c)]
        if clauses:
            kept.append(_ended(" ".join(clauses).rstrip(",;: ")))
    return " ".join(kept)


def _ended(sentence: str) -> str:
    return sentence if sentence[-1:] in ".!?" else f"{sentence}."
