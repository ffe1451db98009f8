"""SendGrid v3: POST /v3/mail/send, one request per message, ``Authorization: Bearer <key>``.

One request could carry up to 1,000 personalizations, but they all share one body and every digest has
its own, so each message is its own request. Accepted is ``202`` with the id in ``X-Message-Id``.
Extra headers go in the top-level ``headers`` map (Message-ID is not among SendGrid's reserved headers);
``custom_args`` carries the digest id into SendGrid's event webhooks. Errors are 400 with an ``errors``
list (permanent for that message), 401/403 for the key or an unverified sender, 413 for size.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import SecretStr

from newsletter.errors import ConfigError
from newsletter.models import OutgoingMessage
from newsletter.send.apis.content import content_of
from newsletter.send.apis.core import HttpApiTransport, SendResult, encode_json

BASE_URLS = {"us": "https://api.sendgrid.com", "eu": "https://api.eu.sendgrid.com"}


class SendGridTransport(HttpApiTransport):
    provider = "SendGrid"
    default_base_url = BASE_URLS["us"]
    auth_hint = (
        "check NEWSLETTER_API_KEY (it needs Mail Send access) and that the sender is a verified identity"
    )

    def __init__(self, api_key: SecretStr, *, region: str = "us", **options: Any) -> None:
        if region not in BASE_URLS:
            raise ConfigError(f"SendGrid region must be 'us' or 'eu', not {region!r}")
        options["base_url"] = options.get("base_url") or BASE_URLS[region]
        super().__init__(api_key, **options)

    def deliver(self, message: OutgoingMessage) -> SendResult:
        body = encode_json(self.payload(message))
        headers = {"Authorization": f"Bearer {self._secret()}", "Content-Type": "application/json"}
        response = self._post(
            lambda c: c.build_request("POST", "/v3/mail/send", content=body, headers=headers),
            f"digest {message.digest_id}",
            [message.digest_id],
        )
        what = f"digest {message.digest_id}"
        return SendResult(message.digest_id, self._accepted_id(response.headers.get("X-Message-Id"), what))

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """The documented JSON object of one message (plain text first, as SendGrid requires)."""
        content = content_of(message)
        return {
            "personalizations": [{"to": [_address(content.recipient, content.recipient_name)]}],
            "from": _address(content.sender, content.sender_name),
            "subject": content.subject,
            "content": [
                {"type": "text/plain", "value": content.text or " "},
                *([{"type": "text/html", "value": content.html}] if content.html else []),
            ],
            "headers": dict(content.headers),
            "custom_args": {"digest_id": message.digest_id},
        }

    def _blames_recipient(self, body: Any) -> bool:
        """A 400 whose ``errors`` name the recipient's field (``personalizations.0.to``)."""
        errors = body.get("errors") if isinstance(body, dict) else None
        fields = (
            [str(e.get("field") or "") for e in errors if isinstance(e, dict)]
            if isinstance(errors, list)
            else []
        )
        return any(_RECIPIENT_FIELD.match(field) for field in fields)


_RECIPIENT_FIELD = re.compile(r"personalizations\.\d+\.(?:to|cc|bcc)\b")  # "personalizations.0.to.0.email"


def _address(email: str, name: str) -> dict[str, str]:
    return {"email": email, "name": name} if name else {"email": email}
