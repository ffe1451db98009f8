"""`newsletter status`: when each subscriber is due next, what needs attention, how the last run went."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from newsletter.address import address_key
from newsletter.models import Subscriber
from newsletter.selection.due import shown_due
from newsletter.selection.select import catch_up_floor
from newsletter.sources import path_from_text
from newsletter.store import FAILED, PENDING, RETRY, SENDING, UNKNOWN, DeliveryRecord, Store, SubscriberState
from newsletter.subscribers import SubscriberList

PIPED_WIDTH = 2000  # piped, no row folds: a table is as wide as its longest cell needs
IN_FLIGHT = (
    "in flight now, or interrupted by a crash (the next run reports it unknown, or queues it again "
    "if it was waiting to retry after a refusal)"
)


def status_report(
    store: Store, subscribers: SubscriberList, now: datetime, last_run: dict[str, Any] | None
) -> dict[str, Any]:
    states = store.subscriber_states()
    unsubscribed = store.unsubscribed_emails()
    queued = queued_now(store, now)
    latest = store.latest_paper_seq()  # a dump that brought no new paper gives nothing to weigh
    floor = catch_up_floor(store, now)  # nor one older than any window reaches
    rows = [
        _subscriber_row(sub, states.get(address_key(sub.email)), now, queued, latest, floor, unsubscribed)
        for sub in subscribers.subscribers
    ]
    rows += [
        _held_row(key, problem, states.get(key), unsubscribed) for key, problem in subscribers.held.items()
    ]
    attention = [
        _attention_row(d, now) for d in store.deliveries((FAILED, UNKNOWN, RETRY, SENDING), with_items=False)
    ]
    records = store.rejected_files()
    hashes = {path: _content_hash(path) for path in {r.path for r in records}}  # a file read once
    refused = [
        {"file": r.path, "problem": r.problem, "first_seen": r.first_seen.isoformat()}
        for r in records
        if hashes[r.path] == r.content_hash  # still there as it was refused (not fixed or removed)
    ]
    return {
        "subscribers": rows,
        "attention": attention,
        "rejected_files": refused,
        "counts": store.delivery_counts(),
        "last_run": last_run,
    }


def _subscriber_row(
    sub: Subscriber,
    state: SubscriberState | None,
    now: datetime,
    queued: dict[str, datetime],
    latest: int | None,
    floor: int,
    unsubscribed: set[str],
) -> dict[str, Any]:
    last = state.last_digest_at if state else None
    served = state.served_slot if state else None
    mark = state.watermark_seq if state else None
    fresh = latest is not None and latest > (floor if mark is None else max(mark, floor))  # as select sees it
    due = shown_due(sub, last, now, served, queued=queued.get(address_key(sub.email)), waiting=fresh)
    return {
        "subscriber": sub.email,
        "cadence": sub.cadence,
        "last_digest_at": last.isoformat() if last else None,
        "next_due_at": _wall(due).isoformat() if due else None,  # None: when a dump brings new papers
        "next_due": _due_text(due, now),
        "unsubscribed": address_key(sub.email) in unsubscribed,
        "bounced_at": state.bounced_at.isoformat() if state and state.bounced_at else None,
        "held": None,
    }


def _held_row(
    key: str, problem: str, state: SubscriberState | None, unsubscribed: set[str]
) -> dict[str, Any]:
    """An address whose entry in the subscribers file is left out for a problem (``held``: the problem,
    with its file, line and field): nothing is sent to it, and its queued digests wait, until it is fixed."""
    last = state.last_digest_at if state else None
    return {
        "subscriber": key,
        "cadence": None,  # the entry is not read
        "last_digest_at": last.isoformat() if last else None,
        "next_due_at": None,
        "next_due": "when its entry is fixed",
        "unsubscribed": key in unsubscribed,
        "bounced_at": state.bounced_at.isoformat() if state and state.bounced_at else None,
        "held": problem,
    }


def _attention_row(d: DeliveryRecord, now: datetime) -> dict[str, Any]:
    waiting = d.status == RETRY and d.not_before is not None and d.not_before > now
    return {
        "digest_id": d.digest_id,
        "subscriber": d.email,
        "status": d.status,
        "attempts": d.attempts,
        "error": d.last_error or (IN_FLIGHT if d.status == SENDING else None),
        "next_try": d.not_before.isoformat() if waiting and d.not_before else None,
    }


def queued_now(store: Store, now: datetime) -> dict[str, datetime]:
    """Subscribers with a digest planned but not sent yet, and when the first of them goes: now (the
    next run sends it first), or when a refusal's backoff ends."""
    queued: dict[str, datetime] = {}
    for d in store.deliveries((PENDING, RETRY), with_items=False):
        goes = max(now, d.not_before or now)
        queued[address_key(d.email)] = min(goes, queued.get(address_key(d.email), goes))
    return queued


