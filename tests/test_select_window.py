"""A digest's window: the papers first seen since the subscriber's last digest, never further back
than CATCH_UP."""

from __future__ import annotations

from pathlib import Path

from newsletter.models import Paper, Subscriber
from newsletter.ops.explain import _covering, _past_the_limit
from newsletter.ops.status import status_report
from newsletter.rank import LexicalRanker
from newsletter.selection.select import CATCH_UP, Selector
from newsletter.store import DigestPlan, PlannedItem
from newsletter.subscribers import SubscriberList

from .test_store_helpers import at, db_url, make_dump, open_store

READER = "reader@example.org"


def _kestrel(day: int) -> Paper:
    abstract = f"Kestrel variant {day} schedules message passing on sparse graphs with millions of nodes."
    return Paper(
        title=f"Kestrel {day}: Sparse Message Passing", abstract=abstract, rank=1, arxiv_id=f"2401.{day:05}"
    )


def test_a_subscriber_back_after_weeks_gets_a_window_of_the_last_two_weeks_only(tmp_path: Path) -> None:
    """Held after a bounce, or out of the file, for months: their first digest back ranked (and embedded
    again) every paper since, for one digest of max_items."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump", max_items=100)
    days = CATCH_UP.days * 3
    with open_store(db_url(tmp_path)) as store:
        store.advance_watermarks([READER], 0)  # their last digest came before the first dump
        for day in range(1, days + 1):
            store.ingest(make_dump(_kestrel(day)), at(24 * day))
        (selection,) = Selector(store, LexicalRanker()).select([reader], at(24 * days + 12))
        latest = store.latest_dump_seq()
    sent = sorted(int(s.paper.title.split()[1].rstrip(":")) for s in selection.chosen)
    assert sent == list(range(days - CATCH_UP.days + 1, days + 1))  # dumps ingested in the last 14 days
    assert selection.upto_seq == latest  # the watermark moves to the latest dump all the same


def test_a_dump_ingested_later_under_an_old_now_moves_no_window(tmp_path: Path) -> None:
    """`--now <a month ago>` with `preview`, `explain` or `run` ingests a new file with that date: the
    first limit, read as the last dump ingested before it, jumped past the last days' dumps (their
    papers were never sent to anyone)."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump", max_items=100)
    with open_store(db_url(tmp_path)) as store:
        store.advance_watermarks([READER], 0)
        for day in range(100, 103):
            store.ingest(make_dump(_kestrel(day)), at(24 * day))
        store.ingest(make_dump(_kestrel(50)), at(24 * 70))
        (selection,) = Selector(store, LexicalRanker()).select([reader], at(24 * 103))
    assert sorted(int(s.paper.title.split()[1].rstrip(":")) for s in selection.chosen) == [50, 100, 101, 102]


def test_a_first_digest_holds_no_paper_first_seen_more_than_two_weeks_ago(tmp_path: Path) -> None:
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump")
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(_kestrel(1)), at(24))  # the last dump that brought papers: 59 days before
        (selection,) = Selector(store, LexicalRanker()).select([reader], at(24 * 60))
        (recent,) = Selector(store, LexicalRanker()).select([reader], at(24 * 10))
    assert selection.chosen == () and selection.reason == "nothing new"
    assert [s.paper.title for s in recent.chosen] == ["Kestrel 1: Sparse Message Passing"]


def test_a_run_under_an_old_now_keeps_the_dumps_ingested_before_it(tmp_path: Path) -> None:
    """`run --now <a month ago>` ingests a file with that date after dumps stamped today: a limit that
    left out dumps stamped after the run's clock cut them, and the watermark moved past them for good."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump", max_items=100)
    with open_store(db_url(tmp_path)) as store:
        for day in range(100, 120):
            store.ingest(make_dump(_kestrel(day)), at(24 * day))
        store.advance_watermarks([READER], 19)  # had every digest up to day 118's dump
        store.ingest(make_dump(_kestrel(42)), at(24 * 90))  # the run's own ingest, under --now day 90
        (selection,) = Selector(store, LexicalRanker()).select([reader], at(24 * 90))
    assert sorted(int(s.paper.title.split()[1].rstrip(":")) for s in selection.chosen) == [42, 119]


def test_a_backfill_under_an_old_now_cuts_nothing(tmp_path: Path) -> None:
    """Dumps ingested today, then `run --now <last year>`: every dump is stamped after that clock, so
    none is known to be old."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump", max_items=100)
    with open_store(db_url(tmp_path)) as store:
        store.advance_watermarks([READER], 0)
        for day in range(1, 31):
            store.ingest(make_dump(_kestrel(day)), at(24 * 400))
        (selection,) = Selector(store, LexicalRanker()).select([reader], at(24 * 35))
    assert len(selection.chosen) == 30


