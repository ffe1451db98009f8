"""Two daemons on two "hosts" (state folders of their own) sharing one PostgreSQL database:
exactly one plans and sends; kill it with -9 and the other takes over at its next tick."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path

from newsletter.config import Settings
from newsletter.store import Store

from .helpers import add_dumps, env_settings, make_env, outbox, seed_names
from .test_daemon import wait_for

TICK = 1


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "newsletter", "daemon", "--tick", str(TICK)],
            env={**os.environ, **env},
            stdout=out,
            stderr=out,
        )


def _recipients(env: dict[str, str]) -> list[str]:
    return sorted(parseaddr(str(m["To"]))[1] for m in outbox(env))


def _sent(url: str) -> list[str]:
    with Store(url) as store:
        return sorted(r.email for r in store.deliveries(["sent"], with_items=False))


def test_one_daemon_plans_and_the_other_takes_over_when_it_is_killed(tmp_path: Path, pg_url: str) -> None:
    hosts = [make_env(tmp_path / name) for name in ("a", "b") if (tmp_path / name).mkdir() is None]
    for env in hosts:
        env["NEWSLETTER_DATABASE_URL"] = pg_url
        add_dumps(env, seed_names()[0])
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    daemons = [_start(env, log) for env, log in zip(hosts, logs, strict=True)]
    try:
        assert wait_for(lambda: len(_sent(pg_url)) == 2), [log.read_text() for log in logs]
        time.sleep(3 * TICK)  # a few more ticks: the standby must still send nothing
        leader = next(i for i, env in enumerate(hosts) if outbox(env))
        standby = 1 - leader
        assert _recipients(hosts[leader]) == _sent(pg_url)
        assert outbox(hosts[standby]) == []
        assert "standing by" in logs[standby].read_text()
        assert "standing by" not in logs[leader].read_text()

        daemons[leader].send_signal(signal.SIGKILL)
        daemons[leader].wait(timeout=10)
        killed_at = time.monotonic()
        add_dumps(hosts[standby], seed_names()[1])  # the next dump reaches the host still running
        assert wait_for(lambda: "now holds the run lock" in logs[standby].read_text(), timeout=30)
        took_over = time.monotonic() - killed_at
        assert wait_for(lambda: len(_sent(pg_url)) == 3), logs[standby].read_text()
        assert _recipients(hosts[standby]) == ["diff@example.org"]  # each-dump cadence
        assert took_over < TICK + 5  # the next tick, plus start-up slack on a busy machine
    finally:
        for proc in daemons:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    assert daemons[standby].returncode == 0


def test_a_run_that_loses_the_database_s_run_lock_stops_before_its_next_chunk(
    tmp_path: Path, pg_url: str
) -> None:
    """Its lock went with its connection (a DBA, an idle-session timeout) and it never checked: a second
    run took the lock and both planned and sent at once."""
    from newsletter.app import open_pipeline
    from newsletter.subscribers import load_subscribers

    env, settings = _one_dump_on(pg_url, tmp_path)
    with open_pipeline(settings) as pipeline:
        _end_the_lock_s_connection(pg_url)
        report = pipeline.run(load_subscribers(settings.subscribers), datetime(2026, 3, 11, 8, tzinfo=UTC))
    assert "lost the database's run lock" in report.halted and not report.ok
    assert outbox(env) == []  # nothing planned or sent without the lock
    assert _sent(pg_url) == []


def test_a_daemon_that_loses_the_database_s_run_lock_stops_before_its_next_chunk(
    tmp_path: Path, pg_url: str
) -> None:
    """The daemon's pipeline never checked its lock: a second daemon took it, and both planned and sent."""
    from newsletter.app import open_pipeline
    from newsletter.daemon.schedule import Daemon
    from newsletter.subscribers import load_subscribers

    env, settings = _one_dump_on(pg_url, tmp_path)
    with open_pipeline(settings, lock=False) as pipeline:
        leader = Daemon(settings).lead(pipeline)
        assert leader.check()  # it coordinates
        _end_the_lock_s_connection(pg_url)
        report = pipeline.run(load_subscribers(settings.subscribers), datetime(2026, 3, 11, 8, tzinfo=UTC))
        leader.release()
    assert "lost the database's run lock" in report.halted and not report.ok
    assert outbox(env) == [] and _sent(pg_url) == []


def _end_the_lock_s_connection(pg_url: str) -> None:
    """What a DBA, an idle-session timeout or a proxy does to the run lock's connection."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    with engine.connect() as dba:
        dba.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid <> pg_backend_pid()"
            )
        )
    engine.dispose()


def _one_dump_on(pg_url: str, tmp_path: Path) -> tuple[dict[str, str], Settings]:
    """A state folder with the first seed dump, its state in the PostgreSQL database ``pg_url``."""
    env = make_env(tmp_path)
    add_dumps(env, seed_names()[0])
    settings = env_settings(env, ranker="lexical", database_url=pg_url)
    return env, settings
