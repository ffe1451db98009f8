"""One subscriber's commands: preview their digest, explain a paper, record feedback, (un)subscribe."""

from __future__ import annotations

import json
import webbrowser
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, unquote

import typer
from pydantic import EmailStr, TypeAdapter, ValidationError

from newsletter.address import address_key, ascii_domain
from newsletter.app import load_last_report, open_history, open_pipeline, open_reading_pipeline
from newsletter.cli.base import (
    Command,
    NowOption,
    app,
    given_address,
    listed_subscriber,
    parse_now,
    state,
    warn,
    warn_entries,
)
from newsletter.config import Settings
from newsletter.deliver.held import record_held
from newsletter.errors import ConfigError, UsageError
from newsletter.files import PRIVATE_FOLDER, make_folder, write_atomic
from newsletter.models import Subscriber
from newsletter.ops.explain import explain as explain_paper
from newsletter.ops.explain import find as find_paper
from newsletter.report import plural
from newsletter.send.file import file_slug
from newsletter.subscribers import SubscriberList, load_subscribers, load_valid_subscribers, read_subscribers

PaperArgument = Annotated[
    str,
    typer.Argument(
        metavar="PAPER",
        help=(
            "The paper: its arXiv id (or arXiv or HF papers URL), its title, or a part of its title"
            " no other paper has."
        ),
    ),
]


@app.command(cls=Command)
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
    shown = _last_sent(settings, subscriber) if last else _next_digest(settings, subscriber, parse_now(now))
    if isinstance(shown, str):
        typer.echo(f"{subscriber.email}: {shown}")
    else:
        _show_preview(*shown, out, settings, subscriber.email, open_browser)  # one file per subscriber


def _last_sent(settings: Settings, subscriber: Subscriber) -> tuple[str, str] | str:
    """The last digest sent, as HTML and a two-line summary; or why there is none."""
    with open_pipeline(settings, lock=False, new_database=state.new_database, sending=False) as pipeline:
        found = pipeline.last_sent(subscriber)  # the delivery log only: nothing is ingested
    if found is None:
        return "no digest sent yet"
    record, message = found
    when = f"sent {record.created_at:%Y-%m-%d %H:%M} UTC: {plural(len(record.items), 'paper')}"
    return message.html, f"Subject: {message.subject}\n{when}"


def _next_digest(settings: Settings, subscriber: Subscriber, clock: datetime) -> tuple[str, str] | str:
    """The digest the subscriber would get now, as HTML and a two-line summary; or why there is none."""
    with open_reading_pipeline(settings, clock, new_database=state.new_database) as pipeline:
        selection, view = pipeline.preview(subscriber, clock)
        rendered = pipeline.renderer.render(view) if view else None
        sent_before = bool(pipeline.store.deliveries(("sent",), subscriber.email, with_items=False))
    if rendered is None:
        hint = "`--last` shows the last one sent" if sent_before else "none sent yet"
        return f"no digest now ({selection.reason}); {hint}"
    return rendered.html, f"Subject: {rendered.subject}\n{plural(len(selection.chosen), 'paper')}"


def _show_preview(
    html: str, what: str, out: Path | None, settings: Settings, email: str, browse: bool
) -> None:
    target = out or settings.home / "preview" / f"{quote(email, safe='@')}.html"
    try:
        if out is None:  # the state folder's copy is its owner's alone, as the outbox: it holds signed
            make_folder(target.parent, PRIVATE_FOLDER)  # links, and anyone who read one could
            write_atomic(target, html.encode())  # unsubscribe the reader
        else:  # a file the user named, in the mode they gave it
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(html, encoding="utf-8")
    except OSError as exc:  # a folder, a full disk, no permission
        raise ConfigError(f"cannot write the preview to {target}: {exc.strerror or exc}") from None
    typer.echo(f"{what} -> {target}")
    if browse and not webbrowser.open(target.resolve().as_uri()):
        warn(f"no browser to open; open {target} yourself")


@app.command(cls=Command)
def explain(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's email address.")],
    paper: PaperArgument,
    now: NowOption = None,
) -> None:
    """Show a paper's score against EMAIL's bar, its best column, and why it was or was not sent."""
    settings = state.settings()
    subscriber = _subscriber(settings, email)
    clock = parse_now(now)
    with open_reading_pipeline(settings, clock, new_database=state.new_database) as pipeline:
        explanation = explain_paper(pipeline, subscriber, paper, clock)
    typer.echo("\n".join(explanation.lines()))


@app.command(cls=Command)
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
        store.record_feedback(subscriber.email, found.key, kind, parse_now(now))
    typer.echo(f"{subscriber.email}: {kind} like {found.title!r}, from the next digest on")


