"""A stop asked for while papers are embedded ends the run at the next batch: a daemon's SIGTERM waited
two minutes for a backlog to be embedded (nothing is in flight then, so nothing is lost)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter import interrupt
from newsletter.config import PACKAGE_TEMPLATES
from newsletter.executors import parallel
from newsletter.pipeline import Pipeline
from newsletter.rank import LexicalRanker
from newsletter.rank.semantic import semantic_available
from newsletter.render import Renderer
from newsletter.report import WAITING
from newsletter.send import make_transport
from newsletter.store import Store
from newsletter.subscribers import load_subscribers

from .helpers import add_dumps, env_settings, make_env, seed_names

NOW = datetime(2026, 3, 11, 8, tzinfo=UTC)
EMBEDDING = 60.0  # seconds the slow ranker embeds for, unless stopped: the run would then send


class SlowToEmbed(LexicalRanker):
    """Embeds in batches for a minute, as a backlog does, looking for a stop between batches."""

    def _prepared(self) -> None:
        super()._prepared()
        ends = time.monotonic() + EMBEDDING
        while time.monotonic() < ends:
            interrupt.check()
            time.sleep(0.02)


@pytest.mark.parametrize("build_process", ["off", "on"])
def test_a_stop_while_papers_are_embedded_ends_the_run_and_the_next_run_sends(
    tmp_path: Path, build_process: str
) -> None:
    env = make_env(tmp_path)
    add_dumps(env, seed_names()[0])
    # on: the builder process embeds, and the stop must reach it
    settings = env_settings(env, ranker="lexical", build_process=build_process)
    subscribers = load_subscribers(settings.subscribers)
    stop = threading.Event()
    with Store(settings.db_url) as store:
        renderer = Renderer(PACKAGE_TEMPLATES)
        slow = Pipeline(settings, store, SlowToEmbed(), renderer, lambda: make_transport(settings))
        threading.Timer(1.0, stop.set).start()  # SIGTERM's handler sets it
        report = slow.run(subscribers, NOW, stop=stop)
        due = [o for o in report.digests if o.reason == WAITING]
        assert due and all(o.status == "skipped" for o in report.digests)  # nothing was sent
        assert not list(settings.outbox.glob("*.eml"))
        assert report.timings.get("rank", 0.0) < EMBEDDING / 2  # the minute of embedding was cut short
        again = Pipeline(settings, store, LexicalRanker(), renderer, lambda: make_transport(settings))
        sent = again.run(subscribers, NOW, stop=threading.Event())
    sent_to = {o.subscriber for o in sent.digests if o.status == "sent"}
    assert sent_to and sent_to <= {o.subscriber for o in due}  # the others: nothing relevant


@pytest.mark.skipif(not semantic_available(), reason="needs the bundled model")
def test_the_bundled_model_stops_between_batches_only_inside_a_stoppable_step() -> None:
    from newsletter.rank.minilm import MiniLMEmbedder

    model = MiniLMEmbedder()
    with interrupt.stoppable(lambda: True), pytest.raises(interrupt.Stopped):
        model.embed(["a paper on state space models"])
    assert model.embed(["a paper on state space models"]).shape == (1, model.dim)  # no step: no stop


def test_a_stop_before_the_builder_has_its_handler_still_ends_the_run_calmly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM that reaches the forked builder before it set its handler (a loaded machine) is held
    for it, not the default action: the run reported "the builder process died (exit status -15)"."""
    starts = parallel._die_with_parent
    monkeypatch.setattr(parallel, "_die_with_parent", lambda parent: (time.sleep(0.5), starts(parent)))
    env = make_env(tmp_path)
    add_dumps(env, seed_names()[0])
    settings = env_settings(env, ranker="lexical", build_process="on")
    stop = threading.Event()
    with Store(settings.db_url) as store:
        slow = Pipeline(
            settings, store, SlowToEmbed(), Renderer(PACKAGE_TEMPLATES), lambda: make_transport(settings)
        )
        threading.Timer(0.1, stop.set).start()  # while the builder is still starting
        report = slow.run(load_subscribers(settings.subscribers), NOW, stop=stop)
    assert report.digests and all(o.status == "skipped" for o in report.digests)
    assert any(o.reason == WAITING for o in report.digests)
