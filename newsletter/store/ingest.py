"""Recording a dump: which papers it listed, which of them no earlier dump had (the diff).

Identity: a listed paper matches a stored one by arXiv id when the dump gives one, else by normalised
title. A paper with an id that no stored paper has matches a stored paper *without* an id by title,
and that paper gets the id (and its key becomes the id, as ``Paper.key`` would give, unless the listing
corrects its title too). A paper found by its abstract under another title (a corrected one) takes that
title; its key stays.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.models import UNRANKED, Dump, Paper, abstract_key, normalize_arxiv_id, normalize_title
from newsletter.store.details import write_details
from newsletter.store.lock import INGEST_LOCK_KEY, xact_lock
from newsletter.store.migrations import MIGRATIONS
from newsletter.store.papers import chunks, dump_record
from newsletter.store.records import IngestResult
from newsletter.store.schema import dump_papers, dumps, papers, vectors

SAME_ABSTRACT_SHARE = 0.7  # of the shorter abstract's distinct words, shared by two abstracts of one paper


@dataclass(eq=False)
class _Entry:
    """One stored paper as this dump sees it: loaded from the database, or new in this dump."""

    title_key: str
    arxiv_id: str | None
    abstract_key: str | None = None
    key: str = ""  # papers.key: the arXiv id, or the title key the paper was first stored under
    id: int | None = None  # None until a new paper is inserted
    row: dict[str, Any] = field(default_factory=dict)  # stored values (existing papers)
    listing: Paper | None = None  # the dump's first listing of it; None when untouched
    rank: int = 0  # best rank in this dump
    filled_id: bool = False  # an id from this dump completes a paper stored without one

    @property
    def is_new(self) -> bool:
        return self.id is None


class _Index:
    """Entries by arXiv id, by title key and by abstract key; a title can belong to several papers
    (different ids)."""

    def __init__(self) -> None:
        self.by_id: dict[str, _Entry] = {}
        self.by_title: dict[str, list[_Entry]] = defaultdict(list)
        self.by_abstract: dict[str, list[_Entry]] = defaultdict(list)
        self.by_key: dict[str, _Entry] = {}
        self.touched: list[_Entry] = []

    def add(self, entry: _Entry) -> None:
        if entry.arxiv_id:
            self.by_id[entry.arxiv_id] = entry
        self.by_title[entry.title_key].append(entry)
        if entry.abstract_key:
            self.by_abstract[entry.abstract_key].append(entry)
        self.by_key[entry.key] = entry

    def find(self, arxiv_id: str | None, paper: Paper) -> _Entry | None:
        """The stored paper that ``paper`` lists: by arXiv id; else by title, by the title it was first
        stored under (its key: the title since rewritten, as migration 0012 did), then by abstract (a
        corrected title), among papers without an id when ``paper`` has one, and whose abstract is not
        another paper's: two papers can share a title (an id would make the one stored the other for good)."""
        if arxiv_id in self.by_id:
            return self.by_id[arxiv_id]
        fits = (lambda e: True) if arxiv_id is None else (lambda e: e.arxiv_id is None)
        titled = (*self.by_title.get(paper.title_key, ()), self.by_key.get(paper.title_key))
        by_title = (e for e in titled if e is not None and fits(e) and _may_be(e, paper))
        by_abstract = (e for e in self.by_abstract.get(paper.abstract_key or "", ()) if fits(e))
        return next(by_title, None) or next(by_abstract, None)


def _may_be(entry: _Entry, paper: Paper) -> bool:
    """Whether ``paper`` may be the stored ``entry`` it shares a title with: not when both have whole
    abstracts (of 40 words or more) of which the shorter shares under 70% of its distinct words with
    the other. Of the 794 distinct abstracts of the seeds and the real HF captures, two papers' share
    at most 46%; an abstract cut short, or corrected, shares nearly all of its words."""
    if entry.abstract_key is None or paper.abstract_key is None or entry.abstract_key == paper.abstract_key:
        return True
    stored = entry.row["abstract"] if entry.row else entry.listing.abstract if entry.listing else ""
    ours, theirs = set(normalize_title(stored).split()), set(normalize_title(paper.abstract).split())
    return len(ours & theirs) >= SAME_ABSTRACT_SHARE * min(len(ours), len(theirs))


def ingest_dump(conn: Connection, dump: Dump, now: datetime) -> IngestResult:
    """Record ``dump`` inside the caller's transaction; a no-op when its content was seen before.

    On PostgreSQL ingests take turns (a transaction-level advisory lock): two hosts ingesting the same
    dump, or two dumps with the same new paper, would otherwise both insert it.
    """
    xact_lock(conn, INGEST_LOCK_KEY)
    known = conn.execute(sa.select(dumps).where(dumps.c.content_hash == dump.content_hash)).first()
    if known is not None:
        record = dump_record(known)
        return IngestResult(record.seq, record.papers, new=0, already=True)  # nothing new this time
    seq = _insert_dump(conn, dump, now)
    index = _load_candidates(conn, dump.papers)
    for paper in dump.papers:
        _see(index, paper)
    new = _write_papers(conn, index.touched, seq, now, dump.trending)
    conn.execute(dumps.update().where(dumps.c.seq == seq).values(papers=len(index.touched), new=new))
    return IngestResult(seq, len(index.touched), new, already=False)


