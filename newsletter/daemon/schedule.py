"""The daemon: APScheduler wiring, the run lock it holds (Leadership), the subscribers file it re-reads,
and a watch on the wall clock. Each job is one call into the pipeline.

Two jobs: *fetch* (sources bring new dumps into the dumps folder, on a cron expression) and *tick*
(ingest the folder, deliver every due digest, every ``tick_seconds``), which runs on while a fetch
waits out a rate limit. The daemon holds the state folder's run lock for its whole life, so a cron
`newsletter run` cannot overlap it; on a database several hosts share (PostgreSQL) one daemon holds
the database's run lock and the others stand by until it is free (see Leadership).
SIGTERM/SIGINT let the message in flight finish, record it, and exit 0; a fetch waiting to retry
stops waiting. A daemon started while its PostgreSQL server is unreachable waits for it (see
``Daemon._opened``): systemd no longer gives the unit up after five quick failures at boot.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import exc as sa_exc

from newsletter.app import add_to_last_report, open_pipeline, save_report, utcnow
from newsletter.config import Settings
from newsletter.daemon.cron import fetch_schedule
from newsletter.errors import ConfigError, LockedError, NewsletterError, StoreError
from newsletter.pipeline import Pipeline
from newsletter.redact import redact
from newsletter.report import DIGESTS_FAILED
from newsletter.sources.registry import Source, fetch_all, sources_from_settings
from newsletter.store import Store
from newsletter.store.engine import db_errors
from newsletter.subscribers import SubscriberList, load_valid_subscribers

log = logging.getLogger(__name__)

TICK_FAILED = "a daemon tick failed: "
START_WAIT = 120  # seconds a starting daemon waits for the run lock another process holds
CLOCK_WATCH = 5.0  # seconds between looks at the wall clock; a step back by more is followed
SETTLE = 1.0  # seconds a changed subscribers file must keep still before it is read (an editor saving it)
# a tick's summary line at the level of what it reports: a run's exit status 3 (bounces, refusals for
# now) a warning, 1 (a rejected dump, an unknown fate, the transport down) an error
_TICK_LEVEL = {0: logging.INFO, DIGESTS_FAILED: logging.WARNING, 1: logging.ERROR}
START_RETRY = 1.0  # seconds before the first new try to reach an unreachable database at start
START_RETRY_CAP = 60.0  # the wait between tries doubles up to this
# a server that answered and refused this daemon (no such database or role, a wrong password, pg_hba.conf):
# waiting never helps. Not what a server says while it starts, stops or is full (libpq gives no SQLSTATE)
_REFUSED = re.compile(r"FATAL:\s*(?!\s|the database system is |sorry, too many clients|remaining connection)")
MAX_FETCH_FAILURES = 20  # kept for the tick reports while ticks fail (a database down for a day)


class SubscriberFile:
    """subscribers.yaml, reloaded when it changes; a file that cannot be read as a whole (not YAML, a
    problem in ``defaults:``) is reported and the last list kept. A bad entry is not: the file's valid
    entries are taken and the bad one's subscriber waits (``SubscriberList.held``), as in a cron run and
    after a restart; its last good profile would rank the papers they missed against what they were
    changing, and a restart would forget it.

    A changed file is read once it has kept still for ``settle`` seconds, and taken only if it did not
    change while it was read: an editor that saves in place (truncate, then write: nano, VS Code, vim's
    default for a new inode too) leaves a file cut at any point for a moment, and a cut file is often
    valid YAML (a subscriber's last `exclude` topics gone, `max_items: 10` read as 1, the entries
    after the cut left out) that would be kept as "the last valid list".
    """

    def __init__(self, path: Path, settle: float = SETTLE) -> None:
        self.path = path
        self.settle = settle
        self.current, self.problems = _loaded(path)
        self._stamp = self._read_stamp()

    def get(self) -> SubscriberList:
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return self.current
        time.sleep(self.settle)
        if self._read_stamp() != stamp:
            log.info("%s is being written: read at the next tick", self.path)
            return self.current
        try:
            loaded, problems = load_valid_subscribers(self.path)
        except ConfigError as exc:
            if self._read_stamp() == stamp:  # the edit itself is invalid: said once
                self._stamp = stamp
                log.error("%s; keeping the last valid subscribers (%d)", exc, len(self.current.subscribers))
            return self.current
        if self._read_stamp() != stamp:
            log.info("%s changed while it was read: read at the next tick", self.path)
            return self.current
        self._stamp, self.current, self.problems = stamp, loaded, _said(problems)
        log.info("reloaded %s: %d subscribers", self.path, len(self.current.subscribers))
        return self.current

    def _read_stamp(self) -> tuple[int, ...] | None:
        """The file's times, size and inode: the ctime changes even when a copy puts the mtime back."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _loaded(path: Path) -> tuple[SubscriberList, list[str]]:
    subscribers, problems = load_valid_subscribers(path)  # a file that cannot be read: no daemon
    return subscribers, _said(problems)


