"""HTTP email API transports: 429 + Retry-After, 5xx backoff, timeouts after the body was sent, auth, secrets."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from pydantic import SecretStr

from newsletter.errors import SendError, SendStopped
from newsletter.retry_after import LONGEST_WAIT as LONGEST_ASKED_WAIT
from newsletter.send.apis import (
    HttpApiTransport,
    MailgunTransport,
    PostmarkTransport,
    ResendTransport,
    SendGridTransport,
    SendResult,
    idempotency_key,
    retry_after_seconds,
)
from newsletter.send.apis.core import rate_limit_wait

from .test_send_api import KEY, PROVIDERS, Reply, harness, make_message, ok

NOW = datetime(2024, 3, 11, 7, 0, tzinfo=UTC)
NOT_IDEMPOTENT = [PostmarkTransport, SendGridTransport, MailgunTransport]


def rate_limited(retry_after: str | None = "7") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(429, headers=headers, json={"message": "Too many requests"})


def read_timeout(request: httpx.Request) -> Exception:
    return httpx.ReadTimeout("The read operation timed out", request=request)


def dropped(request: httpx.Request) -> Exception:
    return httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)


def refused(request: httpx.Request) -> Exception:
    return httpx.ConnectError("[Errno 111] Connection refused", request=request)


# --- Retry-After ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("1.5", 1.5),
        (format_datetime(NOW + timedelta(seconds=42), usegmt=True), 42.0),
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),
        ("Mon, 11 Mar 2024 07:01:00 GMT", 60.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("86400000000000", LONGEST_ASKED_WAIT),  # a timedelta of it overflowed: a traceback, digests stranded
        ("1e300", LONGEST_ASKED_WAIT),
    ],
)
def test_retry_after_takes_seconds_or_an_http_date(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, NOW) == seconds


@pytest.mark.parametrize("reset", ["99999999999999999999", "9" * 5000])
def test_a_rate_limit_reset_ages_away_is_the_longest_wait(reset: str) -> None:
    """Python refuses to read an int of 4,300 digits, and 1e20 s overflowed a timedelta."""
    assert rate_limit_wait(httpx.Headers({"X-RateLimit-Reset": reset}), NOW) == LONGEST_ASKED_WAIT


@pytest.mark.parametrize("cls", PROVIDERS)
def test_a_retry_after_date_with_an_absurd_zone_is_no_wait_not_a_traceback(
    cls: type[HttpApiTransport],
) -> None:
    """parsedate_to_datetime raised OverflowError for it: the run ended with "unexpected OverflowError",
    no report, and the digests the API had refused left 'sending' (the next run called them 'unknown')."""
    absurd = "Mon, 11 Mar 2024 07:00:00 +99999999999999999999"
    assert retry_after_seconds(absurd, NOW) is None
    h = harness(cls, rate_limited(absurd), ok(cls))
    assert h.transport.deliver(make_message()) == SendResult("d-2024-03-11-ada", "id-1")
    assert h.sleeps == [1.0]  # no wait asked for: the first backoff


def test_a_superscript_digit_is_no_rate_limit_reset() -> None:
    """ "²".isdigit() is true and float("²") raises: a 429 with it escaped as a ValueError."""
    assert rate_limit_wait(httpx.Headers([(b"X-RateLimit-Reset", "²".encode())]), NOW) is None


@pytest.mark.parametrize("cls", PROVIDERS)
def test_429_waits_for_retry_after_then_sends(cls: type[HttpApiTransport]) -> None:
    h = harness(cls, rate_limited("7"), ok(cls, "later"))
    with h.transport as transport:
        result = transport.deliver(make_message())
    assert h.sleeps == [7.0]
    assert len(h.api.requests) == 2
    assert result == SendResult("d-2024-03-11-ada", "later")


def test_429_with_an_http_date_waits_until_then() -> None:
    when = format_datetime(NOW + timedelta(seconds=12), usegmt=True)
    h = harness(PostmarkTransport, rate_limited(when), ok(PostmarkTransport), clock=lambda: NOW)
    with h.transport as transport:
        transport.send(make_message())
    assert h.sleeps == [12.0]


def test_429_without_retry_after_backs_off() -> None:
    h = harness(SendGridTransport, rate_limited(None), rate_limited(None), ok(SendGridTransport))
    with h.transport as transport:
        transport.send(make_message())
    assert h.sleeps == [1.0, 2.0]


def test_429s_spend_no_attempt_until_their_waits_reach_the_bound_then_are_temporary() -> None:
    """Requests released together when a shared pause ends may meet the limit again: such 429s
    used up the attempts, and a quarter of a Resend run at 2 requests/s was left unsent."""
    h = harness(ResendTransport, rate_limited("7"), max_attempts=2, max_retry_after=60)
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    error = caught.value
    assert (error.permanent, error.unknown, error.retry_after) == (False, False, 7.0)
    assert "429" in error.message and "Too many requests" in error.message
    assert h.sleeps == [7.0] * 8 and len(h.api.requests) == 9  # 8 x 7 s = 56 s; a ninth wait passes 60


@pytest.mark.parametrize("asked", ["0", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_429s_asking_for_no_wait_still_wait_a_second_and_end(asked: str) -> None:
    """Retry-After 0 (or a date already past: a clock skew) spent no attempt and no time: the
    transport retried at network speed for ever."""
    h = harness(ResendTransport, rate_limited(asked), max_attempts=2, max_retry_after=5)
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.retry_after == 0.0 and not caught.value.permanent
    assert h.sleeps == [1.0] * 5 and len(h.api.requests) == 6  # 5 x 1 s; a sixth wait passes 5


@pytest.mark.parametrize(
    ("replies", "held"), [((rate_limited("1"),), 1), ((read_timeout, rate_limited("1")), 0)]
)
def test_a_wait_marks_the_digest_refused_unless_a_try_may_have_been_accepted(
    replies: tuple[Reply, ...], held: int
) -> None:
    """A 429 refused the request: the digest waits as not sent. After a timeout (Resend retries under
    its key) the first try may have been accepted, so the wait after a later 429 marks nothing."""
    h = harness(ResendTransport, *replies, ok(ResendTransport))
    holds: list[list[str]] = []
    h.transport.hold = lambda ids, _why: (holds.append(list(ids)), contextlib.nullcontext())[1]
    with h.transport as transport:
        transport.send(make_message())
    assert holds == [[make_message().digest_id]] * held


def test_429s_then_success_spend_no_attempt() -> None:
    h = harness(ResendTransport, rate_limited("1"), rate_limited("1"), rate_limited("1"), ok(ResendTransport))
    with h.transport as transport:
        transport.send(make_message())  # max_attempts 3: three 429s would have used them all
    assert h.sleeps == [1.0, 1.0, 1.0] and len(h.api.requests) == 4


def test_429_asking_for_longer_than_the_bound_gives_up_at_once() -> None:
    h = harness(PostmarkTransport, rate_limited("3600"), ok(PostmarkTransport), max_retry_after=60)
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.retry_after == 3600.0 and not caught.value.permanent
    assert len(h.api.requests) == 1 and h.sleeps == []


# --- 5xx and transport errors -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", PROVIDERS)
def test_500_then_success_is_retried_with_backoff(cls: type[HttpApiTransport]) -> None:
    h = harness(cls, httpx.Response(500, text="Internal Server Error"), ok(cls, "second"))
    with h.transport as transport:
        result = transport.deliver(make_message())
    assert len(h.api.requests) == 2 and h.sleeps == [1.0]
    assert isinstance(result, SendResult) and result.provider_id == "second"


def test_5xx_until_attempts_run_out_is_temporary() -> None:
    h = harness(MailgunTransport, httpx.Response(503, text="Service Unavailable"), max_attempts=4)
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert not caught.value.permanent and not caught.value.unknown
    assert "503" in caught.value.message
    assert h.sleeps == [1.0, 2.0, 4.0] and len(h.api.requests) == 4


@pytest.mark.parametrize("cls", PROVIDERS)
def test_connection_refused_before_sending_is_retried(cls: type[HttpApiTransport]) -> None:
    h = harness(cls, refused, ok(cls))
    with h.transport as transport:
        transport.send(make_message())
    assert len(h.api.requests) == 2 and h.sleeps == [1.0]


@pytest.mark.parametrize("cls", NOT_IDEMPOTENT)
@pytest.mark.parametrize("failure", [read_timeout, dropped, httpx.Response(504, text="Gateway Timeout")])
def test_lost_reply_after_the_body_went_out_is_unknown_and_not_resent(
    cls: type[HttpApiTransport], failure: object
) -> None:
    h = harness(cls, failure, ok(cls))  # type: ignore[arg-type]
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.unknown and not caught.value.permanent
    assert caught.value.hint is not None and "twice" in caught.value.hint
    assert len(h.api.requests) == 1 and h.sleeps == []


def test_resend_retries_lost_replies_with_the_same_idempotency_key() -> None:
    message = make_message()
    h = harness(ResendTransport, read_timeout, dropped, httpx.Response(504), ok(ResendTransport, "re-1"))
    with h.transport as transport:
        result = transport.deliver(message)
    keys = [r.headers["Idempotency-Key"] for r in h.api.requests]
    assert keys == [idempotency_key(message.digest_id)] * 4
    assert keys[0] == f"newsletter-digest/{message.digest_id}"
    assert [r.content for r in h.api.requests] == [h.api.requests[0].content] * 4  # same payload too
    assert h.sleeps == [1.0, 2.0, 4.0]
    assert result == SendResult(message.digest_id, "re-1")


def test_resend_lost_replies_until_attempts_run_out_are_unknown_but_safe_to_resend() -> None:
    h = harness(ResendTransport, read_timeout, max_attempts=3)
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.unknown
    assert caught.value.hint is not None and "Idempotency-Key" in caught.value.hint
    assert len(h.api.requests) == 3


@pytest.mark.parametrize(
    "then",
    [
        httpx.Response(500, json={"message": "oops"}),
        httpx.Response(409, json={"name": "concurrent_idempotent_requests", "message": "in progress"}),
    ],
)
def test_a_lost_reply_then_refused_resends_is_unknown_not_a_refusal(then: httpx.Response) -> None:
    """A timeout (maybe accepted), then resends under its key refused until the tries ran out: reported
    'failed' for now, as if never sent, and resent by later runs by themselves (after 24 h, without the
    key's protection), where a lost reply must be 'unknown'."""
    h = harness(ResendTransport, read_timeout, then, then, max_attempts=3)
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.unknown and "may have been accepted" in str(caught.value)
    assert len(h.api.requests) == 3


def test_resend_batch_retry_reuses_the_batch_key() -> None:
    reply = httpx.Response(200, json={"data": [{"id": "a"}, {"id": "b"}]})
    h = harness(ResendTransport, rate_limited("2"), reply)
    with h.transport as transport:
        outcomes = transport.send_batch([make_message("d0"), make_message("d1")])
    keys = [r.headers["Idempotency-Key"] for r in h.api.requests]
    assert len(keys) == 2 and keys[0] == keys[1] and h.sleeps == [2.0]
    assert outcomes == [SendResult("d0", "a"), SendResult("d1", "b")]


@pytest.mark.parametrize("shared_pause", [False, True])
def test_a_stop_during_a_rate_limit_wait_ends_the_wait_and_sends_nothing_more(shared_pause: bool) -> None:
    """SIGTERM while a 429's Retry-After (50 s) is waited out: the run ended ~99 s later, after two
    more requests. Now the wait ends at the next look at the stop event, and the 429 stands."""
    from newsletter.send.pacing import Gate

    h = harness(PostmarkTransport, rate_limited("50"), ok(PostmarkTransport))
    stop = threading.Event()

    def sleep(seconds: float) -> None:
        h.sleeps.append(seconds)
        stop.set()  # the signal arrives during the first step of the wait

    h.transport.sleep, h.transport.stop = sleep, stop
    if shared_pause:
        h.transport.gate = Gate(sleep=sleep, clock=lambda: 0.0)
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert len(h.api.requests) == 1 and h.sleeps == [0.5]
    assert caught.value.retry_after == 50 and not caught.value.permanent and not caught.value.unknown
    assert isinstance(caught.value, SendStopped)  # not sent: due at once, not after a backoff


def test_sendgrids_rate_limit_reset_header_is_waited_for_and_a_503_s_retry_after_too() -> None:
    """SendGrid's 429 says when the limit resets (a Unix time), not Retry-After: each message was
    retried on the short backoff instead, three requests apiece."""
    import time

    reset = httpx.Response(429, headers={"X-RateLimit-Reset": str(int(time.time()) + 5)})
    h = harness(SendGridTransport, reset, ok(SendGridTransport))
    with h.transport as transport:
        transport.send(make_message())
    assert len(h.sleeps) == 1 and 3.5 < h.sleeps[0] <= 5.0
    h = harness(PostmarkTransport, httpx.Response(503, headers={"Retry-After": "3"}), ok(PostmarkTransport))
    with h.transport as transport:
        transport.send(make_message())
    assert h.sleeps == [3.0]


@pytest.mark.parametrize("cls", NOT_IDEMPOTENT)
def test_a_reply_that_cannot_be_decoded_is_unknown_not_a_traceback(cls: type[HttpApiTransport]) -> None:
    """A proxy's "gzip" reply that is not gzip: the request went out, so the API may have taken it."""
    garbage = httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(b"not gzip"))
    h = harness(cls, garbage)
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.unknown and "cannot be read" in caught.value.message
    assert len(h.api.requests) == 1  # not resent: it could arrive twice


