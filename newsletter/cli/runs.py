"""The main job's commands: check the set-up, ingest dumps, run, retry, and show the status."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from newsletter.address import address_key
from newsletter.app import (
    Stop,
    database_missing,
    load_last_report,
    older_history,
    open_history,
    open_pipeline,
    open_store,
    save_report,
    stop_on_sigterm,
)
from newsletter.cli.base import (
    Command,
    JsonOption,
    NowOption,
    app,
    err,
    listed_subscriber,
    parse_now,
    print_error,
    print_problem,
    state,
    warn,
)
from newsletter.config import Settings, secrets_in_toml, unknown_variables
from newsletter.deliver.held import HELD_FILE, held_kinds
from newsletter.errors import ConfigError, NewsletterError, StdoutError, UsageError
from newsletter.ops.check import check_all
from newsletter.ops.status import print_status, status_report
from newsletter.redact import redact
from newsletter.report import QUEUED, DigestOutcome, DumpOutcome, RunReport, plural
from newsletter.sources.registry import fetch_all, sources_from_settings
from newsletter.store import Store
from newsletter.store.lock import LOCK_NAME
from newsletter.subscribers import SubscriberList, load_valid_subscribers


@app.command()
def check() -> None:
    """Validate settings, sources, subscribers, templates and folders; list every problem (exit 1).

    No mail server, API or source is contacted (a PostgreSQL state database is opened, to read its
    history): a wrong password or an unreachable server shows at the first send.
    """
    for typo in unknown_variables():  # ignored by every command: a warning, not a problem
        warn(typo)
    for secret in secrets_in_toml():  # read all the same: a warning
        warn(secret)
    try:
        settings = state.settings()
    except ConfigError as exc:  # nothing else can be judged without them: every setting refused
        _print_problems([exc, *exc.also])  # after the misspelt variables: one may be the cause
    result = check_all(settings, new_database=state.new_database)
    for warning in result.warnings:  # a run goes ahead all the same; before the problems, not hidden
        warn(str(warning))
    if result.problems:
        _print_problems(result.problems)
    subscribers = result.subscribers
    assert subscribers is not None  # read, or there would be a problem
    for email in _unsubscribed_in(settings, subscribers):
        back = "`newsletter resubscribe` if they asked to come back"
        warn(f"{email} unsubscribed but is still in {settings.subscribers}; it gets nothing ({back})")
    listed = plural(len(subscribers.subscribers), "subscriber")
    typer.echo(f"ok: {listed}, templates in {settings.templates_dir}")


def _print_problems(problems: Sequence[NewsletterError]) -> NoReturn:
    for problem in problems:
        print_error(problem)
    err.print(f"{plural(len(problems), 'problem')} found", highlight=False)
    raise typer.Exit(2 if any(isinstance(p, UsageError) for p in problems) else 1)  # a bad flag: 2


def _unsubscribed_in(settings: Settings, subscribers: SubscriberList) -> list[str]:
    if database_missing(settings):
        return []  # no state yet: nobody can have unsubscribed
    with open_store(settings) as store:
        gone = store.unsubscribed_emails()
    return [s.email for s in subscribers.subscribers if address_key(s.email) in gone]


LEFT_OUT = (
    "the others go on; those entries' subscribers get nothing, and their papers and queued digests wait "
    "for the fix (`newsletter check` lists every problem)"
)
DETAILED_UP_TO = 1000  # subscribers listed one by one after a run (more: counts and problems only)


@app.command(cls=Command)
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
        outcomes = pipeline.ingest(files, parse_now(now))
    if as_json:
        typer.echo(json.dumps({"dumps": [_dump_json(o) for o in outcomes]}, indent=2))
    else:
        for o in outcomes:
            typer.echo(f"{o.file}: {plural(o.papers, 'paper')}, {o.new} new ({_ingested(o)})")
    if any(o.error for o in outcomes):
        raise typer.Exit(1)


@contextmanager
def _reported_once() -> Iterator[None]:
    """`run` and `retry` print their report's errors: the courier's log line of one (the transport down,
    the cause) said it twice, with a third time in the digest's line."""
    logger = logging.getLogger("newsletter.deliver.courier")
    not_reported = lambda record: not getattr(record, "in_report", False)  # noqa: E731
    logger.addFilter(not_reported)
    try:
        yield
    finally:
        logger.removeFilter(not_reported)


