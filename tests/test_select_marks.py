"""A paper marked "more like this" (or liked in the profile) counts however old it is, and a mark names
the very paper marked, not every paper with its title."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from newsletter.models import Paper, StoredPaper, Subscriber
from newsletter.ops.explain import UnknownPaper, find
from newsletter.rank import LexicalRanker
from newsletter.selection.select import BACKGROUND_DUMPS, Selector
from newsletter.store import Store
from newsletter.store.schema import subscribers

from .test_store_helpers import at, db_url, make_dump, open_store

READER = "reader@example.org"
SCANS = (
    "Selective state space recurrences scan long sequences in linear time. We gate each recurrence"
    " by the input, parallelise the scan on accelerators, and match attention on long sequence tasks."
)
VIDEO = (
    "Temporal diffusion transformers denoise video frames jointly. We add motion tokens and a"
    " cascade of upsamplers, and generate minute-long clips with consistent objects and lighting."
)


def _paper(title: str, abstract: str, arxiv_id: str, rank: int = 1) -> Paper:
    return Paper(title=title, abstract=abstract, rank=rank, arxiv_id=arxiv_id)


def _filler(day: int) -> Paper:
    words = f"Bread baking note {day}: crust, crumb and oven spring of a sourdough loaf on day {day}."
    return _paper(f"Sourdough Notes {day}", words, f"2401.{day:05}")


def _digest(store: Store, reader: Subscriber, day: float) -> dict[str, str]:
    (selection,) = Selector(store, LexicalRanker()).select([reader], at(day))
    return {s.paper.title: s.why for s in selection.chosen}


def _reader(**fields: object) -> Subscriber:
    return Subscriber(email=READER, interests=("protein folding",), cadence="each-dump", **fields)  # type: ignore[arg-type]


def test_a_paper_marked_more_counts_after_more_dumps_than_a_run_prepares(tmp_path: Path) -> None:
    """Past BACKGROUND_DUMPS dumps the marked paper was read from its title alone: its neighbour,
    sharing no title word, scored 0."""
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(_paper("Kestrel", SCANS, "2402.00001")), at(0))
        for day in range(1, BACKGROUND_DUMPS + 3):
            store.ingest(make_dump(_filler(day)), at(day))
        store.record_feedback(READER, "2402.00001", "more", at(20))
        store.ingest(make_dump(_paper("Linear Recurrences at Scale", SCANS, "2402.00009")), at(21))
        chosen = _digest(store, _reader(), 22)
    assert chosen == {"Linear Recurrences at Scale": "similar to a paper you liked: Kestrel"}


def test_a_mark_names_the_paper_marked_not_another_with_its_title(tmp_path: Path) -> None:
    with open_store(db_url(tmp_path)) as store:
        store.ingest(
            make_dump(
                _paper("Revisiting Sequence Models", VIDEO, "2402.00001"),
                _paper("Revisiting Sequence Models", SCANS, "2402.00002", rank=2),
            ),
            at(0),
        )
        store.record_feedback(READER, "2402.00002", "more", at(1))
        store.ingest(
            make_dump(
                _paper("Motion Tokens for Clips", VIDEO, "2402.00003"),
                _paper("Linear Recurrences at Scale", SCANS, "2402.00004", rank=2),
            ),
            at(30),  # the next day: a first digest weighs the dumps of its day only
        )
        chosen = _digest(store, _reader(), 31)
    assert list(chosen) == ["Linear Recurrences at Scale"]


def test_a_liked_paper_in_the_profile_counts_however_old(tmp_path: Path) -> None:
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(_paper("Kestrel", SCANS, "2402.00001")), at(0))
        for day in range(1, BACKGROUND_DUMPS + 3):
            store.ingest(make_dump(_filler(day)), at(day))
        store.ingest(make_dump(_paper("Linear Recurrences at Scale", SCANS, "2402.00009")), at(21))
        chosen = _digest(store, _reader(liked=("arXiv:2402.00001",)), 22)
    assert chosen == {"Linear Recurrences at Scale": "similar to a paper you liked: Kestrel"}


def test_a_title_two_papers_share_is_refused_with_their_ids(tmp_path: Path) -> None:
    """`newsletter feedback` and `explain` took the first paper with the title, silently."""
    with open_store(db_url(tmp_path)) as store:
        twins = (
            _paper("Revisiting Sequence Models", VIDEO, "2402.00001"),
            _paper("Revisiting Sequence Models", SCANS, "2402.00002", rank=2),
        )
        store.ingest(make_dump(*twins, _paper("Kestrel", SCANS, "2402.00003", rank=3)), at(0))
        with pytest.raises(UnknownPaper, match=r"2 papers are titled .*: 2402\.00001, 2402\.00002"):
            find(store, "revisiting sequence models")
        assert find(store, "arXiv:2402.00002v3").abstract == SCANS
        assert find(store, "Kestrel").arxiv_id == "2402.00003"


class _Counting(LexicalRanker):
    def __init__(self) -> None:
        super().__init__()
        self.prepared = 0

    def prepare(self, papers: Sequence[StoredPaper], background: Sequence[StoredPaper] = ()) -> None:
        self.prepared += 1
        super().prepare(papers, background)


def test_a_selection_with_nobody_due_prepares_nothing(tmp_path: Path) -> None:
    """An idle daemon tick embedded the window's papers for nobody."""
    with open_store(db_url(tmp_path)) as store:
        store.advance_watermarks([READER], 0)
        store.ingest(make_dump(_paper("Kestrel", SCANS, "2402.00001")), at(0))
        with store._engine.begin() as conn:  # a digest went out half an hour ago
            conn.execute(subscribers.update().values(last_digest_at=at(0.5)))
        daily = Subscriber(email=READER, interests=("state space models",))  # type: ignore[arg-type]
        idle, preview = _Counting(), _Counting()
        assert [s.reason for s in Selector(store, idle).select([daily], at(1))] == ["not due"]
        assert [s.reason for s in Selector(store, preview).select([daily], at(1), ignore_due=True)] == [""]
    assert (idle.prepared, preview.prepared) == (0, 1)
