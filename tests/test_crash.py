"""kill -9 a run at random points, then count at a real SMTP server: nothing twice, nothing lost.

The SMTP server (aiosmtpd) runs in its own process so the test can SIGKILL the `newsletter run`
client at any moment. It journals every message it accepts (recipient, Message-ID, paper links) and
only then, after a short delay, replies to DATA: a kill in that delay is the "body sent, reply never
read" case whose fate the tool must report as unknown instead of guessing.

Run as ``python -m tests.test_crash JOURNAL DELAY`` it is that server (prints its port, stops on EOF).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
import yaml
from rich.console import Console

from newsletter.config import PACKAGE_TEMPLATES, Settings
from newsletter.deliver import FAILED_IN_A_ROW, GIVE_UP_AFTER, STOPPED, Breaker
from newsletter.deliver.held import HELD_FILE
from newsletter.errors import SendError, StoreError
from newsletter.models import OutgoingMessage
from newsletter.ops.status import print_status, status_report
from newsletter.pipeline import Pipeline
from newsletter.rank import make_ranker
from newsletter.render import Renderer
from newsletter.report import BACKING_OFF, WAITING, RunReport
from newsletter.selection.select import BOUNCED
from newsletter.store import SENDING, Store
from newsletter.store.session import DeliverySession
from newsletter.subscribers import SubscriberList, load_subscribers

from .api_server import server_process as api_process
from .conftest import SEEDS
from .helpers import cli, seed_names, server_process

SEED = 20260311
SUBSCRIBERS = 60
MIN_KILLS = 20
KILLS_PER_DUMP = 5
DATA_DELAY = 0.02  # seconds the server waits between journaling a message and replying 250
SEND_RATE = "30"  # messages per second, so a run's sending phase lasts ~2 s
DOMAIN = "papers.example.org"
TOPICS = (
    ("Kolmogorov-Arnold networks", "KAN"),
    ("sound", "speech synthesis"),
    ("large language models", "reasoning"),
    ("model compression", "sparsity"),
    ("reinforcement learning", "agents"),
    ("transformers", "attention"),
    ("vision language models", "multimodal"),
    ("efficient inference", "long context"),
)
_PAPER_LINK = re.compile(r"https://arxiv\.org/\S+")


# --- the SMTP server process --------------------------------------------------------------------


class Journal:
    """aiosmtpd handler: append one JSON line per accepted message, then reply after ``delay``."""

    def __init__(self, path: Path, delay: float) -> None:
        self.file = path.open("a", encoding="utf-8")
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        body = msg.get_body(("plain",))
        papers = _PAPER_LINK.findall(body.get_content() if body else "")
        for rcpt in envelope.rcpt_tos:
            line = {"to": rcpt, "id": str(msg["Message-ID"]), "papers": papers}
            self.file.write(json.dumps(line) + "\n")
        self.file.flush()  # the server is never killed: flushed to the OS is durable enough
        await asyncio.sleep(self.delay)
        return "250 2.0.0 queued"


def serve(journal: Path, delay: float) -> None:
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(Journal(journal, delay), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    sys.stdin.read()  # until the test closes our stdin
    controller.stop()


# --- the test's side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    to: str
    message_id: str
    papers: tuple[str, ...]


def read_journal(path: Path) -> list[Received]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Received(r["to"], r["id"], tuple(r["papers"])) for r in rows]


def journal_length(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def smtp_server(journal: Path, delay: float = DATA_DELAY) -> contextlib.AbstractContextManager[int]:
    """The journaling SMTP server in its own process; yields its port."""
    return server_process("tests.test_crash", journal, delay)


@pytest.fixture
def smtp_process(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    journal = tmp_path / "journal.jsonl"
    with smtp_server(journal) as port:
        yield port, journal


def write_subscribers(path: Path) -> None:
    subs = [
        {
            "email": f"reader{i:03d}@example.org",
            "name": f"Reader {i}",
            "interests": list(TOPICS[i % len(TOPICS)]),
        }
        for i in range(SUBSCRIBERS)
    ]
    data = {"defaults": {"cadence": "each-dump", "max_items": 5}, "subscribers": subs}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def crash_env(tmp_path: Path, port: int) -> dict[str, str]:
    write_subscribers(tmp_path / "subscribers.yaml")
    (tmp_path / "dumps").mkdir()
    return {
        "NEWSLETTER_HOME": str(tmp_path / "state"),
        "NEWSLETTER_SUBSCRIBERS": str(tmp_path / "subscribers.yaml"),
        "NEWSLETTER_DUMPS": str(tmp_path / "dumps"),
        "NEWSLETTER_RANKER": "lexical",
        "NEWSLETTER_FROM": f"Papers <digest@{DOMAIN}>",
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_SEND_RATE": SEND_RATE,
        "NEWSLETTER_SMTP_TIMEOUT": "10",
    }


def start_run(env: dict[str, str], now: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "newsletter", "run", "--now", now],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def wait_for_kill_point(
    proc: subprocess.Popen[bytes], rng: random.Random, journal: Path, *, sending: bool
) -> None:
    """A plain random delay (lands in start-up, recovery, ingest or planning) or N more messages + jitter."""
    if not sending or rng.random() < 0.3:
        deadline, target = time.monotonic() + rng.uniform(0.2, 2.5), None
    else:
        deadline, target = time.monotonic() + 15, journal_length(journal) + rng.randint(0, 20)
    while time.monotonic() < deadline and proc.poll() is None:
        if target is not None and journal_length(journal) >= target:
            time.sleep(rng.uniform(0, 1.5 / float(SEND_RATE)))  # anywhere in one send cycle
            return
        time.sleep(0.002)


def kill_at_random_point(
    env: dict[str, str], now: str, rng: random.Random, journal: Path, *, sending: bool = True
) -> bool:
    """Start a run and SIGKILL it at a random point; True if it was still running when killed."""
    log = Path(env["NEWSLETTER_HOME"]).parent / "runs.log"
    before = log.stat().st_size if log.exists() else 0
    proc = start_run(env, now, log)
    wait_for_kill_point(proc, rng, journal, sending=sending)
    alive = proc.poll() is None
    proc.kill()
    code = proc.wait()
    # a run that finds what an earlier kill left 'sending' exits 1 (it is 'unknown' now: worth a look)
    found_unknown = code == 1 and b"interrupted by a crash and are now 'unknown'" in log.read_bytes()[before:]
    assert alive or code == 0 or found_unknown, f"run exited with {code} before the kill; see {log}"
    # one message per connection, or one batch per request in flight
    in_flight_at_most = int(env.get("NEWSLETTER_CONNECTIONS", "1")) * int(
        env.get("NEWSLETTER_BATCH_SIZE", "1")
    )
    assert len(in_flight(env)) <= in_flight_at_most, (
        "a kill left more digests of unknown fate than connections (times the batch size)"
    )
    return alive


def in_flight(env: dict[str, str]) -> list[str]:
    """Digests a killed run left 'sending' (the next run reports them as unknown)."""
    with open_store(env) as store:
        return [d.digest_id for d in store.deliveries([SENDING], with_items=False)]


def kill_runs(
    env: dict[str, str],
    rng: random.Random,
    journal: Path,
    per_dump: int = KILLS_PER_DUMP,
    minimum: int = MIN_KILLS,
) -> tuple[int, int]:
    """Drop the seed dumps in one by one, killing runs after each; returns (kills, runs started)."""
    kills = runs = 0
    for index, name in enumerate(seed_names()):
        shutil.copy(SEEDS / name, Path(env["NEWSLETTER_DUMPS"]) / name)
        while kills < per_dump * (index + 1):
            runs += 1
            killed = kill_at_random_point(env, day(index), rng, journal)
            kills += killed
            if not killed:
                break  # that run finished: everything due so far went out
    while kills < minimum:  # nothing left to send: these land in start-up, recovery and selection
        runs += 1
        kills += kill_at_random_point(env, day(len(seed_names()) - 1), rng, journal, sending=False)
        assert runs < 4 * minimum, "runs keep finishing before the kill"
    return kills, runs


def day(index: int) -> str:
    return f"2026-03-{10 + index:02d}T08:00:00Z"


@dataclass(frozen=True)
class Counts:
    kills: int
    runs: int
    planned: int
    received: int
    unknown: frozenset[str]
    unknown_arrived: frozenset[str]
    duplicates: int

    def line(self) -> str:
        return (
            f"kills={self.kills} (of {self.runs} runs) planned={self.planned} received={self.received} "
            f"unknown={len(self.unknown)} (arrived {len(self.unknown_arrived)}, "
            f"not arrived {len(self.unknown - self.unknown_arrived)}) duplicates={self.duplicates}"
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("builder", "connections"),
    [("off", 1), ("on", 1), ("on", 2)],
    ids=["one-process", "builder-process", "builder-two-connections"],
)
def test_kill_9_at_random_points_never_duplicates_or_loses_a_digest(
    tmp_path: Path, smtp_process: tuple[int, Path], builder: str, connections: int
) -> None:
    port, journal = smtp_process
    env = {
        **crash_env(tmp_path, port),
        "NEWSLETTER_BUILD_PROCESS": builder,
        "NEWSLETTER_CONNECTIONS": str(connections),
    }
    kills, runs = kill_runs(env, random.Random(SEED), journal)
    counts = finish_and_count(env, journal, kills, runs)
    assert len(counts.unknown) <= kills * connections
    twice = resend_unknown(env, journal, counts)
    print(f"after retry --unknown: {len(twice)} duplicated (= the unknown ones that had arrived)")


API_BATCH = 10
API_DELAY = 0.05  # seconds the API waits between journaling a batch and replying


@pytest.mark.slow
def test_kill_9_during_batched_api_runs_leaves_at_most_one_batch_unknown_per_kill(tmp_path: Path) -> None:
    """10 kills at random moments of runs sending batches to a Postmark-shaped API; then count there."""
    journal = tmp_path / "journal.jsonl"
    with api_process(journal, API_DELAY) as port:
        env = {
            **crash_env(tmp_path, port),  # its SMTP settings go unused
            "NEWSLETTER_TRANSPORT": "postmark",
            "NEWSLETTER_API_KEY": "server-token",
            "NEWSLETTER_API_BASE_URL": f"http://127.0.0.1:{port}",
            "NEWSLETTER_BATCH_SIZE": str(API_BATCH),
            "NEWSLETTER_CONNECTIONS": "1",
            "NEWSLETTER_BUILD_PROCESS": "off",
        }
        kills, runs = kill_runs(env, random.Random(SEED), journal, per_dump=2, minimum=10)
        counts = finish_and_count(env, journal, kills, runs)
        assert len(counts.unknown) <= kills * API_BATCH
        resend_unknown(env, journal, counts)


def finish_and_count(env: dict[str, str], journal: Path, kills: int, runs: int) -> Counts:
    """Let a final run finish, then check the server's journal against the delivery log."""
    proc = cli(env, "run", "--json", "--now", day(len(seed_names())), check=False)
    final = json.loads(proc.stdout)
    assert proc.returncode == (1 if final["recovered_unknown"] else 0), proc.stderr  # unknown: a look
    assert final["digests"], "the final run saw no subscribers"
    received = read_journal(journal)
    status = json.loads(cli(env, "status", "--json").stdout)
    unknown = frozenset(a["digest_id"] for a in status["attention"] if a["status"] == "unknown")
    assert [a for a in status["attention"] if a["status"] != "unknown"] == []
    planned = planned_digests(env)
    arrived = {message_digest(r.message_id) for r in received}
    counts = Counts(
        kills, runs, len(planned), len(received), unknown, unknown & arrived, duplicate_count(received)
    )
    print(f"\ncrash test: {counts.line()}")
    assert counts.duplicates == 0
    assert_no_paper_twice(received)
    assert_one_digest_per_window(env)
    assert arrived <= set(planned), "the server got a message the store never planned"
    assert {d for d, s in planned.items() if s == "sent"} <= arrived, "a digest marked sent never arrived"
    assert set(planned) - arrived <= unknown, "a due digest was lost without being reported"
    assert set(planned.values()) <= {"sent", "unknown"}
    assert_everyone_evaluated_up_to_the_last_dump(env)
    return counts


