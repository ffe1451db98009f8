"""Files in the state folder as several users meet them: who may read what, and errors naming the file."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import exc as sa_exc

from newsletter.app import open_store
from newsletter.deliver.held import HELD_FILE, Click, hold, record_held
from newsletter.sources.fetch import HfDailySource
from newsletter.store.engine import _hint
from newsletter.store.lock import OWNER_HINT, owner_hint, run_lock

from .conftest import DATA
from .helpers import add_dumps, cli, env_settings, seed_names


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_fetched_dump_follows_the_umask(tmp_path: Path) -> None:
    """It was its owner's alone: a run or `serve` as another user of the group read no fetched dump,
    and after one `run` as root, cron's runs stopped with a PermissionError."""
    listing = (DATA / "hf" / "daily_papers-2024-03-19.json").read_bytes()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=listing))
    with httpx.Client(transport=transport) as client:
        source = HfDailySource(
            tmp_path / "dumps", tmp_path / "state", base_url="https://hf.test", client=client, days_back=0
        )
        (path,) = source.fetch(datetime(2024, 3, 19, tzinfo=UTC))
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_a_run_lock_that_cannot_be_opened_is_one_line_naming_it(env: dict[str, str]) -> None:
    """A lock file another user made: `error: unexpected PermissionError ... please report it`."""
    lock = Path(env["NEWSLETTER_HOME"]) / "run.lock"
    lock.mkdir(parents=True)  # opened as a file, it fails as a file of someone else's would
    proc = cli(env, "run", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: cannot take the run lock {lock}: ")
    assert "unexpected" not in proc.stderr and "hint: the state folder's files must belong" in proc.stderr


def test_an_emptied_held_clicks_file_takes_no_lock(env: dict[str, str]) -> None:
    """Left empty once its clicks were recorded, it had every later run take the held clicks' lock,
    which a file another user made there (root's `unsubscribe`) failed from then on."""
    settings = env_settings(env)
    settings.home.mkdir(parents=True)
    (settings.home / HELD_FILE).write_bytes(b"")
    for lock in (".lock", ".recording"):
        (settings.home / f"{HELD_FILE}{lock}").mkdir()  # cannot be opened: as another user's file
    with open_store(settings) as store:
        assert record_held(settings.home, store) == 0


def test_a_preview_is_its_owner_s_alone(env: dict[str, str]) -> None:
    """It holds signed unsubscribe links, and was as the umask had it (0644): anyone on the machine
    could unsubscribe the reader."""
    add_dumps(env, seed_names()[0])
    cli(env, "preview", "ssm@example.org")
    (preview,) = (Path(env["NEWSLETTER_HOME"]) / "preview").iterdir()
    assert preview.stat().st_mode & 0o777 == 0o600
    shared = Path(env["NEWSLETTER_HOME"]) / "team.html"  # a file the user names keeps its mode
    shared.write_text("old")
    shared.chmod(0o664)
    cli(env, "preview", "ssm@example.org", "--out", str(shared))
    assert shared.stat().st_mode & 0o777 == 0o664 and shared.read_text().startswith("<!doctype")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_root_in_a_state_folder_another_user_owns_is_warned(env: dict[str, str]) -> None:
    home = Path(env["NEWSLETTER_HOME"])
    home.mkdir()
    os.chown(home, 65534, 65534)
    proc = cli(env, "status")
    assert "this runs as root: files it makes there can stop" in proc.stderr
    assert "sudo -u" in proc.stderr


def test_the_owner_hint_is_for_another_user_s_file_only() -> None:
    """A read-only mount or a full disk was blamed on file owners."""
    assert owner_hint(PermissionError(errno.EACCES, "Permission denied")) == OWNER_HINT
    assert owner_hint(OSError(errno.EROFS, "Read-only file system")) is None
    assert owner_hint(OSError(errno.ENOSPC, "No space left on device")) is None


def test_a_read_only_postgresql_is_not_told_about_sqlite_files() -> None:
    standby = sa_exc.InternalError(
        "INSERT", {}, Exception("cannot execute INSERT in a read-only transaction")
    )
    sqlite = sa_exc.OperationalError("INSERT", {}, Exception("attempt to write a readonly database"))
    assert "NEWSLETTER_DATABASE_URL" in (_hint(standby) or "") and "-wal" not in (_hint(standby) or "")
    assert "-wal and -shm" in (_hint(sqlite) or "")


def test_under_umask_000_nobody_else_writes_in_the_folders_a_run_makes(env: dict[str, str]) -> None:
    """The state folder (and its parents) and the outbox were 0777: anyone could swap their files, and
    the outbox's names (addresses) were anyone's to read; last-run.json was 0666."""
    home = Path(env["NEWSLETTER_HOME"]) / "a" / "home"
    add_dumps(env, seed_names()[0])
    mask = os.umask(0)
    try:
        cli({**env, "NEWSLETTER_HOME": str(home)}, "run")
    finally:
        os.umask(mask)
    modes = {path.name: path.stat().st_mode & 0o777 for path in (home.parent, home, home / "outbox")}
    assert modes == {"a": 0o775, "home": 0o775, "outbox": 0o700}
    assert (home / "last-run.json").stat().st_mode & 0o777 == 0o664


def test_a_folder_the_user_made_keeps_its_mode(env: dict[str, str]) -> None:
    outbox = Path(env["NEWSLETTER_HOME"]) / "outbox"
    outbox.mkdir(parents=True)
    outbox.chmod(0o755)
    add_dumps(env, seed_names()[0])
    cli(env, "run")
    assert outbox.stat().st_mode & 0o777 == 0o755 and any(outbox.iterdir())


def test_under_umask_000_nobody_else_writes_a_held_click(tmp_path: Path) -> None:
    """It was 0666 (0664 once a run had taken a click out of it): anyone on the machine could append an
    unsubscribe of any reader, which the next run records."""
    mask = os.umask(0)
    try:
        hold(tmp_path, Click("unsubscribe", "reader@example.org", datetime(2026, 3, 11, tzinfo=UTC)))
    finally:
        os.umask(mask)
    assert (tmp_path / HELD_FILE).stat().st_mode & 0o777 == 0o664


class _Recorder:
    def record_unsubscribe(self, email: str, at: datetime) -> None:
        pass


@pytest.mark.parametrize(("mask", "mode"), [(0o000, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_lock_files_follow_the_umask_but_are_never_writable_by_all(
    tmp_path: Path, mask: int, mode: int
) -> None:
    """filelock made run.lock and the held clicks' locks 0666 under umask 000 (anyone could write them)."""
    was = os.umask(mask)
    try:
        with run_lock(tmp_path):
            pass
        hold(tmp_path, Click("unsubscribe", "reader@example.org", datetime(2026, 3, 11, tzinfo=UTC)))
        assert record_held(tmp_path, _Recorder()) == 1  # type: ignore[arg-type]
    finally:
        os.umask(was)
    locks = ("run.lock", f"{HELD_FILE}.lock", f"{HELD_FILE}.recording")
    assert {name: (tmp_path / name).stat().st_mode & 0o777 for name in locks} == dict.fromkeys(locks, mode)
