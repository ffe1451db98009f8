"""Addresses and files outside ASCII: an IDN sender domain, a subscriber on one, files not in UTF-8."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from newsletter.config import load_settings
from newsletter.errors import ConfigError
from newsletter.send import make_transport, real_sender
from newsletter.send.apis import MailgunTransport

from .helpers import SUBSCRIBERS, add_dumps, cli, seed_names

KEY = "key-abcdefghijklmnop"


def _mailgun(sender: str) -> MailgunTransport:
    settings = load_settings(transport="mailgun", api_key=SecretStr(KEY), sender=sender)
    transport = make_transport(settings)
    assert isinstance(transport, MailgunTransport)
    return transport


@pytest.mark.parametrize(
    ("sender", "domain"),
    [
        ("Pâpers <digest@bücher-post.de>", "xn--bcher-post-9db.de"),  # was refused: not a domain name
        ("Papers <digest@example.org> ", "example.org"),  # was 'example.org>': every request a 404
        ("digest@Example.ORG", "example.org"),
    ],
)
def test_mailgun_sends_from_the_sender_s_domain_as_it_goes_out(sender: str, domain: str) -> None:
    assert _mailgun(sender).domain == domain


@pytest.mark.parametrize("sender", ["digest@NEWSLETTER.INVALID", "Papers <digest@newsletter.invalid> "])
def test_the_placeholder_domain_is_refused_however_it_is_written(sender: str) -> None:
    settings = load_settings(transport="smtp", sender=sender)
    with pytest.raises(ConfigError, match="is the placeholder"):
        real_sender(settings)


def test_a_sender_with_a_non_ascii_local_part_is_told_why(env: dict[str, str]) -> None:
    proc = cli({**env, "NEWSLETTER_FROM": "Papers <dïgest@example.org>"}, "check", check=False)
    assert proc.returncode == 1
    assert "invalid email address 'dïgest@example.org'" in proc.stderr
    assert "hint: non-ASCII local parts need SMTPUTF8" in proc.stderr


def test_the_run_report_names_an_idn_subscriber_as_the_file_and_status_do(env: dict[str, str]) -> None:
    """Sent digests were reported under the punycode address, skipped ones and `status` under the
    Unicode one: a script grouping reports by subscriber split one person in two."""
    subscribers = Path(env["NEWSLETTER_SUBSCRIBERS"])
    subscribers.write_text(SUBSCRIBERS.replace("ssm@example.org", "sam@bücher.de"), encoding="utf-8")
    add_dumps(env, seed_names()[0])
    outcomes = json.loads(cli(env, "run", "--json").stdout)["digests"]
    sam = [o for o in outcomes if "bücher" in o["subscriber"] or "xn--" in o["subscriber"]]
    assert [(o["subscriber"], o["status"]) for o in sam] == [("sam@bücher.de", "sent")]
    rows = json.loads(cli(env, "status", "--json").stdout)["subscribers"]
    assert "sam@bücher.de" in [row["subscriber"] for row in rows]


def test_a_locale_that_cannot_spell_an_idn_subscriber_shows_it_escaped(env: dict[str, str]) -> None:
    """LANG=en_US.ISO-8859-1 (stood in for by PYTHONIOENCODING) and an address at 例子.中国: the run
    sent its digests, then its report stopped at that line with `unexpected UnicodeEncodeError`
    (exit 1, every run), and `status` printed nothing else."""
    subscribers = Path(env["NEWSLETTER_SUBSCRIBERS"])
    subscribers.write_text(SUBSCRIBERS.replace("ssm@example.org", "li@例子.中国"), encoding="utf-8")
    add_dumps(env, seed_names()[0])
    latin1 = {**env, "PYTHONIOENCODING": "latin-1"}
    assert "li@\\u4f8b\\u5b50.\\u4e2d\\u56fd: sent" in cli(latin1, "run").stdout
    assert "li@\\u4f8b\\u5b50.\\u4e2d\\u56fd" in cli(latin1, "status").stdout


def test_a_subscribers_file_that_is_not_utf8_is_named_at_its_line(env: dict[str, str]) -> None:
    subscribers = Path(env["NEWSLETTER_SUBSCRIBERS"])
    subscribers.write_bytes(SUBSCRIBERS.replace("Sam", "Sám").encode("latin-1"))
    proc = cli(env, "check", check=False)
    assert f"error: {subscribers}:5: byte 0xe1 is not UTF-8: save the file as UTF-8" in proc.stderr
    assert "position" not in proc.stderr


def test_a_utf16_subscribers_file_says_so(env: dict[str, str]) -> None:
    """What PowerShell's `>` writes: it was "can't decode byte 0xff in position 0"."""
    subscribers = Path(env["NEWSLETTER_SUBSCRIBERS"])
    subscribers.write_bytes(SUBSCRIBERS.encode("utf-16"))
    proc = cli(env, "check", check=False)
    assert f"error: {subscribers}: the file is UTF-16: save it as UTF-8" in proc.stderr


def test_newsletter_toml_with_a_byte_order_mark_is_read(env: dict[str, str], tmp_path: Path) -> None:
    """Windows Notepad writes one: the file was "not valid TOML" at line 1, column 1."""
    (tmp_path / "newsletter.toml").write_bytes("\ufefftick_seconds = 0\n".encode())
    proc = cli(env, "check", check=False, cwd=tmp_path)
    assert "newsletter.toml, line 1" in proc.stderr, proc.stderr  # read, and its key found on line 1
    (tmp_path / "newsletter.toml").write_bytes("\ufeff# settings\ntick_seconds = 60\n".encode())
    assert cli(env, "check", cwd=tmp_path).stdout.startswith("ok:")


def test_newsletter_toml_not_in_utf8_is_named_at_its_line(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "newsletter.toml").write_bytes(
        'tick_seconds = 60\nfrom = "Pü <d@example.org>"\n'.encode("latin-1")
    )
    proc = cli(env, "check", check=False, cwd=tmp_path)
    assert "error: newsletter.toml:2: byte 0xfc is not UTF-8: save the file as UTF-8" in proc.stderr


def test_a_full_width_at_sign_is_named(env: dict[str, str]) -> None:
    """It was told "the part before @ must be ASCII", of an address with no '@' at all."""
    subscribers = Path(env["NEWSLETTER_SUBSCRIBERS"])
    subscribers.write_text(SUBSCRIBERS.replace("ssm@example.org", "ssm＠example.org"), encoding="utf-8")
    proc = cli(env, "check", check=False)
    assert "needs an '@' (it holds a full-width '＠', not '@')" in proc.stderr
    assert "must be ASCII" not in proc.stderr
