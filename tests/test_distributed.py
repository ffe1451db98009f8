"""Distributed delivery through procrastinate on a real PostgreSQL: `newsletter worker` processes, each
with its own empty NEWSLETTER_HOME, send what a `newsletter run` (NEWSLETTER_EXECUTOR=procrastinate)
hands out; a worker killed with -9 mid-run loses nothing and sends nothing twice."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import yaml

from newsletter.store import SENT, UNKNOWN, Store

from .helpers import add_dumps, cli, make_env, outbox, seed_names
from .test_crash import DOMAIN, TOPICS, journal_length, read_journal, smtp_server

pytest.importorskip("procrastinate")


def _worker_env(tmp_path: Path, name: str, url: str, extra: dict[str, str]) -> dict[str, str]:
    home = tmp_path / name
    home.mkdir()
    return {
        "NEWSLETTER_HOME": str(home),  # empty: a worker shares nothing local with the others
        "NEWSLETTER_DATABASE_URL": url,
        "NEWSLETTER_RANKER": "lexical",
        "NEWSLETTER_FROM": f"Papers <digest@{DOMAIN}>",
        **extra,
    }


@contextmanager
def workers(envs: list[dict[str, str]], logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`newsletter worker` processes, stopped (SIGTERM) at the end."""
    procs = []
    with ExitStack() as stack:
        for i, env in enumerate(envs):
            out = stack.enter_context((logs / f"worker{i}.log").open("wb"))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "newsletter", "worker"],
                    env={**os.environ, **env},
                    stdout=out,
                    stderr=out,
                )
            )
        try:
            yield procs
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _statuses(url: str) -> Counter[str]:
    with Store(url) as store:
        return Counter(d.status for d in store.deliveries(with_items=False))


def test_a_run_hands_its_shards_to_workers_that_send_them(tmp_path: Path, pg_url: str) -> None:
    env = make_env(tmp_path) | {
        "NEWSLETTER_DATABASE_URL": pg_url,
        "NEWSLETTER_EXECUTOR": "procrastinate",
        "NEWSLETTER_WORKERS": "2",
    }
    add_dumps(env, seed_names()[0])
    worker_env = _worker_env(tmp_path, "worker-home", pg_url, {})
    with workers([worker_env], tmp_path):
        report = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T08:00:00Z").stdout)
        again = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T09:00:00Z").stdout)

    sent = sorted(d["subscriber"] for d in report["digests"] if d["status"] == "sent")
    assert sent == ["diff@example.org", "ssm@example.org"]
    assert all(d["items"] for d in report["digests"] if d["status"] == "sent")
    assert sorted(str(m["To"]).split("<")[-1].rstrip(">") for m in outbox(worker_env)) == sent
    assert outbox(env) == []  # the coordinator sent nothing itself
    assert [d for d in again["digests"] if d["status"] == "sent"] == []
    assert _statuses(pg_url) == {SENT: 2}


def test_a_worker_needs_postgresql(tmp_path: Path) -> None:
    env = make_env(tmp_path) | {"NEWSLETTER_EXECUTOR": "procrastinate"}
    add_dumps(env, seed_names()[0])
    result = cli(env, "run", check=False)
    assert result.returncode == 1
    assert "needs a PostgreSQL database (NEWSLETTER_DATABASE_URL)" in result.stderr
    assert "Traceback" not in result.stderr


SUBSCRIBERS = 2000
NOW = "2026-03-11T08:00:00Z"


def _write_subscribers(path: Path) -> None:
    subs = [
        {"email": f"r{i:04d}@example.org", "interests": list(TOPICS[i % len(TOPICS)])}
        for i in range(SUBSCRIBERS)
    ]
    data = {"defaults": {"cadence": "each-dump", "max_items": 5}, "subscribers": subs}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


@pytest.mark.slow
def test_three_workers_one_killed_mid_run_send_every_digest_once(tmp_path: Path, pg_url: str) -> None:
    journal = tmp_path / "journal.jsonl"
    rng = random.Random()
    with smtp_server(journal, delay=0.02) as port:
        smtp = {
            "NEWSLETTER_TRANSPORT": "smtp",
            "NEWSLETTER_SMTP_HOST": "127.0.0.1",
            "NEWSLETTER_SMTP_PORT": str(port),
            # one connection per worker: a kill leaves at most one unknown (auto would open up to 8
            # against a server that takes 20 ms, and a kill could leave one per connection)
            "NEWSLETTER_CONNECTIONS": "1",
        }
        env = (
            make_env(tmp_path)
            | smtp
            | {
                "NEWSLETTER_DATABASE_URL": pg_url,
                "NEWSLETTER_EXECUTOR": "procrastinate",
                "NEWSLETTER_WORKERS": "6",  # shards
            }
        )
        _write_subscribers(Path(env["NEWSLETTER_SUBSCRIBERS"]))
        add_dumps(env, seed_names()[0])
        homes = [_worker_env(tmp_path, f"worker{i}", pg_url, smtp) for i in range(3)]
        with workers(homes, tmp_path) as procs:
            with (tmp_path / "run.log").open("wb") as run_log:
                run = subprocess.Popen(
                    [sys.executable, "-m", "newsletter", "run", "--now", NOW],
                    env={**os.environ, **env},
                    stdout=subprocess.DEVNULL,
                    stderr=run_log,
                )
            kill_after = rng.randint(100, 1200)  # messages received before the kill: a random moment
            deadline = time.monotonic() + 300
            while journal_length(journal) < kill_after and time.monotonic() < deadline and run.poll() is None:
                time.sleep(0.01)
            victim = rng.choice(procs)
            victim.send_signal(signal.SIGKILL)
            assert run.wait(timeout=600) in (0, 1), (tmp_path / "run.log").read_text()
            print((tmp_path / "run.log").read_text(), f"killed after {kill_after} messages", sep="\n")
            cli(env, "run", "--now", "2026-03-11T09:00:00Z", check=False)  # what the killed worker planned
            third = json.loads(cli(env, "run", "--json", "--now", "2026-03-11T10:00:00Z").stdout)

    received = read_journal(journal)
    recipients = Counter(r.to for r in received)
    assert max(recipients.values()) == 1  # 0 recipients twice
    assert len({r.message_id for r in received}) == len(received)
    with Store(pg_url) as store:
        log = {d.email: (d.status, d.message_id) for d in store.deliveries(with_items=False)}
    statuses = Counter(status for status, _ in log.values())
    print(f"digests: {dict(statuses)}, received: {len(received)}")
    assert set(statuses) <= {SENT, UNKNOWN} and statuses[UNKNOWN] <= 1  # at most one unknown per kill
    sent = {email for email, (status, _) in log.items() if status == SENT}
    assert sent <= set(recipients)  # every digest recorded sent was received, with its Message-ID
    assert all(log[r.to][1] == r.message_id for r in received)
    assert set(recipients) - sent <= {e for e, (s, _) in log.items() if s == UNKNOWN}
    assert len(log) > SUBSCRIBERS // 2  # most readers had a digest: the run really was mid-way at the kill
    assert [d for d in third["digests"] if d["status"] == "sent"] == []
