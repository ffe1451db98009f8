"""The one redaction function: raw and base64 forms of a secret, masked before any cut."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

import pytest

from newsletter.redact import MASK, redact

SECRET = "hunter2-Very-Secret"


def _leaks(text: str, secret: str = SECRET) -> bool:
    """True when any 6 characters of the secret, or of its base64 at any offset, show."""
    runs = [secret[i : i + 6] for i in range(len(secret) - 5)]
    return any(run in text for run in runs)


@pytest.mark.parametrize("prefix", ["", "a", "ab", "api:", "\0ada\0", "\0digest@example.org\0", "user="])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_base64_of_any_wrapper_around_the_secret_is_masked(prefix: str, encode: object) -> None:
    assert callable(encode)
    encoded = encode(f"{prefix}{SECRET}!".encode()).decode()
    shown = redact(f"535 5.7.8 {encoded} rejected", [SECRET])
    assert MASK in shown and shown.endswith(" rejected")
    for token in shown.split():
        decoded = base64.b64decode(token.replace("-", "+").replace("_", "/") + "===", validate=False)
        assert SECRET[:6] not in decoded.decode("latin-1")
        assert SECRET[-6:] not in decoded.decode("latin-1")


@pytest.mark.parametrize("prefix", ["", "a", "ab", "api:", "\0ada\0"])
@pytest.mark.parametrize("suffix", ["", "!", "!?"])
def test_no_edge_of_an_encoded_secret_is_left(prefix: str, suffix: str) -> None:
    """Not even one character: the last group of base64 of 'api:KEY' alone told the key's last letter."""
    encoded = base64.b64encode(f"{prefix}{SECRET}{suffix}".encode()).decode()
    shown = redact(f"535 5.7.8 rejected {encoded} ({encoded})", [SECRET])
    assert shown.startswith("535 5.7.8 rejected ") and shown.count(MASK) == 2
    for token in shown.split()[3:]:
        before, _, after = token.strip("()").partition(MASK)
        # what is left is whole groups of the wrapper's own bytes, none of the secret's
        assert prefix.encode().startswith(base64.b64decode(before))
        assert suffix.encode().endswith(base64.b64decode(after))


def test_masked_first_then_cut() -> None:
    text = "x" * 290 + SECRET + " tail"
    shown = redact(text, [SECRET], limit=300)
    assert shown == "x" * 290 + MASK + " tail" and not _leaks(shown)


def test_plain_text_and_missing_secrets_are_left_alone() -> None:
    assert redact("Invalid API key", [None, ""]) == "Invalid API key"
    assert redact("a short secret abc stays", ["abc"]) == "a short secret *** stays"


@pytest.mark.parametrize("password", ["hunter2", "abcde", "abcdef"])
@pytest.mark.parametrize("user", ["d", "du", "dux", "duxy", "duxyz", "digest@example.org"])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_a_short_secret_in_base64_is_masked_at_every_alignment(
    password: str, user: str, encode: object
) -> None:
    """SMTP AUTH PLAIN echoed by a server: a 7-letter password leaked for 2- and 5-letter user names."""
    assert callable(encode)
    encoded = encode(f"\0{user}\0{password}".encode()).decode()
    shown = redact(f"535 5.7.8 AUTH PLAIN {encoded} rejected", [password])
    assert shown.startswith("535 5.7.8 AUTH PLAIN ") and shown.endswith(" rejected")
    before, masked, after = shown.split()[4].partition(MASK)
    assert masked and not after  # what is left is whole groups of the user name's bytes
    assert f"\0{user}\0".encode().startswith(base64.b64decode(before.replace("-", "+").replace("_", "/")))


def test_a_short_secret_s_base64_is_not_masked_inside_ordinary_words() -> None:
    text = "Authentication failed for hunter; the hunt goes on"
    assert redact(text, ["hunter2"]) == text


def encode_uri_component(text: str) -> str:
    """JavaScript's encodeURIComponent: leaves letters, digits and -_.!~*'() as they are."""
    return quote(text, safe="-_.!~*'()")


@pytest.mark.parametrize("encode", [quote, quote_plus, lambda s: quote(s, safe=""), encode_uri_component])
def test_a_url_encoded_secret_is_masked_in_either_hex_case(encode: object) -> None:
    assert callable(encode)
    key = "pm+Ab/Cd=Ef!Gh(1234) 567890xyz"
    for form in (
        encode(key),
        encode(key).replace("%2B", "%2b").replace("%3D", "%3d"),
        "pm+Ab%2FCd=Ef!Gh(1234)+567890xyz",
    ):
        assert redact(f"ErrorCode 300 Invalid token {form} (token={form})", [key]) == (
            f"ErrorCode 300 Invalid token {MASK} (token={MASK})"
        )
