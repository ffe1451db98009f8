"""The state database: dumps, papers, the diff, subscriber state and the delivery log."""

from newsletter.errors import LockedError, StoreError
from newsletter.store.lock import run_lock
from newsletter.store.migrations import MIGRATIONS
from newsletter.store.records import (
    CANCELLED,
    CLAIMED,
    FAILED,
    PENDING,
    QUEUED,
    RETRY,
    SENDING,
    SENT,
    STATUSES,
    UNKNOWN,
    DeliveryItem,
    DeliveryRecord,
    DigestPlan,
    DumpRecord,
    FeedbackRecord,
    IngestResult,
    InvalidTransition,
    NotQueued,
    PlannedItem,
    Status,
    SubscriberState,
)
from newsletter.store.store import Store

__all__ = [
    "CANCELLED",
    "CLAIMED",
    "FAILED",
    "MIGRATIONS",
    "PENDING",
    "QUEUED",
    "RETRY",
    "SENDING",
    "SENT",
    "STATUSES",
    "UNKNOWN",
    "DeliveryItem",
    "DeliveryRecord",
    "DigestPlan",
    "DumpRecord",
    "FeedbackRecord",
    "IngestResult",
    "InvalidTransition",
    "LockedError",
    "NotQueued",
    "PlannedItem",
    "Status",
    "Store",
    "StoreError",
    "SubscriberState",
    "run_lock",
]
