"""Distributed delivery on procrastinate: shards as jobs in the shared PostgreSQL database.

``NEWSLETTER_EXECUTOR=procrastinate`` makes ``run`` and ``daemon`` (the coordinator, holding the
database's run lock) defer one job per shard to the ``newsletter`` queue in one transaction, then wait
for them. ``newsletter worker`` processes, on any number of machines, each with its own settings for
the transport, take the jobs and run ``Pipeline.deliver_shard``. There is no broker: the queue is a
table in the database the store already uses, and workers are woken by LISTEN/NOTIFY.

procrastinate is at-least-once. Workers send a heartbeat every HEARTBEAT seconds; while it waits,
the coordinator hands a job whose worker has been silent for STALLED_AFTER seconds (killed, or its
machine gone) back to the queue, and another worker runs the shard again. The delivery log keeps
that safe: what the dead worker sent is 'sent' (its papers are claimed, so it is not planned again),
what it planned but had not sent is 'pending' (sent first by the worker that runs the shard again;
Pipeline.deliver_shard with ``shard.attempt``), and the one message it was
handing over stays 'sending' until the coordinator's run ends and turns it into 'unknown'. Its job
ids, statuses and the report read back from the delivery log are all the coordinator keeps.

A worker asked to stop (SIGTERM/SIGINT) stops its shard after the message in flight, as a run does, and
hands the job back to the queue: another worker, or this one restarted, delivers the rest. A
coordinator that sees no live worker for NO_WORKER_AFTER seconds gives up: it takes back the jobs no
worker has started, ends the run with an error, and the next run builds those digests again. So does
a coordinator that finds it lost the run lock (looked at every LOCK_CHECK seconds): another coordinator
may be handing out shards by then, so it leaves the sends in flight alone (no recovery) and goes no
further.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, cast

import procrastinate
import psycopg
from procrastinate.exceptions import ConnectorException, JobAborted
from procrastinate.job_context import JobContext
from procrastinate.schema import SchemaManager
from psycopg.conninfo import make_conninfo

from newsletter.errors import ConfigError, NewsletterError, StoreError
from newsletter.executors.parallel import Halt
from newsletter.executors.shards import Shard, ShardWork
from newsletter.render.cards import item_reports
from newsletter.report import STOPPED, WAITING, DigestOutcome, RunReport, Status
from newsletter.store import PENDING, RETRY, SENDING, DeliveryRecord, Store
from newsletter.store.delivery import GONE_AFTER, JOB_QUEUE, WORKER_SILENT_AFTER
from newsletter.store.engine import parse_url, safe_url

log = logging.getLogger(__name__)

QUEUE = JOB_QUEUE
WORKER_NAME = "worker"  # procrastinate's worker logs as procrastinate.worker.<name> too
TASK = "newsletter.deliver_shard"
HEARTBEAT = 1.0  # seconds between a worker's heartbeats
STALLED_AFTER = WORKER_SILENT_AFTER  # seconds of silence after which a worker's job goes to another
POLL = 0.5  # seconds between the coordinator's looks at its jobs
NO_WORKER_AFTER = 120.0  # seconds with no live worker after which a coordinator stops waiting
ABORT_POLL = 0.2  # seconds between a running shard's looks at whether its worker is stopping
HANDBACKS = 20  # times a shard's job goes back to the queue because its worker stopped
SCHEMA_LOCK_KEY = 0x6E6C5F6A6F62  # "nl_job": one process installs the queue's tables
LOCK_LOST = (
    "this run lost the database's run lock (its connection ended): it cancelled the shards no worker "
    "had started and left those running to their workers; the next run sends the rest"
)
_SHARD_ARGUMENTS = re.compile(r"\(shard=\{.*\}\)", re.DOTALL)  # in a job's call_string
_FINAL = ("succeeded", "failed", "cancelled", "aborted")
# how a digest a worker left in each state shows in the run's report
_REPORTED: dict[str, Status] = {
    PENDING: "skipped",
    RETRY: "failed",
    SENDING: "unknown",
    "cancelled": "skipped",
}


def conninfo(db_url: str, who: str = "NEWSLETTER_EXECUTOR=procrastinate") -> str:
    """The libpq connection string (what psycopg takes) of a SQLAlchemy ``postgresql+psycopg://`` URL,
    as key=value pairs: libpq quotes a URL it cannot parse, password and all, in its error. ``who``
    needs it, for the error with another database."""
    url = parse_url(db_url)
    if url.get_backend_name() != "postgresql":
        raise ConfigError(
            f"{who} needs a PostgreSQL database (NEWSLETTER_DATABASE_URL)",
            hint="e.g. NEWSLETTER_DATABASE_URL=postgresql+psycopg://newsletter@db.example.org/newsletter",
        )
    parts = {"host": url.host, "port": url.port, "dbname": url.database, "user": url.username}
    parts |= {"password": url.password, **{k: _last(v) for k, v in url.query.items()}}
    return make_conninfo("", **{k: v for k, v in parts.items() if v is not None})


def _last(value: str | tuple[str, ...]) -> str:
    """A query parameter's value (SQLAlchemy gives a repeated one as a tuple: libpq takes the last)."""
    return value if isinstance(value, str) else value[-1]


