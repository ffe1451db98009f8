"""`newsletter check`: every problem a run would meet, found without connecting to anything.

Each check runs on its own, so one problem does not hide the next; settings that cannot be read at all
stop the check (nothing else can be judged without them).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from newsletter.app import check_history, distributed
from newsletter.config import PACKAGE_TEMPLATES, Settings, setting_origin
from newsletter.daemon.cron import fetch_schedule
from newsletter.errors import ConfigError, NewsletterError
from newsletter.render import HTML_TEMPLATE, TEXT_TEMPLATE, Renderer
from newsletter.render.renderer import display_path
from newsletter.send import envelope_for, make_transport, real_sender
from newsletter.sources.registry import sources_from_settings
from newsletter.subscribers import SubscriberList, read_subscribers


@dataclass
class CheckResult:
    subscribers: SubscriberList | None = None
    problems: list[NewsletterError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # sends, but not as it should


def check_all(settings: Settings, *, new_database: bool = False) -> CheckResult:
    """Every problem found in the subscribers, templates, transport, sender, sources and folders (and,
    unless ``new_database``, a state database lost from a folder that has run)."""
    result = CheckResult()
    try:
        result.subscribers, found = read_subscribers(settings.subscribers)
        result.problems += found
    except ConfigError as exc:
        result.problems.append(exc)
    steps: list[Callable[[Settings], object]] = [
        lambda s: Renderer(s.templates_dir),
        make_transport,  # built, not connected: a missing API key shows here
        lambda s: envelope_for(s, "subscriber@example.org"),  # the sender address is usable
        real_sender,
        sources_from_settings,
        _fetch_schedule,
        _dumps_folder,
        _state_folder,
        _unsubscribe_links,
        _executor,
    ]
    if not new_database:
        steps.append(check_history)  # after the folders: a state folder that cannot be made is the one
    for step in steps:
        try:
            step(settings)
        except NewsletterError as exc:
            _add_new(result.problems, [exc, *exc.also])
    result.warnings += [*_mailto_only(settings), *_smtp_port(settings), *_templates(settings)]
    return result


def _add_new(problems: list[NewsletterError], found: list[NewsletterError]) -> None:
    """Add what is not listed yet: a bad sender is found by the envelope, the placeholder check and
    Mailgun's default domain alike, and was listed up to three times."""
    listed = {str(p) for p in problems}
    problems += [p for p in found if str(p) not in listed]


def _templates(settings: Settings) -> list[str]:
    """A template the folder lacks (a copy saved as 'digest.mjml' was ignored for the bundled one, and
    check said ok), and links a template leaves out (an unsubscribe link deleted with the footer)."""
    try:
        renderer = Renderer(settings.templates_dir)
    except NewsletterError:
        return []  # a problem, listed already
    folder = settings.templates_dir
    bundled = [
        f"{display_path(folder / name)}: not found; the bundled {name} is used"
        for name in (HTML_TEMPLATE, TEXT_TEMPLATE)
        if folder != PACKAGE_TEMPLATES and not (folder / name).is_file()
    ]
    return bundled + renderer.left_out(feedback=bool(settings.base_url))


def _mailto_only(settings: Settings) -> list[str]:
    """Mail that leaves this machine with no one-click unsubscribe link: Gmail and Yahoo ask bulk
    senders for one (RFC 8058), and the mailto goes to a mailbox nothing here reads."""
    if settings.transport == "file" or settings.base_url:
        return []
    return [
        "the digests carry only a mailto unsubscribe, to the sender's address: set NEWSLETTER_BASE_URL and "
        "NEWSLETTER_UNSUBSCRIBE_SECRET and run `newsletter serve` for the one-click link Gmail and Yahoo "
        "ask bulk senders for; record a request that comes by mail with `newsletter unsubscribe EMAIL`"
    ]


def _smtp_port(settings: Settings) -> list[str]:
    """A port that speaks another way than smtp_security (25 is the default, with ssl too): TLS from the
    first byte to a port that starts in the clear failed at the first send with 'wrong version number';
    the clear to port 465, which starts with TLS, waited out the timeout."""
    port, security = settings.smtp_port, settings.smtp_security
    clear_to_tls = security != "ssl" and port == 465
    tls_to_clear = security == "ssl" and port in (25, 587)
    if settings.transport != "smtp" or not (clear_to_tls or tls_to_clear):
        return []
    given = "smtp_port" in settings.model_fields_set
    where = f"smtp_port {port} ({setting_origin('smtp_port') if given else 'the default'})"
    if clear_to_tls:  # 587 takes starttls; with 'none' it is mail in the clear
        other = " (or port 587)" if security == "starttls" else ""
        return [f"{where} speaks TLS from the first byte, but smtp_security is '{security}': set ssl{other}"]
    return [f"{where} starts in the clear, but smtp_security is 'ssl': set port 465 (or starttls)"]


def _fetch_schedule(settings: Settings) -> None:
    fetch_schedule(settings.fetch_cron)


def _dumps_folder(settings: Settings) -> None:
    if not settings.dumps.is_dir():
        what = "is a file, not a folder" if settings.dumps.exists() else "dumps folder not found"
        raise ConfigError(f"{settings.dumps}: {what}", hint="create it or set NEWSLETTER_DUMPS (--dumps)")
    if not os.access(settings.dumps, os.R_OK | os.X_OK):
        raise ConfigError(f"{settings.dumps}: cannot list the dumps folder (permission denied)")


def _state_folder(settings: Settings) -> None:
    """The state folder, and the outbox in it, can be written (or made): a run writes both."""
    for folder in (settings.home, settings.outbox) if settings.transport == "file" else (settings.home,):
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise ConfigError(
                f"{folder}: {existing} is a file, not a folder", hint="set --home or NEWSLETTER_HOME"
            )
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{folder}: cannot write in {existing} (permission denied)")


def _executor(settings: Settings) -> None:
    """The task engine's package is installed and its database is PostgreSQL."""
    if settings.executor == "procrastinate":
        distributed().conninfo(settings.db_url)


def _unsubscribe_links(settings: Settings) -> None:
    if settings.base_url and not settings.unsubscribe_secret:
        raise ConfigError(
            "NEWSLETTER_BASE_URL is set but NEWSLETTER_UNSUBSCRIBE_SECRET is not",
            hint="one-click unsubscribe links need a secret to sign them",
        )
