"""Command line: parse arguments, build objects, call the library. No orchestration here."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import traceback
import webbrowser
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer
from pydantic import EmailStr, TypeAdapter, ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand

from newsletter import __version__, progress
from newsletter.address import address_key
from newsletter.app import (
    database_missing,
    distributed,
    load_last_report,
    open_history,
    open_pipeline,
    open_reading_pipeline,
    open_store,
    save_report,
    stop_on_sigterm,
    utcnow,
)
from newsletter.check import check_all
from newsletter.config import Settings, load_settings, unknown_variables
from newsletter.errors import ConfigError, LockedError, NewsletterError, StoreError, UsageError
from newsletter.explain import explain as explain_paper
from newsletter.explain import find as find_paper
from newsletter.held import record_held
from newsletter.models import Subscriber
from newsletter.redact import mask_in_logs, redact
from newsletter.report import DigestOutcome, DumpOutcome, RunReport, plural
from newsletter.sources.registry import fetch_all, sources_from_settings
from newsletter.status import print_status, status_report
from newsletter.store import Store
from newsletter.store.engine import safe_url
from newsletter.subscribers import SubscriberList, load_subscribers

app = typer.Typer(
    help="Turn trending-papers listings into a personal email digest for each subscriber.\n\n"
    "Settings come from these flags, then NEWSLETTER_* environment variables, then ./newsletter.toml.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
err = Console(stderr=True)


class _Command(TyperCommand):
    """A command whose arguments show their metavar in --help, not a Python type (``<list[Path]>``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                param.display_type_rich = _no_type  # type: ignore[method-assign]


def _no_type(ctx: Any) -> str:
    return ""


class State:
    settings_overrides: dict[str, Any]
    debug: bool = False
    new_database: bool = False
    secrets: tuple[str, ...] = ()  # masked in every log line and error, once the settings are read

    def settings(self) -> Settings:
        settings = load_settings(**self.settings_overrides)
        self.secrets = tuple(settings.secret_values())
        mask_in_logs(self.secrets)
        return settings


state = State()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsletter {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    home: Annotated[  # paths as text, not Path: "" must reach the settings' check, not become "."
        str | None,
        typer.Option(metavar="DIR", help="State folder [env NEWSLETTER_HOME, default ./.newsletter]"),
    ] = None,
    subscribers: Annotated[
        str | None,
        typer.Option(
            metavar="FILE", help="Subscribers YAML [env NEWSLETTER_SUBSCRIBERS, default ./subscribers.yaml]"
        ),
    ] = None,
    dumps: Annotated[
        str | None,
        typer.Option(metavar="DIR", help="Dumps folder [env NEWSLETTER_DUMPS, default ./seeds]"),
    ] = None,
    templates: Annotated[
        str | None, typer.Option(metavar="DIR", help="Templates folder [env NEWSLETTER_TEMPLATES]")
    ] = None,
    transport: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="file | smtp | postmark | sendgrid | mailgun | resend [env NEWSLETTER_TRANSPORT]",
        ),
    ] = None,
    ranker: Annotated[
        str | None, typer.Option(metavar="NAME", help="auto | lexical | semantic [env NEWSLETTER_RANKER]")
    ] = None,
    new_database: Annotated[
        bool,
        typer.Option(
            "--new-database",
            help="Use an empty database although the state folder has run before (a new delivery history).",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    state.settings_overrides = {
        "home": home,
        "subscribers": subscribers,
        "dumps": dumps,
        "templates": templates,
        "transport": transport,
        "ranker": ranker,
    }
    state.debug = debug
    state.new_database = new_database
    if ctx.invoked_subcommand not in ("daemon", "serve"):  # long-lived: their logs say enough
        ctx.with_resource(progress.shown_on(err))  # a bar on a terminal, for the command's long steps
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    if err.is_terminal:
        logging.basicConfig(
            level=level, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)]
        )
    else:  # cron, systemd, a pipe: one line per record, never wrapped
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)


NOW_HINT = "e.g. --now 2026-03-11T08:00 (UTC unless it has an offset)"


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return utcnow()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--now: not an ISO-8601 date/time: {value!r}", hint=NOW_HINT) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


