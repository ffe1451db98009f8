"""Shared scoring steps: the prepared papers, z-scores, and score tensors -> ranked lists."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from newsletter.models import Scored, StoredPaper, normalize_arxiv_id, normalize_title

_ARXIV_PREFIX = re.compile(r"^(arxiv:|https?://arxiv\.org/(abs|pdf)/)", re.IGNORECASE)
MAD_TO_SIGMA = 1.4826
MIN_SPREAD = 0.02  # in similarity units: a query that barely touches any paper must not look like an outlier
EXCLUDED_WHY = "about a topic you excluded"


class Catalog:
    """The prepared papers, addressable by key, arXiv id or normalised title."""

    def __init__(self, papers: Sequence[StoredPaper]) -> None:
        self.papers = tuple(papers)
        self.rows: dict[str, int] = {}
        for i, paper in enumerate(self.papers):
            for name in (paper.key, paper.arxiv_id, normalize_title(paper.title)):
                if name:
                    self.rows.setdefault(name, i)

    def __len__(self) -> int:
        return len(self.papers)

    def missing(self, papers: Sequence[StoredPaper]) -> list[StoredPaper]:
        return [p for p in papers if p.key not in self.rows]

    def rows_of(self, papers: Sequence[StoredPaper]) -> np.ndarray:
        return np.array([self.rows[p.key] for p in papers], dtype=np.int64)

    def find(self, item: str) -> int | None:
        """Row of a liked item given as an arXiv id (or arXiv: / abs URL form) or a title, else None."""
        arxiv = normalize_arxiv_id(_ARXIV_PREFIX.sub("", item.strip()))
        if arxiv is not None and arxiv in self.rows:
            return self.rows[arxiv]
        return self.rows.get(normalize_title(item))

    def merged(self, papers: Sequence[StoredPaper]) -> list[StoredPaper]:
        """The prepared papers plus any of ``papers`` not yet among them."""
        return [*self.papers, *self.missing(papers)]


def robust_z(
    values: np.ndarray, floor: float = MIN_SPREAD, reference: np.ndarray | None = None
) -> np.ndarray:
    """(x - median) / (1.4826 * MAD) along the last axis: how far above a typical paper each is.

    The median and MAD come from ``reference`` (same leading shape) when given, else from ``values``.
    """
    ref = values if reference is None else reference
    med = np.median(ref, axis=-1, keepdims=True)
    mad = np.median(np.abs(ref - med), axis=-1, keepdims=True) * MAD_TO_SIGMA
    return (values - med) / np.maximum(mad, floor)


def standard_z(values: np.ndarray, floor: float = MIN_SPREAD) -> np.ndarray:
    """(x - mean) / std along the last axis, NaNs left out; for sparse scores whose median is zero."""
    mean = np.nanmean(values, axis=-1, keepdims=True)
    std = np.nanstd(values, axis=-1, keepdims=True)
    return (values - mean) / np.maximum(std, floor)


class Explain(Protocol):
    """Reasons for one subscriber's papers, given each paper's winning column and prepared row."""

    def __call__(self, subscriber: int, columns: np.ndarray, rows: np.ndarray) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class BatchScores:
    """A batch of subscribers scored over the candidate papers."""

    best: np.ndarray  # (subscribers, candidates) the best column's score
    best_col: np.ndarray  # (subscribers, candidates) which column it was
    excluded: np.ndarray  # (subscribers, candidates) bool: mainly about an excluded topic
    explain: Explain


class BestColumn:
    """Running max over column groups, remembering which column won (no big stacked tensor)."""

    def __init__(self, subscribers: int, candidates: int) -> None:
        self.best = np.full((subscribers, candidates), -np.inf, dtype=np.float32)
        self.col = np.zeros((subscribers, candidates), dtype=np.int64)
        self.width = 0

    def add(self, block: np.ndarray) -> None:
        """Fold in a (subscribers, k, candidates) group of columns; they are numbered from ``width``."""
        if block.shape[1] == 0:
            return
        arg = block.argmax(axis=1)
        top = np.take_along_axis(block, arg[:, None, :], axis=1)[:, 0, :]
        better = top > self.best
        self.best[better] = top[better]
        self.col[better] = arg[better] + self.width
        self.width += block.shape[1]


def emit(
    papers: Sequence[StoredPaper],
    rows: np.ndarray,
    batch: BatchScores,
    threshold: float,
    only_relevant: bool = False,
) -> Iterator[list[Scored]]:
    """Per subscriber: papers best first (ties by trending rank, then times seen), ``relevant`` set."""
    relevant = (batch.best >= threshold) & ~batch.excluded
    ties = tie_order(papers)
    everything = np.arange(len(papers))
    for b in range(batch.best.shape[0]):
        idx = np.flatnonzero(relevant[b]) if only_relevant else everything
        order = idx[np.lexsort((ties[idx], -np.round(batch.best[b, idx], 6)))]
        whys = batch.explain(b, batch.best_col[b, order], rows[order])
        yield [
            Scored(
                paper=papers[i],
                score=float(batch.best[b, i]),
                why=EXCLUDED_WHY if batch.excluded[b, i] else why,
                relevant=bool(relevant[b, i]),
            )
            for i, why in zip(order.tolist(), whys, strict=True)
        ]


def tie_order(papers: Sequence[StoredPaper]) -> np.ndarray:
    """Each paper's place when sorted by trending rank, then by how many dumps listed it."""
    order = sorted(range(len(papers)), key=lambda i: (papers[i].best_rank, -papers[i].times_seen))
    ties = np.empty(len(papers), dtype=np.int64)
    ties[order] = np.arange(len(papers))
    return ties
