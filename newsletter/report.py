"""What a run did, for people (one summary line) and machines (``--json``)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from newsletter.address import address_key
from newsletter.errors import StoreError

WAITING = "stopped before its turn; due at the next run"  # not planned: built again next run
STOPPED = "stopped; queued for the next run"  # planned, not sent: the next run sends it first
QUEUED = "queued by an earlier run; the next run sends it first"  # a dry run's word for one
BACKING_OFF = "a refused digest waits to be tried again (see `newsletter status`)"
DIGESTS_FAILED = 3  # the exit status of a run whose only problems are refused digests

Status = Literal["sent", "skipped", "failed", "unknown", "dry-run"]


@dataclass(frozen=True)
class ItemReport:
    key: str
    title: str
    score: float
    why: str
    arxiv_id: str | None = None
    url: str = ""  # the paper's page (arXiv abstract, or an arXiv title search)
    authors: tuple[str, ...] = ()
    upvotes: int | None = None
    comments: int | None = None
    links: dict[str, str] = field(default_factory=dict)  # label -> URL: arXiv, PDF, HF, Code, Project
    details: dict[str, object] = field(default_factory=dict)  # PaperDetails.to_json(): ai_summary, ...


@dataclass(frozen=True)
class DigestOutcome:
    subscriber: str
    status: Status
    reason: str = ""  # why nothing was sent: nothing new, nothing relevant, not due, unsubscribed, error
    items: tuple[ItemReport, ...] = ()
    digest_id: str | None = None
    retried: bool = False  # failed, and the next run tries it again by itself (else only `retry` does)
    # failed as mail routinely does: a bounce, or a refusal for now the next run retries
    routine: bool = False


@dataclass(frozen=True)
class DumpOutcome:
    file: str
    papers: int = 0
    new: int = 0
    already: bool = False
    error: str | None = None
    warning: str | None = None  # not a dump file: skipped, reported once
    later: bool = False  # with error: not the dump's fault (a database error); the next run tries again


class Timings:
    """Seconds spent per pipeline stage, summed over a run."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.totals[stage] += time.perf_counter() - started

    def iterate(self, stage: str, items: Iterable[T]) -> Iterator[T]:
        """Yield from ``items``, counting the time spent producing each one toward ``stage``."""
        iterator = iter(items)
        while True:
            with self(stage):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item  # type: ignore[misc]


_END = object()
T = TypeVar("T")


