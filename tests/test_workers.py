"""`run --workers N`: shards sent by forked processes, each digest once, run-wide limits shared."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from newsletter.executors.shards import split

from .helpers import add_dumps, cli, make_env, outbox, seed_names
from .test_crash import crash_env, journal_length, read_journal, smtp_server, start_run

INTERESTS = ["quantization", "reinforcement learning", "large language models"]
READERS = [f"reader{i}@example.org" for i in range(7)]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = make_env(tmp_path)
    lines = "".join(f"  - {{email: {r}, interests: ['{INTERESTS[i % 3]}']}}\n" for i, r in enumerate(READERS))
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text("subscribers:\n" + lines)
    add_dumps(env, seed_names()[0])
    return {**env, **extra}


def _run(env: dict[str, str], now: str, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cli(env, "run", "--json", "--now", now, *args).stdout)
    return result


def _recipients(env: dict[str, str]) -> list[str]:
    return sorted(str(message["To"]) for message in outbox(env))


def test_two_workers_send_every_digest_once(tmp_path: Path) -> None:
    env = _env(tmp_path)
    report = _run(env, "2026-03-11T08:00:00Z", "--workers", "2")
    assert sorted(d["subscriber"] for d in report["digests"] if d["status"] == "sent") == sorted(READERS)
    assert _recipients(env) == sorted(READERS)
    again = _run(env, "2026-03-12T08:00:00Z", "--workers", "2")
    assert [d for d in again["digests"] if d["status"] == "sent"] == []


def test_the_run_cap_holds_for_all_workers_together(tmp_path: Path) -> None:
    env = _env(tmp_path, NEWSLETTER_MAX_PER_RUN="3")
    first = _run(env, "2026-03-11T08:00:00Z", "--workers", "2")
    assert sum(d["status"] == "sent" for d in first["digests"]) == 3
    assert len(_recipients(env)) == 3
    second = _run(env, "2026-03-11T09:00:00Z", "--workers", "2")
    assert sum(d["status"] == "sent" for d in second["digests"]) == 3
    third = _run(env, "2026-03-11T10:00:00Z", "--workers", "2")
    assert sum(d["status"] == "sent" for d in third["digests"]) == 1
    assert _recipients(env) == sorted(READERS)


@pytest.mark.parametrize(
    ("cap", "workers", "shares"), [(3, 2, [2, 1]), (1, 3, [1, 0, 0]), (None, 2, [None, None])]
)
def test_each_worker_gets_its_share_of_the_cap_and_of_the_rate(
    cap: int | None, workers: int, shares: list[int | None]
) -> None:
    parts = split([], workers, datetime.now(UTC), max_per_run=cap, send_rate=6.0)
    assert [p.max_per_run for p in parts] == shares
    assert [p.send_rate for p in parts] == [6.0 / workers] * workers


def test_a_killed_worker_is_reported_and_the_others_finish_and_record(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    with smtp_server(journal, delay=0.3) as port:
        env = crash_env(tmp_path, port) | {"NEWSLETTER_SEND_RATE": "50", "NEWSLETTER_WORKERS": "2"}
        add_dumps(env, seed_names()[0])
        log = tmp_path / "run.log"
        run = start_run(env, "2026-03-11T08:00:00Z", log)
        deadline = time.monotonic() + 60
        while journal_length(journal) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        worker = min(_children(run.pid))  # the first worker forked
        os.kill(worker, signal.SIGKILL)
        assert run.wait(timeout=120) == 1
        stderr = log.read_text()
        assert "newsletter-worker-0" in stderr and "Traceback" not in stderr
        # The next run: the killed worker's in-flight digest is 'unknown' (never resent), the rest go out once.
        cli(env, "run", "--now", "2026-03-11T08:30:00Z", check=False)
        received = [r.to for r in read_journal(journal)]
        assert len(received) == len(set(received)) > 2


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_a_stop_reaches_every_worker_at_once_not_each_after_the_one_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With 4 workers, SIGTERM reached the next only once the one before had finished: six more
    digests went out over 3.5 s after the signal."""
    import multiprocessing
    import threading

    from newsletter.executors import parallel

    receive, send = multiprocessing.Pipe(duplex=False)

    class Busy:  # a worker process that is still sending; the first dies at its third check
        def __init__(self, pid: int) -> None:
            self.pid, self.checks = pid, 0

        def is_alive(self) -> bool:
            self.checks += 1
            if self.pid == 101 and self.checks >= 3:
                send.close()  # died without a report
                return False
            return True

    killed: list[int] = []
    monkeypatch.setattr(parallel.os, "kill", lambda pid, sig: killed.append(pid))
    workers = [Busy(pid) for pid in (101, 102, 103, 104)]
    stop = threading.Event()
    stop.set()
    assert parallel._result_of(workers[0], receive, stop.is_set, workers) is None  # type: ignore[arg-type]
    assert killed == [101, 102, 103, 104]