def _content_hash(path: str) -> str | None:
    """A dumps folder file's SHA-256 now (None: gone or unreadable)."""
    try:  # read in blocks: a refused file may be any size (a 2 GB backup took 2 GB of memory read whole)
        with path_from_text(path).open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def _wall(moment: datetime) -> datetime:
    """The same instant as its zone's clocks show it: a send time inside a DST gap (02:30 on the
    spring-forward day) was printed as that day's 02:30 with the winter offset, a time no clock shows."""
    return moment.astimezone(UTC).astimezone(moment.tzinfo)


def _due_text(due: datetime | None, now: datetime) -> str:
    """The next due time in words: 'now', a time, or when a dump brings new papers (None)."""
    if due is None:
        return "when a dump brings new papers"
    return "now" if due <= now else _short_time(due.isoformat())


def _short_time(iso: str) -> str:
    """'2026-03-11T08:00:00+00:00' -> '2026-03-11 08:00 UTC' (times are kept in UTC)."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _attention_text(row: dict[str, Any]) -> str:
    error = row["error"] or ""
    if not row.get("next_try"):
        return error
    return f"{error}; tried again from {_short_time(row['next_try'])}".removeprefix("; ")


def print_status(data: dict[str, Any], console: Console | None = None) -> None:
    """Addresses, server replies and dump problems are printed as written (Rich markup in them, such
    as ``[/var/mail/x]``, was read as a tag: a traceback). Piped, each row is one line however long
    (an address folded over two lines escaped `grep`); `status --json` is the form for a program."""
    console = console or _console()
    for warning in data.get("warnings", []):
        _plain(console, f"warning: {warning}")
    if data.get("run_in_progress"):
        _plain(console, str(data["run_in_progress"]))
    console.print(_subscribers_table(data["subscribers"]))
    if data["attention"]:
        console.print(_attention_table(data["attention"]))
        console.print("`newsletter retry` resends failed ones; `--unknown` also those that may have arrived.")
    if data["rejected_files"]:
        console.print(
            "Files in the dumps folder that runs skip (fix or remove them; changed content is read again):"
        )
        for r in data["rejected_files"]:
            problem = r["problem"].removeprefix(f"{r['file']}: ")  # a skipped file's warning names it first
            _plain(console, f"  {r['file']} (since {r['first_seen']}): {problem}")
    counts = ", ".join(f"{n} {status}" for status, n in sorted(data["counts"].items())) or "none yet"
    console.print(f"Deliveries: {counts}", highlight=False)
    last = data["last_run"]
    console.print(
        f"Last run: finished {_when(last['finished_at'])}: {last['summary']}"
        if last
        else "Last run: none recorded",
        markup=False,
    )
    for problem in (last or {}).get("errors", []):
        _plain(console, f"  error: {problem}")
    for problem in _not_ingested(last or {}):
        _plain(console, f"  not ingested now: {problem}")


def _when(finished_at: str | None) -> str:
    """When a run finished, by this host's clock, as the run's own summary writes its time (a run with
    ``--now`` says its own time there)."""
    try:
        finished = datetime.fromisoformat(finished_at) if finished_at else None
    except (TypeError, ValueError):  # last-run.json edited by hand, or written by something else
        return f"at {finished_at!r} (not a time)"
    if finished is None:
        return "at an unknown time"
    aware = finished if finished.tzinfo else finished.replace(tzinfo=UTC)  # runs write UTC
    return f"{aware.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _not_ingested(last: dict[str, Any]) -> list[str]:
    """Why the last run left dump files for the next (a database error, a full disk): its summary
    counts them, and a daemon's ticks may fail so for days."""
    return [d["error"] for d in last.get("dumps", []) if d.get("later") and d.get("error")]


def _console() -> Console:
    """The terminal's width on a terminal; piped, as wide as the longest row (Rich's default is 80)."""
    console = Console()
    return console if console.is_terminal else Console(width=PIPED_WIDTH)


def _subscribers_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        Column("subscriber", overflow="fold"),
        "cadence",
        Column("last digest", no_wrap=True),  # a long address wraps; a time is never cut
        Column("next due", no_wrap=True),
        title="Subscribers",
    )
    for row in rows:
        last = _short_time(row["last_digest_at"]) if row["last_digest_at"] else "never"
        table.add_row(Text(row["subscriber"]), row["cadence"] or "-", last, Text(_due_cell(row)))
    return table


def _due_cell(row: dict[str, Any]) -> str:
    if row["unsubscribed"]:
        return "unsubscribed"
    if row.get("held"):
        return f"held: fix its entry ({row['held']})"
    return "held: address refused (retry EMAIL)" if row["bounced_at"] else row["next_due"]


def _attention_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("digest", "subscriber", "status", "attempts", "error", title="Needs attention")
    for d in rows:
        table.add_row(
            d["digest_id"], Text(d["subscriber"]), d["status"], str(d["attempts"]), Text(_attention_text(d))
        )
    return table


def _plain(console: Console, line: str) -> None:
    """A line as written: no markup, no highlighting, never wrapped."""
    console.print(line, highlight=False, markup=False, soft_wrap=True)
