"""The delivery log: one record per digest, moved through explicit states.

    plan ──> pending ──mark_sending──> sending ──sent (session.py)──> sent
                ▲                         │ ├──mark_failed(permanent)──> failed ─┐
                │                         │ ├──mark_failed(temporary)──> retry   │ requeue
                └──────── retry <─────────┘ └──mark_unknown / crash──> unknown ──┘
    pending|retry ──record_unsubscribe──> cancelled

Every change is its own short transaction, committed before and after each network step, so a killed
run leaves at most the digests it was sending in 'sending'; the next run turns those into 'unknown'
(reported, never silently resent) instead of guessing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from newsletter.address import address_key
from newsletter.errors import StoreError
from newsletter.store.engine import Prepared
from newsletter.store.papers import chunks, papers_by_id
from newsletter.store.records import (
    CANCELLED,
    CLAIMED,
    FAILED,
    PENDING,
    QUEUED,
    RETRY,
    SENDING,
    SENT,
    UNKNOWN,
    DeliveryItem,
    DeliveryRecord,
    DigestPlan,
    InvalidTransition,
    Status,
)
from newsletter.store.schema import digest_items, digests, subscribers
from newsletter.store.schema import papers as papers_table
from newsletter.store.subscriber_state import dialect, unsubscribed_row, upsert

log = logging.getLogger(__name__)

MAX_DIGEST_ID = 200  # digests.id is VARCHAR(200)
MAX_ERROR = 2000  # characters of an error kept in last_error
INTERRUPTED = "interrupted while sending: the run stopped before the transport answered"
INTERRUPTED_REFUSED = "interrupted while waiting to try a refused request again (not sent): "
# procrastinate's queue of shards (newsletter.executors.distributed), in this database
JOB_QUEUE = "newsletter"
WORKER_SILENT_AFTER = 10.0  # seconds without a heartbeat after which a worker's job is given to another
GONE_AFTER = 120.0  # seconds without a heartbeat after which a worker counts as gone: its sends, its jobs


# --- planning ----------------------------------------------------------------------------------


def plan_digests(conn: Connection, plans: Iterable[DigestPlan]) -> list[str]:
    """Insert the plans whose digest_id is not recorded yet; return the ids inserted, in order.

    Safe against another process planning the same digests at the same moment (two hosts, or an
    engine that runs a shard twice): the digest row is inserted with ON CONFLICT DO NOTHING, and only
    the plans this transaction inserted move watermarks and record items. Rows are written in key
    order, so two such transactions on PostgreSQL wait for each other instead of deadlocking.
    """
    unique: dict[str, DigestPlan] = {}
    for plan in plans:
        unique.setdefault(plan.digest_id, plan)  # the first of duplicates wins
    planned: list[str] = []
    for batch in chunks(unique.values()):
        for plan in batch:
            _check_plan(plan)
        batch = _unclaimed(conn, batch)
        inserted = _insert_digests(conn, batch) if batch else set()
        fresh = [p for p in batch if p.digest_id in inserted]
        if fresh:
            _record_plans(conn, fresh)
            planned.extend(p.digest_id for p in fresh)
    return planned


def _unclaimed(conn: Connection, plans: Sequence[DigestPlan]) -> list[DigestPlan]:
    """The plans none of whose papers their subscriber has in a digest that went or may go out.

    Two planners can hold one subscriber's papers: a coordinator restarted while its shards still run
    plans the same papers under another window (so another digest id). The later plan is dropped:
    never twice. On PostgreSQL the subscribers' rows are locked first (in key order), so two planners
    of one subscriber take turns and the second sees the first's digest.
    """
    keys = sorted({address_key(p.email) for p in plans})
    insert = dialect(conn).insert
    conn.execute(
        insert(subscribers).on_conflict_do_nothing(index_elements=["email"]), [{"email": k} for k in keys]
    )
    if conn.dialect.name == "postgresql":
        lock = (
            sa.select(subscribers.c.email).where(subscribers.c.email.in_(keys)).order_by(subscribers.c.email)
        )
        conn.execute(lock.with_for_update())
    papers = sorted({i.paper_id for p in plans for i in p.items})
    # a digest holding one of these papers covers the dump it was first seen in: only recent ones do
    oldest = sa.select(sa.func.min(papers_table.c.first_dump_seq)).where(papers_table.c.id.in_(papers))
    query = (
        sa.select(digests.c.email, digest_items.c.paper_id)
        .join(digest_items, digest_items.c.digest_id == digests.c.id)
        .where(
            digests.c.email.in_(keys),
            digests.c.watermark_seq >= oldest.scalar_subquery(),
            digests.c.status.in_(CLAIMED),
            digest_items.c.paper_id.in_(papers),
        )
    )
    taken = {(email, paper_id) for email, paper_id in conn.execute(query)}
    kept = [p for p in plans if not any((address_key(p.email), i.paper_id) in taken for i in p.items)]
    dropped = [p for p in plans if p not in kept]
    again = _existing_ids(conn, [p.digest_id for p in dropped])  # the same digest planned twice: quiet
    for plan in dropped:
        if plan.digest_id not in again:
            log.warning(
                "%s: digest %s not planned: its papers are in another digest", plan.email, plan.digest_id
            )
    return kept


def _existing_ids(conn: Connection, ids: list[str]) -> set[str]:
    return set(conn.execute(sa.select(digests.c.id).where(digests.c.id.in_(ids))).scalars())


def _insert_digests(conn: Connection, plans: Sequence[DigestPlan]) -> set[str]:
    """Insert the digest rows not there yet (their subscribers' rows are there: see _unclaimed); the ids
    inserted."""
    keys = sorted({address_key(p.email) for p in plans})
    insert = dialect(conn).insert
    gone = _unsubscribed_among(conn, keys)  # since the run read who had unsubscribed
    rows = sorted((_digest_row(p, address_key(p.email) in gone) for p in plans), key=lambda row: row["id"])
    stmt = insert(digests).on_conflict_do_nothing(index_elements=["id"]).returning(digests.c.id)
    return set(conn.execute(stmt, rows).scalars())


def _record_plans(conn: Connection, plans: list[DigestPlan]) -> None:
    """Move each planned subscriber's watermark and record the digests' papers."""
    latest = {address_key(p.email): p for p in plans}  # one row per subscriber: the last plan wins
    watermark = [
        {
            "email": key,
            "watermark_seq": p.watermark_seq,
            "last_digest_at": p.created_at,
            "served_slot": p.served_slot,
        }
        for key, p in sorted(latest.items())
    ]
    update = {"watermark_seq": _never_back, "last_digest_at": lambda ex: ex.last_digest_at}
    upsert(conn, watermark, update | {"served_slot": lambda ex: ex.served_slot})
    rows = [  # ~10 per digest: the bulk of planning
        (p.digest_id, i.paper_id, i.position, float(i.score), i.why) for p in plans for i in p.items
    ]
    Prepared(_INSERT_ITEM, conn.dialect).run_rows(conn, _ITEM_COLUMNS, rows)


def _never_back(excluded: Any) -> Any:
    """The later of the stored watermark and the plan's: two planners' windows can end in either order."""
    stored = subscribers.c.watermark_seq
    return sa.case(
        (stored.is_(None), excluded.watermark_seq),
        (excluded.watermark_seq > stored, excluded.watermark_seq),
        else_=stored,
    )


_ITEM_COLUMNS = ("digest_id", "paper_id", "position", "score", "why")
_INSERT_ITEM = digest_items.insert().values({name: sa.bindparam(name) for name in _ITEM_COLUMNS})


def _check_plan(plan: DigestPlan) -> None:
    if not plan.digest_id.strip() or len(plan.digest_id) > MAX_DIGEST_ID:
        raise StoreError(f"digest for {plan.email}: digest_id must be 1-{MAX_DIGEST_ID} characters")
    if not plan.items:
        raise StoreError(f"digest {plan.digest_id}: a digest needs at least one paper")
    if plan.created_at.tzinfo is None:
        raise StoreError(f"digest {plan.digest_id}: created_at must be timezone-aware")


def _unsubscribed_among(conn: Connection, keys: list[str]) -> set[str]:
    query = sa.select(subscribers.c.email).where(
        subscribers.c.email.in_(keys), subscribers.c.unsubscribed_at.is_not(None)
    )
    return set(conn.execute(query).scalars())


def _digest_row(plan: DigestPlan, unsubscribed: bool = False) -> dict[str, Any]:
    """A planned digest; one for an address unsubscribed in the meantime is recorded cancelled."""
    return {
        "id": plan.digest_id,
        "email": address_key(plan.email),
        "status": CANCELLED if unsubscribed else PENDING,
        "last_error": "the subscriber unsubscribed" if unsubscribed else None,
        "created_at": plan.created_at,
        "updated_at": plan.created_at,
        "attempts": 0,
        "subject": plan.subject,
        "watermark_seq": plan.watermark_seq,
    }


# --- transitions -------------------------------------------------------------------------------


def _transition(
    conn: Connection, digest_id: str, allowed: Collection[str], values: Mapping[str, Any], *criteria: Any
) -> None:
    """Move one digest out of one of the ``allowed`` states, or raise InvalidTransition."""
    where = [digests.c.id == digest_id, digests.c.status.in_(allowed), *criteria]
    if conn.execute(digests.update().where(*where).values(**values)).rowcount != 1:
        raise _refusal(conn, digest_id, allowed)


def _refusal(conn: Connection, digest_id: str, allowed: Collection[str]) -> InvalidTransition:
    row = conn.execute(sa.select(digests.c.status, digests.c.email).where(digests.c.id == digest_id)).first()
    if row is None:
        return InvalidTransition(f"no delivery record for digest {digest_id!r}")
    if row.status in allowed:
        return InvalidTransition(f"digest {digest_id!r}: {row.email} has unsubscribed")
    wanted = " or ".join(sorted(allowed))
    return InvalidTransition(f"digest {digest_id!r} is {row.status}, not {wanted}")


def mark_sending(conn: Connection, digest_id: str, now: datetime, message_id: str | None) -> None:
    values: dict[str, Any] = {"status": SENDING, "updated_at": now, "attempts": digests.c.attempts + 1}
    if message_id is not None:
        values["message_id"] = message_id
    _transition(conn, digest_id, QUEUED, values, sa.not_(unsubscribed_row(digests.c.email)))


def mark_failed(
    conn: Connection,
    digest_id: str,
    now: datetime,
    error: str,
    permanent: bool,
    retry_at: datetime | None,
    bounced: bool = False,
) -> None:
    """``bounced``: the server refused the address itself for good; its subscriber is held too."""
    values = {
        "status": FAILED if permanent else RETRY,
        "updated_at": now,
        "last_error": error[:MAX_ERROR],
        "not_before": None if permanent else retry_at,
    }
    # from 'unknown' too: another process's recovery may have given up on a send still in flight,
    # whose refusal is the truth (as an acceptance is for the session's 'sent')
    _transition(conn, digest_id, (PENDING, SENDING, RETRY, UNKNOWN), values)
    if bounced:
        owner = sa.select(digests.c.email).where(digests.c.id == digest_id).scalar_subquery()
        conn.execute(subscribers.update().where(subscribers.c.email == owner).values(bounced_at=now))


def tries(conn: Connection, digest_id: str) -> tuple[int, datetime] | None:
    """A digest's attempts so far and when it was planned (None: no such digest)."""
    row = conn.execute(
        sa.select(digests.c.attempts, digests.c.created_at).where(digests.c.id == digest_id)
    ).first()
    return None if row is None else (row.attempts, row.created_at)


def mark_unknown(conn: Connection, digest_id: str, now: datetime, error: str) -> None:
    values = {"status": UNKNOWN, "updated_at": now, "last_error": error[:MAX_ERROR]}
    _transition(conn, digest_id, (SENDING, UNKNOWN), values)


def hold_refused(conn: Connection, digest_ids: Sequence[str], error: str) -> None:
    """These 'sending' digests were refused (not sent) and wait for another try within the run."""
    values = {"refused": True, "last_error": error[:MAX_ERROR]}
    for batch in chunks(digest_ids):
        conn.execute(
            digests.update().where(digests.c.id.in_(batch), digests.c.status == SENDING).values(**values)
        )


def release_refused(conn: Connection, digest_ids: Sequence[str]) -> list[str]:
    """Their wait is over: 'sending' again, for the next try. Returns the ids still held (others were
    taken over meanwhile by another process's recovery, and must not be sent here)."""
    held: list[str] = []
    for batch in chunks(digest_ids):
        where = [digests.c.id.in_(batch), digests.c.status == SENDING, digests.c.refused.is_(True)]
        update = digests.update().where(*where).values(refused=None, last_error=None)
        held.extend(conn.execute(update.returning(digests.c.id)).scalars())
    return held


def emails_in_flight(conn: Connection) -> set[str]:
    """The address keys of the subscribers in shard jobs a live worker (a heartbeat within GONE_AFTER:
    a short network outage is no death) is delivering now, on any machine: what they hold 'sending' is
    theirs, not a crashed run's. Empty without the job queue's tables (SQLite, or no worker yet)."""
    if (
        conn.dialect.name != "postgresql"
        or conn.scalar(sa.text("SELECT to_regclass('procrastinate_jobs')")) is None
    ):
        return set()
    query = sa.text(
        "SELECT job.args -> 'shard' -> 'subscribers' FROM procrastinate_jobs AS job"
        " JOIN procrastinate_workers AS worker ON worker.id = job.worker_id"
        " WHERE job.queue_name = :queue AND job.status = 'doing'"
        " AND worker.last_heartbeat > now() - make_interval(secs => :silent)"
    )
    shards = conn.scalars(query, {"queue": JOB_QUEUE, "silent": GONE_AFTER})
    return {address_key(str(s.get("email", ""))) for subscribers in shards for s in subscribers or []}


def recover_interrupted(
    conn: Connection, now: datetime, spare: Collection[str] = ()
) -> tuple[list[str], list[str]]:
    """Digests a crashed run left in 'sending' become 'unknown', or 'retry' (due now) when they were
    waiting to try a refused request again; not those of the address keys in ``spare`` (a live
    worker's). Returns the ids of each (unknown, queued again)."""
    query = (
        sa.select(digests.c.id, digests.c.refused, digests.c.email)
        .where(digests.c.status == SENDING)
        .order_by(digests.c.created_at, digests.c.id)
    )
    rows = [row for row in conn.execute(query) if address_key(row.email) not in spare]
    unknown = [row.id for row in rows if not row.refused]
    queued = [row.id for row in rows if row.refused]
    values = {"status": UNKNOWN, "updated_at": now, "last_error": INTERRUPTED}
    for batch in chunks(unknown):
        update = digests.update().where(digests.c.id.in_(batch), digests.c.status == SENDING)
        conn.execute(update.values(**values))
    refused = {"status": RETRY, "updated_at": now, "refused": None, "not_before": None}
    error = sa.func.substr(
        sa.literal(INTERRUPTED_REFUSED, sa.Text) + sa.func.coalesce(digests.c.last_error, ""), 1, MAX_ERROR
    )
    for batch in chunks(queued):
        update = digests.update().where(digests.c.id.in_(batch), digests.c.status == SENDING)
        conn.execute(update.values(last_error=error, **refused))
    return unknown, queued


def requeue(
    conn: Connection, now: datetime, statuses: Collection[str], digest_ids: Collection[str] | None
) -> list[str]:
    """Put failed/unknown digests back in the queue as 'retry' (an operator's explicit choice).

    A failed digest was refused, so it drops the key of the batch request it was refused in: resent
    alone or with others, under that key it would be another request than the one the key names
    (Resend answers 409). An unknown one keeps its key, so the batch it may have arrived in is resent
    as the same request.
    """
    allowed = [s for s in statuses if s in (FAILED, UNKNOWN)]
    criteria = [digests.c.status.in_(allowed), sa.not_(unsubscribed_row(digests.c.email))]
    if digest_ids is not None:
        criteria.append(digests.c.id.in_(list(digest_ids)))
    query = sa.select(digests.c.id).where(*criteria).order_by(digests.c.created_at, digests.c.id)
    ids = list(conn.execute(query).scalars())
    for batch in chunks(ids):
        update = digests.update().where(digests.c.id.in_(batch), digests.c.status.in_(allowed))
        key = sa.case((digests.c.status == FAILED, sa.null()), else_=digests.c.batch_key)
        conn.execute(update.values(status=RETRY, updated_at=now, not_before=None, batch_key=key))
        owners = sa.select(digests.c.email).where(digests.c.id.in_(batch))
        conn.execute(subscribers.update().where(subscribers.c.email.in_(owners)).values(bounced_at=None))
    return ids


# --- reading the log ---------------------------------------------------------------------------


def delivery_counts(conn: Connection) -> dict[str, int]:
    query = sa.select(digests.c.status, sa.func.count()).group_by(digests.c.status)
    return {status: count for status, count in conn.execute(query)}


def deliveries(
    conn: Connection,
    *criteria: Any,
    with_items: bool = True,
    limit: int | None = None,
) -> list[DeliveryRecord]:
    query = sa.select(digests).where(*criteria).order_by(digests.c.created_at, digests.c.id).limit(limit)
    rows = list(conn.execute(query))
    items = _items(conn, [row.id for row in rows]) if with_items else {}
    return [_record(row, items.get(row.id, ())) for row in rows]


def delivery_criteria(statuses: Collection[str] | None, email: str | None) -> list[Any]:
    criteria: list[Any] = []
    if statuses is not None:
        criteria.append(digests.c.status.in_(list(statuses)))
    if email is not None:
        criteria.append(digests.c.email == address_key(email))
    return criteria


def queued_criteria(now: datetime | None) -> list[Any]:
    criteria = [digests.c.status.in_(QUEUED), sa.not_(unsubscribed_row(digests.c.email))]
    if now is not None:
        criteria.append(sa.or_(digests.c.not_before.is_(None), digests.c.not_before <= now))
    return criteria


def _items(conn: Connection, digest_ids: list[str]) -> dict[str, tuple[DeliveryItem, ...]]:
    rows: list[Row[Any]] = []
    for batch in chunks(digest_ids):
        query = sa.select(digest_items).where(digest_items.c.digest_id.in_(batch))
        rows.extend(conn.execute(query))
    papers = papers_by_id(conn, (row.paper_id for row in rows))
    grouped: dict[str, list[DeliveryItem]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r.digest_id, r.position)):
        grouped[row.digest_id].append(DeliveryItem(papers[row.paper_id], row.position, row.score, row.why))
    return {digest_id: tuple(items) for digest_id, items in grouped.items()}


