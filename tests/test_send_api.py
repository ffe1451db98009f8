"""HTTP email API transports: request shapes against each provider's documented API, batches, per-message errors.

Every test runs against httpx.MockTransport; no network. Retries, Retry-After and secrets: test_send_api_retry.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError, SendError
from newsletter.models import OutgoingMessage, RenderedDigest
from newsletter.send import make_transport
from newsletter.send.apis import (
    HttpApiTransport,
    MailgunTransport,
    PostmarkTransport,
    ResendTransport,
    SendGridTransport,
    SendResult,
    idempotency_key,
)
from newsletter.send.apis.resend import batch_idempotency_key
from newsletter.send.message import Envelope, build_message

KEY = "key-Sup3r-S3cret-9f8e7d"
DOMAIN = "papers.example.org"
ENVELOPE = Envelope(
    sender=f"Trending Papers <digest@{DOMAIN}>",
    list_id=f"Trending Papers <papers.{DOMAIN}>",
    mailto_unsubscribe=f"mailto:unsubscribe@{DOMAIN}?subject=unsubscribe",
    https_unsubscribe=f"https://{DOMAIN}/unsubscribe/tok123",
)
TEXT = "Your papers\n\n1. Kestrel: sparse message passing on graphs\n"
HTML = "<html><body><h1>Your papers</h1><p>Kestrel</p></body></html>"


def make_message(
    digest_id: str = "d-2024-03-11-ada",
    to: str = "ada@example.org",
    name: str = "Ada Lovelace",
    subject: str = "3 new papers",
    text: str = TEXT,
    html: str = HTML,
) -> OutgoingMessage:
    rendered = RenderedDigest(subject=subject, html=html, text=text)
    date = datetime(2024, 3, 11, 7, 0, tzinfo=UTC)
    return build_message(
        digest_id=digest_id, envelope=ENVELOPE, to_name=name, to_addr=to, rendered=rendered, date=date
    )


Reply = httpx.Response | Exception | Callable[[httpx.Request], "httpx.Response | Exception"]


@dataclass
class FakeApi:
    """MockTransport handler: records each request and answers from a script; the last reply repeats."""

    replies: list[Reply]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if callable(reply) and not isinstance(reply, httpx.Response):
            reply = reply(request)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def json(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


@dataclass
class Harness:
    transport: HttpApiTransport
    api: FakeApi
    sleeps: list[float]


def harness(cls: type[HttpApiTransport], *replies: Reply, **options: Any) -> Harness:
    api = FakeApi(list(replies))
    sleeps: list[float] = []
    if cls is MailgunTransport:
        options.setdefault("domain", DOMAIN)
    transport = cls(SecretStr(KEY), http=httpx.MockTransport(api), sleep=sleeps.append, **options)
    return Harness(transport, api, sleeps)


def ok(cls: type[HttpApiTransport], provider_id: str = "id-1") -> httpx.Response:
    """The documented success reply of one send."""
    if cls is PostmarkTransport:
        body = {"To": "ada@example.org", "SubmittedAt": "2024-03-11T07:00:00Z", "MessageID": provider_id}
        return httpx.Response(200, json={**body, "ErrorCode": 0, "Message": "OK"})
    if cls is SendGridTransport:
        return httpx.Response(202, headers={"X-Message-Id": provider_id})
    if cls is MailgunTransport:
        return httpx.Response(200, json={"id": provider_id, "message": "Queued. Thank you."})
    return httpx.Response(200, json={"id": provider_id})


PROVIDERS = [PostmarkTransport, SendGridTransport, MailgunTransport, ResendTransport]
JSON_PROVIDERS = [PostmarkTransport, SendGridTransport, ResendTransport]


def multipart_fields(request: httpx.Request) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, byte for byte (RFC 7578)."""
    boundary = request.headers["content-type"].split("boundary=", 1)[1].encode()
    fields = {}
    for part in request.content.split(b"--" + boundary)[1:-1]:
        head, _, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        fields[name] = value.removesuffix(b"\r\n")
    return fields


# --- Postmark ---------------------------------------------------------------------------------------


