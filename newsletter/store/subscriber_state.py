"""Subscriber state: each address's watermark (the last dump weighed for it), its last digest and
the send slot it served, an unsubscribe, and a hold after its address bounced."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row, RowMapping

from newsletter.address import address_key
from newsletter.errors import StoreError
from newsletter.store.papers import chunks
from newsletter.store.records import CANCELLED, QUEUED, SubscriberState
from newsletter.store.schema import digests, feedback, subscribers


def upsert(conn: Connection, rows: Sequence[Mapping[str, Any]], update: Mapping[str, Any]) -> None:
    """Insert subscriber rows, or on an existing email apply ``update`` (column -> expression of
    ``excluded``). ON CONFLICT exists in both SQLite and PostgreSQL; SQLAlchemy spells it per dialect."""
    stmt = dialect(conn).insert(subscribers)
    set_ = {name: make(stmt.excluded) for name, make in update.items()}
    conn.execute(stmt.on_conflict_do_update(index_elements=["email"], set_=set_), list(rows))


def dialect(conn: Connection) -> Any:
    """The dialect module whose ``insert`` spells ON CONFLICT (SQLite and PostgreSQL both have it)."""
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(conn.dialect.name)
    if dialect is None:
        raise StoreError(f"unsupported database {conn.dialect.name!r}: use SQLite or PostgreSQL")
    return dialect


def _subscriber_state(row: Row[Any]) -> SubscriberState:
    return SubscriberState(
        row.email, row.watermark_seq, row.last_digest_at, row.unsubscribed_at, row.served_slot, row.bounced_at
    )


def subscriber_state(conn: Connection, email: str) -> SubscriberState | None:
    row = conn.execute(sa.select(subscribers).where(subscribers.c.email == address_key(email))).first()
    return None if row is None else _subscriber_state(row)


def subscriber_states(conn: Connection) -> dict[str, SubscriberState]:
    return {row.email: _subscriber_state(row) for row in conn.execute(sa.select(subscribers))}


def advance_watermarks(
    conn: Connection, emails: Iterable[str], seq: int, served: datetime | None = None
) -> None:
    """Evaluated up to ``seq``; never moves a watermark backwards. ``served``: the send time served."""
    current = subscribers.c.watermark_seq

    def newer(excluded: Any) -> Any:
        keep = sa.and_(current.is_not(None), current >= excluded.watermark_seq)
        return sa.case((keep, current), else_=excluded.watermark_seq)

    extra = {} if served is None else {"served_slot": served}
    rows = [{"email": key, "watermark_seq": seq, **extra} for key in sorted(set(map(address_key, emails)))]
    update: dict[str, Any] = {"watermark_seq": newer}
    if served is not None:
        update["served_slot"] = lambda ex: ex.served_slot
    for batch in chunks(rows):
        upsert(conn, batch, update)


def record_unsubscribe(conn: Connection, email: str, now: datetime) -> int:
    """Keep the first unsubscribe time; cancel this subscriber's queued digests. Returns how many."""
    key = address_key(email)
    keep_first = {
        "unsubscribed_at": lambda ex: sa.func.coalesce(subscribers.c.unsubscribed_at, ex.unsubscribed_at)
    }
    upsert(conn, [{"email": key, "unsubscribed_at": now}], keep_first)
    cancel = (
        digests.update()
        .where(digests.c.email == key, digests.c.status.in_(QUEUED))
        .values(status=CANCELLED, updated_at=now, last_error="the subscriber unsubscribed")
    )
    return conn.execute(cancel).rowcount


def resubscribe(conn: Connection, email: str, latest_seq: int | None) -> bool:
    """Clear an unsubscribe, with the watermark moved to ``latest_seq``: what was listed while they were
    away is not sent. False when the address had not unsubscribed."""
    update = (
        subscribers.update()
        .where(subscribers.c.email == address_key(email), subscribers.c.unsubscribed_at.is_not(None))
        .values(unsubscribed_at=None, watermark_seq=sa.func.coalesce(latest_seq, subscribers.c.watermark_seq))
    )
    return bool(conn.execute(update).rowcount)


def rename(conn: Connection, old: str, new: str) -> tuple[int, int]:
    """Move ``old``'s state, digests and feedback to ``new`` (address keys): (digests, marks) moved.

    ``new`` must have no digest or feedback of its own (two histories are not merged); a bare state row
    of it (a run weighed papers for it and sent nothing) gives way to ``old``'s, but for its unsubscribe
    (recorded by address alone: it is kept). A refusal for good (``bounced_at``) stays with the old
    address: the new one has not bounced.
    """
    if _history(conn, new):
        raise StoreError(
            f"{new} already has digests or feedback in the store: its history and {old}'s are not merged"
        )
    row = _row(conn, old)
    if row is None and not _history(conn, old):
        raise StoreError(f"no history for {old} in the store: nothing to move (a typo?)")
    if row is not None:
        bare = _row(conn, new)
        conn.execute(subscribers.delete().where(subscribers.c.email == new))
        conn.execute(subscribers.insert().values({**row, **_new_state(new, row, bare)}))
    moved = conn.execute(digests.update().where(digests.c.email == old).values(email=new)).rowcount
    marks = conn.execute(feedback.update().where(feedback.c.email == old).values(email=new)).rowcount
    conn.execute(subscribers.delete().where(subscribers.c.email == old))
    if row is not None and row["bounced_at"] is not None:  # the old address is still refused
        conn.execute(subscribers.insert().values(email=old, bounced_at=row["bounced_at"]))
    return moved, marks


def _row(conn: Connection, email: str) -> RowMapping | None:
    return conn.execute(sa.select(subscribers).where(subscribers.c.email == email)).mappings().first()


def _new_state(new: str, row: RowMapping, bare: RowMapping | None) -> dict[str, Any]:
    """What of ``row`` (the old address's state) changes under ``new``: its address, no refusal, and
    the earlier of the two unsubscribes (``bare``: the new address's own row, if any)."""
    given = (row["unsubscribed_at"], bare["unsubscribed_at"] if bare else None)
    asked: list[datetime] = [at for at in given if at is not None]
    return {"email": new, "bounced_at": None, "unsubscribed_at": min(asked, default=None)}


def _history(conn: Connection, email: str) -> bool:
    has_digest = sa.exists().where(digests.c.email == email)
    has_mark = sa.exists().where(feedback.c.email == email)
    return bool(conn.execute(sa.select(sa.or_(has_digest, has_mark))).scalar())


def unsubscribed_emails(conn: Connection) -> set[str]:
    query = sa.select(subscribers.c.email).where(subscribers.c.unsubscribed_at.is_not(None))
    return set(conn.execute(query).scalars())


def unsubscribed_row(email_column: Any) -> Any:
    """True for rows whose subscriber has unsubscribed."""
    return sa.exists().where(subscribers.c.email == email_column, subscribers.c.unsubscribed_at.is_not(None))