def install_queue(db_url: str) -> None:
    """Create procrastinate's tables in the database unless they are there (once, under a lock)."""
    with psycopg.connect(conninfo(db_url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        try:
            found = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
            if found is None or found[0] is None:
                conn.execute(SchemaManager.get_schema())
                log.info("installed procrastinate's job tables")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))


def make_app(db_url: str, work: ShardWork | None = None) -> procrastinate.App:
    """The procrastinate app; with ``work`` it can run the shard task (a worker), else only defer it."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(db_url)))
    handback = procrastinate.RetryStrategy(max_attempts=HANDBACKS, retry_exceptions={JobAborted})

    def deliver_shard(context: JobContext, shard: dict[str, Any]) -> dict[str, int]:
        if work is None:
            raise NewsletterError("this process defers shards; run `newsletter worker` to deliver them")
        part = dataclasses.replace(Shard.from_json(shard), attempt=context.job.attempts)
        log.info("shard %d/%d: %d subscribers", part.index + 1, part.count, len(part.subscribers))
        with _stop_when_aborted(context, db_url) as stop:
            report = work.deliver_shard(part, stop)
        if stop.is_set() and _unfinished(report):  # the worker is stopping: the rest goes back to the queue
            raise JobAborted(f"shard {part.index + 1}/{part.count}: stopped, handed back to the queue")
        if report.halted:  # the job fails, and the coordinator says so
            raise StoreError(report.halted)
        return dict(report.statuses)

    app.task(name=TASK, queue=QUEUE, pass_context=True, retry=handback)(deliver_shard)
    return app


def _unfinished(report: RunReport) -> bool:
    """Whether a stopped shard left digests to build or send (not everything was done before the stop)."""
    return any(reason in (STOPPED, WAITING) for reason in report.skipped)


@contextlib.contextmanager
def _stop_when_aborted(context: JobContext, db_url: str) -> Iterator[threading.Event]:
    """An event set once procrastinate asks the job to abort (its worker got SIGTERM/SIGINT).

    procrastinate stops the worker's heartbeat as it starts shutting down; until the shard has
    stopped (a message in flight to a slow server, say), the watcher keeps beating for it, so the
    coordinator does not take the worker for dead and hand the shard to another meanwhile.
    """
    stop, done = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.wait(ABORT_POLL):
            if context.should_abort():
                stop.set()
                break
        if stop.is_set():
            _beat_until(done, db_url, context.job.id)

    watcher = threading.Thread(target=watch, name="shard-abort-watch", daemon=True)
    watcher.start()
    try:
        yield stop
    finally:
        done.set()
        watcher.join(timeout=2 * STALLED_AFTER)  # a beat stuck on the network does not hold the job


def _beat_until(done: threading.Event, db_url: str, job_id: int | None) -> None:
    """The heartbeat of the worker running ``job_id``, every HEARTBEAT seconds until ``done``."""
    beat = (
        "UPDATE procrastinate_workers AS w SET last_heartbeat = now() "
        "FROM procrastinate_jobs AS j WHERE j.id = %s AND j.worker_id = w.id"
    )
    try:
        timeout = int(STALLED_AFTER)  # a beat that takes longer is no use
        with psycopg.connect(conninfo(db_url), autocommit=True, connect_timeout=timeout) as conn:
            conn.execute(f"SET statement_timeout = {timeout * 1000}")
            while True:
                conn.execute(beat, (job_id,))
                if done.wait(HEARTBEAT):
                    return
    except psycopg.Error as exc:  # the coordinator may then hand the shard on: the delivery log keeps it safe
        log.warning("cannot keep the stopping worker's heartbeat: %s", str(exc).strip().splitlines()[0])


def run_worker(db_url: str, work: ShardWork, concurrency: int = 1) -> None:
    """Take shard jobs until SIGTERM/SIGINT; a shard in progress stops after the message in flight and
    goes back to the queue."""
    for name in ("procrastinate.worker", f"procrastinate.worker.{WORKER_NAME}", "asyncio"):  # its loggers
        logging.getLogger(name).addFilter(ShortJobLines())
    with queue_errors(db_url):
        install_queue(db_url)
        app = make_app(db_url, work)
        log.info("worker started: queue %r, %d at a time", QUEUE, concurrency)
        app.run_worker(
            queues=[QUEUE],
            concurrency=concurrency,
            update_heartbeat_interval=HEARTBEAT,
            stalled_worker_timeout=GONE_AFTER,  # a worker row deleted sooner left a live worker's job unowned
            shutdown_graceful_timeout=0,  # at once: each running shard stops after its message in flight
            delete_jobs="successful",
            name=WORKER_NAME,
        )


class ShortJobLines(logging.Filter):
    """procrastinate's worker names a job by its call, arguments and all: a shard's are its subscribers'
    profiles, hundreds of kB. Its log lines keep the task's name and job id, and a shard handed back
    to the queue (its worker stopping), failed with one of our errors (the database gone mid-shard), or
    finished by another worker meanwhile (this one silent too long: procrastinate cannot end a job that
    is no longer its, and asyncio logs that as a task exception) is one line, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        short = _SHARD_ARGUMENTS.sub("(…)", message)
        if short != message:
            record.msg, record.args = short, None
        if record.exc_info and isinstance(
            record.exc_info[1], JobAborted | NewsletterError | ConnectorException
        ):
            record.msg, record.args = f"{record.getMessage()}: {_first_line(record.exc_info[1])}", None
            record.exc_info, record.exc_text = None, None
        return True


