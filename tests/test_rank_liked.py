"""Liked papers (and every "more like this") as one column: its best, calibrated against the reference
papers as a best over that many papers, so the bar does not rise with each paper liked."""

from __future__ import annotations

from dataclasses import replace

import pytest

from newsletter.rank import LexicalRanker, SemanticRanker
from newsletter.rank.core import ChunkedRanker
from newsletter.rank.embed import HashingEmbedder
from newsletter.rank.lexical import LexicalParams
from newsletter.rank.semantic import SemanticParams
from tests.test_rank_corpus import by_title, papers, subscriber

GRASPING = "Robotic Grasping from Pixels with Reinforcement Learning"


def ranker(kind: str, liked_set: bool = True) -> ChunkedRanker:
    r: ChunkedRanker
    if kind == "lexical":
        r = LexicalRanker(replace(LexicalParams(), liked_set=liked_set))
    else:
        r = SemanticRanker(embedder=HashingEmbedder(), params=replace(SemanticParams(), liked_set=liked_set))
    r.prepare(papers())
    return r


def bar(r: ChunkedRanker, liked: tuple[str, ...]) -> float:
    scores = r.breakdown(papers(), subscriber("legal document summarization", liked=liked))
    assert scores.threshold is not None
    return float(scores.threshold[0, 0])


def test_the_bar_does_not_rise_with_the_number_of_papers_liked() -> None:
    r = ranker("semantic")
    one, ten = (GRASPING,), tuple(p.title for p in papers()[:10])
    assert bar(r, ten) == bar(r, one) > bar(r, ())


@pytest.mark.parametrize("kind", ["lexical", "semantic"])
def test_many_liked_papers_let_through_no_more_than_one_does(kind: str) -> None:
    r = ranker(kind)
    liked = tuple(p.title for p in papers()[:10])
    ranked = r.rank(papers(), subscriber("tropical beekeeping", liked=liked))
    assert len([s for s in ranked if s.relevant and s.paper.title not in liked]) <= 1


@pytest.mark.parametrize("kind", ["lexical", "semantic"])
def test_a_near_neighbour_of_a_liked_paper_says_which(kind: str) -> None:
    ranked = ranker(kind).rank(papers(), subscriber("legal document summarization", liked=(GRASPING,)))
    hands = by_title(ranked, "Dexterous Robot Hands")
    assert hands.relevant and hands.why.startswith("similar to a paper you liked: Robotic Grasping")
    assert not by_title(ranked, "Robotic Grasping").relevant  # the liked paper is no neighbour of itself
