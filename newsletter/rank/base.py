"""The ranking seam."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from newsletter.models import Scored, StoredPaper, Subscriber


class Ranker(Protocol):
    """Scores papers against one subscriber's profile.

    ``prepare`` is called once per run with every candidate paper, so per-paper work (tokenising,
    embedding) happens once, not once per subscriber. ``rank`` returns every paper it was given,
    best first, each with ``relevant`` set: the pipeline sends the relevant ones, up to max_items.
    """

    def prepare(self, papers: Sequence[StoredPaper]) -> None: ...

    def rank(self, papers: Sequence[StoredPaper], subscriber: Subscriber) -> list[Scored]: ...
