"""What the HTTP email API transports share: one httpx.Client per run, bounded retries, error classes.

Per request:

- 2xx: accepted.
- 429: wait for ``Retry-After`` (delta-seconds or HTTP-date; SendGrid's ``X-RateLimit-Reset``) when it
  is at most ``max_retry_after``, else stop at once. Such a wait (1 s at least) spends no attempt (requests
  released together at the end of a shared pause may meet the limit again), up to ``max_retry_after`` seconds
  of them per request; then SendError(permanent=False, retry_after=<seconds the API asked for>).
- 408, 5xx but 504, and failures before the request body went out (connect, pool, write): retried with
  exponential backoff, then a temporary SendError.
- 504, read timeouts and connections lost after the body went out: the API may have accepted the message,
  so SendError(unknown=True) at once, unless the transport sends an ``Idempotency-Key`` (Resend): then a
  resend is safe and it is retried like a 5xx.
- 401/403: SendError(transport_down=True), hint "check NEWSLETTER_API_KEY": nothing can be sent with this
  key, so the run stops and every digest stays queued for the run after the key is fixed; remembered, so
  later messages fail without a request.
- Any other 4xx: the provider classifies it (permanent for that message unless its docs say otherwise).

While a refused request (429, 408, 5xx, not sent) waits for its next try, ``hold`` (set by the run's
courier) marks its digests as refused, so a crash during the wait leaves them queued, not 'unknown'.

The API key lives in a SecretStr, goes into request headers only, and is masked in any reply text that ends
up in an error message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Self

import httpx
from pydantic import SecretStr

from newsletter import __version__
from newsletter.errors import ConfigError, SendError, SendStopped
from newsletter.models import OutgoingMessage
from newsletter.redact import redact
from newsletter.retry_after import bounded, retry_after_seconds
from newsletter.send.apis.deadline import within
from newsletter.send.pacing import Gate, sleep_unless

log = logging.getLogger(__name__)

# The courier's hook: (digest ids, why) -> a context to wait in, during which they count as not sent.
Hold = Callable[[Sequence[str], str], AbstractContextManager[object]]

AUTH_HINT = "check NEWSLETTER_API_KEY"
_MAX_BACKOFF = 30.0
# The least a wait the API asks for lasts: a Retry-After of 0 (or a reset time already past, a clock
# skew) would otherwise retry at network speed, for ever, since such waits spend no attempt.
MIN_ASKED_WAIT = 1.0
# Messages per batch request a run sends by default (Postmark takes 500, Resend 100). 100 already moves
# more than a run builds (about 1,000 a second) with two requests of 200 ms in flight, and a request that
# times out, or a crash during it, leaves at most 100 digests of unknown fate instead of 500.
DEFAULT_BATCH = 100
_REPLY_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")  # and bidi controls
# Raised before the request body was fully written: the API cannot have accepted the message.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.ProxyError,
    httpx.LocalProtocolError,
)


@dataclass(frozen=True, slots=True)
class SendResult:
    """The API accepted the message; ``provider_id`` is its id for it (for logs and webhooks)."""

    digest_id: str
    provider_id: str | None = None


Outcome = SendResult | SendError


def _utc_now() -> datetime:
    return datetime.now(UTC)


def rate_limit_wait(headers: httpx.Headers, now: datetime) -> float | None:
    """How long a 429 (or 503) asks to wait: ``Retry-After``, else ``X-RateLimit-Reset`` as SendGrid
    sends it (the Unix time the limit resets); None when neither says."""
    wait = retry_after_seconds(headers.get("Retry-After"), now)
    reset = headers.get("X-RateLimit-Reset", "").strip()
    if wait is not None or not (reset.isascii() and reset.isdigit()):  # "²" is a digit to isdigit
        return wait
    return bounded(float(reset) - now.timestamp())  # float: Python refuses ints of 4,300 digits


class HttpApiTransport:
    """Base of the API transports. Subclasses build requests and read replies; this class sends them.

    Use as a context manager: one ``httpx.Client`` (one connection pool) serves the whole run.
    ``sleep`` and ``clock`` are injectable for tests; ``http`` is an httpx transport (MockTransport in tests).
    """

    provider: ClassVar[str] = "HTTP API"
    default_base_url: ClassVar[str] = ""
    uses_parts: ClassVar[bool] = True  # the APIs take the HTML and text apart
    reads_body: ClassVar[bool] = False  # of ``message.raw`` only the header block is read (content_of)
    retries_itself: ClassVar[bool] = True  # bounded attempts per request, Retry-After, idempotency
    idempotent: ClassVar[bool] = False  # requests carry an idempotency key: resending after a timeout is safe
    auth_hint: ClassVar[str] = AUTH_HINT
    batch_limit: ClassVar[int] = 1  # messages per request of the batch endpoint; 1: no batch endpoint
    batch_bytes: ClassVar[int] = 0  # payload limit per batch request
    batch_size: int = 1  # messages per request a run hands to send_batch (api_transport sets it)

    def __init__(
        self,
        api_key: SecretStr,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 4,
        max_retry_after: float = 60.0,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _utc_now,
        http: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key.get_secret_value().strip():
            raise ConfigError(f"{self.provider}: the API key is empty", hint="set NEWSLETTER_API_KEY")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._key = api_key
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.timeout, self.max_attempts = timeout, max_attempts
        self.max_retry_after, self.backoff = max_retry_after, backoff
        self.sleep, self.clock = sleep, clock
        self._http_transport = http
        self._client: httpx.Client | None = None
        self._refused: SendError | None = None  # an auth failure: every later request would fail too
        # shared with the run's other connections: a 429 pauses them all (see newsletter.send.pacing)
        self.gate: Gate | None = None
        self.stop: threading.Event | None = None  # the run's: a wait for the next attempt ends when set
        self.hold: Hold | None = None  # the courier's: marks a refused request's digests while it waits

    def join_run(self, gate: Gate, stop: threading.Event, hold: Hold) -> None:
        """Share the run's gate (a 429 pauses every request of the run), its stop (a signal ends a wait
        for a rate limit, not just the next send) and the courier's hold (a crash during that wait
        leaves the digests queued)."""
        self.gate, self.stop, self.hold = gate, stop, hold

    def __enter__(self) -> Self:
        self._http()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- public API ---------------------------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> None:
        """Return once the API accepted ``message``; raise SendError otherwise."""
        self.deliver(message)

    def deliver(self, message: OutgoingMessage) -> SendResult:
        """Like ``send``, returning the API's id for the message."""
        raise NotImplementedError

    def send_batch(self, messages: Sequence[OutgoingMessage], key: str | None = None) -> list[Outcome]:
        """One outcome per message, in order: SendResult when accepted, else the SendError for it.

        ``key`` is the idempotency key of the request (``batch_key``; a request split by the byte
        limit gets ``key/1``, ``key/2`` ...); None: each request's derived from its messages' digest ids.
        To an API that takes keys, a given key is one request only (the courier splits a batch by
        ``requests`` first, so each digest keeps the key of its own request): messages rebuilt too big
        for it fail (``newsletter retry`` drops the key: the operator decides).
        """
        if self.batch_limit <= 1:
            return [self._outcome(message) for message in messages]
        ready, outcomes = self._encoded(messages)
        chunks = list(chunked(ready, self.batch_limit, self.batch_bytes))
        if self.idempotent and key is not None and len(chunks) > 1:  # the courier sent one: rebuilt bigger
            return [outcomes.get(index) or _OUTGROWN for index in range(len(messages))]
        for number, chunk in enumerate(chunks, start=1):
            part = key if key is None or len(chunks) == 1 else f"{key}/{number}"
            results = self._send_chunk([(m, item) for _, m, item in chunk], part)
            outcomes.update((index, result) for (index, _, _), result in zip(chunk, results, strict=True))
        return [outcomes[index] for index in range(len(messages))]

    def requests(self, messages: Sequence[OutgoingMessage]) -> list[list[int]]:
        """The messages' indices in each request ``send_batch`` would make of them (the byte limit may
        split them); one the endpoint cannot take goes with the first request."""
        if self.batch_limit <= 1:
            return [list(range(len(messages)))]
        ready, refused = self._encoded(messages)
        parts = [
            [index for index, _, _ in chunk] for chunk in chunked(ready, self.batch_limit, self.batch_bytes)
        ]
        return [sorted([*refused, *part]) for part in parts[:1]] + parts[1:] if parts else [list(refused)]

    def _encoded(
        self, messages: Sequence[OutgoingMessage]
    ) -> tuple[list[tuple[int, OutgoingMessage, bytes]], dict[int, Outcome]]:
        """Each message as an element of the batch endpoint's array, with its index; or why it cannot be."""
        ready: list[tuple[int, OutgoingMessage, bytes]] = []
        refused: dict[int, Outcome] = {}
        for index, message in enumerate(messages):
            try:
                ready.append((index, message, self._batch_item(message)))
            except SendError as exc:
                refused[index] = exc
        return ready, refused

    def batch_key(self, digest_ids: Sequence[str]) -> str | None:
        """The idempotency key a batch of these digests is sent with; None: the API takes none."""
        return None

    # --- hooks for providers ------------------------------------------------------------------------

    def _batch_item(self, message: OutgoingMessage) -> bytes:
        """One message as an encoded element of the batch endpoint's JSON array."""
        raise NotImplementedError

    def _send_chunk(self, chunk: list[tuple[OutgoingMessage, bytes]], key: str | None) -> list[Outcome]:
        """Send one batch request (with idempotency ``key``, if the API takes one); an outcome per message."""
        raise NotImplementedError

    def _retryable(self, error: SendError) -> bool:
        """False for errors a provider knows a retry cannot fix, whatever their flags say."""
        return True

    def _rejection(self, response: httpx.Response, what: str) -> SendError:
        """A 4xx other than 401/403/408/429. Permanent unless the provider's docs say otherwise; one that
        blames the recipient's address is a bounce, as SMTP's 5.1.x (see ``refusal``)."""
        return refusal(
            f"{self.provider} rejected {what}: {response.status_code} {self._reply(response)}",
            blames_recipient=self._blames_recipient(_json_or_none(response)),
        )

    def _blames_recipient(self, body: Any) -> bool:
        """Whether an error reply names the recipient's address as its cause (the provider knows how)."""
        return False

    # --- one request, with retries ------------------------------------------------------------------

    def _post(
        self, build: Callable[[httpx.Client], httpx.Request], what: str, digests: Sequence[str] = ()
    ) -> httpx.Response:
        """Send the request ``build`` makes (for ``digests``) until a 2xx reply, retrying as the module
        docstring says."""
        if self._refused is not None:
            raise SendError(self._refused.message, self._refused.hint, transport_down=True)
        attempt, waited = 1, 0.0  # waited: seconds of waits the API asked for (they spend no attempt)
        held = digests  # what a wait may mark as not sent: nothing once a try may have been accepted
        maybe_sent = False  # a try may have been accepted: whatever a later one says, its fate is unknown
        while True:
            reply = self._attempt(build, what, held)
            if isinstance(reply, httpx.Response):
                return reply
            error = reply
            if isinstance(error, SendStopped):  # stopped while waiting for the gate: no wait, no retry
                raise self._last(error, maybe_sent)
            maybe_sent = maybe_sent or error.unknown
            held = () if maybe_sent else held
            wait = self._wait(error, attempt)
            asked = error.retry_after is not None
            if wait is None or (asked and waited + wait > self.max_retry_after):
                raise self._last(error, maybe_sent)
            log.info("%s; retrying in %.1f s (attempt %d of %d)", error, wait, attempt + 1, self.max_attempts)
            with self._held(held, error):
                self._wait_out(wait, asked)
            if self.stop is not None and self.stop.is_set():  # not sent (unless a try may have been)
                why = f"{error}; the run stopped during the wait"
                raise self._last(SendStopped(why, retry_after=error.retry_after), maybe_sent)
            waited, attempt = (waited + wait, attempt) if asked else (waited, attempt + 1)

    def _last(self, error: SendError, maybe_sent: bool) -> SendError:
        """The error a request ends with: unknown when an earlier try may have been accepted (a timeout,
        then a 5xx or a 409 'still processing' to its idempotent resend), whatever the last try said."""
        if not maybe_sent or error.unknown:
            return error
        return self._maybe_accepted(f"{error} (an earlier try may have been accepted)")

    def _wait_out(self, wait: float, asked: bool) -> None:
        """Wait before the next attempt; a wait the API asked for pauses every request of the run."""
        if asked and self.gate is not None:
            self.gate.pause(wait)  # every request of the run waits, this one at its next attempt
            self.gate.wait_paused(self.stop)
        else:
            sleep_unless(self.sleep, wait, self.stop)

    def _held(self, digests: Sequence[str], error: SendError) -> AbstractContextManager[object]:
        """While a refused request waits for its next try, its digests are marked as not sent (so a
        crash during the wait queues them again); not once a try may have been accepted (``_post``)."""
        if self.hold is None or not digests or error.unknown:
            return contextlib.nullcontext()
        return self.hold(digests, str(error))

    def _attempt(
        self, build: Callable[[httpx.Client], httpx.Request], what: str, digests: Sequence[str] = ()
    ) -> httpx.Response | SendError:
        """One request: its 2xx response, or the SendError that describes what went wrong."""
        if self.gate is not None:
            self._wait_for_gate(digests, what)  # another connection got a 429: wait with it
            if self.stop is not None and self.stop.is_set():
                return SendStopped(f"{self.provider}: the run was asked to stop during a rate-limit pause")
        client = self._http()
        try:
            response = client.send(build(client))
        except httpx.TransportError as exc:
            return self._transport_error(exc, what)
        except (httpx.InvalidURL, ValueError) as exc:  # a host name IDNA refuses: nothing went out
            detail = self._redact(str(exc) or type(exc).__name__)
            return SendError(f"{self.provider}: cannot send {what}: {detail}", transport_down=True)
        except httpx.DecodingError as exc:  # a reply that came but cannot be read (a broken gzip body)
            detail = self._redact(str(exc) or type(exc).__name__)
            return self._maybe_accepted(f"{self.provider} reply to {what} cannot be read: {detail}")
        return response if response.is_success else self._status_error(response, what)

    def _wait_for_gate(self, digests: Sequence[str], what: str) -> None:
        assert self.gate is not None
        if self.gate.paused_for() > 0:
            paused = SendError(f"{self.provider}: waiting out a rate-limit pause before {what}")
            with self._held(digests, paused):
                self.gate.wait_paused(self.stop)

    def _wait(self, error: SendError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None when there should be none."""
        if error.permanent or error.transport_down or attempt >= self.max_attempts:
            return None
        if not self._retryable(error):
            return None
        if error.unknown and not self.idempotent:
            return None
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return max(error.retry_after, MIN_ASKED_WAIT)
        return min(self.backoff * 2 ** (attempt - 1), _MAX_BACKOFF)

    def _status_error(self, response: httpx.Response, what: str) -> SendError:
        status = response.status_code
        reply = f"{status} {self._reply(response)}".rstrip()
        if status == 429:
            wait = rate_limit_wait(response.headers, self.clock())
            hint = "the API's rate limit or sending quota; the message can be retried later"
            return SendError(f"{self.provider} rate limit for {what}: {reply}", hint, retry_after=wait)
        if status in (401, 403):
            self._refused = SendError(
                f"{self.provider} refused the API key or account: {reply}",
                self.auth_hint,
                transport_down=True,
            )
            return self._refused
        if 300 <= status < 400 or status == 404:  # the URL, not the message: every request would meet it
            self._refused = SendError(
                f"{self.provider} has no such endpoint at {self.base_url}: {reply}",
                "check NEWSLETTER_API_BASE_URL (and the region or domain setting)",
                transport_down=True,
            )
            return self._refused
        if status == 504:
            return self._maybe_accepted(f"{self.provider} gateway timeout for {what}: {reply}")
        if status == 408 or status >= 500:  # a 503 may say when to come back
            wait = retry_after_seconds(response.headers.get("Retry-After"), self.clock())
            return SendError(f"{self.provider} server error for {what}: {reply}", retry_after=wait)
        return self._rejection(response, what)

    def _transport_error(self, exc: httpx.TransportError, what: str) -> SendError:
        detail = self._redact(str(exc) or type(exc).__name__)
        if isinstance(exc, _NOT_SENT):
            return SendError(f"cannot reach {self.provider} at {self.base_url} for {what}: {detail}")
        if isinstance(exc, httpx.UnsupportedProtocol):
            return SendError(f"{self.provider} URL {self.base_url!r} is not usable: {detail}", permanent=True)
        return self._maybe_accepted(
            f"{self.provider} connection lost after sending {what}, before the reply: {detail}"
        )

    def _accepted_id(self, provider_id: Any, what: str) -> str:
        """The id a documented success carries; a 2xx without one (a proxy's login page) may not
        have reached the API at all, so its fate is unknown rather than sent."""
        if not provider_id:
            raise self._maybe_accepted(f"{self.provider} answered {what} without a message id")
        return str(provider_id)

    def _maybe_accepted(self, message: str) -> SendError:
        if self.idempotent:
            hint = "the API may have accepted it; a resend within 24 h reuses its Idempotency-Key (safe)"
        else:
            hint = "the API may have accepted it; resending could deliver it twice"
        return SendError(message, hint, unknown=True)

    # --- helpers ------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.base_url,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                transport=self._http_transport,
                event_hooks={"response": [within(self.timeout)]},
                headers={"User-Agent": f"newsletter/{__version__}", "Accept": "application/json"},
                follow_redirects=False,
            )
        return self._client

    def _secret(self) -> str:
        return self._key.get_secret_value()

    def _redact(self, text: str, limit: int | None = None) -> str:
        """``text`` with the key masked in every form (raw, base64), then cut to ``limit``."""
        return redact(text, [self._secret()], limit)

    def _reply(self, response: httpx.Response) -> str:
        """The API's own words for an error: its message field, else the body; short, key masked."""
        text = _error_text(_json_or_none(response)) or response.text
        return self._short(text)

    def _short(self, text: str) -> str:
        """One line of a server's words, without control characters (a terminal's escape codes could
        rewrite the lines shown before it): the key masked first, then cut to _REPLY_CHARS."""
        return self._redact(" ".join(_CONTROL.sub(" ", text).split()), _REPLY_CHARS)

    def _outcome(self, message: OutgoingMessage) -> Outcome:
        try:
            return self.deliver(message)
        except SendError as exc:
            return exc


_OUTGROWN = SendError(
    "its batch no longer fits one request under the batch's idempotency key (the messages were rebuilt "
    "bigger), and in parts, under other keys, a message the first request delivered would arrive twice",
    "`newsletter retry` sends these digests one by one: check first whether they arrived",
    permanent=True,
)


def chunked(
    items: Sequence[tuple[int, OutgoingMessage, bytes]], limit: int, max_bytes: int
) -> Iterator[list[tuple[int, OutgoingMessage, bytes]]]:
    """Consecutive chunks of at most ``limit`` items and (when one item allows) ``max_bytes`` bytes."""
    chunk: list[tuple[int, OutgoingMessage, bytes]] = []
    size = 0
    for item in items:
        grows = len(item[2]) + 1  # the comma
        if chunk and (len(chunk) >= limit or (max_bytes and size + grows > max_bytes)):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += grows
    if chunk:
        yield chunk


def refusal(message: str, *, blames_recipient: bool) -> SendError:
    """This message refused for good. One that blames the recipient's address (not valid, not there) is
    a bounce: the run's exit status 3 and the subscriber held, as for SMTP's 5.1.1; any other (the
    sender, the content) is the run's trouble: exit 1."""
    return SendError(message, permanent=True, refused=True, mailbox=blames_recipient, gone=blames_recipient)


def encode_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_array(items: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: 2 KB of nested brackets
        return None


def _error_text(body: Any) -> str:
    """``message`` / ``Message`` of an error body, or the messages of its ``errors`` list."""
    if not isinstance(body, dict):
        return ""
    for key in ("message", "Message"):
        if isinstance(body.get(key), str):
            return str(body[key])
    errors = body.get("errors")
    if isinstance(errors, list):
        return "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))
    return ""


def response_json(response: httpx.Response) -> Any:
    return _json_or_none(response)
