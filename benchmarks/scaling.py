"""How delivery scales with workers: `throughput.py --executor procrastinate --workers 1,2,4`.

For each worker count W it runs one whole `newsletter run` of the same N subscribers into a fresh SMTP
sink that takes ``--sink-delay`` seconds to accept each message (a remote MTA):

- ``procrastinate``: a fresh PostgreSQL database, W `newsletter worker` processes (each with its own
  empty NEWSLETTER_HOME), and a coordinating `newsletter run` that splits the run into W shards;
- ``local``: the SQLite default, `newsletter run` with NEWSLETTER_WORKERS=W forked processes.

It prints delivery messages/s (from the first to the last message the sink accepted, so start-up,
ingest and the wait for the last shard's report are left out), the speed-up over one worker, the
ideal rate (W workers x 1 connection / delay) and the share of it reached, the whole run's wall time,
peak RSS per worker process (procrastinate workers; local workers are forks of the run), and what the
sink received (duplicates must be 0). PostgreSQL comes from ``--database-url`` (databases
are created next to the one it names) or is started in a temporary folder with initdb + pg_ctl.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pg import PostgresServer, find_bin_dir  # noqa: E402  (the test suite's server helper)

NewDatabase = Callable[[], str]
SINK: list[Any] = []  # throughput.py's start_sink and stop_sink (with its sink options)


@contextmanager
def postgres(url: str | None) -> Iterator[NewDatabase]:
    """A function returning a fresh database URL per call."""
    if url is not None:
        import psycopg
        from psycopg import sql

        base, counter = url.rsplit("/", 1)[0], iter(range(1, 1000))

        def create() -> str:
            name = f"bench_{os.getpid()}_{next(counter)}"
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
                c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return f"{base}/{name}"

        yield create
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL not found: install it (initdb, pg_ctl) or give --database-url")
    root = Path(tempfile.mkdtemp(prefix="newsletter-bench-pg-"))
    root.chmod(0o755)
    server = PostgresServer(bin_dir, root)
    server.start()
    try:
        yield server.new_database
    finally:
        server.stop()


def _vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a live process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _start_workers(
    count: int, workdir: Path, env: dict[str, str]
) -> list[tuple[subprocess.Popen[bytes], Any]]:
    started = []
    for i in range(count):
        home = workdir / f"worker{i}"
        home.mkdir()
        log = (workdir / f"worker{i}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "worker"],
            env={**env, "NEWSLETTER_HOME": str(home)},
            stdout=log,
            stderr=log,
        )
        started.append((proc, log))
    time.sleep(3)  # imported and listening before the run defers its jobs
    return started


def _stop_workers(started: list[tuple[subprocess.Popen[bytes], Any]]) -> list[float]:
    peaks = [_vm_hwm_mb(proc.pid) for proc, _ in started]
    for proc, _ in started:
        proc.send_signal(signal.SIGTERM)
    for proc, log in started:
        proc.wait(timeout=60)
        log.close()
    return peaks


def one_count(
    executor: str, workers: int, base_env: dict[str, str], workdir: Path, new_db: NewDatabase | None
) -> dict[str, Any]:
    """One run with ``workers`` workers; its rate, the sink's count and duplicates, peak RSS per worker."""
    start_sink, stop_sink = SINK
    workdir.mkdir()
    sink, port, record = start_sink(workdir, "sink")
    env = {
        **base_env,
        "NEWSLETTER_HOME": str(workdir / "coordinator"),
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_WORKERS": str(workers),
        "NEWSLETTER_EXECUTOR": executor,
    }
    started: list[tuple[subprocess.Popen[bytes], Any]] = []
    if executor != "local":
        assert new_db is not None
        env["NEWSLETTER_DATABASE_URL"] = new_db()
        started = _start_workers(workers, workdir, env)
    try:
        began = time.perf_counter()
        with (workdir / "run.log").open("wb") as log:
            command = [sys.executable, "-m", "newsletter", "-v", "run"]
            run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
            _, status, usage = os.wait4(run.pid, 0)
        elapsed = time.perf_counter() - began
    finally:
        peaks = _stop_workers(started)
        received = stop_sink(sink, record)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"newsletter run failed:\n{(workdir / 'run.log').read_text()[-2000:]}")
    if executor == "local":  # the workers are forks of the run: its largest process
        peaks = [usage.ru_maxrss / 1024]
    duplicates = sum(c - 1 for c in Counter(received).values() if c > 1)
    first, last = map(float, record.with_suffix(".times").read_text().split())
    return {
        "workers": workers,
        "elapsed": elapsed,
        "window": last - first,
        "received": len(received),
        "dup": duplicates,
        "rss": peaks,
    }


def scaling(args: Any, dumps: Path, subs: Path, workdir: Path, counts: list[int], sink: list[Any]) -> int:
    SINK[:] = sink
    base_env = {
        **os.environ,
        "NEWSLETTER_DUMPS": str(dumps),
        "NEWSLETTER_SUBSCRIBERS": str(subs),
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_FROM": "Papers <digest@bench.example.org>",
        "NEWSLETTER_RANKER": args.ranker,
        "NEWSLETTER_CONNECTIONS": "1",
        "PYTHONPATH": str(ROOT),
    }
    executors = (
        [args.executor, "local"] if args.executor != "local" and not args.no_local else [args.executor]
    )
    ok = True
    with postgres(args.database_url) if args.executor != "local" else _no_postgres() as new_db:
        for executor in executors:
            results = [one_count(executor, w, base_env, workdir / f"{executor}-{w}", new_db) for w in counts]
            ok &= _print(executor, results, args.sink_delay)
    return 0 if ok else 1


@contextmanager
def _no_postgres() -> Iterator[None]:
    yield None


def _print(executor: str, results: list[dict[str, Any]], delay: float) -> bool:
    label = "SQLite, local processes" if executor == "local" else f"PostgreSQL, {executor}"
    print(f"\n{label} (sink delay {delay * 1000:.0f} ms, 1 connection per worker)")
    print(
        "workers   sent  delivery msg/s  x 1 worker  ideal msg/s  of ideal  wall s  wall msg/s"
        "  peak RSS/worker MB  duplicates"
    )
    base = None
    ok = True
    for r in results:
        rate = (r["received"] - 1) / r["window"]  # first to last message the sink accepted
        base = base or rate
        ideal = r["workers"] / delay if delay else float("nan")
        rss = max(r["rss"]) if r["rss"] else float("nan")
        print(
            f"{r['workers']:7d} {r['received']:6d} {rate:15.1f} {rate / base:11.2f} {ideal:12.0f}"
            f" {rate / ideal:9.2f} {r['elapsed']:7.1f} {r['received'] / r['elapsed']:11.1f}"
            f" {rss:19.0f} {r['dup']:11d}"
        )
        ok &= r["dup"] == 0
    return ok
