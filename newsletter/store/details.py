"""A paper's details (``PaperDetails`` and its comment count): kept in ``paper_details``, one row a paper.

A later listing's value replaces an earlier one; counts that only grow (comments, stars) keep the
highest and the listing date the earliest, whatever order the listings are ingested in (a backfill);
a field the later listing lacks keeps what an earlier one said, so a text dump never erases what the
API told us.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from newsletter.models import NO_DETAILS, Paper, PaperDetails
from newsletter.store.schema import paper_details

__all__ = ["DETAIL_COLUMNS", "details_from_row", "joined_papers", "write_details"]

_FIELDS = tuple(f.name for f in dataclasses.fields(PaperDetails))
DETAIL_COLUMNS = tuple(paper_details.c[name] for name in ("comments", *_FIELDS))


def joined_papers(papers: sa.Table) -> sa.Join:
    """``papers`` with their details (NULLs for a paper without any)."""
    return papers.outerjoin(paper_details, paper_details.c.paper_id == papers.c.id)


def details_from_row(row: Row[Any]) -> tuple[int | None, PaperDetails]:
    """(comments, details) from a row selected with DETAIL_COLUMNS."""
    values = {name: getattr(row, name) for name in _FIELDS}
    if all(value is None for value in values.values()):
        return row.comments, NO_DETAILS
    values["ai_keywords"] = tuple(json.loads(values["ai_keywords"] or "[]"))
    return row.comments, PaperDetails(**values)


def write_details(conn: Connection, listed: Iterable[tuple[int, Paper]]) -> None:
    """Record what each listing says about paper id; merged with what the store had."""
    fresh = {pid: _values(paper) for pid, paper in listed if _has_details(paper)}
    if not fresh:
        return
    ids = sorted(fresh)
    stored = {
        row.paper_id: row._mapping
        for row in conn.execute(sa.select(paper_details).where(paper_details.c.paper_id.in_(ids)))
    }
    rows = [_merged(pid, fresh[pid], stored.get(pid)) for pid in ids]
    conn.execute(paper_details.delete().where(paper_details.c.paper_id.in_(ids)))
    conn.execute(paper_details.insert(), rows)


def _has_details(paper: Paper) -> bool:
    return paper.comments is not None or paper.details != NO_DETAILS


def _values(paper: Paper) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(paper.details, name) for name in _FIELDS}
    values["ai_keywords"] = (
        json.dumps(list(paper.details.ai_keywords), ensure_ascii=False) if paper.details.ai_keywords else None
    )
    values["comments"] = paper.comments
    return values


_KEEP = {"comments": max, "github_stars": max, "listed_at": min}  # else the later listing's value


def _merged(paper_id: int, fresh: dict[str, Any], stored: Any) -> dict[str, Any]:
    old = dict(stored) if stored is not None else {}
    merged = {name: _one(name, value, old.get(name)) for name, value in fresh.items()}
    return {**merged, "paper_id": paper_id}


def _one(name: str, fresh: Any, old: Any) -> Any:
    if fresh is None or old is None:
        return old if fresh is None else fresh
    keep = _KEEP.get(name)
    return keep(fresh, old) if keep else fresh