def _arxiv_id(paper: Paper) -> str | None:
    if not paper.arxiv_id:
        return None
    return normalize_arxiv_id(paper.arxiv_id) or paper.arxiv_id.strip()


def _insert_dump(conn: Connection, dump: Dump, now: datetime) -> int:
    values = {
        "content_hash": dump.content_hash,
        "source": dump.source,
        "format": dump.format,
        "listed_on": dump.listed_on,
        "ingested_at": now,
        "papers": 0,
        "new": 0,
        "written_by": len(MIGRATIONS),  # a dump by code that knew fewer is refused (migration 0018)
    }
    result = conn.execute(dumps.insert().values(**values))
    seq = result.inserted_primary_key[0] if result.inserted_primary_key else None
    assert isinstance(seq, int)
    return seq


def _load_candidates(conn: Connection, listed: tuple[Paper, ...]) -> _Index:
    """Stored papers that may match the listing: same arXiv id, title key or abstract key."""
    index = _Index()
    ids = {i for i in map(_arxiv_id, listed) if i}
    titles = {p.title_key for p in listed}
    abstracts = {k for k in (p.abstract_key for p in listed) if k}
    seen: set[int] = set()
    by = (
        (papers.c.arxiv_id, ids),
        (papers.c.title_key, titles),
        (papers.c.key, titles),
        (papers.c.abstract_key, abstracts),
    )
    for column, values in by:
        for batch in chunks(sorted(values)):
            for row in conn.execute(sa.select(papers).where(column.in_(batch)).order_by(papers.c.id)):
                if row.id not in seen:
                    seen.add(row.id)
                    index.add(_stored(row._mapping))
    return index


def _stored(row: Any) -> _Entry:
    return _Entry(row["title_key"], row["arxiv_id"], row["abstract_key"], row["key"], row["id"], dict(row))


def _see(index: _Index, paper: Paper) -> None:
    arxiv_id = _arxiv_id(paper)
    entry = index.find(arxiv_id, paper)
    if entry is None:
        entry = _Entry(paper.title_key, arxiv_id, paper.abstract_key, _new_key(index, arxiv_id, paper))
        index.add(entry)
    else:
        _seen_again(index, entry, arxiv_id, paper)
    if entry.listing is None:
        entry.listing, entry.rank = paper, paper.rank
        index.touched.append(entry)
    else:
        entry.rank = min(entry.rank, paper.rank)


def _new_key(index: _Index, arxiv_id: str | None, paper: Paper) -> str:
    """A new paper's key: its arXiv id, else its title key; with its abstract's key when another paper
    of that title, with another abstract (see ``_may_be``), has the title key as its key."""
    key = arxiv_id or paper.title_key
    return f"{key} {paper.abstract_key}" if key in index.by_key and paper.abstract_key else key


def _seen_again(index: _Index, entry: _Entry, arxiv_id: str | None, paper: Paper) -> None:
    """A stored paper, or one listed earlier in this dump, found again: a first listing found by its
    abstract under another title (a corrected one) gives it that title, found by it from now on (the
    paper's key, the first title, still finds it too); an id fills the gap of a paper without one."""
    by_id = arxiv_id is not None and arxiv_id == entry.arxiv_id
    if entry.listing is None and not by_id and paper.title_key not in (entry.title_key, entry.key):
        entry.title_key = paper.title_key
        index.by_title[paper.title_key].append(entry)
    if arxiv_id and entry.arxiv_id is None:
        entry.arxiv_id = arxiv_id
        entry.filled_id = True
        index.by_id[arxiv_id] = entry


def _write_papers(conn: Connection, touched: list[_Entry], seq: int, now: datetime, trending: bool) -> int:
    """Insert new papers, update seen ones, record the listing; return how many were new.

    A listing that is not a trending one (an arXiv feed) records each paper's place in it, but gives
    no paper a trending rank.
    """
    new = [e for e in touched if e.is_new]
    seen = [e for e in touched if not e.is_new]
    _insert_papers(conn, new, seq, now, trending)
    if seen:
        values = [_seen_values(e, now, trending) for e in seen]
        conn.execute(_UPDATE_SEEN, values)
        stale = [e.row["key"] for e, v in zip(seen, values, strict=True) if _rewritten(e, v) or e.filled_id]
        _forget_vectors(conn, stale)  # a title or abstract rewritten, or a key gone (an id came)
    if touched:  # an empty listing (the API on a day without papers) is a dump of nothing
        rows = [{"dump_seq": seq, "paper_id": e.id, "rank": e.rank} for e in touched]
        conn.execute(dump_papers.insert(), rows)
        write_details(conn, [(e.id, e.listing) for e in touched if e.id is not None and e.listing])
    return len(new)


