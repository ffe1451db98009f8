"""What a run's connections share: the send rate, one pause after a 429, and how many to open.

A run may send over several connections (SMTP) or have several requests in flight (HTTP APIs). They
share one ``Gate``:

- ``NEWSLETTER_SEND_RATE`` is a rate for the run, not per connection: each request reserves its
  messages' share of time (``reserve``), so N connections together send at most the rate.
- A 429 with ``Retry-After`` pauses every connection until the same moment (``pause``): requests in
  flight that also get a 429 extend that one pause instead of each sleeping its own, and requests
  about to start wait for it (``wait_paused``) instead of hitting the limit again.

``auto_connections`` sizes the number of connections from the measured round-trip time: enough that
the waits overlap up to the rate this machine can feed them (Little's law), never above the cap.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

# Messages a second a run builds and records on a 2-core machine (README, Performance: 638-1,107);
# more connections than this rate needs only add threads and load on the server.
FEED_RATE = 1000.0
AUTO_CAP = 8  # connections / requests in flight "auto" opens at most
# Twice what Little's law asks: between two chunks the run's process reads the next chunk from the
# builder and plans it while nothing is in flight, and each request's round trip also holds building its
# JSON; with exactly ``rate x round trip`` in flight a 200 ms API was the slower side of the run.
HEADROOM = 2.0


class Gate:
    """Thread-safe; ``clock`` and ``sleep`` are injectable for tests."""

    def __init__(
        self,
        rate: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._next = float("-inf")  # when the next reservation may start
        self._paused_until = float("-inf")

    def reserve(self, messages: int = 1) -> float:
        """Seconds the caller must wait before sending ``messages`` (0 when it may go now)."""
        with self._lock:
            now = self.clock()
            start = max(now, self._next, self._paused_until)
            if self.rate:
                self._next = start + messages / self.rate
            return start - now

    def pause(self, seconds: float) -> None:
        """Nobody sends before ``seconds`` from now (a later end of an existing pause is kept)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + seconds)

    def paused_for(self) -> float:
        with self._lock:
            return max(0.0, self._paused_until - self.clock())

    def wait_paused(self, stop: threading.Event | None = None) -> None:
        """Sleep out the current pause, if any (once: a pause set meanwhile is met at the next call);
        with ``stop``, in steps that end early once it is set (SIGTERM during a 429's pause)."""
        sleep_unless(self.sleep, self.paused_for(), stop)


STOP_CHECK = 0.5  # seconds between looks at the stop event during a long wait


def sleep_unless(sleep: Callable[[float], None], seconds: float, stop: threading.Event | None) -> None:
    """``sleep(seconds)``, cut short when ``stop`` is set (checked every STOP_CHECK seconds)."""
    if stop is None:
        if seconds > 0:
            sleep(seconds)
        return
    left = seconds
    while left > 0 and not stop.is_set():
        step = min(left, STOP_CHECK)
        sleep(step)
        left -= step


def auto_connections(round_trip: float, per_request: int, rate: float | None, cap: int = AUTO_CAP) -> int:
    """Connections (or requests in flight) that keep ``rate`` messages a second moving.

    Each connection moves ``per_request`` messages per ``round_trip`` seconds, so the run needs
    ``rate * round_trip / per_request`` of them (Little's law), times HEADROOM. ``rate`` is
    NEWSLETTER_SEND_RATE when set (more connections could not send faster), else FEED_RATE. At least 1,
    at most ``cap``.
    """
    target = min(rate, FEED_RATE) if rate else FEED_RATE
    wanted = math.ceil(HEADROOM * target * max(round_trip, 0.0) / max(per_request, 1))
    return max(1, min(cap, wanted))
