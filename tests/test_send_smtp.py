"""SmtpTransport against a real SMTP server (aiosmtpd) on loopback, with injected faults."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError, SendError
from newsletter.models import OutgoingMessage, RenderedDigest
from newsletter.send import FileTransport, SmtpTransport, make_transport
from newsletter.send.message import Envelope, build_message

from .helpers import tool_missing

HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Content-Type",
)
PASSWORD = "hunter2-Very-Secret"


@dataclass
class Recorder:
    """aiosmtpd handler that records what it accepts and injects the faults a test asks for."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    connections: int = 0
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply
    mail_replies: list[str] = field(default_factory=list)  # next MAIL replies instead of 250
    data_replies: list[str] = field(default_factory=list)  # next DATA replies instead of 250
    drop_at_mail: int = 0  # close the connection at the next N MAIL commands, without a reply
    drop_after_body: int = 0  # take the next N bodies, then close without a reply
    close_after_data: bool = False  # reply 250, then close (like an idle timeout)
    data_delay: float = 0.0  # seconds before the reply to a body (a content filter)
    pipelining: bool = False  # offer PIPELINING (RFC 2920) in the EHLO reply
    idle_closed: threading.Event = field(default_factory=threading.Event)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ):
        session.host_name = hostname
        self.connections += 1
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]):
        if self.drop_at_mail:
            self.drop_at_mail -= 1
            server.transport.abort()
            return "421 gone"
        if self.mail_replies:
            return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]):
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any):
        if self.data_replies:
            return self.data_replies.pop(0)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        await asyncio.sleep(self.data_delay)
        if self.drop_after_body:
            self.drop_after_body -= 1
            server.transport.abort()
        elif self.close_after_data:
            server.loop.call_later(0.01, self._close_idle, server.transport)
        return "250 2.0.0 queued"

    def _close_idle(self, transport: Any) -> None:
        transport.close()
        self.idle_closed.set()


