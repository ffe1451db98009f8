"""Distributed delivery through procrastinate on a real PostgreSQL: `newsletter worker` processes, each
with its own empty NEWSLETTER_HOME, send what a `newsletter run` (NEWSLETTER_EXECUTOR=procrastinate)
hands out; a worker killed with -9 mid-run loses nothing and sends nothing twice."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import psycopg
import pytest
import yaml

from newsletter.executors.shards import ShardWork
from newsletter.report import RunReport
from newsletter.store import PENDING, SENDING, SENT, UNKNOWN, Store

from .helpers import add_dumps, cli, make_env, outbox, seed_names
from .test_crash import DOMAIN, TOPICS, journal_length, read_journal, smtp_server, start_run
from .test_store_helpers import plan_for, seeded

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
    items = [i for d in report["digests"] for i in d["items"]]  # as full as a local run's: links too
    assert all(i["url"].startswith("https://arxiv.org/") for i in items), items
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


def test_newsletter_worker_on_sqlite_says_so_and_makes_no_state_folder(tmp_path: Path) -> None:
    """It made ./.newsletter/state.db, migrated it, then blamed NEWSLETTER_EXECUTOR, which was not set."""
    env = make_env(tmp_path)
    result = cli(env, "worker", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: newsletter worker needs a PostgreSQL database (NEWSLETTER_DATABASE_URL)"
    )
    assert not Path(env["NEWSLETTER_HOME"], "state.db").exists()


SUBSCRIBERS = 2000
NOW = "2026-03-11T08:00:00Z"


def _write_subscribers(path: Path) -> None:
    subs = [
        {"email": f"r{i:04d}@example.org", "interests": list(TOPICS[i % len(TOPICS)])}
        for i in range(SUBSCRIBERS)
    ]
    data = {"defaults": {"cadence": "each-dump", "max_items": 5}, "subscribers": subs}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def _smtp_env(port: int) -> dict[str, str]:
    return {
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        # one connection per worker: a kill leaves at most one unknown (auto would open up to 8
        # against a server that takes 20 ms, and a kill could leave one per connection)
        "NEWSLETTER_CONNECTIONS": "1",
    }


def _coordinator_env(tmp_path: Path, pg_url: str, smtp: dict[str, str]) -> dict[str, str]:
    """A coordinator's settings, its SUBSCRIBERS readers and the first seed in its dumps folder."""
    env = make_env(tmp_path) | smtp
    env |= {"NEWSLETTER_DATABASE_URL": pg_url, "NEWSLETTER_EXECUTOR": "procrastinate"}
    _write_subscribers(Path(env["NEWSLETTER_SUBSCRIBERS"]))
    add_dumps(env, seed_names()[0])
    return env


@pytest.mark.slow
def test_three_workers_one_killed_mid_run_send_every_digest_once(tmp_path: Path, pg_url: str) -> None:
    journal = tmp_path / "journal.jsonl"
    rng = random.Random()
    with smtp_server(journal, delay=0.02) as port:
        smtp = _smtp_env(port)
        env = _coordinator_env(tmp_path, pg_url, smtp) | {"NEWSLETTER_WORKERS": "6"}  # shards
        homes = [_worker_env(tmp_path, f"worker{i}", pg_url, smtp) for i in range(3)]
        with workers(homes, tmp_path) as procs:
            run = start_run(env, NOW, tmp_path / "run.log")
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


@pytest.mark.slow
def test_a_worker_stopped_mid_shard_hands_the_rest_to_another(tmp_path: Path, pg_url: str) -> None:
    """SIGTERM stops a worker after its message in flight, not at the end of its shard (systemd kills
    after 90 s); the job goes back to the queue and a second worker delivers the rest in the same run:
    first what the stopped one had planned, then the digests nobody had planned."""
    journal = tmp_path / "journal.jsonl"
    with smtp_server(journal, delay=0.02) as port:
        smtp = _smtp_env(port)
        env = _coordinator_env(tmp_path, pg_url, smtp)  # one shard
        first, second = (_worker_env(tmp_path, f"worker{i}", pg_url, smtp) for i in range(2))
        run = start_run(env, NOW, tmp_path / "run.log")
        with workers([first], tmp_path) as (proc,):
            deadline = time.monotonic() + 300
            while journal_length(journal) < 50 and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            proc.wait(timeout=60)
            took = time.monotonic() - stopped_at
            sent_by_first = journal_length(journal)
        assert run.poll() is None  # the coordinator still waits for its shard
        worker_log = (tmp_path / "worker0.log").read_text()
        with workers([second], tmp_path / "worker1"):
            assert run.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()

    assert proc.returncode == 0, worker_log[-2000:]
    assert took < 10, f"the worker took {took:.1f} s to stop"
    assert sent_by_first < SUBSCRIBERS // 4  # it did not finish its shard
    handed_back = [line for line in worker_log.splitlines() if "handed back to the queue" in line]
    assert len(handed_back) == 1 and "Traceback" not in worker_log, worker_log[-2000:]
    assert worker_log.count("(shard={") == 0  # no job's arguments (every profile) in a log line
    received = read_journal(journal)
    recipients = Counter(r.to for r in received)
    assert max(recipients.values()) == 1
    with Store(pg_url) as store:
        statuses = Counter(d.status for d in store.deliveries(with_items=False))
    assert set(statuses) == {SENT}
    assert statuses[SENT] == len(recipients) > SUBSCRIBERS // 2


