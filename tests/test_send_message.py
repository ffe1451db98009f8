"""build_message: headers, MIME structure, header-injection safety, and parity with EmailMessage."""

from __future__ import annotations

import base64
import email
import email.policy
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage

import pytest

from newsletter.config import Settings
from newsletter.errors import ConfigError, SendError
from newsletter.models import OutgoingMessage, RenderedDigest
from newsletter.send.message import Envelope, build_message, clean_text, envelope_for, message_id_for

WHEN = datetime(2024, 3, 11, 7, 30, tzinfo=UTC)
ENVELOPE = Envelope(
    sender="Trending Papers <digest@example.org>",
    list_id="Trending Papers <papers.example.org>",
    mailto_unsubscribe="mailto:unsubscribe@example.org?subject=unsubscribe%20ada%40example.org",
    https_unsubscribe="https://papers.example.org/unsubscribe?token=abc.def",
)
HTML = (
    "<html><body>"
    + "<tr><td style='padding:0'>Ünïcode &amp; sparse edges</td></tr>\n" * 900
    + "</body></html>"
)
TEXT = "1. Kestrel: Sparse Message Passing Nets\n   why: matches sparse edge\n" * 40


def build(
    subject: str = "5 new papers for you",
    to_name: str = "Ada Lovelace",
    to_addr: str = "ada@example.org",
    envelope: Envelope = ENVELOPE,
    text: str = TEXT,
    html: str = HTML,
    digest_id: str = "2024-03-11.ada.7f3a",
) -> OutgoingMessage:
    rendered = RenderedDigest(subject=subject, html=html, text=text)
    return build_message(
        digest_id=digest_id, envelope=envelope, to_name=to_name, to_addr=to_addr, rendered=rendered, date=WHEN
    )


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def reference(subject: str, to_name: str, to_addr: str, envelope: Envelope, text: str, html: str) -> bytes:
    """The same message built with the standard library's EmailMessage, for comparison."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = Address("Trending Papers", addr_spec="digest@example.org")
    msg["To"] = Address(clean_text(to_name), addr_spec=to_addr)
    msg["Subject"] = clean_text(subject)
    msg["Date"] = WHEN
    msg["Message-ID"] = "<2024-03-11.ada.7f3a@example.org>"
    msg["List-Id"] = envelope.list_id
    if envelope.https_unsubscribe:
        msg["List-Unsubscribe"] = f"<{envelope.https_unsubscribe}>, <{envelope.mailto_unsubscribe}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    else:
        msg["List-Unsubscribe"] = f"<{envelope.mailto_unsubscribe}>"
    msg.set_content(text, cte="base64")
    msg.add_alternative(html, subtype="html", cte="base64")
    return msg.as_bytes()


def summary(raw: bytes) -> dict[str, object]:
    """What a mail client sees: decoded headers, structure and decoded bodies."""
    msg = parse(raw)
    headers = {name: str(msg[name]) for name in set(msg.keys()) - {"Content-Type", "To"}}
    to = [(a.display_name, a.addr_spec) for a in msg["To"].addresses] if "To" in msg else []
    return {
        "headers": headers,
        "to": to,
        "defects": [type(d).__name__ for part in msg.walk() for d in part.defects],
        "type": msg.get_content_type(),
        "parts": [
            (p.get_content_type(), p.get_content_charset(), p.get_content().replace("\r\n", "\n"))
            for p in msg.iter_parts()
        ],
    }


def header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


# --- structure and headers -------------------------------------------------------------------------


def test_every_header_and_the_mime_structure() -> None:
    message = build()
    msg = parse(message.raw)
    assert msg["From"] == "Trending Papers <digest@example.org>"
    assert msg["To"] == "Ada Lovelace <ada@example.org>"
    assert msg["Subject"] == "5 new papers for you"
    assert msg["Date"].datetime == WHEN
    assert msg["Message-ID"] == "<2024-03-11.ada.7f3a@example.org>"
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Id"] == "Trending Papers <papers.example.org>"
    assert msg["List-Unsubscribe"] == (
        "<https://papers.example.org/unsubscribe?token=abc.def>, "
        "<mailto:unsubscribe@example.org?subject=unsubscribe%20ada%40example.org>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert all(p["Content-Transfer-Encoding"] == "base64" for p in parts)
    assert parts[0].get_content().replace("\r\n", "\n") == TEXT
    assert parts[1].get_content().replace("\r\n", "\n") == HTML + "\n"
    assert not any(part.defects for part in msg.walk())


def test_outgoing_message_fields() -> None:
    message = build(subject="Digest\r\nBcc: x@evil.example")
    assert message.digest_id == "2024-03-11.ada.7f3a"
    assert message.sender == "digest@example.org"
    assert message.recipient == "ada@example.org"
    assert message.subject == "Digest Bcc: x@evil.example"
    assert message.message_id == "<2024-03-11.ada.7f3a@example.org>"
    assert message.html == HTML


def test_crlf_line_endings_and_short_lines() -> None:
    raw = build(subject="wörd " * 60, to_name="Zoë Ångström-Łukasz Wiśniewska").raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert raw.isascii()


def test_without_one_click_url_only_the_mailto_is_listed() -> None:
    envelope = Envelope(ENVELOPE.sender, ENVELOPE.list_id, ENVELOPE.mailto_unsubscribe, None)
    msg = parse(build(envelope=envelope).raw)
    assert msg["List-Unsubscribe"] == f"<{ENVELOPE.mailto_unsubscribe}>"
    assert "List-Unsubscribe-Post" not in msg


def test_an_http_unsubscribe_url_is_listed_without_the_one_click_header() -> None:
    """RFC 8058 asks for an https URL with List-Unsubscribe-Post: mailbox providers ignore it on http."""
    url = "http://127.0.0.1:8765/unsubscribe/abc.def"
    envelope = Envelope(ENVELOPE.sender, ENVELOPE.list_id, ENVELOPE.mailto_unsubscribe, url)
    msg = parse(build(envelope=envelope).raw)
    assert msg["List-Unsubscribe"] == f"<{url}>, <{ENVELOPE.mailto_unsubscribe}>"
    assert "List-Unsubscribe-Post" not in msg


def test_message_id_is_deterministic() -> None:
    assert message_id_for("2024-03-11.ada.7f3a", "example.org") == "<2024-03-11.ada.7f3a@example.org>"
    first, again = build(), build()
    assert first.raw == again.raw  # a rebuilt retry is byte-identical, Message-ID and boundary included
    assert build(digest_id="other").message_id == "<other@example.org>"


@pytest.mark.parametrize("digest_id", ["", "a b", "a/../b", "../x", "a\r\nX: y", "a@b", "a..b", "x" * 201])
def test_unusable_digest_ids_are_refused(digest_id: str) -> None:
    with pytest.raises(ValueError, match="digest id"):
        message_id_for(digest_id, "example.org")


def test_naive_date_is_taken_as_utc_and_offsets_are_kept() -> None:
    rendered = RenderedDigest("s", "<p>h</p>", "t")
    naive = build_message(
        digest_id="d", envelope=ENVELOPE, to_name="", to_addr="a@example.org", rendered=rendered,
        date=datetime(2024, 3, 11, 7, 30),
    )  # fmt: skip
    berlin = WHEN.astimezone(timezone(timedelta(hours=1)))
    aware = build_message(
        digest_id="d", envelope=ENVELOPE, to_name="", to_addr="a@example.org", rendered=rendered, date=berlin
    )
    assert parse(naive.raw)["Date"] == "Mon, 11 Mar 2024 07:30:00 +0000"
    assert parse(aware.raw)["Date"] == "Mon, 11 Mar 2024 08:30:00 +0100"


def test_empty_name_gives_a_bare_address() -> None:
    msg = parse(build(to_name="  ").raw)
    assert msg["To"] == "ada@example.org"


def test_idna_domain_is_converted() -> None:
    message = build(to_addr="zoe@bücher.example")
    assert message.recipient == "zoe@xn--bcher-kva.example"
    assert parse(message.raw)["To"].addresses[0].addr_spec == "zoe@xn--bcher-kva.example"


# --- bad input and safety --------------------------------------------------------------------------

INJECTIONS = [
    "Hello\r\nBcc: victim@example.net",
    "Hello\nBcc: victim@example.net",
    "Hello\rBcc: victim@example.net",
    "Hello\x00Bcc: victim@example.net",
    "Hello\r\n\r\n<html>body</html>",
    "Hello\u2028Bcc: victim@example.net",
    "Hello\x85Bcc: victim@example.net",
]


@pytest.mark.parametrize("evil", INJECTIONS)
def test_line_breaks_in_subject_and_name_never_make_a_header(evil: str) -> None:
    message = build(subject=evil, to_name=evil)
    msg = parse(message.raw)
    assert "Bcc" not in msg
    assert [name for name, _ in msg.items()].count("Subject") == 1
    assert msg["Subject"] == clean_text(evil)
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert msg["To"].addresses[0].display_name == clean_text(evil)
    assert msg.get_content_type() == "multipart/alternative"
    assert all(line[:1] in b" \t" or b":" in line for line in header_lines(message.raw))


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.org\r\nBcc: victim@example.net",
        "ada@example.org\nBcc: victim@example.net",
        "ada@example.org\x00",
        "Ada <ada@example.org>",
        "ada@example.org, eve@example.net",
        "ada example@example.org",
        "no-at-sign",
        "ada@",
        "@example.org",
        "adä@example.org",
    ],
)
def test_unusable_recipient_addresses_are_refused(address: str) -> None:
    with pytest.raises(SendError) as caught:
        build(to_addr=address)
    assert caught.value.permanent


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sender", "Papers <digest@example.org>\r\nBcc: victim@example.net"),
        ("sender", "not an address"),
        ("list_id", "Papers <papers.example.org>\nBcc: x@y.z"),
        ("list_id", "Papers <not a list id>"),
        ("mailto_unsubscribe", "mailto:u@example.org\r\nBcc: x@y.z"),
        ("https_unsubscribe", "https://example.org/u?t=1\r\nBcc: x@y.z"),
        ("https_unsubscribe", "javascript:alert(1)"),
        ("https_unsubscribe", "https://example.org/u?t=<1>"),
        ("mailto_unsubscribe", "https://example.org/u"),
    ],
)
def test_envelope_refuses_values_that_could_break_headers(field: str, value: str) -> None:
    values = {
        "sender": ENVELOPE.sender,
        "list_id": ENVELOPE.list_id,
        "mailto_unsubscribe": ENVELOPE.mailto_unsubscribe,
        "https_unsubscribe": ENVELOPE.https_unsubscribe,
        field: value,
    }
    with pytest.raises(ConfigError):
        Envelope(**values)


def test_non_ascii_names_and_subject_are_encoded_words() -> None:
    message = build(subject="Ünïcode: 数学 and 📄 papers", to_name="Zoë Ångström-Łukasz")
    lines = header_lines(message.raw)
    assert any(line.startswith(b"Subject: =?utf-8?b?") for line in lines)
    assert b"and" in b"".join(lines)  # ASCII words stay readable
    msg = parse(message.raw)
    assert msg["Subject"] == "Ünïcode: 数学 and 📄 papers"
    assert msg["To"].addresses[0].display_name == "Zoë Ångström-Łukasz"


def test_text_that_looks_like_an_encoded_word_stays_literal() -> None:
    literal = "=?utf-8?b?SGFja2Vk?= and =?x?q?y?="
    msg = parse(build(subject=literal, to_name=literal).raw)
    assert msg["Subject"] == literal
    assert msg["To"].addresses[0].display_name == literal


def test_very_long_words_and_bodies() -> None:
    long_word = "x" * 2000
    body = ("a" * 5000 + "\n") * 20
    name = "Zoë Ångström " * 20  # one encoded-word past 75 chars: Python's parser splits words with spaces
    message = build(subject=f"see {long_word}", to_name=name, text=body, html=f"<p>{body}</p>")
    assert max(len(line) for line in message.raw.split(b"\r\n")) < 998
    msg = parse(message.raw)
    assert msg["Subject"] == f"see {long_word}"
    assert msg["To"].addresses[0].display_name == name.strip()
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == body


@pytest.mark.parametrize("name", ['Ann A"' + 'A"' * 440, '"' * 600, "\\" * 600])
def test_a_name_whose_quoting_passes_the_line_limit_is_encoded(name: str) -> None:
    """Checked before escaping, a name of quotes made a 1,330-byte To line (RFC 5322 allows 998)."""
    message = build(to_name=name)
    assert max(len(line) for line in message.raw.split(b"\r\n")) < 998
    shown = parse(message.raw)["To"].addresses[0].display_name  # Python's parser spaces split words
    assert shown.replace(" ", "") == name.replace(" ", "")


def test_lone_surrogates_do_not_crash() -> None:
    message = build(subject="bad \ud800 title", text="t \udfff", html="<p>\ud800</p>")
    assert parse(message.raw)["Subject"] == "bad ? title"


def test_envelope_for_derives_list_id_and_mailto() -> None:
    settings = Settings(sender="Trending Papers <digest@example.org>")
    envelope = envelope_for(settings, "ada+ml@example.org", "https://papers.example.org/u/tok")
    assert envelope.list_id == "Trending Papers <digest.example.org>"
    assert envelope.mailto_unsubscribe == (
        "mailto:digest@example.org?subject=unsubscribe%20ada%2bml%40example.org"
    )
    assert envelope.https_unsubscribe == "https://papers.example.org/u/tok"
    custom = envelope_for(Settings(list_id="Lab digest <lab.example.org>"), "a@b.org")
    assert custom.list_id == "Lab digest <lab.example.org>"


# --- parity with EmailMessage ----------------------------------------------------------------------

AWKWARD = [
    "Zoë",
    "Ångström",
    "数学",
    "📄",
    "e\u0301",
    "مرحبا",
    '"quoted"',
    "back\\slash",
    "O'Neil",
    "Dr.",
    "a,b",
    "<x>",
    "(c)",
    "semi;colon",
    "=?",
    "?=",
    "\r\n",
    "\n",
    "\r",
    "\x00",
    "\t",
    "\u2028",
    "\xa0",
    "  ",
    "Bcc:",
    "x" * 80,
    "word",
    "Kestrel",
    "2312.00752",
]


def awkward_text(rng: random.Random, words: int) -> str:
    return "".join(rng.choice(AWKWARD) + rng.choice(["", " ", "  "]) for _ in range(words))


def intended(subject: str, name: str, text: str, html: str) -> dict[str, object]:
    """What the reader should see for these inputs."""
    return {
        "subject": clean_text(subject),
        "to": [(clean_text(name), "ada@example.org")],
        "defects": [],
        "type": "multipart/alternative",
        "parts": [("text/plain", "utf-8", lines(text)), ("text/html", "utf-8", lines(html))],
    }


def lines(body: str) -> str:
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    return body if body.endswith("\n") else body + "\n"


def seen(parsed: dict[str, object]) -> dict[str, object]:
    headers: dict[str, str] = parsed["headers"]  # type: ignore[assignment]
    keys = ("to", "defects", "type", "parts")
    return {"subject": headers.get("Subject"), **{k: parsed[k] for k in keys}}


def test_parses_like_email_message_over_awkward_inputs() -> None:
    """Property-style: 300 seeded random inputs; the hand-built message always reads as intended,
    and reads exactly like EmailMessage's whenever EmailMessage itself gets the input right."""
    compared = 0
    for seed in range(300):
        rng = random.Random(seed)
        subject = awkward_text(rng, rng.randint(0, 40))
        name = awkward_text(rng, rng.randint(0, 6))
        text = awkward_text(rng, rng.randint(1, 50))
        html = "<p>" + awkward_text(rng, rng.randint(1, 50)) + "</p>"
        envelope = (
            ENVELOPE if seed % 2 else Envelope(ENVELOPE.sender, ENVELOPE.list_id, "mailto:u@example.org")
        )
        want = intended(subject, name, text, html)
        hand = summary(build(subject, name, "ada@example.org", envelope, text, html).raw)
        ref = summary(reference(subject, name, "ada@example.org", envelope, text, html))
        assert seen(hand) == want, f"seed {seed}"
        if seen(ref) == want:
            assert hand == ref, f"seed {seed}"
            compared += 1
    assert compared >= 200, (
        compared
    )  # EmailMessage mis-folds a few names (e.g. '(c) xxx...'); most are compared