def _record(row: Row[Any], items: tuple[DeliveryItem, ...]) -> DeliveryRecord:
    status: Status = row.status
    return DeliveryRecord(
        digest_id=row.id,
        email=row.email,
        status=status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        attempts=row.attempts,
        subject=row.subject,
        message_id=row.message_id,
        last_error=row.last_error,
        items=items,
        watermark_seq=row.watermark_seq,
        not_before=row.not_before,
        batch_key=row.batch_key,
    )


def latest_sent(conn: Connection) -> dict[str, datetime]:
    """When each address's latest sent digest was made."""
    query = sa.select(digests.c.email, sa.func.max(digests.c.created_at)).where(digests.c.status == SENT)
    return {email: made for email, made in conn.execute(query.group_by(digests.c.email))}


def prune_sent(conn: Connection, before: datetime, latest: dict[str, datetime]) -> int:
    """Delete the sent digests of ``latest``'s addresses sent before ``before`` (with their items), but
    each address's latest (made at ``latest[email]``, or later: `preview --last` shows it); returns how
    many. Address by address, on the email index. A caller keeps ``before`` past the catch-up window:
    the digests in it are what keeps their papers from being planned for the address again."""
    pruned = 0
    for email, newest in latest.items():
        old = sa.select(digests.c.id).where(
            digests.c.email == email,
            digests.c.status == SENT,
            digests.c.updated_at < before,
            digests.c.created_at < newest,
        )
        ids = list(conn.execute(old).scalars())
        for batch in chunks(ids):
            conn.execute(digest_items.delete().where(digest_items.c.digest_id.in_(batch)))
            conn.execute(digests.delete().where(digests.c.id.in_(batch)))
        pruned += len(ids)
    return pruned


