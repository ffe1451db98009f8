"""API batches: the batch size per provider, and Resend batches across a crash (the digests keep their batch's key).

Resend's side (https://resend.com/docs/dashboard/emails/idempotency-keys): a request whose key was seen in
the last 24 h with the same body gets the first reply and sends nothing; with another body, 409
``invalid_idempotent_request``. The fake below keeps that state in files, so it survives the kill -9 of
the process that made the first request.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from newsletter.config import PACKAGE_TEMPLATES, Settings
from newsletter.errors import ConfigError
from newsletter.render import Renderer
from newsletter.send.apis import ResendTransport, api_transport
from newsletter.store import UNKNOWN, Store

from .test_crash import NOW, kill_self, make_folder, pipeline, run_until_killed
from .test_store_helpers import mark_sent


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(PACKAGE_TEMPLATES)


class FakeResend:
    """POST /emails and /emails/batch with Resend's idempotency, state in ``folder``; ``die`` kills the caller."""

    def __init__(self, folder: Path, die: bool = False) -> None:
        self.folder, self.die = folder, die
        folder.mkdir(exist_ok=True)
        self.keys: list[str] = []

    @property
    def delivered(self) -> Counter[str]:
        path = self.folder / "delivered.txt"
        return Counter(path.read_text().split() if path.exists() else [])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.headers["Idempotency-Key"]
        self.keys.append(key)
        seen = self.folder / hashlib.sha256(key.encode()).hexdigest()
        body = json.loads(request.content)
        items = body if request.url.path == "/emails/batch" else [body]
        reply: object = {"data": [{"id": f"re-{i}"} for i in range(len(items))]}
        if request.url.path == "/emails":
            reply = {"id": "re-0"}
        if seen.exists():
            if seen.read_bytes() != request.content:
                return httpx.Response(
                    409, json={"name": "invalid_idempotent_request", "message": "other body"}
                )
            return httpx.Response(200, json=reply)  # the first reply again; nothing sent
        seen.write_bytes(request.content)
        with (self.folder / "delivered.txt").open("a") as out:
            out.write("".join(item["to"][0] + "\n" for item in items))
        if self.die:
            kill_self()  # accepted by Resend; the run never reads the reply
        return httpx.Response(200, json=reply)


def resend(fake: FakeResend) -> ResendTransport:
    transport = ResendTransport(SecretStr("re_key"), http=httpx.MockTransport(fake), sleep=lambda _s: None)
    transport.batch_size = 100
    return transport


def test_retry_unknown_after_a_kill_mid_batch_resends_the_batch_under_its_key(
    folder: Path, renderer: Renderer
) -> None:
    server = folder / "resend"
    run_until_killed(folder, renderer, resend(FakeResend(server, die=True)), None)  # type: ignore[arg-type]
    first = FakeResend(server).delivered
    assert len(first) >= 2 and set(first.values()) == {1}  # one batch arrived; its reply was never read

    fake = FakeResend(server)
    made, subs = pipeline(folder, renderer, resend(fake))  # type: ignore[arg-type]
    with made.store as store:
        assert sorted(store.recover_interrupted(NOW)) == sorted(_ids(store))
        store.requeue(NOW, [UNKNOWN])  # what `newsletter retry --unknown` does
        report = made.deliver_pending(subs, NOW, ignore_backoff=True)
        assert {d.status for d in report.digests} == {"sent"} and len(report.digests) == len(first)
        assert {d.status for d in store.deliveries(with_items=False)} == {"sent"}
    assert fake.delivered == first  # Resend answered with the first reply: nobody got a second copy
    assert len(fake.keys) == 1 and fake.keys[0].startswith("newsletter-batch/")


def _ids(store: Store) -> list[str]:
    return [d.digest_id for d in store.deliveries(with_items=False)]


@pytest.mark.parametrize(
    ("transport", "wanted", "size"),
    [("postmark", None, 100), ("postmark", 500, 500), ("resend", None, 100), ("resend", 1, 1),
     ("sendgrid", None, 1), ("sendgrid", 50, 1), ("mailgun", None, 1)],
)  # fmt: skip
def test_the_batch_size_per_provider(transport: str, wanted: int | None, size: int) -> None:
    settings = Settings(transport=transport, api_key=SecretStr("key-1"), batch_size=wanted)  # type: ignore[arg-type]
    assert api_transport(settings).batch_size == size


def test_a_batch_size_over_the_providers_maximum_is_one_error_line() -> None:
    settings = Settings(transport="resend", api_key=SecretStr("key-1"), batch_size=101)
    with pytest.raises(ConfigError, match=r"'batch_size': Resend takes at most 100 messages .* not 101"):
        api_transport(settings)


def test_a_batch_another_process_queued_again_during_its_429_wait_is_left_to_it(
    folder: Path, renderer: Renderer
) -> None:
    """While a refused batch waits out its Retry-After, another process's recovery queues its digests
    again (they were marked refused, so not sent) and starts sending one: the waiting run sends none
    of them and records nothing for them, so the other process's send is recorded as its own."""
    requests: list[httpx.Request] = []
    claimed: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return httpx.Response(429, json={"name": "rate_limit_exceeded"}, headers={"Retry-After": "2"})
        return httpx.Response(200, json={"data": [{"id": "re-0"}]})

    def another_process_takes_over(_seconds: float) -> None:  # once, at the first wait
        if claimed:
            return
        with Store(f"sqlite:///{folder / 'state' / 'state.db'}") as other:
            assert other.recover_interrupted(NOW) == []  # all refused, none of unknown fate
            claimed.append(other.deliveries(["retry"], with_items=False)[0].digest_id)
            other.mark_sending(claimed[0], NOW)  # its send of that one is in flight

    transport = ResendTransport(SecretStr("re_key"), http=httpx.MockTransport(api))
    transport.batch_size = 100
    made, subs = pipeline(folder, renderer, transport, another_process_takes_over)  # type: ignore[arg-type]
    with made.store as store:
        report = made.run(subs, NOW)
        assert len(requests) == 1  # no second request for digests no longer this run's
        assert report.digests and {d.status for d in report.digests} == {"skipped"}
        assert all("queued again by another process" in d.reason for d in report.digests)
        statuses = {d.digest_id: (d.status, d.not_before) for d in store.deliveries(with_items=False)}
        assert statuses.pop(claimed[0]) == ("sending", None)  # untouched: the other process's
        assert set(statuses.values()) == {("retry", None)}  # due at once, as its recovery left them
        mark_sent(store, claimed[0], NOW, "<m>")  # the other process's acceptance can be recorded
