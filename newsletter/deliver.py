"""Hand built messages to a transport, recording each step in the delivery log.

For each message: mark *sending* (committed) -> transport.send -> mark *sent* (committed). A crash between
the two commits leaves the digest in 'sending', which the next run reports as 'unknown' instead of
resending it. Temporary failures are retried within the run with backoff (the digest waits as 'retry', so
a crash during the wait loses nothing and reports nothing unknown), then left as 'retry' for the next run;
permanent ones are recorded as 'failed' with the server's reply. Pacing (send_rate) happens before a digest
is marked sending, for the same reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from newsletter.config import Settings
from newsletter.errors import SendError
from newsletter.models import OutgoingMessage
from newsletter.report import DigestOutcome, ItemReport, Timings
from newsletter.send.base import Transport
from newsletter.store import InvalidTransition, Store

log = logging.getLogger(__name__)

NEXT_RUN_BACKOFF = timedelta(minutes=5)


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
    ) -> None:
        self.store = store
        self.transport = transport
        self.retries = settings.retries
        self.backoff = settings.retry_backoff
        self.interval = 1.0 / settings.send_rate if settings.send_rate else 0.0
        self.stop = stop or threading.Event()
        self.sleep = sleep
        self.sent = 0
        self.bytes_sent = 0
        self.timings = timings or Timings()
        self._last_send = float("-inf")
        self.halted = False
        self._session = store.delivery_session()

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
        log.info("sent %s to %s (%d papers)", message.digest_id, message.recipient, len(items))
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
                if (
                    exc.transport_down
                    or exc.permanent
                    or exc.unknown
                    or attempt == self.retries
                    or self.stopped
                ):
                    raise
                wait = exc.retry_after if exc.retry_after is not None else delay
                log.warning("%s: %s; retrying in %.1fs", message.recipient, exc, wait)
                # refused, so not sent: a crash during the wait must leave it queued, not 'unknown'
                self.store.mark_failed(message.digest_id, now, str(exc), permanent=False, retry_at=now)
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
        log.error("%s: %s", message.recipient, exc)
        if exc.transport_down:
            self.halted = True  # every other message would fail the same way: stop, keep them queued
        if exc.unknown:
            self.store.mark_unknown(message.digest_id, now, str(exc))
            return DigestOutcome(message.recipient, "unknown", f"error: {exc}", items, message.digest_id)
        retry_at = None if exc.permanent else now + NEXT_RUN_BACKOFF
        self.store.mark_failed(message.digest_id, now, str(exc), permanent=exc.permanent, retry_at=retry_at)
        kind = "permanent" if exc.permanent else "temporary, will retry next run"
        if exc.transport_down:
            kind = "cannot send now; this and the remaining digests go out next run"
        return DigestOutcome(message.recipient, "failed", f"error ({kind}): {exc}", items, message.digest_id)
