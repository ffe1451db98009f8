"""The execution seam: shards handed to an executor, which may run one twice, on two workers at once,
or lose its worker mid-send; the delivery log still sends every digest once. SQLite and PostgreSQL."""

from __future__ import annotations

import ast
import dataclasses
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from newsletter.deliver import FAILED_IN_A_ROW, STOPPED
from newsletter.errors import SendError
from newsletter.executors import parallel
from newsletter.executors.parallel import LocalProcesses
from newsletter.executors.shards import Executor, InProcess, Shard, ShardWork, split
from newsletter.models import OutgoingMessage
from newsletter.pipeline import Pipeline
from newsletter.render import Renderer
from newsletter.report import RunReport
from newsletter.selection.select import Selector
from newsletter.store import SENT, UNKNOWN, Store
from newsletter.subscribers import SubscriberList, load_subscribers

from .conftest import ROOT
from .helpers import seed_names
from .test_crash import (
    NOW,
    READERS,
    SEEDS,
    Recorder,
    StopAtFirst,
    make_folder,
    pipeline,
    renderer,
    write_subscribers,
)

__all__ = ["renderer"]  # the module-scoped fixture


class TwoWorkers:
    """Every shard run by two workers at the same moment (two machines given the same job)."""

    name = "two-workers"

    def __init__(self, first: Pipeline, second: Pipeline) -> None:
        self.workers = (first, second)

    def run(self, shards: Sequence[Shard], work: ShardWork, stop: threading.Event | None) -> RunReport:
        report = RunReport()
        for shard in shards:
            barrier = threading.Barrier(2)

            def one(
                worker: Pipeline, shard: Shard = shard, barrier: threading.Barrier = barrier
            ) -> RunReport:
                barrier.wait()
                return worker.deliver_shard(shard, stop)

            with ThreadPoolExecutor(2) as pool:
                for result in pool.map(one, self.workers):
                    report.merge(result)
        return report


class KilledAtSend(Recorder):
    """Accepts messages until the ``at``-th, where the process dies (kill -9) inside send."""

    def __init__(self, journal: Path, at: int) -> None:
        super().__init__(journal=journal)
        self.at = at

    def send(self, message: OutgoingMessage) -> None:
        if len(self.sent) + 1 == self.at:
            with self.journal.open("a", encoding="utf-8") as out:  # type: ignore[union-attr]
                out.write(message.recipient + "\n")  # handed over: the server may have it
            os.kill(os.getpid(), signal.SIGKILL)
        super().send(message)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


def _pipeline(
    folder: Path,
    url: str,
    renderer: Renderer,
    transport: Recorder,
    executor: Executor | None = None,
    **options: Any,
) -> tuple[Pipeline, SubscriberList]:
    made, subs = pipeline(folder, renderer, transport, database_url=url, build_process="off", **options)
    made.executor = executor
    return made, subs


def _log(url: str) -> dict[str, str]:
    with Store(url) as store:
        return {d.email: d.status for d in store.deliveries(with_items=False)}


def test_a_shard_delivered_twice_sends_each_digest_once(
    folder: Path, store_url: str, renderer: Renderer
) -> None:
    transport = Recorder()
    made, subs = _pipeline(folder, store_url, renderer, transport, InProcess(repeat=2), workers=2)
    with made.store:
        report = made.run(subs, NOW)

    assert sorted(transport.sent) == sorted(READERS)  # every reader once, though each shard ran twice
    assert _log(store_url) == dict.fromkeys(READERS, SENT)
    assert report.statuses[SENT] == len(READERS)


def test_a_shard_run_by_two_workers_at_once_sends_each_digest_once(
    folder: Path, store_url: str, renderer: Renderer
) -> None:
    transport = Recorder()
    first, subs = _pipeline(folder, store_url, renderer, transport, workers=1)
    second, _ = _pipeline(folder, store_url, renderer, transport, workers=1)
    first.executor = TwoWorkers(first, second)
    with first.store, second.store:
        first.run(subs, NOW)

    assert sorted(transport.sent) == sorted(READERS)
    assert _log(store_url) == dict.fromkeys(READERS, SENT)


