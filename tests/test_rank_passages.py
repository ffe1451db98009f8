"""Sentence-level matching of short phrases, and thresholds that grow with a profile's columns."""

from __future__ import annotations

from dataclasses import replace
from statistics import NormalDist

import numpy as np

from newsletter.rank import SemanticRanker
from newsletter.rank.embed import HashingEmbedder
from newsletter.rank.profile import Layout, Profile
from newsletter.rank.scoring import Sentences, max_threshold
from newsletter.rank.semantic import SemanticParams
from newsletter.rank.text import sentences
from tests.test_rank_corpus import by_title, paper, papers, subscriber

REEF = paper(
    "Lightweight Drone Imaging Pipelines",
    "We build a drone imaging pipeline that stitches overlapping frames captured at low altitude. "
    "Frames are aligned with learned keypoints and blended without visible seams. "
    "The pipeline runs on an embedded board carried by the drone itself. "
    "Battery use drops by a third compared with sending every frame to the ground station. "
    "One field study applies it to coral reef monitoring along a shallow lagoon.",
    20,
)


def test_an_abstract_splits_into_sentences() -> None:
    found = sentences(
        paper("T", "First point is made here. Second point follows, e.g. this. 3D works too.", 1)
    )
    assert found == ["First point is made here.", "Second point follows, e.g. this. 3D works too."]


def test_a_paper_without_an_abstract_is_its_title() -> None:
    assert sentences(paper("Only a Title", "", 1)) == ["Only a Title"]


def test_best_sentence_is_the_maximum_over_each_papers_own_sentences() -> None:
    vectors = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]], dtype=np.float32)
    passages = Sentences(vectors, np.array([0, 2, 3, 4]))  # papers own rows 0-1, 2, 3
    best = passages.best(np.array([[1, 0], [0, 1]], dtype=np.float32))
    assert np.allclose(best, [[1.0, 0.6, 0.8], [1.0, 0.8, 0.6]])
    picked = passages.take(np.array([2, 0]))
    assert np.allclose(picked.vectors, vectors[[3, 0, 1]]) and picked.starts.tolist() == [0, 1, 3]


def test_one_sentence_stating_an_interest_lifts_its_score() -> None:
    corpus = [*papers(), REEF]
    scores = {}
    for use in (False, True):
        ranker = SemanticRanker(embedder=HashingEmbedder(), params=replace(SemanticParams(), sentences=use))
        ranker.prepare(corpus)
        scores[use] = by_title(ranker.rank(corpus, subscriber("coral reef monitoring")), "Lightweight").score
    # z-scores are against the reference papers, where a hashed phrase touches almost nothing (the
    # spread is at its floor), so both scores are large; the sentence still adds to the paper's.
    assert scores[True] > scores[False]


def test_threshold_grows_with_the_number_of_columns() -> None:
    t = max_threshold(np.array([1, 2, 3, 6, 12]), 0.01)
    assert np.all(np.diff(t) > 0)
    assert np.isclose(t[0], NormalDist().inv_cdf(0.99), atol=1e-5)
    passing = [1 - NormalDist().cdf(float(x)) ** k for x, k in zip(t, [1, 2, 3, 6, 12], strict=True)]
    assert np.allclose(passing, 0.01, atol=1e-5)  # the same chance of an unrelated paper for each


def test_columns_count_interests_about_liked_and_the_words() -> None:
    layout = Layout.of(
        [
            Profile(("a", "b")),
            Profile(("a", "b", "c", "d"), about="x", liked=("some paper",)),
        ]
    )
    assert layout.columns().tolist() == [3, 7]


def test_verdicts_follow_each_profiles_own_threshold() -> None:
    ranker = SemanticRanker(embedder=HashingEmbedder())
    ranker.prepare(papers())
    subs = [
        subscriber("protein folding"),
        subscriber("protein folding", "speech synthesis", "music generation", "volcano seismology"),
    ]
    ranked = list(ranker.rank_many(papers(), subs, only_relevant=False))
    for sub, scored in zip(subs, ranked, strict=True):
        threshold = float(max_threshold(np.array([len(sub.interests) + 1]), ranker.params.chance)[0])
        for s in scored:
            assert s.relevant == (s.score >= threshold)
    assert ranked[0][0].paper.title.startswith("Protein Folding") and ranked[0][0].relevant


def test_phrase_rows_are_not_reused_for_other_papers() -> None:
    sub = subscriber("graph neural networks", "reinforcement learning")
    ranker = SemanticRanker(embedder=HashingEmbedder())
    ranker.prepare(papers())
    ranker.rank(papers(), sub)
    subset = papers()[2:6]
    fresh = SemanticRanker(embedder=HashingEmbedder())
    fresh.prepare(papers())
    expected = [(s.paper.key, round(s.score, 5)) for s in fresh.rank(subset, sub)]
    assert [(s.paper.key, round(s.score, 5)) for s in ranker.rank(subset, sub)] == expected
