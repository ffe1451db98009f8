"""A daemon started while its PostgreSQL server is down (a boot where the database comes up later):
it exited at once with the database error, and systemd gave the unit up after five quick restarts."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import add_dumps, make_env, seed_names
from .pg import PostgresServer
from .test_daemon import logged_daemon, wait_for

TRIED_AGAIN = "cannot reach the database (try"


@pytest.fixture
def server_down(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """A server of this test's own, not started (the session's serves the other tests meanwhile)."""
    root = Path(tempfile.mkdtemp(prefix="newsletter-pg-down-"))
    root.chmod(0o755)
    server = PostgresServer(postgres.bin_dir, root)
    try:
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _daemon(tmp_path: Path, url: str) -> tuple[subprocess.Popen[bytes], Path]:
    env = {**make_env(tmp_path), "NEWSLETTER_DATABASE_URL": url}
    add_dumps(env, seed_names()[0])
    log = tmp_path / "daemon.log"
    return logged_daemon(env, log), log


def _stopped(daemon: subprocess.Popen[bytes]) -> float:
    """Seconds the daemon took to exit after SIGTERM (its status must be 0)."""
    began = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    return time.monotonic() - began


def test_a_daemon_waits_for_a_database_down_at_start_and_serves_once_it_is_up(
    tmp_path: Path, server_down: PostgresServer
) -> None:
    daemon, log = _daemon(tmp_path, server_down.url())
    try:
        assert wait_for(lambda: f"{TRIED_AGAIN} 2)" in log.read_text(), timeout=30), log.read_text()
        assert daemon.poll() is None, log.read_text()
        tries = [line for line in log.read_text().splitlines() if TRIED_AGAIN in line]
        assert "trying again in 1 s" in tries[0] and "trying again in 2 s" in tries[1], tries
        assert "Connection refused" in tries[0] and "Traceback" not in log.read_text()
        server_down.start()
        assert wait_for(lambda: "tick: " in log.read_text(), timeout=60), log.read_text()
        assert _stopped(daemon) < 15
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def test_sigterm_stops_a_daemon_waiting_for_its_database_at_once(
    tmp_path: Path, server_down: PostgresServer
) -> None:
    daemon, log = _daemon(tmp_path, server_down.url())
    try:
        assert wait_for(lambda: TRIED_AGAIN in log.read_text(), timeout=30), log.read_text()
        assert _stopped(daemon) < 5
        assert "daemon stopped before the database answered" in log.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def _restart(server: PostgresServer) -> None:
    """The stopped server started again, on its port (start() would run initdb again)."""
    options = f"-p {server.port} -k {server.root} -c listen_addresses=127.0.0.1 -c fsync=off"
    server._run(
        "pg_ctl", "-D", str(server.data), "-l", str(server.root / "log"), "-o", options, "-w", "start"
    )


def test_a_daemon_whose_database_goes_down_keeps_ticking_and_picks_up_when_it_is_back(
    tmp_path: Path, server_down: PostgresServer
) -> None:
    server_down.start()
    daemon, log = _daemon(tmp_path, server_down.url())
    try:
        assert wait_for(lambda: "tick: " in log.read_text(), timeout=60), log.read_text()
        server_down.stop()
        assert wait_for(lambda: log.read_text().count("tick failed") >= 2, timeout=30), log.read_text()
        assert daemon.poll() is None, log.read_text()
        before = log.read_text().count("tick: ")
        _restart(server_down)
        assert wait_for(lambda: log.read_text().count("tick: ") > before, timeout=60), log.read_text()
        assert _stopped(daemon) < 15
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
