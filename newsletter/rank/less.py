""" "Less like this": a step after scoring that pushes down papers close to ones a subscriber marked.

For each paper, ``d`` is its similarity to the closest paper the profile lists in ``disliked``, in the
units of the ranker's columns (a z-score above a typical paper, by the same kinds of evidence: for the
semantic ranker the better of vector and word similarity, as its score may come from either).
Its score drops by ``weight * max(0, d - bar)``: nothing for a paper no closer to a marked paper than
a liked paper would have to be to count, and with weight 1 a relevant paper close enough to count
stays only while some part of the profile matches it at least as strongly as the marked paper does.
A paper this pushes under the bar says so: "less like '<title>' you marked".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from newsletter.rank.batch import TextTable
from newsletter.rank.profile import Profile
from newsletter.rank.reasons import BELOW, quoted
from newsletter.rank.scoring import BatchScores, Explain, View, padded, row_max

WEIGHT = 1.0  # score lost per unit of similarity to a marked paper above the bar

# (items, candidates) similarity of each candidate to each paper named (a title, key or arXiv id)
SimilarTo = Callable[[Sequence[str], View], np.ndarray]


def less_like(
    scores: BatchScores,
    profiles: Sequence[Profile],
    view: View,
    similar_to: SimilarTo,
    title: Callable[[str], str],
) -> BatchScores:
    """``scores`` with the penalty applied; unchanged when no profile in the chunk marked a paper."""
    if not any(p.disliked for p in profiles) or scores.threshold is None:
        return scores
    table = TextTable()
    ids = table.ids([p.disliked for p in profiles])
    closeness = padded(similar_to(table.texts, view))
    nearest = row_max(closeness, ids)  # (subscribers, candidates)
    bar = scores.threshold
    penalty = _penalty(scores.best, nearest, bar)
    lowered = scores.best - penalty
    relevant = scores.relevant & (lowered >= bar)
    dropped = scores.relevant & ~relevant
    why = _Explain(scores.explain, dropped, closeness, ids, table.texts, title)
    fields = {f: getattr(scores, f) for f in BatchScores.__dataclass_fields__}
    fields.update(relevant=relevant, explain=why)
    return Lowered(**fields, penalty=penalty, lowered=lowered)


def _penalty(best: np.ndarray, nearest: np.ndarray, bar: np.ndarray) -> np.ndarray:
    """weight * max(0, nearest - bar); a paper that is itself marked (+inf) drops to a score of 0 at most."""
    itself = np.isposinf(nearest)
    excess = np.where(itself, 0.0, np.nan_to_num(nearest - bar, neginf=0.0))
    penalty = WEIGHT * np.maximum(excess, 0.0)
    return np.where(itself, np.maximum(best, 0.0), penalty).astype(np.float32)


def _none() -> np.ndarray:
    return np.zeros((0, 0), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Lowered(BatchScores):
    """BatchScores after the penalty: ``best`` and the listed values are lowered by it."""

    penalty: np.ndarray = field(default_factory=_none)  # (subscribers, candidates)
    lowered: np.ndarray = field(default_factory=_none)  # best - penalty

    @property
    def best(self) -> np.ndarray:
        return self.lowered

    def values(self, subs: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """As BatchScores.values, less the penalty (a relevant paper still never below its bar)."""
        value = BatchScores.values(self, subs, cands)
        if self.bar is None:
            return value  # the (lowered) best column
        at = np.nonzero(self.relevant[subs, cands])[0]
        lowered = value[at] - self.penalty[subs[at], cands[at]]
        value[at] = np.maximum(lowered, self.bar[subs[at], 0])
        return value


@dataclass(frozen=True, slots=True)
class _Explain:
    """The ranker's reasons, except for papers the penalty pushed under the bar."""

    base: Explain
    dropped: np.ndarray  # (subscribers, candidates) relevant before the penalty, not after
    closeness: np.ndarray  # padded (marked papers + 1, candidates)
    ids: np.ndarray  # (subscribers, marked) ids into closeness
    texts: list[str]
    title: Callable[[str], str]

    def __call__(self, scores: BatchScores, subs: np.ndarray, cands: np.ndarray) -> list[str]:
        out = self.base(scores, subs, cands)
        for p in np.flatnonzero(self.dropped[subs, cands]).tolist():
            row = self.ids[subs[p]]
            marked = row[int(np.argmax(self.closeness[row, cands[p]]))]
            out[p] = less_why(self.title(self.texts[marked]))
        return out


@lru_cache(maxsize=1 << 12)
def less_why(title: str) -> str:
    return f"less like '{quoted(title, 50)}' you marked{BELOW}"
