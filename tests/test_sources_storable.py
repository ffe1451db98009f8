"""Values one database keeps and the other refuses are mended when a dump is read, so a dump ingests
alike on SQLite and PostgreSQL (and a state can move from one to the other)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from newsletter.models import Paper, PaperDetails
from newsletter.sources import parse_dump
from newsletter.sources.common import TITLE_CHARS, storable
from tests.test_store_helpers import open_store

ABSTRACT = "We study a question. " * 3


def _item(arxiv_id: str, title: str, **paper: object) -> dict[str, object]:
    return {"paper": {"id": arxiv_id, "title": title, "summary": ABSTRACT, **paper}}


def _awkward_dump() -> bytes:
    items = [
        _item("2403.00001", "Null\u0000 Title", summary="An abstract with a \u0000 NUL."),
        _item("2403.00002", "Many Votes", upvotes=3_000_000_000, githubStars=2**40),
        _item("2403.00003", "Long " * 1400),
        _item("2403.00004", "Year One", submittedOnDailyAt="0001-01-01T00:00:00+05:00"),
        _item("a" * 70 + "/1234567", "Long Id"),
        # a lone surrogate in a list of extras refused the whole dump (a fetched day then lost)
        _item(
            "2403.00006",
            "Odd Extras",
            ai_keywords=["ok", "\ud800x"],
            mediaUrls=["\udc80", "https://x.org/a.png"],
            authors=[{"name": "Ann \ud800"}, {"name": "Bo"}],
        ),
    ]
    return json.dumps(items).encode()


def test_an_awkward_dump_ingests_alike_on_both_databases(store_url: str) -> None:
    dump = parse_dump(_awkward_dump(), "awkward.json")
    with open_store(store_url) as store:
        result = store.ingest(dump, datetime(2026, 3, 1, tzinfo=UTC))
    assert (result.papers, result.new) == (6, 6)
    first, votes, long, year_one, long_id, extras = dump.papers
    assert (extras.details.ai_keywords, extras.details.thumbnail) == (("ok",), "https://x.org/a.png")
    assert extras.authors == ("Bo",)
    assert (first.title, first.abstract) == ("Null Title", "An abstract with a  NUL.")
    assert (votes.upvotes, votes.details.github_stars) == (None, None)
    assert len(long.title) == TITLE_CHARS and long.title.endswith("…")
    assert year_one.details.listed_at is None
    assert (long_id.arxiv_id, long_id.key) == (None, "long id")


def test_storable_leaves_an_ordinary_paper_as_it_is() -> None:
    listed = datetime(2026, 3, 1, 8, tzinfo=UTC)
    paper = Paper(
        "A Title",
        ABSTRACT,
        3,
        "2403.00005",
        ("Ann", "Bo"),
        upvotes=2**31 - 1,
        details=PaperDetails(ai_keywords=("a", "b"), github_stars=0, listed_at=listed),
    )
    assert storable(paper) == paper