def resend_unknown(env: dict[str, str], journal: Path, counts: Counts) -> set[str]:
    """`retry --unknown`: those that never arrived arrive now; those that had arrived arrive twice."""
    retried = json.loads(cli(env, "retry", "--unknown", "--json").stdout)
    assert {d["digest_id"] for d in retried["digests"] if d["status"] == "sent"} == counts.unknown
    after = read_journal(journal)
    twice = {message_digest(r.message_id) for r in after if duplicate_key(r) in duplicate_keys(after)}
    assert {message_digest(r.message_id) for r in after} == set(planned_digests(env))
    assert twice == counts.unknown_arrived
    return twice


def message_digest(message_id: str) -> str:
    """<digest_id@domain> -> digest_id (Message-IDs are derived from the delivery record)."""
    local, _, domain = message_id.strip("<>").partition("@")
    assert domain == DOMAIN, message_id
    return local


def duplicate_key(r: Received) -> tuple[str, str]:
    return r.to, r.message_id


def duplicate_keys(received: list[Received]) -> set[tuple[str, str]]:
    return {k for k, n in Counter(duplicate_key(r) for r in received).items() if n > 1}


def duplicate_count(received: list[Received]) -> int:
    return sum(n - 1 for n in Counter(duplicate_key(r) for r in received).values() if n > 1)


def assert_no_paper_twice(received: list[Received]) -> None:
    """No subscriber gets the same paper in two messages (the digest-level duplicate)."""
    per_recipient = Counter((r.to, paper) for r in received for paper in set(r.papers))
    assert [k for k, n in per_recipient.items() if n > 1] == []


