"""How relevant papers are ordered: the verdict is the best column; the order rewards a second column."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from newsletter.rank import SemanticRanker
from newsletter.rank.embed import HashingEmbedder
from newsletter.rank.scoring import BatchScores, Columns, Exclusions, top_two_mean
from newsletter.rank.semantic import SemanticParams, semantic_available
from tests.test_rank_batch import fraud_paper_and_protein_reader
from tests.test_rank_behaviour import minilm
from tests.test_rank_corpus import paper, papers, subscriber


def test_top_two_mean_ignores_missing_columns() -> None:
    values = np.array([[5.0, 1.0, 3.0], [2.0, -np.inf, -np.inf], [-np.inf, 4.0, 0.0]], dtype=np.float32)
    assert top_two_mean(values).tolist() == [4.0, 2.0, 2.0]
    assert top_two_mean(np.array([[1.5], [-1.0]], dtype=np.float32)).tolist() == [1.5, -1.0]


def scores_by_hand(bar: float | None) -> BatchScores:
    """One subscriber, two columns, four papers; the bar is 3."""
    columns = Columns(1, 4)
    columns.add(np.array([[5.0, 4.0, 2.5, 3.0]], dtype=np.float32))  # e.g. an interest
    columns.add(np.array([[0.0, 3.5, 2.25, -1.0]], dtype=np.float32))  # e.g. the about text
    relevant = columns.best >= 3.0
    none = np.zeros((1, 0), dtype=np.int64)
    exclusions = Exclusions(np.zeros((1, 4), dtype=np.float32), none, 1.0)
    floor = None if bar is None else np.array([[bar]], dtype=np.float32)
    excluded = np.zeros_like(relevant)
    return BatchScores(columns, excluded, exclusions, relevant, lambda *_: [], floor)


def test_a_relevant_paper_two_columns_agree_on_comes_first() -> None:
    pairs = (np.zeros(4, dtype=np.int64), np.arange(4))
    assert scores_by_hand(None).values(*pairs).tolist() == [5.0, 4.0, 2.5, 3.0]
    # 1: both columns agree (mean 3.75); 0 and 3: one column only, clipped at the bar they cleared;
    # 2: not relevant, so it keeps its best column, below every relevant paper.
    assert scores_by_hand(3.0).values(*pairs).tolist() == [3.0, 3.75, 2.5, 3.0]


def rank_both_ways() -> tuple[list, list]:  # type: ignore[type-arg]
    subs = [
        subscriber("protein folding", "speech synthesis", about="Proteins, speech and music"),
        subscriber("graph neural networks", exclude=("molecules",)),
        subscriber("quantum error correction", "sparse matrix kernels", "music generation"),
    ]
    out = []
    for corroborate in (False, True):
        params = replace(SemanticParams(), corroborate=corroborate)
        ranker = SemanticRanker(embedder=HashingEmbedder(), params=params)
        ranker.prepare(papers())
        out.append(list(ranker.rank_many(papers(), subs, only_relevant=False)))
    return out[0], out[1]


def test_corroboration_changes_the_order_never_the_verdicts() -> None:
    plain, corroborated = rank_both_ways()
    for before, after in zip(plain, corroborated, strict=True):
        assert {s.paper.key for s in before if s.relevant} == {s.paper.key for s in after if s.relevant}
        missed = {s.paper.key: s.score for s in before if not s.relevant and "excluded" not in s.why}
        assert {s.paper.key: s.score for s in after if not s.relevant and "excluded" not in s.why} == missed
        scores = [round(s.score, 6) for s in after]
        assert scores == sorted(scores, reverse=True)
        relevant = [s.score for s in after if s.relevant]
        assert not relevant or min(relevant) >= max(missed.values(), default=-np.inf)
        best = {s.paper.key: s.score for s in before}
        assert all(s.score <= best[s.paper.key] + 1e-6 for s in after)  # never above its best column


@pytest.mark.semantic
@pytest.mark.skipif(not semantic_available(), reason="needs the bundled model")
def test_one_generic_word_matched_literally_drops_below_a_corroborated_paper() -> None:
    """With the literal gate off and each interest read alone, "features" alone makes a fraud-detection
    paper relevant, and its best column beats a docking paper's; it stays relevant, but the docking
    paper, which the interest and the about text both match, now comes before it. (With the profile's
    context, as shipped, the fraud paper does not reach the bar at all; nor does the docking paper's
    wording support it, so no word support is asked here either.)"""
    fraud, sub = fraud_paper_and_protein_reader()
    docking = paper(
        "Scoring Candidate Poses for Molecular Docking",
        "A docking program proposes many poses; a learned scorer picks the right one.",
        41,
    )
    titles = {}
    for corroborate in (False, True):
        params = replace(
            SemanticParams(), literal_gate=0.0, context=0.0, support=-np.inf, corroborate=corroborate
        )
        ranker = SemanticRanker(embedder=minilm(), params=params)
        ranker.prepare([*papers(), fraud, docking])
        ranked = ranker.rank([*papers(), fraud, docking], sub)
        titles[corroborate] = [s.paper.title.split()[0] for s in ranked if s.relevant]
    assert titles[False].index("Feature") < titles[False].index("Scoring")
    assert titles[True].index("Scoring") < titles[True].index("Feature")
