"""Digests as messages: every due subscriber's selection ranked, rendered and built, a chunk at a time.

Building only reads the store: nothing about a digest is written until the pipeline plans a built chunk
(see pipeline.py). This is what the builder process runs ahead of the sending one (see parallel.py), and
what the previews, `newsletter preview --last` and the queued digests use to rebuild a message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from newsletter.address import address_key
from newsletter.deliver import Couriers
from newsletter.deliver.compose import Composer
from newsletter.errors import NewsletterError, RenderError, SendError
from newsletter.models import OutgoingMessage, Scored, Subscriber
from newsletter.rank.base import Ranker
from newsletter.render import DigestView
from newsletter.render.cards import item_reports
from newsletter.report import WAITING, DigestOutcome, ItemReport, Timings
from newsletter.selection.select import Selection, Selector
from newsletter.store import SENT, DeliveryRecord, DigestPlan, PlannedItem, Store

log = logging.getLogger(__name__)

PLAN_BATCH = 256  # digests planned per transaction, at least (more when one round of requests takes more)


@dataclass
class Built:
    """A chunk of selections as messages, before anything about them is written to the store."""

    ready: list[tuple[OutgoingMessage, tuple[ItemReport, ...], DigestPlan]] = field(default_factory=list)
    outcomes: list[DigestOutcome] = field(default_factory=list)  # skipped, or failed while building
    # nothing relevant (or a due send time with nothing new): (watermark, send time served) -> emails
    evaluated: dict[tuple[int, datetime | None], list[str]] = field(default_factory=lambda: defaultdict(list))

    def without_parts(self) -> Built:
        """The same chunk with each message's HTML and text copies left out (the raw bytes hold them)."""
        ready = [(dataclasses.replace(m, html="", text=""), items, plan) for m, items, plan in self.ready]
        return Built(ready, self.outcomes, self.evaluated)


