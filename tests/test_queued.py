"""Queued digests sent again in batches: to an API with idempotency keys (Resend), a digest goes out
again under the key of its first request or alone under its own; never under a key derived anew."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from newsletter.config import Settings
from newsletter.deliver import Courier
from newsletter.deliver.queued import QueuedDigests
from newsletter.errors import StoreError
from newsletter.models import OutgoingMessage, RenderedDigest, Subscriber
from newsletter.report import RunReport
from newsletter.send.apis.resend import ResendTransport
from newsletter.send.message import build_message
from newsletter.store import Store
from newsletter.subscribers import SubscriberList

from .test_send_smtp import ENVELOPE
from .test_store_helpers import at, db_url, open_store, plan_for, seeded

EMAILS = ["a@example.net", "b@example.net"]


def _message(digest_id: str, to: str) -> OutgoingMessage:
    rendered = RenderedDigest("s", "<p>x</p>", "x\n")
    return build_message(
        digest_id=digest_id, envelope=ENVELOPE, to_name="X", to_addr=to, rendered=rendered, date=at(24)
    )


def _resend(
    api: Callable[[httpx.Request], httpx.Response], batch_size: int = 100
) -> Callable[[], ResendTransport]:
    def factory() -> ResendTransport:
        transport = ResendTransport(SecretStr("re_key"), http=httpx.MockTransport(api), sleep=lambda s: None)
        transport.batch_size = batch_size
        return transport

    return factory


def _send_queued(store: Store, tmp_path: Path, factory: Callable[[], ResendTransport]) -> RunReport:
    people = tuple(Subscriber(email=e, interests=("x",)) for e in EMAILS)
    build = lambda sub, items, digest_id, date, **_: _message(digest_id, sub.email)  # noqa: E731
    report = RunReport()
    queue = QueuedDigests(store, Settings(), factory, build)
    queue.deliver_pending(report, SubscriberList(tmp_path / "s.yaml", people), at(25), True, None)
    return report


def _plan_both(store: Store) -> None:
    """A digest queued for each of EMAILS: d0, d1."""
    seeded(store)
    for n, email in enumerate(EMAILS):
        store.plan_digests([plan_for(store, f"d{n}", email, offset=n)])


def _accepting(seen: list[tuple[str, str]]) -> Callable[[httpx.Request], httpx.Response]:
    def api(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("idempotency-key", "")))
        if request.url.path.endswith("/batch"):
            body: list[Any] = json.loads(request.content)
            return httpx.Response(200, json={"data": [{"id": f"m{i}"} for i in range(len(body))]})
        return httpx.Response(200, json={"id": "m"})

    return api


def test_an_unknown_digest_sent_alone_is_resent_alone_under_its_own_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regrouped into a new batch under a new key, a digest that did arrive would arrive twice."""
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[str, str]] = []
    with open_store(db_url(tmp_path)) as store:
        _plan_both(store)
        for n in range(len(EMAILS)):
            store.mark_sending(f"d{n}", at(24), "<m>")  # went out alone: no batch key
            store.mark_unknown(f"d{n}", at(24), "timeout")
        store.requeue(at(25), statuses=("unknown",))  # `newsletter retry --unknown`
        report = _send_queued(store, tmp_path, _resend(_accepting(seen)))
    assert [d.status for d in report.digests] == ["sent", "sent"]
    assert [key for _, key in seen] == ["newsletter-digest/d0", "newsletter-digest/d1"], seen


def test_a_refused_batch_retried_is_not_sent_under_the_key_it_was_refused_under(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`requeue` drops a refused digest's batch key (Resend answers 409 to a key reused with another
    body); regrouped, the same digests derived the very same key again."""
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[str, str]] = []
    accepting = _accepting(seen)
    refusing = [True]

    def api(request: httpx.Request) -> httpx.Response:
        if refusing[0]:
            seen.append((request.url.path, request.headers.get("idempotency-key", "")))
            return httpx.Response(422, json={"name": "validation_error", "message": "bad"})
        return accepting(request)

    factory = _resend(api)
    with open_store(db_url(tmp_path)) as store:
        _plan_both(store)
        with factory() as transport, Courier(store, transport, Settings(), sleep=lambda s: None) as courier:
            refused = courier.deliver_batch(
                [(_message(f"d{n}", e), ()) for n, e in enumerate(EMAILS)], at(24)
            )
        assert [o.status for o in refused] == ["failed", "failed"]
        store.requeue(at(25), statuses=("failed",))  # `newsletter retry`
        refusing[0] = False
        report = _send_queued(store, tmp_path, factory)
    assert [d.status for d in report.digests] == ["sent", "sent"]
    first, *again = [key for _, key in seen]
    assert first.startswith("newsletter-batch/") and first not in again, seen


def test_digests_a_stop_left_planned_go_out_in_one_batch_to_resend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planned and never sent (a stop, a long Retry-After left the rest of a chunk queued): no request
    carried them, so a new batch is safe; sent alone they were a request each (Resend: 2 a second)."""
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[str, str]] = []
    with open_store(db_url(tmp_path)) as store:
        _plan_both(store)
        report = _send_queued(store, tmp_path, _resend(_accepting(seen)))
    assert [d.status for d in report.digests] == ["sent", "sent"]
    assert [path for path, _ in seen] == ["/emails/batch"], seen


