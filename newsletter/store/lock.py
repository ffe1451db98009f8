"""One run at a time: an OS file lock on ``home/run.lock`` for SQLite, a PostgreSQL advisory lock for a
database that several machines share (the state folders there are not shared, the database is)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from filelock import FileLock, Timeout
from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

from newsletter.errors import LockedError, StoreError
from newsletter.files import lock_file, make_folder

LOCK_NAME = "run.lock"


WAIT_HINT = "wait for it to finish; the lock goes away when that process exits"
OWNER_HINT = "the state folder's files must belong to the user newsletter runs as (see `ls -l` there)"


def owner_hint(error: OSError) -> str | None:
    """OWNER_HINT for an error a file of another user's gives (not a read-only or full disk's)."""
    return OWNER_HINT if error.errno in (errno.EACCES, errno.EPERM, errno.EISDIR) else None


LOCKED_HINT = (  # the run lock
    "wait for it to finish (a run or preview ends by itself; a `newsletter daemon` holds the lock for as "
    "long as it runs: stop it first); the lock goes away when that process exits"
)


@contextmanager
def run_lock(home: Path, timeout: float = 0.0) -> Iterator[None]:
    """Hold the state folder's run lock for the block, or raise LockedError at once (after ``timeout`` s).

    The OS releases the lock when the holder dies, so a crashed run (kill -9) never leaves it stuck.
    """
    path = Path(home) / LOCK_NAME
    try:
        make_folder(path.parent)
    except OSError as error:
        raise StoreError(f"cannot create the state folder {path.parent}: {error.strerror}") from None
    try:
        lock = FileLock(lock_file(path), timeout=timeout, thread_local=False)
        lock.acquire()
    except Timeout:
        raise LockedError(
            f"another run holds {path}",
            hint=LOCKED_HINT,
        ) from None
    except OSError as error:  # made by another user (root, an admin): the daemon's start failed on it
        raise StoreError(
            f"cannot take the run lock {path}: {error.strerror or error}", hint=owner_hint(error)
        ) from None
    try:
        yield
    finally:
        lock.release()


# --- PostgreSQL: one coordinator across machines ---------------------------------------------------

RUN_LOCK_KEY = 0x6E6C5F72756E  # "nl_run": the run lock of a shared database
MIGRATION_LOCK_KEY = 0x6E6C5F6D6967  # "nl_mig": one process applies migrations at a time
INGEST_LOCK_KEY = 0x6E6C5F696E67  # "nl_ing": one dump is ingested at a time (transaction-level)
_POLL = 0.2  # seconds between tries while waiting for a lock


class AdvisoryLock:
    """A session-level PostgreSQL advisory lock held on a connection of its own.

    The server releases it when that connection ends, so a holder killed with -9 (or a host that
    vanishes, once TCP keepalive notices) never leaves it stuck. ``held()`` checks the connection is
    still alive: a lost connection means the lock is gone and another process may hold it now.
    """

    def __init__(self, engine: Engine, key: int, what: str) -> None:
        self._engine = engine
        self._key = key
        self._what = what
        self._conn: Connection | None = None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return True
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(self._key))).scalar())
        except BaseException:
            conn.close()
            raise
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def acquire(self, timeout: float = 0.0) -> None:
        """Take the lock, waiting up to ``timeout`` seconds; LockedError when another process holds it."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"another run holds the {self._what} lock of this database",
                    hint=LOCKED_HINT if self._what == "run" else WAIT_HINT,
                )
            time.sleep(_POLL)

    def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(sa.select(1))
        except exc.DBAPIError:
            self._drop()
            return False
        return True

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(sa.select(sa.func.pg_advisory_unlock(self._key)))
        except exc.DBAPIError:
            pass  # the connection is gone, and the lock with it
        finally:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(exc.DBAPIError):
                conn.close()

    @contextmanager
    def hold(self, timeout: float = 0.0) -> Iterator[None]:
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()


