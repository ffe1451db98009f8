"""Hand built messages to a transport, recording each step in the delivery log.

For each message: mark *sending* (committed) -> transport.send -> mark *sent* (committed). A crash between
the two commits leaves the digest in 'sending', which the next run reports as 'unknown' instead of
resending it. Temporary failures are retried within the run with backoff (the digest waits as 'retry', so
a crash during the wait loses nothing and reports nothing unknown), then left as 'retry' for the next run;
permanent ones are recorded as 'failed' with the server's reply. Pacing (send_rate) happens before a digest
is marked sending, for the same reason.

Batches: to an HTTP API with a batch endpoint (Postmark, Resend) a courier sends ``batch_size`` messages
per request. Every digest of the batch is committed 'sending' in one transaction before the request,
and each gets its own outcome from the reply (sent, failed with the API's reason, or retry); a request
that times out or drops after the body went out leaves the whole batch 'unknown'. An API transport
retries by itself (a 429's Retry-After, a 5xx's backoff); while a refused request waits for its next
try, the courier marks its digests refused (``_held``), so a crash during that wait queues them again.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Literal

from newsletter.address import address_key
from newsletter.config import Settings
from newsletter.errors import ConnectionRefused, SendError, SendStopped
from newsletter.models import OutgoingMessage
from newsletter.redact import redact
from newsletter.report import DigestOutcome, ItemReport, Timings, plural
from newsletter.send.apis.core import HttpApiTransport
from newsletter.send.base import Transport
from newsletter.send.pacing import AUTO_CAP, Gate, auto_connections
from newsletter.store import InvalidTransition, NotQueued, Store

log = logging.getLogger(__name__)

NEXT_RUN_BACKOFF = timedelta(minutes=5)
FAILED_IN_A_ROW = 5  # requests refused or lost one after another: the server's trouble, not each message's
MAX_IN_RUN_WAIT = 60.0  # seconds; a server asking for a longer pause (Retry-After) gets it between runs
MAX_NEXT_RUN_BACKOFF = timedelta(days=1)  # however far off a Retry-After date is
GIVE_UP_AFTER = timedelta(days=5)  # a digest refused for now this long after it was planned fails for good
STOPPED = "stopped; queued for the next run"
REFUSED_CONNECTION = "its connection was refused; sent over another"  # never in a report: sent again
ROUND_TRIP_SAMPLES = 3  # requests timed before "auto" decides how many connections to open


class Breaker:
    """Counts the requests that failed one after another (refused, or lost after the body went), over
    every connection of a run: at FAILED_IN_A_ROW the trouble is the server's (a policy refusing every
    recipient, a full queue, a broken filter), so the run stops and the rest waits, instead of spending
    its backoff on every digest of the list. Any request accepted starts the count again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_a_row = 0
        self.tripped = False
        self.reason = ""  # why, once tripped: for the run report
        self._counted: set[str] = set()  # recipients whose failure counted: one address's queue counts once

    def tally(self, accepted: bool, why: str = "", recipients: Iterable[str] = ()) -> bool:
        """Count one request; True for the one that trips the breaker. A failed request counts only if
        one of its ``recipients`` has not failed in this run yet (an address whose digests queued up,
        all refused, is that address's trouble)."""
        with self._lock:
            new = set(recipients) - self._counted
            self._counted |= new
            if accepted or not recipients or new:
                self.in_a_row = 0 if accepted else self.in_a_row + 1
            if self.in_a_row < FAILED_IN_A_ROW or self.tripped:
                return False
            self._trip(f"{FAILED_IN_A_ROW} requests in a row failed (the last: {why})")
            return True

    def trip(self, reason: str) -> None:
        """Nothing more is sent in this run (the transport is down, or fails every request)."""
        with self._lock:
            self._trip(reason)

    def _trip(self, reason: str) -> None:
        self.reason = self.reason or f"{reason}: the run stops, the rest waits for the next run"
        self.tripped = True


