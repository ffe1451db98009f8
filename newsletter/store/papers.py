"""Reading papers and dumps back as model objects."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from newsletter.models import StoredPaper, arxiv_id_in, normalize_title, title_key_in
from newsletter.store.details import DETAIL_COLUMNS, details_from_row, joined_papers
from newsletter.store.records import DumpRecord
from newsletter.store.schema import dump_papers, dumps, papers

CHUNK = 500  # values per IN (...) list: well under SQLite's and PostgreSQL's parameter limits
MIN_TITLE_PART = 4  # a shorter part of a title ("the") names no paper
T = TypeVar("T")


def chunks(values: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    batch: list[T] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def stored_paper(row: Row[Any]) -> StoredPaper:
    """A paper from a row selected with its details (``select_papers``)."""
    comments, details = details_from_row(row)
    return StoredPaper(
        id=row.id,
        key=row.key,
        title=row.title,
        abstract=row.abstract,
        arxiv_id=row.arxiv_id,
        authors=tuple(json.loads(row.authors)),
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        first_dump_seq=row.first_dump_seq,
        times_seen=row.times_seen,
        best_rank=row.best_rank,
        upvotes=row.upvotes,
        comments=comments,
        details=details,
    )


def select_papers(*extra: Any) -> sa.Select[Any]:
    """SELECT papers with their details (and ``extra`` columns)."""
    return sa.select(papers, *DETAIL_COLUMNS, *extra).select_from(joined_papers(papers))


def papers_where(conn: Connection, *criteria: sa.ColumnElement[bool]) -> list[StoredPaper]:
    """Papers matching ``criteria``, in order of first dump, then best trending rank."""
    query = (
        select_papers().where(*criteria).order_by(papers.c.first_dump_seq, papers.c.best_rank, papers.c.id)
    )
    return [stored_paper(row) for row in conn.execute(query)]


def paper_by_key(conn: Connection, key: str) -> StoredPaper | None:
    """The paper with this key; else the first whose title key it is: a paper first listed without
    its arXiv id is keyed by its title until a listing gives the id, and links already sent name it so."""
    found = papers_where(conn, papers.c.key == key) or papers_where(conn, papers.c.title_key == key)
    return found[0] if found else None


def find_paper(conn: Connection, item: str) -> StoredPaper | None:
    """A paper by key, arXiv id (any version, arXiv: form or a URL naming it) or title (normalised, or
    the title of an arXiv title search URL): its title now, or the one it was first stored under (its
    key, until an id came), which a corrected title replaced."""
    arxiv, title_key = arxiv_id_in(item), title_key_in(item)
    for criterion in (
        papers.c.key == item.strip(),
        papers.c.arxiv_id == arxiv if arxiv else None,
        papers.c.title_key == title_key,
        papers.c.key == title_key,
    ):
        found = papers_where(conn, criterion) if criterion is not None else []
        if found:
            return found[0]
    return None


def papers_titled_with(conn: Connection, part: str, limit: int) -> list[StoredPaper]:
    """At most ``limit`` papers whose title holds ``part`` from the start of a word ("serving" is not
    in "preserving"), normalised as titles are; none for a part shorter than ``MIN_TITLE_PART``."""
    wanted = normalize_title(part)
    if len(wanted) < MIN_TITLE_PART:
        return []
    words = sa.literal(" ").concat(papers.c.title_key)
    query = select_papers().where(words.contains(f" {wanted}", autoescape=True))
    return [stored_paper(row) for row in conn.execute(query.order_by(papers.c.id).limit(limit))]


def papers_named(conn: Connection, items: Iterable[str]) -> list[StoredPaper]:
    """The papers ``items`` name as :func:`find_paper` reads a name (key, arXiv id or title), in a few
    queries however many there are (every subscriber's liked papers and marks)."""
    names = set(items)
    wanted = {*names, *filter(None, map(arxiv_id_in, names)), *map(title_key_in, names)}
    found: dict[int, StoredPaper] = {}
    for batch in chunks(sorted(wanted)):
        either = sa.or_(papers.c.key.in_(batch), papers.c.arxiv_id.in_(batch), papers.c.title_key.in_(batch))
        found.update((p.id, p) for p in papers_where(conn, either))
    return list(found.values())


def papers_by_id(conn: Connection, ids: Iterable[int]) -> dict[int, StoredPaper]:
    found: dict[int, StoredPaper] = {}
    for batch in chunks(sorted(set(ids))):
        found.update((p.id, p) for p in papers_where(conn, papers.c.id.in_(batch)))
    return found


def papers_in_dump(conn: Connection, seq: int) -> list[tuple[StoredPaper, int]]:
    """Every paper a dump listed, with its rank in that dump, in rank order."""
    query = (
        select_papers(dump_papers.c.rank.label("dump_rank"))
        .join(dump_papers, dump_papers.c.paper_id == papers.c.id)
        .where(dump_papers.c.dump_seq == seq)
        .order_by(dump_papers.c.rank, papers.c.id)
    )
    return [(stored_paper(row), row.dump_rank) for row in conn.execute(query)]


def dump_record(row: Row[Any]) -> DumpRecord:
    return DumpRecord(
        seq=row.seq,
        content_hash=row.content_hash,
        source=row.source,
        format=row.format,
        listed_on=row.listed_on,
        ingested_at=row.ingested_at,
        papers=row.papers,
        new=row.new,
    )


def list_dumps(conn: Connection, hashes: Sequence[str] | None = None) -> list[DumpRecord]:
    query = sa.select(dumps).order_by(dumps.c.seq)
    if hashes is not None:
        query = query.where(dumps.c.content_hash.in_(hashes))
    return [dump_record(row) for row in conn.execute(query)]
