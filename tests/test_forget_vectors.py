"""After a run, the vectors of papers no run reads again are deleted, so the state database stops
growing by every paper's vectors; the ones a run reads (windows, recent dumps, liked or marked papers,
profile texts) stay, and a paper needed again after all is embedded again."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from newsletter.config import PACKAGE_TEMPLATES, Settings
from newsletter.errors import StoreError
from newsletter.models import Dump, Paper, Subscriber
from newsletter.pipeline import Pipeline
from newsletter.rank import LexicalRanker, SemanticRanker
from newsletter.rank.reference import reference_papers
from newsletter.render import Renderer
from newsletter.report import RunReport
from newsletter.selection.forget import forget_old_vectors, last_dump_done_with
from newsletter.selection.select import CATCH_UP
from newsletter.send import make_transport
from newsletter.store import DigestPlan, PlannedItem, Store
from newsletter.store.vectors import StoreVectorCache
from newsletter.subscribers import load_subscribers

from .test_rank_semantic import CountingEmbedder

DAY0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
DUMPS = 14  # more than BACKGROUND_DUMPS (10): the first four dumps' papers fall out of every run's reach
LIKED, MARKED = "2601.00021", "2601.00031"  # a paper of dump 2 the file likes, one of dump 3 marked "less"


def item(n: int, k: int) -> dict[str, Any]:
    return {
        "paper": {
            "id": f"2601.{n:04d}{k}",
            "title": f"Study number {n}{k} of coral reef acoustics",
            "summary": f"We record reef sounds at site {n}{k}. Our second sentence reports result {n}{k}.",
        }
    }


@pytest.fixture
def home(tmp_path: Path) -> Settings:
    subs = tmp_path / "subscribers.yaml"
    people = [{"email": "a@example.org", "interests": ["reef acoustics"], "liked": [LIKED]}]
    subs.write_text(yaml.safe_dump({"subscribers": people}), encoding="utf-8")
    (tmp_path / "dumps").mkdir()
    return Settings(
        home=tmp_path / "state", subscribers=subs, dumps=tmp_path / "dumps", sender="d@example.org"
    )


def run_days(
    settings: Settings, embedder: CountingEmbedder, days: range, stop: threading.Event | None = None
) -> RunReport:
    """One dump of two new papers a day, and a run after each, on the semantic ranker with the store cache."""
    subscribers = load_subscribers(settings.subscribers)
    for n in days:
        (settings.dumps / f"day{n:02d}.json").write_text(json.dumps([item(n, 1), item(n, 2)]), "utf-8")
        with Store(settings.db_url) as store:
            if n == 4:
                store.record_feedback("a@example.org", MARKED, "less", DAY0)
            ranker = SemanticRanker(embedder=embedder, cache=StoreVectorCache(store))
            renderer = Renderer(PACKAGE_TEMPLATES)
            pipeline = Pipeline(settings, store, ranker, renderer, lambda: make_transport(settings))
            report = pipeline.run(subscribers, DAY0 + timedelta(days=n), stop=stop)
    return report


def vector_keys(settings: Settings, model: str) -> set[str]:
    with Store(settings.db_url) as store, store._engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT key FROM vectors WHERE model = ?", (model,))
        return {row[0] for row in rows}


def test_a_run_forgets_the_vectors_of_papers_out_of_every_runs_reach(home: Settings) -> None:
    embedder = CountingEmbedder()
    run_days(home, embedder, range(1, DUMPS + 1))
    name = embedder.name
    papers = {key for key in vector_keys(home, name) if key.startswith("2601.")}
    # dumps 5-14 calibrate the next run; dumps 1-4 are in no window: only the liked and marked stay
    recent = {item(n, k)["paper"]["id"] for n in range(5, DUMPS + 1) for k in (1, 2)}
    assert papers == recent | {LIKED, MARKED}
    assert {key for key in vector_keys(home, f"title:{name}") if key.startswith("2601.")} == papers
    sentences = {key for key in vector_keys(home, f"sentence:{name}") if key.startswith("2601.")}
    assert {key.split("#")[0] for key in sentences} == papers
    assert vector_keys(home, f"query:{name}")  # profile texts are kept
    reference = {key for key in vector_keys(home, name) if not key.startswith("2601.")}
    assert reference == {p.key for p in reference_papers()}  # the bundled reference papers' are kept


def test_the_next_run_embeds_only_the_new_papers(home: Settings) -> None:
    embedder = CountingEmbedder()
    run_days(home, embedder, range(1, DUMPS + 1))
    embedder.seen.clear()
    run_days(home, embedder, range(DUMPS + 1, DUMPS + 2))
    new = [item(DUMPS + 1, k)["paper"] for k in (1, 2)]
    assert len(embedder.seen) == 2 * 4  # each new paper's text, title and two sentences
    assert all(any(p["id"][-3:] in text for p in new) for text in embedder.seen)


def test_a_run_that_cannot_forget_warns_and_keeps_its_report(
    home: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    embedder = CountingEmbedder()
    run_days(home, embedder, range(1, DUMPS))

    def locked(self: StoreVectorCache, keys: object) -> int:
        raise StoreError("database error while forgetting vectors: OperationalError: database is locked")

    monkeypatch.setattr(StoreVectorCache, "delete", locked)
    report = run_days(home, embedder, range(DUMPS, DUMPS + 1))
    assert report.ok and [d.subscriber for d in report.digests] == ["a@example.org"]
    assert "old vectors are kept until the next run: database error" in caplog.text
    assert "2601.00041" in vector_keys(home, embedder.name)  # forgotten by the next run instead


def test_an_idle_or_stopped_run_forgets_nothing(home: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = CountingEmbedder()
    run_days(home, embedder, range(1, DUMPS + 1))
    calls: list[object] = []
    monkeypatch.setattr("newsletter.pipeline.forget_old_vectors", lambda *args: calls.append(args) or 0)
    run_days(home, embedder, range(DUMPS, DUMPS + 1))  # the same dump again: nothing new, nothing sent
    stop = threading.Event()
    stop.set()  # a signal came: the run ingests, sends nothing and leaves
    stopped = run_days(home, embedder, range(DUMPS + 1, DUMPS + 2), stop)
    assert stopped.dumps[-1].new == 2 and calls == []
    with Store(home.db_url) as store:  # and a forget a signal reaches deletes no further chunk
        ranker = SemanticRanker(embedder=embedder, cache=StoreVectorCache(store))
        assert forget_old_vectors(store, ranker, [], stop) == 0
        assert forget_old_vectors(store, ranker, []) > 0  # there was something to forget


def test_a_run_that_only_sends_forgets(home: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = CountingEmbedder()
    run_days(home, embedder, range(1, 3))
    calls: list[object] = []
    monkeypatch.setattr("newsletter.pipeline.forget_old_vectors", lambda *args: calls.append(args) or 0)
    people = yaml.safe_load(home.subscribers.read_text())
    people["subscribers"].append({"email": "b@example.org", "interests": ["reef acoustics"]})
    home.subscribers.write_text(yaml.safe_dump(people), encoding="utf-8")
    report = run_days(home, embedder, range(2, 3))  # no new dump: a first digest moves b's watermark
    assert [(d.subscriber, d.status) for d in report.digests if d.status == "sent"] == [
        ("b@example.org", "sent")
    ]
    assert report.dumps[-1].new == 0 and len(calls) == 1


def test_a_paper_that_gets_an_id_drops_the_vectors_of_its_title_key(home: Settings) -> None:
    embedder = CountingEmbedder()
    with Store(home.db_url) as store:
        listed = Paper(title="Reef acoustics at scale", abstract="We record reefs. It works well.", rank=1)
        store.ingest(Dump(source="a", format="hf-text", content_hash="a", papers=(listed,)), DAY0)
        SemanticRanker(embedder=embedder, cache=StoreVectorCache(store)).prepare(
            store.papers_first_seen_after(0)
        )
        with_id = Paper(title=listed.title, abstract=listed.abstract, rank=1, arxiv_id="2601.00099")
        store.ingest(Dump(source="b", format="hf-json", content_hash="b", papers=(with_id,)), DAY0)
        assert [p.key for p in store.papers_first_seen_after(0)] == ["2601.00099"]
    every = set().union(
        *(vector_keys(home, f"{kind}{embedder.name}") for kind in ("", "title:", "sentence:"))
    )
    assert not {key for key in every if key.startswith("reef acoustics at scale")}  # no orphan left


def test_a_forgotten_paper_is_embedded_again_when_needed(home: Settings) -> None:
    embedder = CountingEmbedder()
    run_days(home, embedder, range(1, DUMPS + 1))
    with Store(home.db_url) as store:
        old = store.papers_named(["2601.00011"])
        assert len(old) == 1 and "2601.00011" not in vector_keys(home, embedder.name)
        SemanticRanker(embedder=embedder, cache=StoreVectorCache(store)).prepare(old)
    assert "2601.00011" in vector_keys(home, embedder.name)


def test_a_listed_reference_paper_keeps_its_vectors(home: Settings) -> None:
    reference = reference_papers()[
        0
    ]  # a paper listed without an arXiv id is keyed by its title, as these are
    embedder = CountingEmbedder()
    with Store(home.db_url) as store:
        as_listed = Paper(title=reference.title, abstract=reference.abstract, rank=3)
        store.ingest(Dump(source="d0", format="hf-text", content_hash="h0", papers=(as_listed,)), DAY0)
        for n in range(1, DUMPS + 1):
            _dump(store, n)
        ranker = SemanticRanker(embedder=embedder, cache=StoreVectorCache(store))
        ranker.prepare(store.papers_first_seen_after(0))
        assert forget_old_vectors(store, ranker, []) > 0
    keys = vector_keys(home, embedder.name)
    assert reference.key in keys and "2601.00011" not in keys  # else every run embeds it again


def test_a_lagging_subscriber_keeps_their_window(home: Settings) -> None:
    with Store(home.db_url) as store:
        ids = [_dump(store, n) for n in range(1, DUMPS + 1)]
        people = [Subscriber(email="late@example.org", interests=("x",))]
        assert last_dump_done_with(store, people) == 0  # a first digest: every dump of the day, all here
        store.advance_watermarks(["late@example.org"], ids[1])
        assert last_dump_done_with(store, people) == ids[1]
        weeks = DAY0 + CATCH_UP + timedelta(days=1)  # the dumps went in at DAY0: out of every window since
        assert last_dump_done_with(store, people, weeks) == ids[-1] - 10
        store.record_unsubscribe("late@example.org", DAY0)
        assert last_dump_done_with(store, people) == ids[-1] - 10  # the recent dumps only
        assert last_dump_done_with(store, []) == ids[-1] - 10  # one left out of the file does not count


def test_an_address_held_after_a_bounce_does_not_keep_every_vector(home: Settings) -> None:
    """Its watermark stands still until `retry EMAIL`: with it counted, one dead address in the file
    stopped all forgetting (some 200 vector rows a day on a small list, for good)."""
    with Store(home.db_url) as store:
        ids = [_dump(store, n) for n in range(1, DUMPS + 1)]
        people = [Subscriber(email="gone@example.org", interests=("x",))]
        paper = store.papers_first_seen_after(ids[0], upto=ids[1])[0]
        plan = DigestPlan(
            "d1", "gone@example.org", DAY0, ids[1], "1 paper", (PlannedItem(paper.id, 1, 1.0, ""),)
        )
        store.plan_digests([plan])
        assert last_dump_done_with(store, people) == ids[1]
        store.mark_sending("d1", DAY0, "<m@x>")
        store.mark_failed("d1", DAY0, "550 5.1.1 no such user", permanent=True, bounced=True)
        assert last_dump_done_with(store, people) == ids[-1] - 10  # the recent dumps only


def test_a_new_subscriber_keeps_the_newest_papers_however_many_repeats_came_after(home: Settings) -> None:
    with Store(home.db_url) as store:
        newest = [_dump(store, n, hours=25 * n) for n in range(1, 4)][-1]  # a day apart
        for n in range(DUMPS):  # the same listing again: no new paper
            _dump(store, 3, content=f"repeat {n}", hours=75 + n)
        assert store.latest_paper_seq() == newest and store.latest_dump_seq() == newest + DUMPS
        people = [Subscriber(email="new@example.org", interests=("x",))]
        assert last_dump_done_with(store, people) == newest - 1  # their first digest is those papers
        assert last_dump_done_with(store, []) == newest + DUMPS - 10


def test_a_new_subscriber_keeps_the_older_papers_the_newest_listing_repeats(home: Settings) -> None:
    """A listing saved each time it gains a paper repeats the day's others: a first digest weighs them
    too, so their vectors stay."""
    with Store(home.db_url) as store:
        ids = [_dump(store, n, hours=25 * n) for n in range(1, DUMPS + 1)]  # a day apart
        day = (*_papers(3), *_papers(DUMPS + 1))  # dump 3's papers, listed again beside a new one
        later = DAY0 + timedelta(hours=25 * DUMPS + 1)
        store.ingest(Dump(source="again", format="hf-json", content_hash="again", papers=day), later)
        people = [Subscriber(email="new@example.org", interests=("x",))]
        assert last_dump_done_with(store, people) == ids[2] - 1
        assert last_dump_done_with(store, []) == ids[-1] + 1 - 10


def test_a_small_store_and_the_lexical_ranker_forget_nothing(home: Settings) -> None:
    with Store(home.db_url) as store:
        assert last_dump_done_with(store, []) == 0
        for n in range(1, 4):
            _dump(store, n)
        assert last_dump_done_with(store, []) == 0
        assert forget_old_vectors(store, LexicalRanker(), []) == 0


def _papers(n: int) -> tuple[Paper, ...]:
    return tuple(
        Paper(title=f"Paper {n}{k}", abstract="An abstract.", rank=k, arxiv_id=f"2601.{n:04d}{k}")
        for k in (1, 2)
    )


def _dump(store: Store, n: int, content: str = "", hours: float = 0) -> int:
    papers = _papers(n)
    dump = Dump(source=f"d{n}", format="hf-json", content_hash=f"h{n}{content}", papers=papers)
    store.ingest(dump, DAY0 + timedelta(hours=hours))
    latest = store.latest_dump_seq()
    assert latest is not None
    return latest