class Courier:
    """Delivers one run's messages over one transport, at most ``send_rate`` per second."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        settings: Settings,
        *,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timings: Timings | None = None,
        session_lock: threading.Lock | None = None,
        gate: Gate | None = None,  # shared by couriers sending side by side: the rate is for all
        retire: Callable[[Courier], bool] | None = None,  # the pool's leave to go on without this one
        breaker: Breaker | None = None,  # shared by couriers sending side by side, as the gate is
    ) -> None:
        self.store = store
        self._may_retire = retire or (lambda courier: False)
        self.retired = False  # refused by the server while others send: its jobs go elsewhere
        self.transport = transport
        self.retries = 0 if transport.retries_itself else settings.retries  # never both loops
        self.backoff = settings.retry_backoff
        self.gate = gate or Gate(settings.send_rate, sleep=sleep)
        self._api = transport if isinstance(transport, HttpApiTransport) else None
        if self._api is not None:
            self._api.gate = self.gate  # a 429 pauses every request of the run
        self.batch_size = self._api.batch_size if self._api is not None else 1
        self.stop = stop or threading.Event()
        if self._api is not None:
            self._api.stop = self.stop  # a SIGTERM ends its wait for a rate limit, not just the next send
            self._api.hold = self._held  # and a crash during that wait leaves the digests queued
        self.sleep = sleep
        self._wait = self.stop.wait if sleep is time.sleep else sleep  # a real wait ends at a signal
        self.sent = 0
        self.bytes_sent = 0
        self.timings = timings or Timings()
        self.requests = 0
        self.round_trip: float | None = None  # measured once ROUND_TRIP_SAMPLES requests went out
        self._samples: list[float] = []
        self.halted = False
        self.breaker = breaker or Breaker()
        self._session = store.delivery_session(session_lock)
        self._secrets = settings.secret_values()

    def _said(self, exc: SendError) -> str:
        """The error as logged and recorded: every secret masked, whatever the transport let through."""
        return redact(str(exc), self._secrets)

    def __enter__(self) -> Courier:
        self._session.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self.timings("store"):
            self._session.__exit__(None, None, None)  # commit the last acceptance, whatever happened

    @property
    def stopped(self) -> bool:
        """Asked to stop (a signal), the transport down, or the server failing every request: the rest
        stays queued for the next run."""
        return self.stop.is_set() or self.halted or self.breaker.tripped

    def deliver(
        self, message: OutgoingMessage, now: datetime, items: tuple[ItemReport, ...]
    ) -> DigestOutcome:
        self._pace()  # before 'sending': a crash while waiting for our turn leaves the digest queued
        if self.stopped:  # a signal during the wait: it stays planned, sent first by the next run
            return DigestOutcome(message.recipient, "skipped", STOPPED, items, message.digest_id)
        try:
            with self.timings("store"):
                self._session.sending(message.digest_id, message.message_id, now)
            self._send_with_retries(message, now)
        except _StoppedBetweenTries:  # refused once, recorded 'retry' due at once: the next run sends it
            return DigestOutcome(message.recipient, "skipped", STOPPED, items, message.digest_id)
        except SendError as exc:
            outcome = self._record_failure(message, exc, now, items)
            if outcome.status in ("failed", "unknown") and _the_servers(exc):
                self._tally(False, self._said(exc), [address_key(message.recipient)])
            return outcome
        except NotQueued:  # unsubscribed (and cancelled) since it was planned, or another run sent it
            return _not_queued(message, items)
        except InvalidTransition as exc:
            log.warning("%s: not sent: %s", message.recipient, exc)
            return DigestOutcome(message.recipient, "skipped", str(exc), items, message.digest_id)
        self._session.accepted(message.digest_id, message.message_id, now)
        self._tally(True)
        return self._accepted(message, items)

    def _tally(self, accepted: bool, why: str = "", recipients: Iterable[str] = ()) -> None:
        if self.breaker.tally(accepted, why, recipients):
            self.halted = True
            log.error("%s", self.breaker.reason)

    def deliver_batch(
        self,
        jobs: Sequence[tuple[OutgoingMessage, tuple[ItemReport, ...]]],
        now: datetime,
        key: str | None = None,
    ) -> list[DigestOutcome]:
        """Send ``jobs`` in one batch request (its transport splits by its byte limit); outcomes in order.

        The request lists the messages by digest id and carries idempotency ``key`` (default: derived
        from the digest ids, for an API that takes one), which each digest keeps: resending the same
        digests under it makes the same request again.
        """
        assert self._api is not None, "batches go to an HTTP API"
        key = key or self._api.batch_key(sorted(m.digest_id for m, _ in jobs))
        self._pace(len(jobs))
        if self.stopped:
            return [DigestOutcome(m.recipient, "skipped", STOPPED, items, m.digest_id) for m, items in jobs]
        pairs = [(m.digest_id, m.message_id) for m, _ in jobs]
        with self.timings("store"):
            moved = set(self._session.sending_many(pairs, now, key))
        ready = sorted(
            ((m, items) for m, items in jobs if m.digest_id in moved), key=lambda j: j[0].digest_id
        )
        started = time.perf_counter()
        with self.timings("send"):
            results = self._api.send_batch([m for m, _ in ready], key) if ready else []
        self._measured(time.perf_counter() - started)
        accepted = [m for (m, _), r in zip(ready, results, strict=True) if not isinstance(r, SendError)]
        with self.timings("store"):
            self._session.sent_many([(m.digest_id, m.message_id) for m in accepted], now)
        ids = {m.digest_id for m in accepted}
        outcomes = {m.digest_id: self._accepted(m, items) for m, items in ready if m.digest_id in ids}
        for (message, items), result in zip(ready, results, strict=True):
            if isinstance(result, SendError):
                outcomes[message.digest_id] = self._record_failure(message, _halting(result), now, items)
        failed = {m.digest_id for m, _ in ready if outcomes[m.digest_id].status in ("failed", "unknown")}
        errors = [
            (m.recipient, r)
            for (m, _), r in zip(ready, results, strict=True)
            if m.digest_id in failed and isinstance(r, SendError) and _the_servers(r)
        ]
        if accepted or errors:
            why = self._said(errors[-1][1]) if errors else ""
            self._tally(bool(accepted), why, [address_key(address) for address, _ in errors])
        return [outcomes.get(m.digest_id) or _not_queued(m, items) for m, items in jobs]

    def _measured(self, seconds: float) -> None:
        """The round trip: the fastest of requests 2 to 4 (the first also connects; one can be slowed
        by anything else the machine does)."""
        self.requests += 1
        if 1 < self.requests <= 1 + ROUND_TRIP_SAMPLES:
            self._samples.append(seconds)
        if self.requests == 1 + ROUND_TRIP_SAMPLES:
            self.round_trip = min(self._samples)

    def _accepted(self, message: OutgoingMessage, items: tuple[ItemReport, ...]) -> DigestOutcome:
        self.sent += 1
        self.bytes_sent += message.size
        log.info("sent %s to %s (%s)", message.digest_id, message.recipient, plural(len(items), "paper"))
        return DigestOutcome(message.recipient, "sent", "", items, message.digest_id)

    def _send_with_retries(self, message: OutgoingMessage, now: datetime) -> None:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            if attempt:
                self._pace()
                if self.stopped:
                    raise _StoppedBetweenTries
                self.store.mark_sending(message.digest_id, now, message.message_id)
            try:
                started = time.perf_counter()
                with self.timings("send"):
                    self.transport.send(message)
                self._measured(time.perf_counter() - started)
                return
            except SendError as exc:
                if exc.retry_after is not None and exc.retry_after > MAX_IN_RUN_WAIT:
                    raise _halting(exc) from exc
                if (
                    exc.transport_down
                    or exc.permanent
                    or exc.unknown
                    or attempt == self.retries
                    or self.stopped
                ):
                    raise
                wait = exc.retry_after if exc.retry_after is not None else delay
                log.warning("%s: %s; retrying in %.1fs", message.recipient, self._said(exc), wait)
                # refused, so not sent: a crash during the wait must leave it queued, not 'unknown'
                self.store.mark_failed(message.digest_id, now, self._said(exc), permanent=False, retry_at=now)
                self._wait(wait)  # a signal ends it, and the pace check above stops the retry
                delay *= 2

    @contextlib.contextmanager
    def _held(self, digest_ids: Sequence[str], why: str) -> Iterator[None]:
        """The API refused a request that waits for its next try (a rate limit): while it waits, its
        digests are marked as not sent, so a crash then queues them again instead of leaving them
        'unknown'. _TakenOver if another process's recovery queued one of them meanwhile (its to send)."""
        self.store.hold_refused(digest_ids, redact(why, self._secrets))
        try:
            yield
        finally:
            held = set(self.store.release_refused(digest_ids))
        taken = [digest_id for digest_id in digest_ids if digest_id not in held]
        if taken:
            raise _TakenOver(taken)

    def flush(self) -> None:
        """Record the last accepted message as 'sent' now, before the courier waits or idles."""
        with self.timings("store"):
            self._session.flush()

    def _pace(self, messages: int = 1) -> None:
        """Wait for this courier's turn under the run's send rate (shared by every courier)."""
        wait = self.gate.reserve(messages)
        if wait > 0:
            self.flush()  # a crash during the wait must not turn a sent message into 'unknown'
            self._wait(wait)

    def _record_failure(
        self, message: OutgoingMessage, exc: SendError, now: datetime, items: tuple[ItemReport, ...]
    ) -> DigestOutcome:
        said = self._said(exc)
        if isinstance(exc, _TakenOver) and message.digest_id in exc.taken:  # another process's to send
            log.warning("%s: %s", message.recipient, said)
            return DigestOutcome(message.recipient, "skipped", said, items, message.digest_id)
        if isinstance(exc, ConnectionRefused) and (self.retired or self._may_retire(self)):
            return self._retire(message, exc, now, items)
        stopped = isinstance(exc, SendStopped)  # refused and waiting for its next try: due at once
        (log.info if stopped else log.error)("%s: %s", message.recipient, said)
        if exc.transport_down:  # every other message would fail the same way: stop, keep them queued
            self.halted = True
            self.breaker.trip(f"cannot send now ({said})")
        try:
            permanent, said = self._record(message.digest_id, exc, now, said)
        except InvalidTransition as moved:  # another process's recovery took it over meanwhile
            log.warning("%s: %s", message.recipient, moved)
            return DigestOutcome(message.recipient, "skipped", str(moved), items, message.digest_id)
        if stopped:
            return DigestOutcome(message.recipient, "skipped", STOPPED, items, message.digest_id)
        if exc.unknown:
            return DigestOutcome(message.recipient, "unknown", f"error: {said}", items, message.digest_id)
        kind = "permanent" if permanent else "temporary, will retry next run"
        if exc.transport_down:
            kind = "cannot send now; this and the remaining digests go out next run"
        return DigestOutcome(message.recipient, "failed", f"error ({kind}): {said}", items, message.digest_id)

    def _retire(
        self, message: OutgoingMessage, exc: SendError, now: datetime, items: tuple[ItemReport, ...]
    ) -> DigestOutcome:
        """A connection the server refused while others still send (a limit on connections per client):
        its message is due at once, for a connection that works; the run goes on without this one."""
        try:
            self.store.mark_failed(message.digest_id, now, self._said(exc), permanent=False, retry_at=now)
        except InvalidTransition as moved:  # unsubscribed, or another process's recovery took it over
            return DigestOutcome(message.recipient, "skipped", str(moved), items, message.digest_id)
        return DigestOutcome(message.recipient, "skipped", REFUSED_CONNECTION, items, message.digest_id)

    def _record(self, digest_id: str, exc: SendError, now: datetime, said: str) -> tuple[bool, str]:
        """Record the failure; whether it is for good now, and what is kept of it (a refusal for now
        that has lasted GIVE_UP_AFTER is given up, as a mail server gives up a queued message)."""
        if exc.unknown:
            self.store.mark_unknown(digest_id, now, said)
            return False, said
        at_once = isinstance(exc, SendStopped) or (exc.transport_down and exc.retry_after is None)
        permanent, retry_at = exc.permanent, now  # not this message's refusal: due with the rest
        if not at_once and not permanent:
            attempts, planned = self.store.tries(digest_id) or (1, now)
            runs = -(-attempts // (self.retries + 1))  # the runs that tried it, this one too
            retry_at = now + _next_run_backoff(exc.retry_after, runs)
            if now - planned >= GIVE_UP_AFTER:
                permanent, said = (
                    True,
                    f"{said} (refused for now since {planned:%Y-%m-%d %H:%M} UTC: given up)",
                )
        bounced = exc.permanent and exc.gone  # no such user, mailbox disabled: not a full one
        self.store.mark_failed(digest_id, now, said, permanent=permanent, retry_at=retry_at, bounced=bounced)
        return permanent, said


def _the_servers(exc: SendError) -> bool:
    """Whether a failure may be the server's rather than this message's: temporary or unknown ones
    (not those that blame the recipient's mailbox: one full mailbox must not stop the list), and a
    permanent refusal on policy grounds (a relay that wants a login); not a bad address."""
    return exc.policy or (not exc.permanent and not exc.mailbox)


class _TakenOver(SendError):
    """Another process's recovery queued some digests of a request that waited after a refusal: they
    are that process's to send now, so this one records nothing for them (the others are retried)."""

    def __init__(self, taken: Sequence[str]) -> None:
        super().__init__(
            f"digest {taken[0]} was queued again by another process while it waited; not sent here"
        )
        self.taken = frozenset(taken)


class _StoppedBetweenTries(Exception):
    """A stop (signal) came while a refused message waited for its next try."""


def _halting(exc: SendError) -> SendError:
    """A pause longer than a run should hold the lock for stops the run; the rest stays queued."""
    if exc.retry_after is None or exc.retry_after <= MAX_IN_RUN_WAIT or exc.transport_down:
        return exc
    return SendError(
        f"{exc} (asked to wait {exc.retry_after:.0f} s; the rest waits for a later run)",
        exc.hint,
        retry_after=exc.retry_after,
        transport_down=True,
    )


def _not_queued(message: OutgoingMessage, items: tuple[ItemReport, ...]) -> DigestOutcome:
    """Planned, but no longer queued when its batch went out (an unsubscribe cancelled it)."""
    reason = "no longer queued (cancelled, or sent by another run)"  # no id: one reason in the summary
    log.warning("%s: not sent: digest %r is %s", message.recipient, message.digest_id, reason)
    return DigestOutcome(message.recipient, "skipped", reason, items, message.digest_id)


def _next_run_backoff(retry_after: float | None, runs: int = 1) -> timedelta:
    """NEXT_RUN_BACKOFF, doubled for each earlier run that was refused too, longer when the server asked
    for it, never more than a day."""
    backoff = NEXT_RUN_BACKOFF * 2 ** min(max(runs - 1, 0), 20)
    asked = timedelta(seconds=retry_after) if retry_after else backoff
    return min(max(asked, backoff), MAX_NEXT_RUN_BACKOFF)


class Couriers:
    """A run's couriers, one per connection (or request in flight); with several, each in its own thread.

    ``count`` is how many; "auto" starts with one and, once it has measured the server's round-trip
    time (the fastest of its requests 2 to 4: the first also opens the connection), opens as many as
    ``auto_connections`` says, up to AUTO_CAP. With one courier, messages go out in order from the
    calling thread; with ``count`` of them up to ``count`` requests are in flight at once, so one's wait
    for the server overlaps the others'. A crash can then leave up to ``count`` requests' digests
    'unknown' (one message each over SMTP, one batch each to an API; never resent by themselves).
    The couriers' delivery sessions share a lock: the database sees one writer at a time, and the order
    of each digest's steps (sending -> transport -> sent) is as with one. They share one Gate: the
    send rate is the run's, and a 429 pauses every request.
    """

    def __init__(
        self,
        store: Store,
        transport_factory: Callable[[], Transport],
        settings: Settings,
        count: int | Literal["auto"] = 1,
        *,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timings: Timings | None = None,
        breaker: Breaker | None = None,  # the run's: a stop in one phase holds for the next
    ) -> None:
        self.stop = stop or threading.Event()
        self.timings = timings or Timings()
        self.auto = count == "auto"
        self.cap = AUTO_CAP if count == "auto" else count
        self.gate = Gate(settings.send_rate, sleep=sleep)
        self.breaker = breaker or Breaker()
        session_lock = threading.Lock() if self.cap > 1 else None

        def courier() -> Courier:
            return Courier(
                store,
                transport_factory(),
                settings,
                stop=self.stop,
                sleep=sleep,
                timings=self.timings if self.cap == 1 else Timings(),  # Timings is not thread-safe
                session_lock=session_lock,
                gate=self.gate,
                retire=self._retire,
                breaker=self.breaker,
            )

        self._new_courier = courier
        self._couriers: list[Courier] = []
        self._idle: queue.SimpleQueue[Courier] = queue.SimpleQueue()
        self._threads: ThreadPoolExecutor | None = None
        self._opened = contextlib.ExitStack()  # the couriers and their transports, closed last
        self._exit = contextlib.ExitStack()
        self._growing = threading.Lock()
        self._sized = False  # "auto" decided how many

    def __enter__(self) -> Couriers:
        with self._exit as stack:
            stack.enter_context(self._opened)
            for _ in range(1 if self.auto else self.cap):
                self._open_one()
            if self.cap > 1:
                self._threads = stack.enter_context(
                    ThreadPoolExecutor(self.cap, thread_name_prefix="newsletter-send")
                )
            self._exit = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._exit.close()  # threads joined first, then each session flushed and transport closed
        finally:
            for courier in self._couriers if self.cap > 1 else ():
                for stage, seconds in courier.timings.totals.items():
                    self.timings.totals[stage] += seconds

    def _retire(self, courier: Courier) -> bool:
        """Whether ``courier``, refused by the server, may leave the run to the others: only while one
        of them is not retired (decided under a lock, so the last one never leaves)."""
        with self._growing:
            if not any(other is not courier and not other.retired for other in self._couriers):
                return False
            courier.retired = True
        log.warning("a connection was refused; going on with %d", self.count - self.retired_count)
        return True

    @property
    def retired_count(self) -> int:
        return sum(courier.retired for courier in self._couriers)

    def _open_one(self) -> None:
        courier = self._new_courier()
        self._opened.enter_context(courier.transport)
        self._opened.enter_context(courier)
        self._couriers.append(courier)
        self._idle.put(courier)

    @property
    def count(self) -> int:
        """Couriers open now."""
        return len(self._couriers)

    @property
    def batch_size(self) -> int:
        """Messages per request (1: one message each, SMTP or an API without batches)."""
        return self._couriers[0].batch_size

    @property
    def per_round(self) -> int:
        """Messages one round of requests carries when every connection this run may open is busy."""
        return self.batch_size * self.cap

    @property
    def reads_body(self) -> bool:
        """False when the transport reads only the header block of ``raw`` (an API taking the parts)."""
        transport = self._couriers[0].transport
        return not isinstance(transport, HttpApiTransport) or transport.reads_body

    @property
    def uses_parts(self) -> bool:
        return self._couriers[0].transport.uses_parts

    @property
    def stopped(self) -> bool:
        """Asked to stop, or a transport is down: what is not sent yet waits for the next run."""
        return self.stop.is_set() or self.breaker.tripped or any(courier.halted for courier in self._couriers)

    @property
    def bytes_sent(self) -> int:
        return sum(courier.bytes_sent for courier in self._couriers)

    def deliver_all(
        self,
        jobs: Sequence[tuple[OutgoingMessage, tuple[ItemReport, ...]]],
        now: datetime,
        into: Callable[[list[DigestOutcome]], None],
    ) -> None:
        """Every job's outcome, handed to ``into`` in the jobs' order as each request's is recorded (a
        database error then loses none that came before it). Planned messages not sent stay queued.

        Requests go out from this thread while one courier is open, then over the pool.
        """
        size = self._couriers[0].batch_size
        units = collections.deque(jobs[i : i + size] for i in range(0, len(jobs), size))
        while units and (self._threads is None or self.count == 1):
            into(self._deliver(self._couriers[0], units.popleft(), now))
        if self._threads is not None:
            _hand_on([self._threads.submit(self._deliver_pooled, unit, now) for unit in units], into)

    def flush(self) -> None:
        for courier in self._couriers:
            courier.flush()

    def _deliver_pooled(
        self, unit: Sequence[tuple[OutgoingMessage, tuple[ItemReport, ...]]], now: datetime
    ) -> list[DigestOutcome]:
        courier = self._idle.get()  # blocks while every open courier is busy
        try:
            outcomes = self._deliver(courier, unit, now)
        finally:
            if not courier.retired:
                self._idle.put(courier)
        again = [job for job, out in zip(unit, outcomes, strict=True) if out.reason == REFUSED_CONNECTION]
        if not again:
            return outcomes
        sent = iter(self._deliver_pooled(again, now))  # over a connection that works
        return [next(sent) if out.reason == REFUSED_CONNECTION else out for out in outcomes]

    def _deliver(
        self,
        courier: Courier,
        unit: Sequence[tuple[OutgoingMessage, tuple[ItemReport, ...]]],
        now: datetime,
    ) -> list[DigestOutcome]:
        if self.stopped:  # planned: the next run sends them first
            return [DigestOutcome(m.recipient, "skipped", STOPPED, items, m.digest_id) for m, items in unit]
        if courier.batch_size > 1:
            outcomes = courier.deliver_batch(unit, now)
        else:
            outcomes = [courier.deliver(message, now, items) for message, items in unit]
        self._grow()
        return outcomes

    def _grow(self) -> None:
        """With "auto": once the first connection measured a round trip, open as many as it calls for."""
        first = self._couriers[0]
        if not self.auto or self._sized or first.round_trip is None:
            return
        with self._growing:
            if self._sized:
                return
            wanted = auto_connections(first.round_trip, first.batch_size, self.gate.rate, self.cap)
            while self.count < wanted:
                self._open_one()
            self._sized = True
        log.info("%d connections (round trip %.0f ms)", wanted, first.round_trip * 1000)


def _hand_on(futures: list[Future[list[DigestOutcome]]], into: Callable[[list[DigestOutcome]], None]) -> None:
    """Each future's outcomes, in order. After an error what has not started is not sent, what has
    is still handed on, then the first error is raised."""
    failure: Exception | None = None
    try:
        for future in futures:
            if future.cancelled():
                continue
            try:
                into(future.result())
            except Exception as exc:  # raised below, once the others are in
                failure = failure or exc
                for each in futures:
                    each.cancel()
    finally:
        for future in futures:
            future.cancel()
    if failure is not None:
        raise failure
