"""The daemon as a real subprocess: it picks up a new dump, delivers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from newsletter.config import load_settings
from newsletter.schedule import SubscriberFile

from .helpers import add_dumps, cli, outbox, seed_names


def wait_for(predicate, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_daemon_delivers_a_dropped_dump_and_exits_cleanly_on_sigterm(env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "daemon", "--tick", "1"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: Path(env["NEWSLETTER_HOME"], "last-run.json").exists())
        assert outbox(env) == []  # nothing in the folder yet
        add_dumps(env, seed_names()[0])
        assert wait_for(lambda: len(outbox(env)) >= 2), "no digest delivered"
        # A second instance on the same state folder is refused.
        second = cli(env, "run", check=False)
        assert second.returncode == 1 and "another run" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "SIGTERM" in err
    assert "tick:" in err  # one line per job run, without --verbose
    status = json.loads(cli(env, "status", "--json").stdout)
    assert status["counts"] == {"sent": len(outbox(env))}
    assert status["last_run"]["summary"]


def test_invalid_subscribers_edit_keeps_the_last_valid_list(env: dict[str, str]) -> None:
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    watcher = SubscriberFile(path)
    before = watcher.get()
    path.write_text("subscribers: [oops\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert watcher.get() is before
    path.write_text("subscribers:\n  - {email: z@example.org, interests: [x]}\n")
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert [s.email for s in watcher.get().subscribers] == ["z@example.org"]


def test_status_shows_next_due_per_subscriber(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    data = json.loads(cli(env, "status", "--json", "--now", "2026-03-11T09:00:00Z").stdout)
    due = {row["subscriber"]: row["next_due_at"] for row in data["subscribers"]}
    assert due["ssm@example.org"] == "2026-03-12T00:00:00+00:00"
    assert due["diff@example.org"] is None  # each-dump: the words are in next_due
    assert data["subscribers"][1]["next_due"] == "when a dump brings new papers"
    assert load_settings(home=Path(env["NEWSLETTER_HOME"])).last_run_file.exists()


def test_a_second_signal_does_not_shut_the_scheduler_down_twice(env: dict[str, str]) -> None:
    """A second SIGTERM raised SchedulerNotRunningError, and the message in flight became 'unknown'."""
    from newsletter.schedule import Daemon

    settings = load_settings(
        home=env["NEWSLETTER_HOME"], subscribers=env["NEWSLETTER_SUBSCRIBERS"], dumps=env["NEWSLETTER_DUMPS"]
    )
    daemon = Daemon(settings)
    calls: list[bool] = []
    daemon.scheduler.shutdown = lambda wait=True: calls.append(wait)  # type: ignore[method-assign]
    daemon._on_signal(signal.SIGTERM, None)
    daemon._on_signal(signal.SIGTERM, None)
    assert daemon.stop.is_set() and calls == [True]


class _RateLimited(BaseHTTPRequestHandler):
    """Every request: 429 with Retry-After 100 s (a listing API that is rate-limiting)."""

    def do_GET(self) -> None:
        self.send_response(429)
        self.send_header("Retry-After", "100")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_fetch_waiting_on_a_rate_limit_holds_back_no_tick_and_no_sigterm(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The fetch waited out Retry-After (minutes) holding the daemon's lock: no digest went out
    meanwhile, and SIGTERM waited for the wait to end."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RateLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    source = {"kind": "hf-daily", "base_url": f"http://127.0.0.1:{server.server_port}", "max_retries": 2}
    log = tmp_path / "daemon.log"
    try:
        with log.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "newsletter", "daemon", "--tick", "1"],
                env={**os.environ, **env, "NEWSLETTER_SOURCES": json.dumps([source])},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            assert wait_for(lambda: "retry 1 of 2 in 100.0 s" in log.read_text()), log.read_text()
            add_dumps(env, seed_names()[0])
            assert wait_for(lambda: len(outbox(env)) >= 2), "no tick while the fetch waits"
        finally:
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            proc.wait(timeout=60)
            took = time.monotonic() - signalled
    finally:
        server.shutdown()
        server.server_close()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert took < 10, f"{took:.1f} s to stop"
    assert "stopped by a signal while waiting to retry" in text
