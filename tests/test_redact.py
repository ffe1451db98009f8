"""The one redaction function: raw and base64 forms of a secret, masked before any cut."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import logging
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest

from newsletter.redact import MASK, LogRedaction, redact, url_passwords

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


@pytest.mark.parametrize(
    "escape",
    [
        lambda s: json.dumps(s)[1:-1],  # a JSON error reply quoting the key
        lambda s: json.dumps(s)[1:-1].replace("/", "\\/"),  # PHP's json_encode
        lambda s: json.dumps(s)[1:-1].replace("&", "\\u0026").replace("<", "\\u003C"),  # Go's, upper case
        html.escape,  # an HTML error page
        lambda s: "".join(c if c.isalnum() else f"&#{ord(c)};" for c in s),
        lambda s: "".join(c if c.isalnum() else f"&#x{ord(c):X};" for c in s),
    ],
)
def test_a_secret_escaped_in_json_or_html_is_masked(escape: Callable[[str], str]) -> None:
    """An API's 403 body or 500 page quoted the key escaped: 'Bearer re_ab&amp;c&lt;d' went into the report."""
    key = "re_ab&c<d\"e/f\\g'SECRET\U0001f600xyz"  # a URL password may hold any character
    assert escape(key) != key
    assert redact(f'403 {{"key": "Bearer {escape(key)}"}}', [key]) == f'403 {{"key": "Bearer {MASK}"}}'


@pytest.mark.parametrize(
    "key", ["Zq9se'cr\"tpw", "pa\tss w0rd\r\n", "mötörhead99", "p@ss:w/o%rd \"q' z+/=\x85"]
)
@pytest.mark.parametrize("wrap", [repr, lambda s: repr(s.encode()), lambda s: repr(f"\0user\0{s}".encode())])
def test_a_secret_in_python_s_repr_of_a_str_or_bytes_is_masked(key: str, wrap: Callable[[str], str]) -> None:
    """A server's 535 reply or error body quoted with !r wrote 'Zq9se\\'cr"tpw': the escaped quote,
    a tab as \\t, non-ASCII as its UTF-8 bytes \\xc3\\xb6 went into the report and the store."""
    masked = redact(f"535 auth failed: {wrap(key)}", [key])
    assert masked in (
        f"535 auth failed: '{MASK}'",
        f"535 auth failed: b'{MASK}'",
        f"535 auth failed: b'\\x00user\\x00{MASK}'",
    )


def test_no_character_of_a_secret_has_the_same_form_twice() -> None:
    """A control character's repr() form was listed twice (as a UTF-8 byte and as a code point), and
    ' had a \\' form in secrets repr() never escapes it in: each repeat doubled the paths a failed match
    tries (14 control characters: 1.1 s on 100 KB of text)."""
    from newsletter.redact import _pattern

    secret = "Zq" + "\x01" * 14 + "A" * 24
    assert _pattern(secret).pattern.count("\\\\x(?i:01)") == 14
    assert "\\\\'" not in _pattern("Zq" + "\\'" * 14 + "A" * 10).pattern  # no " in it: ' stays '
    assert "\\\\'" in _pattern('it\'s a "quoted" one').pattern


def test_hex_and_a_short_secret_s_own_base64_are_masked() -> None:
    key = "p@ss:w/rd%41"
    echo = f"hex={key.encode().hex()} HEX={key.encode().hex().upper()}"
    assert redact(echo, [key]) == f"hex={MASK} HEX={MASK}"
    short = "bXfPE"
    alone = base64.b64encode(short.encode()).decode().rstrip("=")  # 7 characters, under MIN_ENCODED
    assert redact(f"535 bad {alone} ok", [short]) == f"535 bad {MASK} ok"
    assert redact("ordinary words stay: abcdefg", [short]) == "ordinary words stay: abcdefg"


@pytest.mark.parametrize(
    ("url", "passwords"),
    [
        (
            "postgresql+psycopg://nl:my%20secret%20pw9@127.0.0.1:5432/nl",
            ["my%20secret%20pw9", "my secret pw9"],
        ),
        ("postgresql+psycopg://nl:my@s3cretpart@127.0.0.1/nl", ["my@s3cretpart"]),  # '@' left unencoded
        ("https://mirror:s3cr/etpw@hf.example.org", ["s3cr/etpw"]),  # '/' left unencoded
        ("postgresql://db.example.org/nl?user=nl&password=abcdef", ["abcdef"]),
        ("sqlite:///state.db", []),
        ("https://user@hf.example.org/a@b", []),
        ("http://u:pass@host", []),  # too short to mask without masking it inside words
        ("postgresql+psycopg://newsletter:newsletter@db/newsletter", []),  # the user's name, shown anyway
        ("postgresql+psycopg://nl:nlstate@db/nlstate", []),  # the database's name
        ("postgresql+psycopg://nl:dbhost1@dbhost1/nl", []),  # the host's
        ("https://api.example.org:8443/v1/@team", []),  # an '@' in the path: no password
        ("http://h/v1?since=2026-03-11T08:00:00&owner=ops@example.org", []),
        (
            "http://proxy:s3cretpw@127.0.0.1:8025/v1?owner=ops@example.org",
            ["s3cretpw"],
        ),
        ("postgresql://db.example.org/nl?sslpassword=keyphrase", ["keyphrase"]),
    ],
)
def test_the_passwords_written_into_a_url(url: str, passwords: list[str]) -> None:
    assert url_passwords(url) == passwords


def test_a_malformed_log_call_is_reported_by_logging_not_raised() -> None:
    """A filter that raises breaks the caller (inside a transport's send, a digest left 'sending')."""
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(LogRedaction([SECRET]))
    logger = logging.getLogger("test_redact.malformed")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with contextlib.redirect_stderr(io.StringIO()) as reported:
            logger.warning("x %s %s", 1)  # one argument short: it raised TypeError here
            logger.warning("connecting to %s as %s", f"postgresql://u:{SECRET}@h/db")  # logging printed it
    finally:
        logger.removeHandler(handler)
    assert "--- Logging error ---" not in reported.getvalue()  # the filter made both printable
    assert handler.stream.getvalue().count("(arguments: ") == 2 and not _leaks(handler.stream.getvalue())


def test_a_log_line_and_its_traceback_are_masked() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(LogRedaction([SECRET]))
    logger = logging.getLogger("test_redact.masked")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"refused {SECRET}")
        except ValueError:
            logger.error("HTTP Request: POST http://user:%s@127.0.0.1/email", quote(SECRET), exc_info=True)
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert f"http://user:{MASK}@127.0.0.1/email" in written and f"ValueError: refused {MASK}" in written
    assert not _leaks(written)
