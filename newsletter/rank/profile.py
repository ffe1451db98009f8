"""A subscriber's profile as the rankers read it, and the reasons shown next to each paper."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from newsletter.models import Subscriber

EvidenceKind = Literal["about", "liked"]
MATCH_LEVEL = 0.5  # phrase strength that counts as a literal match in the reason text
MAX_REASON_CHARS = 90


@dataclass(frozen=True, slots=True)
class Profile:
    """What a ranker needs from a subscriber; hashable, so compiled queries can be cached by content."""

    interests: tuple[str, ...]
    about: str = ""
    liked: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def texts(self) -> Iterator[tuple[EvidenceKind, str]]:
        """The free-text queries besides the interests: the about text, then each liked item."""
        if self.about:
            yield "about", self.about
        for item in self.liked:
            yield "liked", item

    @property
    def words(self) -> str:
        """The whole profile as one bag of words (interests and about)."""
        return " ".join((*self.interests, self.about)).strip()


def compile_profile(subscriber: Subscriber) -> Profile:
    return Profile(
        interests=_unique(subscriber.interests),
        about=subscriber.about,
        liked=_unique(subscriber.liked),
        exclude=_unique(subscriber.exclude),
    )


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(item.casefold(), item)
    return tuple(seen.values())


class Explainer:
    """Reasons for a batch of profiles scored with the column layout [interests | about | liked | words]."""

    def __init__(
        self,
        profiles: Sequence[Profile],
        widths: tuple[int, int],
        literal: Callable[[str], np.ndarray],
        shared: Callable[[str, np.ndarray], list[list[str]]],
        liked_title: Callable[[str], str],
    ) -> None:
        self.profiles = profiles
        self.interests, self.liked = widths
        self.literal, self.shared, self.liked_title = literal, shared, liked_title

    @property
    def words_column(self) -> int:
        return self.interests + 1 + self.liked

    def __call__(self, subscriber: int, columns: np.ndarray, rows: np.ndarray) -> list[str]:
        profile = self.profiles[subscriber]
        hits = [(phrase, self.literal(phrase)[rows] >= MATCH_LEVEL) for phrase in profile.interests]
        on_words = np.flatnonzero(columns == self.words_column)
        shared = dict(zip(on_words.tolist(), self.shared(profile.words, rows[on_words]), strict=True))
        return [
            self._one(profile, col, [p for p, hit in hits if hit[j]], shared.get(j, []))
            for j, col in enumerate(columns.tolist())
        ]

    def _one(self, profile: Profile, col: int, matched: list[str], shared: list[str]) -> str:
        if matched:
            return _clip("matches: " + ", ".join(matched))
        if col < min(self.interests, len(profile.interests)):
            return _clip(f"close to your interest '{profile.interests[col]}'")
        if col == self.interests:
            return "close to what you wrote about your work"
        liked = col - self.interests - 1
        if 0 <= liked < len(profile.liked):
            return _clip(f"similar to a paper you liked: {self.liked_title(profile.liked[liked])}")
        return (
            _clip("shares words with your profile: " + ", ".join(shared))
            if shared
            else "close to your profile"
        )


def _clip(text: str) -> str:
    if len(text) <= MAX_REASON_CHARS:
        return text
    return text[: MAX_REASON_CHARS - 1].rstrip(" ,:") + "…"