class DigestBuilder:
    """How a pipeline selects and builds its digests; reads the store only.

    ``timings`` gives the pipeline's stage timings as they are when called: a run takes fresh ones for
    each report, and a forked builder process its own, so they are looked up at each use, never kept.
    """

    def __init__(
        self,
        store: Store,
        ranker: Ranker,
        composer: Composer,
        timings: Callable[[], Timings],
        *,
        max_per_run: int | None = None,
    ) -> None:
        self.store = store
        self.ranker = ranker
        self.composer = composer
        self.timings = timings
        self.max_per_run = max_per_run

    def select(
        self, subscribers: Iterable[Subscriber], now: datetime, stopped: Callable[[], bool] = lambda: False
    ) -> Iterator[Selection]:
        """Every subscriber's selection as a run sees it (grouped by window, not in input order)."""
        return Selector(self.store, self.ranker, self.timings()).select(subscribers, now, stopped=stopped)

    def preview(self, subscriber: Subscriber, now: datetime) -> tuple[Selection, DigestView | None]:
        """What the subscriber's digest would hold now, ignoring whether it is due; changes nothing.

        The selection keeps every candidate paper, relevant or not, best first.
        """
        selector = Selector(self.store, self.ranker, self.timings())
        (selection,) = selector.select([subscriber], now, ignore_due=True, every_paper=True)
        if not selection.chosen:
            return selection, None
        return selection, self.view(subscriber, selection.chosen, now)

    def last_sent(self, subscriber: Subscriber) -> tuple[DeliveryRecord, OutgoingMessage] | None:
        """The subscriber's newest digest that was sent, rebuilt from the delivery log (its papers,
        scores, reasons, date and id) with the current templates; None before the first one."""
        sent = self.store.deliveries((SENT,), subscriber.email)
        if not sent:
            return None
        record = sent[-1]  # oldest first
        message = self.message(
            subscriber, record.scored(), record.digest_id, record.created_at, message_id=record.message_id
        )
        return record, message

    # -- rendering and building ---------------------------------------------------------------------

    def view(self, subscriber: Subscriber, items: Sequence[Scored], date: datetime) -> DigestView:
        return self.composer.view(subscriber, items, date)

    def draft(self, selection: Selection, now: datetime) -> OutgoingMessage:
        """The message a run would send for ``selection`` now (same digest id); plans and records nothing."""
        return self.message(selection.subscriber, selection.chosen, self._digest_id(selection), now)

    def _digest_id(self, selection: Selection) -> str:
        """Same subscriber and same window of dumps: same id, so planning it twice is harmless.

        The installation's random value goes in too: another state folder gives other ids, so other
        Message-IDs (and API idempotency keys) for its emails.
        """
        key = f"{self.store.installation_nonce}|{address_key(selection.subscriber.email)}"
        window = f"{key}|{selection.from_seq}|{selection.upto_seq}".encode()
        return hashlib.sha256(window).hexdigest()[:20]

    def message(
        self,
        subscriber: Subscriber,
        items: Sequence[Scored],
        digest_id: str,
        date: datetime,
        *,
        body: bool = True,
        sent_at: datetime | None = None,
        message_id: str | None = None,
    ) -> OutgoingMessage:
        """The digest of ``date`` (its heading); its Date header says ``sent_at`` (default: ``date``), its
        Message-ID ``message_id`` (an earlier try's; default: made from the digest id)."""
        return self.composer.message(
            subscriber,
            items,
            digest_id,
            date,
            self.timings(),
            body=body,
            sent_at=sent_at,
            message_id=message_id,
        )

    # -- a run's digests ----------------------------------------------------------------------------

    def chunks(
        self,
        subscribers: Sequence[Subscriber],
        now: datetime,
        stopped: Callable[[], bool],
        size: int | None = None,
        *,
        body: bool = True,
    ) -> Generator[Built, None, None]:
        """Every due digest as a message, ``size`` (default PLAN_BATCH) at a time; reads the store only.

        Without ``body`` a message's ``raw`` is its header block only (for an API that takes the parts).
        """
        cap = self.max_per_run
        built = 0  # messages built this run: the cap counts digests planned, sent or not
        for chunk in _batched(self.select(subscribers, now, stopped), size or PLAN_BATCH):
            part = Built()
            for sel in chunk:
                if sel.reason == "nothing relevant" or (sel.reason == "nothing new" and sel.serves):
                    part.evaluated[sel.upto_seq, sel.serves].append(sel.subscriber.email)
                reason = sel.reason
                if not reason and cap is not None and built >= cap:  # before the stop: nothing left to do
                    reason = "run cap reached; due at the next run"
                elif not reason and stopped():
                    reason = WAITING
                if reason:
                    part.outcomes.append(DigestOutcome(sel.subscriber.email, "skipped", reason))
                else:
                    built += self._build_into(part, sel, now, body)
            yield part

    def _build_into(self, part: Built, sel: Selection, now: datetime, body: bool) -> bool:
        """Build ``sel``'s message into ``part``: ready, or failed (a template or address error)."""
        sub, digest_id = sel.subscriber, self._digest_id(sel)
        try:
            message = self.message(sub, sel.chosen, digest_id, now, body=body)
        except (RenderError, SendError) as exc:
            log.error("%s: cannot build digest: %s", sub.email, exc)
            part.outcomes.append(
                DigestOutcome(sub.email, "failed", f"error: {exc}", item_reports(sel.chosen), retried=True)
            )
            return False
        part.ready.append((message, item_reports(sel.chosen), _plan(digest_id, sel, message.subject, now)))
        return True

    def dry_outcome(self, selection: Selection, now: datetime) -> DigestOutcome:
        """What a dry run reports for ``selection``: skipped, failed to build, or built and not sent."""
        sub = selection.subscriber
        if selection.reason:
            return DigestOutcome(sub.email, "skipped", selection.reason)
        try:
            self.message(sub, selection.chosen, "dry-run", now)
        except NewsletterError as exc:
            log.error("%s: cannot build digest: %s", sub.email, exc)  # as a real run says it
            return DigestOutcome(
                sub.email, "failed", f"error: {exc}", item_reports(selection.chosen), retried=True
            )
        return DigestOutcome(sub.email, "dry-run", "dry run: nothing sent", item_reports(selection.chosen))


def chunk_size(couriers: Couriers) -> int:
    """Digests planned (and built) at a time: enough that every batch request in flight is full."""
    return max(PLAN_BATCH, couriers.per_round) if couriers.batch_size > 1 else PLAN_BATCH


def _batched(items: Iterable[Selection], size: int) -> Iterator[tuple[Selection, ...]]:
    iterator = iter(items)
    while chunk := tuple(itertools.islice(iterator, size)):
        yield chunk


def _plan(digest_id: str, selection: Selection, subject: str, now: datetime) -> DigestPlan:
    items = tuple(PlannedItem(s.paper.id, i, s.score, s.why) for i, s in enumerate(selection.chosen, start=1))
    email, upto = selection.subscriber.email, selection.upto_seq
    return DigestPlan(digest_id, email, now, upto, subject, items, served_slot=selection.serves)
