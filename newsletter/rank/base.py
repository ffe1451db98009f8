"""The ranking seam."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from newsletter.models import Scored, StoredPaper, Subscriber


class Ranker(Protocol):
    """Scores papers against subscribers' profiles.

    ``prepare`` is called once per run with every candidate paper, so per-paper work (tokenising,
    embedding) happens once, not once per subscriber. ``rank_many`` ranks one list of papers for many
    subscribers at once (lazily, in chunks); each list is best first with ``relevant`` set, and holds
    only the relevant papers when ``only_relevant``. ``rank`` is the same for one subscriber, every paper.
    """

    def prepare(self, papers: Sequence[StoredPaper]) -> None: ...

    def rank_many(
        self, papers: Sequence[StoredPaper], subscribers: Sequence[Subscriber], only_relevant: bool = False
    ) -> Iterator[list[Scored]]: ...

    def rank(self, papers: Sequence[StoredPaper], subscriber: Subscriber) -> list[Scored]: ...