DETAILED_UP_TO = 1000  # subscribers listed one by one after a run (more: counts and problems only)

NowOption = Annotated[
    str | None,
    typer.Option("--now", metavar="TIME", help="Override the clock (ISO-8601), for backfills and tests."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON report on stdout.")]


@app.command(cls=_Command)
def ingest(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="Dump files (HF text dumps, HF daily papers JSON or saved HTML pages, arXiv RSS or Atom).",
        ),
    ],
    as_json: JsonOption = False,
    now: NowOption = None,
) -> None:
    """Ingest dump files into the store (the same content twice is a no-op)."""
    settings = state.settings()
    with (
        open_pipeline(settings, new_database=state.new_database, sending=False) as pipeline,
        _said_once(),
    ):
        outcomes = pipeline.ingest(files, _parse_now(now))
    if as_json:
        typer.echo(json.dumps({"dumps": [_dump_json(o) for o in outcomes]}, indent=2))
    else:
        for o in outcomes:
            typer.echo(f"{o.file}: {plural(o.papers, 'paper')}, {o.new} new ({_ingested(o)})")
    if any(o.error for o in outcomes):
        raise typer.Exit(1)


@contextmanager
def _said_once() -> Iterator[None]:
    """`ingest` names each refused file in its own line: the intake's error log line said it twice."""
    logger = logging.getLogger("newsletter.intake")
    repeated = lambda record: record.levelno < logging.ERROR  # noqa: E731
    logger.addFilter(repeated)
    try:
        yield
    finally:
        logger.removeFilter(repeated)


def _ingested(outcome: DumpOutcome) -> str:
    if outcome.error:
        return f"not ingested now: {outcome.error}" if outcome.later else f"rejected: {outcome.error}"
    return "already ingested" if outcome.already else "ingested"


def _dump_json(outcome: Any) -> dict[str, Any]:
    data = {"file": outcome.file, "papers": outcome.papers, "new": outcome.new}
    if outcome.error:
        data["error"] = outcome.error
    if outcome.later:
        data["later"] = True
    return data


@app.command()
def run(
    now: NowOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Build digests; send nothing, record no digest (new dumps are ingested)."
        ),
    ] = False,
    as_json: JsonOption = False,
    workers: Annotated[
        int | None, typer.Option(metavar="N", help="Processes sending new digests [NEWSLETTER_WORKERS, 1]")
    ] = None,
    connections: Annotated[
        str | None,
        typer.Option(
            metavar="N|auto",
            help="Connections to the mail server (requests in flight to an API) at once, or auto: "
            "from the measured round trip [NEWSLETTER_CONNECTIONS, auto]",
        ),
    ] = None,
    fetch: Annotated[
        bool | None,
        typer.Option(
            "--fetch/--no-fetch", help="Fetch from NEWSLETTER_SOURCES first [default: yes, unless --dry-run]."
        ),
    ] = None,
) -> None:
    """Fetch new dumps from the sources, ingest the dumps folder, then build and deliver every due digest.

    A source that cannot be fetched is reported (exit status 1) after the run has delivered what it has.
    A dump file that cannot be parsed is reported once (exit status 1), then skipped (see status); an
    entry that is no file to read (a link to nothing, a pipe) is reported by every run.
    """
    if fetch and dry_run:
        raise UsageError("--fetch: a dry run fetches nothing (it writes no dump file); run without --dry-run")
    state.settings_overrides["workers"] = workers
    state.settings_overrides["connections"] = connections
    settings = state.settings()
    subscribers = load_subscribers(settings.subscribers)
    stop = threading.Event()  # a signal ends a fetch's wait to retry too, not just the sending
    sources = sources_from_settings(settings, stop=stop) if fetch is not False and not dry_run else []
    clock = _parse_now(now)
    with (
        open_pipeline(settings, new_database=state.new_database, sending=not dry_run) as pipeline,
        stop_on_sigterm(stop),
    ):
        _, fetch_failures = fetch_all(sources, clock, stop)
        detailed = as_json or len(subscribers.subscribers) <= DETAILED_UP_TO
        report = pipeline.run(subscribers, clock, dry_run=dry_run, stop=stop, detailed=detailed)
    report.errors[:0] = [redact(failure, state.secrets) for failure in fetch_failures]  # a server's echo
    if not dry_run:
        try:
            save_report(settings, report)
        except NewsletterError as exc:  # a full disk: still say what the run did, then fail
            report.errors.append(str(exc))
    _print_report(report, as_json)


