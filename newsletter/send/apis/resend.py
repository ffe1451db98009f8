"""Resend: POST /emails for one message, POST /emails/batch for up to 100, ``Authorization: Bearer <key>``.

Every request carries an ``Idempotency-Key`` (Resend keeps keys 24 h and answers a repeat with the first
reply instead of sending again), so a timeout or a dropped connection after the body went out is retried
instead of reported as unknown:

- one message: ``newsletter-digest/<digest_id>``, stable across retries and runs;
- a batch: ``newsletter-batch/<sha256 of its digest ids>``, stable for the same messages in the same order;
  a run keeps it with each digest of the batch (``batch_key``), and a resend of those digests
  (``retry --unknown``) sends the same batch again under it, so Resend answers with the first reply.

Batches use ``x-batch-validation: permissive``: valid emails are sent, invalid ones come back in
``errors`` by index, instead of one bad address failing all 100. Errors are ``{"name", "message"}``:
400/422 permanent, 409 ``concurrent_idempotent_requests`` retried, 409 ``invalid_idempotent_request``
(same key, other payload: the first request may have been sent) reported as unknown.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import httpx

from newsletter.errors import SendError
from newsletter.models import OutgoingMessage
from newsletter.send.apis.content import content_of
from newsletter.send.apis.core import (
    HttpApiTransport,
    Outcome,
    SendResult,
    encode_json,
    json_array,
    refusal,
    response_json,
)

KEY_PREFIX = "newsletter-digest/"
BATCH_KEY_PREFIX = "newsletter-batch/"
_KEY_LIMIT = 256


class IdempotencyConflict(SendError):
    """The key was used before with another payload: retrying cannot help, and it may have been sent."""


def idempotency_key(digest_id: str) -> str:
    """The key of one digest's send: readable when it fits Resend's 256 characters, else hashed."""
    key = KEY_PREFIX + digest_id
    return key if len(key) <= _KEY_LIMIT else KEY_PREFIX + hashlib.sha256(digest_id.encode()).hexdigest()


def batch_idempotency_key(digest_ids: Sequence[str]) -> str:
    return BATCH_KEY_PREFIX + hashlib.sha256("\n".join(digest_ids).encode()).hexdigest()


class ResendTransport(HttpApiTransport):
    provider = "Resend"
    default_base_url = "https://api.resend.com"
    idempotent = True
    auth_hint = (
        "check NEWSLETTER_API_KEY; sending to others needs a domain verified at resend.com/domains "
        "and NEWSLETTER_FROM on that domain"
    )
    batch_limit = 100
    batch_bytes = 40 * 1024 * 1024

    def deliver(self, message: OutgoingMessage) -> SendResult:
        body = self._batch_item(message)
        key = idempotency_key(message.digest_id)
        response = self._post(
            lambda c: self._request(c, "/emails", body, key),
            f"digest {message.digest_id}",
            [message.digest_id],
        )
        reply = response_json(response)
        provider_id = reply.get("id") if isinstance(reply, dict) else None
        return SendResult(message.digest_id, self._accepted_id(provider_id, f"digest {message.digest_id}"))

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """The documented JSON object of one message."""
        content = content_of(message)
        return {
            "from": content.from_display,
            "to": [content.recipient],
            "subject": content.subject,
            "html": content.html,
            "text": content.text,
            "headers": dict(content.headers),
        }

    def _batch_item(self, message: OutgoingMessage) -> bytes:
        return encode_json(self.payload(message))

    def batch_key(self, digest_ids: Sequence[str]) -> str:
        return batch_idempotency_key(digest_ids)

    def _send_chunk(self, chunk: list[tuple[OutgoingMessage, bytes]], key: str | None) -> list[Outcome]:
        body = json_array([item for _, item in chunk])
        key = key or batch_idempotency_key([message.digest_id for message, _ in chunk])
        headers = {"x-batch-validation": "permissive"}
        try:
            response = self._post(
                lambda c: self._request(c, "/emails/batch", body, key, headers),
                f"a batch of {len(chunk)} messages",
                [message.digest_id for message, _ in chunk],
            )
        except SendError as exc:
            return [_whole_batch(exc, len(chunk))] * len(chunk)
        return self._batch_outcomes([message for message, _ in chunk], response_json(response))

    def _batch_outcomes(self, messages: list[OutgoingMessage], reply: Any) -> list[Outcome]:
        """Invalid emails are listed in ``errors`` by index; ``data`` holds the others' ids, in order."""
        data = reply.get("data") if isinstance(reply, dict) else None
        errors = reply.get("errors") if isinstance(reply, dict) else None
        refused = {
            e["index"]: str(e.get("message", ""))
            for e in errors or []
            if isinstance(e, dict) and isinstance(e.get("index"), int)
        }
        accepted = [i for i in range(len(messages)) if i not in refused]
        if not isinstance(data, list) or len(data) != len(accepted):
            lost = self._maybe_accepted(f"{self.provider} batch reply does not list one result per message")
            return [lost] * len(messages)
        ids = {
            i: item.get("id") if isinstance(item, dict) else None
            for i, item in zip(accepted, data, strict=True)
        }
        return [self._one(i, message, ids, refused) for i, message in enumerate(messages)]

    def _one(
        self, index: int, message: OutgoingMessage, ids: dict[int, Any], refused: dict[int, str]
    ) -> Outcome:
        if index in refused:
            reason = self._short(refused[index])
            said = f"{self.provider} refused digest {message.digest_id}: {reason}"
            return refusal(said, blames_recipient=_blames_to(refused[index]))
        what = f"digest {message.digest_id}"
        try:
            return SendResult(message.digest_id, self._accepted_id(ids.get(index), what))
        except SendError as exc:  # a success without its id: it may not have reached the API
            return exc

    def _request(
        self,
        client: httpx.Client,
        path: str,
        body: bytes,
        key: str,
        extra: dict[str, str] | None = None,
    ) -> httpx.Request:
        headers = {
            "Authorization": f"Bearer {self._secret()}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            **(extra or {}),
        }
        return client.build_request("POST", path, content=body, headers=headers)

    def _rejection(self, response: httpx.Response, what: str) -> SendError:
        reply = response_json(response)
        name = reply.get("name") if isinstance(reply, dict) else None
        said = self._short(str(name or ""))
        text = f"{response.status_code} {said} {self._reply(response)}".replace("  ", " ").strip()
        if name == "concurrent_idempotent_requests":
            return SendError(f"{self.provider} is still processing {what}: {text}")
        if name == "invalid_idempotent_request":
            return IdempotencyConflict(
                f"{self.provider} saw {what} before with other content: {text}",
                "the earlier request may have been delivered; not resent",
                unknown=True,
            )
        blamed = name == "validation_error" and _blames_to(reply.get("message"))
        return refusal(f"{self.provider} rejected {what}: {text}", blames_recipient=blamed)

    def _retryable(self, error: SendError) -> bool:
        return not isinstance(error, IdempotencyConflict)


def _blames_to(said: Any) -> bool:
    """Whether Resend's error text is about the recipient's address: "Invalid `to` field."."""
    return "`to`" in str(said or "")


def _whole_batch(error: SendError, size: int) -> SendError:
    """A refusal of a whole batch for a recipient's address names no one (``x-batch-validation:
    permissive`` lists bad addresses by index): no bounce for every subscriber in it, the run's trouble."""
    if size > 1 and error.gone:
        return refusal(error.message, blames_recipient=False)
    return error
