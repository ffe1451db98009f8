"""Command line: parse arguments, build objects, call the library. No orchestration here."""

from __future__ import annotations

import json
import logging
import sys
import webbrowser
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from newsletter import __version__
from newsletter.app import load_last_report, open_pipeline, open_store, save_report, utcnow
from newsletter.config import Settings, SubscriberList, load_settings, load_subscribers
from newsletter.errors import ConfigError, NewsletterError
from newsletter.render import Renderer
from newsletter.report import RunReport
from newsletter.send import envelope_for, make_transport
from newsletter.sources.registry import fetch_all, sources_from_settings
from newsletter.status import print_status, status_report
from newsletter.store import Store

app = typer.Typer(
    help="Turn trending-papers listings into a personal email digest for each subscriber.\n\n"
    "Settings come from these flags, then NEWSLETTER_* environment variables, then ./newsletter.toml.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
err = Console(stderr=True)


class State:
    settings_overrides: dict[str, Any]
    debug: bool = False

    def settings(self) -> Settings:
        return load_settings(**self.settings_overrides)


state = State()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsletter {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    home: Annotated[
        Path | None, typer.Option(help="State folder [env NEWSLETTER_HOME, default ./.newsletter]")
    ] = None,
    subscribers: Annotated[
        Path | None,
        typer.Option(help="Subscribers YAML [env NEWSLETTER_SUBSCRIBERS, default ./subscribers.yaml]"),
    ] = None,
    dumps: Annotated[
        Path | None, typer.Option(help="Dumps folder [env NEWSLETTER_DUMPS, default ./seeds]")
    ] = None,
    templates: Annotated[
        Path | None, typer.Option(help="Templates folder [env NEWSLETTER_TEMPLATES]")
    ] = None,
    transport: Annotated[
        str | None,
        typer.Option(help="file | smtp | postmark | sendgrid | mailgun | resend [env NEWSLETTER_TRANSPORT]"),
    ] = None,
    ranker: Annotated[
        str | None, typer.Option(help="auto | lexical | semantic [env NEWSLETTER_RANKER]")
    ] = None,
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
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    if err.is_terminal:
        logging.basicConfig(
            level=level, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)]
        )
    else:  # cron, systemd, a pipe: one line per record, never wrapped
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return utcnow()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--now: not an ISO-8601 date/time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


DETAILED_UP_TO = 1000  # subscribers listed one by one after a run (more: counts and problems only)

NowOption = Annotated[
    str | None, typer.Option("--now", help="Override the clock (ISO-8601), for backfills and tests.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON report on stdout.")]


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="Dump files (HF text dumps or HF daily papers JSON).")],
    as_json: JsonOption = False,
    now: NowOption = None,
) -> None:
    """Ingest dump files into the store (the same content twice is a no-op)."""
    settings = state.settings()
    with open_pipeline(settings) as pipeline:
        outcomes = pipeline.ingest(files, _parse_now(now))
    if as_json:
        typer.echo(json.dumps({"dumps": [_dump_json(o) for o in outcomes]}, indent=2))
    else:
        for o in outcomes:
            status = f"rejected: {o.error}" if o.error else "already ingested" if o.already else "ingested"
            typer.echo(f"{o.file}: {o.papers} papers, {o.new} new ({status})")
    if any(o.error for o in outcomes):
        raise typer.Exit(1)


