"""Postmark: POST /email for one message, POST /email/batch for up to 500 (50 MB) per request.

Auth is the ``X-Postmark-Server-Token`` header. Extra headers go in ``Headers`` as [{"Name", "Value"}].
The batch endpoint answers 200 even when some messages failed: each element of the reply array (same
order as the request) has its own ``ErrorCode`` (0 = accepted, 406 = inactive recipient, ...), so every
element is read. Errors of /email come as 422 with the same ``ErrorCode`` body.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from newsletter.errors import SendError
from newsletter.models import OutgoingMessage
from newsletter.send.apis.content import content_of
from newsletter.send.apis.core import (
    HttpApiTransport,
    Outcome,
    SendResult,
    encode_json,
    json_array,
    response_json,
)

# ErrorCodes worth a retry within the run; every other non-zero code is about the request or the account.
_TEMPORARY = {100: "Maintenance", 429: "Rate limit exceeded"}
# ErrorCodes about the account, the sender or the stream: every message would meet them, so the run
# stops with all still queued (as for a refused key) instead of failing each subscriber for good.
_INACTIVE = 406  # a hard bounce, a spam complaint or a manual suppression of the recipient
_ACCOUNT = {10, 400, 401, 405, 412, 413, 1235}
_HINTS = {
    10: "check NEWSLETTER_API_KEY (a Postmark server token)",
    400: "the sender needs a confirmed Postmark sender signature: check NEWSLETTER_FROM",
    401: "the sender needs a confirmed Postmark sender signature: check NEWSLETTER_FROM",
    405: "the Postmark account may not send (credits or approval); see the Postmark dashboard",
    406: "Postmark marked this address inactive (hard bounce, spam complaint or suppression)",
    412: "the Postmark account is pending approval",
    413: "the Postmark account may not send; see the Postmark dashboard",
    1235: "no such message stream: check NEWSLETTER_POSTMARK_MESSAGE_STREAM",
}


class PostmarkTransport(HttpApiTransport):
    provider = "Postmark"
    default_base_url = "https://api.postmarkapp.com"
    auth_hint = "check NEWSLETTER_API_KEY (a Postmark server token)"
    batch_limit = 500
    batch_bytes = 45 * 1024 * 1024  # documented limit: 50 MB per batch request

    def __init__(self, api_key: SecretStr, *, message_stream: str = "outbound", **options: Any) -> None:
        super().__init__(api_key, **options)
        self.message_stream = message_stream

    def deliver(self, message: OutgoingMessage) -> SendResult:
        body = self._batch_item(message)
        response = self._post(
            lambda c: self._request(c, "/email", body), f"digest {message.digest_id}", [message.digest_id]
        )
        return self._result(message, response_json(response))

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """The documented JSON object of one message."""
        content = content_of(message)
        return {
            "From": content.from_display,
            "To": content.to_display,
            "Subject": content.subject,
            "HtmlBody": content.html,
            "TextBody": content.text,
            "Headers": [{"Name": k, "Value": v} for k, v in content.headers.items()],
            "MessageStream": self.message_stream,
        }

    def _batch_item(self, message: OutgoingMessage) -> bytes:
        return encode_json(self.payload(message))

    def _send_chunk(self, chunk: list[tuple[OutgoingMessage, bytes]], key: str | None) -> list[Outcome]:
        body = json_array([item for _, item in chunk])
        try:
            response = self._post(
                lambda c: self._request(c, "/email/batch", body),
                f"a batch of {len(chunk)} messages",
                [message.digest_id for message, _ in chunk],
            )
        except SendError as exc:
            return [exc] * len(chunk)
        results = response_json(response)
        if not isinstance(results, list) or len(results) != len(chunk):
            lost = self._maybe_accepted(f"{self.provider} batch reply does not list one result per message")
            return [lost] * len(chunk)
        return [
            self._outcome_of(message, result) for (message, _), result in zip(chunk, results, strict=True)
        ]

    def _request(self, client: httpx.Client, path: str, body: bytes) -> httpx.Request:
        headers = {"X-Postmark-Server-Token": self._secret(), "Content-Type": "application/json"}
        return client.build_request("POST", path, content=body, headers=headers)

    def _outcome_of(self, message: OutgoingMessage, result: Any) -> Outcome:
        try:
            return self._result(message, result)
        except SendError as exc:
            return exc

    def _result(self, message: OutgoingMessage, result: Any) -> SendResult:
        if not isinstance(result, dict) or not isinstance(result.get("ErrorCode"), int):
            raise self._maybe_accepted(
                f"{self.provider} reply for digest {message.digest_id} has no ErrorCode"
            )
        if result["ErrorCode"] != 0:
            raise self._code_error(result, f"digest {message.digest_id} to {message.recipient}")
        return SendResult(
            message.digest_id, self._accepted_id(result.get("MessageID"), f"digest {message.digest_id}")
        )

    def _rejection(self, response: httpx.Response, what: str) -> SendError:
        body = response_json(response)
        if isinstance(body, dict) and isinstance(body.get("ErrorCode"), int):
            return self._code_error(body, what)
        return super()._rejection(response, what)

    def _code_error(self, result: dict[str, Any], what: str) -> SendError:
        code = int(result["ErrorCode"])
        text = self._short(str(result.get("Message", "")))
        message = f"{self.provider} refused {what}: ErrorCode {code} {text}".rstrip()
        if code in _ACCOUNT:
            self._refused = SendError(message, _HINTS.get(code), transport_down=True)
            return self._refused
        inactive = code == _INACTIVE  # the recipient's address: the next digest fares no better
        return SendError(
            message,
            _HINTS.get(code),
            permanent=code not in _TEMPORARY,
            mailbox=inactive,
            gone=inactive,
            refused=True,
        )