def test_the_quick_triage_agrees_with_the_window_on_an_old_dump(tmp_path: Path) -> None:
    """With the first limit, a new subscriber whose only dump was weeks old got "nothing new" from
    select but was handed to a shard (a process, or a job) at every daemon tick."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump")
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(_kestrel(1)), at(24))
        (selection,) = Selector(store, LexicalRanker()).select([reader], at(24 * 60))
        work, idle = Selector(store, LexicalRanker()).triage([reader], at(24 * 60))
    assert selection.reason == "nothing new" and work == [] and [s.reason for s in idle] == ["nothing new"]


def test_status_sees_the_limit_as_select_does(tmp_path: Path) -> None:
    """`status` called a new subscriber due now while every run said "nothing new"."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump")
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(_kestrel(1)), at(24))
        (selection,) = Selector(store, LexicalRanker()).select([reader], at(24 * 60))
        report = status_report(store, SubscriberList(tmp_path / "s.yaml", (reader,)), at(24 * 60), None)
    assert selection.reason == "nothing new"
    assert [row["next_due_at"] for row in report["subscribers"]] == [None]


def test_explain_says_a_paper_is_past_the_limit_only_when_no_run_weighed_it(tmp_path: Path) -> None:
    """An evaluation that sent nothing moves the watermark without a record: the verdict was given
    for papers weighed then, once the clock passed 14 days."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump")
    with open_store(db_url(tmp_path)) as store:
        for day in (1, 2):
            store.ingest(make_dump(_kestrel(day)), at(24 * day))
        first, second = (store.papers_first_seen_after(seq - 1, upto=seq)[0] for seq in (1, 2))
        store.advance_watermarks([READER], 1)  # the first dump was weighed, the second not
        late = at(24 * 30)
        assert _past_the_limit(store, reader, first, None, late) == ""  # weighed: no record says when
        assert _past_the_limit(store, reader, second, None, late) == "certain"
        assert _past_the_limit(store, reader, second, None, at(24 * 3)) == ""  # still in reach


def test_explain_finds_the_first_digest_that_weighed_a_paper_its_listing_repeated(tmp_path: Path) -> None:
    """A first digest weighs every paper of its listing: explain took its window for the latest dump's new
    papers, and said of a paper it weighed (full at max_items) that it came before the window."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump", max_items=1)
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(_kestrel(1), _kestrel(2)), at(0))
        store.ingest(make_dump(_kestrel(1), _kestrel(2), _kestrel(3)), at(1))
        (selection,) = Selector(store, LexicalRanker()).select([reader], at(2))
        sent = selection.chosen[0].paper
        store.plan_digests([DigestPlan("d1", READER, at(2), 2, "s", (PlannedItem(sent.id, 1, 1.0, ""),))])
        records = store.deliveries(email=READER)
        weighed = [p for p in store.newest_listing() if p.id != sent.id]
        assert [_covering(store, records, p) for p in weighed] == records * 2


