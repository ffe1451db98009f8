"""Build the pipeline's parts from Settings. The CLI, the daemon and the preview server share this."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from newsletter.config import Settings
from newsletter.errors import ConfigError, LockedError, StoreError
from newsletter.executors.shards import Executor
from newsletter.files import make_folder, write_atomic
from newsletter.intake import waiting_files, waiting_note
from newsletter.pipeline import Pipeline
from newsletter.rank import make_ranker
from newsletter.rank.embed import ReadThroughCache, VectorCache
from newsletter.render import Renderer
from newsletter.report import RunReport
from newsletter.send import make_transport, real_sender
from newsletter.store import Store
from newsletter.store.engine import parse_url
from newsletter.store.vectors import StoreVectorCache

log = logging.getLogger(__name__)


@contextmanager
def open_store(settings: Settings) -> Iterator[Store]:
    make_state_folder(settings)
    store = Store(settings.db_url, home=settings.home)
    try:
        yield store
    finally:
        store.close()


def make_state_folder(settings: Settings) -> None:
    """The state folder, made if missing; ConfigError when it cannot be (a file in the way, no right)."""
    try:
        make_folder(settings.home)
        owner = settings.home.stat().st_uid
    except OSError as exc:
        raise ConfigError(
            f"cannot create the state folder {settings.home} (--home or NEWSLETTER_HOME): {exc.strerror}"
        ) from None
    if hasattr(os, "geteuid") and os.geteuid() == 0 and owner != 0:
        _warn_root(settings.home, owner)


def _warn_root(home: Path, owner: int) -> None:
    """What root makes in a folder the daemon's user owns (the database, a lock, a fetched dump) that
    user cannot write or read, and every run of theirs stops. Said, not refused: a container may run
    as root on a volume that belongs to a user of its host, and nobody else runs there."""
    import pwd  # Unix only, as root is

    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = str(owner)
    log.warning(
        "the state folder %s belongs to user %s and this runs as root: files it makes there can stop "
        "%s's runs; run it as that user (sudo -u %s newsletter ...)",
        home,
        name,
        name,
        name,
    )


@contextmanager
def open_pipeline(
    settings: Settings, *, lock: bool = True, new_database: bool = False, sending: bool = True
) -> Iterator[Pipeline]:
    """A ready pipeline; with ``lock`` it holds the run lock throughout (the database's when shared).

    An empty database in a state folder that has run before is refused unless ``new_database``; so is
    the placeholder sender with a transport that sends real mail, for a command ``sending`` mail.
    """
    with _checked_store(settings, new_database=new_database, sending=sending) as (store, renderer):
        if not lock:
            yield _pipeline(settings, store, renderer, StoreVectorCache(store))
            return
        with store.lock(settings.home) as still_held:
            pipeline = _pipeline(settings, store, renderer, StoreVectorCache(store))
            pipeline.lock_held = still_held
            yield pipeline


@contextmanager
def open_reading_pipeline(
    settings: Settings, now: datetime, *, new_database: bool = False
) -> Iterator[Pipeline]:
    """A pipeline for `preview` and `explain`: the state as a run would see it (new dump files ingested
    first, under the run lock; a file it refuses is the next run's to report), or, while a run or the
    daemon holds the lock, the papers already stored.

    The lock is let go once the files are in: ranking (embedding a new dump's papers takes a minute)
    must not refuse a cron run or a daemon's start. So the vectors it embeds are kept in memory, not
    stored: a run may be rewriting a paper and its vectors meanwhile, and the store keeps a key's first."""
    with _checked_store(settings, new_database=new_database, sending=False) as (store, renderer):
        pipeline = _pipeline(settings, store, renderer, ReadThroughCache(StoreVectorCache(store)))
        try:
            with store.lock(settings.home):
                pipeline.ingest_folder(now, record=False)
        except LockedError:
            if note := waiting_note(waiting_files(store, settings.dumps)):
                log.warning("%s", note)
        yield pipeline


@contextmanager
def _checked_store(
    settings: Settings, *, new_database: bool, sending: bool
) -> Iterator[tuple[Store, Renderer]]:
    """The store and the renderer, once the templates compile, the sender is real (when ``sending``)
    and the database has not been lost (unless ``new_database``)."""
    renderer = Renderer(settings.templates_dir)  # fail on a template error before touching state
    if sending:
        real_sender(settings)
    with open_store(settings) as store:
        if not new_database:
            refuse_lost_history(settings, store)
            refuse_older_history(settings, store)
        elif older_history(settings, store):
            _mark_latest_dump(settings, store)  # once is enough: a standby daemon saves no report
        yield store, renderer


def _pipeline(settings: Settings, store: Store, renderer: Renderer, cache: VectorCache) -> Pipeline:
    """The pipeline's parts; ``cache`` keeps the ranker's embeddings (across runs, in the store)."""
    ranker = make_ranker(settings.ranker, cache=cache)
    transports = lambda: make_transport(settings)  # noqa: E731
    executor = make_executor(settings, store)
    # a digest sent again replaces its files in the outbox; not another machine's outbox
    resend = settings.transport == "file" and not store.shared
    return Pipeline(settings, store, ranker, renderer, transports, executor=executor, resend_unknown=resend)


@contextmanager
def open_history(settings: Settings, *, new_database: bool = False) -> Iterator[Store]:
    """The store for a command that reads or records subscribers' history (status, unsubscribe,
    feedback...): refused, as for a run, when it is empty but the state folder shows earlier runs (a
    typo in NEWSLETTER_DATABASE_URL showed nobody unsubscribed, and recorded into a new database)."""
    if not new_database and database_missing(settings):  # refused before opening it would make it
        _refuse_if_run_before(settings, lambda: True)
    with open_store(settings) as store:
        if not new_database:
            refuse_lost_history(settings, store)
        yield store


def check_history(settings: Settings) -> None:
    """refuse_lost_history without making a database: a SQLite file that is not there is empty."""
    if database_missing(settings):
        _refuse_if_run_before(settings, lambda: True)
        return
    with open_store(settings) as store:
        refuse_lost_history(settings, store)
        refuse_older_history(settings, store)


def database_missing(settings: Settings) -> bool:
    """True for a SQLite file that is not there yet (opening it would make an empty one)."""
    url = parse_url(settings.db_url)
    database = url.database or ""
    return (
        url.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not Path(database).exists()
    )


def refuse_lost_history(settings: Settings, store: Store) -> None:
    """StoreError when the database is empty but the state folder shows earlier runs.

    A lost or emptied state.db would otherwise resend every digest, to unsubscribed addresses too.
    """
    _refuse_if_run_before(settings, store.is_empty)


def refuse_older_history(settings: Settings, store: Store) -> None:
    """StoreError when the database knows fewer dumps than the state folder's last run had ingested."""
    if older := older_history(settings, store):
        raise older


def older_history(settings: Settings, store: Store) -> StoreError | None:
    """What is wrong with a database older than the state folder's last run, if it is (`status` warns).

    A state.db restored from a backup (or copied without its -wal file while a daemon ran) has lost
    what was sent since, and the unsubscribes recorded since: a run would send it all again, silently.
    """
    last = load_last_report(settings) or {}
    mark = last.get("latest_dump")
    if not isinstance(mark, int) or isinstance(mark, bool):
        return None
    latest = store.latest_dump_seq() or 0
    if latest >= mark:
        return None
    return StoreError(
        f"the state database is older than {settings.home}: it knows dumps up to #{latest}, but the "
        f"last run ({last.get('finished_at') or 'unknown time'}) had ingested up to #{mark}; a database "
        "restored from a backup (or state.db copied without its -wal file) has lost the digests sent "
        "and the unsubscribes recorded since, and a run would send those papers again, "
        "to those addresses too",
        hint="restore the newest copy of the state (sqlite3 state.db '.backup FILE' copies a live "
        "one whole), or pass --new-database to go on with this one: record the unsubscribes "
        "made since again with `newsletter unsubscribe EMAIL`",
    )


def _refuse_if_run_before(settings: Settings, empty: Callable[[], bool]) -> None:
    traces = _earlier_runs(settings)
    if traces and empty():
        raise StoreError(
            f"the state database is empty, but {settings.home} shows earlier runs ({traces}): "
            "a run would send every digest again, unsubscribed addresses included",
            hint="restore the database (NEWSLETTER_DATABASE_URL, or state.db from a backup), "
            "or pass --new-database to start a new delivery history on purpose",
        )


def _earlier_runs(settings: Settings) -> str:
    """What in the state folder shows that runs stored dumps or deliveries before ('' when nothing).

    A last run that found no dump and sent nothing (an empty dumps folder) leaves nothing to lose.
    """
    traces = []
    last = load_last_report(settings) or {}
    counts = last.get("counts") or {}
    delivered = any(counts.get(status) for status in ("sent", "failed", "unknown"))
    stored = last.get("dumps_already") or any(
        not (d.get("error") or d.get("warning")) for d in last.get("dumps") or ()
    )
    if delivered or stored:
        traces.append(settings.last_run_file.name)
    if settings.outbox.is_dir() and next(settings.outbox.glob("*.eml"), None) is not None:
        traces.append("messages in outbox/")
    return " and ".join(traces)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # systemd's stop, and Ctrl-C


class Stop(threading.Event):
    """A stop a signal may set: ``signum`` says which (None: not a signal's)."""

    signum: int | None = None

    def exit_status(self) -> int | None:
        """128 + the signal's number, as a shell reports a process a signal ended; None: no signal."""
        return None if self.signum is None else 128 + self.signum


@contextmanager
def stop_on_sigterm(stop: threading.Event | None = None) -> Iterator[threading.Event]:
    """An event SIGTERM (or Ctrl-C) sets: the run finishes the message in flight, records it and stops
    (its builder or workers with it); what is not sent waits for the next run. A second signal acts
    as it would have without this (SIGTERM ends the process at once, Ctrl-C raises KeyboardInterrupt).
    ``stop``: the event to set (one made before, e.g. for the sources); default, a new one.
    """
    stop = stop if stop is not None else Stop()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        log.warning(
            "received %s: stopping after the message in flight, if any; the rest waits for the next run", name
        )
        if isinstance(stop, Stop):
            stop.signum = signum
        stop.set()
        for each in STOP_SIGNALS:
            signal.signal(each, previous[each])

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    try:
        yield stop
    finally:
        for signum in STOP_SIGNALS:
            signal.signal(signum, previous[signum])


def make_executor(settings: Settings, store: Store) -> Executor | None:
    """None: this process (or LocalProcesses, with NEWSLETTER_WORKERS > 1); else the task engine."""
    if settings.executor == "local":
        return None
    return distributed().ProcrastinateExecutor(store, settings.db_url)


def distributed() -> ModuleType:
    """newsletter.executors.distributed, which needs the optional [distributed] extra (procrastinate,
    psycopg)."""
    try:
        from newsletter.executors import distributed as module
    except ImportError as exc:
        what = (
            f"the {exc.name} package, which is not installed" if exc.name else f"what fails to import: {exc}"
        )
        raise ConfigError(
            f"distributed delivery (NEWSLETTER_EXECUTOR=procrastinate, `newsletter worker`) needs {what}",
            hint="pip install 'newsletter[distributed]'",  # the installed newsletter's extra: wheel or clone
        ) from exc
    return module


def utcnow() -> datetime:
    return datetime.now(UTC)


def save_report(settings: Settings, report: RunReport) -> None:
    """Keep the last run's report for `newsletter status` (written atomically).

    StoreError when the disk refuses (full, read-only): the deliveries are recorded all the same.
    """
    _write_report(
        settings, {"finished_at": utcnow().isoformat(), "summary": report.summary(), **report.to_json()}
    )


def add_to_last_report(settings: Settings, problems: Sequence[str], replacing: str) -> None:
    """Add ``problems`` to the last run's report, in place of those starting with ``replacing`` (a daemon's
    failed tick, each the same until it works again): what that run recorded stays, so `status` still
    shows it and the lost-database guard (refuse_lost_history) still reads it."""
    data = load_last_report(settings) or {"finished_at": None, "summary": "no run has finished"}
    kept = [e for e in data.get("errors") or [] if not str(e).startswith(replacing)]
    _write_report(settings, {**data, "errors": [*kept, *problems]})


def _mark_latest_dump(settings: Settings, store: Store) -> None:
    """last-run.json's latest dump set to the database's: the operator chose to go on with this one."""
    data = load_last_report(settings) or {}
    _write_report(settings, {**data, "latest_dump": store.latest_dump_seq() or 0})


def _write_report(settings: Settings, data: dict[str, Any]) -> None:
    try:
        make_folder(settings.home)
        write_atomic(settings.last_run_file, json.dumps(data, indent=2).encode(), readable=True)
    except OSError as exc:
        raise StoreError(
            f"cannot save the run report {settings.last_run_file}: {exc.strerror or exc} "
            "(the deliveries are recorded; `status` shows an older last run)"
        ) from None


def load_last_report(settings: Settings) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(settings.last_run_file.read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return None
