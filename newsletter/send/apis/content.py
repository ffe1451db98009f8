"""The parts of a built message that JSON email APIs take as fields, read back from its RFC 5322 bytes.

JSON APIs (Postmark, SendGrid, Resend) want From/To/Subject and the text and HTML bodies as fields, plus
extra headers as a name -> value map. The headers are copied from the built message exactly (unfolded,
still printable ASCII with RFC 2047 words), so they say what the SMTP and file transports send.
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import parseaddr

from newsletter.errors import SendError
from newsletter.models import OutgoingMessage
from newsletter.send.message import clean_text

# Headers of ours that the JSON APIs carry through their ``headers`` field.
LIST_HEADERS = ("List-Id", "List-Unsubscribe", "List-Unsubscribe-Post")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ATOM_PHRASE = re.compile(r"[\w!#$%&'*+/=?^`{|}~ -]+")  # atext plus any letter (the APIs encode those)


@dataclass(frozen=True, slots=True)
class Content:
    sender_name: str
    sender: str
    recipient_name: str
    recipient: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]  # Message-ID and the List-* headers, as in the built message

    @property
    def from_display(self) -> str:
        return display_address(self.sender_name, self.sender)

    @property
    def to_display(self) -> str:
        return display_address(self.recipient_name, self.recipient)


def content_of(message: OutgoingMessage) -> Content:
    """Read the fields back from ``message.raw``; SendError(permanent) when it is not a usable message.

    Parsed with the compat32 policy (plain string headers): ~10x faster than policy.default's header objects.
    When the message carries its text and HTML copies (a run's messages do), only the header block is
    parsed, as headers alone: the whole 40 KB message took 5 ms, a third of a batch request's local
    cost (a run's builder then leaves the MIME body out: ``OutgoingMessage.headers_only``).
    """
    if message.headers_only or (message.text and message.html):
        parsed = BytesHeaderParser().parsebytes(_head(message.raw))  # no MIME parts to look for
    else:
        parsed = email.message_from_bytes(message.raw)
    return Content(
        sender_name=_display_name(parsed.get("From", "")),
        sender=message.sender,
        recipient_name=_display_name(parsed.get("To", "")),
        recipient=message.recipient,
        subject=message.subject,
        text=message.text or _body(parsed, "text/plain"),
        html=message.html or _body(parsed, "text/html"),
        headers=_headers(parsed, message),
    )


def _head(raw: bytes) -> bytes:
    """The header block of RFC 5322 bytes (all of them when there is no body)."""
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 4]


def display_address(name: str, address: str) -> str:
    """``Name <addr>`` with the name quoted when it is not a plain atom phrase (what the APIs parse)."""
    if not name:
        return address
    if _ATOM_PHRASE.fullmatch(name):
        return f"{name} <{address}>"
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'


def _display_name(value: str) -> str:
    name, _ = parseaddr(_unfold(str(value)))
    try:
        return clean_text(str(make_header(decode_header(name))))
    except (HeaderParseError, LookupError, UnicodeDecodeError):
        return clean_text(name)


def _body(parsed: Message, content_type: str) -> str:
    for part in parsed.walk():
        if part.get_content_type() == content_type and not part.is_multipart():
            data = part.get_payload(decode=True)
            charset = part.get_content_charset() or "utf-8"
            if isinstance(data, bytes):
                return _decode(data, charset).replace("\r\n", "\n")
    return ""


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _headers(parsed: Message, message: OutgoingMessage) -> dict[str, str]:
    raw = {name.casefold(): value for name, value in parsed.items()}
    headers = {"Message-ID": message.message_id}
    for name in LIST_HEADERS:
        if name.casefold() in raw:
            headers[name] = _unfold(str(raw[name.casefold()]))
    for name, value in headers.items():
        if not value.isprintable() or not value.isascii():
            raise SendError(
                f"digest {message.digest_id}: header {name} is not printable ASCII", permanent=True
            )
    return headers


def _unfold(value: str) -> str:
    return _FOLD.sub("", value).strip()