@dataclass
class RunReport:
    """Counts every outcome; keeps each one only when ``detailed`` (for --json), else just the problems,
    so a run over 100,000 subscribers holds counters, not 100,000 outcomes."""

    detailed: bool = True
    dumps: list[DumpOutcome] = field(default_factory=list)
    digests: list[DigestOutcome] = field(default_factory=list)
    recovered_unknown: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    bytes_sent: int = 0
    errors: list[str] = field(default_factory=list)  # outside any one digest: a source, a worker
    # subscribers (address keys) whose queued digest this run already delivered: one entry each,
    # so their 'skipped' (nothing new, not due) from the new-digest pass is left out
    delivered_earlier: frozenset[str] = frozenset()
    ingested: bool = False  # the dumps folder was ingested: the summary starts with what it found
    halted: str = ""  # the database error that stopped it: what it had not reached waits for the next run
    # the store's latest dump once the run had ingested (None: unknown): a database restored from an
    # older backup knows fewer, and the next run refuses it rather than send again what went out since
    latest_dump: int | None = None

    def add(self, outcome: DigestOutcome) -> None:
        if outcome.status == "skipped" and address_key(outcome.subscriber) in self.delivered_earlier:
            return
        self.statuses[outcome.status] += 1
        if outcome.status == "skipped":
            self.skipped[outcome.reason] += 1
        if self.detailed or outcome.status in ("failed", "unknown"):
            self.digests.append(outcome)

    def merge(self, other: RunReport) -> None:
        """Fold another report's outcomes, counts, timings and bytes into this one."""
        self.digests += other.digests
        self.statuses.update(other.statuses)
        self.skipped.update(other.skipped)
        self.recovered_unknown += other.recovered_unknown
        self.merge_timings(other.timings)
        self.bytes_sent += other.bytes_sent
        self.errors += [error for error in other.errors if error not in self.errors]  # each shard's same one
        self.halted = self.halted or other.halted

    def merge_timings(self, timings: Mapping[str, float]) -> None:
        for stage, seconds in timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    @contextmanager
    def halts_on_store_errors(self) -> Iterator[None]:
        """A database error ends the block: what it did stays in this report, with the error, and
        what it had not reached waits for the next run (a message sent but not recorded is found
        'sending' by the next run, as after a crash)."""
        try:
            yield
        except StoreError as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            self.halted = f"{exc}{hint}; the run stopped here: what it had not sent waits for the next run"
            self.errors.append(self.halted)

    def extend(self, outcomes: Iterable[DigestOutcome]) -> None:
        for outcome in outcomes:
            self.add(outcome)

    @property
    def ok(self) -> bool:
        """False when something needs a look: a rejected dump, a failed or unknown delivery (one this run
        found interrupted by an earlier one too), an error."""
        return self.exit_status() == 0

    def exit_status(self) -> int:
        """0: nothing needs a look. 1: the run does: a rejected dump, an error outside any one digest (a
        source, the transport or the database down), a delivery of unknown fate, a digest not built or
        refused for good but not for its address (a policy, a bad sender). DIGESTS_FAILED: only digests
        that failed as mail routinely does: bounced (the reply blames the address) or refused for now
        (the next run tries again); a distributed run's workers' failures count as 1. A monitor may
        page on 1 and count the other."""
        failed = [d for d in self.digests if d.status == "failed"]  # every failed one is listed
        if (
            any(d.error for d in self.dumps)
            or self.errors
            or self.statuses["unknown"]
            or self.recovered_unknown
            or not all(d.routine for d in failed)  # not built (a template, a setting), a policy refusal
        ):
            return 1
        return DIGESTS_FAILED if failed else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "dumps": [asdict(d) for d in self.dumps if not d.already],  # not the folder's whole history
            "dumps_already": sum(1 for d in self.dumps if d.already),
            "digests": [asdict(d) for d in self.digests],
            "counts": dict(self.statuses),
            "recovered_unknown": self.recovered_unknown,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "bytes_sent": self.bytes_sent,
            "errors": self.errors,
            **({"latest_dump": self.latest_dump} if self.latest_dump is not None else {}),
        }

    def summary(self) -> str:
        ingested = [d for d in self.dumps if not d.already and not d.error and not d.warning]
        new = plural(sum(d.new for d in ingested), "new paper")
        parts = [f"{plural(len(ingested), 'dump')} ingested ({new})"] if self.ingested else []
        parts += [f"{n} {status}" for status, n in sorted(self.statuses.items()) if status != "skipped"]
        parts += [f"{n} skipped: {reason}" for reason, n in sorted(self.skipped.items())]
        errors = sum(1 for d in self.dumps if d.error and not d.later)
        if errors:
            parts.append(f"{plural(errors, 'dump')} rejected")
        later = sum(1 for d in self.dumps if d.later)
        if later:
            parts.append(f"{plural(later, 'dump')} not ingested now (the next run tries again)")
        skipped = sum(1 for d in self.dumps if d.warning)
        if skipped:
            parts.append(f"{plural(skipped, 'file')} skipped: not dumps")
        if self.errors:
            parts.append(plural(len(self.errors), "error"))
        if self.recovered_unknown:
            parts.append(f"{len(self.recovered_unknown)} interrupted by a crash, now unknown")
        return "; ".join(parts)


def plural(count: int, noun: str) -> str:
    """'1 paper', '2 papers', '0 papers' (the nouns used here take a plain -s)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