def test_postmark_single_send_matches_the_documented_request() -> None:
    h = harness(PostmarkTransport, ok(PostmarkTransport, "pm-7"), message_stream="digests")
    message = make_message()
    with h.transport as transport:
        result = transport.deliver(message)
    request = h.api.requests[0]
    assert (request.method, str(request.url)) == ("POST", "https://api.postmarkapp.com/email")
    assert request.headers["X-Postmark-Server-Token"] == KEY
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    body = h.api.json()
    assert set(body) == {"From", "To", "Subject", "HtmlBody", "TextBody", "Headers", "MessageStream"}
    assert body["From"] == f"Trending Papers <digest@{DOMAIN}>"
    assert body["To"] == "Ada Lovelace <ada@example.org>"
    assert body["Subject"] == "3 new papers"
    assert body["HtmlBody"] == HTML
    assert body["TextBody"].rstrip("\n") == TEXT.rstrip("\n")
    assert body["MessageStream"] == "digests"
    headers = {h["Name"]: h["Value"] for h in body["Headers"]}
    assert headers == {
        "Message-ID": message.message_id,
        "List-Id": f"Trending Papers <papers.{DOMAIN}>",
        "List-Unsubscribe": f"<https://{DOMAIN}/unsubscribe/tok123>, <mailto:unsubscribe@{DOMAIN}?subject=unsubscribe>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert result == SendResult(message.digest_id, "pm-7")


def test_postmark_batch_goes_to_email_batch_in_chunks_of_500() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        return httpx.Response(
            200, json=[{"ErrorCode": 0, "Message": "OK", "MessageID": m["To"], "To": m["To"]} for m in sent]
        )

    h = harness(PostmarkTransport, reply)
    messages = [
        make_message(f"d{i}", f"r{i}@example.org", name="", text="t", html="<p>h</p>") for i in range(1001)
    ]
    with h.transport as transport:
        outcomes = transport.send_batch(messages)
    assert [str(r.url) for r in h.api.requests] == ["https://api.postmarkapp.com/email/batch"] * 3
    sizes = [len(h.api.json(i)) for i in range(3)]
    assert sizes == [500, 500, 1]
    assert h.api.json(2)[0]["To"] == "r1000@example.org"
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert [o.provider_id for o in outcomes if isinstance(o, SendResult)] == [m.recipient for m in messages]


def test_postmark_batch_chunks_by_payload_size_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PostmarkTransport, "batch_bytes", 3000)
    reply = lambda request: httpx.Response(  # noqa: E731
        200, json=[{"ErrorCode": 0, "MessageID": "x"} for _ in json.loads(request.content)]
    )
    h = harness(PostmarkTransport, reply)
    messages = [make_message(f"d{i}", html="<p>" + "x" * 900 + "</p>") for i in range(5)]
    with h.transport as transport:
        outcomes = transport.send_batch(messages)
    assert all(len(r.content) <= 3000 for r in h.api.requests)
    assert sum(len(h.api.json(i)) for i in range(len(h.api.requests))) == 5
    assert len(h.api.requests) > 1
    assert all(isinstance(o, SendResult) for o in outcomes)


def test_postmark_batch_reads_every_per_message_error_code() -> None:
    inactive = "You tried to send to a recipient that has been marked as inactive."
    results = [
        {"ErrorCode": 0, "Message": "OK", "MessageID": "m-0", "To": "r0@example.org"},
        {"ErrorCode": 406, "Message": inactive},
        {"ErrorCode": 300, "Message": "Invalid 'To' address: 'r2@example.org'."},
        {"ErrorCode": 100, "Message": "Maintenance"},
        {"ErrorCode": 0, "Message": "OK", "MessageID": "m-4", "To": "r4@example.org"},
    ]
    h = harness(PostmarkTransport, httpx.Response(200, json=results))
    messages = [make_message(f"d{i}", f"r{i}@example.org") for i in range(5)]
    with h.transport as transport:
        outcomes = transport.send_batch(messages)
    assert len(h.api.requests) == 1
    assert outcomes[0] == SendResult("d0", "m-0")
    assert outcomes[4] == SendResult("d4", "m-4")
    inactive_error, invalid_error, maintenance = outcomes[1], outcomes[2], outcomes[3]
    assert isinstance(inactive_error, SendError) and inactive_error.permanent
    assert "406" in inactive_error.message and "d1" in inactive_error.message
    assert inactive_error.hint is not None and "inactive" in inactive_error.hint
    assert isinstance(invalid_error, SendError) and invalid_error.permanent and "300" in invalid_error.message
    assert isinstance(maintenance, SendError) and not maintenance.permanent and not maintenance.unknown