def test_a_coordinator_with_no_worker_gives_up_and_keeps_nothing_queued(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.executors import distributed
    from newsletter.executors.shards import Shard
    from newsletter.models import Subscriber

    monkeypatch.setattr(distributed, "NO_WORKER_AFTER", 1.0)
    now = datetime(2026, 3, 11, 8, tzinfo=UTC)
    shard = Shard(0, 1, (Subscriber(email="a@example.org", interests=("graph neural networks",)),), now)
    with Store(pg_url) as store:
        seeded(store, 1)
        store.plan_digests([plan_for(store, "in-flight")])
        store.mark_sending("in-flight", now)  # a worker of an earlier run still sending it
        executor = distributed.ProcrastinateExecutor(store, pg_url)
        started = time.monotonic()
        report = executor.run([shard], cast(ShardWork, _Coordinator()), None)  # it runs nothing
        took = time.monotonic() - started
        in_flight = [d.status for d in store.deliveries(with_items=False)]
    assert took < 30
    assert report.recovered_unknown == [] and in_flight == ["sending"]  # shards were left running
    assert report.errors == [
        "no `newsletter worker` took the shards for 1 s: 1 shards left to the next run "
        "(start workers on this database)"
    ]
    assert _job_statuses(pg_url) == []  # cancelled (a worker started later sends nothing), then deleted:
    # a job carries its subscribers' profiles, and nothing else would ever delete it


class _Coordinator:
    """The coordinating run as an executor sees it: whether it holds the run lock; nothing to recover."""

    def __init__(self, holds_lock: bool = True) -> None:
        self.lock, self.recovered = holds_lock, 0

    def holds_lock(self) -> bool:
        return self.lock

    def recover(self, now: datetime) -> list[str]:
        self.recovered += 1
        return []


def test_a_coordinator_that_lost_its_run_lock_stops_waiting_and_recovers_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    """Another coordinator may hold the lock and hand out shards by then: turning the sends in flight
    into 'unknown' at the end would have `retry --unknown` send them twice."""
    from newsletter.executors import distributed
    from newsletter.executors.shards import Shard
    from newsletter.models import Subscriber

    now = datetime(2026, 3, 11, 8, tzinfo=UTC)
    shard = Shard(0, 1, (Subscriber(email="a@example.org", interests=("graph neural networks",)),), now)
    distributed.install_queue(pg_url)
    with psycopg.connect(distributed.conninfo(pg_url), autocommit=True) as conn:
        conn.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())")  # busy elsewhere
    coordinator = _Coordinator(holds_lock=False)
    with Store(pg_url) as store:
        seeded(store, 1)
        store.plan_digests([plan_for(store, "in-flight")])
        store.mark_sending("in-flight", now)  # a worker still sending it
        executor = distributed.ProcrastinateExecutor(store, pg_url)
        report = executor.run([shard], cast(ShardWork, coordinator), None)
        in_flight = [d.status for d in store.deliveries(with_items=False)]
    assert report.halted == distributed.LOCK_LOST and report.errors == [distributed.LOCK_LOST]
    assert coordinator.recovered == 0 and in_flight == ["sending"]
    assert _job_statuses(pg_url) == []  # cancelled before a worker took it, then deleted


class _LosesTheLockAsTheShardEnds(_Coordinator):
    """Holds the lock at the first look, as the worker finishes the only job (it deletes it); then the
    lock's connection ends, before the next look (taken at most every LOCK_CHECK seconds)."""

    def __init__(self, pg_url: str) -> None:
        super().__init__()
        self.pg_url, self.looks = pg_url, 0

    def holds_lock(self) -> bool:
        from newsletter.executors.distributed import conninfo

        self.looks += 1
        if self.looks > 1:
            return False
        with psycopg.connect(conninfo(self.pg_url), autocommit=True) as conn:
            conn.execute("DELETE FROM procrastinate_jobs")
        return True


