"""`status` while a run, a `retry` or the daemon holds the run lock: it said nothing of it (a user saw
digests 'due now' and started a second run, which was refused)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from newsletter.store import Store, lock
from newsletter.store.lock import LOCK_NAME, run_lock

from .helpers import cli, make_env
from .pg import PostgresServer


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


def test_the_holder_is_found_where_the_lock_table_names_the_filesystem_s_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """btrfs gives stat() a device number per subvolume (0:41), the kernel's lock table the filesystem's
    (00:28, as mountinfo's 0:40): `status` never said a run was in progress on a btrfs state folder."""
    home = tmp_path / "home"
    with run_lock(home):
        inode = (home / LOCK_NAME).stat().st_ino
    mount_point = os.path.realpath(tmp_path).replace(" ", "\\040")
    mounts, locks = tmp_path / "mountinfo", tmp_path / "locks"
    mounts.write_text(
        "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        f"46 22 0:40 / {mount_point} rw,relatime - btrfs /dev/loop0 rw,subvolid=5,subvol=/\n"
    )
    locks.write_text(f"1: FLOCK  ADVISORY  WRITE 4242 00:28:{inode} 0 EOF\n")
    monkeypatch.setattr(lock, "_MOUNTS", mounts)
    monkeypatch.setattr(lock, "_PROC_LOCKS", locks)
    assert lock.file_lock_holder(home) == "pid 4242"
    locks.write_text(f"1: FLOCK  ADVISORY  WRITE 4242 00:29:{inode} 0 EOF\n")  # another filesystem's file
    assert lock.file_lock_holder(home) is None


def test_a_run_on_another_database_of_the_server_is_not_this_one_s(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """Advisory locks are per database, but pg_locks lists the whole server's: a staging installation's
    daemon on the same server made production's `status` say a run was in progress."""
    ours, theirs = postgres.new_database(), postgres.new_database()
    env = {**make_env(tmp_path), "NEWSLETTER_DATABASE_URL": ours}
    cli(env, "status")
    with Store(theirs) as store, store.coordinator_lock().hold():
        assert json.loads(cli(env, "status", "--json").stdout)["run_in_progress"] is None


def test_a_run_lock_another_role_holds_is_said_to_be_that_role_s_not_a_local_connection(pg_url: str) -> None:
    """pg_stat_activity hides another role's client address: its session read as 'a local connection'."""
    import psycopg

    admin = pg_url.replace("postgresql+psycopg://", "postgresql://")
    database = admin.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        for role in ("holder", "viewer"):
            conn.execute(f"DROP ROLE IF EXISTS {role}")  # the server is shared by the session's tests
            conn.execute(f"CREATE ROLE {role} LOGIN")
            conn.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")
    key = (7 << 32) + 11
    holder_url = admin.replace("//postgres@", "//holder@") + "?application_name=newsletter-daemon"
    with psycopg.connect(holder_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        pid = holder.info.backend_pid
        viewer = sa.create_engine(pg_url.replace("//postgres@", "//viewer@"))
        try:
            said = lock.advisory_lock_holder(viewer, key)
        finally:
            viewer.dispose()
    expected = "a connection of another role (holder), its address hidden from this one"
    assert said == f"{expected} (application 'newsletter-daemon', server process {pid})"
