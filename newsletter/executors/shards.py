"""The execution seam: a run's new digests, split into shards, handed to an Executor.

A *shard* is some subscribers, the run's clock and the shard's part of the run-wide limits. Whoever
runs it (a forked process, a worker on another machine, this process in a test) calls
``ShardWork.deliver_shard``: select, rank, render, plan (one transaction per 256 digests) and send,
every step recorded in the delivery log. The log's ``pending -> sending -> sent`` transitions are what
keep a shard that runs twice, or on two workers at once, from sending anything twice: so an executor
may be at-least-once.

Executors: ``parallel.LocalProcesses`` (``NEWSLETTER_WORKERS`` forked processes), ``distributed.
ProcrastinateExecutor`` (workers on any number of machines), and ``InProcess`` here (tests).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from newsletter.models import Subscriber
from newsletter.report import RunReport


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    subscribers: tuple[Subscriber, ...]
    now: datetime
    max_per_run: int | None = None  # this shard's part of the run cap
    send_rate: float | None = None  # this shard's part of the send rate
    detailed: bool = True
    delivered_earlier: frozenset[str] = frozenset()  # address keys the run already reported
    attempt: int = 0  # runs of this shard before this one (an engine's retry): it may have planned some

    def to_json(self) -> dict[str, Any]:
        """A job payload: plain JSON, so a worker on another machine rebuilds the same shard."""
        return {
            "index": self.index,
            "count": self.count,
            "subscribers": [s.model_dump(mode="json") for s in self.subscribers],
            "now": self.now.isoformat(),
            "max_per_run": self.max_per_run,
            "send_rate": self.send_rate,
            "detailed": self.detailed,
            "delivered_earlier": sorted(self.delivered_earlier),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shard:
        subscribers = tuple(Subscriber.model_validate(s) for s in data["subscribers"])
        now = datetime.fromisoformat(data["now"])
        return cls(
            data["index"],
            data["count"],
            subscribers,
            now,
            data["max_per_run"],
            data["send_rate"],
            data["detailed"],
            frozenset(data.get("delivered_earlier", ())),
        )


def split(
    subscribers: Sequence[Subscriber],
    count: int,
    now: datetime,
    *,
    max_per_run: int | None,
    send_rate: float | None,
    detailed: bool = True,
) -> list[Shard]:
    """``count`` shards, round robin; each with its share of the run cap (split) and the rate (divided)."""
    return [
        Shard(
            index,
            count,
            tuple(subscribers[index::count]),
            now,
            None if max_per_run is None else max_per_run // count + (index < max_per_run % count),
            None if send_rate is None else send_rate / count,
            detailed,
        )
        for index in range(count)
    ]


class ShardWork(Protocol):
    """What an executor runs a shard with (the Pipeline)."""

    def deliver_shard(self, shard: Shard, stop: threading.Event | None = None) -> RunReport: ...

    def recover(self, now: datetime) -> list[str]:
        """What killed senders left 'sending': 'unknown' (returned), or queued again where safe."""

    def after_fork(self) -> None:
        """In a forked child: connections of its own."""

    def holds_lock(self) -> bool:
        """Whether the run still holds its run lock (the parent of local workers looks while they send)."""

    def close(self) -> None: ...


class Executor(Protocol):
    """Runs a run's shards, somewhere, and returns what they did."""

    name: str

    def run(self, shards: Sequence[Shard], work: ShardWork, stop: threading.Event | None) -> RunReport: ...


class InProcess:
    """Each shard in this process, one after another; ``repeat`` > 1 runs each that many times, as an
    at-least-once engine redelivering a job would (tests)."""

    name = "in-process"

    def __init__(self, repeat: int = 1) -> None:
        self.repeat = repeat

    def run(self, shards: Sequence[Shard], work: ShardWork, stop: threading.Event | None) -> RunReport:
        report = RunReport()
        for shard in shards:
            for _ in range(self.repeat):
                report.merge(work.deliver_shard(shard, stop))
        return report
