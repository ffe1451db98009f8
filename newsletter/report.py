"""What a run did, for people (one summary line) and machines (``--json``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["sent", "skipped", "failed", "unknown", "dry-run"]


@dataclass(frozen=True)
class ItemReport:
    key: str
    title: str
    score: float
    why: str


@dataclass(frozen=True)
class DigestOutcome:
    subscriber: str
    status: Status
    reason: str = ""  # why nothing was sent: nothing new, nothing relevant, not due, unsubscribed, error
    items: tuple[ItemReport, ...] = ()
    digest_id: str | None = None


@dataclass(frozen=True)
class DumpOutcome:
    file: str
    papers: int = 0
    new: int = 0
    already: bool = False
    error: str | None = None


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

    def add(self, outcome: DigestOutcome) -> None:
        self.statuses[outcome.status] += 1
        if outcome.status == "skipped":
            self.skipped[outcome.reason] += 1
        if self.detailed or outcome.status in ("failed", "unknown"):
            self.digests.append(outcome)

    def extend(self, outcomes: Iterable[DigestOutcome]) -> None:
        for outcome in outcomes:
            self.add(outcome)

    @property
    def ok(self) -> bool:
        return not any(d.error for d in self.dumps) and not self.statuses["failed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "dumps": [asdict(d) for d in self.dumps],
            "digests": [asdict(d) for d in self.digests],
            "counts": dict(self.statuses),
            "recovered_unknown": self.recovered_unknown,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "bytes_sent": self.bytes_sent,
        }

    def summary(self) -> str:
        ingested = [d for d in self.dumps if not d.already and not d.error]
        new = sum(d.new for d in ingested)
        parts = [f"{len(ingested)} dump(s) ingested ({new} new papers)"]
        parts += [f"{n} {status}" for status, n in sorted(self.statuses.items()) if status != "skipped"]
        parts += [f"{n} skipped: {reason}" for reason, n in sorted(self.skipped.items())]
        errors = sum(1 for d in self.dumps if d.error)
        if errors:
            parts.append(f"{errors} dump(s) rejected")
        if self.recovered_unknown:
            parts.append(f"{len(self.recovered_unknown)} interrupted earlier, now unknown")
        return "; ".join(parts)