def test_a_lock_lost_as_the_last_shard_ended_is_seen_before_recovering(tmp_path: Path, pg_url: str) -> None:
    """Every shard ended before the next look: recovering then would turn the new holder's send in
    flight 'unknown' (found by a review)."""
    from newsletter.executors import distributed
    from newsletter.executors.shards import Shard
    from newsletter.models import Subscriber

    now = datetime(2026, 3, 11, 8, tzinfo=UTC)
    shard = Shard(0, 1, (Subscriber(email="a@example.org", interests=("graph neural networks",)),), now)
    distributed.install_queue(pg_url)
    with psycopg.connect(distributed.conninfo(pg_url), autocommit=True) as conn:
        conn.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())")
    coordinator = _LosesTheLockAsTheShardEnds(pg_url)
    with Store(pg_url) as store:
        seeded(store, 1)
        store.plan_digests([plan_for(store, "theirs")])
        store.mark_sending("theirs", now)  # the new lock holder's, in flight
        report = distributed.ProcrastinateExecutor(store, pg_url).run(
            [shard], cast(ShardWork, coordinator), None
        )
        in_flight = [d.status for d in store.deliveries(with_items=False)]
    assert report.halted == distributed.LOCK_LOST and coordinator.looks == 2
    assert coordinator.recovered == 0 and in_flight == ["sending"]


def test_a_coordinator_clears_what_earlier_ones_left_in_the_queue(pg_url: str) -> None:
    """A failed job of a coordinator that stopped first, and a job whose worker and coordinator were both
    killed, stayed in the queue for good, each with its subscribers' profiles."""
    import asyncio

    from newsletter.executors.distributed import ProcrastinateExecutor, conninfo, install_queue, make_app

    install_queue(pg_url)
    with psycopg.connect(conninfo(pg_url), autocommit=True) as conn:
        live, gone = (
            conn.execute(
                f"INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '{age}')"
                " RETURNING id"
            ).fetchone()
            or ()
            for age in ("1 second", "10 minutes")
        )
        for status, worker in [
            ("failed", None),
            ("doing", gone),
            ("doing", live),
            ("todo", None),
            ("doing", None),
        ]:
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, status, worker_id) "
                "VALUES ('newsletter', 'newsletter.deliver_shard', %s, %s)",
                (status, worker[0] if worker else None),
            )

    async def clear() -> None:
        app = make_app(pg_url)
        async with app.open_async():
            await ProcrastinateExecutor._clear_leftovers(app)

    asyncio.run(clear())
    assert _job_statuses(pg_url) == ["doing", "todo"]  # a live worker's, and one a worker will take


def _job_statuses(url: str) -> list[str]:
    import psycopg

    from newsletter.executors.distributed import conninfo

    with psycopg.connect(conninfo(url)) as conn:
        return [row[0] for row in conn.execute("SELECT status FROM procrastinate_jobs ORDER BY id")]


def test_an_unreachable_queue_database_is_one_line(tmp_path: Path) -> None:
    env = make_env(tmp_path) | {
        "NEWSLETTER_EXECUTOR": "procrastinate",
        "NEWSLETTER_DATABASE_URL": f"postgresql+psycopg://u:hunter2secret@127.0.0.1:{_closed_port()}/db",
    }
    for command in (("worker",), ("run",)):
        result = cli(env, *command, check=False)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "hunter2secret" not in result.stderr + result.stdout
        assert "Connection refused" in result.stderr or "connect" in result.stderr, result.stderr


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_long_job_lines_keep_the_name_and_id_not_the_arguments() -> None:
    from newsletter.executors.distributed import ShortJobLines

    call = "newsletter.deliver_shard[7](shard={'index': 0, 'subscribers': [{'about': 'x (y) {z}'}]})"
    record = logging.LogRecord("procrastinate.worker", logging.INFO, "f", 1, "Starting job %s", (call,), None)
    assert ShortJobLines().filter(record)
    assert record.getMessage() == "Starting job newsletter.deliver_shard[7](…)"


def _aborted() -> Exception:
    from procrastinate.exceptions import JobAborted

    return JobAborted("shard 1/2: stopped, handed back to the queue")


