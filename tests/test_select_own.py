"""A subscriber's own papers (liked in the profile, marked "more" or "less like this") are no candidates of
theirs: never sent, no near miss in a preview, and `explain` says why, with either ranker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.config import PACKAGE_TEMPLATES, Settings
from newsletter.models import Paper, Subscriber, normalize_title
from newsletter.ops.explain import explain
from newsletter.pipeline import Pipeline
from newsletter.rank import LexicalRanker, SemanticRanker
from newsletter.rank.base import Ranker
from newsletter.render import Renderer
from newsletter.selection.select import Selection, Selector
from newsletter.send import make_transport
from newsletter.store import Store

from .test_rank_behaviour import minilm, needs_model
from .test_store_helpers import at, db_url, make_dump, open_store

READER = "lin@example.org"
LIKED = "2608.10835"
SSM = (
    "Selective state space models scan long sequences in linear time. We gate each state space model by"
    " the input, parallelise the scan on accelerators, and match attention on long sequence tasks."
)
VIDEO = (
    "Temporal diffusion transformers denoise video frames jointly. We add motion tokens and a"
    " cascade of upsamplers, and generate minute-long clips with consistent objects and lighting."
)
TODAY = (
    Paper(title="Selective State Space Models for Long Sequences", abstract=SSM, rank=1, arxiv_id=LIKED),
    Paper(title="Linear-Time State Space Models at Scale", abstract=SSM, rank=2, arxiv_id="2608.10836"),
    Paper(title="Motion Tokens for Minute-Long Clips", abstract=VIDEO, rank=3, arxiv_id="2608.10837"),
)
OWN = TODAY[0].title
SIMILAR = TODAY[1].title
WHY = {
    "liked": "not sent: you listed it as a paper you liked",
    "more": "not sent: you marked it 'more like this'",
    "less": "not sent: you marked it 'less like this'",
}

SIMILAR_WHY = {"less": "left out of the next digest: it is too much like a paper you marked 'less like this'"}


@pytest.fixture(params=["lexical", pytest.param("semantic", marks=needs_model)])
def ranker(request: pytest.FixtureRequest) -> Ranker:
    return LexicalRanker() if request.param == "lexical" else SemanticRanker(embedder=minilm())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(db_url(tmp_path)) as opened:
        opened.ingest(make_dump(*TODAY), at(0))
        yield opened


def reader(how: str, most: int = 1) -> Subscriber:
    """One interest, and the paper of today's listing that is their own, as ``how`` names it."""
    liked = (LIKED,) if how == "liked" else ()
    return Subscriber(
        email=READER, interests=("state space models",), liked=liked, max_items=most, cadence="each-dump"
    )


def own(store: Store, how: str, most: int = 1) -> Subscriber:
    if how != "liked":
        store.record_feedback(READER, LIKED, how, at(0.5))  # before any digest: `newsletter feedback`
    return reader(how, most)


def selected(store: Store, ranker: Ranker, sub: Subscriber, preview: bool = False) -> Selection:
    (selection,) = Selector(store, ranker).select([sub], at(1), ignore_due=preview, every_paper=preview)
    return selection


@pytest.mark.parametrize("how", ["liked", "more"])
def test_an_own_paper_is_not_sent_and_a_similar_one_is(store: Store, ranker: Ranker, how: str) -> None:
    """The liked paper came back as "matches: state space models" (`explain`: sent)."""
    chosen = [s.paper.title for s in selected(store, ranker, own(store, how, most=2)).chosen]
    assert chosen == [SIMILAR]


def test_without_it_the_paper_is_sent(store: Store, ranker: Ranker) -> None:
    """The control: the same reader who named no paper gets both."""
    assert {s.paper.title for s in selected(store, ranker, reader("none", most=2)).chosen} == {OWN, SIMILAR}


@pytest.mark.parametrize("how", ["liked", "more", "less"])
def test_an_own_paper_is_no_near_miss_in_the_preview(store: Store, ranker: Ranker, how: str) -> None:
    scored = [s.paper.title for s in selected(store, ranker, own(store, how), preview=True).scored]
    assert OWN not in scored
    assert SIMILAR in scored


@pytest.mark.parametrize("how", ["liked", "more", "less"])
def test_explain_says_the_paper_is_the_readers_own(
    tmp_path: Path, store: Store, ranker: Ranker, how: str
) -> None:
    sub = own(store, how)
    settings = Settings(home=tmp_path / "state", sender="d@example.org")
    pipeline = Pipeline(
        settings, store, ranker, Renderer(PACKAGE_TEMPLATES), lambda: make_transport(settings)
    )
    assert explain(pipeline, sub, LIKED, at(1)).verdict == WHY[how]
    similar = explain(pipeline, sub, SIMILAR, at(1)).verdict  # its twin: scored, no paper of theirs
    assert similar == SIMILAR_WHY.get(how, "in the next digest: paper 1 of 1")


def test_a_mark_hides_the_paper_marked_not_one_titled_as_it_first_was(tmp_path: Path, ranker: Ranker) -> None:
    """A paper listed without an id keeps its first title as its key when a listing corrects the title;
    a new paper that bears that first title is another paper, news to the reader who marked the first."""
    words = " It runs on one accelerator, needs no tuning, and its code and weights are released for all."
    first, fixed = "Gated Scans for Long Sequences", "Gated Scans for Long Sequences with State Space Models"
    other = VIDEO + " We replace temporal attention with state space models." + words
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(Paper(title=first, abstract=SSM + words, rank=1), tag="1"), at(0))
        store.ingest(make_dump(Paper(title=fixed, abstract=SSM + words, rank=1), tag="2"), at(0.2))
        assert store.record_feedback(READER, normalize_title(first), "more", at(0.5)) is not None
        store.ingest(make_dump(Paper(title=first, abstract=other, rank=1), tag="3"), at(0.7))
        scored = selected(store, ranker, reader("more"), preview=True).scored
        assert [(s.paper.title, s.paper.first_dump_seq) for s in scored] == [(first, 3)]


def test_a_liked_title_two_papers_share_hides_both(tmp_path: Path, ranker: Ranker) -> None:
    """Papers with one title and two abstracts are two papers; the reader who named the title named both
    (only the first was hidden: the other came as news, and `explain` called it the next digest's)."""
    twins = ("Scans at Scale", "2608.20001", SSM), ("Scans at Scale", "2608.20002", SSM + " Ablations too.")
    papers = [Paper(title=t, abstract=a, rank=r, arxiv_id=i) for r, (t, i, a) in enumerate(twins, 1)]
    with open_store(db_url(tmp_path)) as store:
        store.ingest(make_dump(*papers, *TODAY), at(0))
        sub = reader("none", most=5).model_copy(update={"liked": ("scans at scale",)})
        assert len(store.papers_named(["Scans at Scale"])) == 2
        scored = selected(store, ranker, sub, preview=True).scored
        assert [s.paper.title for s in scored if s.paper.title == "Scans at Scale"] == []
        settings = Settings(home=tmp_path / "state", sender="d@example.org")
        pipeline = Pipeline(
            settings, store, ranker, Renderer(PACKAGE_TEMPLATES), lambda: make_transport(settings)
        )
        for _, arxiv_id, _ in twins:
            assert explain(pipeline, sub, arxiv_id, at(1)).verdict == WHY["liked"]