def test_explain_names_the_limit_for_a_paper_a_catch_up_digest_jumped_past(tmp_path: Path) -> None:
    """Back after six weeks: the run weighs the last 14 days and moves the watermark past the rest;
    a paper it skipped sits under the watermark, as weighed ones do."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump", max_items=100)
    with open_store(db_url(tmp_path)) as store:
        store.advance_watermarks([READER], 0)
        for day in range(1, 43):
            store.ingest(make_dump(_kestrel(day)), at(24 * day))
        (selection,) = Selector(store, LexicalRanker()).select([reader], at(24 * 42 + 12))
        assert selection.upto_seq == 42 and len(selection.chosen) == CATCH_UP.days
        plan = DigestPlan(
            "d1", READER, at(24 * 42 + 12), 42, "s", (PlannedItem(selection.chosen[0].paper.id, 1, 1.0, ""),)
        )
        store.plan_digests([plan])
        (record,) = store.deliveries(email=READER)
        skipped = store.papers_first_seen_after(4, upto=5)[0]
        assert _past_the_limit(store, reader, skipped, record, at(24 * 43)) == "likely"


def test_a_first_digest_weighs_every_paper_of_the_listing_that_brought_new_ones(tmp_path: Path) -> None:
    """A listing saved each time it gains a paper (hf-daily, fetched hourly) repeats the day's others: a
    new subscriber's first digest held the one paper the last fetch added, and the rest were never theirs.
    The listing's papers first seen more than CATCH_UP ago stay out."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump", max_items=100)
    old = Subscriber(email="old@example.org", interests=("message passing",), cadence="each-dump")
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(_kestrel(1)), at(0))
        store.ingest(make_dump(_kestrel(2), _kestrel(3)), at(24 * 30))
        store.advance_watermarks([old.email], store.latest_dump_seq())
        store.ingest(make_dump(_kestrel(1), _kestrel(2), _kestrel(3), _kestrel(4)), at(24 * 30 + 1))
        first, later = Selector(store, LexicalRanker()).select([reader, old], at(24 * 30 + 2))
    days = sorted(int(s.paper.title.split()[1].rstrip(":")) for s in first.chosen)
    assert days == [2, 3, 4]  # Kestrel 1 was first listed 30 days before
    assert [s.paper.title for s in later.chosen] == ["Kestrel 4: Sparse Message Passing"]


def test_explain_names_the_limit_for_a_listed_paper_a_first_digest_leaves_out(tmp_path: Path) -> None:
    """The latest listing repeats a paper first seen a month before: a first digest weighs the listing but
    not that paper, and explain said it came before the window and would count now."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump")
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(_kestrel(1)), at(0))
        store.ingest(make_dump(_kestrel(1), _kestrel(2)), at(24 * 30))
        old, new = (store.find_paper(f"2401.{day:05}") for day in (1, 2))
        assert old is not None and new is not None
        assert _past_the_limit(store, reader, old, None, at(24 * 30 + 1)) == "certain"
        assert _past_the_limit(store, reader, new, None, at(24 * 30 + 1)) == ""


def test_a_first_digest_weighs_the_dumps_of_the_day_before_the_last_that_brought_new_papers(
    tmp_path: Path,
) -> None:
    """Another source (an arXiv feed after the HF listing), or a past day's page, may be the last dump
    to bring a paper: a first digest held only that dump's, and today's listing was never theirs. A
    dump ingested a day or more before stays out."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump", max_items=100)
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(_kestrel(1)), at(0))
        store.ingest(make_dump(_kestrel(2), _kestrel(3)), at(24))  # the day's HF listing
        store.ingest(make_dump(_kestrel(4)), at(25))  # an arXiv feed, an hour later
        store.ingest(make_dump(_kestrel(3), tag="reordered"), at(26))  # brings nothing new
        (first,) = Selector(store, LexicalRanker()).select([reader], at(27))
    assert sorted(int(s.paper.title.split()[1].rstrip(":")) for s in first.chosen) == [2, 3, 4]


def test_a_first_digest_after_a_backfill_under_an_old_now_weighs_that_day_only(tmp_path: Path) -> None:
    """The last dump to bring new papers was ingested under `--now <a week ago>` after three days'
    dumps: its window reached every dump ingested since the day before it, the week's three too."""
    reader = Subscriber(email=READER, interests=("message passing",), cadence="each-dump", max_items=100)
    with open_store(db_url(tmp_path)) as store:
        for day in range(10, 13):
            store.ingest(make_dump(_kestrel(day)), at(24 * day))
        store.ingest(make_dump(_kestrel(5)), at(24 * 5))
        (first,) = Selector(store, LexicalRanker()).select([reader], at(24 * 13))
    assert [s.paper.title for s in first.chosen] == ["Kestrel 5: Sparse Message Passing"]
