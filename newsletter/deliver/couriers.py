"""A run's couriers, one per connection (or request in flight), sending side by side."""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Literal

from newsletter.config import Settings
from newsletter.deliver.breaker import Breaker
from newsletter.deliver.courier import REFUSED_CONNECTION, Courier, left_queued
from newsletter.models import OutgoingMessage
from newsletter.report import DigestOutcome, ItemReport, Timings
from newsletter.send.apis.core import HttpApiTransport
from newsletter.send.base import Transport
from newsletter.send.pacing import AUTO_CAP, Gate, auto_connections
from newsletter.store import Store

log = logging.getLogger(__name__)


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
                retire=self._let_go,
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

    def _let_go(self, courier: Courier) -> bool:
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
            return [left_queued(m, items) for m, items in unit]
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
