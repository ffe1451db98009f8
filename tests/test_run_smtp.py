"""A full run delivering over SMTP to a real server on loopback (aiosmtpd)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from .helpers import add_dumps, cli, seed_names


class Recorder:
    def __init__(self, refuse: set[str] | None = None) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.refuse = refuse or set()
        self.peers: set[Any] = set()  # client (host, port) of each connection that delivered
        self.rcpt_delay = 0.0  # seconds before answering RCPT (a stuck server)
        self.rcpts = 0
        self.greylist: set[str] = set()  # refused for now (451), as a greylisting server does

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.rcpts += 1
        await asyncio.sleep(self.rcpt_delay)
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        if address in self.greylist:
            return "451 4.7.1 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(msg)  # type: ignore[arg-type]
        self.peers.add(session.peer)
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def over_smtp(port: int) -> dict[str, str]:
    return {
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
    }


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
    env |= over_smtp(port)
    add_dumps(env, *seed_names()[:2])
    proc = cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z", check=False)
    report = json.loads(proc.stdout)
    by_sub = {d["subscriber"]: d for d in report["digests"]}
    # The refused recipient fails permanently; the others still go out.
    assert by_sub["diff@example.org"]["status"] == "failed"
    assert "550" in by_sub["diff@example.org"]["reason"]
    assert by_sub["diff@example.org"]["retried"] is False  # only `newsletter retry` sends it again
    assert proc.returncode == 3  # only a digest refused by its address's server: not 1, the run's own trouble
    sent = sorted(d["subscriber"] for d in report["digests"] if d["status"] == "sent")
    assert sent == ["ssm@example.org"]
    assert sorted(str(m["To"]).split("<")[-1].rstrip(">") for m in recorder.messages) == sent
    assert not (Path(env["NEWSLETTER_HOME"]) / "outbox").exists()
    # A second run delivers nothing new and does not resend the permanent failure.
    again = json.loads(cli(env, "run", "--json", "--now", "2026-03-12T08:00:00Z", check=False).stdout)
    assert [d for d in again["digests"] if d["status"] == "sent"] == []
    assert len(recorder.messages) == 1


def test_quiet_run_lists_only_failures_and_logs_a_refusal_for_now_as_a_warning(
    env: dict[str, str], smtp_server: tuple[Recorder, int]
) -> None:
    """Cron's log: a line per subscriber each hour, no date on any, and a greylisting 451 logged as the
    same ERROR as a 550, without the digest it was."""
    recorder, port = smtp_server
    recorder.greylist = {"ssm@example.org"}
    env |= over_smtp(port)
    add_dumps(env, *seed_names()[:2])
    proc = cli(env, "run", "--quiet", "--now", "2026-03-11T08:00:00Z", check=False)
    assert proc.returncode == 3
    *listed, summary = proc.stdout.splitlines()
    assert sorted(line.split(":")[0] for line in listed) == ["diff@example.org", "ssm@example.org"]
    assert summary.startswith("2026-03-11 08:00 UTC: ") and "2 failed" in summary and "skipped" in summary
    logged = {
        line.split(" ")[3]: line for line in proc.stderr.splitlines() if "@example.org: digest " in line
    }
    assert sorted(logged) == ["ERROR", "WARNING"]
    assert "diff@example.org" in logged["ERROR"] and "failed: error (permanent): " in logged["ERROR"]
    assert "ssm@example.org" in logged["WARNING"] and "(temporary, will retry next run)" in logged["WARNING"]


@pytest.mark.parametrize("connections", [1, 2])
def test_unreachable_server_stops_the_run_quickly_and_loses_nothing(
    env: dict[str, str], smtp_server: tuple[Recorder, int], connections: int
) -> None:
    recorder, port = smtp_server
    recorder.refuse = set()
    closed = free_port()  # nothing listens here
    env |= {
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(closed),
        "NEWSLETTER_CONNECTIONS": str(connections),
    }
    add_dumps(env, *seed_names()[:2])
    started = time.monotonic()
    down = cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z", check=False)
    assert down.returncode == 1
    assert time.monotonic() - started < 30  # no backoff per subscriber
    statuses = [d["status"] for d in json.loads(down.stdout)["digests"]]
    assert 1 <= statuses.count("failed") <= connections and "sent" not in statuses  # one try each
    assert "cannot connect" in down.stderr or "cannot connect" in down.stdout
    # The server is back two days later: everything that was due goes out, once, dated when it is sent
    # (dated when first made, it sorted two days back in the inbox), still headed with its own day.
    env["NEWSLETTER_SMTP_PORT"] = str(port)
    up = json.loads(cli(env, "run", "--json", "--now", "2026-03-13T08:10:00Z").stdout)
    sent = sorted(d["subscriber"] for d in up["digests"] if d["status"] == "sent")
    assert sent == ["diff@example.org", "ssm@example.org"]
    assert len(recorder.messages) == 2
    assert {m["Date"].datetime for m in recorder.messages} == {datetime(2026, 3, 13, 8, 10, tzinfo=UTC)}
    assert all("Wednesday, 11 March 2026" in m.get_body(("plain",)).get_content() for m in recorder.messages)


def test_a_server_that_stops_answering_costs_one_timeout_per_digest_and_loses_nothing(
    env: dict[str, str], smtp_server: tuple[Recorder, int]
) -> None:
    """A stall was taken for a dropped connection: reconnected and tried again at once, then retried
    in the run, six timeouts per digest (with the default 30 s, a quarter of an hour for five digests)."""
    recorder, port = smtp_server
    recorder.refuse, recorder.rcpt_delay = set(), 2.0
    env |= {
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SMTP_TIMEOUT": "0.5",
    }
    add_dumps(env, *seed_names()[:2])
    stalled = cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z", check=False)
    digests = json.loads(stalled.stdout)["digests"]
    assert [d["status"] for d in digests if d["status"] != "skipped"] == ["failed", "failed"]
    assert all("did not answer within 0.5 s" in d["reason"] for d in digests if d["status"] == "failed")
    assert recorder.rcpts == 2 and recorder.messages == []  # one try each
    recorder.rcpt_delay = 0.0  # answering again: the next run after the backoff sends both, once
    up = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T08:10:00Z").stdout)
    assert sorted(d["subscriber"] for d in up["digests"] if d["status"] == "sent") == [
        "diff@example.org",
        "ssm@example.org",
    ]
    assert len(recorder.messages) == 2


INTERESTS = ["quantization", "speech recognition", "large language models", "reinforcement learning"]


@pytest.mark.parametrize("builder", ["off", "on"])
def test_two_connections_deliver_every_digest_once_and_record_each(
    env: dict[str, str], smtp_server: tuple[Recorder, int], tmp_path: Path, builder: str
) -> None:
    recorder, port = smtp_server
    readers = [f"reader{i}@example.org" for i in range(80)]
    recorder.refuse = {readers[7]}
    subscribers = tmp_path / "many.yaml"
    subscribers.write_text(
        "subscribers:\n"
        + "".join(f"  - {{email: {r}, interests: ['{INTERESTS[i % 4]}']}}\n" for i, r in enumerate(readers))
    )
    env |= {
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SUBSCRIBERS": str(subscribers),
        "NEWSLETTER_CONNECTIONS": "2",
        "NEWSLETTER_BUILD_PROCESS": builder,
    }
    add_dumps(env, seed_names()[0])
    report = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z", check=False).stdout)
    assert [d["subscriber"] for d in report["digests"]] == readers  # outcomes in subscriber order
    status = {d["subscriber"]: d["status"] for d in report["digests"]}
    assert status.pop(readers[7]) == "failed"
    assert set(status.values()) == {"sent"}
    received = [str(m["To"]) for m in recorder.messages]
    assert sorted(received) == sorted(status) and len(set(received)) == len(received)
    assert len(recorder.peers) == 2  # both connections carried messages
    log = json.loads(cli(env, "status", "--json").stdout)
    assert [a["status"] for a in log["attention"]] == ["failed"]  # the refusal; nothing unknown or queued
    again = json.loads(cli(env, "run", "--json", "--now", "2026-03-12T08:00:00Z", check=False).stdout)
    assert [d for d in again["digests"] if d["status"] == "sent"] == []
    assert len(recorder.messages) == len(received)