def uses_advisory_locks(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def xact_lock(conn: Connection, key: int) -> None:
    """On PostgreSQL, hold ``key`` until the caller's transaction ends (a no-op elsewhere), waiting for
    it as long as it takes: another host's turn (an ingest) is no stuck session."""
    if conn.dialect.name == "postgresql":
        kept = conn.execute(sa.select(sa.func.current_setting("lock_timeout"))).scalar()
        conn.execute(sa.text("SET LOCAL lock_timeout = 0"))
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
        # only the wait for the turn is unlimited: the ingest's own writes keep the session's limit
        conn.execute(sa.select(sa.func.set_config("lock_timeout", kept, True)))


# --- who holds the run lock, for `status` (never taking it: a run starting meanwhile would be refused) ---

_PROC_LOCKS = Path("/proc/locks")
_MOUNTS = Path("/proc/self/mountinfo")


def file_lock_holder(home: Path) -> str | None:
    """The process holding the state folder's run lock, from the kernel's table of locks (Linux): 'pid N'.
    None when it is free, there is no lock file, or the table cannot be read (another system)."""
    path = Path(home) / LOCK_NAME
    try:
        stat = path.stat()
        table = _PROC_LOCKS.read_text()
    except OSError:
        return None
    wanted = {f"{device}:{stat.st_ino}" for device in _devices(path, stat.st_dev)}
    for line in table.splitlines():  # "35: FLOCK  ADVISORY  WRITE 11949 fe:00:2146383 0 EOF"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] in wanted:
            return f"pid {fields[4]}"
    return None


def _devices(path: Path, st_dev: int) -> set[str]:
    """The file's device as the table of locks may write it: stat's, and its filesystem's (btrfs gives
    stat a number of each subvolume's own; the table has the filesystem's, as /proc/self/mountinfo)."""
    devices = {_major_minor(os.major(st_dev), os.minor(st_dev))}
    mounted = _mount_device(os.path.realpath(path))
    return devices | {mounted} if mounted else devices


def _mount_device(target: str) -> str | None:
    """The device of the filesystem ``target`` is on: the last mount on the longest mount point over it."""
    try:
        lines = _MOUNTS.read_text().splitlines()
    except OSError:
        return None
    longest, device = -1, None
    for line in lines:  # "46 27 0:40 / /srv/news rw,relatime - btrfs /dev/vda2 rw"
        fields = line.split()
        point = _unescape(fields[4]) if len(fields) > 4 else None
        if point is not None and _is_under(target, point) and len(point) >= longest:
            longest, device = len(point), fields[2]
    major, _, minor = (device or "").partition(":")
    return _major_minor(int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


def _is_under(target: str, point: str) -> bool:
    return point == "/" or target == point or target.startswith(f"{point}/")


def _unescape(field: str) -> str:
    """A mount point as mountinfo escapes it (a space is \\040)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _major_minor(major: int, minor: int) -> str:
    return f"{major:02x}:{minor:02x}"  # as the kernel prints it: "fe:00", "103:05" for 259:5


def advisory_lock_holder(engine: Engine, key: int) -> str | None:
    """The connection holding the advisory lock ``key`` (pg_locks): its client's address and the server
    process serving it; None when no session holds it. Advisory locks are per database: pg_locks lists
    the whole server's (another installation's daemon on another database is not this one's run)."""
    query = sa.text(
        "SELECT a.pid, host(a.client_addr) AS client, a.client_port AS port, a.usename AS role,"
        " a.application_name AS app, a.usename = current_user AS own"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid::bigint = :high AND l.objid::bigint = :low"
    )
    with engine.connect() as conn:
        row = conn.execute(query, {"high": key >> 32, "low": key & 0xFFFFFFFF}).first()
    if row is None:
        return None
    app = f"application {row.app!r}, " if row.app else ""
    return f"{_holder_where(row)} ({app}server process {row.pid})"


def _holder_where(row: sa.Row[Any]) -> str:
    """Where the holder connects from: its address, a local socket (port -1), or, its address hidden
    from this role (pg_stat_activity shows another role's only to pg_read_all_stats), its role."""
    if row.client:
        return f"a connection from {row.client}"
    if row.port == -1 or row.own:
        return "a local connection"
    role = f" ({row.role})" if row.role else ""
    return f"a connection of another role{role}, its address hidden from this one"
