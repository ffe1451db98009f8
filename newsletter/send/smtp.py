"""SMTP transport: one lazily opened connection reused for the run, errors classified for retry logic.

- 4xx -> SendError(permanent=False); 5xx -> SendError(permanent=True), with the server's text.
- The connection dropped before the message body went out -> reconnect and send again, once.
- The connection dropped after the body went out, before the server's reply -> SendError(unknown=True):
  the server may have accepted it, so resending could duplicate it.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from types import TracebackType
from typing import ClassVar, Literal

from pydantic import SecretStr

from newsletter.errors import ConnectionRefused, SendError
from newsletter.models import OutgoingMessage
from newsletter.redact import redact

log = logging.getLogger(__name__)

Security = Literal["none", "starttls", "ssl"]


class _Client(smtplib.SMTP):
    """smtplib.SMTP with ``deliver``: ``sendmail`` for one recipient, pipelined and without a regex pass.

    Two savings that matter at thousands of messages a minute: MAIL, RCPT and DATA go out in one write
    when the server offers PIPELINING (RFC 2920), and the body is dot-stuffed only when a line starts
    with a dot (``sendmail`` runs a regex over every body: half the client's cost for a 40 KB message).
    It also records whether the body reached the socket, which decides between "reconnect and send
    again" and "unknown" when the connection drops.
    """

    body_sent = False
    used = 0  # messages this connection was given (delivered or refused): a reused one may have died idle

    def deliver(self, sender: str, recipient: str, raw: bytes) -> None:
        """Raise what ``sendmail`` raises: SMTPSenderRefused, SMTPRecipientsRefused, SMTPDataError..."""
        self.body_sent = False
        self.used += 1
        self.ehlo_or_helo_if_needed()
        options = [f"SIZE={len(raw)}"] if self.has_extn("size") else []
        if self.has_extn("pipelining"):
            mail, rcpt, data = self._pipelined(sender, recipient, options)
        else:
            mail = self.mail(sender, options)
            rcpt = self.rcpt(recipient) if mail[0] == 250 else _NOT_SENT
            data = self.docmd("DATA") if rcpt[0] in (250, 251) else _NOT_SENT
        if data[0] == 354 and (mail[0] != 250 or rcpt[0] not in (250, 251)):
            self.send(b".\r\n")  # RFC 2920: DATA accepted without a recipient; end it empty
            self.getreply()
        if mail[0] != 250:
            raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
        if rcpt[0] not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({recipient: rcpt})
        if data[0] != 354:
            raise smtplib.SMTPDataError(*data)
        self.send(_data_payload(raw))
        self.body_sent = True
        code, reply = self._final_reply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)

    def _final_reply(self) -> tuple[int, bytes]:
        """The reply to the body, waited for as RFC 5321 (4.5.3.2.6) asks: up to 10 minutes, however
        short the timeout of the other replies (a server's content filter may take that long; a
        message whose reply did not come is 'unknown', never sent again by a run)."""
        assert self.sock is not None
        self.sock.settimeout(max(self.timeout, FINAL_REPLY_WAIT))
        try:
            return self.getreply()
        finally:
            if self.sock is not None:
                self.sock.settimeout(self.timeout)

    def _pipelined(
        self, sender: str, recipient: str, options: list[str]
    ) -> tuple[tuple[int, bytes], tuple[int, bytes], tuple[int, bytes]]:
        mail = " ".join([f"MAIL FROM:{_angle(sender)}", *options])
        self.send(f"{mail}\r\nRCPT TO:{_angle(recipient)}\r\nDATA\r\n")
        return self.getreply(), self.getreply(), self.getreply()


_NOT_SENT = (503, b"not sent: an earlier command was refused")
_ENHANCED = re.compile(r"\s*[245]\.(\d{1,3}\.\d{1,3})\b")  # RFC 3463: class.subject.detail


def _policy(code: int, text: str) -> bool:
    """A refusal whoever the recipient: the enhanced status's subject 7 (security or policy) or x.1.7 and
    x.1.8 (the sender's own address), or code 530 or 554 unless the enhanced status blames the recipient
    (see ``_the_mailbox``; x.2.0 says nothing, and Office 365 gives it to every message of a sender it
    refuses). Without an enhanced status, a refusal to relay (Exim's "550 relay not permitted") is the
    server's too."""
    subject, detail = _status(text)
    relaying = not subject and _RELAY.search(_ANY_ADDRESS.sub("address", text)) is not None
    the_sender = subject == "1" and detail in ("7", "8")
    return subject == "7" or the_sender or relaying or (code in (530, 554) and not _the_mailbox(text))


def _the_mailbox(text: str) -> bool:
    """Whether the enhanced status blames the recipient: its address (x.1.1-x.1.6, x.1.10; not x.1.7 and
    x.1.8, which are the sender's, nor x.1.0) or a named state of its mailbox (x.2.1-x.2.4: disabled,
    full, too long); another recipient may well be accepted."""
    subject, detail = _status(text)
    return (subject == "1" and detail in _RECIPIENT_ADDRESS) or (
        subject == "2" and detail in ("1", "2", "3", "4")
    )


def _gone(text: str) -> bool:
    """Whether the enhanced status says the recipient's mailbox is not there (x.1.1-x.1.6, x.1.10) or
    disabled (x.2.1): unlike a full one (x.2.2) or a message too long (x.2.3), the next digest fares no
    better."""
    subject, detail = _status(text)
    return (subject == "1" and detail in _RECIPIENT_ADDRESS) or (subject == "2" and detail == "1")


def _status(text: str) -> tuple[str, str]:
    """The enhanced status's subject and detail ("1", "1" of 5.1.1), or empty strings without one."""
    enhanced = _ENHANCED.match(text)
    subject, _, detail = enhanced[1].partition(".") if enhanced else ("", "", "")
    return subject, detail


_RECIPIENT_ADDRESS = ("1", "2", "3", "4", "6", "10")  # RFC 3463 and 7505: x.1.<these> name the recipient
_DENIED = r"(?:is\s+)?(?:denied|prohibited|not\s+(?:allowed|permitted|authori[sz]ed))\b"
_RELAY = (
    re.compile(  # a refusal to relay; not "user unknown in relay recipient table" nor "relay host refused"
        rf"\brelay(?:ing)?\s+(?:access\s+)?{_DENIED}|\brelay(?:ing)?\s+(?:mail\s+)?to\s+\S+\s+{_DENIED}"
        r"|\bno\s+relaying\b|\b(?:unable|not\s+allowed)\s+to\s+relay\b|\b(?:do|does|will)\s+not\s+relay\b",
        re.IGNORECASE,
    )
)
_ANY_ADDRESS = re.compile(r"[^\s@]*@\S*")  # the recipient's address may hold the word (linear: no @, no scan)


FINAL_REPLY_WAIT = 600.0  # seconds
_BARE_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"@]+@[A-Za-z0-9.-]+")


def _angle(address: str) -> str:
    """``<address>`` for SMTP; smtplib.quoteaddr's full RFC 5322 parse only for unusual forms."""
    return f"<{address}>" if _BARE_ADDRESS.fullmatch(address) else smtplib.quoteaddr(address)


_DOT_AT_LINE_START = re.compile(rb"(?m)^\.")


def _data_payload(raw: bytes) -> bytes:
    """The message as sent after DATA: dot-stuffed (RFC 5321 4.5.2), CRLF-ended, then the lone dot."""
    if raw.startswith(b".") or b"\n." in raw:  # a memchr-speed scan; the regex only when needed
        raw = _DOT_AT_LINE_START.sub(b"..", raw)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw + b".\r\n"


class _SslClient(_Client, smtplib.SMTP_SSL):
    pass


class SmtpTransport:
    """Delivers over SMTP; use as a context manager so the run shares one connection."""

    uses_parts: ClassVar[bool] = False  # sends message.raw as it is
    retries_itself: ClassVar[bool] = False

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        security: Security = "none",
        timeout: float = 30.0,
        local_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in ("none", "starttls", "ssl"):
            raise ValueError(f"security must be none, starttls or ssl, not {security!r}")
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.security, self.timeout = security, timeout
        self.local_hostname = local_hostname
        self.tls_context = tls_context
        self.connections = 0  # opened so far; a run should need one
        self._client: _Client | None = None
        self._login_failure: SendError | None = None

    def __enter__(self) -> SmtpTransport:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SmtpTransport({self.host!r}, {self.port}, security={self.security!r})"

    def send(self, message: OutgoingMessage) -> None:
        """Return once the server accepted ``message``; raise SendError otherwise."""
        try:
            self._send_once(message)
        except _Dropped as dropped:
            log.info("SMTP connection to %s:%s dropped (%s); reconnecting", self.host, self.port, dropped)
            self._discard()
            try:
                self._send_once(message)
            except _Dropped as again:
                raise SendError(
                    f"SMTP connection to {self.host}:{self.port} lost twice before sending: {again}",
                    hint="the server keeps closing the connection; check its logs",
                ) from again.__cause__

    def close(self) -> None:
        """QUIT and close the connection, if one is open."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            client.close()

    # --- one attempt --------------------------------------------------------------------------------

    def _send_once(self, message: OutgoingMessage) -> None:
        client = self._connected()
        try:
            client.deliver(message.sender, message.recipient, message.raw)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients.get(message.recipient, (0, b"recipient refused"))
            raise self._refused(client, code, text, f"recipient {message.recipient} refused") from exc
        except smtplib.SMTPSenderRefused as exc:
            raise self._sender_refused(client, exc) from exc
        except smtplib.SMTPResponseException as exc:  # DATA refused
            raise self._refused(client, exc.smtp_code, exc.smtp_error, "message refused") from exc
        except smtplib.SMTPServerDisconnected as exc:
            raise self._lost(client, exc) from exc
        except smtplib.SMTPException as exc:
            raise SendError(f"SMTP error from {self.host}:{self.port}: {_describe(exc)}") from exc
        except OSError as exc:
            raise self._lost(client, exc) from exc
        log.debug("SMTP accepted %s for %s", message.message_id, message.recipient)

    def _refused(self, client: _Client, code: int, text: bytes | str, what: str) -> SendError | _Dropped:
        secret = self.password.get_secret_value() if self.password else None
        reply = redact(f"{code} {_decode(text)}", [secret])  # logged when the channel is dropped
        if code == 421 and not client.body_sent:  # the server is closing the channel: try a new one
            self._discard()
            return _Dropped(reply)
        _reset(client)
        said = _decode(text)
        return SendError(
            f"SMTP {what}: {reply}",
            permanent=500 <= code < 600,
            policy=_policy(code, said),
            mailbox=_the_mailbox(said),
            gone=_gone(said),
            refused=True,
        )

    def _sender_refused(self, client: _Client, exc: smtplib.SMTPSenderRefused) -> SendError | _Dropped:
        """MAIL FROM refused: the envelope sender is every message's, so a permanent refusal (530
        authentication required, 550/553 sender not allowed) stops the run with the rest queued, as
        a refused login does; only a size refusal (552, 5.3.4) is this message's own."""
        refusal = self._refused(client, exc.smtp_code, exc.smtp_error, "sender refused")
        too_big = exc.smtp_code == 552 or "5.3.4" in _decode(exc.smtp_error)
        if not isinstance(refusal, SendError) or not refusal.permanent or too_big:
            return refusal
        hint = "check NEWSLETTER_FROM and the SMTP login (NEWSLETTER_SMTP_USERNAME, NEWSLETTER_SMTP_PASSWORD)"
        return SendError(refusal.message, hint, transport_down=True)

    def _lost(self, client: _Client, exc: Exception) -> SendError | _Dropped:
        self._discard()
        if client.body_sent:
            return SendError(
                f"SMTP connection to {self.host}:{self.port} lost after the message was sent, "
                f"before the server replied: {_describe(exc)}",
                hint="the server may have accepted it; resending could deliver it twice",
                unknown=True,
            )
        # No reply in time on a new connection: the server stalls, and reconnecting would wait again.
        # On a reused one it may be the connection that died while idle (a NAT dropped it): reconnect.
        timed_out = isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)
        if timed_out and client.used <= 1:  # the first message this connection was given
            return SendError(
                f"SMTP server {self.host}:{self.port} did not answer within {self.timeout:g} s",
                hint="it is overloaded or stuck; the digest waits for the next run (NEWSLETTER_SMTP_TIMEOUT)",
                stalled=True,
            )
        return _Dropped(_describe(exc))

    # --- connection ---------------------------------------------------------------------------------

    def _connected(self) -> _Client:
        if self._login_failure is not None:  # do not hammer the server with a bad password
            raise SendError(self._login_failure.message, self._login_failure.hint, transport_down=True)
        if self._client is None or self._client.sock is None:
            self._discard()
            self._client = self._open()
        return self._client

    def _open(self) -> _Client:
        where = f"{self.host}:{self.port}"
        try:
            client = self._connect()
        except (smtplib.SMTPException, OSError, ValueError) as exc:  # ValueError: a name IDNA refuses
            raise ConnectionRefused(
                f"cannot connect to SMTP server {where}: {_describe(exc)}",
                hint="check NEWSLETTER_SMTP_HOST, NEWSLETTER_SMTP_PORT and NEWSLETTER_SMTP_SECURITY",
                transport_down=True,
            ) from exc
        try:
            self._handshake(client)
        except BaseException:
            client.close()
            raise
        self.connections += 1
        log.debug("SMTP connected to %s (%s)", where, self.security)
        return client

    def _connect(self) -> _Client:
        if self.security == "ssl":
            return _SslClient(
                self.host,
                self.port,
                local_hostname=self.local_hostname,
                timeout=self.timeout,
                context=self._tls(),
            )
        return _Client(self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout)

    def _handshake(self, client: smtplib.SMTP) -> None:
        try:
            client.ehlo()
            if self.security == "starttls":
                client.starttls(context=self._tls())
                client.ehlo()
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectionRefused(
                f"SMTP handshake with {self.host}:{self.port} failed: {_describe(exc)}",
                hint="check NEWSLETTER_SMTP_SECURITY (starttls needs a server that offers it)",
                transport_down=True,
            ) from exc
        if self.username:
            self._login(client)

    def _login(self, client: smtplib.SMTP) -> None:
        secret = self.password.get_secret_value() if self.password else ""
        try:
            client.login(self.username or "", secret)
        except smtplib.SMTPAuthenticationError as exc:
            reply = redact(_decode(exc.smtp_error), [secret])
            if 400 <= exc.smtp_code < 500:  # not now (too many logins, a limit per client): not the password
                raise ConnectionRefused(
                    f"SMTP login as {self.username!r} refused for now: {exc.smtp_code} {reply}",
                    transport_down=True,
                ) from None
            self._login_failure = SendError(
                f"SMTP login as {self.username!r} failed: {exc.smtp_code} {reply}",
                hint="check NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD",
                transport_down=True,
            )
            raise self._login_failure from None
        except smtplib.SMTPNotSupportedError:
            raise SendError(
                f"SMTP server {self.host}:{self.port} does not offer AUTH on this connection",
                hint="many servers offer AUTH only after TLS: set NEWSLETTER_SMTP_SECURITY=starttls or ssl",
                transport_down=True,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            detail = redact(_describe(exc), [secret])
            raise SendError(f"SMTP login failed: {detail}", transport_down=True) from None

    def _tls(self) -> ssl.SSLContext:
        return self.tls_context or ssl.create_default_context()

    def _discard(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class _Dropped(Exception):
    """The connection went away before the message body was sent: safe to reconnect and resend."""


def _reset(client: smtplib.SMTP) -> None:
    """RSET after a refusal so the connection can take the next message (smtplib skips it sometimes)."""
    if client.sock is None:
        return
    try:
        client.rset()
    except (smtplib.SMTPException, OSError):
        client.close()


def _decode(text: bytes | str) -> str:
    value = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return " ".join(value.split())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_decode(exc.smtp_error)}"
    return str(exc) or type(exc).__name__
