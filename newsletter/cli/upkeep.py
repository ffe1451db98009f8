"""Services and upkeep: serve, daemon, worker, migrate-db, prune."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from newsletter.app import distributed, open_history, open_pipeline, open_store
from newsletter.cli.base import Command, NowOption, app, parse_now, state, warn
from newsletter.config import MISREAD_AT, Settings, an_at_sqlalchemy_misreads
from newsletter.deliver.held import record_held
from newsletter.errors import LockedError, StoreError, UsageError
from newsletter.report import plural
from newsletter.selection.select import CATCH_UP
from newsletter.store import Store
from newsletter.store.engine import safe_url

SENT_DAYS = CATCH_UP.days + 1  # prune --sent keeps every digest of a window still open


@app.command()
def serve(
    host: Annotated[str, typer.Option(metavar="HOST", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="Port to listen on.")] = 8000,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            metavar="NAME",
            help="Another Host name (or address) the preview pages answer to, from any client, besides "
            "loopback's (from this machine only; name one here to open it) and HOST; repeatable. "
            "NEWSLETTER_BASE_URL's host gets only the emails' links.",
        ),
    ] = None,
    public_host: Annotated[
        list[str] | None,
        typer.Option(
            "--public-host",
            metavar="NAME",
            help="Another public Host name (an old NEWSLETTER_BASE_URL's) that gets only the emails' "
            "links, as the base URL's does, never the preview pages; repeatable.",
        ),
    ] = None,
) -> None:
    """Preview every subscriber's next digest in a browser; host the unsubscribe and feedback links.

    Open the URL it prints: on a terminal it carries the preview key (?key=...), which the browser keeps
    as a cookie; off a terminal (a log) the key is left out: read it from serve-key in the state folder
    (or NEWSLETTER_SERVE_KEY). The unsubscribe and feedback links need no key.
    """
    from newsletter.serve import run_server

    settings = state.settings()
    run_server(
        settings,
        host=host,
        port=port,
        new_database=state.new_database,
        also=allow_host or (),
        public=public_host or (),
    )


@app.command()
def daemon(
    tick: Annotated[
        int | None,
        typer.Option(
            metavar="SECONDS",
            min=1,
            max=7 * 86400,
            help="Seconds between delivery ticks [NEWSLETTER_TICK_SECONDS, 300]",
        ),
    ] = None,
) -> None:
    """Run in the foreground: fetch sources on a schedule and send each digest when it is due."""
    from newsletter.daemon.schedule import run_daemon

    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))  # a daemon logs one line per job run (not apscheduler's)
    run_daemon(state.settings(), tick_seconds=tick, new_database=state.new_database)


@app.command()
def worker() -> None:
    """Deliver shards other hosts' runs hand out (NEWSLETTER_EXECUTOR=procrastinate) until SIGTERM.

    Needs the shared PostgreSQL database (NEWSLETTER_DATABASE_URL) and this host's transport settings;
    the subscribers come with each shard. Start one per core, on as many machines as you like.
    """
    shared = distributed()  # procrastinate: the optional [distributed] extra

    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))
    settings = state.settings().model_copy(update={"executor": "local"})  # a worker hands out nothing
    shared.conninfo(settings.db_url, "newsletter worker")  # before a SQLite state folder is made for it
    run_worker = shared.run_worker
    with open_pipeline(settings, lock=False, new_database=state.new_database) as pipeline:
        run_worker(settings.db_url, pipeline)


@app.command("migrate-db", cls=Command)
def migrate_db(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET",
            help="SQLAlchemy URL of the new, empty database, e.g. postgresql+psycopg://host/db",
        ),
    ],
) -> None:
    """Copy this state (NEWSLETTER_DATABASE_URL, default the state folder's SQLite) into another database.

    Everything moves: dumps, papers, subscribers, the delivery log, vectors. Give the password in
    PGPASSWORD (or ~/.pgpass), not in the URL. Then set NEWSLETTER_DATABASE_URL to the target.
    """
    if an_at_sqlalchemy_misreads(target):
        raise UsageError(f"TARGET {MISREAD_AT}")
    settings = state.settings()
    _refuse_missing_state(settings)
    with open_store(settings) as source, source.lock(settings.home):
        record_held(settings.home, source)  # the clicks serve held move with the state
        if source.is_empty():
            raise StoreError(
                f"nothing to copy: {source} holds no dumps and no deliveries",
                hint="run migrate-db where the state is (--home, NEWSLETTER_HOME or NEWSLETTER_DATABASE_URL)",
            )
        with Store(target, "migrate-db's TARGET") as new:
            counts = source.copy_to(new)
    typer.echo(", ".join(f"{name}: {rows}" for name, rows in counts.items()))
    typer.echo(f"copied to {safe_url(new.url)}; now set NEWSLETTER_DATABASE_URL to it")


def _refuse_missing_state(settings: Settings) -> None:
    """The state folder's SQLite file that is not there is no state to move (opening it makes one)."""
    if settings.database_url is None and not (settings.home / "state.db").is_file():
        raise StoreError(
            f"nothing to copy: there is no state database in {settings.home}",
            hint="run migrate-db where the state is (--home, NEWSLETTER_HOME or NEWSLETTER_DATABASE_URL)",
        )


@app.command()
def prune(
    older_than: Annotated[
        int,
        typer.Option("--older-than", metavar="DAYS", min=1, max=36500, help="Keep what is newer than this."),
    ] = 90,
    sent: Annotated[
        bool,
        typer.Option(
            "--sent",
            help=f"Forget old sent digests too, but each address's latest (--older-than {SENT_DAYS}+).",
        ),
    ] = False,
    now: NowOption = None,
) -> None:
    """Forget old failed and cancelled digests (status lists failed ones until then) and delete old
    outbox files; on SQLite, then compact the database file, when no run or daemon holds the state.

    Sent digests stay (the delivery history, about 2 KB each) unless --sent is given, and so does the
    refused digest of an address held until `newsletter retry EMAIL`. Run it from cron, e.g. weekly:
    beside a daemon it prunes but does not compact (VACUUM holds the database for as long as it takes:
    a run's writes would wait).
    """
    if sent and older_than < SENT_DAYS:
        raise UsageError(
            f"--sent needs --older-than {SENT_DAYS} or more: the digests of the last {CATCH_UP.days} days "
            "are what keeps their papers from being sent again"
        )
    settings = state.settings()
    before = parse_now(now) - timedelta(days=older_than)
    with open_history(settings, new_database=state.new_database) as store:
        size = _file_size(settings)
        files = _prune_outbox(settings.outbox, before)  # first: the disk space a full disk needs
        digests = store.prune(before)
        forgotten = f", {plural(store.prune_sent(before), 'sent digest')}" if sent else ""
        skipped = _compact(store, settings)
    shrunk = f"; {settings.home / 'state.db'}: {size:,} -> {_file_size(settings):,} bytes" if size else ""
    typer.echo(
        f"pruned {plural(digests, 'failed or cancelled digest')}{forgotten}, {plural(files, 'outbox file')}"
        f"{shrunk}"
    )
    if skipped:
        warn(f"not compacted: {skipped}")


def _compact(store: Store, settings: Settings) -> str:
    """Compact the database under the run lock; why not, when it could not be."""
    if store.shared:  # PostgreSQL: its autovacuum does this, and a daemon's lock is no reason to warn
        return ""
    try:
        with store.lock(settings.home):
            store.compact()
    except LockedError:
        return "a run or the daemon holds the state folder (prune again while none does to shrink the file)"
    except StoreError as exc:
        return exc.message
    return ""


def _file_size(settings: Settings) -> int:
    """The SQLite state's size on disk, its write-ahead log too (a copied state's could outweigh what
    compacting gave back); 0 for another database."""
    if settings.database_url is not None:
        return 0
    return sum(_size(settings.home / name) for name in ("state.db", "state.db-wal"))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _prune_outbox(outbox: Path, before: datetime) -> int:
    """Delete the outbox's messages (and their HTML copies) last written before ``before``."""
    cutoff, removed = before.timestamp(), 0
    for path in sorted(outbox.glob("*")) if outbox.is_dir() else ():
        if path.suffix in (".eml", ".html") and path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
