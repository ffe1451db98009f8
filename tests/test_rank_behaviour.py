"""What every ranker must honour, run against the lexical ranker and the semantic one (the real
bundled model; those cases are marked ``semantic`` and skipped when the extra is not installed)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import pytest

from newsletter.rank import LexicalRanker, SemanticRanker
from newsletter.rank.base import Ranker
from newsletter.rank.minilm import MiniLMEmbedder
from newsletter.rank.semantic import semantic_available
from tests.test_rank_corpus import by_title, paper, papers, subscriber


class MemoEmbedder(MiniLMEmbedder):
    """The bundled model, remembering every vector: each test's ranker embeds the reference papers,
    and the model's output for a text never changes."""

    def __init__(self) -> None:
        super().__init__()
        self.memo: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if todo:
            self.memo.update(zip(todo, super().embed(todo), strict=True))
        return np.stack([self.memo[t] for t in texts]) if texts else super().embed(texts)


@cache
def minilm() -> MiniLMEmbedder:
    """One model load (and one embedding per text) for the whole test session."""
    return MemoEmbedder()


needs_model = [
    pytest.mark.semantic,
    pytest.mark.skipif(not semantic_available(), reason="needs the bundled model"),
]


@pytest.fixture(params=["lexical", pytest.param("semantic", marks=needs_model)])
def ranker(request: pytest.FixtureRequest) -> Ranker:
    r: Ranker = LexicalRanker() if request.param == "lexical" else SemanticRanker(embedder=minilm())
    r.prepare(papers())
    return r


def relevant_titles(ranked: list) -> list[str]:  # type: ignore[type-arg]
    return [s.paper.title for s in ranked if s.relevant]


def test_returns_every_paper_best_first(ranker: Ranker) -> None:
    ranked = ranker.rank(papers(), subscriber("protein folding"))
    assert len(ranked) == len(papers())
    scores = [round(s.score, 6) for s in ranked]
    assert scores == sorted(scores, reverse=True)
    assert ranked[0].paper.title.startswith("Protein Folding")


def test_one_strong_interest_is_enough(ranker: Ranker) -> None:
    sub = subscriber("quantum error correction", "medieval poetry", "tropical beekeeping")
    ranked = ranker.rank(papers(), sub)
    assert relevant_titles(ranked) == ["Surface Codes with Fewer Qubits for Quantum Error Correction"]
    assert ranked[0].why == "matches: quantum error correction"


def test_exclude_wins_over_a_match(ranker: Ranker) -> None:
    sub = subscriber("graph neural networks", exclude=("molecules",))
    ranked = ranker.rank(papers(), sub)
    molecules = by_title(ranked, "Graph Neural Networks for Molecule")
    traffic = by_title(ranked, "Graph Neural Networks for Urban Traffic")
    assert traffic.relevant
    assert not molecules.relevant
    assert "excluded" in molecules.why


def test_nothing_relevant_gives_nothing(ranker: Ranker) -> None:
    ranked = ranker.rank(papers(), subscriber("volcano seismology", "glacier melt"))
    assert relevant_titles(ranked) == []


def test_liked_paper_pushes_similar_papers_up(ranker: Ranker) -> None:
    plain = subscriber("tropical beekeeping")
    liking = subscriber(
        "tropical beekeeping", liked=("Robotic Grasping from Pixels with Reinforcement Learning",)
    )
    before = by_title(ranker.rank(papers(), plain), "Dexterous Robot Hands")
    after = by_title(ranker.rank(papers(), liking), "Dexterous Robot Hands")
    assert after.score > before.score
    assert after.relevant and not before.relevant
    assert after.why.startswith("similar to a paper you liked: Robotic Grasping")


def test_what_the_about_text_does_not_want_counts_for_nothing(ranker: Ranker) -> None:
    """ "I do not care about robot hands" is no wish for robot hands: the paper scores as if the
    sentence were not there, and lower than for a subscriber who does care."""
    robots = "dexterous robot hands and robotic grasping"
    scores = {
        about: by_title(ranker.rank(papers(), subscriber("tropical beekeeping", about=about)), "Dexterous")
        for about in (
            "I study bees.",
            f"I study bees. I do not care about {robots}.",
            f"I study bees, not {robots}.",
            f"I study bees and {robots}.",
        )
    }
    plain, *negated, wanted = (s.score for s in scores.values())
    assert negated == pytest.approx([plain, plain])
    assert wanted > plain


def test_liked_by_title_not_among_prepared_papers_still_counts(ranker: Ranker) -> None:
    liking = subscriber("tropical beekeeping", liked=("Robot hands learn grasping skills for objects",))
    ranked = ranker.rank(papers(), liking)
    assert by_title(ranked, "Dexterous Robot Hands").relevant


def test_ties_are_broken_by_trending_rank_only(ranker: Ranker) -> None:
    text = "Sparse matrix multiplication kernels for GPUs in scientific computing."
    later = paper("Sparse Kernels", text, rank=9, arxiv_id="2401.00009")
    sooner = paper("Sparse Kernels", text, rank=2, arxiv_id="2401.00002", times_seen=1)
    off_topic = paper("Volumetric Cloud Rendering Again", "Clouds rendered with ray marching.", rank=1)
    candidates = [later, sooner, off_topic]
    ranker.prepare([*papers(), *candidates])
    ranked = ranker.rank(candidates, subscriber("sparse matrix kernels"))
    assert [s.paper.key for s in ranked] == ["2401.00002", "2401.00009", off_topic.key]
    assert ranked[0].score == ranked[1].score
    assert ranked[0].relevant and not ranked[2].relevant