def open_store(env: dict[str, str]) -> Store:
    return Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db")


def planned_digests(env: dict[str, str]) -> dict[str, str]:
    with open_store(env) as store:
        return {d.digest_id: d.status for d in store.deliveries(with_items=False)}


def assert_one_digest_per_window(env: dict[str, str]) -> None:
    with open_store(env) as store:
        windows = Counter((d.email, d.watermark_seq) for d in store.deliveries(with_items=False))
    assert [k for k, n in windows.items() if n > 1] == []


def assert_everyone_evaluated_up_to_the_last_dump(env: dict[str, str]) -> None:
    with open_store(env) as store:
        latest = store.latest_dump_seq()
        states = store.subscriber_states()
    assert len(states) == SUBSCRIBERS
    assert {s.watermark_seq for s in states.values()} == {latest}


# --- crash points the kill test reaches only by chance, hit on purpose ----------------------------------


def kill_self(*_args: object) -> None:
    """kill -9 of the current process: no cleanup, no flush; only what was committed survives."""
    os.kill(os.getpid(), signal.SIGKILL)


class Recorder:
    """A transport that accepts everything except the errors queued per recipient.

    With ``journal`` it also appends each accepted recipient to that file (readable after a kill).
    """

    uses_parts: ClassVar[bool] = False  # reads only the recipient: the builder hands over lean messages
    retries_itself: ClassVar[bool] = False

    def __init__(self, errors: dict[str, list[SendError]] | None = None, journal: Path | None = None) -> None:
        self.errors = errors or {}
        self.journal = journal
        self.sent: list[str] = []

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, message: OutgoingMessage) -> None:
        queued = self.errors.get(message.recipient)
        if queued:
            raise queued.pop(0)
        self.sent.append(message.recipient)
        if self.journal is not None:
            with self.journal.open("a", encoding="utf-8") as out:
                out.write(message.recipient + "\n")


class SlowRecorder(Recorder):
    """A Recorder whose server takes 20 ms per message, as a remote one does."""

    def send(self, message: OutgoingMessage) -> None:
        time.sleep(0.02)
        super().send(message)


class DiesAtRender:
    """A renderer that kills the process when asked for message number ``at`` (1-based)."""

    def __init__(self, renderer: Renderer, at: int) -> None:
        self.renderer, self.at, self.calls = renderer, at, 0

    def render(self, view: Any) -> Any:
        self.calls += 1
        if self.calls == self.at:
            kill_self()
        return self.renderer.render(view)


READERS = ("ssm@example.org", "diff@example.org", "llm@example.org")
NOW = datetime(2026, 3, 11, 8, tzinfo=UTC)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(PACKAGE_TEMPLATES)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


def make_folder(tmp_path: Path) -> Path:
    """A dumps folder with the first seed and subscribers.yaml with READERS."""
    (tmp_path / "dumps").mkdir()
    shutil.copy(SEEDS / seed_names()[0], tmp_path / "dumps")
    subs = [
        {"email": READERS[0], "interests": ["chain-of-thought", "latent space", "language grounding"]},
        {"email": READERS[1], "interests": ["sound", "speech synthesis"]},
        {"email": READERS[2], "interests": ["large language models"]},
    ]
    (tmp_path / "subscribers.yaml").write_text(yaml.safe_dump({"subscribers": subs}), encoding="utf-8")
    return tmp_path


def pipeline(
    folder: Path, renderer: Any, transport: Recorder, sleep: Any = lambda _s: None, **options: Any
) -> tuple[Pipeline, SubscriberList]:
    settings = Settings(
        home=folder / "state",
        subscribers=folder / "subscribers.yaml",
        dumps=folder / "dumps",
        sender=f"Papers <digest@{DOMAIN}>",
        **options,
    )
    store = Store(settings.db_url)
    made = Pipeline(settings, store, make_ranker("lexical"), renderer, lambda: transport, sleep=sleep)
    return made, load_subscribers(settings.subscribers)


def run_until_killed(folder: Path, renderer: Any, transport: Recorder, sleep: Any, **options: Any) -> None:
    """One run in a forked child that must die by SIGKILL at its kill point (set up by the caller)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            made, subs = pipeline(folder, renderer, transport, sleep, **options)
            made.run(subs, NOW)
        finally:
            os._exit(3)  # the kill point never came
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL


def committed(folder: Path) -> dict[str, str]:
    with Store(f"sqlite:///{folder / 'state' / 'state.db'}") as store:
        return {d.email: d.status for d in store.deliveries(with_items=False)}


def accepted(journal: Path) -> list[str]:
    return journal.read_text(encoding="utf-8").split() if journal.exists() else []


def next_run(folder: Path, renderer: Renderer) -> tuple[RunReport, list[str], dict[str, str]]:
    transport = Recorder()
    made, subs = pipeline(folder, renderer, transport)
    report = made.run(subs, NOW)
    made.store.close()
    return report, transport.sent, committed(folder)


def test_a_kill_while_waiting_for_the_send_rate_loses_nothing_and_reports_nothing_unknown(
    folder: Path, renderer: Renderer
) -> None:
    journal = folder / "accepted.txt"
    # The first message goes at once; the kill comes while waiting for the second one's slot.
    run_until_killed(folder, renderer, Recorder(journal=journal), kill_self, send_rate=1.0)
    assert accepted(journal) == [READERS[0]]
    left = committed(folder)
    assert left[READERS[0]] == "sent"  # accepted before the wait, so recorded before it
    assert left[READERS[1]] == "pending"  # planned, not 'sending': it cannot have gone out
    assert set(left.values()) <= {"sent", "pending"}
    report, sent, after = next_run(folder, renderer)
    assert report.recovered_unknown == []
    assert sorted(sent) == sorted(READERS[1:])
    assert set(after.values()) == {"sent"}


def test_a_kill_while_the_next_batch_is_built_leaves_the_last_accepted_digest_sent(
    folder: Path, renderer: Renderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = folder / "accepted.txt"
    monkeypatch.setattr("newsletter.deliver.building.PLAN_BATCH", 1)  # one digest per batch
    run_until_killed(folder, DiesAtRender(renderer, at=2), Recorder(journal=journal), None)
    assert accepted(journal) == [READERS[0]]
    assert committed(folder) == {READERS[0]: "sent"}  # not 'sending': it is known to have gone out
    report, sent, after = next_run(folder, renderer)
    assert report.recovered_unknown == []
    assert sorted(sent) == sorted(READERS[1:])
    assert set(after.values()) == {"sent"}


def test_a_kill_during_the_backoff_after_a_4xx_leaves_it_queued_for_retry(
    folder: Path, renderer: Renderer
) -> None:
    refusal = SendError("SMTP message refused: 451 4.3.0 try later")
    journal = folder / "accepted.txt"
    run_until_killed(folder, renderer, Recorder({READERS[0]: [refusal]}, journal), kill_self)
    assert accepted(journal) == []
    with Store(f"sqlite:///{folder / 'state' / 'state.db'}") as store:
        record = store.deliveries(email=READERS[0], with_items=False)[0]
    assert (record.status, record.attempts, record.last_error) == ("retry", 1, refusal.message)
    report, sent, after = next_run(folder, renderer)
    assert report.recovered_unknown == []
    assert sorted(sent) == sorted(READERS)  # sent once, by the next run
    assert set(after.values()) == {"sent"}


class UnsubscribesTheNext(Recorder):
    """Accepts a message, and meanwhile (another process: the one-click endpoint) the other readers
    unsubscribe, after their digests were planned."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def send(self, message: OutgoingMessage) -> None:
        super().send(message)
        for reader in READERS:
            if reader not in self.sent:
                self.store.record_unsubscribe(reader, NOW)


