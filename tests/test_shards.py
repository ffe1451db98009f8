"""The execution seam: shards handed to an executor, which may run one twice, on two workers at once,
or lose its worker mid-send; the delivery log still sends every digest once. SQLite and PostgreSQL."""

from __future__ import annotations

import ast
import os
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from newsletter.config import SubscriberList
from newsletter.models import OutgoingMessage
from newsletter.parallel import LocalProcesses
from newsletter.pipeline import Pipeline
from newsletter.render import Renderer
from newsletter.report import RunReport
from newsletter.shards import Executor, InProcess, Shard, ShardWork, split
from newsletter.store import SENT, UNKNOWN, Store

from .conftest import ROOT
from .test_crash import NOW, READERS, Recorder, make_folder, pipeline, renderer

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


@pytest.mark.parametrize("module", ["parallel.py", "shards.py", "distributed.py"])
def test_executors_do_not_import_the_pipeline(module: str) -> None:
    path = ROOT / "newsletter" / module
    assert path.exists()
    assert "newsletter.pipeline" not in _imports(path)
