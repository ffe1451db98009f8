"""Feedback from the digests' "more like this" / "less like this" links: one row per subscriber and paper.

A later click on the same paper replaces the earlier one (the last word counts).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from newsletter.address import address_key
from newsletter.errors import StoreError
from newsletter.store.papers import select_papers, stored_paper
from newsletter.store.records import FeedbackRecord
from newsletter.store.schema import feedback, papers


def record_feedback(
    conn: Connection, email: str, paper_id: int, kind: str, now: datetime, *, if_newer: bool = False
) -> None:
    """Insert, or replace the kind and time of, this subscriber's feedback on this paper; ``if_newer``
    (a click held while the store was down, recorded later) replaces only older feedback."""
    dialect: Any = {"sqlite": sqlite, "postgresql": postgresql}.get(conn.dialect.name)
    if dialect is None:
        raise StoreError(f"unsupported database {conn.dialect.name!r}: use SQLite or PostgreSQL")
    stmt = dialect.insert(feedback).values(
        email=address_key(email), paper_id=paper_id, kind=kind, created_at=now
    )
    update = {"kind": stmt.excluded.kind, "created_at": stmt.excluded.created_at}
    newer = feedback.c.created_at <= stmt.excluded.created_at if if_newer else None
    conn.execute(stmt.on_conflict_do_update(index_elements=["email", "paper_id"], set_=update, where=newer))


def feedback_of(conn: Connection, email: str) -> list[FeedbackRecord]:
    """One subscriber's feedback, newest first."""
    query = (
        select_papers(feedback.c.kind, feedback.c.created_at.label("feedback_at"))
        .join(feedback, feedback.c.paper_id == papers.c.id)
        .where(feedback.c.email == address_key(email))
        .order_by(feedback.c.created_at.desc(), papers.c.id)
    )
    return [FeedbackRecord(stored_paper(row), row.kind, row.feedback_at) for row in conn.execute(query)]


def feedback_marks(conn: Connection) -> dict[str, dict[str, list[str]]]:
    """email -> kind -> keys of the papers given that feedback, oldest first (what the rankers read):
    a key, not a title two papers may share, names the very paper marked."""
    query = (
        sa.select(feedback.c.email, feedback.c.kind, papers.c.key)
        .join(papers, feedback.c.paper_id == papers.c.id)
        .order_by(feedback.c.created_at, papers.c.id)
    )
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"more": [], "less": []})
    for row in conn.execute(query):
        found[row.email][row.kind].append(row.key)
    return dict(found)
