"""Several processes on one database at once (hosts sharing a PostgreSQL, or SQLite's many writers):
migrations applied once, digests planned once, the run lock held by one."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa

from newsletter.errors import LockedError
from newsletter.store import MIGRATIONS, Store
from tests.test_store_helpers import at, plan_for, seeded

T = TypeVar("T")
OPENERS = 6


def _at_once(count: int, work: Callable[[int], T]) -> list[T]:
    """``work(i)`` for i in range(count), each in its own thread, all released together."""
    barrier = threading.Barrier(count)

    def start(i: int) -> T:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


def test_stores_opened_at_once_apply_each_migration_once(store_url: str) -> None:
    def open_store(_: int) -> list[str]:
        with Store(store_url) as store:
            return store.migrations_applied

    applied = _at_once(OPENERS, open_store)

    names = [name for name, _ in MIGRATIONS]
    assert sorted(name for names_now in applied for name in names_now) == names  # each once, no error
    with Store(store_url) as store, store._engine.connect() as conn:
        assert (
            list(conn.execute(sa.text("SELECT name FROM schema_migrations ORDER BY name")).scalars()) == names
        )


def test_a_new_sqlite_file_another_connection_is_writing_to_opens_once_it_is_done(tmp_path: Path) -> None:
    """Switching a file to WAL needs all of it, and SQLite refuses at once (no busy_timeout wait) while
    another connection writes in the old journal mode, as a second run creating the same state.db does."""
    path = tmp_path / "state.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE scratch (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO scratch VALUES (1)")
    done = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    done.start()
    try:
        with Store(f"sqlite:///{path}") as store:
            assert [name for name, _ in MIGRATIONS] == store.migrations_applied
            with store._engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        done.join()
        other.close()


def test_planning_the_same_digests_at_once_plans_each_once(store_url: str) -> None:
    with Store(store_url) as store:
        seeded(store, 2)
        plans = [plan_for(store, f"d{i:03}", email=f"s{i}@example.org") for i in range(300)]
    stores = [Store(store_url) for _ in range(4)]
    try:
        planned = _at_once(len(stores), lambda i: stores[i].plan_digests(plans if i % 2 else plans[::-1]))
    finally:
        for store in stores:
            store.close()

    assert sum(planned) == len(plans)  # every digest planned by exactly one of them, nobody failed
    with Store(store_url) as store:
        records = store.pending_deliveries()
        assert len(records) == len(plans)
        assert all(len(r.items) == 3 for r in records)
        state = store.subscriber_state("s7@example.org")
        assert state is not None and state.watermark_seq == 2 and state.last_digest_at == at(24)


def test_the_run_lock_of_a_shared_database_is_held_by_one(pg_url: str, tmp_path: Path) -> None:
    with Store(pg_url) as first, Store(pg_url) as second:
        assert first.shared and second.shared
        refused = pytest.raises(LockedError, match="another run holds the run lock of this database")
        with first.lock(tmp_path / "host-a"), refused, second.lock(tmp_path / "host-b"):
            pass
        with second.lock(tmp_path / "host-b"):  # released with the block
            pass
    assert not (tmp_path / "host-a" / "run.lock").exists()  # the lock is in the database, not a file


def test_sqlite_keeps_the_file_lock(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        assert not store.shared
        with store.lock(tmp_path), pytest.raises(LockedError, match=r"run\.lock"), store.lock(tmp_path):
            pass


def test_a_lock_another_session_keeps_fails_a_write_after_the_lock_timeout(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction left open in psql on the subscribers table held a run's write for good, with no
    line logged (and a second SIGTERM then lost the record of a message the server had accepted)."""
    from newsletter.errors import StoreError
    from newsletter.store import engine

    monkeypatch.setattr(engine, "LOCK_TIMEOUT_MS", 300)
    with Store(pg_url) as store:
        store.record_unsubscribe("ada@example.org", at(1))  # the schema, and a pooled connection
        other = sa.create_engine(pg_url)
        try:
            with other.connect() as holder, holder.begin():
                holder.execute(sa.text("LOCK TABLE subscribers IN ACCESS EXCLUSIVE MODE"))
                with pytest.raises(StoreError, match="lock timeout") as refused:
                    store.record_unsubscribe("grace@example.org", at(2))
            assert refused.value.hint and "pg_stat_activity" in refused.value.hint
            store.record_unsubscribe("grace@example.org", at(3))  # the lock gone: it goes through
            assert store.is_unsubscribed("grace@example.org")
        finally:
            other.dispose()
