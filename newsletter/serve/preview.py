"""What the preview server shows, computed without touching delivery state.

Each request re-reads subscribers.yaml and rebuilds the Renderer when a template file changed (keyed on
the files' contents), so edits show on the next reload. New dump files in the dumps folder are ingested
first, as `newsletter preview` does, but only while no run holds the state lock (a run or the daemon
ingests them itself); nothing is ever planned or sent: the pipeline's transport factory refuses to be
called.
"""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

from newsletter.address import address_key
from newsletter.app import make_state_folder, refuse_lost_history, refuse_older_history
from newsletter.config import PACKAGE_TEMPLATES, Settings
from newsletter.errors import ConfigError, LockedError, NewsletterError, RenderError, SourceError, StoreError
from newsletter.intake import refused_files, stored_files, waiting_files, waiting_note
from newsletter.models import OutgoingMessage, Scored, Subscriber
from newsletter.ops.status import queued_now
from newsletter.pipeline import Pipeline, Selection
from newsletter.rank import make_ranker
from newsletter.rank.base import Ranker
from newsletter.rank.embed import ReadThroughCache
from newsletter.render import DigestView, Renderer
from newsletter.report import BACKING_OFF, DumpOutcome
from newsletter.selection.due import is_due, shown_due
from newsletter.selection.select import BOUNCED
from newsletter.send.base import Transport
from newsletter.sources import list_dump_files
from newsletter.store import FeedbackRecord, Store, SubscriberState
from newsletter.store.vectors import StoreVectorCache
from newsletter.subscribers import SubscriberList, load_valid_subscribers

GMAIL_CLIP_BYTES = 102_000  # Gmail shows "[Message clipped]" past ~102 KB of HTML
NEAR_MISSES = 5
Stamps = tuple[tuple[str, int, int], ...]  # (file, mtime_ns, size) of each file: what a change shows in


class UnknownSubscriber(ConfigError):
    """No subscriber with that address in subscribers.yaml."""


class HeldEntry(ConfigError):
    """The address's entry in subscribers.yaml has a problem: a run leaves it out until it is fixed."""


@dataclass(frozen=True)
class Row:
    """One subscriber on the index page: what a run would send them now, or why nothing."""

    subscriber: Subscriber
    count: int
    reason: str  # "" when count > 0: nothing new, nothing relevant, not due, unsubscribed
    due_at: datetime | None  # None: when a dump brings new papers
    last_digest_at: datetime | None


@dataclass(frozen=True)
class HeldRow:
    """An address whose entry in the subscribers file is left out for a problem: a run sends it nothing,
    and its queued digests wait, until the entry is fixed."""

    email: str  # the address key
    problem: str  # with the file, line and field
    last_digest_at: datetime | None


@dataclass(frozen=True)
class Index:
    rows: tuple[Row, ...]
    notes: tuple[str, ...]
    now: datetime
    held: tuple[HeldRow, ...] = ()


@dataclass(frozen=True)
class Draft:
    """The digest email a run would build now, and its parts exactly as they would be sent."""

    message: OutgoingMessage
    html: str  # the text/html part, decoded from the message bytes (CRLF line endings, as sent)
    text: str  # the text/plain part, likewise
    headers: tuple[tuple[str, str], ...]  # decoded, for reading
    raw_headers: str  # the header block as sent (folded), CRLF shown as LF

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode())


@dataclass(frozen=True)
class Page:
    """One subscriber's preview: the selection (due or not), the draft email and the near misses."""

    row: Row
    selection: Selection
    view: DigestView | None  # what the templates saw
    draft: Draft | None
    notes: tuple[str, ...]
    over_cap: tuple[Scored, ...]  # relevant, but past max_items
    near_misses: tuple[Scored, ...]  # the best of those not relevant (a score of 0 is no near miss)
    feedback: tuple[FeedbackRecord, ...] = ()  # "more/less like this" the subscriber gave, newest first


