"""A daemon whose PostgreSQL server answers but refuses it (no such database or role, a wrong password):
waiting never helps. It tried forever, one 'cannot reach the database' a minute for a server it had
reached; it stops at once with the server's word, as before the wait was added."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from newsletter.daemon.schedule import _REFUSED

from .pg import PostgresServer
from .test_daemon import wait_for
from .test_daemon_pg_down import TRIED_AGAIN, _daemon


def _no_database(server: PostgresServer) -> str:
    return server.url("no_such_db")


def _no_role(server: PostgresServer) -> str:
    return server.url().replace("//postgres@", "//nobody@")


@pytest.mark.parametrize(
    ("url", "said"),
    [(_no_database, 'database "no_such_db" does not exist'), (_no_role, 'role "nobody" does not exist')],
)
def test_a_daemon_the_server_refuses_stops_at_once(
    tmp_path: Path, postgres: PostgresServer, url: Callable[[PostgresServer], str], said: str
) -> None:
    daemon, log = _daemon(tmp_path, url(postgres))
    try:
        assert wait_for(lambda: daemon.poll() is not None, timeout=30), log.read_text()
        text = log.read_text()
        assert daemon.returncode == 1 and said in text and TRIED_AGAIN not in text, text
        assert "Traceback" not in text
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


@pytest.mark.parametrize(
    "said",
    [
        'failed: FATAL:  password authentication failed for user "newsletter"',
        'failed: FATAL:  no pg_hba.conf entry for host "10.0.0.5", user "newsletter", database "news"',
    ],
)
def test_a_server_that_says_no_is_no_wait(said: str) -> None:
    assert _REFUSED.search(said)


@pytest.mark.parametrize(
    "said",
    [
        "failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
        "failed: FATAL:  the database system is starting up",
        "failed: FATAL:  the database system is not yet accepting connections",
        "failed: FATAL:  the database system is shutting down",
        "failed: FATAL:  sorry, too many clients already",
        'failed: could not translate host name "db" to address: Name or service not known',
    ],
)
def test_a_server_starting_stopping_or_full_is_waited_for(said: str) -> None:
    assert _REFUSED.search(said) is None
