"""Transports: file outbox, SMTP, HTTP email APIs."""

from __future__ import annotations

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.send.base import Transport
from newsletter.send.file import FileTransport
from newsletter.send.message import Envelope, build_message, envelope_for, message_id_for
from newsletter.send.smtp import SmtpTransport

__all__ = [
    "Envelope",
    "FileTransport",
    "SmtpTransport",
    "Transport",
    "build_message",
    "envelope_for",
    "make_transport",
    "message_id_for",
]


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
    raise ConfigError(
        f"transport {settings.transport!r} is not available yet",
        hint="set NEWSLETTER_TRANSPORT=file or smtp",
    )