def test_digests_cancelled_after_planning_are_one_reason_in_the_summary(
    folder: Path, renderer: Renderer
) -> None:
    """Each said "digest '<id>' is no longer queued ...": one summary part per digest."""
    transport = UnsubscribesTheNext(cast(Store, None))
    made, subs = pipeline(folder, renderer, transport, build_process="off")
    transport.store = made.store
    with made.store:
        report = made.run(subs, NOW)
    assert len(transport.sent) == 1
    assert report.skipped == {"no longer queued (cancelled, or sent by another run)": 2}
    assert "digest '" not in report.summary()


def test_an_unsubscribe_during_the_backoff_cancels_that_digest_and_the_run_goes_on(
    folder: Path, renderer: Renderer
) -> None:
    transport = Recorder({READERS[0]: [SendError("SMTP message refused: 421 4.7.0 busy")]})
    holder: list[Pipeline] = []

    def unsubscribe_meanwhile(_seconds: float) -> None:  # the one-click endpoint runs in another process
        holder[0].store.record_unsubscribe(READERS[0], NOW)

    made, subs = pipeline(folder, renderer, transport, unsubscribe_meanwhile)
    holder.append(made)
    report = made.run(subs, NOW)
    outcome = {d.subscriber: d for d in report.digests}
    assert outcome[READERS[0]].status == "skipped"
    assert "cancelled" in outcome[READERS[0]].reason
    assert sorted(transport.sent) == sorted(READERS[1:])
    assert committed(folder)[READERS[0]] == "cancelled"
    made.store.close()


def test_a_run_that_leaves_a_delivery_unknown_is_not_ok(folder: Path, renderer: Renderer) -> None:
    lost = SendError("SMTP connection lost after DATA, before the reply", unknown=True)
    made, subs = pipeline(folder, renderer, Recorder({READERS[0]: [lost]}))
    report = made.run(subs, NOW)
    made.store.close()
    assert report.statuses["unknown"] == 1 and not report.statuses["failed"]
    assert not report.ok  # `newsletter run` exits 1, so cron reports it
    assert committed(folder)[READERS[0]] == "unknown"


class DiesInSend(Recorder):
    """Killed in the middle of the first send: its digest is left 'sending'."""

    def send(self, message: OutgoingMessage) -> None:
        kill_self()


def test_the_run_that_finds_a_send_interrupted_by_a_kill_is_not_ok(folder: Path, renderer: Renderer) -> None:
    run_until_killed(folder, renderer, DiesInSend(), None)
    report, sent, left = next_run(folder, renderer)
    assert left[READERS[0]] == "unknown" and sorted(sent) == sorted(READERS[1:])
    assert len(report.recovered_unknown) == 1
    assert not report.ok  # `newsletter run` exits 1: someone must decide whether to resend it


def test_retry_unknown_right_after_a_crash_resends_the_interrupted_digest(
    folder: Path, renderer: Renderer
) -> None:
    run_until_killed(folder, renderer, DiesInSend(), None)
    left = committed(folder)
    assert left.pop(READERS[0]) == "sending"
    assert set(left.values()) <= {"pending"}
    env = {
        "NEWSLETTER_HOME": str(folder / "state"),
        "NEWSLETTER_SUBSCRIBERS": str(folder / "subscribers.yaml"),
        "NEWSLETTER_DUMPS": str(folder / "dumps"),
        "NEWSLETTER_FROM": f"Papers <digest@{DOMAIN}>",
    }
    report = json.loads(cli(env, "retry", "--unknown", "--json").stdout)
    outcomes = {d["subscriber"]: d["status"] for d in report["digests"]}
    assert outcomes[READERS[0]] == "sent"  # recovered as unknown, then resent on request
    assert set(outcomes.values()) == {"sent"}


if __name__ == "__main__":
    serve(Path(sys.argv[1]), float(sys.argv[2]))


def test_a_subscriber_missing_from_the_file_for_a_run_keeps_their_queued_digest(
    folder: Path, renderer: Renderer
) -> None:
    """Commented out for a day, or a file read half-written: the digest was failed for good and its
    papers lost to them, since the watermark had moved past them."""
    run_until_killed(folder, renderer, Recorder(), kill_self, send_rate=1.0)  # queued: READERS[1:]
    transport = Recorder()
    made, subs = pipeline(folder, renderer, transport)
    without = SubscriberList(subs.path, tuple(s for s in subs.subscribers if s.email != READERS[1]))
    report = made.deliver_pending(without, NOW)
    assert sorted(transport.sent) == [READERS[2]]
    (skipped,) = [d for d in report.digests if d.subscriber == READERS[1]]
    assert skipped.status == "skipped" and "kept queued" in skipped.reason
    report = made.deliver_pending(subs, NOW)  # back in the file: their digest goes out
    made.store.close()
    assert sorted(transport.sent) == sorted(READERS[1:])
    assert committed(folder)[READERS[1]] == "sent"


def test_a_queued_digest_of_a_subscriber_gone_from_the_file_is_given_up_after_days(
    folder: Path, renderer: Renderer
) -> None:
    """Renamed or removed for good: it was "kept queued" in every run's log and in `status` forever,
    and went out months late if the address came back."""
    run_until_killed(folder, renderer, Recorder(), kill_self, send_rate=1.0)  # queued: READERS[1:]
    transport = Recorder()
    made, subs = pipeline(folder, renderer, transport)
    without = SubscriberList(subs.path, tuple(s for s in subs.subscribers if s.email != READERS[1]))
    later = NOW + GIVE_UP_AFTER + timedelta(minutes=1)
    report = made.deliver_pending(without, later)
    (gone,) = [d for d in report.digests if d.subscriber == READERS[1]]
    assert gone.status == "skipped" and gone.reason.endswith(": given up") and report.ok
    made.deliver_pending(subs, later)  # back in the file: the old digest does not go out
    made.store.close()
    assert sorted(transport.sent) == [READERS[2]]
    assert committed(folder)[READERS[1]] == "failed"


def _entries(report: RunReport) -> Counter[str]:
    return Counter(d.subscriber for d in report.digests)