def _store_error() -> Exception:  # it came with ~30 lines of traceback
    from newsletter.errors import StoreError

    return StoreError("database error while marking a digest sent: server closed the connection")


def _finished_elsewhere() -> Exception:  # 43 lines, after a worker stalled 30 s resumed (a review)
    from procrastinate.exceptions import ConnectorException

    error = ConnectorException()  # as procrastinate raises it: "Database error.", from the database's
    error.__cause__ = psycopg.errors.RaiseException('Job was not found or not in "doing" or "todo" status')
    return error


@pytest.mark.parametrize("make", [_aborted, _store_error, _finished_elsewhere])
def test_a_shard_handed_back_or_failing_with_our_error_is_logged_without_a_traceback(
    make: Callable[[], Exception],
) -> None:
    from newsletter.executors.distributed import ShortJobLines

    raised = make()
    try:
        raise raised
    except Exception:
        record = logging.LogRecord("w", logging.ERROR, "f", 1, "Job x ended", None, sys.exc_info())
    assert ShortJobLines().filter(record)
    assert record.exc_info is None
    assert record.getMessage() == f"Job x ended: {raised.__cause__ or raised}"


def test_a_queue_error_mid_run_is_one_store_error_without_the_password() -> None:
    from procrastinate.exceptions import ConnectorException

    from newsletter.errors import StoreError
    from newsletter.executors.distributed import queue_errors

    url = "postgresql+psycopg://u:hunter2secret@db.example.org/news?sslpassword=keysecret"
    with pytest.raises(StoreError) as caught, queue_errors(url):
        try:
            raise psycopg.OperationalError("consuming input failed: server closed the connection\nmore")
        except psycopg.OperationalError as exc:
            raise ConnectorException() from exc
    assert str(caught.value) == (
        "the job queue's database (postgresql+psycopg://u:***@db.example.org/news?sslpassword=HIDDEN): "
        "consuming input failed: server closed the connection"
    )


def test_a_retry_after_its_coordinator_stopped_leaves_what_live_workers_send_to_them(
    tmp_path: Path, pg_url: str
) -> None:
    """A coordinator stopped by SIGTERM leaves its shards to the workers; the next `run` or `retry`
    called their messages in flight interrupted by a crash ('unknown'), and `retry --unknown` sent one
    again while the worker's copy arrived too. A worker silent past its time is gone: then they are."""
    from newsletter.executors.distributed import conninfo, install_queue

    env = {**make_env(tmp_path), "NEWSLETTER_DATABASE_URL": pg_url}
    install_queue(pg_url)
    with psycopg.connect(conninfo(pg_url), autocommit=True) as conn:
        (worker,) = (
            conn.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id").fetchone() or ()
        )
        shard = {"shard": {"subscribers": [{"email": "Ada@Example.org"}]}}  # the worker's, in its job
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status, worker_id, args) "
            "VALUES ('newsletter', 'newsletter.deliver_shard', 'doing', %s, %s)",
            (worker, json.dumps(shard)),
        )
        with Store(pg_url) as store:
            seeded(store, 1)
            store.plan_digests(
                [plan_for(store, "in-flight"), plan_for(store, "crashed", email="bob@example.org")]
            )
            store.mark_sending("in-flight", datetime.fromisoformat(NOW))
            store.mark_sending("crashed", datetime.fromisoformat(NOW))  # a killed coordinator's own send
        proc = cli(env, "retry", "--unknown", "--now", NOW)
        assert "workers are still delivering to 1 subscriber" in proc.stderr
        with Store(pg_url) as store:
            statuses = {d.digest_id: d.status for d in store.deliveries(with_items=False)}
        assert statuses["in-flight"] == SENDING and statuses["crashed"] != SENDING  # unknown, then resent
        conn.execute("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '30 seconds'")
        cli(env, "retry", "--now", NOW)  # a short outage: still its worker's
        assert _statuses(pg_url)[SENDING] == 1
        conn.execute("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '10 minutes'")
        cli(env, "retry", "--now", NOW)  # its worker is gone: it was interrupted
        with Store(pg_url) as store:
            assert {d.digest_id: d.status for d in store.deliveries(with_items=False)}["in-flight"] == UNKNOWN


