"""Scores are calibrated against the fixed reference papers, never against what the store holds:
a paper naming an interest in its title is sent from a first dump of 1, 3 or 3,000 papers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from newsletter.rank import LexicalRanker, SemanticRanker
from newsletter.rank.base import Ranker
from newsletter.rank.embed import HashingEmbedder
from newsletter.rank.reference import reference_papers
from tests.helpers import cli, make_env
from tests.test_rank_behaviour import minilm, needs_model
from tests.test_rank_corpus import paper, subscriber

# The example: a first dump holding just these, for a profile with exactly these interests.
THREE = [
    (
        "Mamba Meets Retrieval: Selective Recurrence for Long Documents",
        "We study selective recurrent layers for question answering over long documents. A gated scan "
        "keeps a fixed-size memory while reading, and matches attention baselines at a fraction of the cost.",
    ),
    (
        "Gated Linear Attention at Scale",
        "Softmax attention costs time quadratic in the sequence length. We train language models whose "
        "attention is linear in the sequence length, with a data-dependent gate, up to 7B parameters.",
    ),
    (
        "A Unified View of State Space Models for Sequence Modeling",
        "Structured recurrences parameterised as continuous systems have become an alternative to "
        "Transformers. We unify their discretisations and initialisations and compare them on long tasks.",
    ),
]
INTERESTS = ("Mamba", "linear attention", "state space models")


def three_papers() -> list:
    return [paper(title, abstract, rank) for rank, (title, abstract) in enumerate(THREE, start=1)]


def filler(n: int) -> list:
    """n unrelated papers: what a store with thousands of papers holds besides the candidates."""
    topics = ["protein docking", "crop yield", "traffic signals", "bird song", "tax policy", "glaciers"]
    return [
        paper(
            f"Study {i} of {topics[i % 6]}",
            f"We measure {topics[i % 6]} in region {i} over {i % 9} years.",
            10 + i,
        )
        for i in range(n)
    ]


@pytest.fixture(params=["lexical", "semantic-hashing", pytest.param("semantic", marks=needs_model)])
def make(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    kinds = {
        "lexical": LexicalRanker,
        "semantic-hashing": lambda: SemanticRanker(embedder=HashingEmbedder()),
        "semantic": lambda: SemanticRanker(embedder=minilm()),
    }
    return kinds[request.param]


def scores(ranker: Ranker, candidates: list, background: list) -> dict[str, float]:
    ranker.prepare(candidates, background)
    return {s.paper.title: s.score for s in ranker.rank(candidates, subscriber(*INTERESTS))}


def test_a_score_does_not_depend_on_how_many_papers_the_store_holds(make) -> None:  # type: ignore[no-untyped-def]
    candidates = three_papers()
    alone = scores(make(), candidates, [])
    beside_many = scores(make(), candidates, filler(3000))
    assert beside_many == pytest.approx(alone, rel=1e-5)


@pytest.mark.parametrize("store_size", [1, 3, 3000])
def test_a_paper_naming_an_interest_in_its_title_is_sent_whatever_the_store_holds(
    make,
    store_size: int,  # type: ignore[no-untyped-def]
) -> None:
    candidates = three_papers()[:store_size]
    ranker = make()
    ranker.prepare(candidates, filler(max(0, store_size - 3)))
    ranked = ranker.rank(candidates, subscriber(*INTERESTS))
    assert [s.paper.title for s in ranked if not s.relevant] == []


def test_the_reference_papers_are_fixed_and_shipped() -> None:
    reference = reference_papers()
    assert len(reference) == 256
    assert len({p.key for p in reference}) == 256
    assert all(p.title and p.abstract for p in reference)


def dump_text(items: list[tuple[str, str]]) -> str:
    body = "\n\n".join(f"{title}\n\n{abstract}" for title, abstract in items)
    return f"new\n\nDaily Papers\n\nMar 12\n\n{body}\n"


@pytest.mark.parametrize("count", [1, 3])
def test_a_first_dump_of_a_few_papers_sends_the_ones_titled_with_an_interest(
    tmp_path: Path, count: int
) -> None:
    env = make_env(tmp_path)
    (tmp_path / "subscribers.yaml").write_text(
        json.dumps({"subscribers": [{"email": "seq@example.org", "interests": list(INTERESTS)}]})
    )
    (Path(env["NEWSLETTER_DUMPS"]) / "first.txt").write_text(dump_text(THREE[:count]))
    report = json.loads(cli(env, "run", "--dry-run", "--json").stdout)
    (digest,) = report["digests"]
    assert digest["status"] == "dry-run", digest
    assert sorted(p["title"] for p in digest["items"]) == sorted(t for t, _ in THREE[:count])


def test_another_reference_set_can_be_used_for_measuring(tmp_path: Path) -> None:
    import gzip

    from newsletter.rank.reference import REFERENCE, use_reference

    lines = [json.dumps({"key": f"k{i}", "title": f"Paper {i}", "abstract": "A study."}) for i in range(3)]
    other = tmp_path / "other.jsonl.gz"
    other.write_bytes(gzip.compress("\n".join(lines).encode()))
    try:
        use_reference(other)
        assert [p.key for p in reference_papers()] == ["k0", "k1", "k2"]
    finally:
        use_reference(REFERENCE)
    assert len(reference_papers()) == 256