def test_a_resumed_run_reports_each_subscriber_once(folder: Path, renderer: Renderer) -> None:
    run_until_killed(folder, renderer, Recorder(), kill_self, send_rate=1.0)  # killed after the first
    report, sent, _ = next_run(folder, renderer)
    assert sorted(sent) == sorted(READERS[1:])  # the queued digests, sent by this run
    assert _entries(report) == Counter(READERS)  # not once as 'sent' and again as 'skipped'
    assert sum(report.statuses.values()) == len(READERS)
    assert {d.subscriber: d.status for d in report.digests} == {
        READERS[0]: "skipped",
        READERS[1]: "sent",
        READERS[2]: "sent",
    }


def test_a_digest_retried_in_the_run_then_by_the_next_is_reported_once_by_each(
    folder: Path, renderer: Renderer
) -> None:
    refusal = SendError("SMTP message refused: 451 4.3.0 try later")
    made, subs = pipeline(folder, renderer, Recorder({READERS[0]: [refusal] * 3}))  # 1 + 2 retries
    first = made.run(subs, NOW)
    assert _entries(first) == Counter(READERS)
    assert {d.subscriber: d.status for d in first.digests}[READERS[0]] == "failed"
    later = made.run(subs, NOW + timedelta(minutes=10))  # past the 5-minute backoff
    made.store.close()
    assert {d.subscriber: (d.status, d.reason) for d in later.digests} == {
        READERS[0]: ("sent", ""),
        READERS[1]: ("skipped", "nothing new"),
        READERS[2]: ("skipped", "nothing new"),
    }
    assert _entries(later) == Counter(READERS)  # not 'sent', then 'skipped: nothing new' again
    assert sum(later.statuses.values()) == len(READERS)


def test_a_stop_ends_the_wait_for_the_send_rate_and_sends_nothing_more(
    folder: Path, renderer: Renderer
) -> None:
    """A worker stopped while its shard waits for its send-rate slot (or a retry's backoff) stops at
    once: the wait is cut short and the message it waited for is not sent, but stays queued."""
    stop = threading.Event()
    transport = StopSoonAfterFirst(stop)
    made, subs = pipeline(folder, renderer, transport, time.sleep, send_rate=0.2)  # 5 s between messages
    with made.store:
        report = made.run(subs, NOW, stop=stop)
    assert transport.sent == [READERS[0]]
    took = time.monotonic() - transport.first_at
    assert took < 3, f"{took:.1f} s after the first message (the next slot was 5 s after it)"
    assert report.skipped == {STOPPED: 2}
    assert committed(folder) == {READERS[0]: "sent", READERS[1]: "pending", READERS[2]: "pending"}


class StopSoonAfterFirst(Recorder):
    """Sets ``stop`` half a second after the first message is accepted (SIGTERM during the next wait)."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop
        self.first_at = 0.0

    def send(self, message: OutgoingMessage) -> None:
        super().send(message)
        if not self.first_at:
            self.first_at = time.monotonic()
            threading.Timer(0.5, self.stop.set).start()


class StopAtFirst(Recorder):
    """Its run is told to stop (SIGTERM) while it sends the first message, or ``after`` seconds later;
    ``errors`` as Recorder's."""

    def __init__(
        self, stop: threading.Event, errors: dict[str, list[SendError]] | None = None, after: float = 0.0
    ) -> None:
        super().__init__(errors)
        self.stop = stop
        self.after = after

    def send(self, message: OutgoingMessage) -> None:
        if not self.stop.is_set():
            threading.Timer(self.after, self.stop.set).start() if self.after else self.stop.set()
        super().send(message)


def test_a_stop_while_sending_queued_digests_reports_the_rest_as_queued(
    folder: Path, renderer: Renderer
) -> None:
    """The queued digests a stop left unsent were missing from the report (no outcome at all), so a
    worker took its shard for finished."""
    run_until_killed(folder, renderer, Recorder(), kill_self, send_rate=1.0)  # queued: READERS[1:]
    stop = threading.Event()
    transport = StopAtFirst(stop)
    made, subs = pipeline(folder, renderer, transport)
    with made.store:
        report = made.deliver_pending(subs, NOW, stop=stop)
    (first,) = transport.sent  # the queue's order is the digest ids'
    (other,) = set(READERS[1:]) - {first}
    assert [(d.subscriber, d.status, d.reason) for d in report.digests] == [
        (first, "sent", ""),
        (other, "skipped", STOPPED),
    ]
    assert committed(folder)[other] == "pending"


def test_a_stop_during_a_retry_backoff_leaves_the_digest_due_not_failed(
    folder: Path, renderer: Renderer
) -> None:
    """Refused once (451), the digest waits to be tried again; a stop during that wait ends the wait and
    leaves it due at once ('retry', not before now): skipped, not failed, and the next run sends it."""
    stop = threading.Event()
    refusal = SendError("SMTP message refused: 451 4.3.0 try later")
    transport = StopAtFirst(stop, {READERS[0]: [refusal]}, after=0.5)  # during the 30 s backoff
    made, subs = pipeline(folder, renderer, transport, time.sleep, retry_backoff=30.0)
    started = time.monotonic()
    with made.store:
        report = made.run(subs, NOW, stop=stop)
    assert time.monotonic() - started < 15
    assert transport.sent == []
    assert report.ok and report.skipped == {STOPPED: 3}
    with Store(f"sqlite:///{folder / 'state' / 'state.db'}") as store:
        log = {d.email: (d.status, d.not_before) for d in store.deliveries(with_items=False)}
    assert log == {READERS[0]: ("retry", NOW), READERS[1]: ("pending", None), READERS[2]: ("pending", None)}
    _, sent, after = next_run(folder, renderer)
    assert READERS[0] in sent and set(after.values()) == {"sent"}


def test_a_dump_ingested_while_a_run_selects_is_the_next_windows_not_sent_twice(
    folder: Path, renderer: Renderer
) -> None:
    """Another machine ingests a dump between the moment a run reads the latest dump and the moment
    it reads its windows: the digest's watermark is the former, so the new dump's papers must wait
    for the next window (they were planned in this one and then again in the next)."""
    made, subs = pipeline(folder, renderer, Recorder(), build_process="off")
    later = folder / "later"
    later.mkdir()
    shutil.copy(SEEDS / seed_names()[1], later)
    with made.store as store:
        made.ingest_folder(NOW)
        read_states = store.subscriber_states

        def states_while_another_machine_ingests() -> Any:
            states = read_states()
            made.ingest(sorted(later.iterdir()), NOW)  # after the run read the latest dump
            return states

        store.subscriber_states = states_while_another_machine_ingests  # type: ignore[method-assign]
        made.deliver_new(subs.subscribers, NOW)
        store.subscriber_states = read_states  # type: ignore[method-assign]
        made.deliver_new(subs.subscribers, NOW + timedelta(days=1))
        digests = store.deliveries()
    assert len({d.watermark_seq for d in digests}) == 2, "the test did not make two windows"
    for digest in digests:
        assert all(item.paper.first_dump_seq <= (digest.watermark_seq or 0) for item in digest.items)
    sent = Counter((d.email, item.paper.id) for d in digests for item in d.items)
    assert sent and max(sent.values()) == 1


