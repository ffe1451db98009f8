"""Values the store takes and returns: ingest results, subscriber state and the delivery log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, NamedTuple

from newsletter.errors import StoreError
from newsletter.models import Scored, StoredPaper, pickled_by_fields

Status = Literal["pending", "sending", "sent", "retry", "failed", "unknown", "cancelled"]

PENDING: Final = "pending"  # planned and committed, not yet handed to a transport
SENDING: Final = "sending"  # committed just before the transport call
SENT: Final = "sent"  # the transport accepted it
RETRY: Final = "retry"  # temporary failure: eligible again (after not_before)
FAILED: Final = "failed"  # permanent failure: never retried unless requeued
UNKNOWN: Final = "unknown"  # may or may not have been accepted: reported, never silently resent
CANCELLED: Final = "cancelled"  # the subscriber unsubscribed before it went out

STATUSES: Final[tuple[Status, ...]] = (PENDING, SENDING, SENT, RETRY, FAILED, UNKNOWN, CANCELLED)
QUEUED: Final[tuple[Status, ...]] = (PENDING, RETRY)
# A paper in a digest with one of these statuses is never planned again for that subscriber.
CLAIMED: Final[tuple[Status, ...]] = (PENDING, SENDING, SENT, RETRY, UNKNOWN)


class InvalidTransition(StoreError):
    """A delivery record is not in a state that allows the requested change (or does not exist)."""


class NotQueued(InvalidTransition):
    """A digest planned for sending is no longer queued: cancelled, or another process handled it."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    dump_seq: int
    papers: int  # papers listed in the dump (after merging duplicates within it)
    new: int  # papers no earlier dump had (0 when ``already``: this call added nothing)
    already: bool  # True when this content was ingested before: nothing changed


@dataclass(frozen=True, slots=True)
class DumpRecord:
    seq: int
    content_hash: str
    source: str
    format: str
    listed_on: str | None
    ingested_at: datetime
    papers: int
    new: int


@dataclass(frozen=True, slots=True)
class SubscriberState:
    email: str
    watermark_seq: int | None  # dumps up to this seq have been evaluated for this subscriber
    last_digest_at: datetime | None
    unsubscribed_at: datetime | None
    served_slot: datetime | None = None  # the send slot the last digest served (due.slot_served_now)
    bounced_at: datetime | None = None  # a server refused the address for good: no new digest until `retry`


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PlannedItem:
    paper_id: int
    position: int  # 1-based place in the digest
    score: float
    why: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class DigestPlan:
    digest_id: str  # stable: planning the same digest twice is harmless
    email: str
    created_at: datetime
    watermark_seq: int
    subject: str
    items: tuple[PlannedItem, ...]
    served_slot: datetime | None = None  # the send slot it serves; None: each-dump


class DeliveryItem(NamedTuple):
    paper: StoredPaper
    position: int
    score: float
    why: str


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    digest_id: str
    email: str
    status: Status
    created_at: datetime
    updated_at: datetime
    attempts: int
    subject: str
    message_id: str | None
    last_error: str | None
    items: tuple[DeliveryItem, ...]  # ordered by position; empty when loaded without items
    watermark_seq: int | None = None
    not_before: datetime | None = None  # a 'retry' is not due before this time
    batch_key: str | None = None  # idempotency key of the batch request it last went out in

    def scored(self) -> tuple[Scored, ...]:
        """Its papers as the ranker gave them (all were relevant)."""
        return tuple(Scored(paper, score, why, relevant=True) for paper, _pos, score, why in self.items)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A subscriber's last word on a paper: "more" (like this) or "less"."""

    paper: StoredPaper
    kind: str
    created_at: datetime
