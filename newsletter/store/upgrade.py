"""Who may bring a database made by an earlier version up to date: no process of that version may still
be writing into it (a daemon or run of the version before goes on writing as it knows, and the rows it
adds after a step are never brought up to date: its papers had no abstract key, and a retitled listing
of one was sent again as new)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from newsletter.errors import LockedError, StoreError
from newsletter.store.delivery import WORKER_SILENT_AFTER
from newsletter.store.engine import transaction
from newsletter.store.lock import RUN_LOCK_KEY, AdvisoryLock, run_lock, uses_advisory_locks
from newsletter.store.migrations import Guard

_STILL_WRITING = "one of the version before, still running, would go on writing as it knows"
_AGAIN = "then run this command again"


def upgrade_guard(engine: Engine, home: Path | None) -> Guard | None:
    """What must be held while the migrations of an earlier version's database are applied: the
    database's run lock on PostgreSQL (every machine's daemon), else the state folder's (if known)."""
    if uses_advisory_locks(engine):
        return lambda: _no_coordinator_beside(engine)
    return None if home is None else lambda: _no_run_beside(home)


@contextmanager
def _no_run_beside(home: Path) -> Iterator[None]:
    """The state folder's run lock, taken at once or refused."""
    with ExitStack() as stack:
        try:
            stack.enter_context(run_lock(home))
        except LockedError as exc:
            raise _refused(exc, f"stop the daemon (and cron's run, serve), {_AGAIN}") from None
        yield


@contextmanager
def _no_coordinator_beside(engine: Engine) -> Iterator[None]:
    """The database's run lock (the one a coordinating daemon holds), taken at once or refused; then no
    worker may be running either (they do not hold that lock, but send heartbeats)."""
    lock = AdvisoryLock(engine, RUN_LOCK_KEY, "run")
    try:
        lock.acquire()
    except LockedError as exc:
        hint = f"stop the daemons on every machine (and the workers, cron's run), {_AGAIN}"
        raise _refused(exc, hint) from None
    try:
        _refuse_live_workers(engine)
        yield
    finally:
        lock.release()


def _refused(exc: LockedError, hint: str) -> StoreError:
    return StoreError(
        f"the state database must be brought up to date for this version, but a run or daemon holds it "
        f"({exc.message}): {_STILL_WRITING}",
        hint=hint,
    )


def _refuse_live_workers(engine: Engine) -> None:
    live = live_workers(engine)
    if live:
        raise StoreError(
            f"the state database must be brought up to date for this version, but {live} `newsletter "
            f"worker`(s) run on it (a heartbeat in the last {WORKER_SILENT_AFTER:g} s): {_STILL_WRITING}",
            hint=(
                f"stop the workers on every machine (and the daemons, cron's run), {_AGAIN}; one killed "
                f"(kill -9, a lost machine) counts until {WORKER_SILENT_AFTER:g} s after its last heartbeat"
            ),
        )


def live_workers(engine: Engine) -> int:
    """The job queue's workers with a heartbeat within WORKER_SILENT_AFTER; 0 without the queue's tables."""
    with transaction(engine, write=False) as conn:
        if conn.scalar(sa.text("SELECT to_regclass('procrastinate_workers')")) is None:
            return 0
        query = sa.text(
            "SELECT count(*) FROM procrastinate_workers"
            " WHERE last_heartbeat > now() - make_interval(secs => :silent)"
        )
        return int(conn.scalar(query, {"silent": WORKER_SILENT_AFTER}) or 0)
