"""Hand built messages to a transport, recording each step in the delivery log.

For each message: mark *sending* (committed) -> transport.send -> mark *sent* (committed). A crash between
the two commits leaves the digest in 'sending', which the next run reports as 'unknown' instead of
resending it. Temporary failures are retried within the run with backoff (the digest waits as 'retry', so
a crash during the wait loses nothing and reports nothing unknown), then left as 'retry' for the next run
(a server that did not answer in time is not retried within the run: each try would wait it out again);
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

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta

from newsletter.address import address_key
from newsletter.config import Settings
from newsletter.deliver.breaker import Breaker
from newsletter.deliver.held import hold_sent
from newsletter.errors import ConnectionRefused, SendError, SendStopped
from newsletter.models import OutgoingMessage
from newsletter.redact import redact
from newsletter.report import STOPPED, DigestOutcome, ItemReport, Timings, plural
from newsletter.send.apis.core import HttpApiTransport
from newsletter.send.base import Transport
from newsletter.send.pacing import Gate
from newsletter.store import InvalidTransition, NotQueued, Store

log = logging.getLogger(__name__)
IN_REPORT = {"in_report": True}  # a log line's extra: the run's report says it too, as an error

NEXT_RUN_BACKOFF = timedelta(minutes=5)
MAX_IN_RUN_WAIT = 60.0  # seconds; a server asking for a longer pause (Retry-After) gets it between runs
MAX_NEXT_RUN_BACKOFF = timedelta(days=1)  # however far off a Retry-After date is
GIVE_UP_AFTER = timedelta(days=5)  # a digest refused for now this long after it was planned fails for good
REFUSED_CONNECTION = "its connection was refused; sent over another"  # never in a report: sent again
ROUND_TRIP_SAMPLES = 3  # requests timed before "auto" decides how many connections to open


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
        self.stop = stop or threading.Event()
        self._api = transport if isinstance(transport, HttpApiTransport) else None
        if self._api is not None:
            self._api.join_run(self.gate, self.stop, self._held)
        self.batch_size = self._api.batch_size if self._api is not None else 1
        self._wait = self.stop.wait if sleep is time.sleep else sleep  # a real wait ends at a signal
        self.bytes_sent = 0
        self.timings = timings or Timings()
        self.requests = 0
        self.round_trip: float | None = None  # measured once ROUND_TRIP_SAMPLES requests went out
        self._samples: list[float] = []
        self.halted = False
        self.breaker = breaker or Breaker()
        hold = functools.partial(hold_sent, settings.home)  # sends the database could not record
        self._session = store.delivery_session(session_lock, unrecorded=hold)
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
    def keyed(self) -> bool:
        """Its requests carry idempotency keys: a digest resent under its first request's key is safe."""
        return self._api is not None and self._api.idempotent

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
            return left_queued(message, items)
        try:
            with self.timings("store"):
                self._session.sending(message.digest_id, message.message_id, now)
            self._send_with_retries(message, now)
        except _StoppedBetweenTries:  # refused once, recorded 'retry' due at once: the next run sends it
            return left_queued(message, items)
        except SendError as exc:
            outcome = self._record_failure(message, exc, now, items)
            if outcome.status in ("failed", "unknown") and _the_servers(exc):
                self._tally(False, self._said(exc), [address_key(message.subscriber)])
            return outcome
        except NotQueued:  # unsubscribed (and cancelled) since it was planned, or another run sent it
            return _not_queued(message, items)
        except InvalidTransition as exc:
            log.warning("%s: not sent: %s", message.subscriber, exc)
            return DigestOutcome(message.subscriber, "skipped", str(exc), items, message.digest_id)
        self._session.accepted(message.digest_id, message.message_id, now)
        self._tally(True)
        return self._accepted(message, items)

    def _tally_try(self, message: OutgoingMessage, exc: SendError) -> None:
        """Count a refused try as it happens, among the other connections' accepts: counted only once
        its retries were over, every connection waiting out a backoff at once (one address in 7
        greylisted) ended its count in a row with none accepted between, and stopped the run."""
        if _the_servers(exc):
            self._tally(False, self._said(exc), [address_key(message.subscriber)])

    def _tally(self, accepted: bool, why: str = "", recipients: Iterable[str] = ()) -> None:
        if self.breaker.tally(accepted, why, recipients):
            self.halted = True
            log.error("%s", self.breaker.reason, extra=IN_REPORT)

    def deliver_batch(
        self,
        jobs: Sequence[tuple[OutgoingMessage, tuple[ItemReport, ...]]],
        now: datetime,
        key: str | None = None,
    ) -> list[DigestOutcome]:
        """Send ``jobs`` in one batch request (its transport splits by its byte limit; to an API with
        keys, a request per part here, each under its own key); outcomes in order.

        The request lists the messages by digest id and carries idempotency ``key`` (default: derived
        from the digest ids, for an API that takes one), which each digest keeps: resending the same
        digests under it makes the same request again.
        """
        assert self._api is not None, "batches go to an HTTP API"
        if key is None and self.keyed:
            parts = self._api.requests([m for m, _ in jobs])
            if len(parts) > 1:  # over the byte limit: the digests keep the key of the request they went in
                return self._in_parts(jobs, parts, now)
        key = key or self._api.batch_key(sorted(m.digest_id for m, _ in jobs))
        self._pace(len(jobs))
        if self.stopped:
            return [left_queued(m, items) for m, items in jobs]
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
            (m.subscriber, r)
            for (m, _), r in zip(ready, results, strict=True)
            if m.digest_id in failed and isinstance(r, SendError) and _the_servers(r)
        ]
        if accepted or errors:
            why = self._said(errors[-1][1]) if errors else ""
            self._tally(bool(accepted), why, [address_key(address) for address, _ in errors])
        return [outcomes.get(m.digest_id) or _not_queued(m, items) for m, items in jobs]

    def _in_parts(
        self,
        jobs: Sequence[tuple[OutgoingMessage, tuple[ItemReport, ...]]],
        parts: list[list[int]],
        now: datetime,
    ) -> list[DigestOutcome]:
        """A batch request each, under a key of its own; outcomes in the order of ``jobs``."""
        outcomes: dict[int, DigestOutcome] = {}
        for part in parts:
            outcomes.update(zip(part, self.deliver_batch([jobs[i] for i in part], now), strict=True))
        return [outcomes[index] for index in range(len(jobs))]

    def _measured(self, seconds: float) -> None:
        """The round trip: the fastest of requests 2 to 4 (the first also connects; one can be slowed
        by anything else the machine does)."""
        self.requests += 1
        if 1 < self.requests <= 1 + ROUND_TRIP_SAMPLES:
            self._samples.append(seconds)
        if self.requests == 1 + ROUND_TRIP_SAMPLES:
            self.round_trip = min(self._samples)

    def _accepted(self, message: OutgoingMessage, items: tuple[ItemReport, ...]) -> DigestOutcome:
        self.bytes_sent += message.size
        log.info("sent %s to %s (%s)", message.digest_id, message.subscriber, plural(len(items), "paper"))
        return DigestOutcome(message.subscriber, "sent", "", items, message.digest_id)

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
                    or exc.stalled
                    or attempt == self.retries
                ):
                    raise
                self._tally_try(message, exc)  # the try that trips the breaker ends its digest's tries
                if self.stopped:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else delay
                log.warning("%s: %s; retrying in %.1fs", message.subscriber, self._said(exc), wait)
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
            log.warning("%s: %s", message.subscriber, said)
            return DigestOutcome(message.subscriber, "skipped", said, items, message.digest_id)
        if isinstance(exc, ConnectionRefused) and (self.retired or self._may_retire(self)):
            return self._hand_back(message, exc, now, items)
        if exc.transport_down:  # every other message would fail the same way: stop, keep them queued
            self.halted = True
            if self.breaker.trip(f"cannot send now ({said})"):
                log.error("%s", self.breaker.reason, extra=IN_REPORT)  # the cause, once
        try:
            permanent, said = self._record(message.digest_id, exc, now, said)
        except InvalidTransition as moved:  # another process's recovery took it over meanwhile
            log.warning("%s: %s", message.subscriber, moved)
            return DigestOutcome(message.subscriber, "skipped", str(moved), items, message.digest_id)
        except Exception:
            log.error("%s: %s", message.subscriber, said)  # the send's failure, before the store's
            raise
        outcome = _failed(message, exc, said, permanent, items)
        _log_failure(outcome, said, exc)
        return outcome

    def _hand_back(
        self, message: OutgoingMessage, exc: SendError, now: datetime, items: tuple[ItemReport, ...]
    ) -> DigestOutcome:
        """A connection the server refused while others still send (a limit on connections per client):
        its message is due at once, for a connection that works; the run goes on without this one."""
        try:
            self.store.mark_failed(message.digest_id, now, self._said(exc), permanent=False, retry_at=now)
        except InvalidTransition as moved:  # unsubscribed, or another process's recovery took it over
            return DigestOutcome(message.subscriber, "skipped", str(moved), items, message.digest_id)
        return DigestOutcome(message.subscriber, "skipped", REFUSED_CONNECTION, items, message.digest_id)

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


