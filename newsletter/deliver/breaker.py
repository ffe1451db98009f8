"""The run's breaker: requests failing one after another mean the server's trouble, so the run stops."""

from __future__ import annotations

import threading
from collections.abc import Iterable

FAILED_IN_A_ROW = 5  # requests refused or lost one after another: the server's trouble, not each message's


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

    def trip(self, reason: str) -> bool:
        """Nothing more is sent in this run (the transport is down, or fails every request); True when
        this trip stopped it (not one before)."""
        with self._lock:
            first = not self.tripped
            self._trip(reason)
            return first

    def _trip(self, reason: str) -> None:
        self.reason = self.reason or f"{reason}: the run stops, the rest waits for the next run"
        self.tripped = True
