"""A full run delivering over SMTP to a real server on loopback (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from .helpers import add_dumps, cli, seed_names


class Recorder:
    def __init__(self, refuse: set[str] | None = None) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.refuse = refuse or set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(msg)  # type: ignore[arg-type]
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder(refuse={"diff@example.org"})
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, server_hostname="localhost")
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


def test_run_delivers_one_message_per_due_subscriber_over_smtp(
    env: dict[str, str],
    smtp_server: tuple[Recorder, int],
    tmp_path: Path,
) -> None:
    recorder, port = smtp_server
    env |= {
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
    }
    add_dumps(env, *seed_names()[:2])
    proc = cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z", check=False)
    report = json.loads(proc.stdout)
    by_sub = {d["subscriber"]: d for d in report["digests"]}
    # The refused recipient fails permanently; the others still go out.
    assert by_sub["diff@example.org"]["status"] == "failed"
    assert "550" in by_sub["diff@example.org"]["reason"]
    assert proc.returncode == 1
    sent = sorted(d["subscriber"] for d in report["digests"] if d["status"] == "sent")
    assert sent == ["ssm@example.org"]
    assert sorted(str(m["To"]).split("<")[-1].rstrip(">") for m in recorder.messages) == sent
    assert not (Path(env["NEWSLETTER_HOME"]) / "outbox").exists()
    # A second run delivers nothing new and does not resend the permanent failure.
    again = json.loads(cli(env, "run", "--json", "--now", "2026-03-12T08:00:00Z", check=False).stdout)
    assert [d for d in again["digests"] if d["status"] == "sent"] == []
    assert len(recorder.messages) == 1
