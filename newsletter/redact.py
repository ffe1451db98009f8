"""Mask secrets in text that leaves the process (errors, logs, reports): the one redaction function.

A secret can come back from a server in its own words, or encoded: Mailgun's Basic auth is base64 of
``api:KEY``, SMTP ``AUTH PLAIN`` is base64 of ``\\0user\\0password``. Base64 of a longer string that
contains the secret holds, at one of three alignments, a run of characters that depends only on the
secret's bytes; each such run (standard and URL-safe alphabets) is masked too, so every encoding of
every wrapper is covered without listing the wrappers, with the characters at its two ends, which
encode the secret's first and last bytes together with their neighbours'. A short secret's run (under
MIN_ENCODED characters) could be part of an ordinary word, so the base64 token holding it is masked
whole, as is the secret's own base64 standing alone. A server may also echo the secret URL-encoded
(``%2B`` for ``+``, either case) or in hex (either case). Text is masked
before it is cut to length, so a cut never leaves part of a secret unmasked. A secret shorter than
MIN_SECRET has no run at every alignment, so the settings refuse one.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
MIN_ENCODED = 8  # a shorter base64 run could be part of a word: it is masked with its whole token
MIN_SECRET = 5  # characters; from 5 on every alignment of the secret's base64 has a run of 4 or more
_B64 = "A-Za-z0-9+/_-"  # both alphabets


def redact(text: str, secrets: Iterable[str | None], limit: int | None = None) -> str:
    """``text`` with every form of each secret masked, then cut to ``limit`` characters."""
    for secret in secrets:
        if secret:
            text = _pattern(secret).sub(MASK, text)
    return text if limit is None else text[:limit]


_QUERY_PASSWORDS = ("password", "sslpassword")


def url_passwords(url: str) -> list[str]:
    """The passwords written into ``url``: its user:password@ (percent-decoded, and as written; read
    both up to the host and up to the last '@', in case a character such as '/' or '@' was left
    unencoded), and a ``password=`` in its query. One shorter than MIN_SECRET, or that is also the
    URL's user, host or database name (shown wherever the URL is), is not masked: it would mask
    ordinary words everywhere and could not stay secret."""
    _, scheme, rest = url.partition("://")
    authority, _, tail = rest.partition("/")
    found = []
    candidates = [authority.rpartition("@")]
    if "@" not in authority and re.search(r":(?!\d*$)", authority):  # user:pass/word@host: '/' unencoded
        candidates.append(rest.rpartition("@"))
    for userinfo, at, _host in candidates:
        if scheme and at and ":" in userinfo:
            written = userinfo.split(":", 1)[1]
            found += [written, unquote(written)]
    with contextlib.suppress(ValueError):  # not a URL: its userinfo was all there was
        found += [v for k, v in parse_qsl(urlsplit(url).query) if k.lower() in _QUERY_PASSWORDS]
    shown = _shown_names(authority, tail)
    return [p for p in dict.fromkeys(found) if len(p) >= MIN_SECRET and p not in shown]


def _shown_names(authority: str, tail: str) -> set[str]:
    """The user, host and path names of a URL (and its query's values other than passwords)."""
    userinfo, _, host = authority.rpartition("@")
    names = {userinfo.split(":", 1)[0], host.rsplit(":", 1)[0], *re.split(r"[/?#&]+", tail)}
    for part in re.split(r"[?#&]+", tail):
        key, equals, value = part.partition("=")
        if equals:
            names.discard(part)
            names |= {key} if key.lower() in _QUERY_PASSWORDS else {key, value}
    return names


class LogRedaction(logging.Filter):
    """Masks ``secrets`` in every record a handler writes: the tool's own lines and any library's
    (httpx names the URL it calls, httpcore logs headers at debug, psycopg quotes a connection string)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a library's malformed call: logging would print its arguments raw
            message = f"{_text(record.msg)} (arguments: {_text(record.args)})"
            record.msg, record.args = message, None
        masked = redact(message, self.secrets)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


def _text(value: object) -> str:
    try:
        return repr(value) if isinstance(value, tuple) else str(value)
    except Exception:
        return f"<{type(value).__name__} that cannot be shown>"


def mask_in_logs(secrets: Iterable[str]) -> None:
    """Every handler of the root logger masks ``secrets`` from now on (in place of what it masked)."""
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, LogRedaction)]:
            handler.removeFilter(old)
        handler.addFilter(LogRedaction(secrets))


# The base64 characters around an encoded run: its first and last groups mix the secret's first and
# last bytes with their neighbours', so they are masked with it (masking a neighbour's too is harmless).
_EDGE_BEFORE, _EDGE_AFTER = "[A-Za-z0-9+/_-]{0,4}", "[A-Za-z0-9+/_-]{0,4}={0,2}"


@lru_cache(maxsize=32)
def _pattern(secret: str) -> re.Pattern[str]:
    runs = sorted(encoded_forms(secret.encode()), key=len, reverse=True)
    encoded = [f"{_EDGE_BEFORE}{re.escape(run)}{_EDGE_AFTER}" for run in runs if len(run) >= MIN_ENCODED]
    tokens = [_token_with(run) for run in runs if len(run) < MIN_ENCODED]
    alone = [_whole_token(form) for form in _encoded_alone(secret.encode())]
    written = [_as_written_or_quoted(secret), f"(?i:{secret.encode().hex()})"]
    return re.compile("|".join([*encoded, *tokens, *alone, *written]))


def _encoded_alone(secret: bytes) -> set[str]:
    """The secret's own base64, unpadded (standard and URL-safe): a short one is under MIN_ENCODED."""
    whole = base64.b64encode(secret).decode("ascii").rstrip("=")
    return {whole, whole.replace("+", "-").replace("/", "_")}


def _whole_token(form: str) -> str:
    return f"(?<![{_B64}]){re.escape(form)}={{0,2}}(?![{_B64}])"


def _token_with(run: str) -> str:
    """A base64 token of at least MIN_ENCODED characters that holds ``run``: the whole token."""
    return f"(?<![{_B64}])(?=[={_B64}]{{{MIN_ENCODED}}})[{_B64}]*{re.escape(run)}[{_B64}]*={{0,2}}"


def _as_written_or_quoted(secret: str) -> str:
    """The secret with each character other than a letter or digit as written or percent-encoded
    (either hex case; a space also as '+'): every URL encoder's output, whichever characters it
    leaves alone (Python's quote, JavaScript's encodeURIComponent, form bodies)."""
    quoted = "'" in secret and '"' in secret  # only then does repr() write ' as \\'
    return "".join(ch if ch.isascii() and ch.isalnum() else _either(ch, quoted) for ch in secret)


def _either(ch: str, repr_quotes: bool = False) -> str:
    """``ch`` as written, percent-encoded, escaped in a JSON string or as an HTML character reference:
    an API's error reply quoted the key in its JSON (``a\\"b``) or its HTML page (``a&amp;b``)."""
    quoted = "".join(f"%(?i:{byte:02x})" for byte in ch.encode())
    forms = [re.escape(ch), quoted, *_json_escaped(ch), *_python_escaped(ch, repr_quotes), *_html_escaped(ch)]
    forms = list(dict.fromkeys(forms))  # each form once: a repeat doubles the paths a failed match tries
    return f"(?:{'|'.join(forms)}{'|[+]' if ch == ' ' else ''})"


def _json_escaped(ch: str) -> list[str]:
    forms = [re.escape(f"\\{ch}")] if ch in '"\\/' else []
    units = ch.encode("utf-16-be")  # past U+FFFF a surrogate pair: two escapes
    codes = [int.from_bytes(units[i : i + 2], "big") for i in range(0, len(units), 2)]
    return [*forms, "".join(f"\\\\u(?i:{code:04x})" for code in codes)]


def _python_escaped(ch: str, repr_quotes: bool) -> list[str]:
    """As Python's repr() writes it in a str or bytes: a server's reply quoted with !r held the
    password as ``a\\'b`` (a secret with both quotes), ``\\t``, or its UTF-8 bytes as ``\\xc3\\xa9``."""
    named = {"'": "'" if repr_quotes else None, "\t": "t", "\n": "n", "\r": "r"}.get(ch)
    forms = [re.escape(f"\\{named}")] if named else []
    if not (ch.isascii() and ch.isprintable()):
        forms.append("".join(f"\\\\x(?i:{byte:02x})" for byte in ch.encode()))
        if 0x80 <= ord(ch) < 0x100:  # a str's repr of a Latin-1 one it cannot print (below: as above)
            forms.append(f"\\\\x(?i:{ord(ch):02x})")
    return forms


def _html_escaped(ch: str) -> list[str]:
    named = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}.get(ch)
    code = ord(ch)
    return [f"&(?:{named + '|' if named else ''}#0*{code}|#(?i:x)0*(?i:{code:x}));"]


def encoded_forms(secret: bytes) -> set[str]:
    """The base64 runs (standard and URL-safe) any encoding of text holding ``secret`` must contain."""
    forms: set[str] = set()
    for offset in range(3):  # bytes before the secret, modulo 3
        padded = b"\0" * offset + secret
        whole = len(padded) // 3 * 3  # the last partial group depends on what follows the secret
        run = base64.b64encode(padded[:whole]).decode("ascii")[4 if offset else 0 :]
        if len(run) >= 4:  # one group at least (a secret under MIN_SECRET may have none here)
            forms |= {run, run.replace("+", "-").replace("/", "_")}
    return forms
