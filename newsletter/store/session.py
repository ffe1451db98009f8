"""The delivery hot path: one connection for a run's sends, one short transaction per message.

Per message the log needs two durable steps: *sending* before the network step and *sent* after it.
The session folds the previous message's *sent* into the next message's *sending* transaction, so a
run of N messages commits N + 1 transactions on one connection instead of 2N on fresh ones. A crash
between a message's acceptance and the next commit leaves it 'sending', which the next run reports as
'unknown' (never resent): still at most one per crash. A database that fails that commit (down, its
disk full) gets the acceptances handed to ``unrecorded`` (the run's state folder keeps them, held.py),
which records them 'sent' once it answers again: not 'unknown', for `retry --unknown` to send twice.

A run sending over several connections has one session per connection; they share a lock, so they
take turns at the database instead of polling SQLite's busy timeout.

Unsubscribing cancels queued digests in its own transaction, so a status check covers it here.

The two UPDATEs are compiled once per session and run on the DBAPI cursor: SQLAlchemy's per-execute
work (cache lookup, parameter processing, result set-up) cost twice as much as the statements
themselves (0.18 vs 0.09 ms per message, measured with benchmarks/throughput.py's store). The SQL is
still written in Core and compiled for the engine's dialect, so it runs wherever the store does.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from newsletter.errors import StoreError
from newsletter.store.engine import Prepared, bind_processor, db_errors, write_options
from newsletter.store.records import QUEUED, SENDING, SENT, UNKNOWN, NotQueued
from newsletter.store.schema import digests
from newsletter.store.subscriber_state import unsubscribed_row

log = logging.getLogger(__name__)

_SENDING = (
    digests.update()
    .where(
        digests.c.id == sa.bindparam("b_id"),
        sa.or_(*(digests.c.status == s for s in QUEUED)),
        sa.not_(unsubscribed_row(digests.c.email)),  # one who unsubscribed while the run ranked
    )
    .values(
        status=SENDING,
        updated_at=sa.bindparam("b_now"),
        message_id=sa.bindparam("b_message_id"),
        attempts=digests.c.attempts + 1,
    )
)
_SENDING_IN_BATCH = _SENDING.values(batch_key=sa.bindparam("b_batch_key"))
_SENT = (  # from 'unknown' too: another process's recovery may have given up on a send still in flight
    digests.update()
    .where(
        digests.c.id == sa.bindparam("b_id"), sa.or_(digests.c.status == SENDING, digests.c.status == UNKNOWN)
    )
    .values(
        status=SENT,
        updated_at=sa.bindparam("b_now"),
        message_id=sa.bindparam("b_message_id"),
        last_error=None,
        not_before=None,
    )
)


# what a session hands the (digest id, Message-ID) pairs the server accepted and the database would not
# record, with the time they were accepted
Unrecorded = Callable[[Sequence[tuple[str, str]], datetime], None]


class DeliverySession:
    """Use as a context manager; ``flush()`` (also on exit) makes the last accepted message 'sent'."""

    def __init__(
        self, engine: Engine, lock: threading.Lock | None = None, unrecorded: Unrecorded | None = None
    ) -> None:
        self._engine = engine
        self._unrecorded = unrecorded
        # the sessions of one run take turns at the database
        self._lock: contextlib.AbstractContextManager[object] = lock or contextlib.nullcontext()
        self._conn: Connection | None = None
        self._accepted: tuple[str, str, datetime] | None = None  # sent, not yet committed
        dialect = engine.dialect
        self._sending = Prepared(_SENDING, dialect)
        self._sending_in_batch = Prepared(_SENDING_IN_BATCH, dialect)
        self._sent = Prepared(_SENT, dialect)
        self._db_time: Callable[[datetime], Any] = bind_processor(digests.c.updated_at, dialect)

    def __enter__(self) -> DeliverySession:
        with db_errors("opening a delivery session"):
            self._conn = self._engine.connect()
            self._conn.execution_options(**write_options())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.flush()
        finally:
            if self._conn is not None:
                self._conn.close()

    def sending(self, digest_id: str, message_id: str, now: datetime) -> None:
        """pending|retry -> sending (and commit the previous acceptance); InvalidTransition if it can't."""
        params = {"b_id": digest_id, "b_now": self._db_time(now), "b_message_id": message_id}
        with self._tx(f"marking digest {digest_id} sending") as conn:
            self._record_accepted(conn)
            moved = self._sending.run(conn, params) == 1
        self._accepted = None  # committed with this transaction, whether or not this digest moved
        if not moved:
            raise NotQueued(f"digest {digest_id!r} is no longer queued (cancelled or handled)")

    def sending_many(
        self, pairs: Sequence[tuple[str, str]], now: datetime, batch_key: str | None = None
    ) -> list[str]:
        """``sending`` for a batch request's (digest_id, message_id) pairs, in one transaction.

        ``batch_key`` (the request's idempotency key) is kept with each, so a resend can reuse it.
        Returns the ids moved; the others (cancelled by an unsubscribe, handled) are left as they are.
        """
        stamp = self._db_time(now)
        with self._tx(f"marking {len(pairs)} digests sending") as conn:
            self._record_accepted(conn)
            moved = [
                digest_id
                for digest_id, message_id in pairs
                if self._batch_sending(conn, digest_id, message_id, stamp, batch_key)
            ]
        self._accepted = None
        return moved

    def _batch_sending(
        self, conn: Connection, digest_id: str, message_id: str, stamp: Any, batch_key: str | None
    ) -> bool:
        params = {"b_id": digest_id, "b_now": stamp, "b_message_id": message_id, "b_batch_key": batch_key}
        return self._sending_in_batch.run(conn, params) == 1

    def sent_many(self, pairs: Sequence[tuple[str, str]], now: datetime) -> None:
        """The API accepted these (digest_id, message_id) pairs: 'sent', committed now."""
        try:
            with self._tx(f"marking {len(pairs)} digests sent") as conn:
                self._record_accepted(conn)
                for digest_id, message_id in pairs:
                    self._mark_sent(conn, digest_id, message_id, now)
        except StoreError:
            self._hand_over(pairs, now)
            raise
        self._accepted = None

    def sent_if_open(self, digest_id: str, message_id: str, now: datetime) -> bool:
        """'sent' if it is still 'sending' or 'unknown' (an acceptance held while the database was
        down); whether it was."""
        params = {"b_id": digest_id, "b_now": self._db_time(now), "b_message_id": message_id}
        with self._tx(f"marking digest {digest_id} sent") as conn:
            return self._sent.run(conn, params) == 1

    def accepted(self, digest_id: str, message_id: str, now: datetime) -> None:
        """The transport accepted it; recorded 'sent' with the next transaction or at flush()."""
        self._accepted = (digest_id, message_id, now)

    def flush(self) -> None:
        if self._accepted is None:
            return
        try:
            with self._tx("marking a digest sent") as conn:
                self._record_accepted(conn)
        except StoreError:
            self._hand_over((), self._accepted[2])
            raise
        self._accepted = None

    def _hand_over(self, pairs: Sequence[tuple[str, str]], now: datetime) -> None:
        """What the server accepted and the database did not record, to ``unrecorded`` (then no longer
        this session's to record: a later commit must not record it a second time)."""
        if self._unrecorded is None:
            return
        if self._accepted is not None:
            digest_id, message_id, when = self._accepted
            self._unrecorded([(digest_id, message_id)], when)
            self._accepted = None
        if pairs:
            self._unrecorded(pairs, now)

    def _record_accepted(self, conn: Connection) -> None:
        if self._accepted is not None:
            self._mark_sent(conn, *self._accepted)

    def _mark_sent(self, conn: Connection, digest_id: str, message_id: str, now: datetime) -> None:
        params = {"b_id": digest_id, "b_now": self._db_time(now), "b_message_id": message_id}
        if self._sent.run(conn, params) != 1:  # not this transaction's digest: it goes on
            log.warning(
                "digest %r was accepted by the server, but another process had taken it over meanwhile "
                "(`retry --unknown` while a worker sent it?): it may arrive twice",
                digest_id,
            )

    @contextmanager
    def _tx(self, action: str) -> Iterator[Connection]:
        assert self._conn is not None, "use DeliverySession as a context manager"
        with self._lock, db_errors(action), self._conn.begin():
            yield self._conn
