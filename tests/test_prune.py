"""`newsletter prune`: old failed and cancelled digests and old outbox files go; the history stays."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from newsletter.store import MIGRATIONS, Store, run_lock
from newsletter.store.schema import digest_items, digests, dumps, papers, subscribers

from .helpers import add_dumps, cli, seed_names

RUN_AT = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)


def _statuses(env: dict[str, str]) -> dict[str, str]:
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:
        return {d.email: d.status for d in store.deliveries(with_items=False)}


def test_prune_forgets_old_failures_and_outbox_files_and_keeps_the_history(env: dict[str, str]) -> None:
    add_dumps(env, *seed_names()[:2])
    cli(env, "run", "--now", RUN_AT.isoformat())
    sent = _statuses(env)
    assert list(sent.values()) == ["sent", "sent"]  # ssm and diff (nobody: nothing relevant)
    ssm, diff = sorted(sent)[::-1]
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store, store._engine.begin() as conn:
        conn.execute(digests.update().where(digests.c.email == ssm).values(status="failed", last_error="550"))
    outbox = Path(env["NEWSLETTER_HOME"]) / "outbox"
    files = sorted(outbox.iterdir())
    old = (RUN_AT - timedelta(days=1)).timestamp()
    os.utime(files[0], (old, old))  # written before the cut-off

    later = (RUN_AT + timedelta(days=91)).isoformat()
    status = cli(env, "status", "--now", later).stdout
    assert "Needs attention" in status  # the failure is listed until pruned
    done = cli(env, "prune", "--now", later).stdout
    assert done.startswith("pruned 1 failed or cancelled digest, 1 outbox file; ")
    assert _statuses(env) == {diff: "sent"}  # the sent one is the delivery history
    assert sorted(outbox.iterdir()) == files[1:]
    assert "Needs attention" not in cli(env, "status", "--now", later).stdout
    assert cli(env, "prune", "--now", later).stdout.startswith(
        "pruned 0 failed or cancelled digests, 0 outbox"
    )


def test_prune_keeps_what_is_recent_and_a_held_address_s_refused_digest(env: dict[str, str]) -> None:
    add_dumps(env, *seed_names()[:2])
    cli(env, "run", "--now", RUN_AT.isoformat())
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store, store._engine.begin() as conn:
        conn.execute(digests.update().values(status="failed"))
        conn.execute(
            subscribers.update().where(subscribers.c.email == "ssm@example.org").values(bounced_at=RUN_AT)
        )
    assert cli(env, "prune", "--now", (RUN_AT + timedelta(days=30)).isoformat()).stdout.startswith(
        "pruned 0 "
    )
    far = (RUN_AT + timedelta(days=91)).isoformat()
    assert cli(env, "prune", "--now", far).stdout.startswith("pruned 1 failed")
    assert _statuses(env) == {"ssm@example.org": "failed"}  # `retry EMAIL` still has it to resend


def test_prune_runs_beside_a_daemon_keeps_unknown_and_queued_digests_and_shrinks_the_file(
    env: dict[str, str],
) -> None:
    """The daemon holds the run lock for its life: prune waited for it, so never ran beside one. It
    prunes beside it now, and compacts the file (which holds the database meanwhile) only without it."""
    add_dumps(env, *seed_names()[:2])
    cli(env, "run", "--now", RUN_AT.isoformat())
    home = Path(env["NEWSLETTER_HOME"])
    with Store(f"sqlite:///{home}/state.db") as store, store._engine.begin() as conn:
        conn.execute(digests.update().where(digests.c.email == "ssm@example.org").values(status="unknown"))
        conn.execute(digests.update().where(digests.c.email == "diff@example.org").values(status="retry"))
        conn.execute(subscribers.insert(), [{"email": f"r{i}@example.org"} for i in range(300)])
        rows = [  # refusals with long replies, as a year of them leaves
            {
                "id": f"old{i}",
                "email": f"r{i}@example.org",
                "status": "failed",
                "created_at": RUN_AT,
                "updated_at": RUN_AT,
                "attempts": 1,
                "subject": "s",
                "last_error": "550 " + "x" * 4000,
                "watermark_seq": 1,
            }
            for i in range(300)
        ]
        conn.execute(digests.insert(), rows)
    size = (home / "state.db").stat().st_size
    later = (RUN_AT + timedelta(days=91)).isoformat()
    with run_lock(home):  # as a daemon holds it
        done = cli(env, "prune", "--now", later)
    assert done.stdout.startswith("pruned 300 failed or cancelled digests")
    assert done.stderr.startswith("warning: not compacted: a run or the daemon holds the state folder")
    assert _statuses(env) == {"ssm@example.org": "unknown", "diff@example.org": "retry"}
    again = cli(env, "prune", "--now", later)
    assert again.stdout.startswith("pruned 0 ") and not again.stderr
    assert (home / "state.db").stat().st_size < size - 1_000_000  # compacted, not just emptied pages


def test_a_compaction_the_database_refuses_is_a_store_error(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """VACUUM's own sqlite3 error went past the error wrapper: a traceback, after the deletes."""
    import sqlite3

    from newsletter.errors import StoreError

    monkeypatch.setattr("newsletter.store.engine.BUSY_TIMEOUT_MS", 100)
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", RUN_AT.isoformat())
    path = Path(env["NEWSLETTER_HOME"]) / "state.db"
    with Store(f"sqlite:///{path}") as store:
        writer = sqlite3.connect(path, timeout=0)
        writer.execute("BEGIN IMMEDIATE")  # another process writing
        try:
            with pytest.raises(StoreError, match="cannot compact the database: database is locked"):
                store.compact()
        finally:
            writer.rollback()
            writer.close()


