"""Build the RFC 5322 bytes of one digest email, by hand.

``email.message.EmailMessage`` + ``as_bytes`` costs ~3.3 ms per 66 KB message; this builder writes the
same structure directly in ~0.26 ms. Tests check that Python's parser reads it exactly as intended and
exactly like EmailMessage's output (where EmailMessage itself gets awkward names/subjects right):

    headers (From, To, Subject, Date, Message-ID, MIME-Version, List-Id, List-Unsubscribe[-Post])
    multipart/alternative: text/plain then text/html, utf-8, base64, CRLF line endings.

Every header value is made of printable ASCII: control characters in subjects and names become spaces,
non-ASCII text becomes RFC 2047 encoded-words, and addresses with line breaks are refused, so no input
can start a new header.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, getaddresses, parseaddr
from functools import lru_cache

import numpy as np

from newsletter.address import ascii_domain
from newsletter.config import Settings, setting_origin, toml_line
from newsletter.errors import ConfigError, SendError
from newsletter.models import OutgoingMessage, RenderedDigest
from newsletter.unsubscribe import mailto_url

DEFAULT_LIST_NAME = "Trending Papers"  # a sender without a display name

# C0/C1 controls, line and paragraph separators, and the bidirectional controls (LRM/RLM,
# embeddings and overrides, isolates) that can make a subject read backwards (U+202E)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_MESSAGE_ID = re.compile(r"<[A-Za-z0-9][A-Za-z0-9_+=.-]*@[A-Za-z0-9.-]+>")  # as message_id_for makes them
_DIGEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+=-]*(?:\.[A-Za-z0-9_+=-]+)*")
_MAILTO = re.compile(r"mailto:[\x21-\x3b\x3d\x3f-\x7e]+")  # printable ASCII but < and >
_HTTP = re.compile(r"https?://[\x21-\x3b\x3d\x3f-\x7e]+")
_LINE = 78  # RFC 5322 "SHOULD"; the hard limit is 998
_LONGEST_PLAIN = 900  # longer ASCII words/names become encoded-words, which fold; 998 is the hard limit
_B64_LINE = 76  # base64 characters per body line (RFC 2045)
_CRLF = np.frombuffer(b"\r\n", dtype=np.uint8)
_WORD_BYTES = 42  # utf-8 bytes per encoded-word: 56 base64 chars, 68 with "=?utf-8?b?...?="


@dataclass(frozen=True)
class Envelope:
    """Per-run constants plus the per-subscriber unsubscribe targets. Validated on creation."""

    sender: str  # "Trending Papers <digest@example.org>" (settings.sender)
    list_id: str  # "Trending Papers <papers.example.org>" -> List-Id
    mailto_unsubscribe: str  # "mailto:unsubscribe@example.org?subject=unsubscribe%20ada%40example.org"
    https_unsubscribe: str | None = None  # RFC 8058 one-click URL when NEWSLETTER_BASE_URL is set

    def __post_init__(self) -> None:
        parse_sender(self.sender)
        _list_id_tokens(self.list_id)
        if not _MAILTO.fullmatch(self.mailto_unsubscribe):
            raise ConfigError(
                f"unsubscribe address is not a printable mailto: URL: {self.mailto_unsubscribe!r}"
            )
        if self.https_unsubscribe is not None and not _HTTP.fullmatch(self.https_unsubscribe):
            raise ConfigError(f"unsubscribe URL is not a printable http(s) URL: {self.https_unsubscribe!r}")


def envelope_for(settings: Settings, email: str, https_unsubscribe: str | None = None) -> Envelope:
    """The envelope for one subscriber.

    List-Id defaults to ``<local.domain>`` of the sender's address; the mailto goes to the sender with
    the subscriber's address in the subject.
    """
    name, addr = parse_sender(settings.sender)
    local, _, domain = addr.rpartition("@")
    list_id = settings.list_id or f"{name or 'Newsletter'} <{local}.{domain}>"
    return Envelope(settings.sender, list_id, mailto_url(addr, email), https_unsubscribe)


def message_id_for(digest_id: str, domain: str) -> str:
    """Deterministic ``<digest_id@domain>``, so a rebuilt retry keeps its Message-ID."""
    _check_digest_id(digest_id)
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"Message-ID domain is not a valid host name: {domain!r}")
    return f"<{digest_id}@{domain}>"


def build_message(
    *,
    digest_id: str,
    envelope: Envelope,
    to_name: str,
    to_addr: str,
    rendered: RenderedDigest,
    date: datetime,
    body: bool = True,
    made_at: datetime | None = None,
    message_id: str | None = None,
) -> OutgoingMessage:
    """One digest email as RFC 5322 bytes (CRLF). Raises SendError(permanent) for an unusable address.

    ``date`` is its Date header; ``made_at`` (default ``date``) when the digest was made, which a resend
    keeps (the file outbox names its files by it), as it keeps the ``message_id`` an earlier try went out
    with (default: made from the digest id and the sender's domain, which may have changed since).

    Without ``body``, ``raw`` is the header block alone (what an API that takes the HTML and text as
    fields reads of it): the same headers, without base64-encoding parts nobody would read.
    """
    sender_name, sender_addr = parse_sender(envelope.sender)
    recipient = _checked_address(to_addr)
    subject = clean_text(rendered.subject)
    if message_id is None or not _MESSAGE_ID.fullmatch(message_id):
        message_id = message_id_for(digest_id, sender_addr.rpartition("@")[2])
    headers = [
        ("From", _mailbox(sender_name, sender_addr)),
        ("To", _mailbox(clean_text(to_name), recipient)),
        ("Subject", _unstructured(subject)),
        ("Date", [_date(date)]),
        ("Message-ID", [message_id]),
        ("MIME-Version", ["1.0"]),
        ("List-Id", _list_id_tokens(envelope.list_id)),
        *_unsubscribe_headers(envelope),
    ]
    boundary = _boundary(digest_id)
    head = _head(headers, boundary)
    raw = _body(head, boundary, rendered.text, rendered.html) if body else head
    return OutgoingMessage(
        digest_id,
        sender_addr,
        recipient,
        subject,
        message_id,
        raw,
        html=rendered.html,
        text=rendered.text,
        headers_only=not body,
        made_at=made_at or date,
        written=to_addr,
    )


def clean_text(value: str) -> str:
    """One line of display text: control characters and line breaks become spaces, runs of spaces one."""
    return " ".join(_CONTROL.sub(" ", value).split())


# --- headers ---------------------------------------------------------------------------------------


def list_name(sender: str) -> str:
    """The list's name in the emails and the pages they link to: the sender's display name."""
    return parse_sender(sender)[0] or DEFAULT_LIST_NAME


def sender_domain(sender: str) -> str:
    """The sender address's domain as it goes out (IDNA, lower case); ConfigError for an unusable sender."""
    return parse_sender(sender)[1].rpartition("@")[2].lower()


@lru_cache(maxsize=16)
def parse_sender(sender: str) -> tuple[str, str]:
    """(display name, ASCII address) of the sender setting; ConfigError for one that cannot be used."""
    if _CONTROL.search(sender):
        raise _sender_error("contains a line break or control character")
    written = sender.rpartition("<")[2].partition(">")[0] if "<" in sender else sender
    if "@" in written and any(c.isspace() for c in written.strip()):  # parseaddr drops spaces: another domain
        raise _sender_error(f"the address {written.strip()!r} contains a space")
    display = sender.rpartition("<")[0] if "<" in sender else ""
    if len(getaddresses([sender])) > 1:  # an unquoted comma: two addresses, the first a bad one
        raise _sender_error(
            f"the display name {display.strip()!r} holds a comma: put it in double quotes, "
            f'as in "Papers, Inc." <digest@example.org>'
        )
    name, addr = parseaddr(sender)
    try:
        return clean_text(name), _checked_address(addr)
    except SendError as exc:
        raise _sender_error(f"{sender!r}: {exc.message}", exc.hint) from None


def _sender_error(problem: str, hint: str | None = None) -> ConfigError:
    """Named as the user wrote it: ``from`` (NEWSLETTER_FROM, newsletter.toml) unless NEWSLETTER_SENDER
    or newsletter.toml's ``sender``."""
    origin = setting_origin("sender")
    if origin.startswith("newsletter.toml"):
        name = "sender" if toml_line("sender")[1] == "sender" else "from"
    else:
        name = "sender" if origin.endswith("NEWSLETTER_SENDER") else "from"
    return ConfigError(f"setting '{name}' ({origin}): {problem}", hint)


def _list_id_error(problem: str) -> ConfigError:
    return ConfigError(f"setting 'list_id' ({setting_origin('list_id')}): {problem}")


def _checked_address(addr: str) -> str:
    """A bare ASCII addr-spec (IDNA domain); anything else is a permanent SendError."""
    if _CONTROL.search(addr):
        raise SendError(f"address {addr!r} contains a line break or control character", permanent=True)
    local, _, domain = addr.strip().rpartition("@")
    try:
        domain = ascii_domain(domain)  # IDNA 2008, as subscribers.yaml was validated: ß stays ß
    except ValueError:
        raise SendError(f"address {addr!r} has an invalid domain", permanent=True) from None
    if not _LOCAL_PART.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        hint = "non-ASCII local parts need SMTPUTF8, which is not supported" if not local.isascii() else None
        raise SendError(f"invalid email address {addr!r}", hint, permanent=True)
    return f"{local}@{domain}"


def _check_digest_id(digest_id: str) -> None:
    if len(digest_id) > 200 or not _DIGEST_ID.fullmatch(digest_id):
        raise ValueError(f"digest id must be letters, digits and . _ + = - (max 200): {digest_id!r}")


# A header value is a list of tokens: written separated by one space, folded between tokens.
Tokens = list[str]


def _mailbox(name: str, addr: str) -> Tokens:
    return [*_phrase(name), f"<{addr}>"] if name else [addr]


def _phrase(name: str) -> Tokens:
    """A display name as an atom phrase, a quoted string or (non-ASCII) one encoded-word.

    One word even past RFC 2047's 75 characters: split words decode right in mail clients, but
    Python's address parser puts a space between them. Only a name past ~650 bytes is split.
    """
    if not _plain(name):
        encoded = _encoded_word(name)
        return [encoded] if len(encoded) <= _LONGEST_PLAIN else _encoded_words(name)
    if _ATOM_PHRASE.fullmatch(name):
        return name.split(" ")
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return [quoted] if len(quoted) <= _LONGEST_PLAIN else _encoded_words(name)  # escapes lengthen it


def _unstructured(value: str) -> Tokens:
    """Subject-style text: ASCII words stay readable, runs of other words become encoded-words."""
    tokens: list[str] = []
    run: list[str] = []
    for word in value.split(" "):
        if not _plain(word):
            run.append(word)
            continue
        if run:
            tokens += _encoded_words(" ".join(run))
            run = []
        tokens.append(word)
    if run:
        tokens += _encoded_words(" ".join(run))
    return tokens


def _plain(text: str) -> bool:
    """Text that can go into a header as it is (and cannot be mistaken for an encoded-word)."""
    return text.isascii() and "=?" not in text and len(text) <= _LONGEST_PLAIN


def _fold(name: str, tokens: Tokens) -> str:
    """``Name: value`` with tokens joined by spaces, folded (CRLF + space) to stay within 78 columns."""
    lines, line, room = [], "", _LINE - len(name) - 2
    for token in tokens:
        if line and len(line) + 1 + len(token) > room:
            lines.append(line)
            line, room = token, _LINE - 1
        else:
            line = f"{line} {token}" if line else token
    return f"{name}: " + "\r\n ".join([*lines, line])


def _encoded_words(value: str) -> list[str]:
    """RFC 2047 'B' encoded-words of whole characters (whitespace between them is not part of the text)."""
    chunks: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode("utf-8", "replace"))
        if size + width > _WORD_BYTES:
            chunks.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    chunks.append("".join(chunk))
    return [_encoded_word(c) for c in chunks]


