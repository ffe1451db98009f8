"""Engine set-up (SQLite pragmas live here and only here) and the one place SQLAlchemy errors are wrapped."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Dialect, Engine
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.sql.compiler import SQLCompiler

from newsletter.errors import StoreError
from newsletter.files import make_folder

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
# PostgreSQL's counterpart: a statement waits this long for another session's lock (a transaction left
# open in psql, a long migration), then fails as SQLite's do. Without it a run blocked in an UPDATE for
# good with no line logged, and a second SIGTERM left a message the server had accepted 'sending'.
LOCK_TIMEOUT_MS = 60_000
_WRITE = "newsletter_write"


def parse_url(url: str, where: str = "NEWSLETTER_DATABASE_URL") -> URL:
    """``url`` parsed; StoreError naming ``where`` it came from, without the URL (it may hold a password)."""
    try:
        return sa.make_url(url)
    except (exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise StoreError(
            f"invalid database URL ({where})",
            hint="use sqlite:///path/to/state.db or postgresql+psycopg://user@host/db",
        ) from None


_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})  # libpq takes a password in the query too


def safe_url(url: URL) -> str:
    """The URL without its password (after the user name or in the query), for messages."""
    hidden = {name: "HIDDEN" for name in url.query if name.lower() in _SECRET_PARAMETERS}
    return url.update_query_dict(hidden).render_as_string(hide_password=True)


def make_engine(url: URL, where: str = "NEWSLETTER_DATABASE_URL") -> Engine:
    """An engine for ``url``; for a SQLite file, its folder is created first."""
    if url.get_backend_name() == "sqlite":
        _make_sqlite_folder(url)
    try:
        engine = sa.create_engine(url, **_pool_options(url))
    except (exc.NoSuchModuleError, ImportError) as error:
        raise StoreError(
            f"no database driver for {url.drivername!r}: {_one_line(error)}",
            hint="install the driver package, e.g. psycopg for PostgreSQL",
        ) from None
    except exc.ArgumentError as error:  # e.g. a SQLite URL with a host or password
        raise StoreError(
            f"invalid database URL {safe_url(url)} ({where}): {_one_line(error)}",
            hint="use sqlite:///path/to/state.db or postgresql+psycopg://user@host/db",
        ) from None
    if engine.dialect.name == "sqlite":
        _install_sqlite_hooks(engine)
        database = url.database or ""
        if database not in ("", ":memory:") and not database.startswith("file:"):
            _refuse_replaced_file(engine, Path(database))
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _set_lock_timeout)
    return engine


def _set_lock_timeout(dbapi_connection: Any, _record: Any) -> None:
    """LOCK_TIMEOUT_MS for every statement of the connection (a wait on purpose lifts it: xact_lock)."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    dbapi_connection.commit()  # psycopg opened a transaction for the SET: end it, keeping the setting


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _refuse_replaced_file(engine: Engine, path: Path) -> None:
    """A connection to a state.db that has since been replaced (a backup restored with mv, rsync or
    tar while serve or the daemon ran) is refused at its next use, with a StoreError naming the file.

    Without it a long-lived process went on writing into the unlinked old file: an unsubscribe was
    answered "You are unsubscribed" and lost with it, and the next run mailed the address again. Now
    `serve` holds the click in held-clicks.jsonl (the next run records it into the restored file) and a
    daemon's tick fails with this line until it is restarted. Opening the new file from this process
    instead is not safe: SQLite finds the -wal and -shm files by name, and the old connections would
    checkpoint and delete the new file's.
    """

    @event.listens_for(engine, "connect")
    def _remember(_dbapi_connection: Any, record: Any) -> None:
        record.info["file_id"] = _file_id(path)

    @event.listens_for(engine, "checkout")
    def _check(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        opened, now = record.info.get("file_id"), _file_id(path)
        if opened is not None and now != opened:
            raise StoreError(
                f"{path} was replaced or removed since this process opened it (a backup restored while "
                "it ran?): what it records now would go into the old file and be lost",
                hint="restart this process (serve, the daemon); stop them before restoring a backup",
            )


# A run holds a connection per courier for its whole send (up to 64: NEWSLETTER_CONNECTIONS), beside the
# ones its planning and reports take; SQLAlchemy's default pool stops at 15 and then waits 30 s.
MAX_CONNECTIONS = 64 + 16
POOL_SIZE = 5  # kept open between uses; the others are opened when needed and closed after


def _pool_options(url: URL) -> dict[str, Any]:
    try:
        dialect = url.get_dialect()
    except (exc.NoSuchModuleError, ImportError):
        return {}  # create_engine says which driver is missing
    if not issubclass(dialect, DefaultDialect) or not issubclass(dialect.get_pool_class(url), sa.QueuePool):
        return {}  # in-memory SQLite: one connection for all, and its pool takes no sizes
    # a server restarted since a pooled connection was opened: found out before the connection is used
    # (serve's first click after a restart was held for later; a run's first query failed)
    ping = url.get_backend_name() != "sqlite"
    return {"pool_size": POOL_SIZE, "max_overflow": MAX_CONNECTIONS - POOL_SIZE, "pool_pre_ping": ping}


def _make_sqlite_folder(url: URL) -> None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    try:
        make_folder(Path(database).parent)
    except OSError as error:
        raise StoreError(f"cannot create the state folder for {database}: {error.strerror}") from None


def _install_sqlite_hooks(engine: Engine) -> None:
    """WAL, foreign keys, busy_timeout, synchronous=FULL; real transactions for DDL too.

    FULL: a commit is on disk before it returns, as PostgreSQL's is. With NORMAL, WAL commits reach the
    disk only at a checkpoint, so a power cut after a send could forget its 'sending' and send it
    again. Here a commit took 0.16-0.37 ms against 0.03 ms (2,000 one-row commits).

    pysqlite on Python 3.11 only opens a transaction before DML, so DDL would autocommit. We turn that
    off and emit BEGIN ourselves (SQLAlchemy's documented recipe); write transactions use
    BEGIN IMMEDIATE so two writers queue on busy_timeout instead of failing to upgrade a read lock.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _use_wal(cursor: Any) -> None:
    """Put the database in WAL mode (kept in the file, so usually already set). Switching needs the
    whole file, and SQLite refuses at once, without waiting busy_timeout, while another connection is
    writing in the old mode (several runs creating one new state.db together): retry until then."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def write_options() -> dict[str, bool]:
    """Execution options for a connection whose transactions write (BEGIN IMMEDIATE on SQLite)."""
    return {_WRITE: True}


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: write})
        with conn.begin():
            yield conn


