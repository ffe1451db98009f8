"""Shared scoring steps: the prepared papers, z-scores, and score arrays -> ranked lists."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Protocol

import numpy as np

from newsletter.models import Scored, StoredPaper, arxiv_id_in, normalize_title, title_key_in
from newsletter.rank.batch import ragged_arange
from newsletter.rank.index import Postings

_NORMAL = NormalDist()
MAD_TO_SIGMA = 1.4826
MIN_SPREAD = 0.02  # in similarity units: a query that barely touches any paper must not look like an outlier


class Catalog:
    """The prepared papers (candidates and background), addressable by key, arXiv id or title."""

    def __init__(self, papers: Sequence[StoredPaper]) -> None:
        self.keys: dict[str, int] = {}  # paper key -> row
        self.names: dict[str, int] = {}  # arXiv id, normalised title or key (a first title) -> row
        kept: list[StoredPaper] = []
        for paper in papers:
            if paper.key not in self.keys:
                self.keys[paper.key] = len(kept)
                kept.append(paper)
        # a title a paper has now before one another was first stored under (as the store finds them)
        named = [(row, name) for row, p in enumerate(kept) for name in (p.arxiv_id, normalize_title(p.title))]
        for row, name in [*named, *((row, p.key) for row, p in enumerate(kept))]:
            if name:
                self.names.setdefault(name, row)
        self.papers = tuple(kept)
        self._found: dict[str, int | None] = {}
        self._titled: dict[str, list[int]] = {}  # normalised title -> every row with it (namesakes)
        for row, p in enumerate(kept):
            self._titled.setdefault(normalize_title(p.title), []).append(row)

    def __len__(self) -> int:
        return len(self.papers)

    def missing(self, papers: Sequence[StoredPaper]) -> list[StoredPaper]:
        return [p for p in papers if p.key not in self.keys]

    def rows_of(self, papers: Sequence[StoredPaper]) -> np.ndarray:
        return np.array([self.keys[p.key] for p in papers], dtype=np.int64)

    def find(self, item: str) -> int | None:
        """Row of a liked item given as an arXiv id (or arXiv: / abs URL form) or a title, else None."""
        if item not in self._found:
            arxiv = arxiv_id_in(item)
            row = self.names.get(arxiv) if arxiv is not None else None
            self._found[item] = row if row is not None else self.names.get(title_key_in(item))
        return self._found[item]

    def find_all(self, item: str) -> list[int]:
        """Rows of every paper an item names: the one its arXiv id names, else each paper with its title
        (papers that share a title are kept apart, and a title names them all)."""
        row = self.find(item)
        if row is None:
            return []
        arxiv = arxiv_id_in(item)
        if arxiv is not None and self.names.get(arxiv) == row:
            return [row]
        return self._titled.get(title_key_in(item), [row])

    def title(self, item: str) -> str:
        """A liked item as shown in reasons: the paper's title when it is prepared."""
        row = self.find(item)
        return item if row is None else self.papers[row].title


@dataclass(frozen=True, slots=True)
class Sentences:
    """Sentence vectors of a run of papers: paper j owns rows starts[j]:starts[j + 1] (at least one)."""

    vectors: np.ndarray  # (sentences, dim)
    starts: np.ndarray  # (papers + 1,) offsets

    @classmethod
    def none(cls, papers: int = 0) -> Sentences:
        return cls(np.zeros((0, 0), dtype=np.float32), np.zeros(papers + 1, dtype=np.int64))

    def take(self, rows: np.ndarray) -> Sentences:
        """The sentences of papers ``rows``, in that order."""
        counts = np.diff(self.starts)[rows]
        picked = ragged_arange(self.starts[rows], counts)
        return Sentences(self.vectors[picked], np.concatenate([[0], np.cumsum(counts)]))

    def best(self, queries: np.ndarray) -> np.ndarray:
        """(queries, papers) cosine of each query with its best-matching sentence of each paper."""
        return np.maximum.reduceat(queries @ self.vectors.T, self.starts[:-1], axis=1)