def _failed(
    message: OutgoingMessage, exc: SendError, said: str, permanent: bool, items: tuple[ItemReport, ...]
) -> DigestOutcome:
    """What a failed send's report says: queued again, unknown, or failed (for good or for now)."""
    if isinstance(exc, SendStopped):  # refused and waiting for its next try: due at once
        return left_queued(message, items)
    if exc.unknown:
        return DigestOutcome(message.subscriber, "unknown", f"error: {said}", items, message.digest_id)
    kind = "permanent" if permanent else "temporary, will retry next run"
    if exc.transport_down:
        kind = "cannot send now; this and the remaining digests go out next run"
    reason = f"error ({kind}): {said}"
    return DigestOutcome(
        message.subscriber,
        "failed",
        reason,
        items,
        message.digest_id,
        retried=not permanent,
        # a bounce, or a reply refusing this message for now; not the server down, erring or stalling
        routine=not exc.transport_down and (exc.mailbox or (exc.refused and not permanent)),
    )


def _log_failure(outcome: DigestOutcome, said: str, exc: SendError) -> None:
    """One line naming the digest and whether it is tried again: a refusal for now (a greylisting 451)
    is a warning, a digest that failed for good, or whose fate is unknown, an error."""
    if isinstance(exc, SendStopped):
        log.info("%s: digest %s: %s; %s", outcome.subscriber, outcome.digest_id, said, outcome.reason)
        return
    if exc.transport_down:  # the breaker's line says why, once (the run's headline error)
        log.info("%s: digest %s not sent; it goes out next run", outcome.subscriber, outcome.digest_id)
        return
    level = logging.WARNING if outcome.retried and not exc.transport_down else logging.ERROR
    log.log(
        level, "%s: digest %s %s: %s", outcome.subscriber, outcome.digest_id, outcome.status, outcome.reason
    )


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


