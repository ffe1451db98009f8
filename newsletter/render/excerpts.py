"""The excerpt under a title: what the paper contributes, and where the "why" names a phrase, where.

Abstracts usually open with background ("Recently, X has shown promise..."). The excerpt is instead:

1. the listing's own short summary when it has one (HF ``ai_summary``), else the abstract's first
   sentence that states the contribution ("we propose/introduce/present ..."), else the first opening
   with the name the title gives the work ("PolicyGuide instead compiles ..."), else its first sentence;
2. then, when the "why" names phrases ("matches: Kestrel, message passing", "close to your interest
   'x'"), the first abstract sentence containing one of them, if the part before does not already:
   from the contribution on, so the background before it is never shown ("world-model" names
   "world models");
3. then the sentence after the contribution while there is room (``MAX_CHARS``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from newsletter.models import StoredPaper
from newsletter.sources.clean import ELLIPSIS, clean_abstract, short_name, split_sentences

__all__ = ["MAX_CHARS", "point_excerpt", "why_phrases"]

MAX_CHARS = 400
_CONTRIBUTION = re.compile(
    r"\b(?:we|this (?:paper|work|study|report)|our (?:work|paper))\b(?:\s+\w+){0,3}?\s+"
    r"(?:propose|introduce|present|develop|design|build|release|offer|unveil|contribute|construct|"
    r"create|describe|formulate|establish|devise|curate|train|apply|study|investigate)s?\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"'([^']{2,80})'")
_LISTED = re.compile(r"^(?:matches|shares words with your profile):\s*(.+)$")


def why_phrases(why: str) -> tuple[str, ...]:
    """The phrases a reason names: quoted ones, or the list after 'matches:'; none for a liked title."""
    if why.startswith(("similar to a paper", "closest")):
        return ()
    listed = _LISTED.match(why)
    if listed:
        return tuple(p.strip(" …") for p in listed.group(1).split(",") if len(p.strip(" …")) > 1)
    return tuple(_QUOTED.findall(why))


@lru_cache(maxsize=8192)  # the same paper for many subscribers, often with the same reason
def point_excerpt(paper: StoredPaper, why: str = "") -> str:
    """The excerpt for ``paper`` in a digest whose reason for it is ``why`` (cleaned display text)."""
    sentences = split_sentences(clean_abstract(paper.abstract, paper.title))
    point = _from_contribution(sentences, paper.title)  # never the background before it
    summary = paper.details.ai_summary
    chosen = [summary] if summary else point[:1]
    phrase = _sentence_naming(point, why_phrases(why), " ".join(chosen))
    if phrase and phrase not in chosen:
        chosen.append(phrase)
    if not summary and len(chosen) == 1:
        chosen += point[1:2]  # the sentence after the contribution
    return _fit([c for c in chosen if c])


def _from_contribution(sentences: list[str], title: str) -> list[str]:
    """The sentences from the first that states the contribution, else from the first opening with the
    work's name (a title's head can be a common word: 'LLMs: Can They ...' over 'LLMs are used ...'),
    else all of them."""
    name = short_name(title)
    named = (i for i, s in enumerate(sentences) if name and s.startswith(f"{name} "))  # 'PolicyGuide ...'
    stated = next((i for i, s in enumerate(sentences) if _CONTRIBUTION.search(s)), None)
    return sentences[next(named, 0) if stated is None else stated :]


def _sentence_naming(sentences: list[str], phrases: tuple[str, ...], shown: str) -> str | None:
    """The first sentence naming one of ``phrases`` (case-insensitive), unless ``shown`` names it."""
    for phrase in phrases:
        words = re.split(r"[\s-]+", phrase.rstrip("s"))  # 'world models' is named by 'world-model'
        pattern = re.compile(r"\b" + r"[\s-]+".join(map(re.escape, words)), re.IGNORECASE)
        if pattern.search(shown):
            return None
        found = next((s for s in sentences if pattern.search(s)), None)
        if found:
            return found
    return None


def _fit(chosen: list[str]) -> str:
    """As many of ``chosen`` as fit in MAX_CHARS (at least the first, cut at a word)."""
    kept: list[str] = []
    for sentence in chosen:
        if len(" ".join([*kept, sentence])) > MAX_CHARS:
            break
        kept.append(sentence)
    if kept:
        return " ".join(kept)
    cut = chosen[0][: MAX_CHARS - 1].rsplit(" ", 1)[0] if chosen else ""
    return cut.rstrip(" ,;:-–—") + ELLIPSIS if cut else ""
