"""How many connections a run opens: NEWSLETTER_CONNECTIONS, and what "auto" picks from the round trip."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult
from pydantic import SecretStr

from newsletter.config import PACKAGE_TEMPLATES
from newsletter.errors import ConnectionRefused, SendError
from newsletter.models import OutgoingMessage
from newsletter.render import Renderer
from newsletter.send import SmtpTransport
from newsletter.send.apis import Outcome, PostmarkTransport
from newsletter.send.pacing import AUTO_CAP, FEED_RATE, HEADROOM, Gate, auto_connections

from .api_server import Api, running
from .test_crash import NOW, Recorder, make_folder, pipeline, write_subscribers


@pytest.mark.parametrize(
    ("round_trip", "per_request", "rate", "expected"),
    [
        (0.0005, 1, None, 1),  # loopback SMTP: one connection keeps up
        (0.003, 1, None, 6),  # 3 ms: three waits overlap to feed 1,000 messages a second, twice that
        (0.05, 1, None, AUTO_CAP),  # 50 ms would want 100: capped
        (0.05, 1, 40.0, 4),  # NEWSLETTER_SEND_RATE=40: 2 connections send 40 a second, twice that
        (0.2, 100, None, 4),  # a 200 ms API with batches of 100: 4 requests in flight
        (0.2, 500, None, 1),
        (0.2, 1, None, AUTO_CAP),  # one message per request (SendGrid, Mailgun)
        (0.0, 1, None, 1),
    ],
)
def test_auto_opens_what_the_round_trip_calls_for(
    round_trip: float, per_request: int, rate: float | None, expected: int
) -> None:
    assert auto_connections(round_trip, per_request, rate) == expected
    assert (FEED_RATE, HEADROOM) == (1000.0, 2.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_send_rate_is_shared_by_every_connection() -> None:
    clock = FakeClock()
    gate = Gate(10.0, clock=clock, sleep=clock.sleep)
    waits = [gate.reserve() for _ in range(4)]  # four connections asking at the same moment
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert gate.reserve(10) == pytest.approx(0.4)  # a batch of 10 takes ten slots
    assert gate.reserve() == pytest.approx(1.4)


def test_a_429_pauses_everyone_once_until_the_latest_moment_asked() -> None:
    clock = FakeClock()
    gate = Gate(None, clock=clock, sleep=clock.sleep)
    gate.pause(2.0)
    clock.now += 0.5
    gate.pause(2.0)  # a request that was in flight got its 429 half a second later
    gate.pause(0.5)  # a shorter pause does not cut the longer one short
    assert gate.paused_for() == pytest.approx(2.0)
    assert gate.reserve() == pytest.approx(2.0)  # a request about to start waits for it too
    gate.wait_paused()
    assert clock.slept == [pytest.approx(2.0)] and gate.paused_for() == 0.0
    assert gate.reserve() == 0.0


class SlowServer(Recorder):
    """Accepts every message after ``seconds``, like a server across a network."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def send(self, message: OutgoingMessage) -> None:
        time.sleep(self.seconds)
        super().send(message)


@pytest.mark.parametrize(
    ("seconds", "setting", "opened"),
    [
        (0.02, "auto", AUTO_CAP),  # 20 ms wants 20 connections: capped
        (0.0, "auto", 1),  # answers at once: one is enough
        (0.02, 3, 3),  # a number is taken as it is
    ],
)
def test_a_run_opens_the_connections_the_round_trip_calls_for(
    tmp_path: Path, seconds: float, setting: int | str, opened: int
) -> None:
    folder = make_folder(tmp_path)
    write_subscribers(folder / "subscribers.yaml")  # 60 subscribers
    servers: list[SlowServer] = []

    def connect() -> SlowServer:
        servers.append(SlowServer(seconds))
        return servers[-1]

    made, subs = pipeline(folder, Renderer(PACKAGE_TEMPLATES), Recorder(), connections=setting)
    made.transport_factory = connect
    report = made.run(subs, NOW)
    made.store.close()
    assert len(servers) == opened
    sent = sorted(to for server in servers for to in server.sent)
    assert sent == sorted(d.subscriber for d in report.digests if d.status == "sent") and len(sent) > 20


class Postmark(PostmarkTransport):
    """The real Postmark transport, 3 messages a request; keeps the messages it was handed."""

    batch_size = 3
    handed: ClassVar[list[OutgoingMessage]] = []

    def send_batch(self, messages: Sequence[OutgoingMessage], key: str | None = None) -> list[Outcome]:
        self.handed.extend(messages)
        return super().send_batch(messages, key)