def test_postmark_batch_reply_of_the_wrong_length_is_unknown_for_all() -> None:
    h = harness(PostmarkTransport, httpx.Response(200, json=[{"ErrorCode": 0, "MessageID": "x"}]))
    with h.transport as transport:
        outcomes = transport.send_batch([make_message("d0"), make_message("d1")])
    assert all(isinstance(o, SendError) and o.unknown for o in outcomes)


def test_postmark_single_send_422_inactive_recipient_is_permanent() -> None:
    body = {"ErrorCode": 406, "Message": "You tried to send to a recipient that has been marked as inactive."}
    h = harness(PostmarkTransport, httpx.Response(422, json=body))
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.permanent and "ErrorCode 406" in caught.value.message
    assert len(h.api.requests) == 1 and h.sleeps == []


def test_postmark_batch_keeps_order_when_one_message_cannot_be_built() -> None:
    good, bad = make_message("d0"), make_message("d1")
    raw = bad.raw.replace(b"List-Id: Trending", "List-Id: Trénding".encode())  # not ASCII: refused
    bad = OutgoingMessage(bad.digest_id, bad.sender, bad.recipient, bad.subject, bad.message_id, raw)
    reply = lambda request: httpx.Response(  # noqa: E731
        200, json=[{"ErrorCode": 0, "MessageID": m["To"]} for m in json.loads(request.content)]
    )
    h = harness(PostmarkTransport, reply)
    with h.transport as transport:
        outcomes = transport.send_batch([good, bad, make_message("d2", "r2@example.org")])
    assert [m["To"] for m in h.api.json()] == [
        "Ada Lovelace <ada@example.org>",
        "Ada Lovelace <r2@example.org>",
    ]
    assert isinstance(outcomes[0], SendResult) and isinstance(outcomes[2], SendResult)
    assert isinstance(outcomes[1], SendError) and outcomes[1].permanent and "List-Id" in outcomes[1].message


# --- SendGrid ---------------------------------------------------------------------------------------


def test_sendgrid_send_matches_the_documented_request() -> None:
    h = harness(SendGridTransport, ok(SendGridTransport, "sg-msg-1"))
    message = make_message()
    with h.transport as transport:
        result = transport.deliver(message)
    request = h.api.requests[0]
    assert (request.method, str(request.url)) == ("POST", "https://api.sendgrid.com/v3/mail/send")
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    body = h.api.json()
    assert body["personalizations"] == [{"to": [{"email": "ada@example.org", "name": "Ada Lovelace"}]}]
    assert body["from"] == {"email": f"digest@{DOMAIN}", "name": "Trending Papers"}
    assert body["subject"] == "3 new papers"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]  # plain first, as required
    assert body["content"][0]["value"].rstrip("\n") == TEXT.rstrip("\n")
    assert body["content"][1]["value"] == HTML
    assert body["headers"]["Message-ID"] == message.message_id
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["headers"]["List-Unsubscribe"].startswith(f"<https://{DOMAIN}/unsubscribe/tok123>")
    assert body["headers"]["List-Id"] == f"Trending Papers <papers.{DOMAIN}>"
    assert not {"To", "From", "Subject", "Reply-To", "Content-Type"} & set(body["headers"])  # reserved
    assert body["custom_args"] == {"digest_id": message.digest_id}
    assert result == SendResult(message.digest_id, "sg-msg-1")