def test_a_dump_ingested_while_a_run_selects_is_the_next_windows_for_a_subscriber_with_a_digest(
    folder: Path, renderer: Renderer
) -> None:
    """As above, for subscribers past their first digest: their window (papers after their watermark)
    must stop at the dump the run read, as a first digest's does."""
    made, subs = pipeline(folder, renderer, Recorder(), build_process="off")
    second, third = folder / "second", folder / "third"
    for where, seed in ((second, seed_names()[1]), (third, seed_names()[2])):
        where.mkdir()
        shutil.copy(SEEDS / seed, where)
    with made.store as store:
        made.ingest_folder(NOW)
        made.deliver_new(subs.subscribers, NOW)  # first digests: every reader has a watermark now
        made.ingest(sorted(second.iterdir()), NOW + timedelta(days=1))
        read_states = store.subscriber_states

        def states_while_another_machine_ingests() -> Any:
            states = read_states()
            made.ingest(sorted(third.iterdir()), NOW + timedelta(days=1))
            return states

        store.subscriber_states = states_while_another_machine_ingests  # type: ignore[method-assign]
        made.deliver_new(subs.subscribers, NOW + timedelta(days=1))
        store.subscriber_states = read_states  # type: ignore[method-assign]
        made.deliver_new(subs.subscribers, NOW + timedelta(days=2))
        digests = store.deliveries()
    assert len({d.watermark_seq for d in digests}) == 3, "the test did not make three windows"
    for digest in digests:
        assert all(item.paper.first_dump_seq <= (digest.watermark_seq or 0) for item in digest.items)
    sent = Counter((d.email, item.paper.id) for d in digests for item in d.items)
    assert sent and max(sent.values()) == 1


def test_sigterm_stops_retry_after_the_message_in_flight(
    tmp_path: Path, smtp_process: tuple[int, Path]
) -> None:
    """`retry` stops as `run` does: it was killed where it stood, leaving its message in flight 'sending'
    (reported 'unknown' by the next run, and not sent again)."""
    port, journal = smtp_process
    env = {**crash_env(tmp_path, port), "NEWSLETTER_SEND_RATE": "10"}
    shutil.copy(SEEDS / seed_names()[0], Path(env["NEWSLETTER_DUMPS"]))
    log = tmp_path / "runs.log"
    run = start_run(env, day(0), log)
    _wait_for(lambda: journal_length(journal) >= 2, run)
    run.kill()  # its planned digests wait, queued
    run.wait()
    retry = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "retry"], env={**os.environ, **env}, stderr=subprocess.PIPE
    )
    before = journal_length(journal)
    _wait_for(lambda: journal_length(journal) > before, retry)
    retry.send_signal(signal.SIGTERM)
    _, err = retry.communicate(timeout=60)
    assert retry.returncode == 128 + signal.SIGTERM and b"received SIGTERM" in err, err.decode()
    stopped_at = journal_length(journal)
    with open_store(env) as store:
        assert store.deliveries([SENDING], with_items=False) == []  # the one in flight was recorded
        assert store.deliveries(["pending"], with_items=False) != []  # the rest wait for the next run
    cli(env, "run", "--now", day(0), check=False)
    received = Counter(r.to for r in read_journal(journal))
    assert journal_length(journal) > stopped_at and max(received.values()) == 1


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None and time.monotonic() < deadline, "it ended (or hung) before the point"
        time.sleep(0.005)


@pytest.mark.parametrize(
    "refusal",
    [
        SendError("SMTP sender refused: 452 4.3.1 Insufficient system storage"),
        SendError("SMTP recipient refused: 554 5.7.1 Relay access denied", permanent=True, policy=True),
        SendError("SMTP connection lost after the message was sent", unknown=True),
    ],
    ids=["temporary", "permanent", "unknown"],
)
@pytest.mark.parametrize("connections", [1, 4])
def test_a_server_failing_every_message_stops_the_run_after_a_few(
    tmp_path: Path, renderer: Renderer, refusal: SendError, connections: int
) -> None:
    """A refusal every message met was met by each in turn: with the default backoff, 6 s a digest
    (17 h for 10,000, the run lock held throughout), or the whole list 'failed' for good (a relay
    that wants a login)."""
    folder = make_folder(tmp_path)
    write_subscribers(folder / "subscribers.yaml")  # 60 subscribers
    subs = load_subscribers(folder / "subscribers.yaml").subscribers
    transport = Recorder({s.email: [refusal] * 3 for s in subs})
    made, listed = pipeline(folder, renderer, transport, retry_backoff=0.0, connections=connections)
    with made.store:
        report = made.run(listed, NOW)
    tried = [d for d in report.digests if d.status in ("failed", "unknown")]
    refused = {s.email for s in subs if len(transport.errors[s.email]) < 3}
    # counted over every connection (each counted its own: 4 connections let 20 fail); the others'
    # requests in flight when it trips still end. A temporary refusal counts at its first try: a
    # digest waiting to try again when the run stops stays queued, not failed
    assert FAILED_IN_A_ROW <= len(refused) < FAILED_IN_A_ROW + connections and not report.ok
    assert 0 < len(tried) <= len(refused) and {d.subscriber for d in tried} <= refused
    assert report.skipped[STOPPED] + report.skipped[WAITING] > 40  # the rest waits for the next run
    transport.errors.clear()
    _, sent, _ = next_run(folder, renderer)
    assert len(sent) == len(set(sent)) > 40 and not {d.subscriber for d in tried} & set(sent)


@pytest.mark.parametrize(
    "refusal",
    [
        SendError("SMTP recipient refused: 550 5.1.1 <x@oldlab.example>: user unknown", permanent=True),
        SendError("SMTP recipient refused: 452 4.2.2 <x@lab.example>: mailbox full", mailbox=True),
    ],
    ids=["no-such-user", "mailbox-full-for-now"],
)
def test_refusals_that_blame_each_address_do_not_stop_the_run(
    tmp_path: Path, renderer: Renderer, refusal: SendError
) -> None:
    """A refusal of the address itself (5.1.1, a dead domain's addresses in a row), or of its mailbox for
    now (4.2.2 full), is the message's, not the server's: every other digest still goes out in this run."""
    folder = make_folder(tmp_path)
    write_subscribers(folder / "subscribers.yaml")
    subs = load_subscribers(folder / "subscribers.yaml").subscribers
    transport = Recorder({s.email: [refusal] * 3 for s in subs[:10]})
    made, listed = pipeline(folder, renderer, transport, retry_backoff=0.0)
    with made.store:
        report = made.run(listed, NOW)
    assert report.statuses["failed"] == 10 and report.statuses["sent"] == len(transport.sent) > 40
    assert STOPPED not in report.skipped


