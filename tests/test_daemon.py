"""The daemon as a real subprocess: it picks up a new dump, delivers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.daemon.schedule import SubscriberFile
from newsletter.ops.status import IN_FLIGHT
from newsletter.report import DigestOutcome, RunReport
from newsletter.store import PENDING, SENDING, Store
from newsletter.store.schema import digests

from .conftest import SEEDS
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
        proc.send_signal(signal.SIGHUP)  # its default ended the daemon at once, mid-message, silently
        time.sleep(1.5)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "SIGTERM" in err and "received SIGHUP: nothing to reload" in err
    assert "tick:" in err  # one line per job run, without --verbose
    assert "Running job" not in err and "executed successfully" not in err  # APScheduler's, twice a tick
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


def test_status_lists_an_interrupted_send_and_a_queued_digest_is_due_now(env: dict[str, str]) -> None:
    """After a kill -9, a digest left 'sending' only showed as a count, and a subscriber whose digest
    was planned but not sent showed "when a dump brings new papers" though the next run sends it."""
    add_dumps(env, *seed_names()[:2])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:
        (ssm,) = store.deliveries(email="ssm@example.org", with_items=False)
        (diff,) = store.deliveries(email="diff@example.org", with_items=False)
        with store._engine.begin() as conn:  # as a kill -9 leaves them: one in flight, one not reached
            conn.execute(digests.update().where(digests.c.id == ssm.digest_id).values(status=SENDING))
            conn.execute(digests.update().where(digests.c.id == diff.digest_id).values(status=PENDING))
    data = json.loads(cli(env, "status", "--json", "--now", "2026-03-11T09:00:00Z").stdout)
    attention = {a["subscriber"]: (a["status"], a["error"]) for a in data["attention"]}
    assert attention == {"ssm@example.org": (SENDING, IN_FLIGHT)}
    due = {row["subscriber"]: row["next_due"] for row in data["subscribers"]}
    assert due["diff@example.org"] == "now"


def test_signals_shut_the_scheduler_down_once_from_a_thread_of_its_own(env: dict[str, str]) -> None:
    """A second SIGTERM raised SchedulerNotRunningError, and the message in flight became 'unknown'. The
    handler then shut the scheduler down itself, and could interrupt the main thread inside the
    executor's lock that shutting down takes (a deadlock); a signal before the scheduler started raised."""
    from apscheduler.schedulers import SchedulerNotRunningError

    from newsletter.daemon.schedule import Daemon

    settings = load_settings(
        home=env["NEWSLETTER_HOME"], subscribers=env["NEWSLETTER_SUBSCRIBERS"], dumps=env["NEWSLETTER_DUMPS"]
    )
    daemon = Daemon(settings)
    calls: list[tuple[bool, str]] = []
    running = threading.Event()

    def shutdown(wait: bool = True) -> None:
        if not running.is_set():
            raise SchedulerNotRunningError
        calls.append((wait, threading.current_thread().name))

    daemon.scheduler.shutdown = shutdown  # type: ignore[method-assign]
    watcher = threading.Thread(target=daemon._watch, name="watcher")
    watcher.start()
    daemon._on_signal(signal.SIGTERM, None)  # before the scheduler started
    daemon._on_signal(signal.SIGTERM, None)
    time.sleep(0.2)
    assert daemon.stop.is_set() and calls == []
    running.set()
    watcher.join(timeout=10)
    assert calls == [(True, "watcher")]