class Previewer:
    """Owns the long-lived parts (store, ranker, renderer cache); one preview is computed at a time."""

    def __init__(
        self, settings: Settings, clock: Callable[[], datetime], *, new_database: bool = False
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.new_database = new_database  # --new-database: an empty database is used on purpose
        self._lock = threading.Lock()  # one preview at a time: the ranker and caches are not shared
        self._store_lock = threading.Lock()  # the unsubscribe endpoint needs only the store
        self._store: Store | None = None
        self._ranker: Ranker | None = None
        self._renderer: tuple[Stamps, Renderer | NewsletterError] | None = None
        self._read: tuple[tuple[int, ...], SubscriberList | NewsletterError] | None = None
        self._seen_dumps: set[tuple[str, int, int]] = set()
        self._rejected: dict[str, str] = {}

    # -- the long-lived parts -----------------------------------------------------------------------

    def store(self) -> Store:
        with self._store_lock:
            if self._store is None:
                make_state_folder(self.settings)
                store = Store(self.settings.db_url, home=self.settings.home)
                try:
                    if not self.new_database:
                        refuse_lost_history(self.settings, store)  # ingesting would hide the loss from `run`
                        refuse_older_history(self.settings, store)
                except StoreError:
                    store.close()
                    raise
                self._store = store
            return self._store

    def close(self) -> None:
        with self._lock, self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None
                self._ranker = None  # its cache read the store closed

    def _current_renderer(self) -> Renderer:
        """The Renderer for the templates as they are now; rebuilt only when a template file changed."""
        key = templates_key(self.settings.templates_dir)
        if self._renderer is None or self._renderer[0] != key:
            self._renderer = (key, _kept(lambda: Renderer(self.settings.templates_dir), RenderError))
        return _given(self._renderer[1])

    def _subscribers(self) -> SubscriberList:
        """subscribers.yaml, read again only once it changed: 20,000 subscribers took 3 s to read, for
        every page (a missing file is looked for each time). A copy that puts the mtime back (`cp -p`,
        `rsync -t`) still changes the ctime."""
        try:
            st = self.settings.subscribers.stat()
        except OSError:
            return self._valid_subscribers()  # says what is wrong with it
        stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)  # ctime: an mtime put back
        if self._read is None or self._read[0] != stamp:
            self._read = (stamp, _kept(self._valid_subscribers, ConfigError))
        return _given(self._read[1])

    def _valid_subscribers(self) -> SubscriberList:
        """The file's valid entries: another's mistake leaves the other pages up (its page names it)."""
        return load_valid_subscribers(self.settings.subscribers)[0]

    def listed(self, address: str) -> bool:
        """Whether the subscribers file lists the address (True when it cannot be read: it may)."""
        try:
            subscribers = self._subscribers()
            return subscribers.find(address) is not None or subscribers.holds(address) is not None
        except ConfigError:
            return True

    @contextmanager
    def _pipeline(self) -> Iterator[Pipeline]:
        with self._lock:
            renderer = self._current_renderer()
            store = self.store()
            if self._ranker is None:  # reads the vectors runs stored; keeps its own in memory
                cache = ReadThroughCache(StoreVectorCache(store))
                self._ranker = make_ranker(self.settings.ranker, cache=cache)
            yield Pipeline(self.settings, store, self._ranker, renderer, refuse_to_send)

    # -- pages --------------------------------------------------------------------------------------

    def index(self) -> Index:
        subscribers = self._subscribers()
        with self._pipeline() as pipeline:
            now = self.clock()
            notes = self._ingest_new(pipeline, now)
            order = {id(s): i for i, s in enumerate(subscribers.subscribers)}
            selections = sorted(
                pipeline.select(subscribers.subscribers, now), key=lambda sel: order[id(sel.subscriber)]
            )
            states = pipeline.store.subscriber_states()
            queued = queued_now(pipeline.store, now)
        rows = tuple(_row(s, states.get(address_key(s.subscriber.email)), now, queued) for s in selections)
        return Index(rows, notes, now, _held_rows(subscribers, states))

    def page(self, address: str) -> Page:
        subscriber = find(self._subscribers(), address)
        with self._pipeline() as pipeline:
            now = self.clock()
            notes = self._ingest_new(pipeline, now)
            state = pipeline.store.subscriber_state(subscriber.email)
            queued = queued_now(pipeline.store, now)
            feedback = tuple(pipeline.store.feedback(subscriber.email))
            selection, view = pipeline.preview(subscriber, now)
            draft = make_draft(pipeline.digest_builder().draft(selection, now)) if selection.chosen else None
        relevant = [s for s in selection.scored if s.relevant]
        misses = [s for s in selection.scored if not s.relevant and s.score > 0][:NEAR_MISSES]
        row = _row(_as_run_sees_it(selection, state, now), state, now, queued)
        over_cap = tuple(relevant[subscriber.max_items :])
        return Page(row, selection, view, draft, notes, over_cap, tuple(misses), feedback)

    def last(self, address: str) -> Draft | None:
        """The last digest sent to ``address``, rebuilt from the delivery log; None before the first."""
        subscriber = find(self._subscribers(), address)
        with self._pipeline() as pipeline:
            found = pipeline.last_sent(subscriber)
        return None if found is None else make_draft(found[1])

    # -- ingesting ----------------------------------------------------------------------------------

    def _ingest_new(self, pipeline: Pipeline, now: datetime) -> tuple[str, ...]:
        """Ingest dump files not seen before, when no run holds the lock; notes for the page."""
        try:
            files = list_dump_files(self.settings.dumps)
        except SourceError as exc:
            return (f"{exc}: showing the papers already in the store",)
        fresh = {path: stamp for path in files if (stamp := _stamp(path)) not in self._seen_dumps}
        for path in stored_files(pipeline.store, list(fresh)):  # read with no lock: a run is not refused
            self._seen_dumps.add(fresh.pop(path))  # (a restarted serve read every file under it again)
            self._rejected.pop(str(path), None)  # refused half-written, then completed and stored
        for path, problem in refused_files(pipeline.store, list(fresh)).items():  # by a run: not logged again
            self._seen_dumps.add(fresh.pop(path))
            self._rejected[str(path)] = problem
        notes: list[str] = []
        if fresh:
            try:
                with pipeline.store.lock(self.settings.home):
                    outcomes = pipeline.ingest(list(fresh), now)
            except LockedError:
                note = waiting_note(waiting_files(pipeline.store, self.settings.dumps))
                notes.extend([note] if note else [])
            else:
                self._remember(fresh, outcomes)
                notes += [f"dump not ingested now, tried again: {o.error}" for o in outcomes if o.later]
        present = {str(path) for path in files}
        return (*notes, *(f"dump rejected: {e}" for path, e in self._rejected.items() if path in present))

    def _remember(self, fresh: dict[Path, tuple[str, int, int]], outcomes: list[DumpOutcome]) -> None:
        for (path, stamp), outcome in zip(fresh.items(), outcomes, strict=True):
            if outcome.later:  # a database error, not the file's: tried again at the next page
                continue
            self._seen_dumps.add(stamp)
            if outcome.error:
                self._rejected[str(path)] = outcome.error
            else:
                self._rejected.pop(str(path), None)


