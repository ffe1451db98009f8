"""What listings say about a paper beyond title and abstract: stored, merged across listings, read back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from newsletter.models import NO_DETAILS, PaperDetails
from newsletter.rank.text import paper_text
from newsletter.sources import read_dump
from newsletter.store import Store
from newsletter.store.engine import make_engine
from newsletter.store.migrations import MIGRATIONS, migrate

from .conftest import DATA
from .test_store_helpers import at, db_url, make_dump, open_store, paper

REAL = DATA / "realdata"
FULL = PaperDetails(
    ai_summary="A one-line summary.",
    ai_keywords=("hovering flight", "Kestrel"),
    github_repo="https://github.com/example/kestrel",
    github_stars=12,
    project_page="https://example.org/kestrel",
    organization="Carnegie Mellon University",
    thumbnail="https://example.org/t.png",
    listed_at=datetime(2023, 12, 4, tzinfo=UTC),
)


def test_details_of_a_real_listing_come_back_from_the_store(tmp_path: Path) -> None:
    dump = read_dump(REAL / "hf-daily_2026-08-21.json")
    with open_store(db_url(tmp_path)) as store:
        store.ingest(dump, at(0))
        stored = {p.arxiv_id: p for p in store.papers_first_seen_in(1)}
    for listed in dump.papers:
        back = stored[listed.arxiv_id]
        assert (back.details, back.comments, back.upvotes) == (
            listed.details,
            listed.comments,
            listed.upvotes,
        )
    assert stored["2608.19880"].details.github_stars == 8


def test_a_later_listing_updates_details_and_keeps_what_it_does_not_say(tmp_path: Path) -> None:
    first = paper("Kestrel", arxiv_id="2401.01234", upvotes=10, comments=1, details=FULL)
    later = paper(
        "Kestrel", arxiv_id="2401.01234", upvotes=50, comments=4, details=PaperDetails(github_stars=900)
    )
    text_dump = paper("Kestrel")  # a text dump knows nothing but title and abstract
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(first), at(0))
        store.ingest(make_dump(later, tag="2"), at(1))
        store.ingest(make_dump(text_dump, tag="3"), at(2))
        (back,) = store.papers_first_seen_in(1)
    assert (back.upvotes, back.comments) == (50, 4)
    assert back.details.github_stars == 900
    assert back.details.ai_summary == FULL.ai_summary and back.details.ai_keywords == FULL.ai_keywords


def test_an_older_listing_ingested_later_takes_no_count_back(tmp_path: Path) -> None:
    """A backfill, or two captures of one day read in hash order: counts keep their highest, the
    listing date its earliest."""
    late = paper("Kestrel", arxiv_id="2401.01234", upvotes=163, comments=8, details=FULL)
    early_details = PaperDetails(
        github_stars=3, listed_at=datetime(2023, 12, 1, tzinfo=UTC), ai_summary="Early."
    )
    early = paper("Kestrel", arxiv_id="2401.01234", upvotes=1, comments=0, details=early_details)
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(late), at(0))
        store.ingest(make_dump(early, tag="early"), at(1))
        (back,) = store.papers_first_seen_in(1)
    assert (back.upvotes, back.comments, back.details.github_stars) == (163, 8, 12)
    assert back.details.listed_at == datetime(2023, 12, 1, tzinfo=UTC)
    assert back.details.ai_summary == "Early."  # text fields: the listing read last


def test_a_paper_without_details_has_none(tmp_path: Path) -> None:
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(paper("Plain")), at(0))
        (back,) = store.papers_first_seen_in(1)
    assert back.details is NO_DETAILS and back.comments is None


def test_a_store_from_before_the_migration_gains_only_the_new_tables(tmp_path: Path) -> None:
    engine = make_engine(sa.make_url(db_url(tmp_path)))
    migrate(engine, MIGRATIONS[:2])
    engine.dispose()
    with Store(db_url(tmp_path)) as store:
        assert store.migrations_applied == [name for name, _ in MIGRATIONS[2:]]
        store.ingest(make_dump(paper("Old")), at(0))
        assert store.papers_first_seen_in(1)[0].title == "Old"


def test_the_rankers_paper_text_reads_the_summary_and_keywords(tmp_path: Path) -> None:
    with open_store(db_url(tmp_path)) as store:
        store.ingest(
            make_dump(paper("Kestrel", arxiv_id="2401.01234", details=FULL), paper("Plain", 2)), at(0)
        )
        kestrel, plain = store.papers_first_seen_in(1)
    assert paper_text(kestrel) == (
        "Kestrel. A one-line summary. About Kestrel. Keywords: hovering flight, Kestrel."
    )
    assert paper_text(plain) == "Plain. About Plain."  # unchanged for a paper without details


def test_a_state_db_replaced_under_a_long_lived_store_is_refused(tmp_path: Path) -> None:
    """A backup restored with mv (or rsync) while `serve` or the daemon runs: their unsubscribes went
    into the unlinked old file, answered "You are unsubscribed" and lost. Now the write is refused
    (serve then holds the click for the next run) and says why."""
    import os
    import sqlite3

    import pytest

    from newsletter.errors import StoreError

    db = tmp_path / "state.db"
    store = Store(f"sqlite:///{db}")
    try:
        store.record_unsubscribe("grace@example.org", datetime(2026, 3, 1, tzinfo=UTC))  # a pooled connection
        restored = tmp_path / "restored.db"
        with sqlite3.connect(db) as source, sqlite3.connect(restored) as target:
            source.backup(target)
        os.replace(restored, db)
        with pytest.raises(StoreError, match="was replaced or removed since this process opened it"):
            store.record_unsubscribe("ada@example.org", datetime(2026, 3, 2, tzinfo=UTC))
    finally:
        store.close()
    fresh = Store(f"sqlite:///{db}")  # a process started after the restore works on the restored file
    try:
        fresh.record_unsubscribe("ada@example.org", datetime(2026, 3, 2, tzinfo=UTC))
        assert fresh.is_unsubscribed("ada@example.org")
    finally:
        fresh.close()
