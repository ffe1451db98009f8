"""Transports: file outbox, SMTP, HTTP email APIs."""

from __future__ import annotations

from newsletter.config import Settings, setting_origin
from newsletter.errors import ConfigError
from newsletter.send.apis import (
    API_TRANSPORTS,
    MailgunTransport,
    PostmarkTransport,
    ResendTransport,
    SendGridTransport,
    SendResult,
    api_transport,
)
from newsletter.send.base import Transport
from newsletter.send.file import FileTransport
from newsletter.send.message import Envelope, build_message, envelope_for, message_id_for, sender_domain
from newsletter.send.smtp import SmtpTransport

__all__ = [
    "Envelope",
    "FileTransport",
    "MailgunTransport",
    "PostmarkTransport",
    "ResendTransport",
    "SendGridTransport",
    "SendResult",
    "SmtpTransport",
    "Transport",
    "build_message",
    "envelope_for",
    "make_transport",
    "message_id_for",
    "real_sender",
]


PLACEHOLDER_DOMAIN = "newsletter.invalid"  # the default sender's: fine for the file outbox only


def real_sender(settings: Settings) -> None:
    """ConfigError for the placeholder sender with a transport that sends real mail."""
    if settings.transport != "file" and sender_domain(settings.sender) == PLACEHOLDER_DOMAIN:
        origin = setting_origin("sender")
        given = "" if origin == "newsletter.toml" else f" ({origin})"  # no line there: the default
        raise ConfigError(
            f"the sender {settings.sender!r}{given} is the placeholder, and transport "
            f"{settings.transport!r} sends real mail",
            hint="set NEWSLETTER_FROM (or `from` in newsletter.toml) to an address you send from",
        )


def make_transport(settings: Settings) -> Transport:
    """The transport NEWSLETTER_TRANSPORT names, configured from settings (not yet connected)."""
    if settings.transport == "file":
        return FileTransport(settings.outbox)
    if settings.transport == "smtp":
        return SmtpTransport(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            security=settings.smtp_security,
            timeout=settings.smtp_timeout,
        )
    if settings.transport in API_TRANSPORTS:
        return api_transport(settings)
    raise ConfigError(
        f"transport {settings.transport!r} is not available",
        hint="set NEWSLETTER_TRANSPORT to file, smtp, postmark, sendgrid, mailgun or resend",
    )
