"""One run: ingest -> diff -> per subscriber rank -> render -> deliver -> report.

State changes follow the delivery log's order, so a crash at any point loses nothing and sends nothing
twice: a digest is *planned* (items recorded, subscriber watermark advanced) in one transaction, marked
*sending* before the transport is called, and *sent* only after the transport accepted it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path

from newsletter.config import Settings, SubscriberList
from newsletter.deliver import Courier
from newsletter.due import is_due
from newsletter.errors import NewsletterError, RenderError, SendError, SourceError
from newsletter.models import OutgoingMessage, Scored, StoredPaper, Subscriber
from newsletter.rank.base import Ranker
from newsletter.render import DigestView, ItemView, Renderer, paper_url
from newsletter.report import DigestOutcome, DumpOutcome, ItemReport, RunReport
from newsletter.send.base import Transport
from newsletter.send.message import build_message, envelope_for
from newsletter.sources import list_dump_files, read_dump
from newsletter.sources.clean import clean_abstract, excerpt
from newsletter.store import DeliveryRecord, DigestPlan, PlannedItem, Store
from newsletter.unsubscribe import mailto_url, one_click_url

log = logging.getLogger(__name__)

TransportFactory = Callable[[], Transport]


@dataclass(frozen=True)
class Selection:
    """A subscriber's digest-to-be, or the reason there is none."""

    subscriber: Subscriber
    reason: str = ""  # set when there is nothing to send
    scored: tuple[Scored, ...] = ()  # every candidate, best first
    upto_seq: int = 0  # the dump seq this selection covers

    @property
    def chosen(self) -> tuple[Scored, ...]:
        relevant = [s for s in self.scored if s.relevant]
        return tuple(relevant[: self.subscriber.max_items])


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        ranker: Ranker,
        renderer: Renderer,
        transport_factory: TransportFactory,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ranker = ranker
        self.renderer = renderer
        self.transport_factory = transport_factory
        self.sleep = sleep
        sender_address = parseaddr(settings.sender)[1] or "digest@localhost"
        self._sender_address = sender_address
        self._list_name = parseaddr(settings.sender)[0] or "Trending Papers"

    # -- ingest -------------------------------------------------------------------------------------

    def ingest(self, paths: Iterable[Path], now: datetime) -> list[DumpOutcome]:
        """Ingest each file in its own transaction; a malformed file is reported and skipped."""
        return [self._ingest_one(path, now) for path in paths]

    def ingest_folder(self, now: datetime) -> list[DumpOutcome]:
        folder = self.settings.dumps
        if not folder.is_dir():
            raise SourceError(f"{folder}: dumps folder not found", hint="set NEWSLETTER_DUMPS")
        return self.ingest(list_dump_files(folder), now)

    def _ingest_one(self, path: Path, now: datetime) -> DumpOutcome:
        try:
            dump = read_dump(path)
        except SourceError as exc:
            log.error("rejected %s", exc)
            return DumpOutcome(file=str(path), error=str(exc))
        result = self.store.ingest(dump, now)
        if not result.already:
            log.info("ingested %s: %d papers, %d new", path, result.papers, result.new)
        return DumpOutcome(str(path), result.papers, result.new, result.already)

    # -- a whole run --------------------------------------------------------------------------------

    def run(
        self,
        subscribers: SubscriberList,
        now: datetime,
        *,
        dry_run: bool = False,
        stop: threading.Event | None = None,
    ) -> RunReport:
        """Ingest, then deliver what earlier runs left queued, then every due digest.

        ``stop`` (set by a signal handler) ends the run after the message in flight; subscribers not
        reached yet are simply due at the next run.
        """
        report = RunReport()
        if not dry_run:
            report.recovered_unknown = self.store.recover_interrupted(now)
        report.dumps = self.ingest_folder(now)
        selections = self.select(subscribers.subscribers, now)
        if dry_run:
            report.extend(self._dry_outcome(sel, now) for sel in selections)
            return report
        with self.transport_factory() as transport:
            courier = Courier(self.store, transport, self.settings, stop=stop, sleep=self.sleep)
            report.extend(self._retry_pending(courier, subscribers, now))
            report.extend(self._deliver_new(courier, sel, now) for sel in selections)
        return report

    def deliver_pending(
        self, subscribers: SubscriberList, now: datetime, *, ignore_backoff: bool = False
    ) -> RunReport:
        """Only deliver what is queued (e.g. after `newsletter retry`), no new digests."""
        report = RunReport(recovered_unknown=self.store.recover_interrupted(now))
        with self.transport_factory() as transport:
            courier = Courier(self.store, transport, self.settings, sleep=self.sleep)
            report.extend(self._retry_pending(courier, subscribers, now, ignore_backoff=ignore_backoff))
        return report

    def select(self, subscribers: Sequence[Subscriber], now: datetime) -> list[Selection]:
        latest = self.store.latest_dump_seq()
        windows = {s.email: self._window(s, latest, now) for s in subscribers}
        pool = {p.id: p for w in windows.values() if not isinstance(w, str) for p in w}
        self.ranker.prepare(list(pool.values()))
        return [self._rank(s, windows[s.email], latest or 0) for s in subscribers]

    def preview(self, subscriber: Subscriber, now: datetime) -> tuple[Selection, DigestView | None]:
        """What the subscriber's digest would hold now, ignoring whether it is due; changes nothing."""
        latest = self.store.latest_dump_seq()
        window = self._window(subscriber, latest, now, ignore_due=True)
        if not isinstance(window, str):
            self.ranker.prepare(window)
        selection = self._rank(subscriber, window, latest or 0)
        if not selection.chosen:
            return selection, None
        return selection, self.view(subscriber, selection.chosen, now)

    # -- choosing papers ----------------------------------------------------------------------------

    def _window(
        self, subscriber: Subscriber, latest: int | None, now: datetime, *, ignore_due: bool = False
    ) -> list[StoredPaper] | str:
        """The candidate papers for this subscriber, or the reason there are none."""
        if self.store.is_unsubscribed(subscriber.email):
            return "unsubscribed"
        state = self.store.subscriber_state(subscriber.email)
        if latest is None:
            return "nothing new"
        if state is None or state.watermark_seq is None:
            papers = self.store.papers_first_seen_in(latest)
        else:
            papers = self.store.papers_first_seen_after(state.watermark_seq)
        if papers:
            sent = self.store.sent_paper_ids(subscriber.email)
            papers = [p for p in papers if p.id not in sent]
        if not papers:
            return "nothing new"
        last = state.last_digest_at if state else None
        if not ignore_due and not is_due(subscriber, last, now):
            return "not due"
        return papers

    def _rank(self, subscriber: Subscriber, window: list[StoredPaper] | str, latest: int) -> Selection:
        if isinstance(window, str):
            return Selection(subscriber, reason=window)
        scored = tuple(self.ranker.rank(window, subscriber))
        selection = Selection(subscriber, scored=scored, upto_seq=latest)
        if not selection.chosen:
            return Selection(subscriber, reason="nothing relevant", scored=scored, upto_seq=latest)
        return selection

    # -- rendering and building ---------------------------------------------------------------------

    def view(self, subscriber: Subscriber, items: Sequence[Scored], date: datetime) -> DigestView:
        return DigestView(
            subscriber_name=subscriber.name,
            subscriber_email=subscriber.email,
            items=tuple(_item_view(s) for s in items),
            date=date,
            unsubscribe_url=self._unsubscribe_urls(subscriber.email)[0],
            preferences_note=f"You get this because {subscriber.email} subscribed to this list.",
            list_name=self._list_name,
        )

    def _unsubscribe_urls(self, email: str) -> tuple[str, str | None]:
        """(link shown in the email, https one-click URL or None)."""
        mailto = mailto_url(self._sender_address, email)
        secret, base = self.settings.unsubscribe_secret, self.settings.base_url
        https = one_click_url(base, email, secret) if base and secret else None
        return (https or mailto), https

    def draft(self, selection: Selection, now: datetime) -> OutgoingMessage:
        """The message a run would send for ``selection`` now (same digest id); plans and records nothing."""
        sub = selection.subscriber
        state = self.store.subscriber_state(sub.email)
        digest_id = _digest_id(sub.email, state.watermark_seq if state else None, selection.upto_seq)
        return self._message(sub, selection.chosen, digest_id, now)

    def _message(
        self, subscriber: Subscriber, items: Sequence[Scored], digest_id: str, date: datetime
    ) -> OutgoingMessage:
        rendered = self.renderer.render(self.view(subscriber, items, date))
        envelope = envelope_for(self.settings, subscriber.email, self._unsubscribe_urls(subscriber.email)[1])
        return build_message(
            digest_id=digest_id,
            envelope=envelope,
            to_name=subscriber.name,
            to_addr=subscriber.email,
            rendered=rendered,
            date=date,
        )

    # -- delivering ---------------------------------------------------------------------------------

    def _deliver_new(self, courier: Courier, selection: Selection, now: datetime) -> DigestOutcome:
        sub = selection.subscriber
        if selection.reason:
            if selection.reason == "nothing relevant":
                self.store.advance_watermark(sub.email, selection.upto_seq)
            return DigestOutcome(sub.email, "skipped", selection.reason)
        if courier.stopped:
            return DigestOutcome(sub.email, "skipped", "stopped before its turn; due at the next run")
        if self.settings.max_per_run is not None and courier.sent >= self.settings.max_per_run:
            return DigestOutcome(sub.email, "skipped", "run cap reached; due at the next run")
        chosen = selection.chosen
        state = self.store.subscriber_state(sub.email)
        digest_id = _digest_id(sub.email, state.watermark_seq if state else None, selection.upto_seq)
        try:
            message = self._message(sub, chosen, digest_id, now)
        except (RenderError, SendError) as exc:
            log.error("%s: cannot build digest: %s", sub.email, exc)
            return DigestOutcome(sub.email, "failed", f"error: {exc}", _items(chosen))
        plan = DigestPlan(
            digest_id=digest_id,
            email=sub.email,
            created_at=now,
            watermark_seq=selection.upto_seq,
            subject=message.subject,
            items=tuple(PlannedItem(s.paper.id, i, s.score, s.why) for i, s in enumerate(chosen, start=1)),
        )
        self.store.plan_digest(plan)
        return courier.deliver(message, now, _items(chosen))

    def _retry_pending(
        self, courier: Courier, subscribers: SubscriberList, now: datetime, *, ignore_backoff: bool = False
    ) -> list[DigestOutcome]:
        """Digests planned by an earlier run (crashed, or failed temporarily) go out first."""
        outcomes = []
        for record in self.store.pending_deliveries(None if ignore_backoff else now):
            if courier.stopped:
                break
            outcomes.append(self._retry_one(courier, record, subscribers, now))
        return outcomes

    def _retry_one(
        self, courier: Courier, record: DeliveryRecord, subscribers: SubscriberList, now: datetime
    ) -> DigestOutcome:
        sub = subscribers.find(record.email)
        if sub is None or self.store.is_unsubscribed(record.email):
            why = "unsubscribed" if sub else "no longer in the subscribers file"
            self.store.mark_failed(record.digest_id, now, why, permanent=True)
            return DigestOutcome(record.email, "failed", why, digest_id=record.digest_id)
        items = tuple(Scored(paper, score, why, relevant=True) for paper, _pos, score, why in record.items)
        try:
            message = self._message(sub, items, record.digest_id, record.created_at)
        except (RenderError, SendError) as exc:
            return DigestOutcome(sub.email, "failed", f"error: {exc}", _items(items), record.digest_id)
        return courier.deliver(message, now, _items(items))

    def _dry_outcome(self, selection: Selection, now: datetime) -> DigestOutcome:
        sub = selection.subscriber
        if selection.reason:
            return DigestOutcome(sub.email, "skipped", selection.reason)
        try:
            self._message(sub, selection.chosen, "dry-run", now)
        except NewsletterError as exc:
            return DigestOutcome(sub.email, "failed", f"error: {exc}", _items(selection.chosen))
        return DigestOutcome(sub.email, "dry-run", "dry run: nothing sent", _items(selection.chosen))


def _digest_id(email: str, from_seq: int | None, upto_seq: int) -> str:
    """Same subscriber and same window of dumps: same id, so planning it twice is harmless."""
    key = f"{email.casefold()}|{from_seq}|{upto_seq}".encode()
    return hashlib.sha256(key).hexdigest()[:20]


def _items(scored: Sequence[Scored]) -> tuple[ItemReport, ...]:
    return tuple(ItemReport(s.paper.key, s.paper.title, round(s.score, 4), s.why) for s in scored)


def _item_view(scored: Scored) -> ItemView:
    paper = scored.paper
    title = clean_abstract(paper.title)
    return ItemView(
        title=title,
        url=paper_url(paper.arxiv_id, title),
        excerpt=excerpt(clean_abstract(paper.abstract)),
        why=scored.why,
        rank=paper.best_rank,
        score=scored.score,
        authors=paper.authors,
        arxiv_id=paper.arxiv_id,
        times_seen=paper.times_seen,
    )
