"""Processes for one run's new digests: a builder that works ahead, or several workers.

The builder (``NEWSLETTER_BUILD_PROCESS``, on by default for larger lists on a multi-core machine) is
a forked process that ranks, renders and builds the messages of each chunk of subscribers and hands
them to the run's process through a pipe, which holds about one chunk: memory stays flat, and while one
process waits on the mail server the other works. The builder only reads the store; planning, the
delivery log and the transport stay in the run's process, so a crash still leaves at most one
'unknown' delivery.

With ``NEWSLETTER_WORKERS`` > 1, subscribers are split into shards (newsletter/executors/shards.py) and this
module's ``LocalProcesses`` executor forks one worker per shard; each ranks, renders,
plans and sends its shard with its own database and SMTP/API connections, then hands its report back.
The parent has already ingested and delivered what earlier runs left queued, and it holds the run lock,
which the workers share (the lock's file descriptor is inherited). Workers die with the parent
(PR_SET_PDEATHSIG on Linux) and a SIGTERM lets each finish its message in flight; a crash can leave one
'unknown' delivery per worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Protocol, TypeVar

from newsletter.errors import NewsletterError
from newsletter.executors.shards import Shard, ShardWork
from newsletter.report import RunReport, Timings

B = TypeVar("B")

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class LocalProcesses:
    """The local executor: one forked process per shard, each with its own connections."""

    name = "local"

    def run(self, shards: Sequence[Shard], work: ShardWork, stop: threading.Event | None) -> RunReport:
        """The workers' reports. The run lock is this process's: it checks it while they send (they do
        not: on PostgreSQL it is one connection of this process), and stops them when it is lost."""
        context = multiprocessing.get_context("fork")
        jobs = []
        for shard in shards:
            receive, send = context.Pipe(duplex=False)
            args = (work, shard, send, receive, os.getpid())
            process = context.Process(target=_worker, args=args, name=f"newsletter-worker-{shard.index}")
            _start(process)
            send.close()
            jobs.append((process, receive))
        halt = Halt(stop, work.holds_lock)
        report = _collect(jobs, halt)
        if (
            halt.lost or halt.look()
        ):  # halted, as a run that finds it lost in its own process: it goes no further
            log.error("%s", LOCK_LOST)
            report.halted = LOCK_LOST
            report.errors.append(LOCK_LOST)
        return report


STOP_POLL = 0.25  # seconds between a run's looks for a stop while its builder works
LOCK_CHECK = 2.0  # seconds between the parent's looks at the run lock while its workers send
LOCK_LOST = (
    "this run lost the database's run lock (its connection ended): its workers stopped after their "
    "message in flight; the next run sends the rest"
)


class Halt:
    """Whether the workers must stop: a signal set ``stop``, or the run lock is lost (looked at every
    LOCK_CHECK seconds)."""

    def __init__(self, stop: threading.Event | None, holds_lock: Callable[[], bool]) -> None:
        self.stop, self.holds_lock = stop, holds_lock
        self.lost, self._next_look = False, 0.0

    def __call__(self) -> bool:
        if self.stop is not None and self.stop.is_set():
            return True
        if not self.lost and time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + LOCK_CHECK
            self.lost = not self._holds()
        return self.lost

    def look(self) -> bool:
        """Whether the lock is lost, looked at now (at the end of a wait: the last look may be
        LOCK_CHECK seconds old, and what the run does next needs the lock)."""
        self.lost = self.lost or not self._holds()
        return self.lost

    def _holds(self) -> bool:
        try:
            return self.holds_lock()
        except Exception:  # the workers must still be told to stop: counted as lost
            log.exception("cannot tell whether this run still holds its run lock")
            return False


def _collect(jobs: Sequence[tuple[BaseProcess, Connection]], halt: Callable[[], bool]) -> RunReport:
    report = RunReport()
    everyone = [process for process, _ in jobs]
    for process, receive in jobs:
        result = _result_of(process, receive, halt, everyone)
        process.join()
        if isinstance(result, RunReport):
            report.merge(result)
        else:
            problem = result or f"exited with status {process.exitcode}"
            log.error("%s failed: %s", process.name, problem)
            report.errors.append(f"{process.name}: {problem}")
    return report


def _result_of(
    process: BaseProcess, receive: Connection, halt: Callable[[], bool], everyone: Sequence[BaseProcess]
) -> RunReport | str | None:
    """The worker's report (or error text); None if it died without one. Once ``halt`` says so every
    worker still running is told at once (not each after the one before it has finished)."""
    signalled = False
    while not receive.poll(0.2):
        if not process.is_alive():
            break
        if not signalled and halt():
            for each in everyone:  # finish the message in flight, then stop
                if each.is_alive() and each.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(each.pid, signal.SIGTERM)
            signalled = True
    try:
        result: RunReport | str = receive.recv()
    except EOFError:  # killed (the OOM killer, kill -9) before it could report: the others go on
        return None
    return result


def _worker(work: ShardWork, shard: Shard, send: Connection, receive: Connection, parent: int) -> None:
    stop = _start_child(work, parent, receive)
    try:
        send.send(work.deliver_shard(shard, stop))
    except NewsletterError as exc:
        with contextlib.suppress(BrokenPipeError):
            send.send(str(exc))
    except BrokenPipeError:  # the run's process is gone: what this worker sent is in the delivery log
        pass
    finally:
        work.close()
        send.close()


class BuilderError(NewsletterError):
    """The builder process failed or died; what was already sent is recorded."""


@dataclass(frozen=True)
class _Done:
    timings: dict[str, float] = field(default_factory=dict)


class Builds(Protocol):
    """What the builder process runs in (the Pipeline): its timings and connections."""

    timings: Timings

    def after_fork(self) -> None: ...

    def close(self) -> None: ...


def build_ahead(
    pipeline: Builds,
    build: Callable[[Callable[[], bool]], Iterable[B]],
    stopped: Callable[[], bool],
    *,
    strip: Callable[[B], B] | None = None,
) -> Generator[B, None, None]:
    """``build(stopped)`` (the pipeline's chunks of built messages, read-only) run in a forked
    process, one chunk ahead of the caller.

    ``strip`` (when the transport reads only the raw bytes) leaves out what the run does not need
    before a chunk crosses the pipe, e.g. the HTML and text copies, half of it.

    When ``stopped()`` turns true (a signal, the transport down) the builder is told to stop: it
    reports the remaining subscribers as waiting for the next run instead of building them.
    """
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    args = (pipeline, build, strip, send, receive, os.getpid())
    process = context.Process(target=_builder, args=args, name="newsletter-builder")
    _start(process)
    send.close()
    signalled = False
    try:
        while True:
            if stopped() and not signalled:
                os.kill(process.pid or 0, signal.SIGTERM)
                signalled = True
            if not receive.poll(STOP_POLL):  # a stop reaches a builder at work (minutes embedding papers)
                continue
            try:
                item = receive.recv()
            except EOFError:
                raise BuilderError(
                    f"the builder process died (exit status {_exit_status(process)})",
                    hint="digests sent so far are recorded; run again to send the rest",
                ) from None
            if isinstance(item, _Done):
                for stage, seconds in item.timings.items():
                    pipeline.timings.totals[stage] += seconds
                return
            if isinstance(item, str):
                raise BuilderError(item)
            yield item
    finally:
        receive.close()  # a builder blocked writing the next chunk gets EPIPE and ends
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()


def _builder(
    pipeline: Builds,
    build: Callable[[Callable[[], bool]], Iterable[B]],
    strip: Callable[[B], B] | None,
    send: Connection,
    receive: Connection,
    parent: int,
) -> None:
    stop = _start_child(pipeline, parent, receive)
    pipeline.timings = Timings()
    try:
        for built in build(stop.is_set):
            send.send(built if strip is None else strip(built))
        send.send(_Done(dict(pipeline.timings.totals)))
    except NewsletterError as exc:
        send.send(str(exc))
    except BrokenPipeError:  # the run's process is gone or no longer listening
        pass
    finally:
        pipeline.close()
        send.close()


def _start(process: BaseProcess) -> None:
    """Fork ``process`` with no garbage left for it to collect, and nothing of ours for its collector to
    look at: an ONNX Runtime session the parent had dropped, destroyed by the child's collector, hung it
    for good in pthread_cond_destroy (its thread pool's condition variables were copied mid-wait), and
    the run waited on the builder for ever. Frozen objects are also left unwritten (copy-on-write).
    SIGTERM is blocked across the fork: one sent before the child set its handler (see _start_child)
    waits for it, instead of killing the child ("the builder process died (exit status -15)")."""
    gc.collect()
    gc.freeze()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the child's, until its handler
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        gc.unfreeze()


class _Forked(Protocol):
    def after_fork(self) -> None: ...


def _start_child(work: _Forked, parent: int, parents_end: Connection) -> threading.Event:
    """In a forked worker or builder: the event SIGTERM sets, and connections of its own.

    The fork left the child a copy of the pipe's reading end; it is closed, so that once the run's
    process is gone a write to the pipe fails (EPIPE) instead of blocking forever on a full pipe.
    """
    parents_end.close()
    _die_with_parent(parent)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a stop sent meanwhile arrives now
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run's process decides; Ctrl-C reaches it too
    work.after_fork()  # fresh connections in this process (the ranker's cache too)
    return stop


def _exit_status(process: BaseProcess) -> str:
    process.join(timeout=5)
    return str(process.exitcode)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
