"""Delivery against servers that take time to answer: `python benchmarks/throughput.py --latency`.

A Postmark-shaped API on loopback (tests/api_server.py) and the SMTP sink (benchmarks/smtp_sink.py), each in
its own process, wait a fixed delay per request / message (0, 50, 200 ms) before answering. For each server
delay and each way of sending (one message per request or batches; 1..N connections; "auto") it:

1. copies a state database that holds the ingested dump, plans the same pre-built digests in it, as many
   per transaction as a run does (256, or batch size x most requests in flight when that is more), and
   delivers them with the run's own delivery layer (newsletter.deliver: Couriers, the delivery log, the
   transports);
2. prints messages/s, the ideal (messages per request x requests in flight / delay) and the ratio to it;
3. counts at the server what it accepted: every digest once (Message-IDs per recipient), no duplicates.

Then a whole `newsletter run` of ``--api-run`` subscribers to the API at 0 ms (this machine's own limit, the
baseline) and at 200 ms per request (the target: 10,000 digests in under 60 s). In the table, messages are
built once (rank, render, MIME) so each cell measures delivery.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.config import Settings  # noqa: E402
from newsletter.deliver import Couriers  # noqa: E402
from newsletter.deliver.building import chunk_size  # noqa: E402
from newsletter.report import DigestOutcome  # noqa: E402
from newsletter.send import make_transport  # noqa: E402
from newsletter.store import Store  # noqa: E402
from newsletter.subscribers import load_subscribers  # noqa: E402
from tests.api_server import server_process  # noqa: E402

NOW = datetime(2026, 3, 11, 8, tzinfo=UTC)
SENDER = "Papers <digest@bench.example.org>"
SECONDS_PER_CELL = 3.0  # at the ideal rate; cells with no delay send every built message


Connections = int | Literal["auto"]  # as Settings.connections takes it


@dataclass(frozen=True)
class Cell:
    server: str  # api | smtp
    delay: float
    per_request: int  # 1, or the batch size
    connections: Connections

    def ideal(self, opened: int | None = None) -> float | None:
        """Messages a second if only the server's delay counted; ``opened``: connections "auto" opened."""
        if not self.delay:
            return None
        return self.per_request * (opened or self.most_connections()) / self.delay

    def most_connections(self) -> int:
        return 8 if self.connections == "auto" else int(self.connections)

    def messages(self, built: int) -> int:
        ideal = self.ideal()
        if ideal is None:
            return built
        floor = self.per_request * self.most_connections() * 4  # a few rounds of requests at least
        return min(built, max(floor, int(ideal * SECONDS_PER_CELL)))


def cells(delays: list[float], batch: int, most: int) -> list[Cell]:
    counts = [c for c in (1, 2, 4, 8, 16) if c <= most]
    every: list[Connections] = [*counts, "auto"]
    few: list[Connections] = [*counts[:3], "auto"]
    table = []
    for delay in delays:
        table += [Cell("api", delay, 1, c) for c in every]
        table += [Cell("api", delay, batch, c) for c in few]
        table += [Cell("smtp", delay, 1, c) for c in every]
    return table


# --- servers ---------------------------------------------------------------------------------------


def api_received(journal: Path) -> list[tuple[str, str]]:
    if not journal.exists():
        return []
    rows = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines() if line]
    return [(row["to"], row["id"]) for row in rows]


