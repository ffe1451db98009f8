"""Hand built messages to a transport, recording each step in the delivery log.

For each message: mark *sending* (committed) -> transport.send -> mark *sent* (committed). A crash between
the two commits leaves the digest in 'sending', which the next run reports as 'unknown' instead of
resending it. Temporary failures are retried within the run with backoff (the digest waits as 'retry', so
a crash during the wait loses nothing and reports nothing unknown), then left as 'retry' for the next run;
permanent ones are recorded as 'failed' with the server's reply. Pacing (send_rate) happens before a digest
is marked sending, for the same reason.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from newsletter.config import Settings
from newsletter.errors import SendError
from newsletter.models import OutgoingMessage
from newsletter.redact import redact
from newsletter.report import DigestOutcome, ItemReport, Timings, plural
from newsletter.send.base import Transport
from newsletter.store import InvalidTransition, Store

log = logging.getLogger(__name__)

NEXT_RUN_BACKOFF = timedelta(minutes=5)
MAX_IN_RUN_WAIT = 60.0  # seconds; a server asking for a longer pause (Retry-After) gets it between runs
MAX_NEXT_RUN_BACKOFF = timedelta(days=1)  # however far off a Retry-After date is


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
        share: int = 1,  # couriers sending side by side
    ) -> None:
        self.store = store
        self.transport = transport
        self.retries = 0 if transport.retries_itself else settings.retries  # never both loops
        self.backoff = settings.retry_backoff
        self.interval = share / settings.send_rate if settings.send_rate else 0.0  # send_rate is for all
        self.stop = stop or threading.Event()
        self.sleep = sleep
        self.sent = 0
        self.bytes_sent = 0
        self.timings = timings or Timings()
        self._last_send = float("-inf")
        self.halted = False
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
        """Asked to stop (a signal), or the transport is down: the rest stays queued for the next run."""
        return self.stop.is_set() or self.halted

    def deliver(
        self, message: OutgoingMessage, now: datetime, items: tuple[ItemReport, ...]
    ) -> DigestOutcome:
        self._pace()  # before 'sending': a crash while waiting for our turn leaves the digest queued
        try:
            with self.timings("store"):
                self._session.sending(message.digest_id, message.message_id, now)
            self._send_with_retries(message, now)
        except SendError as exc:
            return self._record_failure(message, exc, now, items)
        except InvalidTransition as exc:  # e.g. unsubscribed (and cancelled) since it was planned
            log.warning("%s: not sent: %s", message.recipient, exc)
            return DigestOutcome(message.recipient, "skipped", str(exc), items, message.digest_id)
        self._session.accepted(message.digest_id, message.message_id, now)
        self.sent += 1
        self.bytes_sent += len(message.raw)
        log.info("sent %s to %s (%s)", message.digest_id, message.recipient, plural(len(items), "paper"))
        return DigestOutcome(message.recipient, "sent", "", items, message.digest_id)

    def _send_with_retries(self, message: OutgoingMessage, now: datetime) -> None:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            if attempt:
                self._pace()
                self.store.mark_sending(message.digest_id, now, message.message_id)
            try:
                with self.timings("send"):
                    self.transport.send(message)
                return
            except SendError as exc:
                if exc.retry_after is not None and exc.retry_after > MAX_IN_RUN_WAIT:
                    # a pause longer than a run should hold the lock for: stop, the rest stays queued
                    raise SendError(
                        f"{exc} (asked to wait {exc.retry_after:.0f} s; the rest waits for a later run)",
                        exc.hint,
                        retry_after=exc.retry_after,
                        transport_down=True,
                    ) from exc
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
                self.sleep(wait)
                delay *= 2

    def flush(self) -> None:
        """Record the last accepted message as 'sent' now, before the courier waits or idles."""
        with self.timings("store"):
            self._session.flush()

    def _pace(self) -> None:
        if self.interval:
            wait = self._last_send + self.interval - time.monotonic()
            if wait > 0:
                self.flush()  # a crash during the wait must not turn a sent message into 'unknown'
                self.sleep(wait)
            self._last_send = time.monotonic()

    def _record_failure(
        self, message: OutgoingMessage, exc: SendError, now: datetime, items: tuple[ItemReport, ...]
    ) -> DigestOutcome:
        said = self._said(exc)
        log.error("%s: %s", message.recipient, said)
        if exc.transport_down:
            self.halted = True  # every other message would fail the same way: stop, keep them queued
        if exc.unknown:
            self.store.mark_unknown(message.digest_id, now, said)
            return DigestOutcome(message.recipient, "unknown", f"error: {said}", items, message.digest_id)
        retry_at = None if exc.permanent else now + _next_run_backoff(exc.retry_after)
        self.store.mark_failed(message.digest_id, now, said, permanent=exc.permanent, retry_at=retry_at)
        kind = "permanent" if exc.permanent else "temporary, will retry next run"
        if exc.transport_down:
            kind = "cannot send now; this and the remaining digests go out next run"
        return DigestOutcome(message.recipient, "failed", f"error ({kind}): {said}", items, message.digest_id)


def _next_run_backoff(retry_after: float | None) -> timedelta:
    """At least NEXT_RUN_BACKOFF, longer when the server asked for it, never more than a day."""
    asked = timedelta(seconds=retry_after) if retry_after else NEXT_RUN_BACKOFF
    return min(max(asked, NEXT_RUN_BACKOFF), MAX_NEXT_RUN_BACKOFF)


class Couriers:
    """A run's couriers, one per connection; with more than one, each sends from its own thread.

    With one connection messages go out in order from the calling thread. With ``count`` of them,
    up to ``count`` messages are in flight at once, so one connection's wait for the server's reply
    overlaps the others' work. A crash can then leave up to ``count`` digests 'unknown' (never resent
    by themselves). The couriers' delivery sessions share a lock: the database sees one writer at a
    time, and the order of each digest's steps (sending -> transport -> sent) is as with one.
    """

    def __init__(
        self,
        store: Store,
        transport_factory: Callable[[], Transport],
        settings: Settings,
        count: int = 1,
        *,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timings: Timings | None = None,
    ) -> None:
        self.stop = stop or threading.Event()
        self.timings = timings or Timings()
        lock = threading.Lock() if count > 1 else None
        self._couriers = [
            Courier(
                store,
                transport_factory(),
                settings,
                stop=self.stop,
                sleep=sleep,
                timings=self.timings if count == 1 else Timings(),  # Timings is not thread-safe
                session_lock=lock,
                share=count,
            )
            for _ in range(count)
        ]
        self._idle: queue.SimpleQueue[Courier] = queue.SimpleQueue()
        self._threads: ThreadPoolExecutor | None = None
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> Couriers:
        with self._exit as stack:
            for courier in self._couriers:
                stack.enter_context(courier.transport)
                stack.enter_context(courier)
                self._idle.put(courier)
            if len(self._couriers) > 1:
                self._threads = stack.enter_context(
                    ThreadPoolExecutor(len(self._couriers), thread_name_prefix="newsletter-send")
                )
            self._exit = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._exit.close()  # threads joined first, then each session flushed and transport closed
        finally:
            for courier in self._couriers if len(self._couriers) > 1 else ():
                for stage, seconds in courier.timings.totals.items():
                    self.timings.totals[stage] += seconds

    @property
    def uses_parts(self) -> bool:
        return self._couriers[0].transport.uses_parts

    @property
    def stopped(self) -> bool:
        """Asked to stop, or a transport is down: what is not sent yet waits for the next run."""
        return self.stop.is_set() or any(courier.halted for courier in self._couriers)

    @property
    def bytes_sent(self) -> int:
        return sum(courier.bytes_sent for courier in self._couriers)

    def deliver_all(
        self, jobs: Sequence[tuple[OutgoingMessage, tuple[ItemReport, ...]]], now: datetime
    ) -> list[DigestOutcome]:
        """Every job's outcome, in the jobs' order. Planned messages not sent stay queued."""
        if self._threads is None:
            return [self._deliver(self._couriers[0], message, items, now) for message, items in jobs]
        futures = [self._threads.submit(self._deliver_pooled, message, items, now) for message, items in jobs]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:  # after an error: what has not started is not sent
                future.cancel()

    def flush(self) -> None:
        for courier in self._couriers:
            courier.flush()

    def _deliver_pooled(
        self, message: OutgoingMessage, items: tuple[ItemReport, ...], now: datetime
    ) -> DigestOutcome:
        courier = self._idle.get()  # as many couriers as threads: never waits
        try:
            return self._deliver(courier, message, items, now)
        finally:
            self._idle.put(courier)

    def _deliver(
        self, courier: Courier, message: OutgoingMessage, items: tuple[ItemReport, ...], now: datetime
    ) -> DigestOutcome:
        if self.stopped:  # planned: the next run sends it first
            return DigestOutcome(message.recipient, "skipped", "stopped; queued for the next run")
        return courier.deliver(message, now, items)