def test_a_stopping_worker_keeps_its_heartbeat_until_its_shard_has_stopped(pg_url: str) -> None:
    """procrastinate stops a worker's heartbeat when its shutdown starts; a shard still finishing its
    message in flight beats for it, so the coordinator does not hand the shard to a second worker."""
    from newsletter.executors.distributed import _beat_until, conninfo, install_queue

    install_queue(pg_url)
    with psycopg.connect(conninfo(pg_url), autocommit=True) as conn:
        (worker,) = (
            conn.execute(
                "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour') RETURNING id"
            ).fetchone()
            or ()
        )
        (job,) = (
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, status, worker_id) "
                "VALUES ('newsletter', 'newsletter.deliver_shard', 'doing', %s) RETURNING id",
                (worker,),
            ).fetchone()
            or ()
        )
        done = threading.Event()
        beating = threading.Thread(target=_beat_until, args=(done, pg_url, job))
        beating.start()
        time.sleep(0.5)
        done.set()
        beating.join(timeout=10)
        (age,) = (
            conn.execute(
                "SELECT extract(epoch FROM now() - last_heartbeat) FROM procrastinate_workers WHERE id = %s",
                (worker,),
            ).fetchone()
            or ()
        )
    assert not beating.is_alive()
    assert float(age) < 5


def test_a_stopped_shard_that_had_finished_is_not_handed_back() -> None:
    from newsletter.deliver import STOPPED
    from newsletter.executors.distributed import _unfinished
    from newsletter.report import WAITING, DigestOutcome

    report = RunReport()
    report.extend(
        [DigestOutcome("a@example.org", "sent"), DigestOutcome("b@example.org", "skipped", "not due")]
    )
    assert not _unfinished(report)
    for reason in (STOPPED, WAITING):
        left = RunReport()
        left.add(DigestOutcome("c@example.org", "skipped", reason))
        assert _unfinished(left)


def test_without_procrastinate_the_engine_is_one_error_line_with_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default install has no procrastinate: `newsletter worker` and the executor setting gave a
    ModuleNotFoundError traceback."""
    import sys

    import newsletter.executors
    from newsletter.app import distributed
    from newsletter.errors import ConfigError

    monkeypatch.setitem(sys.modules, "procrastinate", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "newsletter.executors.distributed", raising=False)
    monkeypatch.delattr(newsletter.executors, "distributed", raising=False)
    with pytest.raises(ConfigError) as caught:
        distributed()
    assert "needs the procrastinate package" in caught.value.message
    # not "pip install -e '.[distributed]'": a wheel's user has no clone to install
    assert caught.value.hint == "pip install 'newsletter[distributed]'"


def test_the_queue_s_connection_string_passes_every_password_whole() -> None:
    """As key=value pairs: libpq quoted a URL it could not parse (a space in the password), password and all."""
    from newsletter.executors.distributed import conninfo

    url = "postgresql+psycopg://nl:my%20secret%20pw9@127.0.0.1:5432/nl4?sslmode=disable"
    assert psycopg.conninfo.conninfo_to_dict(conninfo(url)) == {
        "host": "127.0.0.1",
        "port": "5432",
        "dbname": "nl4",
        "user": "nl",
        "password": "my secret pw9",
        "sslmode": "disable",
    }
    socket = "postgresql+psycopg://postgres:p%40ss%3Aw%2Frd%2541@/nl3?host=/run/postgresql"
    assert psycopg.conninfo.conninfo_to_dict(conninfo(socket))["password"] == "p@ss:w/rd%41"


def test_a_digest_a_worker_left_is_reported_with_a_reason_that_says_what_happens_next() -> None:
    """A digest a live worker still sent after a stop read "unknown (5 papers; sending: queued)", and
    one left unknown without an error "unknown (5 papers; )" (found by a review)."""
    from newsletter.cli.runs import _detail
    from newsletter.executors.distributed import _as_reported, _reported
    from newsletter.report import DigestOutcome, ItemReport
    from newsletter.store import DeliveryRecord

    def record(status: str, error: str | None = None) -> DeliveryRecord:
        now = datetime(2026, 3, 11, 8, tzinfo=UTC)
        return DeliveryRecord("d", "a@example.org", status, now, now, 1, "s", "<m>", error, ())  # type: ignore[arg-type]

    assert _as_reported(record(SENDING)) == (
        "unknown",
        "a worker was sending it when this run ended; the next run reports whether it went",
    )
    assert _as_reported(record("retry", "451 busy")) == ("failed", "retry: 451 busy")
    assert _reported(record("retry", "451 busy")).retried and not _reported(record(PENDING)).retried
    assert _as_reported(record(UNKNOWN)) == ("unknown", "")
    items = (ItemReport("t", "u", 1.0, "why"),)
    assert _detail(DigestOutcome("a@example.org", "unknown", "", items)) == "1 paper"
