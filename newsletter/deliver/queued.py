"""Digests earlier runs left queued (a crash, a temporary refusal, a stop), rebuilt as first planned
and sent again: one by one over one connection, or in batches to an API under their first request's
idempotency key; a digest whose subscriber left the file waits for them (GIVE_UP_AFTER at most)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from newsletter import progress
from newsletter.address import address_key
from newsletter.config import Settings
from newsletter.deliver import GIVE_UP_AFTER, STOPPED, Breaker, Courier, Couriers
from newsletter.errors import RenderError, SendError
from newsletter.models import OutgoingMessage, Subscriber
from newsletter.render.cards import item_reports
from newsletter.report import QUEUED, DigestOutcome, ItemReport, RunReport
from newsletter.send.base import Transport
from newsletter.store import SENDING, DeliveryRecord, Store
from newsletter.subscribers import SubscriberList

KEPT_FOR_THEM = "not in the subscribers file: kept queued until they are back"
KEPT_FOR_FIX = "its entry in the subscribers file has a problem: kept queued until it is fixed"

# DigestBuilder.message: (subscriber, items, digest id, date, *, sent_at, message_id) -> the message
BuildMessage = Callable[..., OutgoingMessage]


@dataclass
class QueuedDigests:
    """One run's view of the queue: its store, transport, pace and breaker, and how it builds a message."""

    store: Store
    settings: Settings
    transport_factory: Callable[[], Transport]
    message: BuildMessage
    breaker: Breaker = field(default_factory=Breaker)
    sleep: Callable[[float], None] = time.sleep
    check_lock: Callable[[], None] = lambda: None  # raises StoreError once the run lock is lost

    def send_planned(
        self,
        records: list[DeliveryRecord],
        subscribers: SubscriberList,
        now: datetime,
        stop: threading.Event | None = None,
    ) -> RunReport:
        """Queued digests rebuilt as first planned and sent as new ones are: in batches, over this run's
        connections (an earlier attempt of a shard planned them, then stopped)."""
        report = RunReport()
        jobs = [self._rebuild(record, subscribers, now) for record in records]
        report.extend(job for job in jobs if isinstance(job, DigestOutcome))
        ready = [job for job in jobs if not isinstance(job, DigestOutcome)]
        if not ready:
            return report
        with Couriers(
            self.store,
            self.transport_factory,
            self.settings,
            self.settings.connections,
            stop=stop,
            sleep=self.sleep,
            breaker=self.breaker,
        ) as couriers:
            couriers.deliver_all(ready, now, report.extend)
            couriers.flush()
        report.bytes_sent = couriers.bytes_sent
        return report

    def deliver_pending(
        self,
        report: RunReport,
        subscribers: SubscriberList,
        now: datetime,
        ignore_backoff: bool,
        stop: threading.Event | None,
        only: Collection[str] | None = None,
    ) -> None:
        pending = self.store.pending_deliveries(None if ignore_backoff else now)
        pending = [r for r in pending if only is None or address_key(r.email) in only]
        if not pending:
            return
        with (
            self.transport_factory() as transport,
            Courier(
                self.store, transport, self.settings, stop=stop, sleep=self.sleep, breaker=self.breaker
            ) as courier,
        ):
            batches: dict[str | None, list[DeliveryRecord]] = defaultdict(list)
            with progress.step("Sending queued digests", len(pending)) as advance:
                for index, record in enumerate(pending):
                    if courier.stopped:
                        report.extend(_left_queued(pending[index:]))
                        break
                    self.check_lock()  # another run may be sending from this queue once it is lost
                    advance(1)
                    if _in_batch(record, courier):
                        batches[record.batch_key].append(record)  # that batch under its key, or new ones
                        continue
                    report.add(self._retry_one(courier, record, subscribers, now))
            for key, records in batches.items():
                size = len(records) if key else courier.batch_size
                for start in range(0, len(records), size):
                    part = records[start : start + size]
                    if courier.stopped:
                        report.extend(_left_queued(part))
                    else:
                        self.check_lock()
                        report.extend(self._retry_batch(courier, part, key, subscribers, now))
            report.bytes_sent = courier.bytes_sent

    def dry_run(self, subscribers: SubscriberList, now: datetime, rewrite: bool) -> list[DigestOutcome]:
        """What a run would send first, built and not sent, changing nothing: what a crash left in
        flight (``rewrite``: the transport writes it again, as the file outbox does; else the run finds
        out first), then the queued digests due at ``now``."""
        working = self.store.emails_in_flight() if self.store.shared else set()  # a live worker's
        crashed = self.store.deliveries((SENDING,))
        crashed = [r for r in crashed if address_key(r.email) not in working]
        outcomes = [self._dry(r, subscribers, now) if rewrite else _crashed(r) for r in crashed]
        return outcomes + [
            self._dry(record, subscribers, now) for record in self.store.pending_deliveries(now)
        ]

    def _dry(self, record: DeliveryRecord, subscribers: SubscriberList, now: datetime) -> DigestOutcome:
        sub = subscribers.find(record.email)
        if sub is None:
            why = KEPT_FOR_FIX if subscribers.holds(record.email) else _absent_reason(record, now)
            return DigestOutcome(record.email, "skipped", why, digest_id=record.digest_id)
        if self.store.is_unsubscribed(record.email):
            return DigestOutcome(record.email, "skipped", "unsubscribed: the next run cancels it")
        job = self._built(sub, record, now)
        return job if isinstance(job, DigestOutcome) else DigestOutcome(sub.email, "dry-run", QUEUED, job[1])

    def _retry_one(
        self, courier: Courier, record: DeliveryRecord, subscribers: SubscriberList, now: datetime
    ) -> DigestOutcome:
        job = self._rebuild(record, subscribers, now)
        return job if isinstance(job, DigestOutcome) else courier.deliver(job[0], now, job[1])

    def _retry_batch(
        self,
        courier: Courier,
        records: list[DeliveryRecord],
        key: str | None,
        subscribers: SubscriberList,
        now: datetime,
    ) -> list[DigestOutcome]:
        """Resend digests in one batch request: those of an earlier one under its idempotency key, or
        digests that had none (an API without keys, or sent one by one before) as a new batch."""
        jobs = [self._rebuild(record, subscribers, now) for record in records]
        outcomes = [job for job in jobs if isinstance(job, DigestOutcome)]
        ready = [job for job in jobs if not isinstance(job, DigestOutcome)]
        return outcomes + (courier.deliver_batch(ready, now, key) if ready else [])

    def _rebuild(
        self, record: DeliveryRecord, subscribers: SubscriberList, now: datetime
    ) -> tuple[OutgoingMessage, tuple[ItemReport, ...]] | DigestOutcome:
        """A queued digest's message as first built, or its outcome when it cannot be sent any more."""
        sub = subscribers.find(record.email)
        if sub is None and subscribers.holds(record.email):  # no clock: the entry is there, to be fixed
            return DigestOutcome(record.email, "skipped", KEPT_FOR_FIX, digest_id=record.digest_id)
        if sub is None:  # a paused or half-written file must not lose the digest: it waits for them
            return self._absent(record, now)
        if self.store.is_unsubscribed(record.email):
            self.store.mark_failed(record.digest_id, now, "unsubscribed", permanent=True)
            return DigestOutcome(record.email, "failed", "unsubscribed", digest_id=record.digest_id)
        return self._built(sub, record, now)

    def _built(
        self, sub: Subscriber, record: DeliveryRecord, now: datetime
    ) -> tuple[OutgoingMessage, tuple[ItemReport, ...]] | DigestOutcome:
        """Its message as first built; a template or address error leaves it queued for the next run."""
        items = record.scored()
        try:
            message = self.message(
                sub, items, record.digest_id, record.created_at, sent_at=now, message_id=record.message_id
            )
        except (RenderError, SendError) as exc:
            return DigestOutcome(
                sub.email, "failed", f"error: {exc}", item_reports(items), record.digest_id, retried=True
            )
        return message, item_reports(items)

    def _absent(self, record: DeliveryRecord, now: datetime) -> DigestOutcome:
        """A queued digest whose subscriber is not in the file: kept for them, until GIVE_UP_AFTER
        from when it was planned (renamed or removed for good: it would be logged at every run)."""
        why = _absent_reason(record, now)
        if why != KEPT_FOR_THEM:
            self.store.mark_failed(record.digest_id, now, why, permanent=True)
        return DigestOutcome(record.email, "skipped", why, digest_id=record.digest_id)