def _first_line(exc: BaseException) -> str:
    """What went wrong, in one line: procrastinate's ConnectorException says only "Database error."
    (its docstring); the database's own error is its cause."""
    if isinstance(exc, ConnectorException) and exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def queue_errors(db_url: str) -> Iterator[None]:
    """The queue's database unreachable or failing: one StoreError line, not procrastinate's traceback."""
    try:
        yield
    except (psycopg.Error, ConnectorException) as exc:
        where = safe_url(parse_url(db_url))
        raise StoreError(f"the job queue's database ({where}): {_first_line(exc)}") from exc


class ProcrastinateExecutor:
    """Defers one job per shard and waits for workers to run them; requeues a dead worker's job."""

    name = "procrastinate"

    def __init__(self, store: Store, db_url: str) -> None:
        self.store = store
        self.db_url = db_url
        with queue_errors(db_url):
            install_queue(db_url)

    def run(self, shards: Sequence[Shard], work: ShardWork, stop: threading.Event | None) -> RunReport:
        if not shards:
            return RunReport()
        now, started = shards[0].now, time.perf_counter()
        with queue_errors(self.db_url):
            report, in_flight = asyncio.run(self._run(shards, Halt(stop, work.holds_lock)))
        took = time.perf_counter() - started
        if in_flight:  # a stop, the lock lost or no worker: shards were cancelled or left running
            log.info("stopped waiting for the workers after %.1f s (%d shards handed out)", took, len(shards))
        else:
            log.info("the workers finished %d shards in %.1f s", len(shards), took)
        report.merge(self._outcomes(now, shards[0].detailed, recover=None if in_flight else work.recover))
        return report

    async def _run(self, shards: Sequence[Shard], halt: Halt) -> tuple[RunReport, bool]:
        """The workers' report, and whether what ran may still be in flight: shards left running (or
        queued), or the run lock lost (another coordinator's sends may be)."""
        app = make_app(self.db_url)
        async with app.open_async():
            await self._clear_leftovers(app)
            task = app.tasks[TASK]
            payloads: list[dict[str, Any]] = [{"shard": s.to_json()} for s in shards]
            ids = await task.batch_defer_async(*payloads)  # one transaction
            log.info("deferred %d shards to queue %r", len(ids), QUEUE)
            try:
                return await self._wait(app, dict(zip(ids, shards, strict=True)), halt)
            finally:
                await self._forget(app, ids)

    async def _wait(
        self, app: procrastinate.App, jobs: dict[int, Shard], halt: Halt
    ) -> tuple[RunReport, bool]:
        """Until every job ended, a signal (``halt``), the run lock lost (another coordinator may be
        handing out shards now) or no worker for too long; the jobs no worker started are cancelled."""
        report = RunReport()
        waiting = dict(jobs)
        alone = _Alone()
        while waiting:
            if halt():
                await self._cancel_queued(app, waiting)
                _halted(report, halt, len(waiting))
                break
            if alone.for_too_long(await self._live_workers(app)):
                await self._cancel_queued(app, waiting)
                report.errors.append(
                    f"no `newsletter worker` took the shards for {NO_WORKER_AFTER:.0f} s: "
                    f"{len(waiting)} shards left to the next run (start workers on this database)"
                )
                break
            await self._requeue_stalled(app, waiting)
            statuses = await self._statuses(app, list(waiting))
            for job_id in list(waiting):
                status = statuses.get(job_id, "succeeded")  # a worker deletes the jobs that succeeded
                if status in _FINAL:
                    shard = waiting.pop(job_id)
                    if status != "succeeded":
                        problem = (
                            f"shard {shard.index + 1}/{shard.count}: the worker's job {status} "
                            "(why is in that worker's log)"
                        )
                        report.errors.append(problem)
            if waiting:
                await asyncio.sleep(POLL)
        if not waiting and halt.look():  # lost since the last look, as the last shards ended
            _halted(report, halt, 0)
        return report, bool(waiting) or halt.lost

    @staticmethod
    async def _statuses(app: procrastinate.App, ids: list[int]) -> dict[int, str]:
        rows = await app.connector.execute_query_all_async(
            "SELECT id, status FROM procrastinate_jobs WHERE id = ANY(%(ids)s)", ids=ids
        )
        return {row["id"]: row["status"] for row in rows}

    @staticmethod
    async def _live_workers(app: procrastinate.App) -> int:
        rows = await app.connector.execute_query_all_async(
            "SELECT count(*) AS live FROM procrastinate_workers "
            "WHERE last_heartbeat > now() - make_interval(secs => %(after)s)",
            after=STALLED_AFTER,
        )
        return int(rows[0]["live"])

    @staticmethod
    async def _requeue_stalled(app: procrastinate.App, waiting: dict[int, Shard]) -> None:
        stalled = await app.job_manager.get_stalled_jobs(
            queue=QUEUE, task_name=TASK, seconds_since_heartbeat=STALLED_AFTER
        )
        for job in stalled:
            if job.id in waiting:
                shard = waiting[job.id].index
                log.warning("the worker of shard %d went silent: handing it to another", shard)
                await app.job_manager.retry_job(job)

    @staticmethod
    async def _cancel_queued(app: procrastinate.App, waiting: dict[int, Shard]) -> None:
        for job_id in waiting:
            await app.job_manager.cancel_job_by_id_async(job_id)  # only those no worker has started

    @staticmethod
    async def _clear_leftovers(app: procrastinate.App) -> None:
        """Delete what earlier coordinators left in the queue: jobs that ended other than well (a
        coordinator that stopped first kept them), and jobs whose worker is gone that no coordinator
        waits for any more (both killed). Each carries its subscribers' profiles; their digests are in
        the delivery log, which this run delivers from."""
        await app.connector.execute_query_async(
            "DELETE FROM procrastinate_jobs AS job WHERE job.queue_name = %(queue)s AND ("
            "job.status IN ('failed', 'cancelled', 'aborted') OR job.status = 'doing' AND NOT EXISTS ("
            "SELECT 1 FROM procrastinate_workers AS worker WHERE worker.id = job.worker_id"
            " AND worker.last_heartbeat > now() - make_interval(secs => %(silent)s)))",
            queue=QUEUE,
            silent=GONE_AFTER,
        )

    @staticmethod
    async def _forget(app: procrastinate.App, ids: list[int]) -> None:
        """Delete the run's jobs that ended other than well (the report says so): each carries its
        subscribers' profiles, and successful ones are deleted by the worker already."""
        await app.connector.execute_query_async(
            "DELETE FROM procrastinate_jobs WHERE id = ANY(%(ids)s) "
            "AND status IN ('failed', 'cancelled', 'aborted')",
            ids=ids,
        )

    def _outcomes(
        self, now: datetime, detailed: bool, recover: Callable[[datetime], list[str]] | None
    ) -> RunReport:
        """What the workers did with the digests planned for ``now`` (read from the delivery log).
        ``recover``: every shard ended, so a send still 'sending' is a killed worker's; not while
        shards were left running, whose sends in flight are not interrupted."""
        report = RunReport(detailed=detailed)
        if recover is not None:
            report.recovered_unknown = recover(now)
        for record in self.store.planned_at(now):
            report.add(_reported(record))
        return report