def _encoded_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8", "replace")).decode("ascii") + "?="


def _date(date: datetime) -> str:
    """RFC 5322 date; a naive datetime is taken as UTC."""
    return format_datetime(date if date.tzinfo else date.replace(tzinfo=UTC))


def _list_id_tokens(list_id: str) -> Tokens:
    """'Name <list.example.org>' -> phrase + angle-bracketed dot-atom identifier."""
    if _CONTROL.search(list_id):
        raise _list_id_error("contains a line break or control character")
    name, _, ident = list_id.rpartition("<")
    ident = ident.strip().rstrip(">").strip()
    if not _LOCAL_PART.fullmatch(ident) or "." not in ident:
        raise _list_id_error(
            f"{list_id!r} has no identifier like 'papers.example.org' (or 'Name <papers.example.org>')"
        )
    name = clean_text(name)
    return [*_phrase(name), f"<{ident}>"] if name else [f"<{ident}>"]


def _unsubscribe_headers(envelope: Envelope) -> list[tuple[str, Tokens]]:
    """The links; the one-click header only with an https one, as RFC 8058 (3.1) asks of it."""
    mailto = f"<{envelope.mailto_unsubscribe}>"
    if envelope.https_unsubscribe is None:
        return [("List-Unsubscribe", [mailto])]
    links = ("List-Unsubscribe", [f"<{envelope.https_unsubscribe}>,", mailto])
    if not envelope.https_unsubscribe.startswith("https://"):
        return [links]
    return [links, ("List-Unsubscribe-Post", ["List-Unsubscribe=One-Click"])]