def _absent_reason(record: DeliveryRecord, now: datetime) -> str:
    if now - record.created_at < GIVE_UP_AFTER:
        return KEPT_FOR_THEM
    return f"not in the subscribers file since it was planned ({record.created_at:%Y-%m-%d}): given up"


def _crashed(record: DeliveryRecord) -> DigestOutcome:
    """A dry run's word for a send a crash interrupted, on a transport that cannot tell whether it went."""
    why = "a crash interrupted its sending; the next run reports it unknown (or sends it if it was refused)"
    return DigestOutcome(record.email, "skipped", why, digest_id=record.digest_id)


def _in_batch(record: DeliveryRecord, courier: Courier) -> bool:
    """Whether a queued digest goes out in a batch request: the one it last went out in, under its key
    (whatever NEWSLETTER_BATCH_SIZE is now: alone under its own key, a digest that request delivered
    would arrive twice), or a new one."""
    if record.batch_key and courier.keyed:
        return True
    return courier.batch_size > 1 and (record.batch_key is not None or _new_batch_ok(record, courier))


def _new_batch_ok(record: DeliveryRecord, courier: Courier) -> bool:
    """Whether a digest with no batch key may go out in a new batch: always to an API without keys; to
    one with keys only if no request ever carried it (one that went out alone is resent under its own
    key, and a refused batch's key must not be derived again from the same digests)."""
    return not courier.keyed or record.attempts == 0


def _left_queued(records: Iterable[DeliveryRecord]) -> list[DigestOutcome]:
    return [DigestOutcome(r.email, "skipped", STOPPED, digest_id=r.digest_id) for r in records]