def test_each_chunk_of_a_batched_run_fills_every_request_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 requests in flight of 3 messages each: digests are planned 12 at a time (not PLAN_BATCH, here 2),
    and the messages carry only their header block, from which the API gets what a whole message gives."""
    monkeypatch.setattr("newsletter.deliver.building.PLAN_BATCH", 2)
    folder = make_folder(tmp_path)
    write_subscribers(folder / "subscribers.yaml")  # 60 subscribers
    api = Api(delay=0.05)
    with running(api) as url:
        made, subs = pipeline(folder, Renderer(PACKAGE_TEMPLATES), Recorder(), connections=4)
        made.transport_factory = lambda: Postmark(SecretStr("t"), base_url=url)
        planned: list[int] = []
        plan = made.store.plan_digests
        monkeypatch.setattr(made.store, "plan_digests", lambda p: planned.append(len(p)) or plan(p))
        report = made.run(subs, NOW)
    sent = [d.subscriber for d in report.digests if d.status == "sent"]
    assert len(sent) > 24 and sorted(sent) == sorted(api.recipients)
    assert planned[:-1] == [12] * (len(planned) - 1) and sum(planned) == len(sent)
    assert {m.headers_only for m in Postmark.handed} == {True}
    for message in Postmark.handed[:3]:
        subscriber = subs.find(message.recipient)
        assert subscriber is not None
        _, whole = made.last_sent(subscriber) or (None, None)
        assert whole is not None and not whole.headers_only and whole.raw.startswith(message.raw)
        reader = made.transport_factory()
        assert reader.payload(whole) == reader.payload(message)
    made.store.close()


class OneConnectionEach(SMTP):
    """A server that takes one connection per client at a time: a further one gets 421 at the greeting."""

    open = 0

    def connection_made(self, transport: Any) -> None:
        self.counted = OneConnectionEach.open == 0
        if not self.counted:
            transport.write(b"421 4.7.0 Too many connections from your host\r\n")
            transport.close()
            return
        OneConnectionEach.open += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.counted:
            OneConnectionEach.open -= 1
            super().connection_lost(error)


class SlowSink:
    """aiosmtpd handler: keeps each recipient, answering after 20 ms (so "auto" wants more connections)."""

    def __init__(self) -> None:
        self.received: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += envelope.rcpt_tos
        await asyncio.sleep(0.02)
        return "250 2.0.0 queued"


class LimitedServer(Controller):
    def factory(self) -> SMTP:
        return OneConnectionEach(self.handler, hostname="localhost")

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@pytest.mark.parametrize("connections", ["auto", 4])
def test_a_server_refusing_further_connections_leaves_the_run_with_the_one_it_has(
    tmp_path: Path, connections: str | int
) -> None:
    """Each further connection a run opened was refused (421) and stopped the run: 5 sent, 7 failed for
    five minutes, the rest left for the next run, at every run that had digests to send."""
    folder = make_folder(tmp_path)
    write_subscribers(folder / "subscribers.yaml")  # 60 subscribers
    sink = SlowSink()
    server = LimitedServer(sink, hostname="127.0.0.1", port=0, ready_timeout=10)
    server.start()
    try:
        made, subs = pipeline(folder, Renderer(PACKAGE_TEMPLATES), Recorder(), connections=connections)
        made.transport_factory = lambda: SmtpTransport("127.0.0.1", server.port, timeout=10)
        report = made.run(subs, NOW)
        made.store.close()
    finally:
        server.stop()
    sent = sorted(d.subscriber for d in report.digests if d.status == "sent")
    assert report.ok and report.statuses["sent"] > 20 and set(report.statuses) == {"sent"}
    assert sorted(sink.received) == sent  # each once, over the one connection the server allows


class QuotaSpent(SlowServer):
    """Accepts the first ``quota`` messages of the run (all connections together), then asks for an hour."""

    taken = 0

    def __init__(self, seconds: float, quota: int) -> None:
        super().__init__(seconds)
        self.quota = quota

    def send(self, message: OutgoingMessage) -> None:
        QuotaSpent.taken += 1
        if QuotaSpent.taken > self.quota:
            raise SendError("429 quota exceeded", retry_after=3600.0)
        super().send(message)


def test_a_spare_connection_told_to_wait_an_hour_waits_the_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a connection the server would not open is dropped for another: a spare that met a long
    Retry-After before its first message was 'refused', its digest due at once instead of in an hour."""
    folder = make_folder(tmp_path)
    write_subscribers(folder / "subscribers.yaml")
    monkeypatch.setattr(QuotaSpent, "taken", 0)
    made, subs = pipeline(folder, Renderer(PACKAGE_TEMPLATES), Recorder(), connections="auto")
    made.transport_factory = lambda: QuotaSpent(0.02, quota=6)  # spares open after 4: 20 ms wants more
    report = made.run(subs, NOW)
    later = made.store.deliveries(["retry"], with_items=False)
    made.store.close()
    assert report.statuses["sent"] == 6 and later
    assert all(r.not_before is not None and r.not_before >= NOW + timedelta(minutes=30) for r in later)