# --- body ------------------------------------------------------------------------------------------


def _boundary(digest_id: str) -> str:
    """Deterministic per digest; '=_' never occurs in base64 text, so it cannot collide with a body."""
    return "=_np_" + hashlib.sha256(digest_id.encode("utf-8")).hexdigest()[:32]


def _head(headers: list[tuple[str, Tokens]], boundary: str) -> bytes:
    """The header block, with the blank line that ends it."""
    headers.append(("Content-Type", ["multipart/alternative;", f'boundary="{boundary}"']))
    return ("".join(_fold(name, tokens) + "\r\n" for name, tokens in headers) + "\r\n").encode("ascii")


def _body(head: bytes, boundary: str, text: str, html: str) -> bytes:
    return b"".join(
        [
            head,
            _part(boundary, "text/plain", text),
            _part(boundary, "text/html", html),
            f"--{boundary}--\r\n".encode("ascii"),
        ]
    )


def _part(boundary: str, content_type: str, body: str) -> bytes:
    head = (
        f"--{boundary}\r\n"
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode("ascii") + _base64_lines(_canonical(body))


def _canonical(body: str) -> bytes:
    """UTF-8 with CRLF line endings and a final line break (on bytes: ~8x faster than on str)."""
    data = body.encode("utf-8", "replace")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not data.endswith(b"\n"):
        data += b"\n"
    return data.replace(b"\n", b"\r\n")


def _base64_lines(data: bytes) -> bytes:
    """Base64 in 76-character CRLF lines (RFC 2045).

    The full lines are laid out as rows of a numpy array rather than sliced one by one: 40 vs 100 µs
    for a 30 KB part, which counts when a run builds thousands of messages.
    """
    encoded = np.frombuffer(base64.b64encode(data), dtype=np.uint8)
    full, rest = divmod(len(encoded), _B64_LINE)
    lines = np.empty((full, _B64_LINE + 2), dtype=np.uint8)
    lines[:, :_B64_LINE] = encoded[: full * _B64_LINE].reshape(full, _B64_LINE)
    lines[:, _B64_LINE:] = _CRLF
    last = encoded[full * _B64_LINE :].tobytes() + b"\r\n" if rest or not full else b""
    return lines.tobytes() + last