def test_a_shard_whose_worker_dies_mid_send_is_redelivered_without_resending(
    folder: Path, store_url: str, renderer: Renderer
) -> None:
    journal = folder / "journal.txt"
    dying, subs = _pipeline(folder, store_url, renderer, KilledAtSend(journal, at=2), LocalProcesses())
    with dying.store:
        report = dying.run(subs, NOW)  # one shard, in a forked worker that is killed at its 2nd send
    assert report.errors and "newsletter-worker-0" in report.errors[0]
    handed_over = journal.read_text().split()
    assert len(handed_over) == 2

    again = Recorder(journal=journal)
    redo, _ = _pipeline(folder, store_url, renderer, again, InProcess())
    (shard,) = split(subs.subscribers, 1, NOW, max_per_run=None, send_rate=None)
    with redo.store:
        redo.deliver_shard(shard)  # the engine hands the dead worker's job to another one
        redo.run(subs, NOW)  # the next run: what was planned but never sent, and the interrupted one

    received = journal.read_text().split()
    assert sorted(received) == sorted(READERS)  # each once: the one killed in send is not sent again
    log = _log(store_url)
    assert log[handed_over[1]] == UNKNOWN
    assert [email for email, status in log.items() if status != SENT] == [handed_over[1]]


def _imports(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    "module", ["executors/parallel.py", "executors/shards.py", "executors/distributed.py"]
)
def test_executors_do_not_import_the_pipeline(module: str) -> None:
    path = ROOT / "newsletter" / module
    assert path.exists()
    assert "newsletter.pipeline" not in _imports(path)


class Counting(InProcess):
    """Runs each shard here and remembers how many shards each run handed out."""

    def __init__(self) -> None:
        super().__init__()
        self.handed_out: list[int] = []

    def run(self, shards: Sequence[Shard], work: ShardWork, stop: threading.Event | None) -> RunReport:
        self.handed_out.append(len(shards))
        return super().run(shards, work, stop)


def test_a_run_with_nothing_due_hands_out_no_shard(folder: Path, store_url: str, renderer: Renderer) -> None:
    """A daemon ticks every few minutes: with every digest sent, it starts no shard (no process, no
    job carrying every profile) and still reports each subscriber's reason."""
    transport, executor = Recorder(), Counting()
    made, subs = _pipeline(folder, store_url, renderer, transport, executor, workers=2)
    with made.store:
        made.run(subs, NOW)
        again = made.run(subs, NOW + timedelta(minutes=5))
    assert executor.handed_out == [2]
    assert sorted(transport.sent) == sorted(READERS)
    assert sorted((d.subscriber, d.reason) for d in again.digests) == [
        (reader, "nothing new") for reader in sorted(READERS)
    ]


