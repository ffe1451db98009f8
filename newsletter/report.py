"""What a run did, for people (one summary line) and machines (``--json``)."""

from __future__ import annotations

from collections import Counter
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
    dumps: list[DumpOutcome] = field(default_factory=list)
    digests: list[DigestOutcome] = field(default_factory=list)
    recovered_unknown: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.error for d in self.dumps) and not any(d.status == "failed" for d in self.digests)

    def to_json(self) -> dict[str, Any]:
        return {
            "dumps": [asdict(d) for d in self.dumps],
            "digests": [asdict(d) for d in self.digests],
            "recovered_unknown": self.recovered_unknown,
        }

    def summary(self) -> str:
        ingested = [d for d in self.dumps if not d.already and not d.error]
        new = sum(d.new for d in ingested)
        statuses = Counter(d.status for d in self.digests)
        skipped = Counter(d.reason for d in self.digests if d.status == "skipped")
        parts = [f"{len(ingested)} dump(s) ingested ({new} new papers)"]
        parts += [f"{n} {status}" for status, n in sorted(statuses.items()) if status != "skipped"]
        parts += [f"{n} skipped: {reason}" for reason, n in sorted(skipped.items())]
        errors = sum(1 for d in self.dumps if d.error)
        if errors:
            parts.append(f"{errors} dump(s) rejected")
        return "; ".join(parts)
