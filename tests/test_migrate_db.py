"""`newsletter migrate-db`: a SQLite state folder moved to PostgreSQL plans the same digests and
re-sends nothing."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from newsletter.store import Store
from newsletter.store.transfer import copied_tables
from newsletter.store.vectors import StoreVectorCache

from .helpers import add_dumps, cli, make_env, outbox, seed_names

FIRST, SECOND = "2026-03-11T08:00:00Z", "2026-03-12T08:00:00Z"


def _digests(report: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted(
        (d["subscriber"], d["status"], tuple(i["key"] for i in d["items"]))
        for d in report["digests"]
        if d["status"] != "skipped"
    )


def _run(env: dict[str, str], now: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cli(env, "run", "--json", "--now", now).stdout)
    return result


def test_a_state_moved_to_postgresql_plans_the_same_digests_and_resends_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    env = make_env(tmp_path)
    add_dumps(env, seed_names()[0])
    first = _run(env, FIRST)
    assert any(d["status"] == "sent" for d in first["digests"])
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:
        store.record_unsubscribe("nobody@example.org", store.deliveries()[0].created_at)
    stay = {**env, "NEWSLETTER_HOME": str(tmp_path / "stay")}
    shutil.copytree(env["NEWSLETTER_HOME"], stay["NEWSLETTER_HOME"])  # the same state, left on SQLite

    moved = cli(env, "migrate-db", pg_url)
    assert "digests: 2" in moved.stdout and "now set NEWSLETTER_DATABASE_URL" in moved.stdout
    assert "copied to postgresql" in moved.stdout and "Store(" not in moved.stdout  # the URL, not a repr

    add_dumps(env, seed_names()[1])
    on_sqlite = _run(stay, SECOND)
    on_postgresql = _run({**env, "NEWSLETTER_DATABASE_URL": pg_url}, SECOND)
    assert _digests(on_postgresql) == _digests(on_sqlite)  # same digests, same papers
    assert _digests(on_postgresql)  # something was due
    sent_first = {i["key"] for d in first["digests"] for i in d["items"]}
    sent_again = {i["key"] for d in on_postgresql["digests"] for i in d["items"]}
    assert not sent_first & sent_again  # nothing sent before went out again
    with Store(pg_url) as store:
        assert store.is_unsubscribed("nobody@example.org")
        assert [d.seq for d in store.dumps()] == [1, 2]  # the next id continues after the copied ones
    assert len(outbox(env)) == len(outbox(stay))


def test_migrating_into_a_database_with_state_is_refused(tmp_path: Path, pg_url: str) -> None:
    env = make_env(tmp_path)
    add_dumps(env, seed_names()[0])
    _run(env, FIRST)
    cli(env, "migrate-db", pg_url)
    again = cli(env, "migrate-db", pg_url, check=False)
    assert again.returncode == 1
    assert "already has rows in 'dumps'" in again.stderr and "Traceback" not in again.stderr
    with Store(pg_url) as store:
        assert len(store.dumps()) == 1


def test_migrating_from_where_there_is_no_state_is_refused(tmp_path: Path, pg_url: str) -> None:
    """From the wrong folder it made an empty state.db there, copied it and said to switch to it."""
    env = make_env(tmp_path)
    missing = cli(env, "migrate-db", pg_url, check=False)
    assert missing.returncode == 1 and "nothing to copy: there is no state database in" in missing.stderr
    assert not (Path(env["NEWSLETTER_HOME"]) / "state.db").exists()
    cli(env, "status")  # an empty state.db: a state with nothing in it
    empty = cli(env, "migrate-db", pg_url, check=False)
    assert empty.returncode == 1 and "holds no dumps and no deliveries" in empty.stderr
    with Store(pg_url) as store:
        assert store.is_empty()


def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with Store(url) as store, store._engine.connect() as conn:
        return {
            t.name: [tuple(row) for row in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
            for t in copied_tables()
        }


def test_every_row_of_every_table_is_copied(tmp_path: Path, pg_url: str) -> None:
    env = make_env(tmp_path)
    add_dumps(env, seed_names()[0])
    _run(env, FIRST)
    source = f"sqlite:///{env['NEWSLETTER_HOME']}/state.db"
    with Store(source) as store:
        StoreVectorCache(store).put("model", {"2401.00001": np.arange(4, dtype=np.float32)})

    cli(env, "migrate-db", pg_url)

    before, after = _rows(source), _rows(pg_url)
    assert after == before
    assert all(
        before[name] for name in ("dumps", "papers", "digests", "vectors", "installation")
    )  # rows moved


def test_the_clicks_serve_held_move_with_the_state(tmp_path: Path, pg_url: str) -> None:
    """They stayed in the old state folder: the person who unsubscribed got the next digest."""
    from newsletter.deliver.held import HELD_FILE, Click, hold

    env = make_env(tmp_path)
    add_dumps(env, seed_names()[0])
    first = _run(env, FIRST)
    reader = next(d["subscriber"] for d in first["digests"] if d["status"] == "sent")
    hold(Path(env["NEWSLETTER_HOME"]), Click("unsubscribe", reader, datetime.fromisoformat(FIRST)))
    cli(env, "migrate-db", pg_url)
    assert not (Path(env["NEWSLETTER_HOME"]) / HELD_FILE).read_bytes()
    with Store(pg_url) as store:
        assert store.is_unsubscribed(reader)