def test_sendgrid_batch_sends_one_request_per_message_and_eu_region() -> None:
    h = harness(SendGridTransport, ok(SendGridTransport), region="eu")
    with h.transport as transport:
        outcomes = transport.send_batch([make_message(f"d{i}", f"r{i}@example.org") for i in range(3)])
    assert [str(r.url) for r in h.api.requests] == ["https://api.eu.sendgrid.com/v3/mail/send"] * 3
    assert [h.api.json(i)["personalizations"][0]["to"][0]["email"] for i in range(3)] == [
        "r0@example.org",
        "r1@example.org",
        "r2@example.org",
    ]
    assert all(isinstance(o, SendResult) for o in outcomes)


def test_sendgrid_400_invalid_address_is_permanent_for_that_message_only() -> None:
    bad = httpx.Response(
        400,
        json={"errors": [{"message": "Does not contain a valid address.", "field": "personalizations.0.to"}]},
    )
    h = harness(SendGridTransport, bad, ok(SendGridTransport))
    with h.transport as transport:
        outcomes = transport.send_batch([make_message("d0"), make_message("d1")])
    first, second = outcomes
    assert isinstance(first, SendError) and first.permanent
    assert "Does not contain a valid address." in first.message and "d0" in first.message
    assert isinstance(second, SendResult)


# --- Mailgun ----------------------------------------------------------------------------------------


def test_mailgun_posts_our_exact_mime_to_messages_mime() -> None:
    h = harness(MailgunTransport, ok(MailgunTransport, f"<20240311.1@{DOMAIN}>"))
    message = make_message()
    with h.transport as transport:
        result = transport.deliver(message)
    request = h.api.requests[0]
    assert (request.method, str(request.url)) == (
        "POST",
        f"https://api.mailgun.net/v3/{DOMAIN}/messages.mime",
    )
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    fields = multipart_fields(request)
    assert fields["to"] == b"ada@example.org"
    assert fields["message"] == message.raw  # byte for byte: our headers, our Message-ID
    assert result == SendResult(message.digest_id, f"<20240311.1@{DOMAIN}>")


def test_mailgun_eu_region_and_unknown_domain_hint() -> None:
    h = harness(MailgunTransport, httpx.Response(404, json={"message": "Domain not found"}), region="eu")
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert str(h.api.requests[0].url) == f"https://api.eu.mailgun.net/v3/{DOMAIN}/messages.mime"
    # every message would meet it: the run stops with all still queued, no subscriber fails for good
    assert caught.value.transport_down and not caught.value.permanent
    assert "Domain not found" in caught.value.message
    assert caught.value.hint is not None and "NEWSLETTER_MAILGUN_DOMAIN" in caught.value.hint


@pytest.mark.parametrize(
    ("transport_class", "reply"),
    [
        (SendGridTransport, httpx.Response(202)),  # no X-Message-Id
        (SendGridTransport, httpx.Response(200, html="<html>Please log in to the proxy</html>")),
        (MailgunTransport, httpx.Response(200, html="<html>Please log in to the proxy</html>")),
        (ResendTransport, httpx.Response(200, json={"ok": True})),
        (PostmarkTransport, httpx.Response(200, json={"ErrorCode": 0, "Message": "OK"})),
    ],
)
def test_a_success_without_the_providers_message_id_is_unknown_not_sent(
    transport_class: type, reply: httpx.Response
) -> None:
    """A proxy's login page answers 200 too: the message may never have reached the API."""
    h = harness(transport_class, reply)
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.unknown and "without a message id" in caught.value.message


@pytest.mark.parametrize(
    ("transport_class", "reply"),
    [
        (PostmarkTransport, [{"ErrorCode": 0, "MessageID": "m-0"}, {"ErrorCode": 0, "Message": "OK"}]),
        (ResendTransport, {"data": [{"id": "m-0"}, {}]}),
    ],
)
def test_a_batch_element_accepted_without_its_message_id_is_unknown_not_sent(
    transport_class: type[HttpApiTransport], reply: object
) -> None:
    """Postmark and Resend batches recorded such an element 'sent', as single sends do not."""
    h = harness(transport_class, httpx.Response(200, json=reply))
    with h.transport as transport:
        first, second = transport.send_batch([make_message("d0"), make_message("d1")])
    assert first == SendResult("d0", "m-0")
    assert isinstance(second, SendError) and second.unknown and "without a message id" in second.message


