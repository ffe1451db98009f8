"""One reading of an address (IDNA 2008 / UTS 46) for routing, the store key and the unsubscribe token."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from email_validator import validate_email
from starlette.testclient import TestClient

from newsletter.address import address_key, ascii_domain
from newsletter.app import open_pipeline
from newsletter.config import Settings
from newsletter.serve import create_app
from newsletter.subscribers import load_subscribers

from .helpers import add_dumps, make_env, seed_names
from .test_serve_unsubscribe import settings_for

NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
BOB = "bob@straße.example"


@pytest.mark.parametrize(
    "spelling", ["bob@straße.example", "Bob@STRASSE.example".replace("SS", "ß"), "bob@xn--strae-oqa.example"]
)
def test_one_key_for_every_spelling_of_an_idna_2008_domain(spelling: str) -> None:
    assert address_key(spelling) == address_key(
        validate_email(spelling, check_deliverability=False).normalized
    )
    assert address_key(spelling) == BOB
    assert address_key("bob@strasse.example") != BOB  # another domain under IDNA 2008


def test_ascii_domain_is_what_email_validator_sends_to() -> None:
    for domain in ("straße.example", "Bücher.example", "xn--strae-oqa.example", "example.org"):
        expected = validate_email(f"a@{domain}", check_deliverability=False).ascii_domain
        assert ascii_domain(domain) == expected
    with pytest.raises(ValueError, match="invalid domain"):
        ascii_domain("a\u200db.example")  # a joiner IDNA 2008 refuses there


def _settings(tmp_path: Path) -> Settings:
    env = make_env(tmp_path)
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(
        f"subscribers:\n  - email: {BOB}\n    interests: [sound]\n    cadence: each-dump\n",
        encoding="utf-8",
    )
    add_dumps(env, seed_names()[0])
    return settings_for(env)


def test_an_eszett_domain_is_routed_to_itself_and_its_unsubscribe_link_works(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    subscribers = load_subscribers(settings.subscribers)
    with open_pipeline(settings) as pipeline:
        first = pipeline.run(subscribers, NOW)
    assert [(address_key(d.subscriber), d.status) for d in first.digests] == [(BOB, "sent")]
    (eml,) = settings.outbox.glob("*.eml")
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert msg["To"].addresses[0].addr_spec == "bob@xn--strae-oqa.example"  # not bob@strasse.example
    link = urlsplit(str(msg["List-Unsubscribe"]).split("<", 1)[1].split(">", 1)[0])
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        assert client.post(link.path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    add_dumps({"NEWSLETTER_DUMPS": str(settings.dumps)}, seed_names()[1])
    with open_pipeline(settings) as pipeline:
        second = pipeline.run(subscribers, NOW)
    assert [(address_key(d.subscriber), d.status, d.reason) for d in second.digests] == [
        (BOB, "skipped", "unsubscribed")
    ]