def _insert_papers(conn: Connection, new: list[_Entry], seq: int, now: datetime, trending: bool) -> None:
    """Insert the new papers in one statement (one INSERT per paper took 30 s of a 12,500-paper dump),
    in the listing's order, and give each entry its row's id: this dump's ``seq`` is only theirs."""
    if not new:
        return
    conn.execute(papers.insert(), [_new_values(entry, seq, now, trending) for entry in new])
    query = sa.select(papers.c.key, papers.c.id).where(papers.c.first_dump_seq == seq)
    ids = {key: paper_id for key, paper_id in conn.execute(query)}
    for entry in new:
        entry.id = ids[entry.arxiv_id or entry.key]  # the key it was stored under (unique)


def _new_values(entry: _Entry, seq: int, now: datetime, trending: bool) -> dict[str, Any]:
    paper = entry.listing
    assert paper is not None
    return {
        "key": entry.arxiv_id or entry.key,
        "arxiv_id": entry.arxiv_id,
        "title_key": entry.title_key,
        "abstract_key": entry.abstract_key,
        "title": paper.title,
        "abstract": paper.abstract,
        "authors": _authors_json(paper),
        "first_seen": now,
        "last_seen": now,
        "first_dump_seq": seq,
        "times_seen": 1,
        "best_rank": entry.rank if trending else UNRANKED,
        "upvotes": paper.upvotes,
    }


_UPDATE_SEEN = (
    papers.update()
    .where(papers.c.id == sa.bindparam("b_id"))
    .values(
        key=sa.bindparam("b_key"),
        arxiv_id=sa.bindparam("b_arxiv_id"),
        title=sa.bindparam("b_title"),
        title_key=sa.bindparam("b_title_key"),
        abstract=sa.bindparam("b_abstract"),
        abstract_key=sa.bindparam("b_abstract_key"),
        authors=sa.bindparam("b_authors"),
        last_seen=sa.bindparam("b_last_seen"),
        times_seen=papers.c.times_seen + 1,
        best_rank=sa.bindparam("b_best_rank"),
        upvotes=sa.bindparam("b_upvotes"),
    )
)


def _seen_values(entry: _Entry, now: datetime, trending: bool) -> dict[str, Any]:
    """A seen paper's new values: ranks keep the best, gaps (id, abstract, authors) get filled, an
    abstract a dump cut short (a file read while it was being copied) is completed, and a corrected
    title (see ``_seen_again``) replaces the stored one."""
    row, paper = entry.row, entry.listing
    assert paper is not None
    authors = row["authors"] if json.loads(row["authors"]) else _authors_json(paper)
    abstract = _completed(row["abstract"], paper.abstract)
    retitled = entry.title_key != row["title_key"]
    return {
        "b_id": entry.id,
        # a link sent names the paper by its key: the first title's stays when that title goes too
        "b_key": entry.arxiv_id if entry.filled_id and not retitled else row["key"],
        "b_arxiv_id": entry.arxiv_id,
        "b_title": paper.title if retitled else row["title"],
        "b_title_key": entry.title_key,
        "b_abstract": abstract,
        "b_abstract_key": abstract_key(abstract),  # of the completed abstract, when it was cut
        "b_authors": authors,
        "b_last_seen": now,
        "b_best_rank": min(row["best_rank"], entry.rank) if trending else row["best_rank"],
        "b_upvotes": max((u for u in (paper.upvotes, row["upvotes"]) if u is not None), default=None),
    }


def _forget_vectors(conn: Connection, keys: list[str]) -> None:
    """Drop the vectors of papers whose title or abstract changed (a paper's, its title's and its sentences'),
    so the ranker embeds the text it now reads, and of a key a paper no longer has (an id came)."""
    for key in keys:
        same = sa.or_(vectors.c.key == key, vectors.c.key.startswith(f"{key}#", autoescape=True))
        conn.execute(vectors.delete().where(same))


def _rewritten(entry: _Entry, values: dict[str, Any]) -> bool:
    return values["b_abstract"] != entry.row["abstract"] or values["b_title"] != entry.row["title"]


def _completed(stored: str, listed: str) -> str:
    """The stored abstract, unless it is empty or the start of a longer one listed now (whitespace
    aside: the API's abstracts keep their line breaks, a page's text dump has none; the same text in
    the other layout changes nothing, or its vectors would go at each listing)."""
    whole, start = " ".join(listed.split()), " ".join(stored.split())
    return listed if not stored or (whole != start and whole.startswith(start)) else stored


def _authors_json(paper: Paper) -> str:
    return json.dumps(list(paper.authors), ensure_ascii=False)