def _dump_json(outcome: Any) -> dict[str, Any]:
    data = {"file": outcome.file, "papers": outcome.papers, "new": outcome.new}
    if outcome.error:
        data["error"] = outcome.error
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
        int | None, typer.Option(help="Processes sending new digests [NEWSLETTER_WORKERS, 1]")
    ] = None,
    connections: Annotated[
        str | None,
        typer.Option(help="Connections to the mail server at once, or auto [NEWSLETTER_CONNECTIONS, auto]"),
    ] = None,
    fetch: Annotated[
        bool,
        typer.Option("--fetch/--no-fetch", help="Fetch from NEWSLETTER_SOURCES first (not with --dry-run)."),
    ] = True,
) -> None:
    """Fetch new dumps from the sources, ingest the dumps folder, then build and deliver every due digest.

    A source that cannot be fetched is reported (exit status 1) after the run has delivered what it has.
    """
    state.settings_overrides["workers"] = workers
    state.settings_overrides["connections"] = connections
    settings = state.settings()
    subscribers = load_subscribers(settings.subscribers)
    sources = sources_from_settings(settings) if fetch and not dry_run else []
    clock = _parse_now(now)
    with open_pipeline(settings) as pipeline:
        _, fetch_failures = fetch_all(sources, clock)
        detailed = as_json or len(subscribers.subscribers) <= DETAILED_UP_TO
        report = pipeline.run(subscribers, clock, dry_run=dry_run, detailed=detailed)
    report.errors[:0] = fetch_failures
    if not dry_run:
        save_report(settings, report)
    _print_report(report, as_json)


def _print_report(report: RunReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for d in report.digests:
            detail = f"{len(d.items)} papers" if d.items and d.status != "skipped" else d.reason
            typer.echo(f"{d.subscriber}: {d.status} ({detail})")
        for problem in report.errors:
            err.print(f"error: {problem}", highlight=False, markup=False, soft_wrap=True)
        typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def retry(
    unknown: Annotated[
        bool, typer.Option("--unknown", help="Also resend messages whose fate is unknown (may duplicate).")
    ] = False,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retry failed deliveries now (and, with --unknown, those that may or may not have arrived)."""
    settings = state.settings()
    subscribers = load_subscribers(settings.subscribers)
    clock = _parse_now(now)
    statuses = ("failed", "unknown") if unknown else ("failed",)
    with open_pipeline(settings) as pipeline:
        pipeline.store.recover_interrupted(clock)
        requeued = pipeline.store.requeue(clock, statuses=statuses)
        report = pipeline.deliver_pending(subscribers, clock, ignore_backoff=True)
    if not as_json:
        typer.echo(f"{len(requeued)} deliveries requeued")
    _print_report(report, as_json)


@app.command()
def status(
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show each subscriber's next due time, deliveries that need attention and the last run's result."""
    settings = state.settings()
    subscribers = load_subscribers(settings.subscribers)
    with open_store(settings) as store:
        data = status_report(store, subscribers, _parse_now(now), load_last_report(settings))
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    print_status(data)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Preview every subscriber's next digest in a browser, and host the one-click unsubscribe endpoint."""
    from newsletter.serve import run_server

    run_server(state.settings(), host=host, port=port)


@app.command()
def daemon(
    tick: Annotated[
        int | None, typer.Option(help="Seconds between delivery ticks [NEWSLETTER_TICK_SECONDS, 300]")
    ] = None,
) -> None:
    """Run in the foreground: fetch sources on a schedule and send each digest when it is due."""
    from newsletter.schedule import run_daemon

    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))  # a daemon logs one line per job run
    run_daemon(state.settings(), tick_seconds=tick)


@app.command("migrate-db")
def migrate_db(
    target: Annotated[
        str,
        typer.Argument(help="SQLAlchemy URL of the new, empty database, e.g. postgresql+psycopg://host/db"),
    ],
) -> None:
    """Copy this state (NEWSLETTER_DATABASE_URL, default the state folder's SQLite) into another database.

    Everything moves: dumps, papers, subscribers, the delivery log, vectors. Give the password in
    PGPASSWORD (or ~/.pgpass), not in the URL. Then set NEWSLETTER_DATABASE_URL to the target.
    """
    settings = state.settings()
    with open_store(settings) as source, source.lock(settings.home), Store(target) as new:
        counts = source.copy_to(new)
    typer.echo(", ".join(f"{name}: {rows}" for name, rows in counts.items()))
    typer.echo(f"copied to {new}; now set NEWSLETTER_DATABASE_URL to it")