class _Trickle(httpx.SyncByteStream):
    """A reply body that comes one byte every 0.1 s, each read well within httpx's timeout."""

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(40):
            time.sleep(0.1)
            yield b" "


def test_a_reply_that_trickles_in_past_the_timeout_is_cut_off_as_a_read_timeout() -> None:
    """httpx's timeout bounds each read: a byte every 2 s held a run, and its stop, for as long as the
    server liked (4 s here; 0.3 s allowed)."""
    h = harness(PostmarkTransport, httpx.Response(200, stream=_Trickle()), timeout=0.3)
    started = time.monotonic()
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert time.monotonic() - started < 2.0
    assert caught.value.unknown and "the reply took longer than the timeout" in caught.value.message
    assert len(h.api.requests) == 1  # not resent: it may have arrived


class _TwoHalves(httpx.SyncByteStream):
    """A whole reply whose second half comes 0.2 s after the first, past a 0.3 s deadline."""

    def __iter__(self) -> Iterator[bytes]:
        body = json.dumps({"MessageID": "late-but-whole", "ErrorCode": 0, "Message": "OK"}).encode()
        time.sleep(0.2)
        yield body[:10]
        time.sleep(0.2)
        yield body[10:]


def test_a_reply_whose_last_chunk_comes_just_past_the_timeout_is_the_api_s_answer() -> None:
    """Read whole, it was thrown away as a timeout: the message the API accepted became 'unknown'."""
    h = harness(PostmarkTransport, httpx.Response(200, stream=_TwoHalves()), timeout=0.3)
    with h.transport as transport:
        assert transport.deliver(make_message()).provider_id == "late-but-whole"
    assert len(h.api.requests) == 1