def test_a_tick_comes_at_once_when_the_wall_clock_steps_back(env: dict[str, str]) -> None:
    """APScheduler times the next tick by the wall clock: NTP setting it back 3 h stopped ticks for 3 h.
    (An interval trigger of our own did not help: the scheduler asks a trigger only once its job is due.)"""
    from apscheduler.triggers.interval import IntervalTrigger

    from newsletter.daemon.cron import fetch_schedule
    from newsletter.daemon.schedule import Daemon

    settings = load_settings(
        home=env["NEWSLETTER_HOME"], subscribers=env["NEWSLETTER_SUBSCRIBERS"], dumps=env["NEWSLETTER_DUMPS"]
    )
    daemon = Daemon(settings)
    ticked = threading.Event()
    in_three_hours = datetime.now(UTC) + timedelta(hours=3)  # as after the clock went back 3 h
    daemon.scheduler.add_job(
        ticked.set, IntervalTrigger(seconds=300), id="tick", next_run_time=in_three_hours
    )
    hourly = fetch_schedule("0 * * * *")
    daemon.scheduler.add_job(lambda: None, hourly, id="fetch", next_run_time=in_three_hours)
    thread = threading.Thread(target=daemon.scheduler.start, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        assert not ticked.is_set()
        assert daemon._follow_clock(10_800.0, 0.0) == 0.0  # what the watcher sees: the clock went back 3 h
        assert ticked.wait(10), "no tick"
        next_fetch = daemon.scheduler.get_job("fetch").next_run_time
        assert next_fetch <= datetime.now(UTC) + timedelta(hours=1)  # fetches stopped for the 3 h too
        assert daemon._follow_clock(0.0, 0.5) == 0.5  # a clock running on moves nothing
    finally:
        daemon.scheduler.shutdown(wait=False)
        thread.join(timeout=10)


def test_a_tick_due_while_the_last_still_sends_is_one_line_of_information(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """APScheduler warned at every tick of a long run: 'Execution of job ... skipped: maximum number...'."""
    from newsletter.daemon.schedule import Daemon

    settings = load_settings(
        home=env["NEWSLETTER_HOME"], subscribers=env["NEWSLETTER_SUBSCRIBERS"], dumps=env["NEWSLETTER_DUMPS"]
    )
    Daemon(settings)
    skipped = 'Execution of job "%s" skipped: maximum number of running instances reached (%d)'
    with caplog.at_level(logging.INFO):
        logging.getLogger("apscheduler.scheduler").warning(skipped, "Daemon.tick (trigger: interval...)", 1)
        logging.getLogger("apscheduler.scheduler").warning(skipped, "Daemon.fetch (trigger: cron...)", 1)
    assert [(r.levelname, r.getMessage()[:30]) for r in caplog.records] == [
        ("INFO", "tick skipped: the last one is "),
        ("WARNING", 'Execution of job "Daemon.fetch'),  # not a tick
    ]


class _RateLimited(BaseHTTPRequestHandler):
    """Every request: 429 with Retry-After 100 s (a listing API that is rate-limiting)."""

    def do_GET(self) -> None:
        self.send_response(429)
        self.send_header("Retry-After", "100")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def daemon_against(
    handler: type[BaseHTTPRequestHandler],
    source: dict[str, object],
    env: dict[str, str],
    log: Path,
    meanwhile: Callable[[], None],
) -> float:
    """Run the daemon fetching from ``handler`` on loopback, do ``meanwhile``, SIGTERM it: the seconds
    it took to exit (0 asserted as its status)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    source = {**source, "base_url": f"http://127.0.0.1:{server.server_port}"}
    try:
        with log.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "newsletter", "daemon", "--tick", "1"],
                env={**os.environ, **env, "NEWSLETTER_SOURCES": json.dumps([source])},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            meanwhile()
        finally:
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            proc.wait(timeout=100)
            took = time.monotonic() - signalled
    finally:
        _Stalled.release.set()
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, log.read_text()
    return took


def test_a_fetch_waiting_on_a_rate_limit_holds_back_no_tick_and_no_sigterm(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The fetch waited out Retry-After (minutes) holding the daemon's lock: no digest went out
    meanwhile, and SIGTERM waited for the wait to end."""
    log = tmp_path / "daemon.log"

    def tick_while_waiting() -> None:
        assert wait_for(lambda: "retry 1 of 2 in 100.0 s" in log.read_text()), log.read_text()
        add_dumps(env, seed_names()[0])
        assert wait_for(lambda: len(outbox(env)) >= 2), "no tick while the fetch waits"

    took = daemon_against(_RateLimited, {"kind": "hf-daily", "max_retries": 2}, env, log, tick_while_waiting)
    assert took < 10, f"{took:.1f} s to stop"
    assert "stopped by a signal while waiting to retry; the next run fetches again" in log.read_text()


class _Stalled(BaseHTTPRequestHandler):
    """Every request: no reply until the test ends (a listing API that hangs)."""

    asked = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:
        type(self).asked.set()
        type(self).release.wait(120)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_sigterm_during_a_request_in_flight_stops_the_daemon_at_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM waited for a request in flight to the source: up to its timeout (here 120 s). The
    request is now given up at once, and nothing from it is written."""
    log = tmp_path / "daemon.log"

    def until_asked() -> None:
        assert _Stalled.asked.wait(60), log.read_text()

    took = daemon_against(_Stalled, {"kind": "hf-daily", "timeout": 120}, env, log, until_asked)
    assert took < 10, f"{took:.1f} s to stop"
    assert "stopped by a signal before the reply came" in log.read_text()
    assert not list(Path(env["NEWSLETTER_DUMPS"]).glob("hf-daily-*"))


def test_a_run_stops_at_sigterm_while_a_fetch_waits_to_retry(env: dict[str, str], tmp_path: Path) -> None:
    """`newsletter run` built its sources without the stop event: a rate-limited fetch slept out every
    retry (minutes) after SIGTERM, and systemd would kill it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RateLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    source = {"kind": "hf-daily", "max_retries": 2, "base_url": f"http://127.0.0.1:{server.server_port}"}
    log = tmp_path / "run.log"
    try:
        with log.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "newsletter", "--verbose", "run"],
                env={**os.environ, **env, "NEWSLETTER_SOURCES": json.dumps([source])},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        assert wait_for(lambda: "retry 1 of 2 in 100.0 s" in log.read_text()), log.read_text()
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        proc.wait(timeout=100)
        took = time.monotonic() - signalled
    finally:
        server.shutdown()
        server.server_close()
    assert took < 10, f"{took:.1f} s to stop"
    assert "stopped by a signal while waiting to retry; the next run fetches again" in log.read_text()


def test_a_job_that_comes_late_still_runs_once(env: dict[str, str]) -> None:
    """APScheduler drops a job more than its grace (1 s by default) late: after a suspend or a stopped
    process the hourly fetch waited for the next hour."""
    from newsletter.daemon.schedule import Daemon

    settings = load_settings(
        home=env["NEWSLETTER_HOME"], subscribers=env["NEWSLETTER_SUBSCRIBERS"], dumps=env["NEWSLETTER_DUMPS"]
    )
    daemon = Daemon(settings)
    ran = threading.Event()
    late = datetime.now(UTC) - timedelta(seconds=30)
    # an interval job stays scheduled after it runs: no removal racing the shutdown below
    daemon.scheduler.add_job(ran.set, "interval", hours=1, next_run_time=late)
    thread = threading.Thread(target=daemon.scheduler.start, daemon=True)
    thread.start()
    try:
        assert ran.wait(10), "the late job was dropped"
    finally:
        daemon.scheduler.shutdown(wait=False)
        thread.join(timeout=10)


def test_an_each_dump_subscriber_with_a_dump_to_weigh_is_due_now(env: dict[str, str]) -> None:
    """It showed "when a dump brings new papers" while an ingested dump waited for the next run."""
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    add_dumps(env, seed_names()[1])
    cli(env, "run", "--dry-run", "--now", "2026-03-11T09:00:00Z")  # ingests, sends nothing
    data = json.loads(cli(env, "status", "--json", "--now", "2026-03-11T09:00:00Z").stdout)
    due = {row["subscriber"]: row["next_due"] for row in data["subscribers"]}
    assert due["diff@example.org"] == "now"
    cli(env, "run", "--now", "2026-03-11T10:00:00Z")  # it weighs that dump
    relisted = Path(env["NEWSLETTER_DUMPS"]) / "relisted.txt"  # the same papers again: nothing to weigh
    relisted.write_text("Mar 12\n\n" + (SEEDS / seed_names()[1]).read_text())
    cli(env, "run", "--dry-run", "--now", "2026-03-11T10:30:00Z")  # ingests it
    data = json.loads(cli(env, "status", "--json", "--now", "2026-03-11T10:30:00Z").stdout)
    due = {row["subscriber"]: row["next_due"] for row in data["subscribers"]}
    assert due["diff@example.org"] == "when a dump brings new papers"


class _Broken(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_source_the_daemon_cannot_fetch_is_in_the_report_status_shows(
    env: dict[str, str], tmp_path: Path
) -> None:
    """It was only in the daemon's log: `status` and last-run.json said nothing was wrong."""
    report = Path(env["NEWSLETTER_HOME"], "last-run.json")

    def reported() -> bool:
        return report.exists() and any("cannot fetch" in e for e in json.loads(report.read_text())["errors"])

    source = {"kind": "hf-daily", "days_back": 0, "max_retries": 0}
    daemon_against(_Broken, source, env, tmp_path / "daemon.log", lambda: wait_for(reported, 30))
    assert reported(), (tmp_path / "daemon.log").read_text()
    assert "cannot fetch" in cli(env, "status").stdout


def test_a_failing_source_stays_in_every_tick_report_until_a_fetch_works(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first tick after the fetch took its failures: with an hourly fetch and 5-minute ticks, `status`
    showed a source failing for months for one tick an hour."""
    from newsletter.app import open_pipeline
    from newsletter.daemon import schedule
    from newsletter.errors import StoreError

    settings = load_settings(
        home=env["NEWSLETTER_HOME"], subscribers=env["NEWSLETTER_SUBSCRIBERS"], dumps=env["NEWSLETTER_DUMPS"]
    )
    fetched = [["fetch from a failed: 500"], ["fetch from b failed: 503"], ["fetch from c failed: 429"], []]
    monkeypatch.setattr(schedule, "fetch_all", lambda *a: ([], fetched.pop(0)))
    daemon = schedule.Daemon(settings)

    def errors() -> list[str]:
        return list(json.loads(Path(env["NEWSLETTER_HOME"], "last-run.json").read_text())["errors"])

    with open_pipeline(settings) as pipeline:
        with caplog.at_level(logging.ERROR):
            daemon.fetch(pipeline)
        assert [r.getMessage() for r in caplog.records] == ["fetch from a failed: 500"]  # the daemon logs it
        daemon.tick(pipeline)
        daemon.tick(pipeline)
        assert errors() == ["fetch from a failed: 500"]  # the second tick's report too
        run = pipeline.run
        pipeline.run = lambda *a, **k: (_ for _ in ()).throw(StoreError("database error: gone"))  # type: ignore[method-assign]
        daemon.fetch(pipeline)  # a later fetch's failures replace the earlier ones
        daemon.tick(pipeline)
        daemon.fetch(pipeline)  # while ticks fail: no report has carried b's failure yet
        pipeline.run = run  # type: ignore[method-assign]
        daemon.tick(pipeline)
        assert errors() == ["fetch from b failed: 503", "fetch from c failed: 429"]
        daemon.fetch(pipeline)  # it works again
        daemon.tick(pipeline)
        assert errors() == []


def test_a_tick_that_fails_is_in_the_report_status_shows_and_keeps_what_the_last_run_did(
    env: dict[str, str],
) -> None:
    """It replaced the report with an empty one: the guard against a lost database then let a run on an
    empty database send every digest again."""
    from newsletter.app import open_pipeline
    from newsletter.daemon.schedule import Daemon
    from newsletter.errors import StoreError

    settings = load_settings(
        home=env["NEWSLETTER_HOME"], subscribers=env["NEWSLETTER_SUBSCRIBERS"], dumps=env["NEWSLETTER_DUMPS"]
    )
    add_dumps(env, seed_names()[0])
    daemon = Daemon(settings)
    with open_pipeline(settings) as pipeline:
        daemon.tick(pipeline)
        pipeline.run = lambda *a, **k: (_ for _ in ()).throw(StoreError("database error while reading: gone"))  # type: ignore[method-assign]
        daemon.tick(pipeline)
        daemon.tick(pipeline)
    last = json.loads(Path(env["NEWSLETTER_HOME"], "last-run.json").read_text())
    assert last["errors"] == ["a daemon tick failed: database error while reading: gone"]  # once
    assert last["counts"]["sent"] >= 1  # what the last good tick did stays: the lost-database guard reads it
    Path(env["NEWSLETTER_HOME"], "state.db").unlink()
    for sent in Path(env["NEWSLETTER_HOME"], "outbox").iterdir():
        sent.unlink()  # the report alone must show the earlier runs
    refused = cli(env, "run", check=False)
    assert refused.returncode == 1 and "the state database is empty" in refused.stderr


def test_status_prints_a_server_reply_and_a_file_name_as_written(env: dict[str, str]) -> None:
    """A reply such as '... [/var/mail/x missing]' was read as Rich markup: a traceback, every time
    until the digest was gone; '[red]' in a file name was eaten."""
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    reply = "550 5.1.1 <ssm@example.org>: unknown user [/var/mail/x missing] [bold]"
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:
        (ssm,) = store.deliveries(email="ssm@example.org", with_items=False)
        with store._engine.begin() as conn:
            conn.execute(
                digests.update()
                .where(digests.c.id == ssm.digest_id)
                .values(status="failed", last_error=reply)
            )
    (Path(env["NEWSLETTER_DUMPS"]) / "[red]cut.txt").write_text("Just a title\n", encoding="utf-8")
    cli(env, "run", "--now", "2026-03-11T09:00:00Z", check=False)  # the dump is refused
    proc = cli({**env, "COLUMNS": "250"}, "status", "--now", "2026-03-11T09:00:00Z")  # no folding
    assert "Traceback" not in proc.stderr
    assert reply in proc.stdout and "[red]cut.txt" in proc.stdout


def test_the_run_report_is_readable_as_the_umask_allows(env: dict[str, str]) -> None:
    """Written through mkstemp, last-run.json was 0600: status run by a group reader said no run."""
    add_dumps(env, seed_names()[0])
    mask = os.umask(0o022)
    os.umask(mask)
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    report = Path(env["NEWSLETTER_HOME"]) / "last-run.json"
    assert report.stat().st_mode & 0o777 == 0o666 & ~mask


def logged_daemon(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`newsletter daemon --tick 1`, its stdout and stderr into ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "newsletter", "daemon", "--tick", "1"],
            env={**os.environ, **env},
            stdout=out,
            stderr=out,
        )


HOLD_LOCK_TILL_TOLD = """
import sys
from pathlib import Path
from newsletter.store import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""
WAITING = "another process holds the run lock: waiting up to 120 s for it"


def test_a_daemon_started_while_a_command_holds_the_lock_waits_for_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    """It exited 1 at once: restarted by systemd during a `retry` or a `prune`, five quick failures
    and systemd gave the unit up. (The lock is let go once the daemon says it waits: a holder for a
    fixed time could be gone before a slow machine had started the daemon.)"""
    command = [sys.executable, "-c", HOLD_LOCK_TILL_TOLD, env["NEWSLETTER_HOME"]]
    log = tmp_path / "daemon.log"
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        proc = logged_daemon(env, log)
        try:
            assert wait_for(lambda: WAITING in log.read_text()), log.read_text()
            assert proc.poll() is None and holder.communicate("go\n", timeout=30)[0] == ""
            assert wait_for(lambda: Path(env["NEWSLETTER_HOME"], "last-run.json").exists()), log.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert holder.returncode == 0 and proc.returncode == 0, log.read_text()


def test_a_standby_daemon_records_the_sends_its_database_missed(env: dict[str, str]) -> None:
    """A daemon whose tick stopped on a database gone just after a server accepted a message holds that
    acceptance in its state folder; another host's daemon took the run lock meanwhile, so this one only
    stood by, and the acceptance stayed there while the leader's run called the digest 'unknown' (and
    `status` offered `retry --unknown`, which sent it twice). A standby's tick records it now."""
    from newsletter.app import open_pipeline
    from newsletter.daemon.schedule import Daemon
    from newsletter.deliver.held import HELD_FILE, hold_sent

    settings = load_settings(
        home=env["NEWSLETTER_HOME"], subscribers=env["NEWSLETTER_SUBSCRIBERS"], dumps=env["NEWSLETTER_DUMPS"]
    )
    add_dumps(env, seed_names()[0])
    daemon = Daemon(settings)
    with open_pipeline(settings) as pipeline:
        pipeline.run(daemon.subscribers.get(), datetime.now(UTC))
        (sent, *_) = pipeline.store.deliveries(["sent"], with_items=False)
        with pipeline.store._engine.begin() as conn:  # as the tick the database failed left it
            conn.execute(digests.update().where(digests.c.id == sent.digest_id).values(status="unknown"))
        hold_sent(settings.home, [(sent.digest_id, sent.message_id or "")], datetime.now(UTC))

        class Standby:
            def check(self) -> bool:
                return False

        daemon._leader = Standby()  # type: ignore[assignment]
        ran: list[object] = []
        real_run, pipeline.run = pipeline.run, lambda *a, **k: ran.append(a)  # type: ignore[method-assign]
        try:
            daemon.tick(pipeline)
        finally:
            pipeline.run = real_run  # type: ignore[method-assign]
        assert ran == []  # a standby plans and sends nothing
        (record,) = [r for r in pipeline.store.deliveries(with_items=False) if r.digest_id == sent.digest_id]
    assert record.status == "sent"
    assert not Path(env["NEWSLETTER_HOME"], HELD_FILE).read_text()


def test_a_subscribers_file_cut_by_an_editor_saving_in_place_is_not_taken(env: dict[str, str]) -> None:
    """An editor that truncates and writes the file in place left it cut for a moment; read then, the
    cut file was valid YAML (Ada's max_items 10 read as 1, the next subscriber gone) and was taken, and
    kept as "the last valid list" once a later edit was invalid."""
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    full = (
        "subscribers:\n"
        "  - email: a@example.org\n    interests: [x]\n    max_items: 10\n"
        "  - email: b@example.org\n    interests: [y]\n"
    )
    path.write_text(full)
    watcher = SubscriberFile(path, settle=0.5)
    cut = full.index("0\n  - email: b")
    with path.open("w") as f:
        f.write(full[:cut])
        f.flush()
        writer = threading.Timer(0.2, lambda: (f.write(full[cut:]), f.flush()))
        writer.start()
        kept = watcher.get()  # read while the editor is still writing
        writer.join()
    assert [(s.email, s.max_items) for s in kept.subscribers] == [
        ("a@example.org", 10),
        ("b@example.org", 10),
    ]
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert [(s.email, s.max_items) for s in watcher.get().subscribers] == [
        ("a@example.org", 10),
        ("b@example.org", 10),
    ]


@pytest.mark.parametrize(
    ("outcome", "level"),
    [
        (None, "INFO"),
        (DigestOutcome("a@example.org", "failed", "451 greylisted", retried=True, routine=True), "WARNING"),
        (DigestOutcome("a@example.org", "unknown", "connection lost"), "ERROR"),
    ],
)
def test_a_tick_s_summary_line_has_the_level_of_what_it_reports(
    env: dict[str, str], caplog: pytest.LogCaptureFixture, outcome: DigestOutcome | None, level: str
) -> None:
    """`tick: 2 failed` was an INFO line: `journalctl -p warning` showed nothing of a daemon whose
    deliveries failed for days."""
    from newsletter.app import open_pipeline
    from newsletter.daemon.schedule import Daemon

    settings = load_settings(
        home=env["NEWSLETTER_HOME"], subscribers=env["NEWSLETTER_SUBSCRIBERS"], dumps=env["NEWSLETTER_DUMPS"]
    )
    report = RunReport()
    report.extend([outcome] if outcome else [])
    daemon = Daemon(settings)
    with (
        open_pipeline(settings) as pipeline,
        caplog.at_level(logging.INFO, logger="newsletter.daemon.schedule"),
    ):
        pipeline.run = lambda *a, **k: report  # type: ignore[method-assign]
        daemon.tick(pipeline)
    assert [r.levelname for r in caplog.records if r.getMessage().startswith("tick:")] == [level]
