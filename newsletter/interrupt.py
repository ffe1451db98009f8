"""A stop asked for (SIGTERM, Ctrl-C) ends a long step that has nothing in flight: embedding papers.

A run lets the message in flight finish; embedding a backlog (after days of downtime, minutes of work)
has nothing to finish and nothing to lose, so it ends at its next batch. ``stoppable`` says, for a
block in this thread, how to tell that a stop was asked for; ``check``, between batches, raises
Stopped then. Outside such a block ``check`` does nothing (`serve`, `explain`, the benchmarks).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_local = threading.local()


class Stopped(Exception):
    """A stop was asked for while a stoppable step ran."""


@contextmanager
def stoppable(stopped: Callable[[], bool]) -> Iterator[None]:
    """``check`` in this block raises Stopped once ``stopped()`` is true."""
    asked: list[Callable[[], bool]] = _asked()
    asked.append(stopped)
    try:
        yield
    finally:
        asked.pop()


def check() -> None:
    """Raise Stopped when the innermost stoppable block's stop was asked for."""
    asked = _asked()
    if asked and asked[-1]():
        raise Stopped


def _asked() -> list[Callable[[], bool]]:
    if not hasattr(_local, "asked"):
        _local.asked = []
    asked: list[Callable[[], bool]] = _local.asked
    return asked