@dataclass(frozen=True, slots=True)
class View:
    """The candidates of one rank_many call, and the reference rows their z-scores are taken against."""

    papers: tuple[StoredPaper, ...]
    rows: np.ndarray  # catalog row of each candidate
    cols: np.ndarray  # catalog rows scored: the candidates and the statistics sample, ascending
    cand: np.ndarray  # position of each candidate in ``cols``
    stats: np.ndarray  # positions of the statistics sample in ``cols``
    ties: np.ndarray  # each candidate's place by trending rank, then times seen
    postings: Postings  # TF-IDF of the papers in ``cols``
    vectors: np.ndarray  # (len(cols), dim) paper vectors, or (len(cols), 0) for a lexical ranker
    titles: np.ndarray  # (len(cols), dim) title-only vectors, or (len(cols), 0) when not used
    sentences: Sentences  # the abstracts' sentence vectors of the papers in ``cols`` (maybe none)

    @property
    def candidate_of(self) -> dict[int, int]:
        """catalog row -> candidate index."""
        return {int(r): i for i, r in enumerate(self.rows.tolist())}


def everywhere(view: View) -> View:
    """``view`` with every scored paper (the reference papers too) as a candidate."""
    return replace(view, cand=np.arange(len(view.cols)))


def view_columns(rows: np.ndarray, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cols, position of each row in cols, position of each stats row in cols)."""
    cols = np.union1d(rows, stats)
    return cols, np.searchsorted(cols, rows), np.searchsorted(cols, stats)


def median(values: np.ndarray) -> np.ndarray:
    """np.median along the last axis (keepdims), via a full sort: several times faster for short rows."""
    ordered = np.sort(values, axis=-1)
    n = ordered.shape[-1]
    return (ordered[..., (n - 1) // 2 : (n - 1) // 2 + 1] + ordered[..., n // 2 : n // 2 + 1]) / 2


def robust_z(
    values: np.ndarray, view: View, floor: float = MIN_SPREAD, typical: float = -np.inf
) -> np.ndarray:
    """(x - median) / (1.4826 * MAD) at the candidates, median and MAD over the statistics sample;
    the median taken as at least ``typical``."""
    ref = np.take(values, view.stats, axis=-1)  # np.take keeps rows contiguous; a[:, idx] may not
    med = median(ref)
    mad = median(np.abs(ref - med)) * MAD_TO_SIGMA
    med = np.maximum(med, typical)
    return ((np.take(values, view.cand, axis=-1) - med) / np.maximum(mad, floor)).astype(np.float32)


def standard_z(values: np.ndarray, view: View, floor: float = MIN_SPREAD) -> np.ndarray:
    """(x - mean) / std at the candidates over the statistics sample (NaNs left out); for sparse scores."""
    ref = np.take(values, view.stats, axis=-1)
    nan = bool(np.isnan(ref).any())
    mean = (np.nanmean if nan else np.mean)(ref, axis=-1, keepdims=True)
    std = (np.nanstd if nan else np.std)(ref, axis=-1, keepdims=True)
    return ((np.take(values, view.cand, axis=-1) - mean) / np.maximum(std, floor)).astype(np.float32)


def max_threshold(columns: np.ndarray, chance: float) -> np.ndarray:
    """The z a profile's best column must reach so an unrelated paper passes with probability ``chance``.

    A score is the maximum over k columns, and the maximum of k independent standard normal
    z-scores exceeds t with probability 1 - Phi(t)^k: without this, a profile with eight columns
    would let through several times as many unrelated papers as one with two, and a terse profile
    would need a stronger match than a long one. Columns are correlated, so this overcorrects a little.
    """
    distinct, inverse = np.unique(np.maximum(columns, 1), return_inverse=True)
    values = [_NORMAL.inv_cdf((1 - chance) ** (1 / k)) for k in distinct.tolist()]
    return np.array(values, dtype=np.float32)[inverse.ravel()]


def padded(table: np.ndarray, fill: float = -np.inf) -> np.ndarray:
    """``table`` with one more row of ``fill``, so id -1 (no such text) reads that row."""
    return np.concatenate([table, np.full((1, table.shape[1]), fill, dtype=np.float32)])


class Columns:
    """A chunk's score columns, in groups: the best per (subscriber, candidate), and which column won.

    A table group is one row of a (texts + 1, candidates) table per profile id (-1 reads the padding
    row), plus an optional per-profile offset; its maximum is folded in without building a
    (subscribers, columns, candidates) tensor. Which column won is worked out only for emitted pairs.
    """

    def __init__(self, subscribers: int, candidates: int) -> None:
        self.best = np.full((subscribers, candidates), -np.inf, dtype=np.float32)
        self._groups: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []

    def add_table(self, table: np.ndarray, ids: np.ndarray, offset: np.ndarray | None = None) -> None:
        """Columns table[ids[:, k]] (+ offset) for each k; ``table`` comes from :func:`padded`."""
        self._groups.append((table, ids, offset))
        if ids.shape[1] == 0:
            return
        top = row_max(table, ids)
        if offset is not None:
            top += offset
        np.maximum(self.best, top, out=self.best)

    def add_gated(
        self,
        table: np.ndarray,
        bonus: np.ndarray,
        gates: tuple[np.ndarray, np.ndarray],
        ids: np.ndarray,
        offset: np.ndarray,
    ) -> None:
        """Columns table[ids[:, k]] + gate * bonus[ids[:, k]] + offset (offset per profile). ``gates``:
        (G, B, candidates) gate values, and (B, k) which of them each column takes."""
        values = table[ids] + offset[:, None, :]  # (B, k, candidates)
        levels, which = gates
        rows = np.arange(ids.shape[0])
        for k in range(ids.shape[1]):  # column by column: no second (B, k, candidates) array
            values[:, k] += levels[which[:, k], rows] * bonus[ids[:, k]]
        self.add_block(values)

    def add_block(self, values: np.ndarray) -> None:
        """A (subscribers, k, candidates) group of columns."""
        self._groups.append((values, None, None))
        if values.shape[1]:
            np.maximum(self.best, values.max(axis=1), out=self.best)

    def add(self, values: np.ndarray) -> None:
        """One column given directly, (subscribers, candidates)."""
        self._groups.append((values, None, None))
        np.maximum(self.best, values, out=self.best)

    def which(self, subs: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """The winning column (first of equals, numbered across groups in order) of each pair."""
        if not len(subs):
            return np.zeros(0, dtype=np.int64)
        return self.values_at(subs, cands).argmax(axis=1)

    def values_at(self, subs: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """(pairs, columns) every column's value at the given (subscriber, candidate) pairs."""
        parts = [pair_values(table, ids, subs, cands, offset) for table, ids, offset in self._groups]
        return np.concatenate(parts, axis=1)


