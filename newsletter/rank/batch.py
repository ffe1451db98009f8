"""Index arrays that let many subscribers' profiles be scored with a few matrix operations.

Profiles share phrases ("diffusion models" is in many), so each distinct text is embedded and scored
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
        lists = [[self.add(t) for t in group] for group in groups]
        width = max((len(x) for x in lists), default=0) if width is None else width
        out = np.full((len(lists), width), -1, dtype=np.int64)
        for i, ids in enumerate(lists):
            out[i, : len(ids)] = ids
        return out

    @property
    def texts(self) -> list[str]:
        return list(self.rows)


def gather(table: np.ndarray, ids: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """table[ids] with ``fill`` where ids == -1; shape ids.shape + table.shape[1:]."""
    if table.shape[0] == 0:
        return np.full((*ids.shape, *table.shape[1:]), fill, dtype=np.float32)
    out = table[np.maximum(ids, 0)]
    out[ids < 0] = fill
    return out