def test_a_forked_shard_does_not_check_its_parent_s_run_lock(
    folder: Path, store_url: str, renderer: Renderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is on one connection of the parent's: children checking it at once over it hung."""
    made, _ = _pipeline(folder, store_url, renderer, Recorder(), Counting(), workers=2)
    with made.store:
        monkeypatch.setattr(made.store, "dispose_after_fork", lambda: None)  # this is no child: keep them
        made.lock_held = lambda: False  # the parent's check, as on a lost lock
        made.after_fork()
        assert made.lock_held()


def test_triage_gives_the_reasons_select_gives(folder: Path, store_url: str, renderer: Renderer) -> None:
    """What a coordinator keeps back without ranking is what a run would skip, for the same reason."""
    made, subs = _pipeline(folder, store_url, renderer, Recorder(), workers=1)
    with made.store:
        selector = Selector(made.store, made.ranker)
        made.ingest_folder(NOW)
        first = _triaged(selector, subs, NOW), _selected(made, subs, NOW)
        made.run(subs, NOW)
        made.store.record_unsubscribe(READERS[0], NOW)
        shutil.copy(SEEDS / seed_names()[1], folder / "dumps")
        made.ingest_folder(NOW)  # new papers, but the daily readers are not due before midnight
        later = NOW + timedelta(hours=1)
        second = _triaged(selector, subs, later), _selected(made, subs, later)
    assert first == ({"": set(READERS)}, {"": set(READERS)})
    assert second[0] == second[1] == {"unsubscribed": {READERS[0]}, "not due": set(READERS[1:])}


def _triaged(selector: Selector, subs: SubscriberList, now: datetime) -> dict[str, set[str]]:
    """Subscribers by the reason triage keeps them back ("": handed out)."""
    work, idle = selector.triage(subs.subscribers, now)
    return _by_reason([("", s.email) for s in work] + [(sel.reason, sel.subscriber.email) for sel in idle])


def _selected(made: Pipeline, subs: SubscriberList, now: datetime) -> dict[str, set[str]]:
    """Subscribers by the reason a run's selection skips them ("": ranked, relevant papers or not)."""
    pairs = []
    for sel in made.select(subs.subscribers, now):
        reason = "" if sel.reason in ("", "nothing relevant") else sel.reason
        pairs.append((reason, sel.subscriber.email))
    return _by_reason(pairs)


def _by_reason(pairs: list[tuple[str, str]]) -> dict[str, set[str]]:
    reasons: dict[str, set[str]] = {}
    for reason, email in pairs:
        reasons.setdefault(reason, set()).add(email)
    return reasons


@pytest.mark.parametrize("cap", [None, 2])
def test_a_shard_run_again_sends_what_its_stopped_attempt_planned_within_the_cap(
    folder: Path, store_url: str, renderer: Renderer, cap: int | None
) -> None:
    """A worker stopped mid-shard hands the job back; the next attempt sends the digests the first
    planned (their watermarks moved: they are not selected again) and plans no more than the cap left."""
    stop = threading.Event()
    first = StopAtFirst(stop)
    made, subs = _pipeline(folder, store_url, renderer, first, workers=1)
    (shard,) = split(subs.subscribers, 1, NOW, max_per_run=cap, send_rate=None)
    with made.store:
        made.ingest_folder(NOW)
        stopped = made.deliver_shard(shard, stop)
        assert first.sent == [READERS[0]] and stopped.skipped[STOPPED] == (cap or 3) - 1
        second = Recorder()
        made.transport_factory = lambda: second
        report = made.deliver_shard(dataclasses.replace(shard, attempt=1))
    planned = READERS[: cap or 3]
    assert sorted(first.sent + second.sent) == sorted(planned)
    assert _log(store_url) == dict.fromkeys(planned, SENT)
    assert report.statuses[SENT] == len(planned) - 1


def test_triage_before_any_dump_says_nothing_new_as_select_does(
    folder: Path, store_url: str, renderer: Renderer
) -> None:
    made, subs = _pipeline(folder, store_url, renderer, Recorder(), workers=1)
    with made.store:
        made.store.record_unsubscribe(READERS[0], NOW)
        triaged = _triaged(Selector(made.store, made.ranker), subs, NOW)
        selected = _selected(made, subs, NOW)
    assert triaged == selected == {"nothing new": set(READERS)}


def test_fewer_subscribers_with_work_than_workers_make_no_empty_shard(
    folder: Path, store_url: str, renderer: Renderer
) -> None:
    executor = Counting()
    made, subs = _pipeline(folder, store_url, renderer, Recorder(), executor, workers=8)
    with made.store:
        made.run(subs, NOW)
    assert executor.handed_out == [len(READERS)]


def test_a_shard_stopped_after_reaching_its_cap_is_finished(
    folder: Path, store_url: str, renderer: Renderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the cap is reached the rest are "run cap reached", not "stopped before its turn": a stopped
    worker whose shard has nothing left to send does not hand it back (and wait for another worker)."""
    from newsletter.executors.distributed import _unfinished

    monkeypatch.setattr("newsletter.deliver.building.PLAN_BATCH", 1)  # built one at a time, after the stop
    stop = threading.Event()
    made, subs = _pipeline(folder, store_url, renderer, StopAtFirst(stop), workers=1)
    (shard,) = split(subs.subscribers, 1, NOW, max_per_run=1, send_rate=None)
    with made.store:
        made.ingest_folder(NOW)
        report = made.deliver_shard(shard, stop)
    assert report.statuses[SENT] == 1
    assert report.skipped == {"run cap reached; due at the next run": 2}
    assert not _unfinished(report)


class _GoneParent:
    """A shard's work whose run's process is gone by the time it reports."""

    def after_fork(self) -> None: ...

    def close(self) -> None: ...

    def deliver_shard(self, shard: object, stop: object) -> RunReport:
        return RunReport()


class _SendsUntilStopped:
    """A shard's work that sends until its worker is told to stop, in a run whose lock is gone."""

    def after_fork(self) -> None: ...

    def close(self) -> None: ...

    def holds_lock(self) -> bool:
        return False  # a DBA ended the lock's connection

    def deliver_shard(self, shard: object, stop: threading.Event) -> RunReport:
        report = RunReport()
        report.errors.append("stopped" if stop.wait(60) else "sent on")
        return report


def test_local_workers_stop_when_their_run_loses_its_lock() -> None:
    """The parent checked nothing while its workers sent (and they must not use its lock connection):
    a second run took the lock and both sent."""
    started = time.monotonic()
    shards = [Shard(index, 2, (), NOW) for index in range(2)]
    report = LocalProcesses().run(shards, cast(ShardWork, _SendsUntilStopped()), None)
    assert report.errors == ["stopped", parallel.LOCK_LOST]  # each worker's same error once
    assert report.halted == parallel.LOCK_LOST  # the run goes no further (it forgot vectors after it)
    assert time.monotonic() - started < 30


class _CannotTell(_SendsUntilStopped):
    def holds_lock(self) -> bool:
        raise RuntimeError("the lock's connection is in a state nobody foresaw")


def test_local_workers_stop_when_their_run_cannot_tell_whether_it_holds_its_lock() -> None:
    """An error from the check left the workers running, unsupervised."""
    shards = [Shard(index, 2, (), NOW) for index in range(2)]
    report = LocalProcesses().run(shards, cast(ShardWork, _CannotTell()), None)
    assert report.errors == ["stopped", parallel.LOCK_LOST]  # each worker's same error once


def test_a_worker_whose_run_is_gone_exits_quietly() -> None:
    """It printed a BrokenPipeError traceback (and exited 1) after a kill -9 of its run."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    receive.close()  # the run's end: gone
    args = (_GoneParent(), None, send, receive, os.getpid())
    process = context.Process(target=parallel._worker, args=args)
    process.start()
    process.join(30)
    assert process.exitcode == 0


def test_a_worker_whose_shard_found_the_transport_down_sends_the_next_shard(
    folder: Path, store_url: str, renderer: Renderer
) -> None:
    """A `newsletter worker` keeps one Pipeline for every job: the stop one shard's failures called for
    stayed with it, and every later shard it took sent nothing, reported ok."""
    down = SendError("cannot connect to SMTP server 127.0.0.1:25: refused", transport_down=True)
    transport = Recorder({READERS[0]: [down]})
    made, subs = _pipeline(folder, store_url, renderer, transport)
    with made.store:
        made.ingest_folder(NOW)
        first = made.deliver_shard(split(subs.subscribers, 1, NOW, max_per_run=None, send_rate=None)[0])
        later = NOW + timedelta(days=1)
        shutil.copy(SEEDS / seed_names()[1], folder / "dumps")
        made.ingest_folder(later)
        second = made.deliver_shard(split(subs.subscribers, 1, later, max_per_run=None, send_rate=None)[0])
    assert first.errors and "cannot send now" in first.errors[0] and first.statuses["failed"] == 1
    assert second.statuses["sent"] >= 1 and not second.errors


def test_each_worker_process_stops_after_failures_in_a_row_and_says_why(
    tmp_path: Path, renderer: Renderer
) -> None:
    """With --workers each process counts its own (they share no memory); each one's reason reaches the
    run's report (it said nothing: errors was empty), a reason both give once."""
    folder = make_folder(tmp_path)
    write_subscribers(folder / "subscribers.yaml")  # 60 subscribers
    subs = load_subscribers(folder / "subscribers.yaml").subscribers
    busy = SendError("SMTP sender refused: 452 4.3.1 Insufficient system storage")
    transport = Recorder({s.email: [busy] * 9 for s in subs})
    made, listed = pipeline(folder, renderer, transport, retry_backoff=0.0, workers=2, build_process="off")
    with made.store:
        report = made.run(listed, NOW)
    assert report.statuses["failed"] == 2 * FAILED_IN_A_ROW and report.statuses["sent"] == 0
    assert len([e for e in report.errors if "requests in a row failed" in e]) == 1  # the same one, once
