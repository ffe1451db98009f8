"""Build the pipeline's parts from Settings. The CLI, the daemon and the preview server share this."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.pipeline import Pipeline
from newsletter.rank import make_ranker
from newsletter.render import Renderer
from newsletter.report import RunReport
from newsletter.send import make_transport
from newsletter.shards import Executor
from newsletter.store import Store
from newsletter.store.vectors import StoreVectorCache


@contextmanager
def open_store(settings: Settings) -> Iterator[Store]:
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the state folder {settings.home} (NEWSLETTER_HOME): {exc.strerror}"
        ) from None
    store = Store(settings.db_url)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def open_pipeline(settings: Settings, *, lock: bool = True) -> Iterator[Pipeline]:
    """A ready pipeline; with ``lock`` it holds the run lock throughout (the database's when shared)."""
    renderer = Renderer(settings.templates_dir)  # fail on a template error before touching state
    with open_store(settings) as store:
        ranker = make_ranker(settings.ranker, cache=StoreVectorCache(store))  # embeddings kept across runs
        executor = make_executor(settings, store)
        transports = lambda: make_transport(settings)  # noqa: E731
        pipeline = Pipeline(settings, store, ranker, renderer, transports, executor=executor)
        if not lock:
            yield pipeline
            return
        with store.lock(settings.home):
            yield pipeline


def make_executor(settings: Settings, store: Store) -> Executor | None:
    """None: this process (or LocalProcesses, with NEWSLETTER_WORKERS > 1); else the task engine."""
    if settings.executor == "local":
        return None
    from newsletter.distributed import ProcrastinateExecutor  # the optional [distributed] extra

    return ProcrastinateExecutor(store, settings.db_url)


def utcnow() -> datetime:
    return datetime.now(UTC)


def save_report(settings: Settings, report: RunReport) -> None:
    """Keep the last run's report for `newsletter status` (written atomically)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    tmp = settings.last_run_file.with_suffix(".tmp")
    data = {"finished_at": utcnow().isoformat(), "summary": report.summary(), **report.to_json()}
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(settings.last_run_file)


def load_last_report(settings: Settings) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(settings.last_run_file.read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return None
