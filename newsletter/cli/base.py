"""The command line's frame: the typer app, its global options, the clock flag, and how errors are shown."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, NoReturn
from urllib.parse import unquote

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.text import Text
from typer.core import TyperArgument, TyperCommand

from newsletter import __version__, progress
from newsletter.app import utcnow
from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError, NewsletterError, StdoutError, UsageError
from newsletter.models import Subscriber
from newsletter.redact import mask_in_logs, redact
from newsletter.report import plural
from newsletter.subscribers import SubscriberList

app = typer.Typer(
    help="Turn trending-papers listings into a personal email digest for each subscriber.\n\n"
    "Settings come from these flags, then NEWSLETTER_* environment variables, then ./newsletter.toml.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


err = Console(stderr=True)


class Command(TyperCommand):
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
            help="Use an empty database although the state folder has run before (a new delivery history), "
            "or one older than the state folder's last run (a restored backup).",
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
    level = logging.INFO if debug or verbose else logging.WARNING  # DEBUG is ours alone (below)
    if err.is_terminal:
        rich = RichHandler(console=err, show_path=False, log_time_format=utc_clock)
        logging.basicConfig(level=level, format="%(message)s", handlers=[rich])
    elif to_journal():  # systemd: the journal stamps the time itself and reads the priority from <N>
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter("%(levelname)s %(message)s"))
        logging.basicConfig(level=level, handlers=[handler])
    else:  # cron, a pipe: one line per record, never wrapped
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(UtcFormatter("%(asctime)s UTC %(levelname)s %(message)s"))
        logging.basicConfig(level=level, handlers=[handler])
    # their steps: httpx's line per request (per message on an email API), apscheduler's per job
    if not debug:
        for library in CHATTY_LIBRARIES:
            logging.getLogger(library).setLevel(logging.WARNING)
    # --debug: our own steps; a library's DEBUG is its internals (filelock's every lock, httpcore's
    # every socket step), which bury ours
    logging.getLogger("newsletter").setLevel(logging.DEBUG if debug else logging.NOTSET)


def to_journal() -> bool:
    """stderr is systemd's journal stream: JOURNAL_STREAM names its device and inode (a process it
    started may hand stderr on to a file or a pipe, and keep the variable)."""
    named = os.environ.get("JOURNAL_STREAM", "")
    try:
        found = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # no stderr, or one without a descriptor
        return False
    return bool(named) and named == f"{found.st_dev}:{found.st_ino}"


def utc_clock(local: datetime) -> Text:
    """Rich's time column (it hands the machine's local time, naive) in UTC, as the summary line."""
    return Text(local.astimezone(UTC).strftime("[%H:%M:%S UTC]"))


class UtcFormatter(logging.Formatter):
    """Times in UTC, said so, as the run's summary line has them (``2026-03-11 08:15 UTC: ...``): a
    cron log's lines in the machine's zone beside it read as an hour apart, or two across a DST change."""

    converter = staticmethod(time.gmtime)


class JournalFormatter(logging.Formatter):
    """Each line (a traceback's too) with its syslog priority as sd-daemon(3)'s ``<N>`` prefix, which
    journald strips and keeps (``journalctl -p err``); no time of our own beside the journal's."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITY.get(record.levelno, 3 if record.levelno > logging.WARNING else 6)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


CHATTY_LIBRARIES = ("httpx", "apscheduler")
NOW_HINT = "e.g. --now 2026-03-11T08:00 (UTC unless it has an offset)"
FIRST_YEAR, LAST_YEAR = 1970, 9000


def parse_now(value: str | None) -> datetime:
    if value is None:
        return utcnow()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--now: not an ISO-8601 date/time: {value!r}", hint=NOW_HINT) from None
    if not FIRST_YEAR <= parsed.year <= LAST_YEAR:  # windows and periods around it must stay in range
        raise UsageError(f"--now: the year must be {FIRST_YEAR}-{LAST_YEAR}: {value!r}", hint=NOW_HINT)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


NowOption = Annotated[
    str | None,
    typer.Option("--now", metavar="TIME", help="Override the clock (ISO-8601), for backfills and tests."),
]


JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON report on stdout.")]


def given_address(text: str) -> str:
    """EMAIL as people paste it: spaces around it, a From line's ``Name <addr>``, or a mailto link
    (``mailto:addr?subject=...``); anything else as it is, to be refused where it names nobody."""
    text = text.strip()
    if "<" in text and text.endswith(">"):
        text = text.rpartition("<")[2].removesuffix(">").strip()
    if text[:7].lower() == "mailto:":
        text = unquote(text[7:].partition("?")[0])
    return text


def listed_subscriber(subscribers: SubscriberList, email: str) -> Subscriber:
    subscriber = subscribers.find(given_address(email))
    if subscriber is None and (problem := subscribers.holds(given_address(email))):
        raise ConfigError(problem, hint="fix the entry: its digests wait for it (`newsletter check`)")
    if subscriber is None:
        raise ConfigError(f"{subscribers.path}: no subscriber with email {email!r}")
    return subscriber


def warn_entries(problems: Sequence[ConfigError]) -> None:
    """One warning for the entries a command that reads one subscriber (or none) goes on without."""
    if problems:
        more = f" and {plural(len(problems) - 1, 'more problem')}" if len(problems) > 1 else ""
        warn(f"{problems[0].message}{more}; `newsletter check` lists them")


def main() -> NoReturn:
    """Every error is one line, and under ``--json`` also JSON on stdout: ours (exit 1), a bad flag or
    argument that typer refuses (exit 2), and anything unforeseen (exit 1; ``--debug`` shows where).
    Ctrl-C exits 130, as typer has it; a reader that closed the pipe (``| head``) 141, as seq's."""
    _guarded_stdout()
    try:
        _readable_arguments(sys.argv[1:])
        code = app(standalone_mode=False)  # returns the exit code of a typer.Exit (None: done)
        if sys.stdout is not None:  # None: started with stdout closed
            sys.stdout.flush()  # what is left, while a failure is still one error line
    except SystemExit as exc:
        if isinstance(exc.__context__, BrokenPipeError):
            _reader_gone()
        raise
    except BrokenPipeError:  # ours, not through Rich or typer
        _reader_gone()
    except NewsletterError as exc:
        _fail(exc)
    except typer.Abort:  # end of input at a prompt
        sys.exit(1)
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `newsletter`: the help, as typer shows it
            exc.show()  # type: ignore[attr-defined]
            sys.exit(2)
        _fail(_as_error(exc))
    sys.exit(code if isinstance(code, int) else 0)


def _reader_gone() -> NoReturn:
    """The reader of stdout closed it (``status | head -1``): Rich and typer exit 1 for it, as for an
    error. Exit as seq and git do, silent, with the status a shell gives a program SIGPIPE ended (141,
    which ``set -o pipefail`` sees and tells apart from our 1), but without SIGPIPE itself: it would
    also end a daemon whose SMTP or HTTP peer hung up."""
    _stdout_to_devnull()
    sys.exit(128 + signal.SIGPIPE)


def _stdout_to_devnull() -> None:
    """stdout pointed at /dev/null: Python's flush at exit must not fail."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _as_error(exc: Exception) -> NewsletterError:
    """Typer's refusal of a flag or an argument (click's exceptions, which typer may bundle as its own:
    known by their ``format_message``; exit status 2), or a bug: one line all the same."""
    said = getattr(exc, "format_message", None)
    if callable(said):
        ctx = getattr(exc, "ctx", None)
        hint = f"see `{ctx.command_path} --help`" if ctx else None
        kind = UsageError if getattr(exc, "exit_code", 1) == 2 else NewsletterError
        return kind(said(), hint)
    error = NewsletterError(
        f"unexpected {type(exc).__name__}: {exc}", hint="`--debug` shows where; please report it"
    )
    error.__cause__ = exc  # the traceback --debug prints
    return error


def _guarded_stdout() -> None:
    """stdout as Python has it, but a failed write is one StdoutError (exit 1) for every command: a
    full disk under cron's `>> status.log` was `unexpected OSError ... please report it`. A locale
    that cannot spell every name (LANG=en_US.ISO-8859-1 and an address at 例子.中国) shows it as
    ``\\u4f8b`` escapes, as stderr does: the report and `status` stopped there with `unexpected
    UnicodeEncodeError`, after the run had sent its digests."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # stdout closed, or replaced
        return
    sys.stdout.flush()
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(_StdoutFile(fd, "w", closefd=False)),
        encoding=sys.stdout.encoding,
        errors="backslashreplace",
        line_buffering=bool(sys.stdout.line_buffering),
    )