@contextmanager
def _said_once() -> Iterator[None]:
    """`ingest` names each refused file in its own line: the intake's error log line said it twice."""
    logger = logging.getLogger("newsletter.intake")
    below_errors = lambda record: record.levelno < logging.ERROR  # noqa: E731
    logger.addFilter(below_errors)
    try:
        yield
    finally:
        logger.removeFilter(below_errors)


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
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print only the digests that need a look (failed, unknown) and the summary."
        ),
    ] = False,
) -> None:
    """Fetch new dumps from the sources, ingest the dumps folder, then build and deliver every due digest.

    A source that cannot be fetched is reported (exit status 1) after the run has delivered what it has.
    A dump file that cannot be parsed is reported once (exit status 1), then skipped (see status); an
    entry that is no file to read (a link to nothing, a pipe) is reported by every run. A bad entry in the
    subscribers file is reported (exit status 1) and left out: its digests wait for the fix. Exit status 3:
    only digests failed as mail routinely does (bounced, or refused for now: the next run tries again).
    """
    if fetch and dry_run:
        raise UsageError("--fetch: a dry run fetches nothing (it writes no dump file); run without --dry-run")
    state.settings_overrides["workers"] = workers
    state.settings_overrides["connections"] = connections
    settings = state.settings()
    subscribers, problems = load_valid_subscribers(settings.subscribers)  # the others go on
    left_out = _left_out(problems)
    stop = Stop()  # a signal ends a fetch's wait to retry too, not just the sending
    sources = sources_from_settings(settings, stop=stop) if fetch is not False and not dry_run else []
    clock = parse_now(now)
    # until the report is out: a signal then still lets it be saved and printed (a dry run has nothing
    # to finish: a signal ends it as it would any program)
    with stop_on_sigterm(stop) if not dry_run else nullcontext():
        with (
            open_pipeline(settings, new_database=state.new_database, sending=not dry_run) as pipeline,
            _reported_once(),
        ):
            _, fetch_failures = fetch_all(sources, clock, stop)
            failed = [redact(failure, state.secrets) for failure in fetch_failures]  # a server's echo
            detailed = as_json or (not quiet and len(subscribers.subscribers) <= DETAILED_UP_TO)
            try:
                report = pipeline.run(subscribers, clock, dry_run=dry_run, stop=stop, detailed=detailed)
            except NewsletterError:  # no report to carry them: said before the error that ends the run
                for failure in failed:
                    print_problem(failure)
                raise
        report.errors[:0] = left_out + failed
        if not dry_run:
            try:
                save_report(settings, report)
            except NewsletterError as exc:  # a full disk: still say what the run did, then fail
                report.errors.append(str(exc))
        _print_report(report, as_json, stop, clock, said=left_out, done=DRY_RUN_DONE if dry_run else RUN_DONE)


def _left_out(problems: Sequence[ConfigError]) -> list[str]:
    """Each bad entry a run goes on without: said at once on stderr, as when one stopped the run, and
    one of its report's errors (the run needs a look: exit 1; `status` shows them)."""
    for problem in problems[:-1]:
        print_error(problem)
    if problems:
        print_error(ConfigError(problems[-1].message, LEFT_OUT))
    return [problem.message for problem in problems]


RUN_DONE = "the run is done; `newsletter status` shows its report"
DRY_RUN_DONE = "the dry run is done; it saved no report: run it again where stdout has room"
# a retry saves no report (`status` shows the last run's): what stands is in the delivery log
RETRY_DONE = "the retry is done; `newsletter status` shows the deliveries still waiting"


def _print_report(
    report: RunReport,
    as_json: bool,
    stop: Stop,
    clock: datetime,
    said: Collection[str] = (),
    head: str | None = None,
    done: str = RUN_DONE,
) -> None:
    """The report (after ``head``, a line of text), then the exit status: 128 + the signal's number when
    one stopped the run (what it did not send waits for the next run: a cron wrapper sees it was cut
    short), else 1 if not ok. Errors in ``said`` were printed before the run. A reader that closed the
    pipe (`run | head`) makes it a quiet 141 only when the run has no status of its own; ``done`` is the
    hint when stdout cannot take it (a full disk)."""
    status = stop.exit_status() or (None if report.ok else report.exit_status())
    try:
        with _stdout_kept(done):
            _echo_report(report, as_json, clock, said, head)
    except StdoutError:  # a full disk: the JSON's errors on stderr (the text's are there already); a
        if as_json:  # reader gone (`run --json | head`) read them, or chose not to
            _say_unsaid(report, said)
        raise
    except BrokenPipeError:
        if status is None:
            raise  # main() ends quietly
        _to_devnull()  # Python's flush at exit must not fail
    if status is not None:
        raise typer.Exit(status)


def _echo_report(
    report: RunReport, as_json: bool, clock: datetime, said: Collection[str], head: str | None
) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    problems = _unsaid(report, said)
    try:
        if head:
            typer.echo(head)
        for d in report.digests:
            typer.echo(f"{d.subscriber}: {d.status} ({_detail(d, problems)})")
    except (BrokenPipeError, StdoutError):  # stdout's reader gone or its disk full, not stderr (cron's mail):
        # the errors still go there (the transport down's cause is said nowhere else)
        for problem in problems:
            print_problem(problem)
        raise
    for problem in problems:
        print_problem(problem)
    if summary := report.summary():  # a retry that found nothing queued has none: no blank line
        typer.echo(f"{clock.astimezone(UTC):%Y-%m-%d %H:%M} UTC: {summary}")  # a cron log's runs apart


