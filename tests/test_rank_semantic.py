"""SemanticRanker mechanics with the in-package hashing embedder, and the real model's synonyms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from newsletter.rank import LexicalRanker, SemanticRanker
from newsletter.rank.breakdown import column_name
from newsletter.rank.embed import HashingEmbedder, MemoryVectorCache
from newsletter.rank.profile import Layout, compile_profile
from newsletter.rank.reference import reference_papers
from newsletter.rank.semantic import SemanticParams, semantic_available
from newsletter.rank.text import plain_word, sentences
from tests.test_rank_behaviour import minilm
from tests.test_rank_corpus import by_title, paper, papers, subscriber


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, remembering every text it was asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        return super().embed(texts)


def test_papers_are_embedded_once_and_cached_by_model_and_key() -> None:
    embedder, cache = CountingEmbedder(), MemoryVectorCache()
    SemanticRanker(embedder=embedder, cache=cache).prepare(papers())
    SemanticRanker(embedder=embedder, cache=cache).prepare(papers())
    every = [*papers(), *reference_papers()]  # the candidates and the papers scores are calibrated on
    split = [sentences(p) for p in every]
    assert len(embedder.seen) == 2 * len(every) + sum(map(len, split))  # paper, title, sentences
    key = papers()[0].key
    assert set(cache.get("hashing-bow", [key])) == {key}
    assert set(cache.get("title:hashing-bow", [key])) == {key}
    assert len(cache.get("sentence:hashing-bow", [f"{key}#{i}" for i in range(len(split[0]))])) == len(
        split[0]
    )


def test_profile_texts_are_embedded_once_per_content() -> None:
    embedder = CountingEmbedder()
    ranker = SemanticRanker(embedder=embedder)
    ranker.prepare(papers())
    embedder.seen.clear()
    subs = [subscriber("protein folding", about="Structures of proteins")] * 3
    list(ranker.rank_many(papers(), subs))
    ranker.rank(papers(), subscriber("protein folding"))
    assert sorted(embedder.seen) == ["Structures of proteins", "protein folding"]


def test_an_interest_that_is_one_acronym_is_embedded_spelled_out() -> None:
    embedder = CountingEmbedder()
    ranker = SemanticRanker(embedder=embedder)
    ranker.prepare([*papers(), paper("Neural operators", "Fourier neural operators (FNO) for PDEs.", 99)])
    embedder.seen.clear()
    ranker.rank(papers(), subscriber("FNO", "protein folding"))
    assert sorted(embedder.seen) == [
        "FNO (fourier neural operators)",
        "protein folding",
    ]
    plain = SemanticRanker(embedder=embedder, params=SemanticParams(spell_acronyms=False))
    plain.prepare(papers())
    embedder.seen.clear()
    plain.rank(papers(), subscriber("FNO"))
    assert embedder.seen == ["FNO"]


def test_vectors_are_unit_length() -> None:
    ranker = SemanticRanker(embedder=HashingEmbedder())
    vectors = ranker.embed_papers(papers())
    assert vectors.shape == (len(papers()), HashingEmbedder().dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_liked_arxiv_id_resolves_to_the_prepared_paper() -> None:
    from tests.test_rank_corpus import paper

    liked = paper(
        "Robotic Grasping from Pixels", "Robot grasping of objects with a camera.", 1, arxiv_id="2401.01234"
    )
    ranker = SemanticRanker(embedder=HashingEmbedder())
    ranker.prepare([*papers(), liked])
    ranked = ranker.rank(papers(), subscriber("tropical beekeeping", liked=("arXiv:2401.01234v2",)))
    top = [s for s in ranked if s.why.startswith("similar to a paper you liked")]
    assert top and top[0].why.endswith("Robotic Grasping from Pixels")


@pytest.mark.semantic
@pytest.mark.skipif(not semantic_available(), reason="needs the bundled model")
def test_model_finds_a_paper_that_never_says_the_interest() -> None:
    """The model alone puts it over the bar; as shipped, its words must also support it, and they do
    not (neither "image" nor "captioning"), so it is the first paper listed under the bar."""
    described = paper(
        "Describing Photos in Words",
        "A vision encoder and a language decoder write one-sentence descriptions of photographs, and "
        "human raters prefer them to earlier systems' sentences.",
        41,
    )
    for support, sent in ((-np.inf, True), (SemanticParams().support, False)):
        ranker = SemanticRanker(embedder=minilm(), params=replace(SemanticParams(), support=support))
        ranker.prepare([*papers(), described])
        ranked = ranker.rank([*papers(), described], subscriber("image captioning"))
        hit = by_title(ranked, "Describing Photos")
        assert hit.relevant is sent
        if sent:
            assert hit.why == "close to your interest 'image captioning'"
            assert ranked.index(hit) <= 1
        else:
            assert hit.why == "closest: 'image captioning' (below threshold)"
            assert [s for s in ranked if not s.relevant].index(hit) == 0


@pytest.mark.semantic
@pytest.mark.skipif(not semantic_available(), reason="needs the bundled model")
def test_model_reads_an_about_text() -> None:
    ranker = SemanticRanker(embedder=minilm())
    ranker.prepare(papers())
    sub = subscriber("tropical beekeeping", about="I build systems that predict how molecules behave")
    ranked = ranker.rank(papers(), sub)
    assert ranked[0].paper.title.startswith("Graph Neural Networks for Molecule")
    assert ranked[0].relevant


@pytest.mark.semantic
@pytest.mark.skipif(not semantic_available(), reason="needs the bundled model")
def test_the_words_column_counts_as_far_as_the_paper_is_close_to_the_whole_profile() -> None:
    """Sharing the profile's words counts in full only for a paper whose meaning is near the whole
    profile (z >= 2); a paper sharing one rare word in another sense gets a part of it."""
    bikes = paper(
        "Folding Bicycles for Urban Commuters",
        "Commuters carry folding bicycles on trains; we survey hinge designs, frame weight and the time "
        "riders need to fold and unfold them at stations in three cities.",
        40,
    )
    candidates, columns = [*papers(), bikes], []
    for gate in (2.0, 0.0):
        ranker = SemanticRanker(embedder=minilm(), params=replace(SemanticParams(), words_gate=gate))
        ranker.prepare(candidates)
        profile = compile_profile(subscriber("graph neural networks", "protein folding"))
        scores = ranker.score_batch([profile], ranker._view(tuple(candidates)))
        rows = np.arange(len(candidates))
        columns.append(scores.columns.values_at(np.zeros_like(rows), rows)[:, -1])  # the words column
    gated, plain = columns
    assert np.all(np.abs(gated) <= np.abs(plain) + 1e-6)
    assert 0 < gated[-1] < 0.8 * plain[-1]  # 'folding' alone
    assert np.any((gated == plain) & (plain > 1))


def test_explain_names_the_words_column_as_the_ranker_weighs_it() -> None:
    """`newsletter explain` says the semantic ranker's words column is weighted by closeness to the
    whole profile (the lexical ranker's, and one with the gate off, is not)."""
    sub = subscriber("graph neural networks", "protein folding")
    gated = SemanticRanker(embedder=HashingEmbedder())
    plain = SemanticRanker(embedder=HashingEmbedder(), params=replace(SemanticParams(), words_gate=0.0))
    words = 3  # [two interests | about | the profile's words]
    assert column_name(sub, words, 1.25, gated.words_column) == (
        "the words of your profile, weighted by how close the paper is to your whole profile (1.250)"
    )
    assert column_name(sub, words, 1.25, plain.words_column) == "the words of your profile (1.250)"
    assert LexicalRanker().words_column == plain.words_column
    assert column_name(sub, 0, 2.0, gated.words_column) == "interest 'graph neural networks' (2.000)"


@pytest.mark.parametrize(
    ("phrase", "plain"),
    [
        ("kernels", True),
        ("NeRF", False),
        ("GNN", False),
        ("T5", False),
        ("graph neural networks", False),
        ("fine-tuning", False),
    ],
)
def test_a_plain_word_is_one_lower_case_word(phrase: str, plain: bool) -> None:
    assert plain_word(phrase) is plain


def test_a_plain_word_needs_a_paper_closer_to_the_profile_for_its_literal_bonus() -> None:
    ranker = SemanticRanker(embedder=HashingEmbedder())
    layout = Layout.of([compile_profile(subscriber("kernels", "NeRF"))])
    z_profile = np.array([[0.25, 1.0, 2.0]], dtype=np.float32)  # three papers, ever closer to the profile
    gates, which = ranker._literal_gates(z_profile, layout)
    kernels, nerf = (gates[which[0, k], 0].tolist() for k in range(2))
    assert kernels == [0.125, 0.5, 1.0]  # full only at plain_gate (z 2)
    assert nerf == [0.5, 1.0, 1.0]  # full from literal_gate (z 0.5)


@pytest.mark.skipif(not semantic_available(), reason="needs the bundled model")
def test_the_model_reads_a_recent_acronym_better_spelled_out() -> None:
    definer = paper(
        "Operators for Fluids", "We learn solution operators of PDEs with Fourier neural operators (FNO).", 98
    )
    target = paper(
        "Learning Flow Maps in Frequency Space",
        "We train neural networks that map initial conditions of partial differential equations to their "
        "solutions, with layers that mix the input in the Fourier domain, and predict turbulent flows.",
        99,
    )
    scores = {}
    for spell in (False, True):
        ranker = SemanticRanker(embedder=minilm(), params=SemanticParams(spell_acronyms=spell))
        ranker.prepare([*papers(), definer, target])
        scores[spell] = by_title(ranker.rank([*papers(), target], subscriber("FNO")), "Learning Flow").score
    assert scores[True] > scores[False] + 1.0