@pytest.mark.parametrize("status", [301, 302, 404])
def test_a_redirect_or_a_missing_endpoint_stops_the_run_for_every_provider(status: int) -> None:
    reply = httpx.Response(status, headers={"Location": "https://elsewhere.example/"}, text="moved")
    for transport_class in (PostmarkTransport, SendGridTransport, ResendTransport):
        h = harness(transport_class, reply)
        with h.transport as transport, pytest.raises(SendError) as caught:
            transport.send(make_message())
        assert caught.value.transport_down and not caught.value.permanent, transport_class
        assert caught.value.hint is not None and "NEWSLETTER_API_BASE_URL" in caught.value.hint


@pytest.mark.parametrize("code", [400, 401, 412, 1235])
def test_a_postmark_account_or_sender_error_stops_the_run(code: int) -> None:
    reply = httpx.Response(422, json={"ErrorCode": code, "Message": "Sender signature not confirmed"})
    h = harness(PostmarkTransport, reply)
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.transport_down and not caught.value.permanent


def test_mailgun_400_is_permanent() -> None:
    h = harness(
        MailgunTransport, httpx.Response(400, json={"message": "to parameter is not a valid address"})
    )
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.permanent and "not a valid address" in caught.value.message


# --- Resend -----------------------------------------------------------------------------------------


def test_resend_send_matches_the_documented_request() -> None:
    h = harness(ResendTransport, ok(ResendTransport, "49a3999c-0ce1"))
    message = make_message()
    with h.transport as transport:
        result = transport.deliver(message)
    request = h.api.requests[0]
    assert (request.method, str(request.url)) == ("POST", "https://api.resend.com/emails")
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Idempotency-Key"] == f"newsletter-digest/{message.digest_id}"
    body = h.api.json()
    assert body["from"] == f"Trending Papers <digest@{DOMAIN}>"
    assert body["to"] == ["ada@example.org"]
    assert body["subject"] == "3 new papers"
    assert body["html"] == HTML
    assert body["text"].rstrip("\n") == TEXT.rstrip("\n")
    assert body["headers"]["Message-ID"] == message.message_id
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert result == SendResult(message.digest_id, "49a3999c-0ce1")


def test_resend_idempotency_key_is_derived_from_the_digest_id() -> None:
    assert idempotency_key("d-1") == "newsletter-digest/d-1"
    assert idempotency_key("d-1") != idempotency_key("d-2")
    long_key = idempotency_key("x" * 300)  # over Resend's 256 characters: the id's hash, the same each time
    assert long_key == "newsletter-digest/" + hashlib.sha256(b"x" * 300).hexdigest()
    assert idempotency_key("x" * 301) != long_key


def test_resend_batch_chunks_of_100_with_stable_keys_and_permissive_validation() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        return httpx.Response(200, json={"data": [{"id": m["to"][0]} for m in sent]})

    messages = [make_message(f"d{i}", f"r{i}@example.org", text="t", html="<p>h</p>") for i in range(250)]
    h = harness(ResendTransport, reply)
    with h.transport as transport:
        outcomes = transport.send_batch(messages)
        transport.send_batch(messages)  # the same messages again: the same keys
    requests = h.api.requests
    assert [str(r.url) for r in requests] == ["https://api.resend.com/emails/batch"] * 6
    assert [len(h.api.json(i)) for i in range(3)] == [100, 100, 50]
    assert all(r.headers["x-batch-validation"] == "permissive" for r in requests)
    keys = [r.headers["Idempotency-Key"] for r in requests]
    assert keys[:3] == keys[3:] and len(set(keys[:3])) == 3
    assert keys[0] == batch_idempotency_key([m.digest_id for m in messages[:100]])
    assert [o.provider_id for o in outcomes if isinstance(o, SendResult)] == [m.recipient for m in messages]