def test_prune_on_postgresql_beside_a_run_forgets_and_does_not_warn(env: dict[str, str], pg_url: str) -> None:
    """PostgreSQL has its autovacuum: a daemon's lock there is no reason for a warning."""
    env = {**env, "NEWSLETTER_DATABASE_URL": pg_url}
    add_dumps(env, *seed_names()[:2])
    cli(env, "run", "--now", RUN_AT.isoformat())
    with Store(pg_url) as store:
        with store._engine.begin() as conn:
            conn.execute(digests.update().where(digests.c.email == "ssm@example.org").values(status="failed"))
        with store.lock(Path(env["NEWSLETTER_HOME"])):  # as a daemon holds it
            done = cli(env, "prune", "--now", (RUN_AT + timedelta(days=91)).isoformat())
        assert [d.email for d in store.deliveries(with_items=False)] == ["diff@example.org"]
    assert done.stdout == "pruned 1 failed or cancelled digest, 0 outbox files\n" and not done.stderr


def test_the_size_prune_reports_counts_the_write_ahead_log(tmp_path: Path) -> None:
    """A copied state with a live log read "7,643,136 -> 7,835,648 bytes": compacting seemed to grow it."""
    from newsletter.cli.upkeep import _file_size
    from newsletter.config import Settings

    settings = Settings(home=tmp_path)
    (tmp_path / "state.db").write_bytes(b"x" * 100)
    assert _file_size(settings) == 100
    (tmp_path / "state.db-wal").write_bytes(b"x" * 50)
    assert _file_size(settings) == 150
    assert _file_size(settings.model_copy(update={"database_url": "postgresql+psycopg://h/db"})) == 0


def _sent(env: dict[str, str]) -> list[tuple[str, datetime]]:
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:
        return sorted(
            (d.email, d.created_at) for d in store.deliveries(with_items=False) if d.status == "sent"
        )


