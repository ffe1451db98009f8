"""What a ranker's score columns say about one paper: `newsletter explain`'s numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from newsletter.models import StoredPaper, Subscriber
from newsletter.rank.base import Ranker
from newsletter.rank.core import ChunkedRanker
from newsletter.rank.less import Lowered
from newsletter.rank.profile import compile_profile


@dataclass(frozen=True)
class Breakdown:
    """What the ranker's score columns say about one paper (all unknown for a ranker without them)."""

    bar: float | None = None  # the score a paper must reach
    column: str = "not reported by this ranker"  # the part of the profile behind the best score
    best: float = 0.0  # the best column, before any penalty
    excluded: bool = False  # mainly about a topic the subscriber excluded
    penalty: float = 0.0  # taken off for looking like a paper marked "less like this"
    unsupported: bool = False  # its best column clears the bar, but its words do not support it


def breakdown(ranker: Ranker, paper: StoredPaper, profiled: Subscriber) -> Breakdown:
    """The columns behind ``paper``'s score for ``profiled`` (the subscriber with their feedback)."""
    if not isinstance(ranker, ChunkedRanker):
        return Breakdown()
    profiled = ranker.readable(profiled)
    scores = ranker.breakdown([paper], profiled)
    one = np.zeros(1, dtype=np.int64)
    values = scores.columns.values_at(one, one)[0]
    return Breakdown(
        bar=float(scores.threshold[0, 0]) if scores.threshold is not None else None,
        column=column_name(profiled, int(np.argmax(values)), float(values.max()), ranker.words_column),
        best=float(values.max()),
        excluded=bool(scores.excluded[0, 0]),
        penalty=float(scores.penalty[0, 0]) if isinstance(scores, Lowered) else 0.0,
        unsupported=scores.unsupported is not None and bool(scores.unsupported[0, 0]),
    )


def column_name(subscriber: Subscriber, column: int, value: float, words: str) -> str:
    """Columns are numbered [interests | about | liked papers | the profile's words] (rank/profile.py);
    ``words``: the ranker's name for the last one."""
    profile = compile_profile(subscriber)
    k, liked = len(profile.interests), len(profile.liked)
    if column < k:
        name = f"interest '{profile.interests[column]}'"
    elif column == k:
        name = "what you wrote about your work"
    elif column <= k + liked:
        name = f"a paper you liked: {profile.liked[column - k - 1]}"
    else:
        name = words
    return f"{name} ({value:.3f})"
