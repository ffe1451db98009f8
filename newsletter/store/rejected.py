"""Dump files the folder scan refused, by content hash and path: reported once, then skipped until they
change (the same bytes under another name are another file)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.schema import rejected_files

__all__ = ["RejectedFile", "list_rejected", "move_rejected", "rejected_keys", "remember_rejected"]


@dataclass(frozen=True, slots=True)
class RejectedFile:
    content_hash: str
    path: str
    problem: str
    first_seen: datetime


def rejected_keys(conn: Connection) -> set[tuple[str, str]]:
    """(content hash, path) of every file refused before."""
    rows = conn.execute(sa.select(rejected_files.c.content_hash, rejected_files.c.path))
    return {(content_hash, path) for content_hash, path in rows}


KEPT_PER_PATH = 4  # refused contents remembered for one path (see remember_rejected)


def remember_rejected(conn: Connection, content_hash: str, path: str, problem: str, now: datetime) -> None:
    """Record a refused file; the same file seen again keeps its first record. A path keeps its newest
    KEPT_PER_PATH contents: a log growing in the dumps folder added a row at every run (which `status`
    read the file once for), while a path whose content flips (two hosts on one PostgreSQL, each with
    its own bad file there) must keep both, or each run reports the other's again."""
    known = sa.select(rejected_files.c.content_hash).where(
        rejected_files.c.content_hash == content_hash, rejected_files.c.path == path
    )
    if conn.execute(known).first() is None:
        _keep_newest(conn, path, KEPT_PER_PATH - 1)
        values = {"content_hash": content_hash, "path": path, "problem": problem, "first_seen": now}
        conn.execute(rejected_files.insert().values(**values))


def move_rejected(conn: Connection, content_hash: str, old: str, new: str) -> None:
    """The record of a refused file now at ``new`` (its folder moved): its problem names it there too."""
    row = conn.execute(
        sa.select(rejected_files.c.problem).where(
            rejected_files.c.content_hash == content_hash, rejected_files.c.path == old
        )
    ).first()
    if row is None:
        return
    update = rejected_files.update().where(
        rejected_files.c.content_hash == content_hash, rejected_files.c.path == old
    )
    conn.execute(update.values(path=new, problem=row.problem.replace(old, new)))


def _keep_newest(conn: Connection, path: str, keep: int) -> None:
    """Only the ``keep`` newest records of ``path``."""
    newest = (
        sa.select(rejected_files.c.content_hash)
        .where(rejected_files.c.path == path)
        .order_by(rejected_files.c.first_seen.desc())
        .limit(keep)
    )
    kept = [row.content_hash for row in conn.execute(newest)]
    stale = rejected_files.delete().where(rejected_files.c.path == path)
    conn.execute(stale.where(rejected_files.c.content_hash.not_in(kept)) if kept else stale)


def list_rejected(conn: Connection) -> list[RejectedFile]:
    query = sa.select(rejected_files).order_by(rejected_files.c.first_seen, rejected_files.c.path)
    return [RejectedFile(r.content_hash, r.path, r.problem, r.first_seen) for r in conn.execute(query)]
