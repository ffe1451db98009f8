"""The Store: one object the pipeline, CLI and unsubscribe endpoint share. Each method is one transaction."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.address import address_key
from newsletter.errors import StoreError
from newsletter.models import Dump, StoredPaper
from newsletter.store import delivery, rejected
from newsletter.store import feedback as feedback_log
from newsletter.store import subscriber_state as substate
from newsletter.store.catalog import Catalog
from newsletter.store.engine import db_errors, make_engine, parse_url, safe_url, transaction
from newsletter.store.ingest import ingest_dump
from newsletter.store.lock import (
    RUN_LOCK_KEY,
    AdvisoryLock,
    advisory_lock_holder,
    file_lock_holder,
    run_lock,
    uses_advisory_locks,
)
from newsletter.store.migrations import migrate
from newsletter.store.papers import chunks, paper_by_key
from newsletter.store.records import (
    FAILED,
    UNKNOWN,
    DeliveryRecord,
    DigestPlan,
    FeedbackRecord,
    IngestResult,
    SubscriberState,
)
from newsletter.store.schema import digest_items, digests, dumps, installation, subscribers
from newsletter.store.schema import feedback as feedback_table
from newsletter.store.session import DeliverySession, Unrecorded
from newsletter.store.transfer import copy_rows
from newsletter.store.upgrade import upgrade_guard

log = logging.getLogger(__name__)

PRUNE_ADDRESSES = 50  # addresses whose old sent digests are forgotten per transaction
PRUNE_DIGESTS = 2_000  # failed or cancelled digests forgotten per transaction


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise StoreError(f"{name} must be a timezone-aware datetime, got {value.isoformat()}")
    return value


class Store(Catalog):
    """The state database: dumps, papers (read back by Catalog), subscriber state and the delivery log."""

    def __init__(self, url: str, where: str = "NEWSLETTER_DATABASE_URL", *, home: Path | None = None) -> None:
        """``where``: the setting or argument ``url`` came from, for messages; ``home``: the state folder
        whose run lock (SQLite's) must be free to bring the schema up to date (PostgreSQL's run lock is the
        database's own)."""
        self.url = parse_url(url, where)
        self._engine = make_engine(self.url, where)
        guard = upgrade_guard(self._engine, home)
        try:
            with db_errors(f"opening {safe_url(self.url)}"):
                self.migrations_applied = migrate(self._engine, guard=guard)
        except BaseException:
            self._engine.dispose()  # no pooled connection outlives a store that failed to open
            raise
        self._nonce: str | None = None

    def close(self) -> None:
        self._engine.dispose()

    def dispose_after_fork(self) -> None:
        """In a forked child: forget the parent's pooled connections without closing them."""
        self._engine.dispose(close=False)

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({safe_url(self.url)!r})"

    @contextmanager
    def _tx(self, action: str, *, write: bool = False) -> Iterator[Connection]:
        with db_errors(action), transaction(self._engine, write=write) as conn:
            yield conn

    # --- this installation ---------------------------------------------------------------------

    @property
    def installation_nonce(self) -> str:
        """A random value made when this database was created (migration 0003), read once."""
        if self._nonce is None:
            with self._tx("reading the installation id") as conn:
                self._nonce = str(conn.execute(sa.select(installation.c.nonce)).scalar_one())
        return self._nonce

    def is_empty(self) -> bool:
        """True when no dump was ever ingested and no subscriber recorded (a new or emptied database)."""
        with self._tx("reading the store") as conn:
            found = [conn.execute(sa.select(t).limit(1)).first() for t in (dumps, subscribers)]
        return all(row is None for row in found)

    @property
    def shared(self) -> bool:
        """True for a database several machines can share (PostgreSQL): its lock is in the database."""
        return uses_advisory_locks(self._engine)

    def run_lock_holder(self, home: Path) -> str | None:
        """Who holds the run lock now (a run, the daemon, a `retry`), found without taking it; None: free."""
        if not self.shared:
            return file_lock_holder(home)
        with db_errors("reading who holds the run lock"):
            return advisory_lock_holder(self._engine, RUN_LOCK_KEY)

    def coordinator_lock(self) -> AdvisoryLock:
        """The run lock of a shared database, held by one run or daemon across every machine."""
        return AdvisoryLock(self._engine, RUN_LOCK_KEY, "run")

    @contextmanager
    def lock(self, home: Path, timeout: float = 0.0) -> Iterator[Callable[[], bool]]:
        """The run lock: in a shared database (PostgreSQL) when there is one, else home/run.lock. Gives
        a check that it is still held: the database's goes with its connection (ended by a DBA, an
        idle-session timeout, a proxy), and another run may then take it."""
        if not self.shared:
            with run_lock(home, timeout):
                yield lambda: True
            return
        lock = self.coordinator_lock()
        with db_errors("taking the run lock"), lock.hold(timeout):
            yield lock.held

    def copy_to(self, target: Store) -> dict[str, int]:
        """Copy this whole state into the empty ``target`` (one transaction there); rows per table."""
        with (
            self._tx("reading the state to copy") as source,
            target._tx("copying the state", write=True) as conn,
        ):
            counts = copy_rows(source, conn)
        log.info("copied %s to %s: %s", self, target, counts)
        return counts

    # --- dumps and papers (read back: see catalog.py) -------------------------------------------

    def ingest(self, dump: Dump, now: datetime) -> IngestResult:
        """Record a dump and its papers in one transaction; the same content twice is a no-op."""
        _aware(now, "now")
        with self._tx(f"ingesting {dump.source}", write=True) as conn:
            result = ingest_dump(conn, dump, now)
        level = logging.DEBUG if result.already else logging.INFO  # a daemon sees every old file each tick
        log.log(
            level,
            "ingested %s: dump %s, %s papers, %s new",
            dump.source,
            result.dump_seq,
            result.papers,
            result.new,
        )
        return result

    def rejected_keys(self) -> set[tuple[str, str]]:
        """(content hash, path) of the dump files refused before (see ``remember_rejected``)."""
        with self._tx("reading rejected files") as conn:
            return rejected.rejected_keys(conn)

    def move_rejected(self, content_hash: str, old: str, new: str) -> None:
        """A refused file found under another folder (the dumps folder moved): its record follows it."""
        with self._tx("moving a refused file's record", write=True) as conn:
            rejected.move_rejected(conn, content_hash, old, new)

    def remember_rejected(self, content_hash: str, path: str, problem: str, now: datetime) -> None:
        """Remember a refused dump file by its content and path, so later folder scans skip it quietly."""
        _aware(now, "now")
        with self._tx(f"remembering rejected file {path}", write=True) as conn:
            rejected.remember_rejected(conn, content_hash, path, problem, now)

    def rejected_files(self) -> list[rejected.RejectedFile]:
        with self._tx("reading rejected files") as conn:
            return rejected.list_rejected(conn)

    # --- subscribers ---------------------------------------------------------------------------

    def subscriber_state(self, email: str) -> SubscriberState | None:
        with self._tx("reading subscriber state") as conn:
            return substate.subscriber_state(conn, email)

    def subscriber_states(self) -> dict[str, SubscriberState]:
        """Every known subscriber's state, keyed by normalised (stripped, lower-cased) email."""
        with self._tx("reading subscriber state") as conn:
            return substate.subscriber_states(conn)

    def advance_watermarks(self, emails: Iterable[str], seq: int, served: datetime | None = None) -> None:
        """Evaluated up to ``seq``, nothing to send (never lowers an existing watermark), for many
        subscribers in one transaction; ``served``: the send time they were due for, served with nothing
        to send."""
        with self._tx("advancing subscriber watermarks", write=True) as conn:
            substate.advance_watermarks(conn, emails, seq, served)

    def record_unsubscribe(self, email: str, now: datetime) -> None:
        """Record the unsubscribe (first time kept) and cancel the address's queued digests."""
        _aware(now, "now")
        with self._tx(f"recording the unsubscribe of {email}", write=True) as conn:
            cancelled = substate.record_unsubscribe(conn, email, now)
        log.info("recorded unsubscribe of %s (%s queued digests cancelled)", email, cancelled)

    def resubscribe(self, email: str) -> bool:
        """Undo an unsubscribe (a person asked to come back); their next digest holds only papers listed
        from now on. False when the address had not unsubscribed."""
        with self._tx(f"resubscribing {email}", write=True) as conn:
            latest = conn.execute(sa.select(sa.func.max(dumps.c.seq))).scalar()
            done = substate.resubscribe(conn, email, latest)
        if done:
            log.info("resubscribed %s", email)
        return done

    def forget_subscriber(self, email: str) -> tuple[int, int, bool]:
        """Erase everything the database holds about the address (its digests and their papers' places,
        its feedback, its state and unsubscribe): (digests, feedback marks, whether it had a state row)."""
        key = address_key(email)
        with self._tx(f"forgetting {email}", write=True) as conn:
            if conn.dialect.name == "sqlite":  # the deleted rows' bytes zeroed, not left in free space
                conn.exec_driver_sql("PRAGMA secure_delete = ON")  # (off in many SQLite builds)
            ids = sa.select(digests.c.id).where(digests.c.email == key)
            conn.execute(digest_items.delete().where(digest_items.c.digest_id.in_(ids)))
            gone = conn.execute(digests.delete().where(digests.c.email == key)).rowcount
            marks = conn.execute(feedback_table.delete().where(feedback_table.c.email == key)).rowcount
            row = conn.execute(subscribers.delete().where(subscribers.c.email == key)).rowcount
        log.info("forgot %s", email)
        return gone, marks, bool(row)

    def rename_subscriber(self, old: str, new: str) -> tuple[int, int]:
        """Give ``old``'s history (digests, feedback, watermark, an unsubscribe) to ``new``, in one
        transaction: (digests, feedback marks) moved. StoreError if ``new`` has a history of its own."""
        old_key, new_key = address_key(old), address_key(new)
        with self._tx(f"moving {old_key}'s history to {new_key}", write=True) as conn:
            moved = substate.rename(conn, old_key, new_key)
        log.info("moved %s's history to %s", old_key, new_key)
        return moved

    def is_unsubscribed(self, email: str) -> bool:
        state = self.subscriber_state(email)
        return state is not None and state.unsubscribed_at is not None

    def unsubscribed_emails(self) -> set[str]:
        with self._tx("reading subscriber state") as conn:
            return substate.unsubscribed_emails(conn)

    # --- feedback ------------------------------------------------------------------------------

    def record_feedback(
        self, email: str, paper_key: str, kind: str, now: datetime, *, if_newer: bool = False
    ) -> StoredPaper | None:
        """Record "more" or "less" like this paper (replacing earlier feedback on it; with ``if_newer``,
        a click `serve` held, only older feedback); None: no such paper.

        The one path for every way feedback arrives: the digest's links, `newsletter feedback`.
        """
        _aware(now, "now")
        if kind not in ("more", "less"):
            raise StoreError(f"feedback kind must be 'more' or 'less', not {kind!r}")
        with self._tx(f"recording feedback from {email}", write=True) as conn:
            found = paper_by_key(conn, paper_key)
            if found is None:
                return None
            feedback_log.record_feedback(conn, email, found.id, kind, now, if_newer=if_newer)
        log.info("recorded '%s like this' from %s on %s", kind, email, paper_key)
        return found

    def feedback(self, email: str) -> list[FeedbackRecord]:
        """A subscriber's feedback, newest first."""
        with self._tx("reading feedback") as conn:
            return feedback_log.feedback_of(conn, email)

    def feedback_marks(self) -> dict[str, dict[str, list[str]]]:
        """Normalised email -> "more"/"less" -> keys of the papers marked so, oldest first."""
        with self._tx("reading feedback") as conn:
            return feedback_log.feedback_marks(conn)

    # --- planning ------------------------------------------------------------------------------

    def plan_digests(self, plans: Iterable[DigestPlan]) -> int:
        """Record each plan as a 'pending' digest and move its subscriber's watermark, in one
        transaction; returns how many were new (a plan already recorded is not)."""
        with self._tx("planning digests", write=True) as conn:
            return len(delivery.plan_digests(conn, plans))

    # --- delivery state machine ----------------------------------------------------------------

    def mark_sending(self, digest_id: str, now: datetime, message_id: str | None = None) -> None:
        """pending|retry -> sending, attempts + 1. Call (and let it commit) before the network step.

        ``message_id`` (optional) is kept so an 'unknown' delivery can be traced at the server.
        Raises InvalidTransition when the digest is in another state or its subscriber unsubscribed.
        """
        _aware(now, "now")
        with self._tx(f"marking digest {digest_id} sending", write=True) as conn:
            delivery.mark_sending(conn, digest_id, now, message_id)

    def delivery_session(
        self, lock: threading.Lock | None = None, unrecorded: Unrecorded | None = None
    ) -> DeliverySession:
        """The per-message hot path for a run's sends (see store/session.py)."""
        return DeliverySession(self._engine, lock, unrecorded)

    def sent_after_all(self, digest_id: str, message_id: str, at: datetime) -> bool:
        """A send held while the database could not record it: 'sent' now, if the digest is still
        'sending' or 'unknown' (a held line recorded before is not again); whether it was."""
        _aware(at, "at")
        with self.delivery_session() as session:
            moved = session.sent_if_open(digest_id, message_id, at)
        if moved:
            log.info("digest %s recorded sent, as held while the database could not take it", digest_id)
        return moved

    def mark_failed(
        self,
        digest_id: str,
        now: datetime,
        error: str,
        permanent: bool,
        retry_at: datetime | None = None,
        *,
        bounced: bool = False,
    ) -> None:
        """permanent -> 'failed' (never retried); temporary -> 'retry' (due again from ``retry_at``).
        ``bounced`` (the address itself refused for good) holds its subscriber's new digests until
        ``requeue`` (`newsletter retry`) queues the refused one again."""
        _aware(now, "now")
        if retry_at is not None:
            _aware(retry_at, "retry_at")
        with self._tx(f"marking digest {digest_id} failed", write=True) as conn:
            delivery.mark_failed(conn, digest_id, now, error, permanent, retry_at, bounced)

    def tries(self, digest_id: str) -> tuple[int, datetime] | None:
        """A digest's attempts so far and when it was planned (None: no such digest)."""
        with self._tx(f"reading digest {digest_id}") as conn:
            return delivery.tries(conn, digest_id)

    def mark_unknown(self, digest_id: str, now: datetime, error: str) -> None:
        """sending -> unknown: the message may have been accepted. Reported, not resent."""
        _aware(now, "now")
        with self._tx(f"marking digest {digest_id} unknown", write=True) as conn:
            delivery.mark_unknown(conn, digest_id, now, error)

    def hold_refused(self, digest_ids: Sequence[str], error: str) -> None:
        """These 'sending' digests were refused (not sent) and wait for another try within the run:
        a crash during the wait makes them 'retry' instead of 'unknown' (recover_interrupted)."""
        with self._tx("marking digests refused", write=True) as conn:
            delivery.hold_refused(conn, digest_ids, error)

    def release_refused(self, digest_ids: Sequence[str]) -> list[str]:
        """The wait is over: returns the ids still held, the ones this process may try again."""
        with self._tx("marking digests sending again", write=True) as conn:
            return delivery.release_refused(conn, digest_ids)

    def emails_in_flight(self) -> set[str]:
        """Address keys whose digests live workers are delivering now (PostgreSQL with `newsletter
        worker`s; else none)."""
        with self._tx("reading the job queue") as conn:
            return delivery.emails_in_flight(conn)

    def recover_interrupted(self, now: datetime, spare: Collection[str] = ()) -> list[str]:
        """Digests a crashed run left in 'sending' -> 'unknown' (returned; call under run_lock); those
        it left waiting to try a refused request again -> 'retry': they were not sent. Not those of the
        address keys in ``spare``."""
        _aware(now, "now")
        with self._tx("recovering interrupted deliveries", write=True) as conn:
            ids, queued = delivery.recover_interrupted(conn, now, spare)
        if queued:
            log.warning(
                "%s deliveries were interrupted while waiting to try again after a refusal: queued again",
                len(queued),
            )
        return ids  # logged by the caller, which may queue them again (Pipeline.recover)

    def prune(self, before: datetime) -> int:
        """Forget failed and cancelled digests last changed before ``before`` (see delivery.prunable),
        PRUNE_DIGESTS a transaction: 150,000 in one held SQLite's write lock 5-8 s, and another writer
        gives up after 10 s (busy timeout); 2,000 hold it about 0.1 s."""
        _aware(before, "before")
        with self._tx("reading old deliveries") as conn:
            ids = delivery.prunable(conn, before)
        return sum(self._prune(before, batch) for batch in chunks(ids, PRUNE_DIGESTS))

    def _prune(self, before: datetime, digest_ids: Sequence[str]) -> int:
        with self._tx("pruning old deliveries", write=True) as conn:
            return delivery.prune(conn, before, digest_ids)

    def prune_sent(self, before: datetime) -> int:
        """Forget sent digests sent before ``before``, each address's latest kept (see
        delivery.prune_sent), PRUNE_ADDRESSES addresses a transaction: a year of a large list is
        millions, and a long write transaction would hold a run out past SQLite's busy timeout."""
        _aware(before, "before")
        with self._tx("reading the latest sent digests") as conn:
            latest = delivery.latest_sent(conn)  # a digest made meanwhile only keeps one more
        total = 0
        for emails in chunks(sorted(latest), PRUNE_ADDRESSES):
            with self._tx("pruning old sent digests", write=True) as conn:
                total += delivery.prune_sent(conn, before, {e: latest[e] for e in emails})
        return total

    def empty_log(self) -> bool:
        """SQLite: write the write-ahead log into the file and empty it, so what was deleted (and zeroed)
        is not still readable in either while another process (`serve`, the daemon) keeps the log; False
        when a reader in the middle of a transaction kept it. True on another database."""
        if self._engine.dialect.name != "sqlite":
            return True
        raw = self._engine.raw_connection()  # outside the transaction every session begins
        try:
            row = raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()  # type: ignore[union-attr]
        except sqlite3.Error as exc:  # the driver's own: db_errors reads SQLAlchemy's
            raise StoreError(f"cannot empty the database's write-ahead log: {exc}") from None
        finally:
            raw.close()
        return not row[0]  # (busy, pages in the log, pages written back)

    def compact(self) -> None:
        """SQLite: rewrite the file without its free pages (VACUUM; deleting rows alone does not shrink
        it), then empty the write-ahead log into it. Nothing to do on another database."""
        if self._engine.dialect.name != "sqlite":
            return
        raw = self._engine.raw_connection()  # outside the transaction every session begins
        try:
            raw.driver_connection.execute("VACUUM")  # type: ignore[union-attr]
            # in WAL mode VACUUM writes the whole database to the log: without this the file stays its
            # size, and the log as large, while another process has it open
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        except sqlite3.Error as exc:  # the driver's own: db_errors reads SQLAlchemy's
            raise StoreError(f"cannot compact the database: {exc}") from None
        finally:
            raw.close()

    def requeue(
        self,
        now: datetime,
        statuses: Collection[str] = (FAILED, UNKNOWN),
        digest_ids: Collection[str] | None = None,
    ) -> list[str]:
        """failed/unknown -> retry (`newsletter retry`, or resending unknowns on request); returns ids."""
        _aware(now, "now")
        with self._tx("requeueing deliveries", write=True) as conn:
            return delivery.requeue(conn, now, statuses, digest_ids)

    # --- reading the log -----------------------------------------------------------------------

    def deliveries(
        self,
        statuses: Collection[str] | None = None,
        email: str | None = None,
        *,
        with_items: bool = True,
        limit: int | None = None,
    ) -> list[DeliveryRecord]:
        """Delivery records, oldest first, optionally filtered by status and subscriber."""
        criteria = delivery.delivery_criteria(statuses, email)
        with self._tx("reading the delivery log") as conn:
            return delivery.deliveries(conn, *criteria, with_items=with_items, limit=limit)

    def pending_deliveries(
        self, now: datetime | None = None, limit: int | None = None
    ) -> list[DeliveryRecord]:
        """Pending and retry digests of subscribed addresses, oldest first, with items.

        With ``now``, a 'retry' whose not_before is later than ``now`` is left for later.
        """
        criteria = delivery.queued_criteria(None if now is None else _aware(now, "now"))
        with self._tx("reading the delivery log") as conn:
            return delivery.deliveries(conn, *criteria, with_items=True, limit=limit)

    def planned_at(self, created_at: datetime, emails: Collection[str] | None = None) -> list[DeliveryRecord]:
        """The digests planned with the clock at ``created_at`` (one run's), with items; with ``emails``,
        only theirs."""
        criteria = [digests.c.created_at == _aware(created_at, "created_at")]
        with self._tx("reading the delivery log") as conn:
            if emails is None:
                return delivery.deliveries(conn, *criteria, with_items=True)
            keys = sorted({address_key(e) for e in emails})
            return [
                r
                for part in chunks(keys)
                for r in delivery.deliveries(conn, *criteria, digests.c.email.in_(part))
            ]

    def delivery_counts(self) -> dict[str, int]:
        """Number of digests per status (statuses with none are absent)."""
        with self._tx("reading the delivery log") as conn:
            return delivery.delivery_counts(conn)