def test_prune_sent_forgets_old_sent_digests_but_each_address_s_latest(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Sent digests were never forgotten: some 2 KB each, 40 MB a day for 20,000 daily subscribers."""
    for day, name in enumerate(seed_names()[:3]):
        add_dumps(env, name)
        cli(env, "run", "--now", (RUN_AT + timedelta(days=day)).isoformat())
    sent = _sent(env)
    latest = {email: when for email, when in sent}  # sorted: the last of each address wins
    assert len(sent) > len(latest) == 2
    later = (RUN_AT + timedelta(days=2 + 91)).isoformat()
    assert cli(env, "prune", "--now", later).stdout.startswith(
        "pruned 0 failed or cancelled digests, 0 outbox"
    )
    assert _sent(env) == sent  # without --sent: the history stays
    done = cli(env, "prune", "--sent", "--now", later).stdout
    assert done.startswith(f"pruned 0 failed or cancelled digests, {len(sent) - 2} sent digests, ")
    assert _sent(env) == sorted(latest.items())
    shown = cli(env, "preview", "ssm@example.org", "--last", "--out", str(tmp_path / "last")).stdout
    assert f"sent {latest['ssm@example.org']:%Y-%m-%d %H:%M} UTC" in shown  # the latest, still there to show
    assert cli(env, "prune", "--sent", "--now", later).stdout.startswith(
        "pruned 0 failed or cancelled digests, 0 sent digests, "
    )


def test_prune_sent_keeps_the_catch_up_window(env: dict[str, str]) -> None:
    proc = cli(env, "prune", "--sent", "--older-than", "14", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "error: --sent needs --older-than 15 or more: the digests of the last 14 days"
    )


def test_prune_sent_on_postgresql(env: dict[str, str], pg_url: str) -> None:
    env = {**env, "NEWSLETTER_DATABASE_URL": pg_url}
    for day, name in enumerate(seed_names()[:2]):
        add_dumps(env, name)
        cli(env, "run", "--now", (RUN_AT + timedelta(days=day)).isoformat())
    with Store(pg_url) as store:
        sent = sorted((d.email, d.created_at) for d in store.deliveries(("sent",), with_items=False))
        done = cli(env, "prune", "--sent", "--now", (RUN_AT + timedelta(days=100)).isoformat()).stdout
        kept = sorted((d.email, d.created_at) for d in store.deliveries(("sent",), with_items=False))
    assert done.startswith(f"pruned 0 failed or cancelled digests, {len(sent) - len(kept)} sent digest")
    assert kept == sorted(dict(sent).items()) and len(kept) < len(sent)


def _failed_digests(store: Store, count: int) -> None:
    """``count`` failed digests changed at RUN_AT, d0, d1 ..., two items each, and d-new changed later."""
    dump = {"seq": 1, "content_hash": "h", "source": "s", "format": "text", "papers": 2, "new": 2}
    dump |= {"written_by": len(MIGRATIONS)}
    paper = {"title": "T", "abstract": "A", "authors": "[]", "first_seen": RUN_AT, "last_seen": RUN_AT}
    paper |= {"first_dump_seq": 1, "times_seen": 1, "best_rank": 1}
    digest = {"status": "failed", "created_at": RUN_AT, "updated_at": RUN_AT, "attempts": 1, "subject": "s"}
    digest |= {"email": "a@example.org", "watermark_seq": 1}
    ids = [f"d{i}" for i in range(count)]
    with store._engine.begin() as conn:
        conn.execute(dumps.insert().values(**dump, ingested_at=RUN_AT))
        conn.execute(
            papers.insert(), [{**paper, "id": p, "key": f"k{p}", "title_key": f"t{p}"} for p in (1, 2)]
        )
        conn.execute(subscribers.insert().values(email="a@example.org"))
        later = {**digest, "id": "d-new", "updated_at": RUN_AT + timedelta(days=60)}
        conn.execute(digests.insert(), [*({**digest, "id": i} for i in ids), later])
        items = [
            {"digest_id": i, "paper_id": p, "position": p, "score": 0.5, "why": "w"}
            for i in ids
            for p in (1, 2)
        ]
        conn.execute(digest_items.insert(), items)


def _other_writer(url: str) -> sa.Engine:
    """Another process's connection that gives up at once where it would wait for a lock."""
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 0})
    return sa.create_engine(url, connect_args={"options": "-c lock_timeout=100"})


def test_prune_forgets_a_batch_a_transaction_and_another_writer_goes_between(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All in one transaction held SQLite's write lock 5.4 s for 51,875 failed digests: the daemon's
    tick and serve's clicks, waiting 10 s at most, failed at three times as many."""
    monkeypatch.setattr("newsletter.store.store.PRUNE_DIGESTS", 2)
    batches: list[list[str]] = []
    prune_batch = Store._prune
    writer = _other_writer(store_url)

    def between(store: Store, before: datetime, digest_ids: Sequence[str]) -> int:
        batches.append(list(digest_ids))
        with writer.begin() as conn:  # raises if a prune transaction still held the lock (or d6)
            conn.execute(digests.update().where(digests.c.id == "d6").values(status="retry"))  # `retry`
        return prune_batch(store, before, digest_ids)

    monkeypatch.setattr(Store, "_prune", between)
    with Store(store_url) as store:
        _failed_digests(store, 7)
        assert store.prune(RUN_AT + timedelta(days=30)) == 6
        with store._engine.connect() as conn:
            kept = dict(conn.execute(sa.select(digests.c.id, digests.c.status)).all())
            items = conn.execute(sa.select(digest_items.c.digest_id).distinct()).scalars().all()
    writer.dispose()
    assert batches == [["d0", "d1"], ["d2", "d3"], ["d4", "d5"], ["d6"]]
    assert kept == {"d6": "retry", "d-new": "failed"}  # queued again before its batch: asked again, kept
    assert items == ["d6"]  # the pruned digests' items went with them
