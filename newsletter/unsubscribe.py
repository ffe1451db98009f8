"""Signed per-subscriber unsubscribe tokens and the List-Unsubscribe targets built from them."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

from pydantic import SecretStr

from newsletter.address import address_key

_SIG_BYTES = 16


def make_token(email: str, secret: SecretStr) -> str:
    """``<base64url(email)>.<base64url(hmac-sha256)>``: opaque, unforgeable without the secret."""
    payload = _b64(address_key(email).encode())
    return f"{payload}.{_b64(_sign(payload, secret))}"


def read_token(token: str, secret: SecretStr) -> str | None:
    """The email a token was made for, or None for a forged, truncated or malformed token."""
    payload, _, sig = token.strip().partition(".")
    try:
        given = _unb64(sig)
        email = _unb64(payload).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    canonical = _b64(given) == sig and _b64(email.encode()) == payload  # one spelling per token
    if not canonical or len(given) != _SIG_BYTES or not hmac.compare_digest(given, _sign(payload, secret)):
        return None
    return email


def one_click_url(base_url: str, email: str, secret: SecretStr) -> str:
    return f"{base_url.rstrip('/')}/unsubscribe/{make_token(email, secret)}"


def mailto_url(sender_address: str, email: str) -> str:
    return f"mailto:{sender_address}?subject={quote('unsubscribe ' + email)}"


def _sign(payload: str, secret: SecretStr) -> bytes:
    key = secret.get_secret_value().encode()
    return hmac.new(key, payload.encode(), hashlib.sha256).digest()[:_SIG_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text:
        raise ValueError("empty")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