def test_resend_permissive_batch_errors_map_to_their_messages() -> None:
    reply = {"data": [{"id": "a"}, {"id": "c"}], "errors": [{"index": 1, "message": "Invalid `to` field."}]}
    h = harness(ResendTransport, httpx.Response(200, json=reply))
    with h.transport as transport:
        outcomes = transport.send_batch([make_message("d0"), make_message("d1"), make_message("d2")])
    assert outcomes[0] == SendResult("d0", "a")
    assert outcomes[2] == SendResult("d2", "c")
    refused = outcomes[1]
    assert isinstance(refused, SendError) and refused.permanent and "Invalid `to` field." in refused.message


def test_resend_422_validation_error_is_permanent() -> None:
    body = {"statusCode": 422, "name": "invalid_from_address", "message": "Invalid `from` field."}
    h = harness(ResendTransport, httpx.Response(422, json=body))
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.permanent and "invalid_from_address" in caught.value.message
    assert len(h.api.requests) == 1


def test_resend_409_idempotency_conflicts() -> None:
    busy = httpx.Response(409, json={"name": "concurrent_idempotent_requests", "message": "in progress"})
    h = harness(ResendTransport, busy, ok(ResendTransport))
    with h.transport as transport:
        assert isinstance(transport.deliver(make_message()), SendResult)
    assert len(h.api.requests) == 2 and h.sleeps == [1.0]

    reused = httpx.Response(409, json={"name": "invalid_idempotent_request", "message": "other payload"})
    h = harness(ResendTransport, reused)
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    assert caught.value.unknown and not caught.value.permanent
    assert len(h.api.requests) == 1  # retrying the same key cannot help


# --- settings -> transport --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "base_url"),
    [
        ("postmark", PostmarkTransport, "https://api.postmarkapp.com"),
        ("sendgrid", SendGridTransport, "https://api.sendgrid.com"),
        ("mailgun", MailgunTransport, "https://api.mailgun.net"),
        ("resend", ResendTransport, "https://api.resend.com"),
    ],
)
def test_make_transport_selects_each_api(name: str, cls: type[HttpApiTransport], base_url: str) -> None:
    settings = Settings(transport=name, api_key=SecretStr(KEY), sender=f"Papers <digest@{DOMAIN}>")
    transport = make_transport(settings)
    assert type(transport) is cls
    assert isinstance(transport, cls) and transport.base_url == base_url
    if isinstance(transport, MailgunTransport):
        assert transport.domain == DOMAIN  # default: the sender's domain
    if isinstance(transport, PostmarkTransport):
        assert transport.message_stream == "outbound"