class _StdoutFile(io.FileIO):
    """stdout's descriptor: a write it refuses (but a closed pipe: its reader is gone, main() ends
    quietly) points it at /dev/null, for Python's flush at exit, and is a StdoutError."""

    def write(self, data: Any, /) -> int:
        try:
            return super().write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            _stdout_to_devnull()
            raise StdoutError(
                f"cannot write the report to stdout: {exc.strerror or exc}",
                hint=_FULL if exc.errno in _NO_SPACE else "point stdout at a file or a pipe it can write to",
            ) from None


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a disk, a quota or `ulimit -f` full
_FULL = "free some space, or point stdout at another file"


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
    print_error(exc)
    if "--json" in sys.argv[1:]:  # a script reading the report gets the error as JSON, not nothing
        hint = redact(exc.hint, state.secrets) if exc.hint else None
        try:
            print(json.dumps({"error": redact(exc.message, state.secrets), "hint": hint}), flush=True)
        except (OSError, StdoutError):  # the reader gone (`run --json | head`), a full disk: said above
            _stdout_to_devnull()
    sys.exit(2 if isinstance(exc, UsageError) else 1)


def journal_priority(level: int) -> str:
    """The journal's ``<N>`` prefix for a line printed (not logged) at ``level``, under systemd only:
    `journalctl -p warning` must find a daemon's refusal to start and a run's errors too."""
    return f"<{JournalFormatter.PRIORITY[level]}>" if to_journal() else ""


def print_error(exc: NewsletterError) -> None:
    message = redact(exc.message, state.secrets)
    mark = journal_priority(logging.ERROR)
    err.print(f"{mark}[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if exc.hint:
        hint = f"{mark}hint: {redact(exc.hint, state.secrets)}"
        err.print(hint, highlight=False, markup=False, soft_wrap=True)


def print_problem(text: str) -> None:
    """One 'error:' line on stderr, as written (a run's report: a failed fetch, a halted run)."""
    err.print(
        f"{journal_priority(logging.ERROR)}error: {text}", highlight=False, markup=False, soft_wrap=True
    )


def warn(text: str) -> None:
    """One 'warning:' line on stderr, as written (no markup, never wrapped)."""
    err.print(
        f"{journal_priority(logging.WARNING)}warning: {text}", highlight=False, markup=False, soft_wrap=True
    )
