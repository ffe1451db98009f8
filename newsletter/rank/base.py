"""The ranking seam."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from newsletter.models import Scored, StoredPaper, Subscriber


class Ranker(Protocol):
    """Scores papers against subscribers' profiles.

    ``prepare`` is called once per run with every candidate paper and a background of recent papers
    (the reference a "typical paper" is measured against), so per-paper work (tokenising, embedding)
    happens once, not once per subscriber. ``rank_many`` yields one list per subscriber, in order,
    best first, lazily; with ``only_relevant`` each list holds just the relevant papers, and reasons
    are worked out only for those. ``capped`` allows a list to stop after the subscriber's
    ``max_items`` (no digest holds more), so a ranker may skip the rest; ignoring it is correct too.
    ``rank`` returns every paper given, best first, each with ``relevant`` set (previews use it to
    show near misses).
    """

    def prepare(self, papers: Sequence[StoredPaper], background: Sequence[StoredPaper] = ()) -> None: ...

    def rank_many(
        self,
        papers: Sequence[StoredPaper],
        subscribers: Iterable[Subscriber],
        only_relevant: bool = True,
        capped: bool = False,
    ) -> Iterator[list[Scored]]: ...

    def rank(self, papers: Sequence[StoredPaper], subscriber: Subscriber) -> list[Scored]: ...