@app.command()
def worker() -> None:
    """Deliver shards other hosts' runs hand out (NEWSLETTER_EXECUTOR=procrastinate) until SIGTERM.

    Needs the shared PostgreSQL database (NEWSLETTER_DATABASE_URL) and this host's transport settings;
    the subscribers come with each shard. Start one per core, on as many machines as you like.
    """
    from newsletter.distributed import run_worker  # procrastinate: the optional [distributed] extra

    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))
    settings = state.settings().model_copy(update={"executor": "local"})  # a worker hands out nothing
    with open_pipeline(settings, lock=False) as pipeline:
        run_worker(settings.db_url, pipeline)


@app.command()
def preview(
    email: Annotated[str, typer.Argument(help="The subscriber's email address.")],
    out: Annotated[
        Path | None, typer.Option(help="Write the HTML here [default: $NEWSLETTER_HOME/preview/<email>.html]")
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the HTML in a browser.")] = False,
    now: NowOption = None,
) -> None:
    """Render the digest EMAIL would get now (due or not); sends nothing and records no digest."""
    settings = state.settings()
    subscriber = load_subscribers(settings.subscribers).find(email)
    if subscriber is None:
        raise ConfigError(f"{settings.subscribers}: no subscriber with email {email!r}")
    with open_pipeline(settings) as pipeline:
        pipeline.ingest_folder(_parse_now(now))
        selection, view = pipeline.preview(subscriber, _parse_now(now))
        rendered = pipeline.renderer.render(view) if view else None
    if rendered is None:
        typer.echo(f"{email}: no digest now ({selection.reason})")
        return
    target = out or settings.home / "preview" / f"{email}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(rendered.html, encoding="utf-8")
    typer.echo(f"Subject: {rendered.subject}\n{len(selection.chosen)} papers -> {target}")
    if open_browser:
        webbrowser.open(target.resolve().as_uri())


@app.command()
def check() -> None:
    """Validate settings, sources, subscribers and templates; exit non-zero with the first problem.

    Nothing is connected to: a wrong password or an unreachable server shows at the first send.
    """
    from newsletter.schedule import fetch_schedule  # APScheduler: imported only where needed

    settings = state.settings()
    subscribers = load_subscribers(settings.subscribers)
    Renderer(settings.templates_dir)
    make_transport(settings)  # built, not connected: a missing API key shows here
    envelope_for(settings, "subscriber@example.org")  # the sender address is usable
    sources_from_settings(settings)
    fetch_schedule(settings.fetch_cron)
    if settings.base_url and not settings.unsubscribe_secret:
        raise ConfigError(
            "NEWSLETTER_BASE_URL is set but NEWSLETTER_UNSUBSCRIBE_SECRET is not",
            hint="one-click unsubscribe links need a secret to sign them",
        )
    for email in _unsubscribed_in(settings, subscribers):
        err.print(f"warning: {email} unsubscribed but is still in {settings.subscribers}; it gets nothing")
    typer.echo(f"ok: {len(subscribers.subscribers)} subscribers, templates in {settings.templates_dir}")


def _unsubscribed_in(settings: Settings, subscribers: SubscriberList) -> list[str]:
    if settings.database_url is None and not (settings.home / "state.db").exists():
        return []  # no state yet: nobody can have unsubscribed
    with open_store(settings) as store:
        gone = store.unsubscribed_emails()
    return [s.email for s in subscribers.subscribers if s.email.strip().lower() in gone]


def main() -> NoReturn:
    """Usage errors and Ctrl-C are left to typer (its message, exit 2 or 1); our own errors are one line."""
    try:
        app()  # standalone: exits by itself
    except NewsletterError as exc:
        _fail(exc)
    sys.exit(0)


def _fail(exc: NewsletterError) -> NoReturn:
    if state.debug:
        err.print_exception()
    err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
    if exc.hint:
        err.print(f"hint: {exc.hint}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(1)