def _said(problems: list[ConfigError]) -> list[str]:
    """Each bad entry's problem, logged once per change of the file (every tick's report carries it)."""
    for problem in problems:
        log.error("%s; left out until it is fixed (its digests wait)", problem.message)
    return [problem.message for problem in problems]


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        tick_seconds: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        new_database: bool = False,
    ) -> None:
        self.settings = settings
        self.new_database = new_database
        self.tick_seconds = tick_seconds or settings.tick_seconds
        self.clock = clock
        self.stop = threading.Event()
        self.subscribers = SubscriberFile(settings.subscribers)
        self._leader: Leadership | None = None  # set by run(); None: the caller holds the run lock
        self.sources: list[Source] = sources_from_settings(settings, stop=self.stop)
        self._busy = threading.Lock()
        # the last fetch's failures: every tick's report carries them until the next fetch (`status` showed
        # a source failing for months for one tick an hour); with those of fetches no saved report carried
        self._fetch_failures: list[str] = []
        self._unsaved: list[str] = []
        # a job late by any amount (a suspend, a stopped process, a clock jump) runs once, not never:
        # APScheduler's default grace of 1 s dropped it until the next interval
        job_defaults = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        self.scheduler = BlockingScheduler(timezone="UTC", job_defaults=job_defaults)
        scheduler_log = logging.getLogger("apscheduler.scheduler")
        if not any(isinstance(f, StillSending) for f in scheduler_log.filters):
            scheduler_log.addFilter(StillSending())

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT. Holds the run lock throughout (on a shared database: once it has it)."""
        with contextlib.ExitStack() as stack:
            pipeline = self._opened(stack)
            if pipeline is None:  # a signal while the database was unreachable
                log.info("daemon stopped before the database answered")
                return
            leader = self.lead(pipeline)
            try:
                self._serve(pipeline, leader)
            finally:
                leader.release()
        log.info("daemon stopped")

    def _opened(self, stack: contextlib.ExitStack) -> Pipeline | None:
        """The pipeline, once the database answers: a PostgreSQL server unreachable at start (down, still
        starting at boot) is one log line per try, tried again after a wait that doubles up to
        START_RETRY_CAP; any other error ends the daemon at once. None: SIGTERM/SIGINT came first."""
        wait = START_RETRY
        with self._stoppable():  # the whole while: a signal between two tries was the default's (no exit 0)
            for attempt in itertools.count(1):
                try:
                    return stack.enter_context(
                        open_pipeline(self.settings, lock=False, new_database=self.new_database)
                    )
                except StoreError as exc:
                    if not self._unreachable(exc):
                        raise
                    said = redact(exc.message, self.settings.secret_values())
                    log.error(
                        "cannot reach the database (try %d), trying again in %.0f s: %s", attempt, wait, said
                    )
                if self.stop.wait(wait):
                    return None
                wait = min(wait * 2, START_RETRY_CAP)
        return None  # unreachable: count() never ends

    def _unreachable(self, exc: StoreError) -> bool:
        """A shared database's server that refused or dropped the connection (SQLAlchemy's OperationalError
        or InterfaceError); not one that answered no to this daemon (``_REFUSED``), nor SQLite, whose
        OperationalError is the state folder's own trouble."""
        shared = not self.settings.db_url.startswith("sqlite")
        cause = exc.__cause__
        dropped = isinstance(cause, sa_exc.OperationalError | sa_exc.InterfaceError)
        return shared and dropped and _REFUSED.search(str(cause)) is None

    @contextlib.contextmanager
    def _stoppable(self) -> Iterator[None]:
        """SIGTERM/SIGINT set ``stop`` meanwhile (the handlers before restored after)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def lead(self, pipeline: Pipeline) -> Leadership:
        """Who coordinates; a tick stops at its next chunk once this daemon lost the lock it took."""
        self._leader = leader = Leadership(pipeline.store, self.settings.home)
        pipeline.lock_held = leader.held
        return leader

    def _serve(self, pipeline: Pipeline, leader: Leadership) -> None:
        if not pipeline.store.shared:
            leader.take()  # SQLite: the state folder's lock, or LockedError after START_WAIT
        threading.Thread(target=self._watch, name="newsletter-watch", daemon=True).start()
        self._install_signal_handlers()
        self._add_jobs(pipeline)
        log.info(
            "daemon started: tick every %ss, fetch at '%s' (UTC)", self.tick_seconds, self.settings.fetch_cron
        )
        self.scheduler.start()  # blocks until shutdown

    def _watch(self) -> None:
        """Until a signal asks to stop, follow the wall clock (see _follow_clock); then shut the
        scheduler down, waiting for the job in flight: from this thread, not the handler, which may
        interrupt the main thread inside the executor's lock that shutting down takes (a deadlock)."""
        offset = _wall_minus_monotonic()
        while not self.stop.wait(CLOCK_WATCH):
            try:
                offset = self._follow_clock(offset, _wall_minus_monotonic())
            except Exception:  # this thread is the one that shuts the daemon down: it must live on
                log.exception("following the clock failed")
        self._shut_down()

    def _follow_clock(self, before: float, after: float) -> float:
        """APScheduler 3 times the next tick by the wall clock: after NTP set it back three hours (a VM
        resumed) no tick ran for three hours. When it went back, the next tick is now, and the next fetch
        the fetch schedule's next time from the clock as it reads now (it kept the time it had reached)."""
        if after < before - CLOCK_WATCH:
            log.warning("the clock went back %.0f s: ticking now", before - after)
            with contextlib.suppress(JobLookupError):
                self.scheduler.modify_job("tick", next_run_time=datetime.now(UTC))
                fetch = self.scheduler.get_job("fetch")
                if fetch is not None:
                    self.scheduler.reschedule_job("fetch", trigger=fetch.trigger)
        return after

    def _shut_down(self) -> None:
        while True:
            try:
                self.scheduler.shutdown(wait=True)
                return
            except SchedulerNotRunningError:  # a signal before the scheduler started: it does in a moment
                time.sleep(0.05)

    def _add_jobs(self, pipeline: Pipeline) -> None:
        fetch_trigger = fetch_schedule(self.settings.fetch_cron)
        now = self.clock()
        self.scheduler.add_job(self.fetch, fetch_trigger, args=[pipeline], id="fetch", next_run_time=now)
        tick = IntervalTrigger(seconds=self.tick_seconds, timezone="UTC")
        self.scheduler.add_job(self.tick, tick, args=[pipeline], id="tick", next_run_time=now)

    def tick(self, pipeline: Pipeline) -> None:
        with self._busy:
            try:
                if self.stop.is_set():
                    return
                if not self._leads():
                    # a standby still records the sends its database missed when it last led (held.py):
                    # the leader's run calls them 'unknown', and `retry --unknown` would send them twice
                    pipeline.take_held_clicks(wait=False)
                    return
                report = pipeline.run(self.subscribers.get(), self.clock(), stop=self.stop, detailed=False)
                log.log(_TICK_LEVEL[report.exit_status()], "tick: %s", report.summary())
                if report.halted:  # the digests it sent are in the summary; the rest waits for a tick
                    log.error("tick stopped: %s", report.halted)
                report.errors[:0] = self.subscribers.problems + self._fetch_failures  # for `status` too
                save_report(self.settings, report)
                self._unsaved = []
            except NewsletterError as exc:  # the database gone a while, too: one line a tick
                log.error("tick failed: %s", exc)
                self._report_failure(exc)

    def _report_failure(self, exc: NewsletterError) -> None:
        """`status` shows a tick that failed, as an error of the last run's report (whose counts and dumps
        stay: the guard against a lost database reads them)."""
        problem = redact(f"{TICK_FAILED}{exc}", self.settings.secret_values())
        with contextlib.suppress(NewsletterError):  # a full disk: logged above already
            add_to_last_report(self.settings, [problem], replacing=TICK_FAILED)

    def _leads(self) -> bool:
        return self._leader is None or self._leader.check()

    def fetch(self, pipeline: Pipeline) -> None:
        """Fetch new listings into the dumps folder. Ticks go on meanwhile (a source may wait minutes for
        a rate limit): a dump file appears whole (written aside, then renamed), so a tick sees it or not."""
        with self._busy:
            try:
                leads = self._leads()
            except NewsletterError as exc:
                log.error("fetch skipped: %s", exc)
                return
        if not leads:
            return
        written, failures = fetch_all(self.sources, self.clock(), self.stop)
        secrets = self.settings.secret_values()
        new = [redact(failure, secrets) for failure in failures]
        for failure in new:
            log.error("%s", failure)
        with self._busy:  # the tick reports carry them, so `status` shows them (each once)
            self._fetch_failures = list(dict.fromkeys(self._unsaved + new))[-MAX_FETCH_FAILURES:]
            self._unsaved = self._fetch_failures
        if written:
            self.tick(pipeline)

    def _install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, _on_hangup)  # its default killed the daemon mid-message, silently

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info(
            "received %s: stopping once the message in flight, if any, is sent", signal.Signals(signum).name
        )
        self.stop.set()  # the watcher thread shuts the scheduler down (see _watch)


