"""The short reason shown next to each paper, computed only for the (subscriber, paper) pairs emitted.

A relevant paper says what it matched; a paper that is not relevant says what it came closest to and
that this was below the threshold, so a near miss never reads like a match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from newsletter.rank.index import LexicalIndex, Postings, QueryBatch, remember
from newsletter.rank.profile import LIKED_PREFIX, Layout, Profile
from newsletter.rank.scoring import BatchScores, Named

MATCH_LEVEL = 0.5  # literal phrase strength that counts as a match in the reason text
MAX_REASON_CHARS = 90
BELOW = " (below threshold)"


class Reasons:
    """Reasons for one chunk of profiles, from its layout, literal phrase table and word queries."""

    def __init__(
        self,
        profiles: Sequence[Profile],
        layout: Layout,
        literal: np.ndarray,  # (texts, candidates) literal phrase strength
        words: WordEvidence,
        liked_title: Callable[[str], str],
        named: Named | None = None,  # the papers that reach the bar only because they name an interest
    ) -> None:
        self.profiles, self.layout, self.literal = profiles, layout, literal
        self.words, self.liked_title, self.named = words, liked_title, named

    def __call__(self, scores: BatchScores, subs: np.ndarray, cands: np.ndarray) -> list[str]:
        """One reason per pair. Pairs sharing a reason (same text, same verdict) share one string."""
        out = np.empty(len(subs), dtype=object)
        relevant = scores.relevant[subs, cands]
        excluded = scores.excluded[subs, cands]
        matched = self._matched(subs, cands) & relevant[:, None]
        has_match = matched.any(axis=1)
        named = relevant & ~excluded & ~has_match & self._lifted(subs, cands)
        cols = scores.columns.which(subs, cands)
        on_words = relevant & ~has_match & ~named & (cols == self.layout.words_column)
        rest = ~excluded & ~has_match & ~named & ~on_words
        self._excluded(out, scores, subs, cands, excluded)
        self._matches(out, subs, matched, has_match)
        self._names(out, subs, cands, named)
        where = np.flatnonzero(on_words)
        liked = (self.layout.liked[subs[where]] >= 0).any(axis=1) & self.words.queries.with_extra  # blended
        _fill(out, where, 2 * self.words.shared_codes(subs[where], cands[where]) + liked, self.words.why)
        where = np.flatnonzero(rest)
        _fill(out, where, 2 * self._column_text(subs[where], cols[where]) + relevant[where], self._why)
        return out.tolist()

    def _matched(self, subs: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """(pairs, K) which interests the paper states literally."""
        ids = self.layout.interests[subs]
        strength = self.literal[np.maximum(ids, 0), cands[:, None]]
        return (strength >= MATCH_LEVEL) & (ids >= 0)

    def _lifted(self, subs: np.ndarray, cands: np.ndarray) -> np.ndarray:
        if self.named is None:
            return np.zeros(len(subs), dtype=bool)
        return self.named.mask[subs, cands]

    def _names(self, out: np.ndarray, subs: np.ndarray, cands: np.ndarray, where: np.ndarray) -> None:
        """'names your interest ...' for papers that reach the bar by naming it."""
        at = np.flatnonzero(where)
        if not len(at) or self.named is None:
            return
        ids = self.layout.interests[subs[at]]
        texts = ids[np.arange(len(at)), self.named.interest(ids, cands[at])]
        _fill(out, at, texts, lambda i: names_why(self.layout.texts[i]))

    def _excluded(
        self, out: np.ndarray, scores: BatchScores, subs: np.ndarray, cands: np.ndarray, where: np.ndarray
    ) -> None:
        at = np.flatnonzero(where)
        which = scores.exclusions.which(subs[at], cands[at])
        topics = self.layout.exclude[subs[at], which]
        _fill(out, at, topics, lambda i: excluded_why(self.layout.texts[i]))

    def _matches(self, out: np.ndarray, subs: np.ndarray, matched: np.ndarray, where: np.ndarray) -> None:
        """'matches: ...' naming the interests the paper states, in the profile's order."""
        single = where & (matched.sum(axis=1) == 1)
        at = np.flatnonzero(single)
        ids = self.layout.interests[subs[at], matched[at].argmax(axis=1)]
        _fill(out, at, ids, lambda i: matches_why((self.layout.texts[i],)))
        for p in np.flatnonzero(where & ~single).tolist():
            interests = self.profiles[subs[p]].interests
            out[p] = matches_why(tuple(t for t, m in zip(interests, matched[p].tolist(), strict=False) if m))

    def _column_text(self, subs: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Table id of the text behind each pair's winning column; len(texts) for about, +1 for words."""
        layout, about = self.layout, self.layout.about_column
        n = len(layout.texts)
        interest = layout.interests[subs, np.minimum(cols, about - 1)] if about else np.full(len(subs), n)
        liked_col = np.clip(cols - about - 1, 0, max(layout.liked.shape[1] - 1, 0))
        liked = layout.liked[subs, liked_col] if layout.liked.shape[1] else np.full(len(subs), n)
        return np.select(
            [cols < about, cols == about, cols < layout.words_column], [interest, n, liked], default=n + 1
        )

    def _why(self, code: int) -> str:
        text, relevant = divmod(code, 2)
        if text == len(self.layout.texts):
            return about_why(bool(relevant))
        if text > len(self.layout.texts):
            return words_why((), bool(relevant))
        phrase = self.layout.texts[text]
        if phrase.startswith(LIKED_PREFIX):
            return liked_why(self.liked_title(phrase[len(LIKED_PREFIX) :]), bool(relevant))
        return interest_why(phrase, bool(relevant))


def _fill(out: np.ndarray, where: np.ndarray, keys: np.ndarray, make: Callable[[int], str]) -> None:
    """out[where] = make(key) for each pair's key, calling ``make`` once per distinct key."""
    if not len(where):
        return
    distinct, inverse = np.unique(keys, return_inverse=True)
    strings = np.empty(len(distinct), dtype=object)
    strings[:] = [make(k) for k in distinct.tolist()]
    out[where] = strings[inverse.ravel()]


class WordEvidence:
    """The profile-words TF-IDF queries of a chunk, to name the words a paper shares with a profile."""

    LIMIT = 3  # words named

    def __init__(
        self, index: LexicalIndex, queries: QueryBatch, postings: Postings, cand: np.ndarray
    ) -> None:
        self.index, self.queries, self.postings, self.cand = index, queries, postings, cand
        self.base = len(index.names) + 1

    def shared_codes(self, subs: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """Per pair, the (up to 3) term ids the paper shares most with the profile, packed in one int."""
        terms = self.index.top_terms(self.queries, self.postings, subs, self.cand[cands], self.LIMIT)
        codes = np.zeros(len(subs), dtype=np.int64)
        for k in range(self.LIMIT):
            codes = codes * self.base + terms[:, k] + 1
        return codes

    def why(self, code: int) -> str:
        """The reason for ``code``: 2 x shared_codes' code + 1 if the profile has liked papers."""
        found = self.index.reasons.get(code)
        if found is None:
            terms, (rest, liked) = [], divmod(code, 2)
            for _ in range(self.LIMIT):
                rest, term = divmod(rest, self.base)
                terms.append(term - 1)
            shared = tuple(self.index.word(t) for t in reversed(terms) if t >= 0)
            found = words_why(shared, True, bool(liked))
            remember(self.index.reasons, code, found)
        return found


@lru_cache(maxsize=1 << 14)
def matches_why(phrases: tuple[str, ...]) -> str:
    return clip("matches: " + ", ".join(phrases))


@lru_cache(maxsize=1 << 14)
def names_why(phrase: str) -> str:
    return f"names your interest '{quoted(phrase, 60)}'"


@lru_cache(maxsize=1 << 14)
def interest_why(phrase: str, relevant: bool) -> str:
    if relevant:
        return f"close to your interest '{quoted(phrase, 60)}'"
    return f"closest: '{quoted(phrase, 50)}'{BELOW}"


def about_why(relevant: bool) -> str:
    if relevant:
        return "close to what you wrote about your work"
    return "closest: what you wrote about your work" + BELOW


@lru_cache(maxsize=1 << 12)
def liked_why(title: str, relevant: bool) -> str:
    if relevant:
        return clip(f"similar to a paper you liked: {title}")
    return f"closest: a paper you liked, '{quoted(title, 40)}'{BELOW}"


@lru_cache(maxsize=1 << 14)
def words_why(shared: tuple[str, ...], relevant: bool, liked: bool = False) -> str:
    if not relevant:
        return "closest: the words of your profile" + BELOW
    if not shared:
        return "close to your profile"
    whose = "your profile and the papers you liked" if liked else "your profile"
    return clip(f"shares words with {whose}: " + ", ".join(shared))


@lru_cache(maxsize=1 << 12)
def excluded_why(topic: str) -> str:
    return f"about '{quoted(topic, 50)}', a topic you excluded"


def quoted(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def clip(text: str) -> str:
    if len(text) <= MAX_REASON_CHARS:
        return text
    return text[: MAX_REASON_CHARS - 1].rstrip(" ,:") + "…"