class LoopbackController(Controller):
    """Controller on 127.0.0.1 with an ephemeral port (port=0), read back before the readiness probe."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextmanager
def running(handler: Recorder, **kwargs: Any) -> Iterator[LoopbackController]:
    """A real SMTP server on loopback; no DNS lookups (fixed server hostname, numeric address)."""
    controller = LoopbackController(
        handler, hostname="127.0.0.1", port=0, server_hostname="localhost", ready_timeout=10, **kwargs
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture(params=[False, True], ids=["plain", "pipelining"])
def handler(request: pytest.FixtureRequest) -> Recorder:
    """Every test runs against a server without and with PIPELINING: two code paths in the client."""
    return Recorder(pipelining=request.param)


@pytest.fixture
def server(handler: Recorder) -> Iterator[LoopbackController]:
    with running(handler) as controller:
        yield controller


def transport_for(controller: LoopbackController, **kwargs: Any) -> SmtpTransport:
    return SmtpTransport("127.0.0.1", controller.port, local_hostname="localhost", timeout=5, **kwargs)


ENVELOPE = Envelope(
    sender="Trending Papers <digest@example.org>",
    list_id="Trending Papers <papers.example.org>",
    mailto_unsubscribe="mailto:unsubscribe@example.org?subject=unsubscribe",
    https_unsubscribe="https://papers.example.org/unsubscribe?t=abc",
)


def message(i: int = 0, to: str | None = None, name: str = "Ada Lovelace") -> OutgoingMessage:
    rendered = RenderedDigest(f"{i} new papers: Kestrel", f"<p>digest {i}</p>", f"digest {i}\n")
    to = to or f"reader{i}@example.net"
    when = datetime(2024, 3, 11, 7, 0, tzinfo=UTC)
    return build_message(
        digest_id=f"d{i}", envelope=ENVELOPE, to_name=name, to_addr=to, rendered=rendered, date=when
    )


def test_delivered_message_parses_with_every_header(server: LoopbackController, handler: Recorder) -> None:
    with transport_for(server) as transport:
        transport.send(message(1, name="Zoë Ünïcode"))
    [(mail_from, rcpts, raw)] = handler.messages
    assert (mail_from, rcpts) == ("digest@example.org", ["reader1@example.net"])
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert all(parsed[h] for h in HEADERS)
    assert parsed["To"].addresses[0].display_name == "Zoë Ünïcode"
    assert parsed["Message-ID"] == "<d1@example.org>"
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed.get_body(("html",)).get_content().strip() == "<p>digest 1</p>"


def test_one_connection_is_reused_for_the_run(server: LoopbackController, handler: Recorder) -> None:
    with transport_for(server) as transport:
        for i in range(25):
            transport.send(message(i))
    assert len(handler.messages) == 25
    assert handler.connections == 1
    assert transport.connections == 1


def test_connection_opens_lazily_and_closes_on_exit(server: LoopbackController, handler: Recorder) -> None:
    with transport_for(server) as transport:
        assert handler.connections == 0
    assert handler.connections == 0
    with transport_for(server) as transport:
        transport.send(message())
    assert transport._client is None


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("451 4.3.0 Try again later", False), ("554 5.6.0 Message content rejected", True)],
)
def test_data_reply_is_classified(
    server: LoopbackController, handler: Recorder, reply: str, permanent: bool
) -> None:
    handler.data_replies.append(reply)
    with transport_for(server) as transport:
        with pytest.raises(SendError) as caught:
            transport.send(message(1))
        transport.send(message(2))  # the same connection takes the next message
    assert caught.value.permanent is permanent
    assert caught.value.unknown is False
    assert reply in caught.value.message
    assert [rcpts for _, rcpts, _ in handler.messages] == [["reader2@example.net"]]
    assert handler.connections == 1


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("450 4.2.1 Mailbox busy", False), ("550 5.1.1 No such user", True)],
)
def test_refused_recipient_fails_only_that_message(
    server: LoopbackController, handler: Recorder, reply: str, permanent: bool
) -> None:
    handler.refuse_rcpt["reader3@example.net"] = reply
    failures: dict[int, SendError] = {}
    with transport_for(server) as transport:
        for i in range(6):
            try:
                transport.send(message(i))
            except SendError as exc:
                failures[i] = exc
    assert list(failures) == [3]
    assert failures[3].permanent is permanent
    assert "reader3@example.net" in failures[3].message and reply in failures[3].message
    assert sorted(r[0] for _, r, _ in handler.messages) == [f"reader{i}@example.net" for i in (0, 1, 2, 4, 5)]
    assert handler.connections == 1


@pytest.mark.parametrize("reply", ["553 5.7.1 Sender not allowed", "530 5.7.0 Authentication required"])
def test_a_refused_sender_stops_the_run_as_every_message_would_meet_it(
    server: LoopbackController, handler: Recorder, reply: str
) -> None:
    """The envelope sender is every message's: not one 'failed' digest per subscriber, but a stop with
    the rest queued, as for a refused login."""
    handler.mail_replies.append(reply)
    with transport_for(server) as transport, pytest.raises(SendError) as caught:
        transport.send(message())
    assert caught.value.transport_down and not caught.value.permanent
    assert reply in caught.value.message and "NEWSLETTER_FROM" in (caught.value.hint or "")


def test_a_sender_refused_for_the_message_size_fails_only_that_message(
    server: LoopbackController, handler: Recorder
) -> None:
    handler.mail_replies.append("552 5.3.4 Message size exceeds fixed limit")
    with transport_for(server) as transport, pytest.raises(SendError) as caught:
        transport.send(message())
    assert caught.value.permanent and not caught.value.transport_down


def test_reconnects_once_when_dropped_before_sending(server: LoopbackController, handler: Recorder) -> None:
    handler.drop_at_mail = 1
    with transport_for(server) as transport:
        transport.send(message(1))
        transport.send(message(2))
    assert [r for _, r, _ in handler.messages] == [["reader1@example.net"], ["reader2@example.net"]]
    assert handler.connections == 2


def test_reconnects_after_server_closed_an_idle_connection(
    server: LoopbackController, handler: Recorder
) -> None:
    handler.close_after_data = True
    with transport_for(server) as transport:
        for i in range(3):
            transport.send(message(i))
            assert handler.idle_closed.wait(5)
            handler.idle_closed.clear()
    assert len(handler.messages) == 3
    assert handler.connections == 3


def test_421_before_the_body_reconnects(server: LoopbackController, handler: Recorder) -> None:
    handler.mail_replies.append("421 4.3.2 Shutting down")
    with transport_for(server) as transport:
        transport.send(message(1))
    assert len(handler.messages) == 1
    assert handler.connections == 2


class SilentAfterFirst(Recorder):
    """The first connection goes silent after one message (a NAT dropped the idle flow); a new one works."""

    first: Any = None

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]):
        if self.first is None:
            self.first = session
        elif session is self.first:
            await asyncio.sleep(3)  # longer than the client waits
        return await super().handle_MAIL(server, session, envelope, address, options)


def test_a_reused_connection_that_died_silently_is_replaced_at_once() -> None:
    """A timeout is a stalled server only on a new connection: the first fix of the stall took a
    connection a NAT dropped while idle for one, and put the digest off to the next run."""
    handler = SilentAfterFirst()
    with (
        running(handler) as server,
        SmtpTransport("127.0.0.1", server.port, local_hostname="localhost", timeout=0.5) as transport,
    ):
        transport.send(message(1))
        transport.send(message(2))
    assert len(handler.messages) == 2 and handler.connections == 2


def test_a_reused_connection_whose_last_message_was_refused_is_replaced_too() -> None:
    """Only a delivered message counted as use: after a refusal, a NAT drop was taken for a stall."""
    handler = SilentAfterFirst(refuse_rcpt={"reader1@example.net": "550 5.1.1 no such user"})
    with (
        running(handler) as server,
        SmtpTransport("127.0.0.1", server.port, local_hostname="localhost", timeout=0.5) as transport,
    ):
        with pytest.raises(SendError, match="550"):
            transport.send(message(1))
        transport.send(message(2))
    assert [to for _, to, _ in handler.messages] == [["reader2@example.net"]] and handler.connections == 2


class Stalling(Recorder):
    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]):
        await asyncio.sleep(3)  # longer than the client waits
        return await super().handle_MAIL(server, session, envelope, address, options)


def test_a_new_connection_that_gets_no_reply_is_a_stalled_server_tried_once() -> None:
    handler = Stalling()
    with (
        running(handler) as server,
        SmtpTransport("127.0.0.1", server.port, local_hostname="localhost", timeout=0.5) as transport,
        pytest.raises(SendError) as caught,
    ):
        transport.send(message(1))
    assert caught.value.stalled and "did not answer within 0.5 s" in caught.value.message
    assert handler.connections == 1  # not reconnected: that would wait the timeout out again


def test_the_reply_to_a_body_is_waited_for_longer_than_the_other_replies(
    server: LoopbackController, handler: Recorder
) -> None:
    """RFC 5321 gives a server 10 minutes to accept a body: with one timeout for every reply, a slow
    content filter turned each message into 'unknown' (never sent again by a run)."""
    handler.data_delay = 1.5
    with SmtpTransport("127.0.0.1", server.port, local_hostname="localhost", timeout=0.5) as transport:
        transport.send(message(1))
        transport.send(message(2))
    assert len(handler.messages) == 2 and handler.connections == 1


@pytest.mark.parametrize(
    ("reply", "policy"),
    [
        ("550 5.1.1 <desk-554.7@example.net>: no such user", False),  # the address's own refusal
        ("554 5.1.1 <reader1@example.net>: Recipient address rejected: User unknown", False),
        ("554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException", True),  # every message
        ("554 5.2.2 mailbox full", False),
        ("554 5.3.2 system not accepting network messages", True),
        ("530 5.5.1 Authentication Required", True),
        ("550 5.7.1 Relay access denied", True),
        ("554 Transaction failed", True),
        ("530 Authentication required", True),
        ("550 relay not permitted", True),  # Exim, without an enhanced status
        ("550 Relaying denied. Proper authentication required.", True),
        ("550 no such user here", False),
        ("550 <relay-desk@example.net>: no such user here", False),
        ("550 <x@example.net>: Recipient address rejected: User unknown in relay recipient table", False),
        ("554 5.1.8 <digest@example.org>: Sender address rejected: Domain not found", True),
        ("550 we do not relay for example.net", True),
        ("550 relaying to <x@example.net> prohibited by administrator", True),
        ("550 sorry, no relaying allowed", True),
        ("550 Relaying not authorized", True),
        ("550 relaying mail to example.net is not permitted", True),
        ("550 Unrouteable address; relay host refused: mailbox unavailable", False),
        ("550 RELAY: user unknown, rejected", False),
        ("550 No such recipient here (relay domain, delivery refused)", False),
        ("550 Unknown recipient (via relay); denied", False),
        ("553 5.1.8 <digest@example.org>: Sender address rejected: Domain not found", True),
        ("550 5.1.7 <digest@example.org>: bad sender mailbox syntax", True),
        ("552 5.2.2 mailbox full", False),
    ],
)
def test_a_refusal_on_policy_grounds_is_told_from_a_bad_address(
    server: LoopbackController, handler: Recorder, reply: str, policy: bool
) -> None:
    """Read from the reply code and its enhanced status, not from any digits in the text (an address
    with 554 in it stopped runs as if the server refused everything)."""
    refused = _refusal_of(server, handler, reply)
    assert refused.permanent and refused.policy is policy


def _first_fails_temporarily_second_arrives(server: LoopbackController, handler: Recorder) -> None:
    with transport_for(server) as transport:
        with pytest.raises(SendError) as caught:
            transport.send(message(1))
        transport.send(message(2))
    assert (caught.value.permanent, caught.value.unknown) == (False, False)
    assert [r for _, r, _ in handler.messages] == [["reader2@example.net"]]


def test_dropped_twice_is_a_temporary_error(server: LoopbackController, handler: Recorder) -> None:
    handler.drop_at_mail = 2
    _first_fails_temporarily_second_arrives(server, handler)


def test_connection_lost_after_the_body_is_unknown(server: LoopbackController, handler: Recorder) -> None:
    handler.drop_after_body = 1
    with transport_for(server) as transport:
        with pytest.raises(SendError) as caught:
            transport.send(message(1))
        transport.send(message(2))
    assert caught.value.unknown is True
    assert caught.value.permanent is False
    assert "twice" in (caught.value.hint or "")
    # the server did get message 1: resending it blindly would have duplicated it
    assert [r for _, r, _ in handler.messages] == [["reader1@example.net"], ["reader2@example.net"]]
    assert handler.connections == 2


def test_unreachable_server_is_a_temporary_error_with_a_hint() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = SmtpTransport("127.0.0.1", port, local_hostname="localhost", timeout=2)
    with transport, pytest.raises(SendError) as caught:
        transport.send(message())
    assert not caught.value.permanent
    assert f"127.0.0.1:{port}" in caught.value.message
    assert "NEWSLETTER_SMTP_HOST" in (caught.value.hint or "")


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"ada", PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def auth_server(handler: Recorder) -> Iterator[LoopbackController]:
    with running(handler, authenticator=authenticator, auth_require_tls=False) as controller:
        yield controller


def test_login_then_send(auth_server: LoopbackController, handler: Recorder) -> None:
    with transport_for(auth_server, username="ada", password=SecretStr(PASSWORD)) as transport:
        transport.send(message(1))
        transport.send(message(2))
    assert len(handler.messages) == 2
    assert handler.connections == 1


def test_a_421_echoing_the_login_is_logged_masked(
    auth_server: LoopbackController, handler: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """The reconnect after a 421 is logged (at INFO, which the daemon shows) with the server's words."""
    caplog.set_level(logging.INFO)
    blob = base64.b64encode(f"\0ada\0{PASSWORD}".encode()).decode()
    handler.mail_replies.append(f"421 4.7.0 going away {blob} ({PASSWORD})")
    with transport_for(auth_server, username="ada", password=SecretStr(PASSWORD)) as transport:
        transport.send(message(1))
    assert len(handler.messages) == 1 and "dropped (421 4.7.0 going away " in caplog.text
    assert "*** (***)); reconnecting" in caplog.text  # the user's part of the blob may show
    assert PASSWORD not in caplog.text and blob[4:-4] not in caplog.text