def _print_report(report: RunReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for d in report.digests:
            typer.echo(f"{d.subscriber}: {d.status} ({_detail(d)})")
        for problem in report.errors:
            err.print(f"error: {problem}", highlight=False, markup=False, soft_wrap=True)
        typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


def _detail(outcome: DigestOutcome) -> str:
    """The papers sent, or why not: a failed or unknown digest says whether it is tried again."""
    if not outcome.items or outcome.status == "skipped":
        return outcome.reason
    papers = plural(len(outcome.items), "paper")
    return f"{papers}; {outcome.reason}" if outcome.status in ("failed", "unknown") else papers


@app.command(cls=_Command)
def retry(
    emails: Annotated[
        list[str] | None,
        typer.Argument(metavar="EMAIL", help="Only these subscribers' deliveries (default: every one)."),
    ] = None,
    unknown: Annotated[
        bool, typer.Option("--unknown", help="Also resend messages whose fate is unknown (may duplicate).")
    ] = False,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retry failed deliveries now (and, with --unknown, those that may or may not have arrived), with
    every digest already queued (one waiting out a refusal's backoff too); with EMAILs, theirs only.

    A subscriber whose address a server refused for good gets new digests again once this sends the
    refused one.
    """
    settings = state.settings()
    subscribers = load_subscribers(settings.subscribers)
    clock = _parse_now(now)
    statuses = ("failed", "unknown") if unknown else ("failed",)
    only = {address_key(_listed(subscribers, email).email) for email in emails} if emails else None
    with open_pipeline(settings, new_database=state.new_database) as pipeline, stop_on_sigterm() as stop:
        pipeline.take_held_clicks()
        pipeline.recover(clock)
        ids = (
            None
            if only is None
            else [d.digest_id for e in only for d in pipeline.store.deliveries(statuses, e)]
        )
        requeued = pipeline.store.requeue(clock, statuses=statuses, digest_ids=ids)
        report = pipeline.deliver_pending(subscribers, clock, ignore_backoff=True, stop=stop, only=only)
        report.errors += [pipeline.breaker.reason] if pipeline.breaker.reason else []
    if not as_json:
        what = "failed or unknown" if unknown else "failed"
        noun = "delivery" if len(requeued) == 1 else "deliveries"
        queued = "their queued digests" if only else "what is queued"
        typer.echo(f"{len(requeued)} {what} {noun} requeued; sending {queued}")
    _print_report(report, as_json)


@app.command()
def status(
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show next due times, deliveries needing attention, dump files runs skip and the last run."""
    settings = state.settings()
    subscribers = load_subscribers(settings.subscribers)
    with open_history(settings, new_database=state.new_database) as store:
        data = status_report(store, subscribers, _parse_now(now), load_last_report(settings))
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    print_status(data)


@app.command()
def serve(
    host: Annotated[str, typer.Option(metavar="HOST", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="Port to listen on.")] = 8000,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            metavar="NAME",
            help="Another Host name (or address) the preview pages answer to, besides loopback's and "
            "HOST; repeatable. NEWSLETTER_BASE_URL's host gets only the emails' links.",
        ),
    ] = None,
) -> None:
    """Preview every subscriber's next digest in a browser; host the unsubscribe and feedback links."""
    from newsletter.serve import run_server

    settings = state.settings()
    run_server(settings, host=host, port=port, new_database=state.new_database, also=allow_host or ())


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
    from newsletter.schedule import run_daemon

    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))  # a daemon logs one line per job run
    if root.level > logging.DEBUG:  # "Running job" and "executed successfully" around each tick
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    run_daemon(state.settings(), tick_seconds=tick, new_database=state.new_database)