def prunable(conn: Connection, before: datetime) -> list[str]:
    """The ids of the failed and cancelled digests last changed before ``before``, in id order. Sent ones
    stay: they are the delivery history. So do a held address's (``retry EMAIL`` resends its refused
    digest)."""
    return list(conn.execute(_prunable(before).order_by(digests.c.id)).scalars())


def prune(conn: Connection, before: datetime, digest_ids: Sequence[str]) -> int:
    """Delete those of ``digest_ids`` still prunable (with their items); returns how many. Asked again and
    locked first (PostgreSQL; SQLite's write transaction holds the whole file): one a `retry` queued again
    since stays, and a `retry` in another process waits, then finds them gone."""
    pruned = 0
    for batch in chunks(digest_ids):
        ids = list(conn.execute(_prunable(before, batch).with_for_update()).scalars())
        conn.execute(digest_items.delete().where(digest_items.c.digest_id.in_(ids)))
        conn.execute(digests.delete().where(digests.c.id.in_(ids)))
        pruned += len(ids)
    return pruned


def _prunable(before: datetime, digest_ids: Sequence[str] | None = None) -> sa.Select[str]:
    held = sa.select(subscribers.c.email).where(subscribers.c.bounced_at.is_not(None))
    criteria = [digests.c.updated_at < before, digests.c.email.not_in(held)]
    if digest_ids is None:
        return sa.select(digests.c.id).where(digests.c.status.in_((FAILED, CANCELLED)), *criteria)
    # by id: SQLite (no statistics) chose its status index instead and read every failed digest for each
    # list of ids (0.1 s a list); `status || ''` is no indexed column
    status = digests.c.status.concat("")
    return sa.select(digests.c.id).where(
        digests.c.id.in_(digest_ids), status.in_((FAILED, CANCELLED)), *criteria
    )
