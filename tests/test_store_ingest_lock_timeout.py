"""Review repro: SET LOCAL lock_timeout = 0 in xact_lock lifts the 60 s limit for the whole ingest."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from newsletter.errors import StoreError
from newsletter.store import Store
from tests.test_store_helpers import at, make_dump, paper


def test_an_ingest_blocked_by_a_stuck_session_fails_after_the_lock_timeout(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.store import engine

    monkeypatch.setattr(engine, "LOCK_TIMEOUT_MS", 300)
    with Store(pg_url) as store:
        store.ingest(make_dump(paper("Kestrel", arxiv_id="2601.00001")), at(0))
        other = sa.create_engine(pg_url)
        outcome: list[object] = []
        try:
            with other.connect() as holder, holder.begin():
                # a psql session left open after touching the papers table
                holder.execute(sa.text("LOCK TABLE papers IN ACCESS EXCLUSIVE MODE"))

                def ingest() -> None:
                    try:
                        store.ingest(
                            make_dump(paper("Kestrel", rank=2, arxiv_id="2601.00001"), tag="b"), at(1)
                        )
                        outcome.append("done")
                    except StoreError as exc:
                        outcome.append(exc)

                worker = threading.Thread(target=ingest, daemon=True)
                worker.start()
                worker.join(10)
                stuck = worker.is_alive()
                holder.execute(sa.text("SELECT 1"))
            worker.join(10)
            assert not stuck, "the ingest waited past the 0.3 s lock timeout (SET LOCAL lock_timeout = 0)"
            assert outcome and isinstance(outcome[0], StoreError)
        finally:
            other.dispose()