@app.command(cls=Command)
def unsubscribe(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The address that asked to leave.")],
    now: NowOption = None,
) -> None:
    """Unsubscribe EMAIL, as the one-click link does: for a request that came by mail (the mailto in
    every digest's List-Unsubscribe and footer goes to the sender's address) or by hand.

    Their queued digests are cancelled; nothing more goes there, even while they are still in the
    subscribers file, until `newsletter resubscribe EMAIL`.
    """
    settings, email = state.settings(), given_address(email)
    subscribers = _readable_subscribers(settings)
    listed = subscribers.find(email)
    address = listed.email if listed else _address(email)
    with open_history(settings, new_database=state.new_database) as store:
        record_held(settings.home, store)  # the clicks serve held: this request comes after them
        already = address_key(address) in store.unsubscribed_emails()
        store.record_unsubscribe(address, parse_now(now))
    held = subscribers.holds(email)  # in the file, its entry to be fixed
    where = "" if listed or held else f" (not in {settings.subscribers}: recorded for if it is added)"
    typer.echo(f"{address}: " + ("had already unsubscribed" if already else "unsubscribed") + where)


@app.command(cls=Command)
def resubscribe(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's email address.")],
) -> None:
    """Undo EMAIL's unsubscribe, when they ask to come back: an unsubscribe is otherwise for good (one
    recorded for an address not in the subscribers file too).

    Their next digest holds only papers listed from now on, not what came while they were away.
    """
    settings, email = state.settings(), given_address(email)
    subscribers = _readable_subscribers(settings)
    listed = subscribers.find(email)
    address = listed.email if listed else _address(email)
    with open_history(settings, new_database=state.new_database) as store:
        record_held(settings.home, store)  # a held unsubscribe came before: this undoes it, not it this
        done = store.resubscribe(address)
    listed_or_held = listed or subscribers.holds(email)  # held: in the file, its entry to be fixed
    if not listed_or_held and not done:  # a typo, most likely: as `retry EMAIL` says
        raise ConfigError(
            f"{subscribers.path}: no subscriber with email {email!r}, and it had not unsubscribed"
        )
    what = "subscribed again: digests from papers listed from now on" if done else "had not unsubscribed"
    typer.echo(f"{address}: {what}" + ("" if listed_or_held else f" (not in {settings.subscribers})"))


@app.command(cls=Command)
def forget(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The address to erase.")],
) -> None:
    """Erase EMAIL (a request to be forgotten): its delivery history, feedback, unsubscribe and state in
    the database, its outbox files and previews, and its lines in last-run.json. Take it out of the
    subscribers file first: with its unsubscribe forgotten, an address still listed gets a digest again.
    Not while a run or the daemon holds the state (stop the daemon first). Logs (run.log, the journal)
    are not touched."""
    settings, email = state.settings(), given_address(email)
    # strict, unlike unsubscribe: an entry this read leaves out (its own mistake, a file mid-edit) may be
    # the address, whose unsubscribe this erases: once the entry is fixed it would get digests again
    subscribers = load_subscribers(settings.subscribers)
    if subscribers.find(email) is not None:
        raise ConfigError(
            f"{subscribers.path}: {email} is still a subscriber",
            hint="take it out of the subscribers file, stop the daemon (forget takes the run lock), "
            "then forget it",
        )
    key = address_key(_address(email))
    # under the run lock: a run that read the file before the address left it would mail it afterwards,
    # and list it again in last-run.json
    with open_history(settings, new_database=state.new_database) as store, store.lock(settings.home):
        record_held(settings.home, store)  # its held clicks go in first, and are forgotten with the rest
        ids = {d.digest_id for d in store.deliveries(email=key, with_items=False)}
        gone, marks, known = store.forget_subscriber(key)
        if not store.empty_log():
            warn(f"the database's -wal file may still hold {key}: forget it again while no one reads it")
        files = _forget_files(settings, key, ids)
        _forget_in_report(settings, key, ids)
    what = [plural(gone, "digest"), plural(marks, "feedback mark"), plural(files, "file")]
    typer.echo(
        f"{key}: forgotten ({', '.join(what)})" + ("" if known or gone or marks else "; it was unknown")
    )