def _reported(record: DeliveryRecord) -> DigestOutcome:
    """A digest a worker planned, as the coordinator's report shows it (one waiting to be retried: the
    next run sends it by itself)."""
    status, reason = _as_reported(record)
    items = item_reports(record.scored())
    return DigestOutcome(
        record.email, status, reason, items, record.digest_id, retried=record.status == RETRY
    )


def _as_reported(record: DeliveryRecord) -> tuple[Status, str]:
    """How a digest a worker planned shows in the coordinator's report, and why."""
    status = _REPORTED.get(record.status, cast(Status, record.status))
    if record.status == SENDING:  # a worker still sends it (after a stop), or died sending it
        return status, "a worker was sending it when this run ended; the next run reports whether it went"
    if status == record.status:
        return status, record.last_error or ""
    return status, f"{record.status}: {record.last_error or 'queued'}"


def _halted(report: RunReport, halt: Halt, left: int) -> None:
    if halt.lost:  # halted, as a run that finds it lost in its own process: it goes no further
        log.error("%s", LOCK_LOST)
        report.halted = LOCK_LOST
        report.errors.append(LOCK_LOST)
    else:
        report.errors.append(f"stopped: {left} shards left to the workers or the next run")


class _Alone:
    """How long the coordinator has seen no live worker; warns once when that starts."""

    def __init__(self) -> None:
        self.since: float | None = None

    def for_too_long(self, live: int) -> bool:
        if live:
            self.since = None
            return False
        if self.since is None:
            self.since = time.monotonic()
            log.warning("no `newsletter worker` is running: waiting up to %.0f s for one", NO_WORKER_AFTER)
        return time.monotonic() - self.since >= NO_WORKER_AFTER
