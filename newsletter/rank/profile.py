"""A subscriber's profile as the rankers read it, and where a chunk of profiles sits in a text table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from newsletter.models import Subscriber
from newsletter.rank.batch import TextTable
from newsletter.rank.text import affirmed

LIKED_PREFIX = "liked:"  # liked items share the text table with phrases, in their own namespace


@dataclass(frozen=True, slots=True)
class Profile:
    """What a ranker needs from a subscriber; hashable, so compiled queries can be cached by content."""

    interests: tuple[str, ...]
    about: str = ""
    liked: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()  # papers marked "less like this" (see rank/less.py)


def compile_profile(subscriber: Subscriber) -> Profile:
    return Profile(
        interests=_unique(subscriber.interests),
        about=affirmed(subscriber.about),
        liked=_unique(subscriber.liked),
        exclude=_unique(subscriber.exclude),
        disliked=_unique(subscriber.disliked),
    )


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    if len(items) < 2:
        return items
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(item.casefold(), item)
    return tuple(seen.values())


@dataclass(frozen=True, slots=True)
class Layout:
    """A chunk of profiles as rows of ids into one table of distinct texts (-1 padded).

    Score columns are numbered [interests | about | liked | words]: K + 1 + L + 1 of them.
    """

    texts: list[str]
    interests: np.ndarray  # (B, K)
    about: np.ndarray  # (B, 1)
    liked: np.ndarray  # (B, L), texts prefixed with LIKED_PREFIX
    exclude: np.ndarray  # (B, E)

    @classmethod
    def of(cls, profiles: Sequence[Profile]) -> Layout:
        table = TextTable()
        interests = table.ids([p.interests for p in profiles])
        about = table.ids([(p.about,) if p.about else () for p in profiles], width=1)
        liked = table.ids([[LIKED_PREFIX + x for x in p.liked] for p in profiles])
        exclude = table.ids([p.exclude for p in profiles])
        return cls(table.texts, interests, about, liked, exclude)

    @property
    def about_column(self) -> int:
        return self.interests.shape[1]

    @property
    def words_column(self) -> int:
        return self.interests.shape[1] + 1 + self.liked.shape[1]

    def columns(self, liked_as_one: bool = False) -> np.ndarray:
        """(B,) how many score columns each profile has: its texts, plus one for its words (with
        ``liked_as_one``, the liked papers count as one column: see ChunkedRanker.liked_offset)."""
        texts = (np.concatenate([self.interests, self.about], axis=1) >= 0).sum(axis=1) + 1
        liked = (self.liked >= 0).sum(axis=1)
        return texts + (np.minimum(liked, 1) if liked_as_one else liked)

    def phrase_ids(self) -> np.ndarray:
        """Distinct table ids of the interests and excluded topics (the texts matched literally)."""
        ids = np.unique(np.concatenate([self.interests.ravel(), self.exclude.ravel()]))
        return ids[ids >= 0]

    def liked_ids(self) -> np.ndarray:
        ids = np.unique(self.liked)
        return ids[ids >= 0]
