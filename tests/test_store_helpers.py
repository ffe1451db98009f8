"""Shared builders for the store tests (no tests here)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import sqlalchemy as sa

from newsletter.address import address_key
from newsletter.models import Dump, Paper
from newsletter.sources import read_dump
from newsletter.store import CLAIMED, DigestPlan, InvalidTransition, PlannedItem, Store
from newsletter.store.schema import digest_items, digests

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
T0 = datetime(2024, 3, 11, 8, 0, tzinfo=UTC)


def seed_files() -> list[Path]:
    return sorted(SEEDS.glob("*.txt"))


@cache
def read_seed(path: Path) -> Dump:
    return read_dump(path)


def make_dump(*papers: Paper, tag: str = "") -> Dump:
    """A dump whose content hash follows its papers (plus ``tag``)."""
    text = tag + "|".join(f"{p.arxiv_id}:{p.title}:{p.rank}" for p in papers)
    return Dump("test", "hf-json", hashlib.sha256(text.encode()).hexdigest(), papers)


def paper(title: str, rank: int = 1, arxiv_id: str | None = None, **extra: object) -> Paper:
    return Paper(title=title, abstract=f"About {title}.", rank=rank, arxiv_id=arxiv_id, **extra)  # type: ignore[arg-type]


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'home' / 'state.db'}"


@contextmanager
def open_store(url: str) -> Iterator[Store]:
    with Store(url) as opened:
        yield opened


def seeded(store: Store, count: int = 2) -> list[int]:
    """Ingest the first ``count`` seeds; return their dump seqs."""
    return [store.ingest(read_seed(path), at(i)).dump_seq for i, path in enumerate(seed_files()[:count])]


def plan_for(
    store: Store, digest_id: str, email: str = "ada@example.org", papers: int = 3, offset: int = 0
) -> DigestPlan:
    seq = store.latest_dump_seq()
    assert seq is not None
    chosen = store.papers_first_seen_in(seq)[offset : offset + papers]
    items = tuple(
        PlannedItem(p.id, i + 1, 1.0 - i / 10, f"matches: {p.title[:10]}") for i, p in enumerate(chosen)
    )
    return DigestPlan(digest_id, email, at(24), seq, f"{len(items)} papers", items)


def mark_sent(store: Store, digest_id: str, now: datetime, message_id: str) -> None:
    """sending (or unknown) -> sent, as a run's DeliverySession records it (one at a time)."""
    with store.delivery_session() as session:
        if not session.sent_if_open(digest_id, message_id, now):
            raise InvalidTransition(f"digest {digest_id!r} was not 'sending' when marked sent")


def claimed_papers(store: Store, email: str) -> set[int]:
    """The papers in the subscriber's digests that went out or may still go out (the delivery log's claim)."""
    query = (
        sa.select(digest_items.c.paper_id)
        .join(digests, digest_items.c.digest_id == digests.c.id)
        .where(digests.c.email == address_key(email), digests.c.status.in_(CLAIMED))
    )
    with store._engine.connect() as conn:
        return set(conn.execute(query).scalars())