@pytest.mark.parametrize("name", ["postmark", "sendgrid", "mailgun", "resend"])
def test_make_transport_needs_an_api_key(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_transport(Settings(transport=name))
    assert caught.value.hint is not None and "NEWSLETTER_API_KEY" in caught.value.hint


@pytest.mark.parametrize("host", ["api.sendgrid.com", "10.0.0.25", "[fd00::1]"])
def test_an_api_key_is_never_sent_unencrypted_over_the_network(host: str) -> None:
    """As an SMTP password is not: an http:// base URL sent the key readable to anyone on the path."""
    fields = {"transport": "sendgrid", "api_key": KEY, "api_base_url": f"http://{host}"}
    with pytest.raises(ConfigError, match=r"unencrypted to .*: make NEWSLETTER_API_BASE_URL an https://"):
        load_settings(**fields)
    allowed = [{"api_base_url": f"https://{host}"}, {"api_base_url": "http://127.0.0.1:8025"}]
    allowed += [
        {"api_base_url": "http://localhost"},
        {"api_base_url": "http://[::1]:80"},
        {"transport": "file"},
    ]
    for change in allowed:
        assert load_settings(**{**fields, **change}).api_key is not None


def test_bad_region_and_domain_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        SendGridTransport(SecretStr(KEY), region="mars")
    with pytest.raises(ConfigError):
        MailgunTransport(SecretStr(KEY), domain="evil.example/../x")
    with pytest.raises(ConfigError):
        ResendTransport(SecretStr("   "))


def test_one_client_serves_the_run_and_is_closed_after() -> None:
    h = harness(ResendTransport, ok(ResendTransport))
    with h.transport as transport:
        transport.send(make_message("d0"))
        client = transport._client
        transport.send(make_message("d1"))
        assert transport._client is client
    assert client is not None and client.is_closed and transport._client is None
    assert len(h.api.requests) == 2


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", JSON_PROVIDERS)
def test_line_breaks_in_names_and_subjects_cannot_inject_headers(cls: type[HttpApiTransport]) -> None:
    h = harness(cls, ok(cls))
    message = make_message(name="Eve\r\nBcc: victim@example.org", subject="Hi\r\nBcc: victim@example.org\x00")
    with h.transport as transport:
        transport.send(message)
    body = h.api.json()
    one_line = [v for v in _strings(body) if v not in (TEXT, HTML)]
    assert one_line and not any(c in v for v in one_line for c in "\r\n\x00")
    names = {h["Name"] for h in body["Headers"]} if cls is PostmarkTransport else set(body["headers"])
    assert names == {"Message-ID", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"}
    assert not {"bcc", "Bcc", "BCC", "cc"} & set(body)
    if cls is SendGridTransport:
        assert body["personalizations"] == [
            {"to": [{"email": "ada@example.org", "name": message_name(body)}]}
        ]


def message_name(body: dict[str, Any]) -> str:
    name = body["personalizations"][0]["to"][0]["name"]
    assert name == "Eve Bcc: victim@example.org"  # one line, shown as a name, not a header
    return str(name)


@pytest.mark.parametrize("cls", JSON_PROVIDERS)
def test_non_ascii_names_and_subjects_arrive_decoded(cls: type[HttpApiTransport]) -> None:
    h = harness(cls, ok(cls))
    with h.transport as transport:
        transport.send(make_message(name="Jörg Müller", subject="Neue Arbeiten: Überblick ✓"))
    body = h.api.json()
    assert "Neue Arbeiten: Überblick ✓" in _strings(body)
    if cls is ResendTransport:
        assert body["to"] == ["ada@example.org"]  # Resend's `to` takes addresses
    else:
        assert any("Jörg Müller" in v for v in _strings(body))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# --- what a run's builder hands over ----------------------------------------------------------------


@pytest.mark.parametrize("cls", JSON_PROVIDERS)
def test_a_message_built_without_its_mime_body_makes_the_same_request(cls: type[HttpApiTransport]) -> None:
    """A run builds only the header block for an API that takes the parts: the request is byte for byte
    the one the whole message makes, for awkward names and subjects too."""
    bodies = []
    for body in (True, False):
        rendered = RenderedDigest(
            subject="Neue Arbeiten: Überblick ✓\r\nBcc: x@example.org", html=HTML, text=TEXT
        )
        message = build_message(
            digest_id="d-1",
            envelope=ENVELOPE,
            to_name='Jörg "J" Müller',
            to_addr="ada@example.org",
            rendered=rendered,
            date=datetime(2024, 3, 11, 7, 0, tzinfo=UTC),
            body=body,
        )
        assert message.headers_only is not body
        h = harness(cls, ok(cls))
        with h.transport as transport:
            transport.send(message)
        bodies.append(h.api.requests[0].content)
    assert bodies[0] == bodies[1]


def test_the_header_block_alone_is_the_whole_message_s_header_block() -> None:
    whole = make_message(name="Jörg Müller")
    head = build_message(
        digest_id=whole.digest_id,
        envelope=ENVELOPE,
        to_name="Jörg Müller",
        to_addr=whole.recipient,
        rendered=RenderedDigest(whole.subject, HTML, TEXT),
        date=datetime(2024, 3, 11, 7, 0, tzinfo=UTC),
        body=False,
    )
    assert whole.raw.startswith(head.raw) and head.raw.endswith(b"\r\n\r\n") and b"base64" not in head.raw
    assert head.size == len(head.raw) + len(HTML.encode()) + len(TEXT.encode())
    assert whole.size == len(whole.raw)
    readers = {cls: cls.reads_body for cls in PROVIDERS}
    assert readers == {PostmarkTransport: False, SendGridTransport: False, MailgunTransport: True,
                       ResendTransport: False}  # fmt: skip