class OneLoginEach(SMTP):
    """A server that takes one login per client: a further connection's AUTH gets 454 (not the password)."""

    logins = 0

    async def smtp_AUTH(self, arg: str) -> None:
        if OneLoginEach.logins >= 1:
            await self.push("454 4.7.0 Too many login attempts, try later")
            return
        OneLoginEach.logins += 1
        await super().smtp_AUTH(arg)


class LoginLimitedServer(LimitedServer):
    def factory(self) -> SMTP:
        return OneLoginEach(self.handler, hostname="localhost", **self.SMTP_kwargs)


def _any_login(*args: Any) -> AuthResult:
    return AuthResult(success=True)


def test_a_spare_connection_whose_login_is_refused_for_now_leaves_auto_with_the_one_it_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4xx to AUTH (a limit on logins per client) was taken for a bad password: the run stopped."""
    folder = make_folder(tmp_path)
    write_subscribers(folder / "subscribers.yaml")
    monkeypatch.setattr(OneLoginEach, "logins", 0)
    sink = SlowSink()
    server = LoginLimitedServer(
        sink, hostname="127.0.0.1", port=0, ready_timeout=10, authenticator=_any_login, auth_require_tls=False
    )
    server.start()
    try:
        made, subs = pipeline(folder, Renderer(PACKAGE_TEMPLATES), Recorder(), connections="auto")
        login = {"username": "ada", "password": SecretStr("a-long-password"), "timeout": 10}
        made.transport_factory = lambda: SmtpTransport("127.0.0.1", server.port, **login)
        report = made.run(subs, NOW)
        made.store.close()
    finally:
        server.stop()
    assert report.ok and set(report.statuses) == {"sent"} and report.statuses["sent"] > 20
    assert sorted(sink.received) == sorted(d.subscriber for d in report.digests if d.status == "sent")


class RefusedFirst(SlowServer):
    """The first transport a run opens is refused at the greeting; the others work."""

    made = 0

    def __init__(self) -> None:
        super().__init__(0.0)
        RefusedFirst.made += 1
        self.refused = RefusedFirst.made == 1

    def send(self, message: OutgoingMessage) -> None:
        if self.refused:
            raise ConnectionRefused(
                "cannot connect to SMTP server: 421 Too many connections", transport_down=True
            )
        super().send(message)


def test_the_first_connection_refused_while_others_work_leaves_the_run_to_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only 'spare' connections could leave: the first one refused stopped the run (1 failed, 56 left)."""
    folder = make_folder(tmp_path)
    write_subscribers(folder / "subscribers.yaml")
    monkeypatch.setattr(RefusedFirst, "made", 0)
    made, subs = pipeline(folder, Renderer(PACKAGE_TEMPLATES), Recorder(), connections=4)
    made.transport_factory = RefusedFirst
    report = made.run(subs, NOW)
    made.store.close()
    assert report.ok and set(report.statuses) == {"sent"} and report.statuses["sent"] == 60


def test_over_several_connections_an_error_still_hands_on_what_was_sent_and_stops_the_rest() -> None:
    """A database error in one connection's request: the requests that went out over the others are
    reported (they were lost from the report before), one not started is not sent, the error is raised."""
    from concurrent.futures import Future

    from newsletter.deliver.couriers import _hand_on
    from newsletter.errors import StoreError
    from newsletter.report import DigestOutcome

    def done(address: str) -> Future[list[DigestOutcome]]:
        future: Future[list[DigestOutcome]] = Future()
        future.set_result([DigestOutcome(address, "sent")])
        return future

    failed: Future[list[DigestOutcome]] = Future()
    failed.set_exception(StoreError("database error while recording: disk is full"))
    waiting: Future[list[DigestOutcome]] = Future()  # queued for a connection, not started
    handed: list[str] = []
    with pytest.raises(StoreError, match="disk is full"):
        _hand_on(
            [done("a@x.org"), failed, waiting, done("b@x.org")],
            lambda o: handed.extend(d.subscriber for d in o),
        )
    assert handed == ["a@x.org", "b@x.org"]
    assert waiting.cancelled()
