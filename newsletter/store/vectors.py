"""Embedding vectors kept in the state database, so each paper is embedded once and each profile text
once per change (the semantic ranker's :class:`newsletter.rank.embed.VectorCache`).

Paper vectors are keyed by (model name, paper key). Profile texts are keyed by the SHA-256 of the
text under the ranker's ``query:<model>`` namespace, so the database never holds what subscribers
wrote. Vectors are stored as little-endian float32 bytes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from newsletter.errors import StoreError
from newsletter.models import StoredPaper
from newsletter.store.papers import papers_where
from newsletter.store.schema import feedback, papers, vectors
from newsletter.store.store import Store

log = logging.getLogger(__name__)

QUERY_PREFIX = "query:"  # the ranker's namespace for profile texts
BATCH = 500  # keys per IN (...) query: under SQLite's bound-parameter limit
FLOAT = np.dtype("<f4")
T = TypeVar("T")


class StoreVectorCache:
    """VectorCache backed by the store's ``vectors`` table."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors among ``keys`` (missing keys are simply absent)."""
        stored = {self._key(model, k): k for k in keys}
        found: dict[str, np.ndarray] = {}
        with self.store._tx(f"reading {model} vectors") as conn:
            for batch in _batches(list(stored), BATCH):
                for key, data in _select(conn, model, batch):
                    found[stored[key]] = np.frombuffer(data, dtype=FLOAT)
        return found

    def put(self, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Store vectors; a key already stored for this model keeps its vector."""
        rows = [self._row(model, key, vector) for key, vector in vectors.items()]
        if not rows:
            return
        with self.store._tx(f"storing {model} vectors", write=True) as conn:
            for batch in _batches(rows, BATCH):
                conn.execute(_insert_ignoring_duplicates(conn), batch)
        log.debug("stored %d %s vectors", len(rows), model)

    def delete(self, keys: Mapping[str, Sequence[str]]) -> int:
        """Forget the vectors of ``keys`` (by model; absent keys are no error) in one transaction, so an
        interrupted forget leaves no paper half forgotten; how many there were."""
        gone = 0
        with self.store._tx("forgetting vectors", write=True) as conn:
            for model, some in keys.items():
                for batch in _batches([self._key(model, k) for k in some], BATCH):
                    where = sa.and_(vectors.c.model == model, vectors.c.key.in_(batch))
                    gone += conn.execute(vectors.delete().where(where)).rowcount
        return gone

    def papers_embedded(self, model: str, upto_seq: int) -> list[StoredPaper]:
        """The papers first seen in dump ``upto_seq`` or before that still have a ``model`` vector,
        except those a subscriber marked "more/less like this" (their vectors are read however old).
        Driven by the vectors kept (a few dumps' papers), not by every paper ever stored."""
        embedded = sa.select(vectors.c.key).where(vectors.c.model == model)
        with self.store._tx("reading papers") as conn:
            found = papers_where(conn, papers.c.first_dump_seq <= upto_seq, papers.c.key.in_(embedded))
            marked = set(conn.execute(sa.select(feedback.c.paper_id).distinct()).scalars())
        return [p for p in found if p.id not in marked]

    def count(self, model: str | None = None) -> int:
        """How many vectors are stored (for one model, or all)."""
        query = sa.select(sa.func.count()).select_from(vectors)
        if model is not None:
            query = query.where(vectors.c.model == model)
        with self.store._tx("counting vectors") as conn:
            return int(conn.execute(query).scalar_one())

    @staticmethod
    def _key(model: str, key: str) -> str:
        if model.startswith(QUERY_PREFIX):
            return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
        return key

    def _row(self, model: str, key: str, vector: np.ndarray) -> dict[str, object]:
        data = np.ascontiguousarray(vector, dtype=FLOAT).ravel()
        if data.size == 0:
            raise StoreError(f"refusing to store an empty {model} vector for {key[:60]!r}")
        return {"model": model, "key": self._key(model, key), "dim": data.size, "data": data.tobytes()}


def _select(conn: Connection, model: str, keys: list[str]) -> Iterator[tuple[str, bytes]]:
    query = sa.select(vectors.c.key, vectors.c.data).where(vectors.c.model == model, vectors.c.key.in_(keys))
    for row in conn.execute(query):
        yield row.key, row.data


def _insert_ignoring_duplicates(conn: Connection) -> sa.Insert:
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(conn.dialect.name)
    if dialect is None:
        raise StoreError(f"unsupported database {conn.dialect.name!r}: use SQLite or PostgreSQL")
    return dialect.insert(vectors).on_conflict_do_nothing(index_elements=["model", "key"])


def _batches(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