@contextmanager
def server(workdir: Path, cell: Cell, name: str) -> Iterator[tuple[dict[str, Any], list[tuple[str, str]]]]:
    """(settings for the cell's server, what it received: filled in when the block ends)."""
    from throughput import start_sink, stop_sink

    received: list[tuple[str, str]] = []
    if cell.server == "api":
        journal = workdir / f"{name}.jsonl"
        with server_process(journal, cell.delay) as port:
            url = f"http://127.0.0.1:{port}"
            fields = {
                "transport": "postmark",
                "api_key": "token-1",
                "api_base_url": url,
                "batch_size": cell.per_request,
            }
            yield fields, received
        received += api_received(journal)
        return
    proc, port, record = start_sink(workdir, name, ["--delay", str(cell.delay)])
    try:
        yield {"transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port}, received
    finally:
        received += stop_sink(proc, record)


# --- the messages, built once ----------------------------------------------------------------------


def build(workdir: Path, want: int) -> tuple[Path, list[Any]]:
    """A state database with the dump ingested, and ``want`` built digests (message, items, plan)."""
    from throughput import write_inputs

    from newsletter.app import open_pipeline

    dumps, subs = write_inputs(workdir, want * 3 // 2)
    settings = Settings(home=workdir / "base", dumps=dumps, subscribers=subs, ranker="lexical", sender=SENDER)
    ready: list[Any] = []
    with open_pipeline(settings, lock=False) as pipeline:
        pipeline.ingest_folder(NOW)
        chunks = pipeline.digest_builder().chunks(load_subscribers(subs).subscribers, NOW, lambda: False)
        for built in chunks:
            ready += built.ready
            if len(ready) >= want:
                break
        chunks.close()
    return workdir / "base" / "state.db", ready[:want]


# --- one cell --------------------------------------------------------------------------------------


def deliver(workdir: Path, base: Path, ready: list[Any], cell: Cell, name: str) -> dict[str, Any]:
    home = workdir / name
    home.mkdir()
    shutil.copy(base, home / "state.db")
    jobs = ready[: cell.messages(len(ready))]
    with server(workdir, cell, name) as (fields, received):
        settings = Settings(home=home, sender=SENDER, connections=cell.connections, retries=0, **fields)
        with Store(settings.db_url) as store:
            started = time.perf_counter()
            with Couriers(
                store, lambda: make_transport(settings), settings, settings.connections
            ) as couriers:
                statuses = Counter(_send(store, couriers, jobs))
            seconds = time.perf_counter() - started
            opened = couriers.count
    shutil.rmtree(home)
    sent = statuses["sent"]
    keys = Counter(received)
    duplicates = sum(n - 1 for n in keys.values() if n > 1)
    expected = {(m.recipient, m.message_id) for m, _, _ in jobs}
    return {"cell": cell, "sent": sent, "seconds": seconds, "opened": opened, "received": len(received),
            "duplicates": duplicates, "exact": set(keys) == expected and sent == len(jobs)}  # fmt: skip


def _send(store: Store, couriers: Couriers, jobs: list[Any]) -> Iterator[str]:
    size = chunk_size(couriers)  # digests planned per transaction, as a run plans them
    for start in range(0, len(jobs), size):
        chunk = jobs[start : start + size]
        store.plan_digests([plan for _, _, plan in chunk])
        outcomes: list[DigestOutcome] = []
        couriers.deliver_all([(m, items) for m, items, _ in chunk], NOW, outcomes.extend)
        couriers.flush()
        yield from (outcome.status for outcome in outcomes)


# --- a whole run ---------------------------------------------------------------------------------------


def whole_api_run(workdir: Path, n: int, delay: float, name: str) -> dict[str, Any]:
    """One `newsletter run` of ``n`` subscribers to the API; with delay 0 it is this machine's limit."""
    from throughput import write_inputs

    folder = workdir / name
    folder.mkdir()
    dumps, subs = write_inputs(folder, n)
    journal = folder / "api.jsonl"
    with server_process(journal, delay) as port:
        env = {
            **os.environ,
            "NEWSLETTER_HOME": str(folder / "state"),
            "NEWSLETTER_DUMPS": str(dumps),
            "NEWSLETTER_SUBSCRIBERS": str(subs),
            "NEWSLETTER_RANKER": "lexical",
            "NEWSLETTER_TRANSPORT": "postmark",
            "NEWSLETTER_API_KEY": "bench-token",
            "NEWSLETTER_API_BASE_URL": f"http://127.0.0.1:{port}",
            "NEWSLETTER_FROM": SENDER,
        }
        started = time.perf_counter()
        command = [sys.executable, "-m", "newsletter", "run"]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        errors = proc.stderr.read() if proc.stderr else b""
        _, status, usage = os.wait4(proc.pid, 0)  # the run and its builder process (reaped by the run)
        seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"newsletter run failed:\n{errors.decode()[-2000:]}")
    last = json.loads((folder / "state" / "last-run.json").read_text())
    received = api_received(journal)
    duplicates = sum(c - 1 for c in Counter(received).values() if c > 1)
    sent = last["counts"].get("sent", 0)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in last["timings"].items())
    return {"sent": sent, "seconds": seconds, "received": len(received), "duplicates": duplicates,
            "stages": stages, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024}  # fmt: skip


# --- report ----------------------------------------------------------------------------------------


def row(result: dict[str, Any]) -> str:
    cell: Cell = result["cell"]
    rate = result["sent"] / result["seconds"]
    ideal = cell.ideal(result["opened"])
    ratio = f"{rate / ideal:5.2f}" if ideal else "    -"
    ideal_text = f"{ideal:8.0f}" if ideal else "       -"
    conns = f"{cell.connections}" + (f" ({result['opened']})" if cell.connections == "auto" else "")
    ok = "yes" if result["exact"] and not result["duplicates"] else "NO"
    return (
        f"{cell.server:4} {cell.delay * 1000:5.0f} {cell.per_request:7} {conns:>9} {result['sent']:6} "
        f"{result['seconds']:7.2f} {rate:8.0f} {ideal_text} {ratio} {result['received']:8} "
        f"{result['duplicates']:4} {ok:>5}"
    )


HEADER = (
    "srv  delay per-req  in-flight   sent seconds    msg/s    ideal ratio received dups exact\n"
    "       ms                                                   (req x in-flight / delay)"
)


def run(workdir: Path, built: int, delays: list[float], batch: int, most: int, api_run: int) -> int:
    base, ready = build(workdir, built)
    size = sum(len(m.raw) for m, _, _ in ready) / len(ready)
    print(f"built {len(ready)} digests; average {size / 1024:.1f} KiB")
    print(HEADER)
    failed = False
    for index, cell in enumerate(cells(delays, batch, most)):
        result = deliver(workdir, base, ready, cell, f"cell{index}")
        failed |= not result["exact"] or bool(result["duplicates"])
        print(row(result), flush=True)
    for delay in (0.0, 0.2) if api_run else ():
        whole = whole_api_run(workdir, api_run, delay, f"whole{delay}")
        print(
            f"whole `newsletter run`, {api_run} subscribers, API at {delay * 1000:.0f} ms per request, "
            f"defaults (batches of 100, connections auto): {whole['sent']} digests "
            f"in {whole['seconds']:.1f} s "
            f"({whole['sent'] / whole['seconds']:.0f} msg/s); server received {whole['received']}, "
            f"duplicates {whole['duplicates']}"
        )
        print(f"  stages (summed over processes and connections): {whole['stages']}")
        print(
            f"  CPU of the run and its builder: {whole['cpu']:.1f} s "
            f"({whole['cpu'] / max(whole['sent'], 1) * 1000:.2f} ms per digest); "
            f"peak memory (largest process) {whole['rss_mb']:.0f} MB"
        )
        failed |= whole["received"] != whole["sent"] or bool(whole["duplicates"])
    return 1 if failed else 0
