"""HTTP email API transports over httpx: Postmark, SendGrid v3, Mailgun, Resend.

Each is a Transport (``send`` + context manager sharing one httpx.Client for the run) with
``deliver(message) -> SendResult`` and ``send_batch(messages) -> list[SendResult | SendError]``.
Retries, Retry-After and error classes: see ``core``. Request shapes follow the providers' docs:

- Postmark: https://postmarkapp.com/developer/user-guide/send-email-with-api
  https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails
  https://postmarkapp.com/developer/api/overview (auth header, HTTP status and API ErrorCodes)
  https://postmarkapp.com/support/article/1207-how-to-create-and-send-through-message-streams
- SendGrid v3: https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
  https://www.twilio.com/docs/sendgrid/for-developers/sending-email/personalizations
  https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors
  https://www.twilio.com/docs/sendgrid/glossary/x-message-id
- Mailgun: https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages
  (POST /v3/{domain_name}/messages.mime; US and EU servers; Basic auth api:KEY)
  https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses
- Resend: https://resend.com/docs/api-reference/emails (POST /emails)
  https://resend.com/docs/dashboard/emails/batch-sending (POST /emails/batch, up to 100)
  https://resend.com/changelog/batch-validation-modes (x-batch-validation: permissive)
  https://resend.com/docs/dashboard/emails/idempotency-keys  https://resend.com/changelog/batch-idempotency-keys
  https://resend.com/docs/api-reference/errors  https://resend.com/docs/api-reference/rate-limit
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from newsletter.config import Settings, setting_origin
from newsletter.errors import ConfigError
from newsletter.send.apis.core import (
    DEFAULT_BATCH,
    HttpApiTransport,
    Outcome,
    SendResult,
    retry_after_seconds,
)
from newsletter.send.apis.mailgun import MailgunTransport
from newsletter.send.apis.postmark import PostmarkTransport
from newsletter.send.apis.resend import ResendTransport, idempotency_key
from newsletter.send.apis.sendgrid import SendGridTransport
from newsletter.send.message import sender_domain

__all__ = [
    "API_TRANSPORTS",
    "HttpApiTransport",
    "MailgunTransport",
    "Outcome",
    "PostmarkTransport",
    "ResendTransport",
    "SendGridTransport",
    "SendResult",
    "api_transport",
    "batch_size",
    "idempotency_key",
    "retry_after_seconds",
]

API_TRANSPORTS = ("postmark", "sendgrid", "mailgun", "resend")


def api_transport(settings: Settings) -> HttpApiTransport:
    """The API transport NEWSLETTER_TRANSPORT names, keyed with NEWSLETTER_API_KEY (not yet connected).

    Its retries of a temporary failure are NEWSLETTER_RETRIES and NEWSLETTER_RETRY_BACKOFF, the same
    settings the SMTP courier uses; the courier does not retry on top of them.
    """
    key = _api_key(settings)
    common: dict[str, Any] = {
        "base_url": settings.api_base_url,
        "timeout": settings.api_timeout,
        "max_attempts": 1 + settings.retries,
        "backoff": settings.retry_backoff,
    }
    transport = _provider(settings, key, common)
    transport.batch_size = batch_size(type(transport), settings.batch_size)
    return transport


def _provider(settings: Settings, key: SecretStr, common: dict[str, Any]) -> HttpApiTransport:
    region = settings.api_region
    if settings.transport == "postmark":
        stream = settings.postmark_message_stream
        return PostmarkTransport(key, message_stream=stream, **common)
    if settings.transport == "sendgrid":
        return SendGridTransport(key, region=region, **common)
    if settings.transport == "mailgun":
        domain = settings.mailgun_domain or sender_domain(settings.sender)
        return MailgunTransport(key, domain=domain, region=region, **common)
    if settings.transport == "resend":
        return ResendTransport(key, **common)
    raise ConfigError(f"transport {settings.transport!r} is not an HTTP API transport")


def batch_size(transport: type[HttpApiTransport], wanted: int | None) -> int:
    """Messages per request a run sends: NEWSLETTER_BATCH_SIZE, else DEFAULT_BATCH (or the provider's max).

    SendGrid and Mailgun have no endpoint that takes many distinct messages: always 1 for them.
    """
    if transport.batch_limit <= 1:
        return 1
    if wanted is None:
        return min(DEFAULT_BATCH, transport.batch_limit)
    if wanted > transport.batch_limit:
        raise ConfigError(
            f"invalid setting field 'batch_size': {transport.provider} takes at most "
            f"{transport.batch_limit} messages per batch request, not {wanted} "
            f"({setting_origin('batch_size')})",
            hint="set batch_size to that or less",
        )
    return wanted


def _api_key(settings: Settings) -> SecretStr:
    key = settings.api_key
    if key is None or not key.get_secret_value().strip():
        raise ConfigError(
            f"transport {settings.transport!r} needs an API key",
            hint="set NEWSLETTER_API_KEY to the provider's API key (or server token)",
        )
    return key
