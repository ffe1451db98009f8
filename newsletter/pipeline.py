"""One run: ingest -> diff -> per subscriber rank -> render -> deliver -> report.

State changes follow the delivery log's order, so a crash at any point loses nothing and sends nothing
twice: a digest is *planned* (items recorded, subscriber watermark advanced) in one transaction, marked
*sending* before the transport is called, and *sent* only after the transport accepted it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

from newsletter import progress
from newsletter.address import address_key
from newsletter.config import Settings
from newsletter.deliver import Breaker, Couriers
from newsletter.deliver.building import Built, DigestBuilder, chunk_size
from newsletter.deliver.compose import Composer
from newsletter.deliver.held import record_held
from newsletter.deliver.queued import QueuedDigests
from newsletter.errors import NewsletterError, StoreError
from newsletter.executors.parallel import LOCK_CHECK, LocalProcesses, build_ahead
from newsletter.executors.shards import Executor, Shard, split
from newsletter.intake import ingest_files, ingest_folder
from newsletter.models import OutgoingMessage, Subscriber
from newsletter.rank.base import Ranker
from newsletter.render import DigestView, Renderer
from newsletter.report import WAITING, DigestOutcome, DumpOutcome, RunReport, Timings, plural
from newsletter.selection.forget import forget_old_vectors
from newsletter.selection.select import Selection, Selector
from newsletter.send.base import Transport
from newsletter.store import PENDING, RETRY, UNKNOWN, DeliveryRecord, Store
from newsletter.subscribers import SubscriberList

log = logging.getLogger(__name__)

TransportFactory = Callable[[], Transport]
LOCK_LOST = "another run may have taken it: what this one did not send is that run's or the next one's"
ENTRY_HELD = "its entry in the subscribers file has a problem: its papers wait until it is fixed"
BUILDER_MIN_SUBSCRIBERS = 64  # build_process "auto": below this a second process is not worth forking

__all__ = ["Built", "Pipeline", "Selection"]


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
        executor: Executor | None = None,
        resend_unknown: bool = False,
    ) -> None:
        """``resend_unknown``: the transport replaces a digest's earlier copy when it is sent again (the
        file outbox), so a digest of unknown fate is simply queued again."""
        self.settings = settings
        self.resend_unknown = resend_unknown
        self.executor = executor  # None: this process, or LocalProcesses with settings.workers > 1
        self.store = store
        self.ranker = ranker
        self.renderer = renderer
        self.transport_factory = transport_factory
        self.sleep = sleep
        self.timings = Timings()
        self.breaker = Breaker()  # a run's: the transport down, or failing every request, stops it all
        self.lock_held: Callable[[], bool] = lambda: (
            True
        )  # the run lock (set by app.open_pipeline, or the daemon)
        self.composer = Composer(settings, renderer)

    # -- ingest -------------------------------------------------------------------------------------

    def ingest(self, paths: Iterable[Path], now: datetime) -> list[DumpOutcome]:
        """Ingest each file in its own transaction; a malformed file is reported and skipped."""
        return ingest_files(self.store, paths, now)

    def ingest_folder(self, now: datetime, *, record: bool = True) -> list[DumpOutcome]:
        """The dumps folder; a file refused by an earlier run is skipped quietly (see intake.py)."""
        return ingest_folder(self.store, self.settings.dumps, now, record=record)

    # -- a whole run --------------------------------------------------------------------------------

    def run(
        self,
        subscribers: SubscriberList,
        now: datetime,
        *,
        dry_run: bool = False,
        stop: threading.Event | None = None,
        detailed: bool = True,
    ) -> RunReport:
        """Ingest, then deliver what earlier runs left queued, then every due digest.

        ``stop`` (set by a signal handler) ends the run after the message in flight; subscribers not
        reached yet are due at the next run. Without ``detailed`` the report keeps counts and problems
        only, so memory stays flat however many subscribers there are. With an executor, or
        ``settings.workers`` > 1, the new digests are split into ``settings.workers`` shards and handed
        to it (local processes by default; each shard builds, plans and sends with its own connections).
        """
        started = time.perf_counter()
        report = RunReport(detailed=detailed)
        self.timings, self.breaker = Timings(), Breaker()
        self.take_held_clicks()
        if not dry_run:
            report.recovered_unknown = self.recover(now)
        with self.timings("ingest"):
            report.dumps = self.ingest_folder(now, record=not dry_run)  # the real run reports a bad file
        report.ingested = True
        try:
            report.latest_dump = self.store.latest_dump_seq()
        except NewsletterError:  # the database gone: the run reports that below; keep the last mark
            log.debug("could not read the latest dump", exc_info=True)
        if dry_run:
            self._dry_run(report, subscribers, now)
        else:
            pending = self.deliver_pending(subscribers, now, stop=stop)
            report.merge(pending)
            report.extend(_held(subscribers, pending.digests))
            if not pending.halted:
                report.merge(self._deliver_due(subscribers.subscribers, now, stop, detailed, pending))
            moved = any(d.new for d in report.dumps) or report.statuses["sent"]  # what runs read moved
            if moved and not (stop and stop.is_set()) and not report.halted:
                self._forget(subscribers.subscribers, stop, now)
        report.errors += [self.breaker.reason] if self.breaker.reason else []
        report.merge_timings(self.timings.totals)  # the run's own stages: ingest, forget, handing out shards
        report.timings["total"] = time.perf_counter() - started
        return report

    def _dry_run(self, report: RunReport, subscribers: SubscriberList, now: datetime) -> None:
        """The digests earlier runs left queued, then the new ones, as a run would send them (a
        subscriber with a queued digest gets no 'skipped'), built and not sent."""
        report.extend(queued := self._queued().dry_run(subscribers, now, rewrite=self.resend_unknown))
        report.extend(_held(subscribers, queued))
        earlier = {address_key(d.subscriber) for d in queued}
        builder = self.digest_builder()
        for sel in builder.select(subscribers.subscribers, now):
            if not (sel.reason and address_key(sel.subscriber.email) in earlier):
                report.add(builder.dry_outcome(sel, now))

    def _deliver_due(
        self,
        subscribers: Sequence[Subscriber],
        now: datetime,
        stop: threading.Event | None,
        detailed: bool,
        pending: RunReport,
    ) -> RunReport:
        """The new digests, after the queued ones (``pending``: their subscribers get no 'skipped')."""
        done = frozenset(address_key(d.subscriber) for d in pending.digests)
        if self.executor is None and self.settings.workers == 1:
            return self.deliver_new(subscribers, now, stop=stop, detailed=detailed, delivered_earlier=done)
        report = RunReport(detailed=detailed, delivered_earlier=done)
        with report.halts_on_store_errors():  # the coordinator's own queries, or the job queue's
            report.merge(self._run_shards(subscribers, now, stop, detailed, done))
        return report

    def retry(
        self,
        subscribers: SubscriberList,
        now: datetime,
        statuses: Sequence[str],
        *,
        only: Collection[str] | None = None,
        stop: threading.Event | None = None,
    ) -> tuple[list[str], RunReport]:
        """`newsletter retry`: queue the deliveries in ``statuses`` again (``only``: these address keys'),
        then send every queued digest, backoff or not; the digests requeued, and the report."""
        self.take_held_clicks()
        self.recover(now)
        ids = (
            None if only is None else [d.digest_id for e in only for d in self.store.deliveries(statuses, e)]
        )
        requeued = self.store.requeue(now, statuses=statuses, digest_ids=ids)
        report = self.deliver_pending(subscribers, now, ignore_backoff=True, stop=stop, only=only)
        report.errors += [self.breaker.reason] if self.breaker.reason else []
        return requeued, report

    def take_held_clicks(self, *, wait: bool = True) -> None:
        """Record the unsubscribes and feedback `serve` held while the database could not take them,
        and the sends it could not record (see held.py), before anything is selected or sent."""
        record_held(self.settings.home, self.store, wait=wait)

    def recover(self, now: datetime) -> list[str]:
        """What a crashed run left 'sending' becomes 'unknown' (returned), or is queued again when it was
        not sent (refused, waiting) or when sending it again replaces it (``resend_unknown``; only what
        was 'sending': an 'unknown' of an earlier SMTP or API run may have arrived)."""
        working = self.store.emails_in_flight() if self.store.shared else set()
        if working:
            log.warning(
                "workers are still delivering to %s (a coordinator stopped before them): what they have "
                "in flight is theirs, and not called interrupted",
                plural(len(working), "subscriber"),
            )
        unknown = self.store.recover_interrupted(now, spare=working)
        if unknown and self.resend_unknown:  # not those an SMTP or API run left unknown
            again = set(self.store.requeue(now, statuses=(UNKNOWN,), digest_ids=unknown))
            if again:
                what = plural(len(again), "digest")
                log.warning("%s a crash interrupted: written again (the outbox replaces its files)", what)
            unknown = [digest_id for digest_id in unknown if digest_id not in again]
        if unknown:
            log.warning(
                "%d deliveries were interrupted by a crash and are now 'unknown' (they may have arrived; "
                "`newsletter retry --unknown` sends them again)",
                len(unknown),
            )
        return unknown

    def _forget(self, subscribers: Sequence[Subscriber], stop: threading.Event | None, now: datetime) -> None:
        """Forget the vectors no run reads again (after a run that brought new papers or sent digests:
        an idle tick moves nothing); a failure waits for the next such run, the digests are sent."""
        try:
            with self.timings("forget"):
                forget_old_vectors(self.store, self.ranker, subscribers, stop, now)
        except NewsletterError as exc:
            log.warning("old vectors are kept until the next run: %s", exc)

    def deliver_new(
        self,
        subscribers: Sequence[Subscriber],
        now: datetime,
        *,
        stop: threading.Event | None = None,
        detailed: bool = True,
        inline: bool = False,
        delivered_earlier: frozenset[str] = frozenset(),
    ) -> RunReport:
        """Select, build, plan and send every due digest of ``subscribers``.

        Building (rank, render, MIME) and sending (plan, transport, delivery log) overlap when a
        builder process is used (``settings.build_process``; never with ``inline``): the builder
        only reads the store, so this process stays the only writer and a crash still leaves at
        most one 'unknown' delivery. Subscribers in ``delivered_earlier`` get no 'skipped' entry.
        """
        report = RunReport(detailed=detailed, delivered_earlier=delivered_earlier)
        with self._own_timings() as timings, report.halts_on_store_errors():
            self._deliver_new(report, timings, subscribers, now, stop, inline)
        report.timings = dict(timings.totals)
        return report

    @contextlib.contextmanager
    def _own_timings(self) -> Iterator[Timings]:
        """A fresh Timings as ``self.timings`` for a while (the stages of one report), then the one before."""
        outer, self.timings = self.timings, Timings()
        try:
            yield self.timings
        finally:
            self.timings = outer

    def _deliver_new(
        self,
        report: RunReport,
        timings: Timings,
        subscribers: Sequence[Subscriber],
        now: datetime,
        stop: threading.Event | None,
        inline: bool,
    ) -> None:
        builder = not inline and self._wants_builder(subscribers)
        connections = self.settings.connections
        with Couriers(
            self.store,
            self.transport_factory,
            self.settings,
            connections,
            stop=stop,
            sleep=self.sleep,
            timings=timings,
            breaker=self.breaker,
        ) as couriers:

            def stopped() -> bool:
                return couriers.stopped

            size, body = chunk_size(couriers), couriers.reads_body

            def build(stopped: Callable[[], bool]) -> Generator[Built, None, None]:
                return self.digest_builder().chunks(subscribers, now, stopped, size, body=body)

            if builder:
                strip = None if couriers.uses_parts else Built.without_parts
                chunks = build_ahead(self, build, stopped, strip=strip)
            else:
                chunks = build(stopped)
            with (
                contextlib.closing(chunks),  # on an error too: the builder is stopped and reaped
                progress.step("Ranking and sending digests", len(subscribers)) as advance,
            ):

                def take(outcomes: list[DigestOutcome]) -> None:  # one per subscriber
                    report.extend(outcomes)
                    advance(len(outcomes))

                for built in chunks:
                    self._send_chunk(couriers, built, now, take)
        report.bytes_sent = couriers.bytes_sent

    def _run_shards(
        self,
        subscribers: Sequence[Subscriber],
        now: datetime,
        stop: threading.Event | None,
        detailed: bool,
        delivered_earlier: frozenset[str] = frozenset(),
    ) -> RunReport:
        work, idle = Selector(self.store, self.ranker, self.timings).triage(subscribers, now)
        report = RunReport(detailed=detailed, delivered_earlier=delivered_earlier)
        report.extend(DigestOutcome(sel.subscriber.email, "skipped", sel.reason) for sel in idle)
        served: dict[tuple[int, datetime], list[str]] = defaultdict(list)  # as _send_chunk records them
        for sel in idle:
            if sel.reason == "nothing new" and sel.serves is not None:
                served[sel.upto_seq, sel.serves].append(sel.subscriber.email)
        for (seq, at), emails in served.items():
            self.store.advance_watermarks(emails, seq, at)
        if not work:  # nothing due anywhere: no shard handed out, no process started
            return report
        executor = self.executor or LocalProcesses()
        cap, rate = self.settings.max_per_run, self.settings.send_rate
        count = min(self.settings.workers, len(work), cap or len(work))  # no shard with nothing to do
        shards = split(work, count, now, max_per_run=cap, send_rate=rate, detailed=detailed)
        done = delivered_earlier  # subscribers this run already reported: no 'skipped' entry from a shard
        report.merge(
            executor.run([dataclasses.replace(s, delivered_earlier=done) for s in shards], self, stop)
        )
        return report

    def deliver_shard(self, shard: Shard, stop: threading.Event | None = None) -> RunReport:
        """One shard's new digests, with its share of the run-wide limits (the executors call this).

        A shard run again (``shard.attempt``: its worker stopped, or the engine delivered the job twice)
        first sends what an earlier attempt planned and did not send, and counts every digest an
        earlier attempt planned against its cap.
        """
        record_held(self.settings.home, self.store, wait=False)  # this worker's sends its database missed
        earlier = (
            self.store.planned_at(shard.now, [s.email for s in shard.subscribers]) if shard.attempt else []
        )
        cap = None if shard.max_per_run is None else max(0, shard.max_per_run - len(earlier))
        part = copy.copy(self)  # same store, ranker and renderer; the shard's own limits and timings
        part.settings = self.settings.model_copy(update={"max_per_run": cap, "send_rate": shard.send_rate})
        part.breaker = Breaker()  # a worker takes shard after shard: each counts its own failures
        part.breaker.tripped = self.breaker.tripped  # but not past a stop this run's queued digests met
        queued = [r for r in earlier if r.status == PENDING or _due_retry(r, shard.now)]
        report = part.send_planned(queued, SubscriberList(Path(), shard.subscribers), shard.now, stop)
        done = shard.delivered_earlier | {address_key(r.email) for r in queued}
        new = part.deliver_new(
            shard.subscribers,
            shard.now,
            stop=stop,
            detailed=shard.detailed,
            inline=True,
            delivered_earlier=done,
        )
        report.merge(new)
        report.errors += [part.breaker.reason] if part.breaker.reason else []
        return report

    def after_fork(self) -> None:
        """In a forked child: forget the parent's pooled connections (the ranker's cache uses them too).
        The run lock is the parent's, on a connection of its own: a child does not check it (three children
        talking over that one connection at once hung)."""
        self.store.dispose_after_fork()
        self.lock_held = lambda: True

    def holds_lock(self) -> bool:
        return self.lock_held()

    def close(self) -> None:
        self.store.close()

    def _wants_builder(self, subscribers: Sequence[Subscriber]) -> bool:
        choice = self.settings.build_process
        if choice == "auto":
            return (os.cpu_count() or 1) > 1 and len(subscribers) >= BUILDER_MIN_SUBSCRIBERS
        return choice == "on"

    def deliver_pending(
        self,
        subscribers: SubscriberList,
        now: datetime,
        *,
        ignore_backoff: bool = False,
        stop: threading.Event | None = None,
        only: Collection[str] | None = None,
    ) -> RunReport:
        """Deliver what earlier runs left queued (crashed, or failed temporarily); no new digests. With
        ``only`` (address keys), only those subscribers' (`newsletter retry EMAIL`)."""
        report = RunReport()
        with report.halts_on_store_errors():
            self._check_lock()
            self._queued().deliver_pending(report, subscribers, now, ignore_backoff, stop, only)
        return report

    def send_planned(
        self,
        records: list[DeliveryRecord],
        subscribers: SubscriberList,
        now: datetime,
        stop: threading.Event | None = None,
    ) -> RunReport:
        """Queued digests rebuilt as first planned and sent as new ones are (see queued.py)."""
        return self._queued().send_planned(records, subscribers, now, stop)

    def _queued(self) -> QueuedDigests:
        """The queue as this run sends it: its breaker, and messages built with its timings."""
        build = self.digest_builder().message
        look = _now_and_then(self._check_lock, LOCK_CHECK)  # a look at the lock is a query: every 2 s
        return QueuedDigests(
            self.store, self.settings, self.transport_factory, build, self.breaker, self.sleep, look
        )

    def _check_lock(self) -> None:
        """StoreError once the run lock is lost (another run may be planning and sending now)."""
        if not self.lock_held():
            raise StoreError("this run lost the database's run lock (its connection ended)", hint=LOCK_LOST)

    # -- selecting and building (see building.py) ---------------------------------------------------

    def digest_builder(self) -> DigestBuilder:
        """How this pipeline builds its digests: its store, ranker, templates and run cap, and whatever
        stage timings it holds when a message is built (``run`` and ``deliver_new`` take fresh ones)."""
        cap = self.settings.max_per_run
        return DigestBuilder(self.store, self.ranker, self.composer, lambda: self.timings, max_per_run=cap)

    def select(self, subscribers: Iterable[Subscriber], now: datetime) -> Iterator[Selection]:
        """Every subscriber's selection as a run sees it (grouped by window, not in input order)."""
        return self.digest_builder().select(subscribers, now)

    def preview(self, subscriber: Subscriber, now: datetime) -> tuple[Selection, DigestView | None]:
        """What the subscriber's digest would hold now, ignoring whether it is due; changes nothing."""
        return self.digest_builder().preview(subscriber, now)

    def last_sent(self, subscriber: Subscriber) -> tuple[DeliveryRecord, OutgoingMessage] | None:
        """The subscriber's newest digest that was sent, rebuilt from the delivery log; None before one."""
        return self.digest_builder().last_sent(subscriber)

    # -- delivering ---------------------------------------------------------------------------------

    def _send_chunk(
        self, couriers: Couriers, built: Built, now: datetime, into: Callable[[list[DigestOutcome]], None]
    ) -> None:
        """Plan a built chunk (each window's watermarks, then the plans: a transaction each), then send
        its messages; outcomes go to ``into``."""
        self._check_lock()
        with self.timings("store"):  # what `serve` held meanwhile (this run's writes may have kept it out)
            record_held(self.settings.home, self.store, wait=False)
        outcomes, ready = list(built.outcomes), built.ready
        if couriers.stopped:  # not planned: due at the next run, built again then
            outcomes += [DigestOutcome(message.subscriber, "skipped", WAITING) for message, _, _ in ready]
            ready = []
        with self.timings("store"):
            for (seq, served), emails in built.evaluated.items():
                self.store.advance_watermarks(emails, seq, served)
            self.store.plan_digests([plan for _, _, plan in ready])
        into(outcomes)
        couriers.deliver_all([(message, items) for message, items, _ in ready], now, into)
        couriers.flush()  # every acceptance recorded before the next chunk is planned


def _held(subscribers: SubscriberList, told: Iterable[DigestOutcome]) -> list[DigestOutcome]:
    """A 'skipped' for each subscriber whose entry has a problem, but those a queued digest spoke for:
    nothing is built for them, so the papers since their last digest wait for the entry's fix."""
    said = {address_key(d.subscriber) for d in told}
    return [DigestOutcome(key, "skipped", ENTRY_HELD) for key in subscribers.held if key not in said]


def _now_and_then(check: Callable[[], None], every: float) -> Callable[[], None]:
    """``check``, done at the first call and then at most once every ``every`` seconds."""
    next_look = 0.0

    def look() -> None:
        nonlocal next_look
        if time.monotonic() >= next_look:
            next_look = time.monotonic() + every
            check()

    return look


def _due_retry(record: DeliveryRecord, now: datetime) -> bool:
    """A digest refused once and due again now (its retry was cut short by a stop)."""
    return record.status == RETRY and record.not_before is not None and record.not_before <= now