@app.command("migrate-db", cls=_Command)
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
def worker() -> None:
    """Deliver shards other hosts' runs hand out (NEWSLETTER_EXECUTOR=procrastinate) until SIGTERM.

    Needs the shared PostgreSQL database (NEWSLETTER_DATABASE_URL) and this host's transport settings;
    the subscribers come with each shard. Start one per core, on as many machines as you like.
    """
    run_worker = distributed().run_worker  # procrastinate: the optional [distributed] extra

    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))
    settings = state.settings().model_copy(update={"executor": "local"})  # a worker hands out nothing
    with open_pipeline(settings, lock=False, new_database=state.new_database) as pipeline:
        run_worker(settings.db_url, pipeline)


@app.command(cls=_Command)
def preview(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's email address.")],
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Write the HTML here [default: $NEWSLETTER_HOME/preview/EMAIL.html]"
        ),
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the HTML in a browser.")] = False,
    last: Annotated[
        bool, typer.Option("--last", help="Show the last digest sent to EMAIL instead of the next one.")
    ] = False,
    now: NowOption = None,
) -> None:
    """Render the digest EMAIL would get now (due or not), or with --last the last one sent.

    Sends nothing and records no digest.
    """
    settings = state.settings()
    subscriber = _subscriber(settings, email)
    if last:
        with open_pipeline(
            settings, lock=False, new_database=state.new_database, sending=False
        ) as pipeline:  # log only
            found = pipeline.last_sent(subscriber)
        if found is None:
            typer.echo(f"{email}: no digest sent yet")
            return
        record, message = found
        when = f"sent {record.created_at:%Y-%m-%d %H:%M} UTC: {plural(len(record.items), 'paper')}"
        preview = f"Subject: {message.subject}\n{when}"
        _show_preview(message.html, preview, out, settings, subscriber.email, open_browser)
        return
    clock = _parse_now(now)
    with open_reading_pipeline(settings, clock, new_database=state.new_database) as pipeline:
        selection, view = pipeline.preview(subscriber, clock)
        rendered = pipeline.renderer.render(view) if view else None
        sent_before = bool(pipeline.store.deliveries(("sent",), subscriber.email, with_items=False))
    if rendered is None:
        hint = "`--last` shows the last one sent" if sent_before else "none sent yet"
        typer.echo(f"{email}: no digest now ({selection.reason}); {hint}")
        return
    what = f"Subject: {rendered.subject}\n{plural(len(selection.chosen), 'paper')}"
    _show_preview(
        rendered.html, what, out, settings, subscriber.email, open_browser
    )  # one file per subscriber


