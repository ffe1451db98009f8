"""Reading back what the dumps brought: the dumps ingested, and their papers by dump, key, arXiv id or title.

``Catalog`` is the Store's reading side for dumps and papers: store.py's ``Store`` inherits it and gives
it its transactions, and ingests (see ingest.py). The longer queries live in papers.py. Each method is one
read-only transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.models import StoredPaper
from newsletter.store.papers import (
    find_paper,
    list_dumps,
    paper_by_key,
    papers_in_dump,
    papers_named,
    papers_titled_with,
    papers_where,
)
from newsletter.store.records import DumpRecord
from newsletter.store.schema import dump_papers, dumps, papers

FIRST_REACH = timedelta(hours=24)  # a first digest weighs the dumps ingested this long before the last


class Catalog:
    """The dumps ingested and their papers, read back (part of the Store)."""

    def _tx(self, action: str, *, write: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # the Store's: one transaction, errors wrapped as StoreError

    def dump_sizes(self) -> dict[str, int]:
        """The number of papers of every dump ingested, by content hash (a folder scan skips those)."""
        with self._tx("reading the dumps") as conn:
            rows = conn.execute(sa.select(dumps.c.content_hash, dumps.c.papers))
            return {content_hash: papers for content_hash, papers in rows}

    def latest_dump_seq(self) -> int | None:
        with self._tx("reading dumps") as conn:
            latest: int | None = conn.execute(sa.select(sa.func.max(dumps.c.seq))).scalar()
            return latest

    def first_dump_since(self, when: datetime) -> int | None:
        """The first dump ingested at ``when`` or after (None: none)."""
        with self._tx("reading dumps") as conn:
            query = sa.select(sa.func.min(dumps.c.seq)).where(dumps.c.ingested_at >= when)
            seq: int | None = conn.execute(query).scalar()
            return seq

    def latest_paper_seq(self) -> int | None:
        """The latest dump that brought a new paper (None: no paper yet)."""
        with self._tx("reading papers") as conn:
            latest: int | None = conn.execute(sa.select(sa.func.max(papers.c.first_dump_seq))).scalar()
            return latest

    def dumps(self, content_hashes: Collection[str] | None = None) -> list[DumpRecord]:
        """Ingested dumps in ingestion order (optionally only those with the given content hashes)."""
        hashes = None if content_hashes is None else list(content_hashes)
        with self._tx("reading dumps") as conn:
            return list_dumps(conn, hashes)

    def papers_first_seen_after(self, seq: int, upto: int | None = None) -> list[StoredPaper]:
        """Papers dumps after ``seq`` brought, up to dump ``upto`` (None: the latest)."""
        where = papers.c.first_dump_seq > seq
        if upto is not None:
            where = sa.and_(where, papers.c.first_dump_seq <= upto)
        with self._tx("reading papers") as conn:
            return papers_where(conn, where)

    def papers_first_seen_in(self, seq: int) -> list[StoredPaper]:
        with self._tx("reading papers") as conn:
            return papers_where(conn, papers.c.first_dump_seq == seq)

    def newest_listing(self, upto: int | None = None) -> list[StoredPaper]:
        """Every paper, new or not, of the dumps ingested in the FIRST_REACH up to the latest dump (up to
        dump ``upto``) that brought new papers (an empty or repeated listing brings none): a first
        digest's window. A listing saved each time it gains a paper repeats the day's others, another
        source or a past day's page may be the last to gain one, and all are as new to a first digest."""
        with self._tx("reading papers") as conn:
            listed = sa.select(dump_papers.c.paper_id).where(
                dump_papers.c.dump_seq.in_(_first_window(conn, upto))
            )
            return papers_where(conn, papers.c.id.in_(listed))

    def papers_in_dump(self, seq: int) -> list[tuple[StoredPaper, int]]:
        """Every paper dump ``seq`` listed (new or not) with its rank there, in rank order."""
        with self._tx("reading papers") as conn:
            return papers_in_dump(conn, seq)

    def paper_by_key(self, key: str) -> StoredPaper | None:
        with self._tx("reading papers") as conn:
            return paper_by_key(conn, key)

    def papers_named(self, items: Iterable[str]) -> list[StoredPaper]:
        """The stored papers among ``items`` (keys, arXiv ids or titles), whatever their age."""
        with self._tx("reading papers") as conn:
            return papers_named(conn, items)

    def papers_titled_with(self, part: str, limit: int = 6) -> list[StoredPaper]:
        """At most ``limit`` papers whose title holds ``part`` (case, punctuation and spacing aside)."""
        with self._tx("reading papers") as conn:
            return papers_titled_with(conn, part, limit)

    def find_paper(self, item: str) -> StoredPaper | None:
        """A paper by its key, arXiv id (with or without version, arXiv: or abs/ URL) or title."""
        with self._tx("reading papers") as conn:
            return find_paper(conn, item)


def _first_window(conn: Connection, upto: int | None) -> list[int]:
    """The dumps ingested in the FIRST_REACH up to the latest one (up to dump ``upto``) that brought
    new papers, none ingested after it (a dump backfilled under an old ``--now`` after newer ones); none
    before any did."""
    newest = sa.select(sa.func.max(papers.c.first_dump_seq))
    if upto is not None:
        newest = newest.where(papers.c.first_dump_seq <= upto)
    last = conn.execute(newest).scalar()
    if last is None:
        return []
    since = conn.execute(sa.select(dumps.c.ingested_at).where(dumps.c.seq == last)).scalar_one()
    ingested = dumps.c.ingested_at
    recent = sa.select(dumps.c.seq).where(
        dumps.c.seq <= last, ingested > since - FIRST_REACH, ingested <= since
    )
    return list(conn.execute(recent).scalars())