def test_one_address_s_queued_digests_all_refused_count_once(tmp_path: Path, renderer: Renderer) -> None:
    """One mailbox refusing for days (a plain 451, nothing naming it) queued a digest a day; once five
    waited, each run met them first, stopped on them, and the rest of the list got nothing for good."""
    folder = make_folder(tmp_path)
    busy = SendError("SMTP recipient refused: 451 try again later")
    transport = Recorder({READERS[0]: [busy] * 100})
    made, subs = pipeline(folder, renderer, transport, retry_backoff=0.0)
    with made.store:
        for day, seed in enumerate(seed_names()):
            shutil.copy(SEEDS / seed, folder / "dumps")
            report = made.run(subs, NOW + timedelta(days=day))
    assert [d.status for d in report.digests if d.subscriber == READERS[0]].count("failed") >= 4
    assert not [e for e in report.errors if "in a row" in e]
    assert {READERS[1], READERS[2]} <= set(transport.sent)


def test_some_addresses_greylisted_among_many_accepted_do_not_stop_the_run(
    tmp_path: Path, renderer: Renderer
) -> None:
    """One address in 4 refused for now, every other one accepted: each refusal was counted once its
    retries were over, and the connections, all waiting out a backoff at once, ended their counts in a
    row with none accepted between: each shard of a 5,000-reader list stopped after ~200 messages."""
    folder = make_folder(tmp_path)
    write_subscribers(folder / "subscribers.yaml")  # 60 subscribers
    subs = load_subscribers(folder / "subscribers.yaml").subscribers
    greylisted = SendError("SMTP recipient refused: 451 4.7.1 Greylisted, try again later")
    transport = SlowRecorder({s.email: [greylisted] * 3 for s in subs[::4]})
    options = {"retry_backoff": 0.3, "connections": 8, "build_process": "off"}
    made, listed = pipeline(folder, renderer, transport, sleep=time.sleep, **options)
    with made.store:
        report = made.run(listed, NOW)
    assert not [e for e in report.errors if "in a row" in e]
    assert STOPPED not in report.skipped
    assert report.statuses["sent"] == len(transport.sent) > 40


def test_the_breaker_counts_each_address_once_and_distinct_ones_in_a_row() -> None:
    breaker = Breaker()
    assert not any(breaker.tally(False, "451", ["ada@x.org"]) for _ in range(10))
    assert [breaker.tally(False, "451", [f"u{i}@x.org"]) for i in range(4)] == [False, False, False, True]


def test_a_digest_waiting_out_its_backoff_is_reported_once(folder: Path, renderer: Renderer) -> None:
    """Refused for now in the first run, refused again by the next (its backoff over): that report listed
    the subscriber twice ('failed', then 'a refused digest waits'), for 3 subscribers 4 entries."""
    busy = SendError("SMTP message refused: 451 4.3.0 try later")
    transport = Recorder({READERS[0]: [busy] * 6})
    made, subs = pipeline(folder, renderer, transport, retry_backoff=0.0)
    with made.store:
        made.run(subs, NOW)
        again = made.run(subs, NOW + timedelta(minutes=10))
        waiting = made.run(subs, NOW + timedelta(minutes=11))  # its backoff is not over
    assert sorted(d.subscriber for d in again.digests) == sorted(READERS)
    assert {d.subscriber: d.status for d in again.digests}[READERS[0]] == "failed"
    assert {d.subscriber: d.reason for d in waiting.digests}[READERS[0]] == BACKING_OFF
    assert sorted(d.subscriber for d in waiting.digests) == sorted(READERS)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_stop_after_failures_in_a_row_holds_for_the_whole_run(
    tmp_path: Path, renderer: Renderer, workers: int
) -> None:
    """The queued digests' phase and the new digests' phase (or each shard) counted their own five: a
    server that refused everything cost ten digests a run, a down one two connection attempts and two
    backoffs."""
    folder = make_folder(tmp_path)
    write_subscribers(folder / "subscribers.yaml")
    subs = load_subscribers(folder / "subscribers.yaml").subscribers
    busy = SendError("SMTP sender refused: 452 4.3.1 Insufficient system storage")
    transport = Recorder({s.email: [busy] * 9 for s in subs})
    options = {"workers": workers, "build_process": "off"}
    made, listed = pipeline(folder, renderer, transport, retry_backoff=0.0, **options)
    with made.store:
        made.run(listed, NOW)  # five refused, the rest queued
        shutil.copy(SEEDS / seed_names()[1], folder / "dumps")  # and new papers for the next run
        later = made.run(listed, NOW + timedelta(hours=1))
    assert later.statuses["failed"] == FAILED_IN_A_ROW and not later.ok
    assert [e for e in later.errors if "requests in a row failed" in e] == later.errors[-1:]
    assert sorted(d.subscriber for d in later.digests) == sorted(s.email for s in subs)  # each once


def test_a_digest_that_finds_the_transport_down_is_due_with_the_rest(
    folder: Path, renderer: Renderer
) -> None:
    """Its outcome says it goes out next run; it had five minutes' backoff, so the next run skipped it."""
    down = SendError("cannot connect to SMTP server 127.0.0.1:25: refused", transport_down=True)
    made, subs = pipeline(folder, renderer, Recorder({READERS[0]: [down]}))
    with made.store:
        made.run(subs, NOW)
        waits = {d.email: d.not_before for d in made.store.deliveries(["retry"], with_items=False)}
    assert waits == {READERS[0]: NOW}


