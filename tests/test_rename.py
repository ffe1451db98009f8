"""`rename OLD NEW`: a subscriber who changed address keeps their history (sent papers, feedback)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from newsletter.errors import StoreError
from newsletter.store.schema import subscribers

from .helpers import add_dumps, cli, outbox, seed_names
from .test_store_helpers import at, open_store, plan_for, seeded

DAY1, DAY2 = "2026-03-11T08:00:00Z", "2026-03-12T08:00:00Z"


def _move_in_file(env: dict[str, str], old: str, new: str) -> None:
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    path.write_text(path.read_text().replace(old, new))


def _rows(env: dict[str, str], sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(Path(env["NEWSLETTER_HOME"]) / "state.db") as db:
        return db.execute(sql).fetchall()


def _sent_to(env: dict[str, str], address: str) -> list[str]:
    return [str(m["Subject"]) for m in outbox(env) if address in str(m["To"]).lower()]


def test_rename_gives_the_old_address_s_history_to_the_new_one(env: dict[str, str]) -> None:
    """A changed address was a new subscriber: its feedback stayed behind, and its state too."""
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", DAY1)
    first = _rows(
        env, "SELECT paper_id FROM digest_items JOIN digests ON id = digest_id WHERE email LIKE 'diff@%'"
    )
    assert first and _sent_to(env, "diff@example.org")
    paper = _rows(env, f"SELECT title FROM papers WHERE id = {first[0][0]}")[0][0]
    cli(env, "feedback", "diff@example.org", str(paper), "--less")
    _move_in_file(env, "diff@example.org", "New@Example.org")

    proc = cli(env, "rename", "diff@example.org", "new@example.org")

    assert proc.stdout == "diff@example.org -> new@example.org: 1 digest and 1 feedback mark moved\n"
    assert _rows(env, "SELECT DISTINCT email FROM digests WHERE email != 'ssm@example.org'") == [
        ("new@example.org",)
    ]
    assert _rows(env, "SELECT email, kind FROM feedback") == [("new@example.org", "less")]
    assert ("diff@example.org",) not in _rows(env, "SELECT email FROM subscribers")
    add_dumps(env, seed_names()[1])
    cli(env, "run", "--now", DAY2)
    assert _sent_to(env, "new@example.org")  # a digest from the next dump, to the new address
    items = _rows(
        env, "SELECT paper_id FROM digest_items JOIN digests ON id = digest_id WHERE email LIKE 'new@%'"
    )
    assert len(items) == len(set(items))  # no paper sent to the old address went again to the new one


def test_rename_refuses_what_would_lose_or_merge_a_history(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", DAY1)
    still = cli(env, "rename", "diff@example.org", "ssm@example.org", check=False)
    assert still.returncode == 1 and "diff@example.org is still a subscriber" in still.stderr
    _move_in_file(env, "diff@example.org", "new@example.org")
    unlisted = cli(env, "rename", "diff@example.org", "other@example.org", check=False)
    assert unlisted.returncode == 1 and "no subscriber with email 'other@example.org'" in unlisted.stderr
    typo = cli(env, "rename", "dif@example.org", "new@example.org", check=False)
    assert typo.returncode == 1 and "no history for dif@example.org" in typo.stderr
    cli(env, "feedback", "ssm@example.org", str(_rows(env, "SELECT title FROM papers")[0][0]), "--more")
    refused = cli(env, "rename", "diff@example.org", "ssm@example.org", check=False)
    assert refused.returncode == 1 and "ssm@example.org already has digests or feedback" in refused.stderr
    assert ("diff@example.org",) in _rows(env, "SELECT DISTINCT email FROM digests")  # nothing moved
    assert cli(env, "rename", "diff@example.org", "new@example.org").returncode == 0


def test_the_store_moves_state_digests_and_feedback_in_one_go(store_url: str) -> None:
    """On SQLite and PostgreSQL (the digests' email is a foreign key to the subscriber's row)."""
    with open_store(store_url) as store:
        seeded(store, 2)
        plan = plan_for(store, "d1", email="old@example.org")
        assert store.plan_digests([plan]) == 1
        marked = store.papers_first_seen_in(plan.watermark_seq)[0]
        assert store.record_feedback("old@example.org", marked.key, "more", at(25)) is not None
        store.record_unsubscribe("old@example.org", at(26))
        with store._tx("a refusal for good", write=True) as conn:  # as a 5.1.1 leaves it
            conn.execute(subscribers.update().values(bounced_at=at(26)))
        store.plan_digests([plan_for(store, "d2", email="taken@example.org", offset=3)])

        assert store.rename_subscriber("Old@Example.org", "new@example.org") == (1, 1)

        state, left = store.subscriber_state("new@example.org"), store.subscriber_state("old@example.org")
        assert state is not None and left is not None
        assert (state.watermark_seq, state.unsubscribed_at, state.bounced_at) == (2, at(26), None)
        assert (left.watermark_seq, left.unsubscribed_at, left.bounced_at) == (None, None, at(26))
        assert [r.email for r in store.deliveries() if r.digest_id == "d1"] == ["new@example.org"]
        with pytest.raises(StoreError, match=r"taken@example\.org already has digests or feedback"):
            store.rename_subscriber("new@example.org", "taken@example.org")
        with pytest.raises(StoreError, match=r"no history for gone@example\.org"):
            store.rename_subscriber("gone@example.org", "else@example.org")


def test_an_unsubscribe_of_the_new_address_stays(store_url: str) -> None:
    """`unsubscribe NEW` (a mailto unsubscribe, recorded by address alone) before the rename: NEW was
    mailed again, its bare row replaced by OLD's."""
    with open_store(store_url) as store:
        seeded(store, 2)
        assert store.plan_digests([plan_for(store, "d1", email="old@example.org")]) == 1
        store.record_unsubscribe("new@example.org", at(25))

        assert store.rename_subscriber("old@example.org", "new@example.org") == (1, 0)

        state = store.subscriber_state("new@example.org")
        assert state is not None and (state.watermark_seq, state.unsubscribed_at) == (2, at(25))
        assert store.is_unsubscribed("new@example.org")


def test_forget_after_a_rename_erases_what_was_sent_to_the_old_address(env: dict[str, str]) -> None:
    """The outbox files (named after the address the digest went to) and last-run.json's lines of the
    digests sent before the rename were left, the old address in them."""
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", DAY1)
    assert any("diff@example.org" in p.name for p in (Path(env["NEWSLETTER_HOME"]) / "outbox").iterdir())
    _move_in_file(env, "diff@example.org", "new@example.org")
    cli(env, "rename", "diff@example.org", "new@example.org")
    _move_in_file(env, "new@example.org", "nobody-else@example.org")

    proc = cli(env, "forget", "new@example.org")

    assert proc.stdout == "new@example.org: forgotten (1 digest, 0 feedback marks, 2 files)\n"
    home = Path(env["NEWSLETTER_HOME"])
    assert not [p.name for p in (home / "outbox").iterdir() if "diff@" in p.name]
    assert "diff@example.org" not in (home / "last-run.json").read_text()


def test_a_change_of_case_is_no_rename(env: dict[str, str]) -> None:
    """It was refused as 'diff@example.org is still a subscriber: change its address ... then rename'."""
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", DAY1)
    _move_in_file(env, "diff@example.org", "Diff@Example.ORG")

    proc = cli(env, "rename", "diff@example.org", "Diff@Example.ORG")

    assert proc.stdout.startswith("diff@example.org and Diff@Example.ORG are one address to newsletter")
    assert _rows(env, "SELECT COUNT(*) FROM digests WHERE email = 'diff@example.org'") == [(1,)]