def test_requests_still_go_through_the_environment_s_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The timeout for a whole reply was first a transport of its own, and a client given one reads no
    HTTP_PROXY: on a network that lets mail out only through a proxy, every send went direct."""
    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.requestline)
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"id": "via-proxy"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Proxy) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        api = ResendTransport(SecretStr(KEY), base_url="http://api.resend.invalid", sleep=lambda s: None)
        with api as transport:
            assert transport.deliver(make_message()).provider_id == "via-proxy"
        proxy.shutdown()
    assert seen == ["POST http://api.resend.invalid/emails HTTP/1.1"]


def test_deeply_nested_json_in_a_reply_is_no_traceback() -> None:
    """2 KB of brackets raised RecursionError out of the run: a 503 (not sent) was left 'sending'."""
    nested = "[" * 1000 + "]" * 1000
    h = harness(PostmarkTransport, httpx.Response(503, text=nested), ok(PostmarkTransport, "later"))
    with h.transport as transport:
        assert transport.deliver(make_message()).provider_id == "later"
    h = harness(PostmarkTransport, httpx.Response(200, text=nested))
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.unknown


def test_a_resend_batch_error_with_a_list_for_its_index_is_no_traceback() -> None:
    reply = {"data": [{"id": "a"}], "errors": [{"index": [1], "message": "x"}]}
    h = harness(ResendTransport, httpx.Response(200, json=reply))
    with h.transport as transport:
        outcomes = transport.send_batch([make_message("d0"), make_message("d1")])
    assert all(isinstance(o, SendError) and o.unknown for o in outcomes)  # safe: Resend's batch key


@pytest.mark.parametrize("cls", PROVIDERS)
def test_a_reply_s_control_characters_and_line_breaks_never_reach_the_error(
    cls: type[HttpApiTransport],
) -> None:
    """A reply's escape codes erased the error line on a terminal and showed a forged 'run OK'; Resend's
    `name` field was copied whole, 3,000 characters over six lines."""
    said = "bad\x1b[2K\x1b[1Grun OK: 3 sent"
    name = "validation_error " + "x" * 3000 + "\n\n\ny"
    body = {"message": said, "Message": said, "ErrorCode": 300, "name": name}
    h = harness(cls, httpx.Response(422, json=body))
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    shown = caught.value.message
    assert "bad" in shown and "\x1b" not in shown and "\n" not in shown and len(shown) < 800


def test_postmark_batch_timeout_makes_every_message_unknown() -> None:
    h = harness(PostmarkTransport, read_timeout)
    with h.transport as transport:
        outcomes = transport.send_batch([make_message("d0"), make_message("d1"), make_message("d2")])
    assert len(outcomes) == 3
    assert all(isinstance(o, SendError) and o.unknown for o in outcomes)
    assert len(h.api.requests) == 1


# --- auth and secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", PROVIDERS)
def test_401_stops_the_transport_with_a_key_hint_and_no_later_requests(cls: type[HttpApiTransport]) -> None:
    h = harness(cls, httpx.Response(401, json={"message": "Invalid API key"}))
    with h.transport as transport:
        with pytest.raises(SendError) as caught:
            transport.send(make_message("d0"))
        outcomes = transport.send_batch([make_message("d1"), make_message("d2")])
    # not the message's fault: the run stops and every digest stays queued for when the key is fixed
    assert caught.value.transport_down and not caught.value.permanent and not caught.value.unknown
    assert caught.value.hint is not None and "NEWSLETTER_API_KEY" in caught.value.hint
    assert len(h.api.requests) == 1 and h.sleeps == []  # the bad key is not tried again
    assert all(isinstance(o, SendError) and o.transport_down for o in outcomes)


@pytest.mark.parametrize("cls", PROVIDERS)
def test_the_api_key_never_appears_in_logs_errors_or_reprs(
    cls: type[HttpApiTransport], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    echo = {"message": f"key {KEY} is not valid", "Message": f"token {KEY}", "ErrorCode": 10}
    h = harness(cls, httpx.Response(500, text=f"oops {KEY}"), httpx.Response(401, json=echo))
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    error = caught.value
    assert "refused the API key or account" in error.message and "***" in error.message  # the echo, masked
    assert "retrying" in caplog.text
    for text in (
        caplog.text,
        str(error),
        repr(error),
        error.hint or "",
        repr(transport),
        repr(vars(transport)),
    ):
        assert KEY not in text
    assert any(KEY in str(v) for v in h.api.requests[0].headers.values()) or cls is MailgunTransport


@pytest.mark.parametrize("cls", PROVIDERS)
def test_a_long_reply_is_masked_before_it_is_cut(cls: type[HttpApiTransport]) -> None:
    """The key straddling the 300-character cut: masking after the cut showed most of it."""
    echo = "x" * (300 - len(KEY) // 2) + f" {KEY} and more"
    h = harness(cls, httpx.Response(401, json={"message": echo, "Message": echo, "ErrorCode": 10}))
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    shown = caught.value.message
    assert all(KEY[i : i + 6] not in shown for i in range(len(KEY) - 5))


@pytest.mark.parametrize("cls", PROVIDERS)
def test_base64_forms_of_the_key_are_masked(cls: type[HttpApiTransport]) -> None:
    """Mailgun's Basic auth header is base64 of 'api:KEY'; a proxy echoing it must not leak the key."""
    basic = base64.b64encode(f"api:{KEY}".encode()).decode()
    url_safe = base64.urlsafe_b64encode(f"user={KEY}".encode()).decode()
    echo = f"bad header Authorization: Basic {basic} (token {url_safe})"
    h = harness(cls, httpx.Response(401, json={"message": echo, "Message": echo, "ErrorCode": 10}))
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    shown = caught.value.message
    assert "bad header" in shown
    assert basic[8:-4] not in shown and url_safe[8:-4] not in shown