def test_rank_many_matches_rank(ranker: Ranker) -> None:
    subs = [
        subscriber("protein folding"),
        subscriber("speech synthesis", about="Text to speech for audiobooks"),
    ]
    many = list(ranker.rank_many(papers(), subs, only_relevant=False))  # type: ignore[attr-defined]
    singles = [ranker.rank(papers(), s) for s in subs]
    assert [[(s.paper.key, s.relevant) for s in r] for r in many] == [
        [(s.paper.key, s.relevant) for s in r] for r in singles
    ]


def test_only_relevant_lists_just_the_relevant_papers(ranker: Ranker) -> None:
    subs = [subscriber("graph neural networks"), subscriber("volcano seismology")]
    lists = list(ranker.rank_many(papers(), subs, only_relevant=True))  # type: ignore[attr-defined]
    assert [len(x) for x in lists] == [2, 0]
    assert {s.paper.title[:21] for s in lists[0]} == {"Graph Neural Networks"}
    assert all(s.relevant for s in lists[0])


def test_papers_not_prepared_are_prepared_on_demand(ranker: Ranker) -> None:
    extra = paper(
        "Quantum Error Correction on Trapped Ions", "Quantum error correction with trapped ions.", 30
    )
    ranked = ranker.rank([extra], subscriber("quantum error correction"))
    assert ranked[0].relevant


def test_the_same_papers_prepared_again_are_not_prepared_twice(ranker: Ranker) -> None:
    """Each of `serve`'s pages prepares the same papers: 6 s a page on 5,000 papers, nothing changed."""
    prepared = ranker._catalog  # type: ignore[attr-defined]
    ranker.prepare(list(papers()))  # equal papers, another list
    assert ranker._catalog is prepared  # type: ignore[attr-defined]
    ranker.prepare(papers()[:-1])
    assert ranker._catalog is not prepared  # type: ignore[attr-defined]
    assert relevant_titles(ranker.rank(papers(), subscriber("protein folding")))


def test_a_preparation_a_stop_cut_short_is_done_again() -> None:
    """It was marked done before embedding: the daemon's next tick ranked on the last papers' vectors
    (an IndexError, or digests of 4 papers for 9) until the papers changed."""
    from newsletter import interrupt

    class StoppedOnce(LexicalRanker):
        calls = 0

        def _prepared(self) -> None:
            StoppedOnce.calls += 1
            with interrupt.stoppable(lambda: StoppedOnce.calls == 1):
                interrupt.check()

    ranker = StoppedOnce()
    with pytest.raises(interrupt.Stopped):
        ranker.prepare(papers())
    ranker.prepare(papers())
    assert StoppedOnce.calls == 2
    assert relevant_titles(ranker.rank(papers(), subscriber("protein folding")))


def test_why_is_short_and_human(ranker: Ranker) -> None:
    sub = subscriber("graph neural networks", about="I forecast traffic on road networks with graphs")
    ranked = ranker.rank(papers(), sub)
    assert all(0 < len(s.why) <= 90 for s in ranked)
    assert ranked[0].why.startswith("matches: graph neural networks")


def test_less_like_a_marked_paper_pushes_similar_papers_out(
    ranker: Ranker, request: pytest.FixtureRequest
) -> None:
    if isinstance(ranker, LexicalRanker):  # known miss, kept visible
        reason = (
            "a near tie: the profile's words match the paper a little more than the marked paper does"
            " (5.43 against 5.24), so by the rule it stays; 'five-finger' as one TF-IDF word tipped it"
        )
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    plain = subscriber("robot learning", "audio")
    marked = subscriber(
        "robot learning", "audio", disliked=("Robotic Grasping from Pixels with Reinforcement Learning",)
    )
    before, after = ranker.rank(papers(), plain), ranker.rank(papers(), marked)
    hands_before, hands_after = by_title(before, "Dexterous Robot Hands"), by_title(after, "Dexterous Robot")
    assert hands_before.relevant and not hands_after.relevant
    assert hands_after.score < hands_before.score
    assert hands_after.why.startswith("less like 'Robotic Grasping from Pixels")
    audio_before, audio_after = (
        by_title(before, "Transcribing Spoken"),
        by_title(after, "Transcribing Spoken"),
    )
    assert audio_after.relevant and audio_after.score == audio_before.score  # far from it: untouched
    assert not by_title(after, "Robotic Grasping").relevant  # the marked paper itself, were it new again


def test_less_like_a_paper_not_among_the_prepared_ones_reads_its_title(ranker: Ranker) -> None:
    marked = subscriber("robot learning", disliked=("Robot hands learn in-hand grasping of objects",))
    ranked = ranker.rank(papers(), marked)
    assert not by_title(ranked, "Dexterous Robot Hands").relevant
    assert "you marked" in by_title(ranked, "Dexterous Robot Hands").why


def test_many_liked_papers_let_through_no_more_than_one_does_lexical() -> None:
    """Each "more like this" is a liked-paper column; ten of them must not each add their own chance
    (before: four unrelated papers passed on ten liked papers, one on a single one)."""
    ranker = LexicalRanker()
    ranker.prepare(papers())
    liked = tuple(p.title for p in papers()[:10])
    ranked = ranker.rank(papers(), subscriber("tropical beekeeping", liked=liked))
    assert len([s for s in ranked if s.relevant and s.paper.title not in liked]) <= 1