def test_an_unknown_batch_is_resent_under_its_key_after_the_batch_size_became_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NEWSLETTER_BATCH_SIZE=1 since: each digest alone under its own key would be a new request to
    Resend, so a digest the batch did deliver would arrive twice. The same request goes out again."""
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[str, str]] = []
    with open_store(db_url(tmp_path)) as store:
        _plan_both(store)
        with store.delivery_session() as session:
            session.sending_many([("d0", "<a>"), ("d1", "<b>")], at(24), batch_key="newsletter-batch/k1")
        for n in range(len(EMAILS)):
            store.mark_unknown(f"d{n}", at(24), "timeout")
        store.requeue(at(25), statuses=("unknown",))  # `newsletter retry --unknown`
        report = _send_queued(store, tmp_path, _resend(_accepting(seen), batch_size=1))
    assert [d.status for d in report.digests] == ["sent", "sent"]
    assert seen == [("/emails/batch", "newsletter-batch/k1")], seen


def test_a_batch_over_the_byte_limit_goes_out_a_request_per_key_and_is_resent_under_the_same_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Split by the transport under key/1, key/2 and kept under the batch's key, a part left unknown
    was resent under a key Resend never saw: a digest that had arrived arrived twice (found by a
    review). Each part now goes out as a batch of its own, under its own key, and is resent under it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ResendTransport, "batch_bytes", 1)  # one message per request
    seen: list[tuple[str, str]] = []
    accepting = _accepting(seen)
    timed_out: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        if seen and len(seen) < 2:  # the second request times out, every try of it
            timed_out.append(request.headers.get("idempotency-key", ""))
            raise httpx.ReadTimeout("timed out", request=request)
        return accepting(request)

    factory = _resend(api)
    with open_store(db_url(tmp_path)) as store:
        _plan_both(store)
        with factory() as transport, Courier(store, transport, Settings(), sleep=lambda s: None) as courier:
            jobs = [(_message(f"d{n}", e), ()) for n, e in enumerate(EMAILS)]
            assert [o.status for o in courier.deliver_batch(jobs, at(24))] == ["sent", "unknown"]
        store.requeue(at(25), statuses=("unknown",))  # `newsletter retry --unknown`
        seen.append(("", "retrying"))
        report = _send_queued(store, tmp_path, factory)
    assert [d.status for d in report.digests] == ["sent"]
    (sent_first, _, retried) = [key for _, key in seen]
    assert len(set(timed_out)) == 1 and retried == timed_out[0] != sent_first


def test_a_batch_rebuilt_too_big_for_its_key_fails_and_retry_sends_it_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In parts, under keys Resend never saw, a message the first request delivered would arrive twice;
    left 'unknown' under the key, it would never go out (found by a review). It fails, once, and
    `newsletter retry` (which drops the key) sends each digest alone."""
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[str, str]] = []
    with open_store(db_url(tmp_path)) as store:
        _plan_both(store)
        with store.delivery_session() as session:
            session.sending_many([("d0", "<a>"), ("d1", "<b>")], at(24), batch_key="newsletter-batch/k1")
        for n in range(len(EMAILS)):
            store.mark_failed(f"d{n}", at(24), "503 busy", permanent=False)  # refused: kept its key
        monkeypatch.setattr(ResendTransport, "batch_bytes", 1)  # rebuilt, they no longer fit one request
        failed = _send_queued(store, tmp_path, _resend(_accepting(seen)))
        assert seen == [] and [d.status for d in failed.digests] == ["failed", "failed"]
        assert all("no longer fits one request" in d.reason for d in failed.digests)
        store.requeue(at(26), statuses=("failed",))  # `newsletter retry`
        report = _send_queued(store, tmp_path, _resend(_accepting(seen)))
    assert [d.status for d in report.digests] == ["sent", "sent"]
    assert [key for _, key in seen] == ["newsletter-digest/d0", "newsletter-digest/d1"], seen


def test_the_queue_stops_sending_once_the_run_lock_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It looked at the lock once, before the first queued digest: a run whose lock's connection ended
    went on sending beside the run that took the lock (found by a review on PostgreSQL)."""
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[str, str]] = []
    looks: list[int] = []

    def check_lock() -> None:
        looks.append(len(seen))
        if seen:
            raise StoreError("this run lost the database's run lock (its connection ended)")

    people = tuple(Subscriber(email=e, interests=("x",)) for e in EMAILS)
    build = lambda sub, items, digest_id, date, **_: _message(digest_id, sub.email)  # noqa: E731
    with open_store(db_url(tmp_path)) as store:
        _plan_both(store)
        queue = QueuedDigests(
            store, Settings(), _resend(_accepting(seen), batch_size=1), build, check_lock=check_lock
        )
        with pytest.raises(StoreError, match="lost the database's run lock"):
            queue.deliver_pending(
                RunReport(), SubscriberList(tmp_path / "s.yaml", people), at(25), True, None
            )
        statuses = sorted(d.status for d in store.deliveries(with_items=False))
    assert len(seen) == 1 and looks == [0, 1] and statuses == ["pending", "sent"]
