"""A newer version meeting a PostgreSQL database an older one made: brought up to date only while no
daemon of the version before (holding the database's run lock) and no worker (sending heartbeats) runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.errors import StoreError
from newsletter.store import MIGRATIONS, Store
from newsletter.store import upgrade as upgrade_module
from newsletter.store.engine import make_engine
from newsletter.store.lock import RUN_LOCK_KEY, AdvisoryLock
from newsletter.store.migrations import migrate
from newsletter.store.upgrade import upgrade_guard
from tests.helpers import cli, make_env
from tests.test_store_concurrent import _at_once

LAST = MIGRATIONS[-1][0]


def _made_by_the_version_before(url: str) -> None:
    engine = make_engine(sa.make_url(url))
    migrate(engine, MIGRATIONS[:-1])
    engine.dispose()


def _recorded(url: str) -> list[str]:
    engine = make_engine(sa.make_url(url))
    with engine.connect() as conn:
        names = list(conn.execute(sa.text("SELECT name FROM schema_migrations ORDER BY name")).scalars())
    engine.dispose()
    return names


@pytest.fixture
def old_daemon(pg_url: str) -> Iterator[AdvisoryLock]:
    """The run lock held on a connection of its own, as a running daemon of the version before holds it."""
    engine = make_engine(sa.make_url(pg_url))
    lock = AdvisoryLock(engine, RUN_LOCK_KEY, "run")
    lock.acquire()
    yield lock
    lock.release()
    engine.dispose()


def test_an_outdated_database_is_refused_while_a_daemon_holds_its_run_lock(
    pg_url: str, old_daemon: AdvisoryLock
) -> None:
    _made_by_the_version_before(pg_url)

    with pytest.raises(StoreError, match=r"brought up to date.*run lock of this database") as refused:
        Store(pg_url)

    assert "stop the daemons on every machine" in (refused.value.hint or "")
    assert "workers" in (refused.value.hint or "")
    assert LAST not in _recorded(pg_url)  # nothing applied
    assert old_daemon.held()  # the daemon's lock is untouched


def test_the_command_line_says_so_in_one_line_and_exits_1(
    tmp_path: Path, pg_url: str, old_daemon: AdvisoryLock
) -> None:
    _made_by_the_version_before(pg_url)
    env = {**make_env(tmp_path), "NEWSLETTER_DATABASE_URL": pg_url}

    result = cli(env, "status", check=False)

    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "a run or daemon holds it" in error[0], result.stderr
    assert "Traceback" not in result.stderr
    assert LAST not in _recorded(pg_url)


def test_an_outdated_database_is_brought_up_to_date_when_no_daemon_runs(pg_url: str) -> None:
    _made_by_the_version_before(pg_url)

    with Store(pg_url) as store:
        assert store.migrations_applied == [LAST]
        with store.coordinator_lock().hold():  # the upgrade's hold on the run lock ended
            pass


def test_an_up_to_date_database_opens_beside_a_daemon_without_asking_for_its_run_lock(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(pg_url).close()
    engine = make_engine(sa.make_url(pg_url))
    lock = AdvisoryLock(engine, RUN_LOCK_KEY, "run")
    lock.acquire()  # a daemon of this version runs
    asked: list[object] = []
    monkeypatch.setattr(upgrade_module, "_no_coordinator_beside", asked.append)
    try:
        started = time.monotonic()
        with Store(pg_url) as store:
            assert store.migrations_applied == []
        assert time.monotonic() - started < 2.0
    finally:
        lock.release()
        engine.dispose()
    assert asked == []


def test_a_newer_database_is_refused_as_newer_while_a_daemon_holds_its_run_lock(
    pg_url: str, old_daemon: AdvisoryLock
) -> None:
    with Store(pg_url) as store, store._engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO schema_migrations VALUES ('0999_from_the_future', '2030-01-01')"))

    with pytest.raises(StoreError, match="newer than this version knows"):
        Store(pg_url)


@pytest.mark.parametrize(("silent", "refused"), [(0, True), (60, False)])
def test_an_outdated_database_waits_for_the_workers_to_stop(pg_url: str, silent: int, refused: bool) -> None:
    """Workers hold no run lock; a live one (a heartbeat within 10 s) is one of the version before."""
    from newsletter.executors.distributed import install_queue

    _made_by_the_version_before(pg_url)
    install_queue(pg_url)
    engine = make_engine(sa.make_url(pg_url))
    with engine.begin() as conn:
        beat = sa.text(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - make_interval(secs => :s))"
        )
        conn.execute(beat, {"s": silent})
    engine.dispose()

    if refused:
        with pytest.raises(StoreError, match=r"1 `newsletter worker`\(s\) run on it") as caught:
            Store(pg_url)
        assert "stop the workers" in (caught.value.hint or "")
        assert "one killed (kill -9, a lost machine) counts until 10 s" in (caught.value.hint or "")
        assert LAST not in _recorded(pg_url)
    else:  # a worker killed a minute ago left its row
        with Store(pg_url) as store:
            assert store.migrations_applied == [LAST]


def test_two_new_commands_at_once_migrate_once_and_neither_is_refused(pg_url: str) -> None:
    """The second waits on the migration lock while the first holds the run lock and migrates, then finds
    the database up to date (it is not refused for the first one's hold on the run lock)."""

    def slow(conn: Connection) -> None:
        time.sleep(1.0)
        conn.execute(sa.text("CREATE TABLE slow_step (x INTEGER)"))

    steps = (*MIGRATIONS, ("0999_slow", slow))
    _made_by_the_version_before(pg_url)

    def open_at_once(_: int) -> list[str]:
        engine = make_engine(sa.make_url(pg_url))
        try:
            return migrate(engine, steps, guard=upgrade_guard(engine, None))
        finally:
            engine.dispose()

    applied = _at_once(2, open_at_once)

    assert sorted(applied) == [[], [LAST, "0999_slow"]]