def _show_preview(
    html: str, what: str, out: Path | None, settings: Settings, email: str, browse: bool
) -> None:
    target = out or settings.home / "preview" / f"{quote(email, safe='@')}.html"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html, encoding="utf-8")
    except OSError as exc:  # a folder, a full disk, no permission
        raise ConfigError(f"cannot write the preview to {target}: {exc.strerror or exc}") from None
    typer.echo(f"{what} -> {target}")
    if browse and not webbrowser.open(target.resolve().as_uri()):
        err.print(
            f"warning: no browser to open; open {target} yourself",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


PaperArgument = Annotated[
    str,
    typer.Argument(metavar="PAPER", help="The paper: its arXiv id (or arXiv or HF papers URL) or its title."),
]


@app.command()
def prune(
    older_than: Annotated[
        int,
        typer.Option("--older-than", metavar="DAYS", min=1, max=36500, help="Keep what is newer than this."),
    ] = 90,
    now: NowOption = None,
) -> None:
    """Forget old failed and cancelled digests (status lists failed ones until then) and delete old
    outbox files; on SQLite, then compact the database file, when no run or daemon holds the state.

    Sent digests stay (the delivery history), and so does the refused digest of an address held until
    `newsletter retry EMAIL`. Run it from cron, e.g. weekly: beside a daemon it prunes but does not
    compact (VACUUM holds the database for as long as it takes: a run's writes would wait).
    """
    settings = state.settings()
    before = _parse_now(now) - timedelta(days=older_than)
    with open_history(settings, new_database=state.new_database) as store:
        size = _file_size(settings)
        files = _prune_outbox(settings.outbox, before)  # first: the disk space a full disk needs
        digests = store.prune(before)
        skipped = _compact(store, settings)
    shrunk = f"; {settings.home / 'state.db'}: {size:,} -> {_file_size(settings):,} bytes" if size else ""
    typer.echo(
        f"pruned {plural(digests, 'failed or cancelled digest')}, {plural(files, 'outbox file')}{shrunk}"
    )
    if skipped:
        err.print(f"warning: not compacted: {skipped}", highlight=False, markup=False, soft_wrap=True)


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
    """The SQLite state file's size; 0 for another database."""
    try:
        return (settings.home / "state.db").stat().st_size if settings.database_url is None else 0
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


@app.command(cls=_Command)
def resubscribe(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's email address.")],
) -> None:
    """Undo EMAIL's unsubscribe, when they ask to come back: an unsubscribe is otherwise for good (one
    recorded for an address not in the subscribers file too).

    Their next digest holds only papers listed from now on, not what came while they were away.
    """
    settings = state.settings()
    subscribers = load_subscribers(settings.subscribers)
    listed = subscribers.find(email)
    address = listed.email if listed else _address(email)
    with open_history(settings, new_database=state.new_database) as store:
        done = store.resubscribe(address)
    if not listed and not done:  # a typo, most likely: as `retry EMAIL` says
        raise ConfigError(
            f"{subscribers.path}: no subscriber with email {email!r}, and it had not unsubscribed"
        )
    what = "subscribed again: digests from papers listed from now on" if done else "had not unsubscribed"
    typer.echo(f"{address}: {what}" + ("" if listed else f" (not in {settings.subscribers})"))


@app.command(cls=_Command)
def unsubscribe(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The address that asked to leave.")],
    now: NowOption = None,
) -> None:
    """Unsubscribe EMAIL, as the one-click link does: for a request that came by mail (the mailto in
    every digest's List-Unsubscribe and footer goes to the sender's address) or by hand.

    Their queued digests are cancelled; nothing more goes there, even while they are still in the
    subscribers file, until `newsletter resubscribe EMAIL`.
    """
    settings = state.settings()
    listed = load_subscribers(settings.subscribers).find(email)
    address = listed.email if listed else _address(email)
    with open_history(settings, new_database=state.new_database) as store:
        already = address_key(address) in store.unsubscribed_emails()
        store.record_unsubscribe(address, _parse_now(now))
    where = "" if listed else f" (not in {settings.subscribers}: recorded for if it is added)"
    typer.echo(f"{address}: " + ("had already unsubscribed" if already else "unsubscribed") + where)


@app.command(cls=_Command)
def feedback(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's email address.")],
    paper: PaperArgument,
    more: Annotated[bool, typer.Option("--more", help="More papers like this one.")] = False,
    less: Annotated[bool, typer.Option("--less", help="Fewer papers like this one.")] = False,
    now: NowOption = None,
) -> None:
    """Record "more like this" or "less like this" for EMAIL, as the links in a digest do."""
    if more == less:  # two flags, not a --more/--less pair: with both, the last one won in silence
        raise UsageError("give --more or --less" + (", not both" if more else ""))
    settings = state.settings()
    subscriber = _subscriber(settings, email)
    kind = "more" if more else "less"
    with open_history(settings, new_database=state.new_database) as store:
        found = find_paper(store, paper)
        store.record_feedback(subscriber.email, found.key, kind, _parse_now(now))
    typer.echo(f"{subscriber.email}: {kind} like {found.title!r}, from the next digest on")


@app.command(cls=_Command)
def explain(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's email address.")],
    paper: PaperArgument,
    now: NowOption = None,
) -> None:
    """Show a paper's score against EMAIL's bar, its best column, and why it was or was not sent."""
    settings = state.settings()
    subscriber = _subscriber(settings, email)
    clock = _parse_now(now)
    with open_reading_pipeline(settings, clock, new_database=state.new_database) as pipeline:
        explanation = explain_paper(pipeline, subscriber, paper, clock)
    typer.echo("\n".join(explanation.lines()))


def _address(text: str) -> str:
    try:
        return str(TypeAdapter(EmailStr).validate_python(text.strip()))
    except ValidationError:
        raise ConfigError(f"{text!r} is not an email address") from None


def _subscriber(settings: Settings, email: str) -> Subscriber:
    return _listed(load_subscribers(settings.subscribers), email)


def _listed(subscribers: SubscriberList, email: str) -> Subscriber:
    subscriber = subscribers.find(email)
    if subscriber is None:
        raise ConfigError(f"{subscribers.path}: no subscriber with email {email!r}")
    return subscriber


@app.command()
def check() -> None:
    """Validate settings, sources, subscribers, templates and folders; list every problem (exit 1).

    Nothing is connected to: a wrong password or an unreachable server shows at the first send.
    """
    for typo in unknown_variables():  # ignored by every command: a warning, not a problem
        err.print(f"warning: {typo}", highlight=False, markup=False, soft_wrap=True)
    try:
        settings = state.settings()
    except ConfigError as exc:  # nothing else can be judged without them: every setting refused
        _print_problems([exc, *exc.also])  # after the misspelt variables: one may be the cause
    result = check_all(settings, new_database=state.new_database)
    if result.problems:
        _print_problems(result.problems)
    subscribers = result.subscribers
    assert subscribers is not None  # read, or there would be a problem
    for warning in result.warnings:  # a run goes ahead all the same
        err.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    for email in _unsubscribed_in(settings, subscribers):
        back = "`newsletter resubscribe` if they asked to come back"
        err.print(
            f"warning: {email} unsubscribed but is still in {settings.subscribers}; it gets nothing ({back})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    listed = plural(len(subscribers.subscribers), "subscriber")
    typer.echo(f"ok: {listed}, templates in {settings.templates_dir}")


def _print_problems(problems: Sequence[NewsletterError]) -> NoReturn:
    for problem in problems:
        _print_error(problem)
    err.print(f"{plural(len(problems), 'problem')} found", highlight=False)
    raise typer.Exit(2 if any(isinstance(p, UsageError) for p in problems) else 1)  # a bad flag: 2


def _unsubscribed_in(settings: Settings, subscribers: SubscriberList) -> list[str]:
    if database_missing(settings):
        return []  # no state yet: nobody can have unsubscribed
    with open_store(settings) as store:
        gone = store.unsubscribed_emails()
    return [s.email for s in subscribers.subscribers if address_key(s.email) in gone]


def main() -> NoReturn:
    """Usage errors and Ctrl-C are left to typer (its message, exit 2 or 1); our own errors are one line."""
    try:
        _readable_arguments(sys.argv[1:])
        app()  # standalone: exits by itself
    except NewsletterError as exc:
        _fail(exc)
    sys.exit(0)


def _readable_arguments(arguments: list[str]) -> None:
    """UsageError for an argument that is not valid UTF-8 (Python keeps its bytes as lone surrogates,
    which the database and the terminal refuse: a traceback deep in a query)."""
    for position, argument in enumerate(arguments, start=1):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(argument).decode("utf-8", "backslashreplace")  # the byte as given: \xff
            raise UsageError(f"argument {position} ({shown}) is not valid UTF-8") from None


def _fail(exc: NewsletterError) -> NoReturn:
    if state.debug:
        trace = "".join(traceback.format_exception(exc))
        err.print(redact(trace, state.secrets), highlight=False, markup=False, soft_wrap=True)
    _print_error(exc)
    sys.exit(2 if isinstance(exc, UsageError) else 1)


def _print_error(exc: NewsletterError) -> None:
    message = redact(exc.message, state.secrets)
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if exc.hint:
        err.print(f"hint: {redact(exc.hint, state.secrets)}", highlight=False, markup=False, soft_wrap=True)