@contextmanager
def db_errors(action: str) -> Iterator[None]:
    """Turn a SQLAlchemy error into a one-line StoreError naming ``action`` (never the SQL)."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        log.debug("database error while %s", action, exc_info=True)
        raise StoreError(f"database error while {action}: {_describe(error)}", hint=_hint(error)) from error


def _describe(error: exc.SQLAlchemyError) -> str:
    cause = error.orig if isinstance(error, exc.DBAPIError) and error.orig is not None else error
    text = _one_line(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else ""


def _hint(error: exc.SQLAlchemyError) -> str | None:
    text = str(error).lower()
    if "locked" in text or "busy" in text:
        return "another process is writing to the state database; try again when it is done"
    if "lock timeout" in text:
        return (
            f"another session held a lock on the state database for over {LOCK_TIMEOUT_MS // 1000} s "
            "(a transaction left open? see pg_stat_activity); try again when it ends"
        )
    if "unable to open" in text:
        return "check that the state folder (NEWSLETTER_HOME) exists and is writable"
    if "readonly database" in text:  # SQLite's: often state.db-wal or -shm made by another user
        return (
            "state.db and its -wal and -shm files must be writable by the user newsletter runs as "
            "(`ls -l` the state folder: another user, such as root, may have made them)"
        )
    if "read-only" in text:  # PostgreSQL's: a standby, or a read-only transaction default
        return "the database takes no writes here: point NEWSLETTER_DATABASE_URL at the primary"
    if "disk is full" in text or "no space left" in text or "could not extend file" in text:
        return "free space on the state database's disk and run again (the write that failed was undone)"
    if "disk i/o error" in text:  # SQLite's, when state.db-shm cannot grow on a full disk too
        return (
            "SQLite could not write state.db or its -wal or -shm file beside it: "
            "is that disk full (`df -h`)? free space and run again"
        )
    return None


class Prepared:
    """A Core statement compiled once for ``dialect``, executed straight on the DBAPI cursor.

    For the hot paths (a run's per-message UPDATEs, its digest-item INSERTs): SQLAlchemy's
    per-execute work (cache lookup, parameter processing, result set-up) costs more than the
    statements themselves. Values must already be in database form (see ``bind_processor``);
    driver errors are wrapped as SQLAlchemy would, so ``db_errors`` reports them.
    """

    def __init__(self, statement: sa.ClauseElement, dialect: Dialect) -> None:
        self._compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self._sql = self._compiled.string
        self._order = self._compiled.positiontup if self._compiled.positional else None
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error

    def run(self, conn: Connection, values: dict[str, Any]) -> int:
        """Execute once with ``values``; the number of rows matched."""
        params = self._compiled.construct_params(values) or {}
        return self._execute(conn, [self._args(params)], many=False)

    def run_rows(self, conn: Connection, names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> int:
        """executemany with each row's values in ``names`` order: no dict per row on bulk inserts."""
        if not rows:
            return 0
        if self._order is None:  # a driver with named parameters
            return self._execute(conn, [dict(zip(names, row, strict=True)) for row in rows], many=True)
        if tuple(self._order) != names:
            picks = [names.index(name) for name in self._order]
            rows = [tuple(row[i] for i in picks) for row in rows]
        return self._execute(conn, rows, many=True)

    def _args(self, params: Mapping[str, Any]) -> Any:
        return tuple(params[name] for name in self._order) if self._order is not None else params

    def _execute(self, conn: Connection, args: list[Any], *, many: bool) -> int:
        cursor = conn.connection.cursor()
        try:
            if many:
                cursor.executemany(self._sql, args)
            else:
                cursor.execute(self._sql, args[0])
            return int(cursor.rowcount)
        except self._dbapi_error as error:  # the same wrapped error SQLAlchemy would raise
            raise exc.DBAPIError.instance(self._sql, args, error, self._dbapi_error) from error
        finally:
            cursor.close()


def bind_processor(column: sa.Column[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """Python value -> what the DBAPI driver gets for ``column`` (e.g. aware UTC -> naive text)."""
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else (lambda value: value)
