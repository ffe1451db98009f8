"""Signed per-subscriber tokens: the unsubscribe links, and the sealing the feedback links share.

A token is ``<base64url(fields joined by newlines)>.<base64url(hmac-sha256)>``. Each kind of link signs
with its own purpose, so an unsubscribe token is never a valid feedback token, nor the other way round.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from urllib.parse import quote

from pydantic import SecretStr

from newsletter.address import address_key

_SIG_BYTES = 16
_SEPARATOR = "\n"  # no email address or paper key holds one
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")
# A token, and not what a mail client or a reader's copy may add after a link ("/", ".", ">", ")",
# ";jsessionid=..."), none of which base64url holds
_TOKEN = re.compile(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def make_token(email: str, secret: SecretStr) -> str:
    """An unsubscribe token: opaque, unforgeable without the secret."""
    return seal((address_key(email),), secret)


def read_token(token: str, secret: SecretStr, previous: SecretStr | None = None) -> str | None:
    """The email an unsubscribe token was made for, or None for a forged, truncated or malformed token
    (signed with ``secret``, or with the ``previous`` one, whose links emails already sent carry)."""
    fields = unseal(token, secret, previous=previous)
    return fields[0] if fields is not None and len(fields) == 1 else None


def seal(fields: Sequence[str], secret: SecretStr, purpose: str = "") -> str:
    """``fields`` signed for ``purpose`` ("" is the unsubscribe links')."""
    payload = _b64(_SEPARATOR.join(fields).encode())
    return f"{payload}.{_b64(_sign(payload, secret, purpose))}"


def unseal(
    token: str, secret: SecretStr, purpose: str = "", previous: SecretStr | None = None
) -> tuple[str, ...] | None:
    """The fields of a token sealed for ``purpose`` with ``secret`` or ``previous``, or None when it is
    forged, truncated or malformed."""
    found = _TOKEN.match(token.strip())
    payload, _, sig = (found[0] if found else "").partition(".")
    try:
        given = _unb64(sig)
        text = _unb64(payload).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    canonical = _b64(given) == sig and _b64(text.encode()) == payload  # one spelling per token
    if not canonical or len(given) != _SIG_BYTES:
        return None
    keys = (secret, previous) if previous is not None else (secret,)
    if not any(hmac.compare_digest(given, _sign(payload, key, purpose)) for key in keys):
        return None
    return tuple(text.split(_SEPARATOR))


def one_click_url(base_url: str, email: str, secret: SecretStr) -> str:
    return f"{base_url.rstrip('/')}/unsubscribe/{make_token(email, secret)}"


def mailto_url(sender_address: str, email: str) -> str:
    """Escapes in lower case (RFC 3986 takes either): SpamAssassin's UNRESOLVED_TEMPLATE reads "%BC" of
    an address such as bob@bücher.example as a mail-merge field left unfilled."""
    subject = _PERCENT_ESCAPE.sub(lambda m: m.group(0).lower(), quote("unsubscribe " + email))
    return f"mailto:{sender_address}?subject={subject}"


def _sign(payload: str, secret: SecretStr, purpose: str) -> bytes:
    key = secret.get_secret_value().encode()
    message = f"{purpose}:{payload}" if purpose else payload  # unsubscribe tokens already sent stay valid
    return hmac.new(key, message.encode(), hashlib.sha256).digest()[:_SIG_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text:
        raise ValueError("empty")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
