"""The delivery log: planning, the state machine, crash recovery, claimed papers, unsubscribes."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from newsletter.errors import StoreError
from newsletter.store import (
    CANCELLED,
    FAILED,
    PENDING,
    RETRY,
    SENDING,
    SENT,
    UNKNOWN,
    DigestPlan,
    InvalidTransition,
    PlannedItem,
    Store,
)
from newsletter.store.records import DeliveryRecord
from newsletter.store.schema import subscribers
from tests.test_store_helpers import at, claimed_papers, mark_sent, open_store, plan_for, seeded

ADA = "ada@example.org"
BOB = "bob@example.org"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as opened:
        seeded(opened, 2)
        yield opened


def _status(store: Store, digest_id: str) -> str:
    (record,) = [r for r in store.deliveries() if r.digest_id == digest_id]
    return record.status


def test_plan_records_a_pending_digest_and_moves_the_watermark(store: Store) -> None:
    plan = plan_for(store, "d1")

    assert store.plan_digests([plan]) == 1

    state = store.subscriber_state(ADA)
    assert state is not None
    assert (state.watermark_seq, state.last_digest_at, state.unsubscribed_at) == (2, at(24), None)
    (record,) = store.pending_deliveries()
    assert (record.digest_id, record.email, record.status, record.attempts) == ("d1", ADA, PENDING, 0)
    assert (record.subject, record.created_at, record.watermark_seq) == ("3 papers", at(24), 2)
    assert [(i.paper.id, i.position, i.why) for i in record.items] == [
        (item.paper_id, item.position, item.why) for item in plan.items
    ]
    assert record.items[0].paper.title == store.papers_first_seen_in(2)[0].title


def test_planning_the_same_digest_twice_changes_nothing(store: Store) -> None:
    plan = plan_for(store, "d1")
    assert store.plan_digests([plan]) == 1
    store.mark_sending("d1", at(25))
    different = replace(plan_for(store, "d1", offset=5), watermark_seq=99, subject="other")

    assert store.plan_digests([different]) == 0

    (record,) = store.deliveries()
    assert (record.status, record.subject, record.attempts) == (SENDING, "3 papers", 1)
    assert [i.paper.id for i in record.items] == [i.paper_id for i in plan.items]
    state = store.subscriber_state(ADA)
    assert state is not None and state.watermark_seq == 2


def test_plan_digests_plans_many_in_one_go_and_skips_known_ids(store: Store) -> None:
    assert store.plan_digests([plan_for(store, "old", BOB)]) == 1
    plans = [plan_for(store, f"d{i}", f"user{i}@example.org") for i in range(3)]

    planned = store.plan_digests([*plans, plans[0], plan_for(store, "old", BOB, offset=4)])

    assert planned == 3
    assert {r.digest_id for r in store.pending_deliveries()} == {"old", "d0", "d1", "d2"}
    assert store.plan_digests(plans) == 0


def test_a_plan_naming_an_unknown_paper_records_nothing(store: Store) -> None:
    bad = DigestPlan("bad", ADA, at(24), 2, "s", (PlannedItem(10_000, 1, 1.0, "x"),))

    with pytest.raises(StoreError, match=r"(?i)foreign ?key"):
        store.plan_digests([bad])

    assert store.deliveries() == []
    assert store.subscriber_state(ADA) is None


def test_a_plan_without_papers_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="at least one paper"):
        store.plan_digests([DigestPlan("empty", ADA, at(24), 2, "s", ())])


def test_sending_then_sent(store: Store) -> None:
    store.plan_digests([plan_for(store, "d1")])

    store.mark_sending("d1", at(25), message_id="<d1@example.org>")
    assert _status(store, "d1") == SENDING
    mark_sent(store, "d1", at(26), "<d1@example.org>")

    (record,) = store.deliveries([SENT])
    assert (record.attempts, record.message_id, record.updated_at, record.last_error) == (
        1,
        "<d1@example.org>",
        at(26),
        None,
    )
    assert store.pending_deliveries() == []


def test_a_temporary_failure_is_retried_after_not_before(store: Store) -> None:
    store.plan_digests([plan_for(store, "d1")])
    store.mark_sending("d1", at(25))

    store.mark_failed("d1", at(25), "451 try later", permanent=False, retry_at=at(26))

    (record,) = store.deliveries([RETRY])
    assert (record.last_error, record.not_before) == ("451 try later", at(26))
    assert store.pending_deliveries(now=at(25.5)) == []
    assert [r.digest_id for r in store.pending_deliveries(now=at(26))] == ["d1"]
    store.mark_sending("d1", at(27))
    mark_sent(store, "d1", at(27), "<m>")
    assert store.deliveries([SENT])[0].attempts == 2


def test_a_permanent_failure_is_never_sent_again(store: Store) -> None:
    store.plan_digests([plan_for(store, "d1")])
    store.mark_sending("d1", at(25))

    store.mark_failed("d1", at(25), "550 no such user", permanent=True)

    assert _status(store, "d1") == FAILED
    assert store.pending_deliveries() == []
    with pytest.raises(InvalidTransition, match="'d1' is failed, not pending or retry"):
        store.mark_sending("d1", at(26))


def test_a_pending_digest_can_fail_before_any_send(store: Store) -> None:
    store.plan_digests([plan_for(store, "d1")])
    store.mark_failed("d1", at(25), "template error", permanent=True)
    assert store.deliveries()[0].attempts == 0
    assert _status(store, "d1") == FAILED


@pytest.mark.parametrize(
    ("setup", "action", "message"),
    [
        ([], lambda s: mark_sent(s, "d1", at(30), "<m>"), "was not 'sending' when marked sent"),
        ([], lambda s: s.mark_unknown("d1", at(30), "?"), "is pending, not sending"),
        (["sending", "sent"], lambda s: s.mark_sending("d1", at(30)), "is sent, not pending or retry"),
        (["sending", "sent"], lambda s: s.mark_failed("d1", at(30), "x", True), "is sent"),
        (["sending", "sent"], lambda s: s.mark_unknown("d1", at(30), "?"), "is sent, not sending or unknown"),
        (["sending"], lambda s: s.mark_sending("d1", at(30)), "is sending"),
        ([], lambda s: s.mark_sending("nope", at(30)), "no delivery record for digest 'nope'"),
    ],
)
def test_transitions_out_of_order_are_refused(
    store: Store, setup: list[str], action: Callable[[Store], None], message: str
) -> None:
    store.plan_digests([plan_for(store, "d1")])
    for step in setup:
        if step == "sending":
            store.mark_sending("d1", at(25))
        else:
            mark_sent(store, "d1", at(26), "<m>")
    before = store.deliveries()

    with pytest.raises(InvalidTransition, match=message):
        action(store)

    assert store.deliveries() == before


def test_unknown_is_reported_not_queued(store: Store) -> None:
    store.plan_digests([plan_for(store, "d1")])
    store.mark_sending("d1", at(25))

    store.mark_unknown("d1", at(25), "connection lost after DATA")

    (record,) = store.deliveries([UNKNOWN])
    assert record.last_error == "connection lost after DATA"
    assert store.pending_deliveries() == []


def test_recover_interrupted_turns_sending_into_unknown(store: Store) -> None:
    for digest_id, email in (("a", ADA), ("b", BOB), ("c", "cy@example.org")):
        store.plan_digests([plan_for(store, digest_id, email)])
    store.mark_sending("a", at(25))
    store.mark_sending("b", at(25))

    assert store.recover_interrupted(at(30)) == ["a", "b"]

    assert [(r.digest_id, r.status) for r in store.deliveries()] == [
        ("a", UNKNOWN),
        ("b", UNKNOWN),
        ("c", PENDING),
    ]
    assert "interrupted" in (store.deliveries([UNKNOWN])[0].last_error or "")
    assert store.recover_interrupted(at(31)) == []


def test_a_digest_refused_and_waiting_for_its_next_try_is_queued_again_by_recovery(store: Store) -> None:
    for digest_id, email in (("a", ADA), ("b", BOB)):
        store.plan_digests([plan_for(store, digest_id, email)])
        store.mark_sending(digest_id, at(25))
    store.hold_refused(["a"], "rate limit for digest a: 429")  # a crash comes during the wait

    assert store.recover_interrupted(at(30)) == ["b"]  # only b may have been accepted

    (queued,) = store.deliveries([RETRY])
    assert (queued.digest_id, queued.not_before) == ("a", None)  # due at once
    assert (queued.last_error or "").startswith("interrupted while waiting to try a refused request")
    assert "rate limit for digest a: 429" in (queued.last_error or "")
    store.mark_sending("a", at(31))
    assert store.recover_interrupted(at(32)) == ["a"]  # held no more: its next try may have gone out


def test_a_refused_digest_released_after_its_wait_is_sending_again_unless_taken_over(store: Store) -> None:
    for digest_id, email in (("a", ADA), ("b", BOB)):
        store.plan_digests([plan_for(store, digest_id, email)])
        store.mark_sending(digest_id, at(25))
    store.hold_refused(["a", "b"], "rate limit")
    assert store.release_refused(["a"]) == ["a"]
    assert store.recover_interrupted(at(30)) == ["a"]  # another process, meanwhile: a is in flight again

    assert store.release_refused(["b"]) == []  # b was queued again by that recovery: not ours to send
    assert _status(store, "b") == RETRY


def test_a_refused_digest_another_process_is_sending_again_is_not_released(store: Store) -> None:
    """Recovered and picked up by another run, it is 'sending' again but no longer held: this run's
    release must leave it to that run, or both send it."""
    store.plan_digests([plan_for(store, "a")])
    store.mark_sending("a", at(25))
    store.hold_refused(["a"], "rate limit")
    store.recover_interrupted(at(30))  # another process: queued again
    store.mark_sending("a", at(31))  # and that process sends it

    assert store.release_refused(["a"]) == []


def test_a_digest_queued_again_after_its_subscriber_unsubscribed_is_never_sending(store: Store) -> None:
    """An unsubscribe cancels queued digests, not one waiting in 'sending' after a refusal; a crash
    then queues it again: it must not go out."""
    store.plan_digests([plan_for(store, "a")])
    store.mark_sending("a", at(25))
    store.hold_refused(["a"], "rate limit")
    store.record_unsubscribe(ADA, at(26))
    store.recover_interrupted(at(30))

    with pytest.raises(InvalidTransition, match="has unsubscribed"):
        store.mark_sending("a", at(31))
    assert _status(store, "a") == RETRY


_CRASHER = """
import os, sys
from newsletter.store import Store
from newsletter.store.records import DeliveryRecord
from newsletter.store.schema import subscribers
from tests.test_store_helpers import at, plan_for
store = Store(sys.argv[1])
store.plan_digests([plan_for(store, "crash")])
store.mark_sending("crash", at(25))
print("sending", flush=True)
sys.stdin.read()  # the 'network step' never finishes: the parent kills us here
"""


def test_a_run_killed_mid_send_leaves_an_unknown_after_recovery(store_url: str) -> None:
    with open_store(store_url) as store:
        seeded(store, 1)
    root = Path(__file__).resolve().parent.parent
    with subprocess.Popen(
        [sys.executable, "-c", _CRASHER, store_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "sending"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL

    with open_store(store_url) as store:
        assert store.pending_deliveries() == []
        assert store.recover_interrupted(at(30)) == ["crash"]
        assert store.deliveries()[0].status == UNKNOWN
        assert len(claimed_papers(store, ADA)) == 3


def test_the_log_claims_the_papers_of_every_digest_that_went_or_may_go_out(store: Store) -> None:
    per_status = {PENDING: 0, SENDING: 1, SENT: 2, RETRY: 3, UNKNOWN: 4, FAILED: 5}
    plans = {status: plan_for(store, status, papers=2, offset=2 * n) for status, n in per_status.items()}
    store.plan_digests(plans.values())
    store.plan_digests([plan_for(store, CANCELLED, "cy@example.org", papers=2)])
    store.record_unsubscribe("cy@example.org", at(25))
    store.plan_digests([plan_for(store, "bob", BOB, papers=1, offset=20)])
    for status in (SENDING, SENT, RETRY, UNKNOWN):
        store.mark_sending(status, at(25))
    mark_sent(store, SENT, at(26), "<m>")
    store.mark_failed(RETRY, at(26), "421", permanent=False)
    store.mark_unknown(UNKNOWN, at(26), "?")
    store.mark_failed(FAILED, at(26), "550", permanent=True)

    claimed = {i.paper_id for s in (PENDING, SENDING, SENT, RETRY, UNKNOWN) for i in plans[s].items}
    assert claimed_papers(store, ADA) == claimed
    assert claimed_papers(store, " ADA@Example.org ") == claimed
    assert len(claimed_papers(store, BOB)) == 1
    assert claimed_papers(store, "nobody@example.org") == set()
    assert claimed_papers(store, "cy@example.org") == set()  # cancelled


def test_unsubscribe_cancels_queued_digests_and_blocks_new_sends(store: Store) -> None:
    store.plan_digests([plan_for(store, "queued")])
    assert not store.is_unsubscribed(ADA)

    store.record_unsubscribe("Ada@Example.org", at(30))
    store.record_unsubscribe(ADA, at(40))

    assert store.is_unsubscribed(ADA)
    state = store.subscriber_state(ADA)
    assert state is not None and state.unsubscribed_at == at(30)
    assert _status(store, "queued") == CANCELLED
    assert claimed_papers(store, ADA) == set()
    store.plan_digests([plan_for(store, "late")])  # planned by a run that read the list before it
    assert store.pending_deliveries() == [] and _status(store, "late") == CANCELLED
    with pytest.raises(InvalidTransition):
        store.mark_sending("late", at(41))
    assert store.unsubscribed_emails() == {ADA}


def test_a_digest_queued_when_its_subscriber_unsubscribes_is_not_sent(store: Store) -> None:
    store.plan_digests([plan_for(store, "queued")])
    with store._engine.begin() as conn:  # the unsubscribe committed beside the plan (PostgreSQL)
        conn.execute(subscribers.update().values(unsubscribed_at=at(30)))
    assert _status(store, "queued") == PENDING
    with store.delivery_session() as session, pytest.raises(InvalidTransition):
        session.sending("queued", "<q@x>", at(31))
    assert _status(store, "queued") == PENDING


def test_unsubscribe_of_an_unknown_address_is_recorded(store: Store) -> None:
    store.record_unsubscribe("new@example.org", at(1))
    assert store.is_unsubscribed("new@example.org")
    assert not store.is_unsubscribed("other@example.org")


def test_requeue_puts_failed_and_unknown_back_as_retry(store: Store) -> None:
    for digest_id, email in (("f", ADA), ("u", BOB), ("s", "cy@example.org")):
        store.plan_digests([plan_for(store, digest_id, email)])
        store.mark_sending(digest_id, at(25))
    store.mark_failed("f", at(26), "550", permanent=True)
    store.mark_unknown("u", at(26), "?")
    mark_sent(store, "s", at(26), "<s>")

    assert store.requeue(at(30), statuses=[UNKNOWN]) == ["u"]
    assert store.requeue(at(30)) == ["f"]

    assert [(r.digest_id, r.status) for r in store.pending_deliveries()] == [("f", RETRY), ("u", RETRY)]
    assert store.requeue(at(31), digest_ids=["s"]) == []


def test_a_refused_digest_requeued_drops_its_batch_key_and_an_unknown_one_keeps_it(store: Store) -> None:
    """Resent alone under the key of the batch it was refused in, Resend would answer 409."""
    for digest_id, email in (("f", ADA), ("u", BOB)):
        store.plan_digests([plan_for(store, digest_id, email)])
    with store.delivery_session() as session:
        session.sending_many([("f", "<f>"), ("u", "<u>")], at(25), batch_key="newsletter-batch/k1")
    store.mark_failed("f", at(26), "422 invalid to", permanent=True)
    store.mark_unknown("u", at(26), "timeout")
    assert sorted(store.requeue(at(30), statuses=[FAILED, UNKNOWN])) == ["f", "u"]
    keys = {r.digest_id: r.batch_key for r in store.pending_deliveries()}
    assert keys == {"f": None, "u": "newsletter-batch/k1"}


def test_a_second_planner_of_the_same_papers_is_dropped_and_the_watermark_never_goes_back(
    store: Store,
) -> None:
    """A coordinator restarted while its shards ran: its new shards planned window (1, 3] while the old
    ones still planned (1, 2], so each paper went out in two digests with different ids."""
    first = plan_for(store, "old-shard", papers=3)
    store.plan_digests([replace(first, watermark_seq=3)])
    overlapping = replace(plan_for(store, "new-shard", papers=3, offset=1), watermark_seq=2)
    elsewhere = plan_for(store, "new-shard-bob", BOB, papers=3, offset=1)  # another subscriber: fine
    assert store.plan_digests([overlapping, elsewhere]) == 1  # Bob's only
    assert {r.digest_id for r in store.pending_deliveries()} == {"old-shard", "new-shard-bob"}
    state = store.subscriber_state(ADA)
    assert state is not None and state.watermark_seq == 3  # not moved back to 2 by any later plan
    fresh = replace(plan_for(store, "later", papers=2, offset=3), watermark_seq=2)
    assert store.plan_digests([fresh]) == 1  # new papers: planned, and the watermark stays at 3
    state = store.subscriber_state(ADA)
    assert state is not None and state.watermark_seq == 3


def test_pending_deliveries_are_oldest_first_and_can_be_capped(store: Store) -> None:
    for hours, digest_id in ((3, "c"), (1, "a"), (2, "b")):
        store.plan_digests(
            [replace(plan_for(store, digest_id, f"{digest_id}@example.org"), created_at=at(hours))]
        )

    assert [r.digest_id for r in store.pending_deliveries()] == ["a", "b", "c"]
    assert [r.digest_id for r in store.pending_deliveries(limit=2)] == ["a", "b"]
    assert store.delivery_counts() == {PENDING: 3}


def test_deliveries_filter_by_status_and_email(store: Store) -> None:
    store.plan_digests([plan_for(store, "a", ADA)])
    store.plan_digests([plan_for(store, "b", BOB)])
    store.mark_sending("b", at(25))

    assert [r.digest_id for r in store.deliveries(email=BOB)] == ["b"]
    assert [r.digest_id for r in store.deliveries([PENDING])] == ["a"]
    assert store.deliveries([SENT]) == []
    assert store.deliveries(with_items=False)[0].items == ()


def test_advance_watermark_creates_the_subscriber_and_never_goes_back(store: Store) -> None:
    assert store.subscriber_state(ADA) is None

    store.advance_watermarks([ADA], 2)
    store.advance_watermarks([ADA], 1)

    state = store.subscriber_state(ADA)
    assert state is not None and (state.watermark_seq, state.last_digest_at) == (2, None)
    assert set(store.subscriber_states()) == {ADA}


# -- the hot path: DeliverySession ------------------------------------------------------------------


def _record(store: Store, digest_id: str) -> DeliveryRecord:
    (record,) = [r for r in store.deliveries() if r.digest_id == digest_id]
    return record


def test_session_folds_each_acceptance_into_the_next_sending(store: Store) -> None:
    store.plan_digests([plan_for(store, "d1"), plan_for(store, "d2", email=BOB)])
    with store.delivery_session() as session:
        session.sending("d1", "<m1@example.org>", at(30))
        session.accepted("d1", "<m1@example.org>", at(30))
        assert _status(store, "d1") == SENDING  # accepted, not yet committed
        session.sending("d2", "<m2@example.org>", at(31))
        assert (_status(store, "d1"), _status(store, "d2")) == (SENT, SENDING)
        session.accepted("d2", "<m2@example.org>", at(31))
    assert _status(store, "d2") == SENT  # committed on exit
    first = _record(store, "d1")
    assert (first.updated_at, first.message_id, first.attempts) == (at(30), "<m1@example.org>", 1)


def test_an_acceptance_is_recorded_even_after_another_process_called_the_send_unknown(store: Store) -> None:
    """A new coordinator's recovery can mark a live worker's send 'unknown'; when the server then
    accepts it, it is 'sent' (a fact), and the worker goes on with its next message."""
    store.plan_digests([plan_for(store, "d1"), plan_for(store, "d2", email=BOB)])
    with store.delivery_session() as session:
        session.sending("d1", "<m1@example.org>", at(30))
        assert store.recover_interrupted(at(30)) == ["d1"]  # another process, meanwhile
        session.accepted("d1", "<m1@example.org>", at(31))
        session.sending("d2", "<m2@example.org>", at(31))
        session.accepted("d2", "<m2@example.org>", at(32))
    assert (_status(store, "d1"), _status(store, "d2")) == (SENT, SENT)


def test_a_refusal_is_recorded_even_after_another_process_called_the_send_unknown(store: Store) -> None:
    """The same, when the server refuses the message: it was not sent, so it is queued (or failed),
    not left 'unknown' for an operator to resend by hand."""
    store.plan_digests([plan_for(store, "d1"), plan_for(store, "d2", email=BOB)])
    store.mark_sending("d1", at(30))
    store.mark_sending("d2", at(30))
    assert store.recover_interrupted(at(30)) == ["d1", "d2"]  # another process, meanwhile
    store.mark_failed("d1", at(31), "451 try later", permanent=False, retry_at=at(36))
    store.mark_failed("d2", at(31), "550 no such user", permanent=True)
    assert (_status(store, "d1"), _status(store, "d2")) == (RETRY, FAILED)


def test_an_acceptance_of_a_digest_requeued_meanwhile_does_not_fail_the_next_one(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """`retry --unknown` requeued a live worker's send: its acceptance raised 'd1 was not sending' in the
    next digest's step, under that digest's address, and every later step of the shard failed the same way."""
    store.plan_digests([plan_for(store, "d1"), plan_for(store, "d2", email=BOB)])
    with store.delivery_session() as session:
        session.sending("d1", "<m1@example.org>", at(30))
        session.accepted("d1", "<m1@example.org>", at(30))
        assert store.recover_interrupted(at(30)) == ["d1"]  # another process, meanwhile
        assert store.requeue(at(30), statuses=[UNKNOWN], digest_ids=["d1"]) == ["d1"]
        session.sending("d2", "<m2@example.org>", at(31))
        session.accepted("d2", "<m2@example.org>", at(31))
    assert (_status(store, "d1"), _status(store, "d2")) == (RETRY, SENT)
    assert "digest 'd1' was accepted by the server, but another process had taken it over" in caplog.text


def test_session_refuses_a_cancelled_digest(store: Store) -> None:
    store.plan_digests([plan_for(store, "d1")])
    store.record_unsubscribe(ADA, at(25))
    with store.delivery_session() as session, pytest.raises(InvalidTransition):
        session.sending("d1", "<m1@example.org>", at(30))
    assert _status(store, "d1") == CANCELLED


def test_session_database_error_is_a_one_line_store_error(store: Store) -> None:
    store.plan_digests([plan_for(store, "d1")])
    with store.delivery_session() as session:
        with store._engine.begin() as conn:  # the table disappears under a running session
            conn.exec_driver_sql("ALTER TABLE digests RENAME TO digests_gone")
        with pytest.raises(StoreError) as caught:
            session.sending("d1", "<m1@example.org>", at(30))
    message = str(caught.value)
    assert "marking digest d1 sending" in message
    assert "no such table" in message or "does not exist" in message  # SQLite / PostgreSQL
    assert "\n" not in message and "UPDATE" not in message


def test_a_session_per_connection_up_to_the_most_a_run_opens_leaves_room_for_the_rest(store: Store) -> None:
    """A run holds a session (a database connection) per mail connection, up to 64: the pool used to
    stop at 15 and the 16th waited 30 s for a TimeoutError."""
    with contextlib.ExitStack() as stack:
        for _ in range(64):
            stack.enter_context(store.delivery_session())
        store.plan_digests([plan_for(store, "d1")])  # planning and reports still get a connection
        assert _status(store, "d1") == PENDING


def test_what_the_database_would_not_record_sent_is_handed_over_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pending acceptance and a batch's, when their commit fails: to the run's state folder, then
    no longer the session's (a later commit must not record them again)."""
    handed: list[tuple[list[tuple[str, str]], object]] = []
    with store.delivery_session(unrecorded=lambda pairs, when: handed.append((list(pairs), when))) as session:
        session.accepted("d1", "<m1>", at(26))

        @contextlib.contextmanager
        def down(action: str) -> Iterator[None]:
            raise StoreError(f"database error while {action}: server closed the connection")
            yield

        monkeypatch.setattr(session, "_tx", down)
        with pytest.raises(StoreError):
            session.sent_many([("d2", "<m2>"), ("d3", "<m3>")], at(27))
        session.flush()  # nothing left to record
    assert handed == [([("d1", "<m1>")], at(26)), ([("d2", "<m2>"), ("d3", "<m3>")], at(27))]
