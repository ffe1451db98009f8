"""Index arrays that let many subscribers' profiles be scored with a few matrix operations.

Profiles share phrases ("graph neural networks" is in many), so each distinct text is embedded and scored
against the papers once; a subscriber is a row of indices into that table, padded with -1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class TextTable:
    """Distinct texts in first-seen order, each with a row number."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}

    def add(self, text: str) -> int:
        return self.rows.setdefault(text, len(self.rows))

    def ids(self, groups: Sequence[Iterable[str]], width: int | None = None) -> np.ndarray:
        """(len(groups), width) row numbers of each group's texts, -1 where a group has fewer."""
        rows = self.rows
        lists = [[rows.setdefault(t, len(rows)) for t in group] for group in groups]
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        width = int(lengths.max(initial=0)) if width is None else width
        out = np.full((len(lists), width), -1, dtype=np.int64)
        out[np.arange(width) < lengths[:, None]] = [i for ids in lists for i in ids]
        return out

    @property
    def texts(self) -> list[str]:
        return list(self.rows)


def ragged_arange(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """concat(arange(s, s + c) for s, c in zip(starts, counts)), without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    offsets = np.repeat(starts - (ends - counts), counts)
    return np.arange(total, dtype=np.int64) + offsets