def refuse_to_send() -> Transport:
    raise RuntimeError("the preview server never sends")


def find(subscribers: SubscriberList, address: str) -> Subscriber:
    subscriber = subscribers.find(address)
    if subscriber is None and (problem := subscribers.holds(address)):
        raise HeldEntry(f"{address}: a run sends it nothing until the entry is fixed: {problem}")
    if subscriber is None:
        raise UnknownSubscriber(f"{subscribers.path}: no subscriber with email {address!r}")
    return subscriber


def make_draft(message: OutgoingMessage) -> Draft:
    """Parse the built message back, so the page shows what a mail client would get."""
    head = message.raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    parsed = email.message_from_bytes(message.raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    headers = tuple((name, str(value)) for name, value in parsed.items())
    return Draft(message, _part(parsed, "html"), _part(parsed, "plain"), headers, head.replace("\r\n", "\n"))


def _part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body((subtype,))
    content = body.get_content() if body is not None else ""
    return content if isinstance(content, str) else ""


def templates_key(folder: Path) -> Stamps:
    """The (name, mtime, size) of every file in the templates folder and the bundled one. Not their
    contents: a 300 MB file left in the folder was read for every page (0.7 s). An edit that keeps the
    size and puts the mtime back to the same nanosecond goes unseen until the next one."""
    roots = [root for root in (folder, PACKAGE_TEMPLATES) if root.is_dir()]
    return tuple(sorted(_stamp(path) for root in roots for path in root.rglob("*") if path.is_file()))


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


def _as_run_sees_it(selection: Selection, state: SubscriberState | None, now: datetime) -> Selection:
    """A preview ignores the due time; a run checks it after 'unsubscribed', a held address and 'nothing
    new' (the order of ``select``)."""
    if selection.reason in ("unsubscribed", BOUNCED, BACKING_OFF, "nothing new"):
        return selection
    last, served = (state.last_digest_at, state.served_slot) if state else (None, None)
    if not is_due(selection.subscriber, last, now, served):
        return Selection(selection.subscriber, reason="not due")
    return selection


def _row(
    selection: Selection, state: SubscriberState | None, now: datetime, queued: dict[str, datetime]
) -> Row:
    """Due as `newsletter status` says: now with papers to send (each-dump too), or when a queued one goes."""
    last, served = (state.last_digest_at, state.served_slot) if state else (None, None)
    goes = queued.get(address_key(selection.subscriber.email))
    due = shown_due(selection.subscriber, last, now, served, queued=goes, waiting=bool(selection.chosen))
    return Row(selection.subscriber, len(selection.chosen), selection.reason, due, last)


def _held_rows(subscribers: SubscriberList, states: dict[str, SubscriberState]) -> tuple[HeldRow, ...]:
    last = {key: state.last_digest_at for key, state in states.items()}
    return tuple(HeldRow(key, problem, last.get(key)) for key, problem in subscribers.held.items())


T = TypeVar("T")


def _kept(make: Callable[[], T], error: type[NewsletterError]) -> T | NewsletterError:
    """What ``make()`` gives, or the ``error`` it raised, to keep until its input changes."""
    try:
        return make()
    except error as exc:
        return exc


def _given(kept: T | NewsletterError) -> T:
    """A kept value, or its error raised again (each page says it)."""
    if isinstance(kept, NewsletterError):
        raise kept.with_traceback(None)
    return kept