def row_max(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(subscribers, candidates) max over k of table[ids[:, k]]."""
    top = table[ids[:, 0]]
    for k in range(1, ids.shape[1]):
        np.maximum(top, table[ids[:, k]], out=top)
    return top


def pair_values(
    table: np.ndarray, ids: np.ndarray | None, subs: np.ndarray, cands: np.ndarray, offset: np.ndarray | None
) -> np.ndarray:
    """(pairs, k) values of a group's columns at the given (subscriber, candidate) pairs."""
    if ids is None:
        return table[subs, :, cands] if table.ndim == 3 else table[subs, cands][:, None]
    values = table[ids[subs], cands[:, None]]
    return values + offset[subs, cands][:, None] if offset is not None else values


class Explain(Protocol):
    """Reasons for scored (subscriber, candidate) pairs."""

    def __call__(self, scores: BatchScores, subs: np.ndarray, cands: np.ndarray) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Exclusions:
    """Which papers are mainly about one of a profile's excluded topics."""

    table: np.ndarray  # padded (texts + 1, candidates) topic score
    ids: np.ndarray  # (subscribers, E) excluded topics' text ids
    threshold: float

    @property
    def mask(self) -> np.ndarray:
        if self.ids.shape[1] == 0:
            return np.zeros((self.ids.shape[0], self.table.shape[1]), dtype=bool)
        return row_max(self.table, self.ids) >= self.threshold

    def which(self, subs: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """Index (into the profile's exclude list) of the topic each pair is most about."""
        if not len(subs):
            return np.zeros(0, dtype=np.int64)
        return pair_values(self.table, self.ids, subs, cands, None).argmax(axis=1)


@dataclass(frozen=True, slots=True)
class Named:
    """Papers that name one of their profile's interests (see rank/naming.py)."""

    mask: np.ndarray  # (subscribers, candidates) bool: names one, and is close enough to the profile
    table: np.ndarray  # (texts, candidates) 2 where a paper names the interest, 1 where loosely

    def interest(self, ids: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """(pairs,) the column of the interest each pair's paper names (the first, most plainly);
        ``ids``: (pairs, K) the pairs' interest text ids, -1 for none."""
        strength = np.where(ids >= 0, self.table[np.maximum(ids, 0), cands[:, None]], 0.0)
        return strength.argmax(axis=1)


@dataclass(frozen=True, slots=True)
class BatchScores:
    """A chunk of subscribers scored over the candidate papers."""

    columns: Columns
    excluded: np.ndarray  # (subscribers, candidates) bool: mainly about an excluded topic
    exclusions: Exclusions
    relevant: np.ndarray  # (subscribers, candidates) bool: the verdict
    explain: Explain
    bar: np.ndarray | None = None  # (subscribers, 1) threshold: order relevant papers by corroboration
    threshold: np.ndarray | None = None  # (subscribers, 1) the bar the best column must clear
    unsupported: np.ndarray | None = None  # (subscribers, candidates) bool: clears it, but not by its words

    @property
    def best(self) -> np.ndarray:
        return self.columns.best

    def values(self, subs: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """The score each pair is listed and ordered by: its best column, or, for a relevant paper when
        ``bar`` is set, the mean of its two best columns, never below the bar it cleared.

        One strongly matched part of a profile is enough for a paper to be relevant, but among relevant
        papers one that two parts of the profile agree on (two interests, an interest and the about
        text, or the profile's words) is more surely on topic than one that a single generic phrase
        matches strongly ("kernels" in a paper on operating systems). Clipping at the bar keeps every
        relevant paper above every paper that missed it, so a list is still sorted by its scores; a paper
        whose best column clears the bar but whose words do not support it is listed just under it.
        """
        value = self.best[subs, cands]
        if self.unsupported is not None and self.threshold is not None:  # listed just under the bar
            held = np.nonzero(self.unsupported[subs, cands])[0]
            under = np.nextafter(self.threshold[subs[held], 0], np.float32(-np.inf))
            value[held] = np.minimum(value[held], under)
        if self.bar is None:
            return value
        relevant = np.nonzero(self.relevant[subs, cands])[0]
        if len(relevant):
            pairs = (subs[relevant], cands[relevant])
            value[relevant] = np.maximum(top_two_mean(self.columns.values_at(*pairs)), self.bar[pairs[0], 0])
        return value


def top_two_mean(values: np.ndarray) -> np.ndarray:
    """(rows,) mean of each row's two largest values (the largest alone when the row has one finite)."""
    if values.shape[1] < 2:
        return values.max(axis=1, initial=-np.inf)
    top = np.partition(values, values.shape[1] - 2, axis=1)[:, -2:]
    second, best = top.min(axis=1), top.max(axis=1)
    return np.where(np.isfinite(second), (best + second) / 2, best)


def emit(
    view: View, scores: BatchScores, only_relevant: bool, caps: np.ndarray | None = None
) -> Iterator[list[Scored]]:
    """Per subscriber: papers by :meth:`BatchScores.values`, highest first (ties by trending rank, then
    times seen), ``relevant`` set; at most ``caps[s]`` papers for subscriber s when given."""
    keep = scores.relevant if only_relevant else np.ones_like(scores.relevant)
    subs, cands = np.nonzero(keep)
    value = scores.values(subs, cands)
    keys = [view.ties[cands], -np.round(value, 6), subs]
    if scores.bar is not None:  # relevant papers clipped at the bar: the best column breaks their ties
        keys.insert(1, -np.round(scores.best[subs, cands], 6))
    order = np.lexsort(keys)
    subs, cands, value = subs[order], cands[order], value[order]
    counts = np.bincount(subs, minlength=len(scores.best))
    if caps is not None:  # sorted by subscriber, best first: keep each one's first caps[s]
        place = np.arange(len(subs)) - (np.cumsum(counts) - counts)[subs]
        kept = place < caps[subs]
        subs, cands, value = subs[kept], cands[kept], value[kept]
        counts = np.minimum(counts, caps)
    whys = scores.explain(scores, subs, cands)
    papers = np.empty(len(view.papers), dtype=object)
    papers[:] = view.papers
    relevant = scores.relevant[subs, cands]
    items = list(map(Scored, papers[cands].tolist(), value.tolist(), whys, relevant.tolist()))
    start = 0
    for end in np.cumsum(counts).tolist():
        yield items[start:end]
        start = end


def tie_order(papers: Sequence[StoredPaper]) -> np.ndarray:
    """Each paper's place when sorted by trending rank, then by how many dumps listed it."""
    order = sorted(range(len(papers)), key=lambda i: (papers[i].best_rank, -papers[i].times_seen))
    ties = np.empty(len(papers), dtype=np.int64)
    ties[order] = np.arange(len(papers))
    return ties