def test_login_failure_has_a_hint_and_never_the_password(
    auth_server: LoopbackController, handler: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors = []
    with transport_for(auth_server, username="ada", password=SecretStr("wrong-" + PASSWORD)) as transport:
        for i in range(3):
            with pytest.raises(SendError) as caught:
                transport.send(message(i))
            errors.append(caught.value)
    assert "login as 'ada' failed: 535" in errors[0].message
    assert "NEWSLETTER_SMTP_PASSWORD" in (errors[0].hint or "")
    assert handler.connections == 1  # a bad password is not retried against the server for every message
    assert handler.messages == []
    for error in errors:
        shown = f"{error} {error.hint} {error!r} {error.__cause__!r} {error.__context__!r}"
        assert PASSWORD not in shown
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(transport)


def test_auth_not_offered_without_tls_says_so(handler: Recorder) -> None:
    with (
        running(handler, authenticator=authenticator) as controller,  # AUTH only after STARTTLS
        transport_for(controller, username="ada", password=SecretStr(PASSWORD)) as transport,
        pytest.raises(SendError) as caught,
    ):
        transport.send(message())
    assert "does not offer AUTH" in caught.value.message
    assert "NEWSLETTER_SMTP_SECURITY=starttls" in (caught.value.hint or "")


# --- TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        tool_missing("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_starttls_then_login(certificate: tuple[Path, Path], handler: Recorder) -> None:
    server = running(
        handler, tls_context=server_tls(certificate), require_starttls=True, authenticator=authenticator
    )
    options = {"username": "ada", "password": SecretStr(PASSWORD), "tls_context": client_tls(certificate)}
    with server as controller, transport_for(controller, security="starttls", **options) as transport:
        transport.send(message(1))
        transport.send(message(2))
    assert len(handler.messages) == 2
    assert handler.connections == 2  # EHLO before and after STARTTLS, one connection


def test_implicit_tls(certificate: tuple[Path, Path], handler: Recorder) -> None:
    with (
        running(handler, ssl_context=server_tls(certificate)) as controller,
        transport_for(controller, security="ssl", tls_context=client_tls(certificate)) as transport,
    ):
        transport.send(message(1))
    assert len(handler.messages) == 1


def test_untrusted_certificate_fails_with_a_hint(certificate: tuple[Path, Path], handler: Recorder) -> None:
    with (
        running(handler, tls_context=server_tls(certificate)) as controller,
        transport_for(controller, security="starttls") as transport,  # system CAs: not trusted
        pytest.raises(SendError) as caught,
    ):
        transport.send(message(1))
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message
    assert "NEWSLETTER_SMTP_SECURITY" in (caught.value.hint or "")
    assert handler.messages == []


# --- make_transport --------------------------------------------------------------------------------


def test_make_transport_builds_file_and_smtp(tmp_path: Path) -> None:
    file = make_transport(Settings(home=tmp_path, transport="file"))
    assert isinstance(file, FileTransport) and file.outbox == tmp_path / "outbox"
    settings = Settings(
        transport="smtp",
        smtp_host="mail.example.org",
        smtp_port=587,
        smtp_username="ada",
        smtp_password=SecretStr(PASSWORD),
        smtp_security="starttls",
        smtp_timeout=12.5,
    )
    smtp = make_transport(settings)
    assert isinstance(smtp, SmtpTransport)
    assert (smtp.host, smtp.port, smtp.security, smtp.timeout) == ("mail.example.org", 587, "starttls", 12.5)
    assert smtp.password is not None and smtp.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(smtp)


@pytest.mark.parametrize("host", ["mail.example.org", "10.0.0.25"])
def test_a_password_is_never_sent_unencrypted_over_the_network(host: str) -> None:
    fields = {"transport": "smtp", "smtp_username": "ada", "smtp_password": PASSWORD, "smtp_host": host}
    with pytest.raises(ConfigError, match=rf"unencrypted to {host}: set NEWSLETTER_SMTP_SECURITY=starttls"):
        load_settings(**fields)  # security "none", the default
    allowed = [{"smtp_security": "starttls"}, {"smtp_security": "ssl"}, {"smtp_host": "127.0.0.1"}]
    allowed += [{"smtp_host": "localhost"}, {"smtp_host": "::1"}, {"transport": "file"}]
    for change in allowed:
        assert load_settings(**{**fields, **change}).smtp_password is not None


def test_header_injection_does_not_add_recipients(server: LoopbackController, handler: Recorder) -> None:
    evil = "Ada\r\nBcc: victim@example.net\r\n\r\nforged body"
    rendered = RenderedDigest(evil, "<p>x</p>", "x")
    built = build_message(
        digest_id="d9", envelope=ENVELOPE, to_name=evil, to_addr="ada@example.org", rendered=rendered,
        date=datetime(2024, 3, 11, tzinfo=UTC),
    )  # fmt: skip
    with transport_for(server) as transport:
        transport.send(built)
    [(_, rcpts, raw)] = handler.messages
    assert rcpts == ["ada@example.org"]
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert "Bcc" not in parsed
    assert parsed["Subject"] == "Ada Bcc: victim@example.net forged body"
    assert parsed.get_content_type() == "multipart/alternative"


def test_pipelining_is_used_only_when_offered(server: LoopbackController, handler: Recorder) -> None:
    with transport_for(server) as transport:
        transport.send(message(1))
        offered = transport._connected().has_extn("pipelining")
    assert offered is handler.pipelining
    assert len(handler.messages) == 1


def test_refused_sender_sends_no_body_and_the_connection_goes_on(
    server: LoopbackController, handler: Recorder
) -> None:
    handler.mail_replies.append("451 4.3.0 Try again later")
    _first_fails_temporarily_second_arrives(server, handler)
    assert handler.connections == 1


@pytest.mark.parametrize(
    "body",
    [
        b".starts with a dot\r\nmiddle\r\n.\r\n..two dots\r\nend",  # no final CRLF either
        b"plain\r\nlines only\r\n",
    ],
)
def test_body_is_dot_stuffed_only_where_needed(
    server: LoopbackController, handler: Recorder, body: bytes
) -> None:
    head = b"From: a@example.org\r\nTo: reader1@example.net\r\nSubject: dots\r\n\r\n"
    raw = head + body
    outgoing = OutgoingMessage(
        digest_id="dots", message_id="<dots@example.org>", sender="a@example.org", subject="dots",
        recipient="reader1@example.net", raw=raw,
    )  # fmt: skip
    with transport_for(server) as transport:
        transport.send(outgoing)
    [(_, _, received)] = handler.messages
    expected = raw if raw.endswith(b"\r\n") else raw + b"\r\n"
    assert received == expected  # the server un-stuffs: every line arrives as it was


@pytest.mark.parametrize(
    "address",
    ["a@b.org", "a.b+c@x-y.example.org", "Ada <a@b.org>", '"q u"@x.org', "", "no-at-sign", "a@[127.0.0.1]"],
)
def test_pipelined_envelope_addresses_match_smtplib(address: str) -> None:
    import smtplib

    from newsletter.send.smtp import _angle

    assert _angle(address) == smtplib.quoteaddr(address)


def test_a_server_echoing_auth_plain_never_shows_the_password(handler: Recorder) -> None:
    """AUTH PLAIN is base64 of NUL user NUL password: a server quoting it back must not leak it."""

    def echoing(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        login, password = auth_data.login.decode(), auth_data.password.decode()
        plain = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
        return AuthResult(success=False, handled=False, message=f"535 5.7.8 refused AUTH PLAIN {plain}")

    with running(handler, authenticator=echoing, auth_require_tls=False) as controller:
        transport = transport_for(controller, username="ada", password=SecretStr(PASSWORD))
        with transport, pytest.raises(SendError) as caught:
            transport.send(message(1))
    shown = caught.value.message
    assert "refused AUTH PLAIN " in shown and "***" in shown
    assert base64.b64encode(f"\0ada\0{PASSWORD}".encode()).decode()[8:-4] not in shown


@pytest.mark.parametrize(
    ("reply", "mailbox"),
    [
        ("452 4.2.2 <reader1@example.net>: mailbox full", True),
        ("450 4.1.1 <reader1@example.net>: recipient address unknown for now", True),
        ("451 4.3.0 try again later", False),
        ("452 4.2.0 try again later", False),
        ("451 try again later", False),
        ("450 4.1.8 <digest@example.org>: Sender address rejected: Domain not found", False),  # ours
    ],
)
def test_a_refusal_for_now_tells_whether_it_blames_the_recipient_s_mailbox(
    server: LoopbackController, handler: Recorder, reply: str, mailbox: bool
) -> None:
    """One full mailbox refused for days stopped the whole list: its refusals counted as the server's."""
    refused = _refusal_of(server, handler, reply)
    assert not refused.permanent and refused.mailbox is mailbox


@pytest.mark.parametrize(
    ("reply", "gone"),
    [
        ("550 5.1.1 <reader1@example.net>: no such user", True),
        ("550 5.2.1 <reader1@example.net>: mailbox disabled", True),
        ("552 5.2.2 <reader1@example.net>: mailbox full", False),  # the next, emptied, may take one
        ("552 5.2.3 message too long", False),
        ("550 5.7.1 refused by policy", False),
        ("550 no such user", False),  # no enhanced status: nothing to go on
    ],
)
def test_a_refusal_for_good_tells_whether_the_mailbox_is_gone(
    server: LoopbackController, handler: Recorder, reply: str, gone: bool
) -> None:
    """A full mailbox or a digest too big held the subscriber's next digests like a dead address."""
    refused = _refusal_of(server, handler, reply)
    assert refused.permanent and refused.gone is gone


def _refusal_of(server: LoopbackController, handler: Recorder, reply: str) -> SendError:
    """The SendError one message meets when the server answers its recipient with ``reply``."""
    handler.refuse_rcpt["reader1@example.net"] = reply
    with transport_for(server) as transport, pytest.raises(SendError) as caught:
        transport.send(message(1))
    return caught.value
