"""The last digest sent: `preview --last`, `/s/<email>/last` in `serve`, and outbox names a person can read."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from newsletter.serve import create_app
from newsletter.store import UNKNOWN, Store
from newsletter.store.schema import digests

from .helpers import add_dumps, cli, keyed, seed_names
from .test_serve import NOW, SSM, settings_for

RUN_AT = "2026-03-11T08:00:00Z"


def _sent(env: dict[str, str]) -> tuple[Path, email.message.EmailMessage]:
    """Ssm's digest in the outbox, found by its name: date, address, id."""
    (eml,) = (Path(env["NEWSLETTER_HOME"]) / "outbox").glob(f"2026-03-11_{SSM}_*.eml")
    parsed = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return eml, parsed


def test_preview_last_shows_the_digest_that_was_sent(env: dict[str, str], tmp_path: Path) -> None:
    add_dumps(env, seed_names()[0])
    assert cli(env, "preview", SSM, "--last").stdout == f"{SSM}: no digest sent yet\n"
    cli(env, "run", "--now", RUN_AT)
    now = cli(env, "preview", SSM, "--now", "2026-03-11T09:00:00Z").stdout
    assert now.startswith(f"{SSM}: no digest now (nothing new)") and "--last" in now
    never = cli(env, "preview", "nobody@example.org", "--now", "2026-03-11T09:00:00Z").stdout
    assert never == "nobody@example.org: no digest now (nothing new); none sent yet\n"  # not: see --last
    out = tmp_path / "last.html"
    shown = cli(env, "preview", SSM, "--last", "--out", str(out)).stdout
    eml, sent = _sent(env)
    assert shown.startswith(f"Subject: {sent['Subject']}\nsent 2026-03-11 08:00 UTC: ")
    assert out.read_text(encoding="utf-8") == eml.with_suffix(".html").read_text(encoding="utf-8")


def test_serve_shows_the_last_digest_sent(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    with keyed(create_app(settings_for(env), clock=lambda: NOW)) as client:
        assert client.get(f"/s/{SSM}/last").status_code == 404
        cli(env, "run", "--now", RUN_AT)
        assert f'href="/s/{SSM}/last"' in client.get(f"/s/{SSM}").text
        last = client.get(f"/s/{SSM}/last")
    _, sent = _sent(env)
    body = sent.get_body(("html",))
    assert last.status_code == 200 and body is not None
    assert last.text == body.get_content()


def test_a_digest_is_headed_with_the_subscribers_own_day(env: dict[str, str]) -> None:
    """At 02:30 UTC on Wednesday it is still Tuesday evening in Los Angeles: the heading said Wednesday."""
    subscribers = Path(env["NEWSLETTER_SUBSCRIBERS"])
    subscribers.write_text(
        subscribers.read_text().replace(
            "    name: Sam\n", "    name: Sam\n    timezone: America/Los_Angeles\n"
        )
    )
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T02:30:00Z")
    (eml,) = (Path(env["NEWSLETTER_HOME"]) / "outbox").glob(f"*_{SSM}_*.eml")
    sent = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert isinstance(sent, email.message.EmailMessage)
    text = sent.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.splitlines()[0].endswith("· Tuesday, 10 March 2026")
    assert "TUESDAY, 10 MARCH 2026" in eml.with_suffix(".html").read_text().upper()


@pytest.mark.parametrize("run_at", [RUN_AT, "2026-03-11T23:30:00-05:00"])
def test_a_resend_overwrites_its_own_outbox_files_days_later(env: dict[str, str], run_at: str) -> None:
    """Named by the resend's Date header, a digest resent three days later got a second .eml beside the
    first, dated by the resend (and named by a UTC date, a run at an offset got another)."""
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", run_at)
    outbox = Path(env["NEWSLETTER_HOME"]) / "outbox"
    before = sorted(p.name for p in outbox.iterdir())
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:  # as a crash mid-send leaves it
        (ssm,) = store.deliveries(email=SSM, with_items=False)
        with store._engine.begin() as conn:
            conn.execute(digests.update().where(digests.c.id == ssm.digest_id).values(status=UNKNOWN))
    cli(env, "retry", "--unknown", "--now", "2026-03-14T09:00:00Z")
    assert sorted(p.name for p in outbox.iterdir()) == before
    (eml,) = outbox.glob(f"*_{SSM}_*.eml")
    resent = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert resent["Date"].datetime.day == 14  # the header says when it went out


def test_a_resend_after_the_sender_changed_keeps_its_message_id(env: dict[str, str], tmp_path: Path) -> None:
    """Message-IDs are made from the sender's domain: after NEWSLETTER_FROM changed (an upgrade that
    refused the placeholder), `retry --unknown` sent a copy a mail client could not tell was one."""
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", RUN_AT)
    _, first = _sent(env)
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:  # as a crash mid-send leaves it
        (ssm,) = store.deliveries(email=SSM, with_items=False)
        with store._engine.begin() as conn:
            conn.execute(digests.update().where(digests.c.id == ssm.digest_id).values(status=UNKNOWN))
    moved = {**env, "NEWSLETTER_FROM": "Papers <digest@lab.example.net>"}
    cli(moved, "retry", "--unknown", "--now", "2026-03-14T09:00:00Z")
    _, resent = _sent(env)
    assert resent["From"].addresses[0].domain == "lab.example.net"
    assert resent["Message-ID"] == first["Message-ID"] and "lab.example.net" not in resent["Message-ID"]
    shown = cli(moved, "preview", SSM, "--last", "--out", str(tmp_path / "last.html")).stdout
    assert shown.startswith(f"Subject: {first['Subject']}")