def left_queued(message: OutgoingMessage, items: tuple[ItemReport, ...]) -> DigestOutcome:
    """Planned and not sent (a stop, the transport down): the next run sends it first."""
    return DigestOutcome(message.subscriber, "skipped", STOPPED, items, message.digest_id)


def _not_queued(message: OutgoingMessage, items: tuple[ItemReport, ...]) -> DigestOutcome:
    """Planned, but no longer queued when its batch went out (an unsubscribe cancelled it)."""
    reason = "no longer queued (cancelled, or sent by another run)"  # no id: one reason in the summary
    log.warning("%s: not sent: digest %r is %s", message.subscriber, message.digest_id, reason)
    return DigestOutcome(message.subscriber, "skipped", reason, items, message.digest_id)


def _next_run_backoff(retry_after: float | None, runs: int = 1) -> timedelta:
    """NEXT_RUN_BACKOFF, doubled for each earlier run that was refused too, longer when the server asked
    for it, never more than a day."""
    backoff = NEXT_RUN_BACKOFF * 2 ** min(max(runs - 1, 0), 20)
    asked = timedelta(seconds=retry_after) if retry_after else backoff
    return min(max(asked, backoff), MAX_NEXT_RUN_BACKOFF)


def _the_servers(exc: SendError) -> bool:
    """Whether a failure may be the server's rather than this message's: temporary or unknown ones
    (not those that blame the recipient's mailbox: one full mailbox must not stop the list), and a
    permanent refusal on policy grounds (a relay that wants a login); not a bad address."""
    return exc.policy or (not exc.permanent and not exc.mailbox)