def test_clean_text_collapses_controls_and_whitespace() -> None:
    assert clean_text("  a\r\n\tb\x00c\u2028d  ") == "a b c d"
    assert re.fullmatch(r"\S+( \S+)*", clean_text(awkward_text(random.Random(1), 50)))


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 113, 114, 115, 1000, 30_001])
def test_base64_body_lines_are_76_characters_and_decode_back(size: int) -> None:
    from newsletter.send.message import _base64_lines

    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    encoded = base64.b64encode(data)
    expected = b"\r\n".join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"
    assert _base64_lines(data) == expected  # the straightforward slicing, line for line
    assert base64.b64decode(_base64_lines(data)) == data


def test_bidi_controls_never_reach_the_subject_or_names() -> None:
    bidi = "\u202eevil\u202c \u2066a\u2069 \u200eb\u200f \u202a\u202b\u202dc\u2067\u2068"
    built = build_message(
        digest_id="d1",
        envelope=ENVELOPE,
        to_name=f"Ada {bidi}",
        to_addr="ada@example.org",
        rendered=RenderedDigest(f"3 new papers {bidi}", "<p>x</p>", "x"),
        date=datetime(2026, 3, 11, tzinfo=UTC),
    )
    parsed = email.message_from_bytes(built.raw, policy=email.policy.default)
    for text in (built.subject, str(parsed["Subject"]), str(parsed["To"])):
        assert not set(text) & set(bidi) - set(" abcelvi"), text
    assert str(parsed["Subject"]) == "3 new papers evil a b c"
