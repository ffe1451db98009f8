"""One SQLite state, one long writer (a prune, a VACUUM, another machine's script): what still works."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .helpers import add_dumps, cli, seed_names


@contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """SQLite's write lock, held by another connection for as long as the block runs."""
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_status_reads_a_state_another_connection_is_writing(env: dict[str, str]) -> None:
    """Opening the store asked for the write lock once per migration, each already applied, so
    `status` failed after the 10 s busy timeout while a read of the same file (WAL) answered at once."""
    add_dumps(env, seed_names()[0])
    cli(env, "run")
    with write_locked(Path(env["NEWSLETTER_HOME"]) / "state.db"):
        proc = cli(env, "status", "--json", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "ssm@example.org" in proc.stdout
