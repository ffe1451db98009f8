"""Mailgun: POST /v3/<domain>/messages.mime with our own RFC 5322 bytes, so every header stays exactly ours.

Multipart form: ``to`` (the envelope recipient) and ``message`` (the MIME file). HTTP Basic auth with user
``api`` and the key as password. US host api.mailgun.net, EU host api.eu.mailgun.net. Accepted is ``200``
with ``{"id": "<...>", "message": "Queued. Thank you."}``. No batch endpoint takes distinct MIME
messages, so each message is its own request. 400 is permanent for the message; 404 means the domain is
unknown to Mailgun (or in the other region).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
from pydantic import SecretStr

from newsletter.errors import ConfigError, SendError
from newsletter.models import OutgoingMessage
from newsletter.send.apis.core import HttpApiTransport, SendResult, response_json

BASE_URLS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}


class MailgunTransport(HttpApiTransport):
    provider = "Mailgun"
    default_base_url = BASE_URLS["us"]
    auth_hint = "check NEWSLETTER_API_KEY (a Mailgun API or domain sending key) and the region"
    reads_body = True  # uploads message.raw as it is
    uses_parts = False  # ... and nothing else: the builder leaves the HTML and text copies out

    def __init__(self, api_key: SecretStr, *, domain: str, region: str = "us", **options: Any) -> None:
        if region not in BASE_URLS:
            raise ConfigError(f"Mailgun region must be 'us' or 'eu', not {region!r}")
        if not domain or "/" in domain or not domain.isascii() or not domain.isprintable():
            raise ConfigError(f"Mailgun sending domain {domain!r} is not a domain name")
        options["base_url"] = options.get("base_url") or BASE_URLS[region]
        super().__init__(api_key, **options)
        self.domain = domain

    def __repr__(self) -> str:
        return f"MailgunTransport({self.base_url!r}, domain={self.domain!r})"

    def deliver(self, message: OutgoingMessage) -> SendResult:
        response = self._post(
            lambda c: self._request(c, message), f"digest {message.digest_id}", [message.digest_id]
        )
        body = response_json(response)
        provider_id = body.get("id") if isinstance(body, dict) else None
        return SendResult(message.digest_id, self._accepted_id(provider_id, f"digest {message.digest_id}"))

    def _request(self, client: httpx.Client, message: OutgoingMessage) -> httpx.Request:
        token = base64.b64encode(f"api:{self._secret()}".encode()).decode("ascii")
        return client.build_request(
            "POST",
            f"/v3/{self.domain}/messages.mime",
            data={"to": message.recipient},
            files={"message": (f"{message.digest_id}.eml", message.raw, "message/rfc822")},
            headers={"Authorization": f"Basic {token}"},
        )

    def _blames_recipient(self, body: Any) -> bool:
        """A 400 whose message is about the ``to`` parameter ("to parameter is not a valid address")."""
        said = body.get("message") if isinstance(body, dict) else None
        return isinstance(said, str) and _TO_PARAMETER.search(said) is not None

    def _status_error(self, response: httpx.Response, what: str) -> SendError:
        if response.status_code == 404:  # every message would meet it: the run stops, all stays queued
            self._refused = SendError(
                f"Mailgun does not know the domain {self.domain!r}: 404 {self._reply(response)}",
                "check NEWSLETTER_MAILGUN_DOMAIN and NEWSLETTER_API_REGION (us or eu)",
                transport_down=True,
            )
            return self._refused
        return super()._status_error(response, what)


_TO_PARAMETER = re.compile(r"""(?<![\w-])['"]?to['"]?\s+parameter\b""", re.IGNORECASE)
