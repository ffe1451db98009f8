"""`status` while a run, a `retry` or the daemon holds the run lock: it said nothing of it (a user saw
digests 'due now' and started a second run, which was refused)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from newsletter.store import Store
from newsletter.store.lock import LOCK_NAME, run_lock

from .helpers import cli, make_env


def test_status_says_which_process_holds_the_state_folder_s_run_lock(env: dict[str, str]) -> None:
    home = Path(env["NEWSLETTER_HOME"])
    cli(env, "status")
    with run_lock(home):
        text = cli(env, "status").stdout
        data = json.loads(cli(env, "status", "--json").stdout)
    said = f"a run is in progress: pid {os.getpid()} holds {home / LOCK_NAME}"
    assert said in text, text
    assert data["run_in_progress"].startswith(said)
    free = cli(env, "status")
    assert (
        "in progress" not in free.stdout
        and json.loads(cli(env, "status", "--json").stdout)["run_in_progress"] is None
    )


def test_status_says_a_connection_holds_the_shared_database_s_run_lock(tmp_path: Path, pg_url: str) -> None:
    env = {**make_env(tmp_path), "NEWSLETTER_DATABASE_URL": pg_url}
    cli(env, "status")
    with Store(pg_url) as store, store.coordinator_lock().hold():
        text = cli(env, "status").stdout
    assert "a run is in progress: a connection from 127.0.0.1 (server process " in text, text
    assert "holds the shared database's run lock" in text
    assert "in progress" not in cli(env, "status").stdout