def _wall_minus_monotonic() -> float:
    """Constant while the wall clock runs on; it drops when the clock is set back."""
    return time.time() - time.monotonic()


class StillSending(logging.Filter):
    """APScheduler's warning for a tick due while the last one still sends (every tick of a long run)
    as the one line of information it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        ticking = "maximum number of running instances" in str(record.msg) and "Daemon.tick" in str(
            record.args
        )
        if ticking and record.levelno == logging.WARNING:  # not the fetch job's: that says something else
            record.msg, record.args = "tick skipped: the last one is still sending", None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _on_hangup(signum: int, frame: FrameType | None) -> None:
    log.warning(
        "received SIGHUP: nothing to reload (the subscribers file is read again when it changes); "
        "restart the daemon to change its settings"
    )


class Leadership:
    """Which daemon coordinates. SQLite: the one holding the state folder's lock from the start.

    A shared database (PostgreSQL): the daemons of every host try the database's run lock at each job;
    the one that gets it keeps it (an advisory lock on a connection of its own) and plans and sends,
    the others stand by. When the holder dies its connection ends, the server releases the lock, and
    the next standby to tick takes over.
    """

    def __init__(self, store: Store, home: Path) -> None:
        self._store = store
        self._home = home
        self._lock = store.coordinator_lock() if store.shared else None
        self._file = contextlib.ExitStack()
        self._standby_logged = False

    def take(self) -> None:
        """The state folder's lock, waited for up to START_WAIT: a command holding it a moment (a
        `retry`, a `prune`, a preview ingesting) refused a restarting daemon at once, and systemd gives
        a unit up after five quick failures. Two daemons on one folder still fail, after the wait."""
        try:
            self._file.enter_context(self._store.lock(self._home))
        except LockedError:
            log.warning("another process holds the run lock: waiting up to %d s for it", START_WAIT)
            self._file.enter_context(self._store.lock(self._home, timeout=START_WAIT))

    def held(self) -> bool:
        """True while this daemon still holds the lock it took: a run checks it before each chunk (the
        lock's connection ended by a DBA or a proxy: another daemon may plan and send now)."""
        return self._lock is None or self._lock.held()

    def check(self) -> bool:
        """True when this daemon coordinates now (taking the lock if it is free)."""
        if self._lock is None:
            return True
        if self._lock.held():
            return True
        with db_errors("taking the run lock"):
            got = self._lock.try_acquire()
        if got:
            log.info("this daemon now holds the run lock of the shared database: it plans and sends")
            self._standby_logged = False
        elif not self._standby_logged:
            log.info("standing by: another daemon holds the run lock of the shared database")
            self._standby_logged = True
        return got

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
        self._file.close()


def run_daemon(settings: Settings, **kwargs: Any) -> None:
    Daemon(settings, **kwargs).serve()
