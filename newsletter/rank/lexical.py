"""Lexical ranking: literal phrase matches and TF-IDF over title + abstract. Pure Python and numpy.

Each interest phrase is its own column: how strongly the paper states it (the phrase or its acronym,
a title mention counting three times, saturating; a phrase common across the papers needs more
mentions). The whole profile (interests + about) and each liked paper are TF-IDF cosine columns,
z-scored against the prepared papers. A paper's score is its best column, so one strongly matched
interest is enough; papers scoring under the threshold are not relevant.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from newsletter.models import Scored, StoredPaper, Subscriber
from newsletter.rank.profile import Explainer, Profile, compile_profile
from newsletter.rank.scoring import BatchScores, BestColumn, Catalog, emit, standard_z
from newsletter.rank.text import STOPWORDS, acronym, count_phrase, phrase_tokens, stem, tokens, words

TITLE_WEIGHT = 3.0  # a phrase in the title counts as much as three mentions in the abstract
COMMON_SHARE = 0.05  # a phrase found in more than this share of papers needs proportionally more mentions
CHUNK = 1024  # subscribers scored together in one array


@dataclass(frozen=True, slots=True)
class LexicalParams:
    """Global knobs (never per subscriber). Chosen with benchmarks/ranking_research.py."""

    threshold: float = 0.55  # best column needed for a paper to be relevant
    phrase_half: float = 1.0  # weighted mentions that give half the full phrase strength
    words_scale: float = 0.3  # TF-IDF z-score -> column score (z = 1.8 reaches the threshold)
    exclude_threshold: float = 0.5  # phrase strength at which a paper is about an excluded topic


@dataclass(frozen=True, slots=True)
class Query:
    """A text as TF-IDF query terms found in the papers, their matrix rows and normalised weights."""

    terms: tuple[str, ...]
    ids: np.ndarray
    weights: np.ndarray


@dataclass(slots=True)
class LexicalIndex:
    """Tokenised papers; phrase strengths, TF-IDF rows and queries are memoised."""

    papers: tuple[StoredPaper, ...]
    titles: list[list[str]] = field(default_factory=list)
    abstracts: list[list[str]] = field(default_factory=list)
    df: Counter[str] = field(default_factory=Counter)
    docs: dict[str, set[int]] = field(default_factory=dict)  # term -> papers containing it
    _phrases: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)
    _term_ids: dict[str, int] = field(default_factory=dict)
    _rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    _queries: dict[str, Query] = field(default_factory=dict)
    _idf: dict[str, float] = field(default_factory=dict)
    _doc_norms: np.ndarray = field(default_factory=lambda: np.ones(0, dtype=np.float32))

    @classmethod
    def build(cls, papers: Sequence[StoredPaper]) -> LexicalIndex:
        index = cls(papers=tuple(papers))
        for i, paper in enumerate(papers):
            title, abstract = tokens(paper.title), tokens(paper.abstract)
            index.titles.append(title)
            index.abstracts.append(abstract)
            for term in set(title) | set(abstract):
                index.docs.setdefault(term, set()).add(i)
                index.df[term] += 1
        index._doc_norms = index._norms()
        return index

    @property
    def size(self) -> int:
        return len(self.papers)

    def idf(self, term: str) -> float:
        value = self._idf.get(term)
        if value is None:
            value = self._idf[term] = math.log((1 + self.size) / (1 + self.df.get(term, 0))) + 1.0
        return value

    def literal(self, phrase: str, half: float) -> np.ndarray:
        """Per paper 0..1: how strongly it states the phrase (or its acronym)."""
        key = (phrase, half)
        if key not in self._phrases:
            counts = self._phrase_counts(phrase)
            share = float((counts > 0).mean()) if self.size else 0.0
            needed = half * max(1.0, share / COMMON_SHARE)
            self._phrases[key] = (counts / (counts + needed)).astype(np.float32)
        return self._phrases[key]

    def _phrase_counts(self, phrase: str) -> np.ndarray:
        counts = np.zeros(self.size, dtype=np.float32)
        for form in (phrase_tokens(phrase), _acronym_form(phrase)):
            for i in self._docs_with_all(form):
                counts[i] += TITLE_WEIGHT * count_phrase(self.titles[i], form) + count_phrase(
                    self.abstracts[i], form
                )
        return counts

    def _docs_with_all(self, terms: Sequence[str]) -> set[int]:
        if not terms or any(t not in self.docs for t in terms):
            return set()
        return set.intersection(*(self.docs[t] for t in terms))

    def _norms(self) -> np.ndarray:
        norms = np.zeros(self.size, dtype=np.float32)
        for i, (title, abstract) in enumerate(zip(self.titles, self.abstracts, strict=True)):
            tf = Counter(title + abstract)
            norms[i] = math.sqrt(sum(((1 + math.log(c)) * self.idf(t)) ** 2 for t, c in tf.items()))
        return np.maximum(norms, 1e-6)

    def _row_id(self, term: str) -> int:
        """Row of ``term`` in the TF-IDF matrix (normalised weight per paper), computed on first use."""
        row_id = self._term_ids.get(term)
        if row_id is None:
            row_id = len(self._term_ids)
            if row_id == len(self._rows):
                grown = np.zeros((max(64, 2 * len(self._rows)), self.size), dtype=np.float32)
                grown[: len(self._rows)] = self._rows.reshape(len(self._rows), self.size)
                self._rows = grown
            for i in self.docs.get(term, ()):
                tf = self.titles[i].count(term) + self.abstracts[i].count(term)
                self._rows[row_id, i] = (1 + math.log(tf)) * self.idf(term) / self._doc_norms[i]
            self._term_ids[term] = row_id
        return row_id

    def query(self, text: str) -> Query:
        cached = self._queries.get(text)
        if cached is None:
            tf = Counter(tokens(text))
            weight = {t: (1 + math.log(c)) * self.idf(t) for t, c in tf.items()}
            norm = max(math.sqrt(sum(w * w for w in weight.values())), 1e-6)
            terms = tuple(t for t in tf if t in self.docs)  # the others match no paper
            cached = Query(
                terms=terms,
                ids=np.array([self._row_id(t) for t in terms], dtype=np.int64),
                weights=np.array([weight[t] / norm for t in terms], dtype=np.float32),
            )
            self._queries[text] = cached
        return cached

    def tfidf(self, texts: Sequence[str]) -> np.ndarray:
        """(texts, papers) TF-IDF cosine of each text against each paper."""
        queries = [self.query(t) for t in texts]
        ids = np.concatenate([q.ids for q in queries]) if queries else np.zeros(0, dtype=np.int64)
        if ids.size == 0:
            return np.zeros((len(texts), self.size), dtype=np.float32)
        used, column = np.unique(ids, return_inverse=True)
        weights = np.zeros((len(texts), len(used)), dtype=np.float32)
        owner = np.repeat(np.arange(len(texts)), [len(q.ids) for q in queries])
        weights[owner, column] = np.concatenate([q.weights for q in queries])
        return weights @ self._rows[used]

    def shared_words(self, text: str, rows: np.ndarray, limit: int = 3) -> list[list[str]]:
        """Per paper row: the profile words contributing most to its TF-IDF match, as written."""
        q = self.query(text)
        if not q.terms:
            return [[] for _ in rows]
        contrib = q.weights[:, None] * self._rows[q.ids][:, rows]  # (terms, papers)
        top = np.argsort(-contrib, axis=0)[:limit]
        surface = _surface_forms(text)
        return [
            [surface.get(q.terms[t], q.terms[t]) for t in top[:, j] if contrib[t, j] > 0]
            for j in range(len(rows))
        ]


def _acronym_form(phrase: str) -> tuple[str, ...]:
    short = acronym(phrase)
    return (short,) if short else ()


@lru_cache(maxsize=4096)
def _surface_forms(text: str) -> dict[str, str]:
    forms: dict[str, str] = {}
    for word in words(text):
        if word.lower() not in STOPWORDS:
            forms.setdefault(stem(word), word)
    return forms


class LexicalRanker:
    """The fallback ranker: no model, decent on its own."""

    name = "lexical"

    def __init__(self, params: LexicalParams | None = None) -> None:
        self.params = params or LexicalParams()
        self._catalog = Catalog(())
        self._index = LexicalIndex.build(())

    def prepare(self, papers: Sequence[StoredPaper]) -> None:
        """Tokenise every candidate once; they are also the background the z-scores are taken against."""
        self._catalog = Catalog(papers)
        self._index = LexicalIndex.build(self._catalog.papers)

    def rank(self, papers: Sequence[StoredPaper], subscriber: Subscriber) -> list[Scored]:
        return next(self.rank_many(papers, [subscriber]))

    def rank_many(
        self, papers: Sequence[StoredPaper], subscribers: Sequence[Subscriber], only_relevant: bool = False
    ) -> Iterator[list[Scored]]:
        """One ranked list per subscriber, in order (only the relevant papers when ``only_relevant``)."""
        if self._catalog.missing(papers):
            self.prepare(self._catalog.merged(papers))
        rows = self._catalog.rows_of(papers)
        for start in range(0, len(subscribers), CHUNK):
            profiles = [compile_profile(s) for s in subscribers[start : start + CHUNK]]
            yield from emit(
                papers, rows, self.score_batch(profiles, rows), self.params.threshold, only_relevant
            )

    def score_batch(self, profiles: Sequence[Profile], rows: np.ndarray) -> BatchScores:
        """Columns [interests | about (unused) | liked | profile words], reduced to the best per paper."""
        width_k = max(len(p.interests) for p in profiles)
        width_l = max(len(p.liked) for p in profiles)
        best = BestColumn(len(profiles), len(rows))
        best.add(self._interest_columns(profiles, width_k)[:, :, rows])
        best.add(
            np.full((len(profiles), 1, len(rows)), -np.inf, dtype=np.float32)
        )  # about: in the words column
        best.add(self._liked_columns(profiles, width_l)[:, :, rows])
        words = self.params.words_scale * standard_z(self._index.tfidf([p.words for p in profiles]))
        best.add(words[:, None, rows])
        excluded = np.stack([self._excluded(p)[rows] for p in profiles])
        explain = Explainer(
            profiles, (width_k, width_l), self._literal, self._index.shared_words, self._liked_title
        )
        return BatchScores(best.best, best.col, excluded, explain)

    def _literal(self, phrase: str) -> np.ndarray:
        return self._index.literal(phrase, self.params.phrase_half)

    def _interest_columns(self, profiles: Sequence[Profile], width: int) -> np.ndarray:
        out = np.full((len(profiles), width, self._index.size), -np.inf, dtype=np.float32)
        for b, profile in enumerate(profiles):
            for k, phrase in enumerate(profile.interests):
                out[b, k] = self._literal(phrase)
        return out

    def _liked_columns(self, profiles: Sequence[Profile], width: int) -> np.ndarray:
        out = np.full((len(profiles), width, self._index.size), -np.inf, dtype=np.float32)
        for b, profile in enumerate(profiles):
            for j, item in enumerate(profile.liked):
                out[b, j] = self._liked_column(item)
        return out

    def _liked_column(self, item: str) -> np.ndarray:
        """TF-IDF z-score against a liked paper; the paper itself is left out (it is not 'similar')."""
        row = self._catalog.find(item)
        text = (
            item if row is None else f"{self._catalog.papers[row].title} {self._catalog.papers[row].abstract}"
        )
        similarity = self._index.tfidf([text])
        if row is not None:
            similarity[0, row] = np.nan
        column = self.params.words_scale * standard_z(similarity)[0]
        return np.nan_to_num(column, nan=-np.inf)

    def _liked_title(self, item: str) -> str:
        row = self._catalog.find(item)
        return item if row is None else self._catalog.papers[row].title

    def _excluded(self, profile: Profile) -> np.ndarray:
        out = np.zeros(self._index.size, dtype=bool)
        for phrase in profile.exclude:
            out |= self._literal(phrase) >= self.params.exclude_threshold
        return out