def _unsaid(report: RunReport, said: Collection[str]) -> list[str]:
    return [problem for problem in report.errors if problem not in said]


def _say_unsaid(report: RunReport, said: Collection[str]) -> None:
    for problem in _unsaid(report, said):
        print_problem(problem)


@contextmanager
def _stdout_kept(done: str) -> Iterator[None]:
    """The report written out, or main()'s one error line about stdout (a full disk under cron's
    `>> run.log`), with the ``done`` hint: what the run did stands (in last-run.json, for a real run)."""
    try:
        yield
        if sys.stdout is not None:  # None: started with stdout closed
            sys.stdout.flush()
    except StdoutError as exc:
        exc.hint = done
        raise


def _to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _detail(outcome: DigestOutcome, problems: Collection[str] = ()) -> str:
    """The papers sent, or why not: a failed or unknown digest says whether it is tried again."""
    reason = _unrepeated(outcome.reason, problems)
    if not outcome.items or outcome.status == "skipped":
        return reason
    papers = plural(len(outcome.items), "paper")
    told = (outcome.status in ("failed", "unknown") and reason) or reason == QUEUED
    return f"{papers}; {reason}" if told else papers


def _unrepeated(reason: str, problems: Collection[str]) -> str:
    """A failed digest's ``error (kind): cause`` without the cause when an error line below gives it
    (the transport down: `error: cannot send now (cause): the run stops ...`, the headline a cron
    mail's reader looks at): said once."""
    kind, _, cause = reason.partition("): ")
    if cause and any(f"({cause})" in problem for problem in problems):
        return f"{kind}; the error below says why)"
    return reason


@app.command(cls=Command)
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
    subscribers, problems = load_valid_subscribers(settings.subscribers)  # a bad entry's digests wait
    left_out = _left_out(problems)
    clock = parse_now(now)
    statuses = ("failed", "unknown") if unknown else ("failed",)
    only = {address_key(listed_subscriber(subscribers, email).email) for email in emails} if emails else None
    stop = Stop()
    with stop_on_sigterm(stop):  # until the report is out, as `run`
        with open_pipeline(settings, new_database=state.new_database) as pipeline, _reported_once():
            requeued, report = pipeline.retry(subscribers, clock, statuses, only=only, stop=stop)
        report.errors[:0] = left_out
        what = "failed or unknown" if unknown else "failed"
        noun = "delivery" if len(requeued) == 1 else "deliveries"
        queued = "their queued digests" if only else "what is queued"
        head = f"{len(requeued)} {what} {noun} requeued; sending {queued}"
        _print_report(report, as_json, stop, clock, said=left_out, head=head, done=RETRY_DONE)


def _state_warnings(settings: Settings, store: Store) -> list[str]:
    """What `status` must not hide: a database older than the folder's last run (a restored backup,
    which a run refuses), and what this host holds for the database (sends it accepted, clicks)."""
    warnings = [str(older)] if (older := older_history(settings, store)) else []
    held = held_kinds(settings.home)
    if sent := held.pop("sent", 0):
        warnings.append(
            f"{plural(sent, 'accepted message')} held in {settings.home / HELD_FILE} (the database could "
            "not record them sent): the next run on this host records them (run it before `retry "
            "--unknown` anywhere: they are not lost, whatever the list below says)"
        )
    if clicks := held.total():
        warnings.append(
            f"{plural(clicks, 'click')} (unsubscribes, feedback) held in {settings.home / HELD_FILE}: "
            "the next run records them"
        )
    return warnings


def _in_progress(settings: Settings, store: Store) -> str | None:
    """A run, `retry` or the daemon working now (holding the run lock): who, as far as the lock says."""
    holder = store.run_lock_holder(settings.home)
    if holder is None:
        return None
    lock = "the shared database's run lock" if store.shared else str(settings.home / LOCK_NAME)
    return f"a run is in progress: {holder} holds {lock} (a run, a `retry`, or the daemon while it runs)"


@app.command()
def status(
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show next due times, deliveries needing attention, dump files runs skip and the last run."""
    settings = state.settings()
    subscribers, problems = load_valid_subscribers(settings.subscribers)
    with open_history(settings, new_database=state.new_database) as store:
        data = status_report(store, subscribers, parse_now(now), load_last_report(settings))
        data["warnings"] = [p.message for p in problems] + _state_warnings(settings, store)
        data["run_in_progress"] = _in_progress(settings, store)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    print_status(data)