def test_a_database_error_mid_run_stops_it_with_what_it_did_reported(
    folder: Path, renderer: Renderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run used to end with the database error alone: the digests it had sent went unreported. Now
    the report keeps them and says why it stopped, and the next run sends what it had not reached."""

    def full_database(*args: object, **kwargs: object) -> None:
        raise StoreError("database error while marking a digest failed: database or disk is full")

    second = SendError("SMTP 451 4.3.0 try again later", permanent=False)
    transport = Recorder({READERS[1]: [second]})
    made, subs = pipeline(folder, renderer, transport)
    with monkeypatch.context() as disk, made.store:
        disk.setattr(Store, "mark_failed", full_database)
        report = made.run(subs, NOW)
    assert not report.ok and report.halted
    assert report.errors == [
        "database error while marking a digest failed: database or disk is full; "
        "the run stopped here: what it had not sent waits for the next run"
    ]
    reported = {d.subscriber: d.status for d in report.digests}
    assert transport.sent and reported == {address: "sent" for address in transport.sent}
    report, sent, left = next_run(folder, renderer)
    assert sent == [READERS[2]]  # the one it had not reached
    # the refused one could not be recorded: left 'sending', as after a crash, so 'unknown' now
    assert left == {READERS[0]: "sent", READERS[1]: "unknown", READERS[2]: "sent"}
    assert len(report.recovered_unknown) == 1


def test_a_send_the_database_could_not_record_is_held_and_recorded_sent_not_unknown(
    folder: Path, renderer: Renderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database gone right after the server accepted a message (a PostgreSQL restart): the digest
    stayed 'sending', the next run called it 'unknown' (it had arrived), and `retry --unknown`, as that
    run's warning said, would send it twice. Now the state folder holds it, and the next run records it."""
    transport = Recorder()
    made, subs = pipeline(folder, renderer, transport)
    real = DeliverySession._tx

    @contextlib.contextmanager
    def gone_after_the_first_send(self: DeliverySession, action: str) -> Iterator[Any]:
        if transport.sent:
            raise StoreError(f"database error while {action}: the database system is shutting down")
        with real(self, action) as conn:
            yield conn

    with monkeypatch.context() as down, made.store:
        down.setattr(DeliverySession, "_tx", gone_after_the_first_send)
        report = made.run(subs, NOW)
    assert not report.ok and transport.sent == [READERS[0]]
    assert committed(folder)[READERS[0]] == SENDING
    assert '"kind": "sent"' in (folder / "state" / HELD_FILE).read_text()
    report, sent, left = next_run(folder, renderer)
    assert left[READERS[0]] == "sent" and report.recovered_unknown == []
    assert READERS[0] not in sent and sorted(sent) == sorted(READERS[1:])  # the others, once
    assert not (folder / "state" / HELD_FILE).read_text()


def test_a_refusal_for_now_backs_off_longer_each_run_and_is_given_up_after_days(
    folder: Path, renderer: Renderer
) -> None:
    """It was tried again 5 minutes later, forever: under the daemon, three refused requests every five
    minutes to the provider for a mailbox full for weeks, and a digest that never ended."""
    busy = SendError("SMTP recipient refused: 452 4.2.2 mailbox full", mailbox=True)
    transport = Recorder({READERS[0]: [busy] * 1000})
    made, subs = pipeline(folder, renderer, transport, retry_backoff=0.0)
    waits, at = [], NOW
    with made.store:
        for _ in range(4):
            made.run(subs, at)
            (record,) = made.store.deliveries(email=READERS[0], with_items=False)
            assert record.status == "retry" and record.not_before is not None
            waits.append(record.not_before - at)
            at = record.not_before
        made.run(subs, NOW + GIVE_UP_AFTER)
        (record,) = made.store.deliveries(email=READERS[0], with_items=False)
    assert waits == [timedelta(minutes=m) for m in (5, 10, 20, 40)]
    assert record.status == "failed" and "given up" in (record.last_error or "")


def test_status_says_when_a_refused_digest_is_tried_again(folder: Path, renderer: Renderer) -> None:
    """It showed the digest as due at the next send time (each-dump: 'when a dump brings new papers')
    and its row in 'Needs attention' as 'retry', with no time."""
    busy = SendError("SMTP recipient refused: 452 4.2.2 mailbox full", mailbox=True)
    made, subs = pipeline(folder, renderer, Recorder({READERS[0]: [busy] * 10}), retry_backoff=0.0)
    with made.store:
        made.run(subs, NOW)
        data = status_report(made.store, subs, NOW + timedelta(minutes=1), None)
    retry_at = (NOW + timedelta(minutes=5)).isoformat()
    due = {r["subscriber"]: r["next_due_at"] for r in data["subscribers"]}
    assert due[READERS[0]] == retry_at
    (row,) = [a for a in data["attention"] if a["subscriber"] == READERS[0]]
    assert row["next_try"] == retry_at
    printed = io.StringIO()
    print_status(data, Console(file=printed, width=200))
    assert (
        f"mailbox full; tried again from {NOW + timedelta(minutes=5):%Y-%m-%d %H:%M} UTC"
        in printed.getvalue()
    )


def test_an_address_refused_for_good_gets_no_new_digest_until_retry(folder: Path, renderer: Renderer) -> None:
    """A dead address got a new digest every day, refused every day: every run exited 1, and status
    listed one more failure a day."""
    gone = SendError(
        "SMTP recipient refused: 550 5.1.1 no such user", permanent=True, mailbox=True, gone=True
    )
    transport = Recorder({READERS[0]: [gone]})
    made, subs = pipeline(folder, renderer, transport)
    with made.store:
        first = made.run(subs, NOW)
        shutil.copy(SEEDS / seed_names()[1], folder / "dumps")
        second = made.run(subs, NOW + timedelta(days=1))
        rows = status_report(made.store, subs, NOW + timedelta(days=1), None)["subscribers"]
        assert [r["subscriber"] for r in rows if r["bounced_at"]] == [READERS[0]]  # status says why
        assert made.store.requeue(NOW + timedelta(days=1, hours=1), statuses=["failed"])  # `newsletter retry`
        third = made.run(subs, NOW + timedelta(days=1, hours=2))
    assert {d.subscriber: d.status for d in first.digests}[READERS[0]] == "failed" and not first.ok
    assert {d.subscriber: d.reason for d in second.digests}[READERS[0]] == BOUNCED and second.ok
    assert transport.sent.count(READERS[0]) == 2  # the refused digest, then the new one
    assert {d.subscriber: d.status for d in third.digests}[READERS[0]] == "sent" and third.ok


def test_retry_email_resends_that_subscriber_s_refused_digest_only(folder: Path, renderer: Renderer) -> None:
    """`retry` resent every failed digest of the list to release one held address."""
    gone = SendError(
        "SMTP recipient refused: 550 5.1.1 no such user", permanent=True, mailbox=True, gone=True
    )
    made, subs = pipeline(folder, renderer, Recorder({READERS[0]: [gone], READERS[1]: [gone]}))
    with made.store:
        made.run(subs, NOW)
    env = {
        "NEWSLETTER_HOME": str(folder / "state"),
        "NEWSLETTER_SUBSCRIBERS": str(folder / "subscribers.yaml"),
        "NEWSLETTER_DUMPS": str(folder / "dumps"),
        "NEWSLETTER_FROM": f"Papers <digest@{DOMAIN}>",
        "NEWSLETTER_RANKER": "lexical",
    }
    typo = cli(env, "retry", READERS[0], "x" + READERS[1], check=False)  # released nothing, said nothing
    assert typo.returncode == 1 and f"no subscriber with email 'x{READERS[1]}'" in typo.stderr
    assert committed(folder) == {READERS[0]: "failed", READERS[1]: "failed", READERS[2]: "sent"}
    done = cli(env, "retry", READERS[0].upper(), "--now", (NOW + timedelta(hours=1)).isoformat())
    assert "1 failed delivery requeued; sending their queued digests" in done.stdout  # not everyone's
    assert committed(folder) == {READERS[0]: "sent", READERS[1]: "failed", READERS[2]: "sent"}
    assert [p.name.split("_")[1] for p in (folder / "state" / "outbox").glob("*.eml")] == [READERS[0]]