@app.command(cls=Command)
def rename(
    old: Annotated[str, typer.Argument(metavar="OLD", help="The address the subscriber had.")],
    new: Annotated[str, typer.Argument(metavar="NEW", help="Their new address, in the subscribers file.")],
) -> None:
    """A subscriber changed address: give OLD's history to NEW. The papers sent to OLD are not sent again,
    its feedback keeps counting, an unsubscribe stays, and digests still queued go to NEW. Change the
    address in the subscribers file first, then rename before the next run (a run in between starts NEW
    afresh, and NEW's history is never merged with OLD's). Not while a run or the daemon holds the state.
    The links in mail sent to OLD name OLD: their feedback records nothing, their unsubscribe only OLD."""
    settings = state.settings()
    old_key, new_key = (address_key(_address(given_address(a))) for a in (old, new))
    if old_key == new_key:  # "still a subscriber" said the address had to change first: it had
        typer.echo(f"{old} and {new} are one address to newsletter: nothing to move")
        return
    subscribers = load_subscribers(settings.subscribers)  # strict, as forget: OLD may be a broken entry
    if subscribers.find(old_key) is not None:
        raise ConfigError(
            f"{subscribers.path}: {old_key} is still a subscriber",
            hint="change its address to the new one in the subscribers file, then rename",
        )
    listed_subscriber(subscribers, new_key)
    with open_history(settings, new_database=state.new_database) as store, store.lock(settings.home):
        record_held(settings.home, store)  # OLD's held clicks go in first, and move with the rest
        moved, marks = store.rename_subscriber(old_key, new_key)
    typer.echo(
        f"{old_key} -> {new_key}: {plural(moved, 'digest')} and {plural(marks, 'feedback mark')} moved"
    )


def _forget_files(settings: Settings, key: str, digest_ids: Collection[str]) -> int:
    """The outbox's messages to ``key`` (named <date>_<address>_<id>, or <id> by versions before the
    address was in the name) or of its ``digest_ids`` (sent to the address it had before a `rename`),
    and its previews."""
    slug = file_slug(_as_sent(key))
    outbox = settings.outbox.glob("*") if settings.outbox.is_dir() else ()
    found = [p for p in outbox if _outbox_slug(p.name) == slug or _outbox_id(p.name) in digest_ids]
    previews = settings.home / "preview"  # named after the address as listed: Ada@Example.org.html
    found += [p for p in previews.glob("*.html") if address_key(unquote(p.name[: -len(".html")])) == key]
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def _as_sent(key: str) -> str:
    """The address as a message to it goes out, and its outbox file is named: the domain in A-labels (the
    key's Unicode domain named bob@straße.example's files after bob@strasse.example, another address)."""
    local, _, domain = key.rpartition("@")
    try:
        return f"{local}@{ascii_domain(domain)}"
    except ValueError:
        return key


def _outbox_slug(name: str) -> str:
    """The address part of an outbox file's name, <date>_<address>_<id>.<ext> (neither the date nor the
    id holds a '_'; the address may: a substring test took john_smith@'s files for smith@'s)."""
    _, _, rest = name.partition("_")
    return rest.rpartition("_")[0]


def _outbox_id(name: str) -> str:
    """The digest id of an outbox file's name, <date>_<address>_<id>.<ext> or <id>.<ext>."""
    return name.rpartition("_")[2].partition(".")[0]


def _forget_in_report(settings: Settings, key: str, digest_ids: Collection[str]) -> None:
    """last-run.json without the address's digests (it lists every subscriber's outcome), nor those of
    its ``digest_ids`` (listed under the address it had before a `rename`)."""
    data = load_last_report(settings)
    if not data or not isinstance(data.get("digests"), list):
        return
    kept = [d for d in data["digests"] if not _reports_on(d or {}, key, digest_ids)]
    if len(kept) != len(data["digests"]):
        write_atomic(
            settings.last_run_file, json.dumps({**data, "digests": kept}, indent=2).encode(), readable=True
        )


def _reports_on(digest: dict[str, object], key: str, digest_ids: Collection[str]) -> bool:
    return address_key(str(digest.get("subscriber", ""))) == key or digest.get("digest_id") in digest_ids


def _readable_subscribers(settings: Settings) -> SubscriberList:
    """The file's valid subscribers, for (un)subscribing: a mistake in another entry (or in the whole
    file, mid-edit) must not keep an unsubscribe from being recorded; it is warned about."""
    try:
        subscribers, problems = read_subscribers(settings.subscribers)
    except ConfigError as exc:
        warn(f"{exc.message} (recorded by address alone)")
        return SubscriberList(settings.subscribers, ())
    warn_entries(problems)
    return subscribers


def _address(text: str) -> str:
    try:
        return str(TypeAdapter(EmailStr).validate_python(text.strip()))
    except ValidationError:
        raise ConfigError(f"{text!r} is not an email address") from None


def _subscriber(settings: Settings, email: str) -> Subscriber:
    """EMAIL's entry: a mistake in another is warned about, one in its own stops the command."""
    subscribers, problems = load_valid_subscribers(settings.subscribers)
    found = listed_subscriber(subscribers, email)
    warn_entries(problems)
    return found
