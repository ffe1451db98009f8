"""The batch machinery: background papers, chunked and threaded rank_many, TF-IDF paths, reasons."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from newsletter.models import StoredPaper, Subscriber
from newsletter.rank import LexicalRanker, SemanticRanker
from newsletter.rank import index as index_module
from newsletter.rank.base import Ranker
from newsletter.rank.batch import ragged_arange
from newsletter.rank.embed import HashingEmbedder
from newsletter.rank.index import LexicalIndex
from newsletter.rank.lexical import LexicalParams
from newsletter.rank.scoring import median
from newsletter.rank.semantic import SemanticParams, semantic_available
from tests.test_rank_behaviour import minilm
from tests.test_rank_corpus import by_title, paper, papers, subscriber


@pytest.fixture(params=["lexical", "semantic-hashing"])
def ranker(request: pytest.FixtureRequest) -> Ranker:
    if request.param == "lexical":
        return LexicalRanker()
    return SemanticRanker(embedder=HashingEmbedder())


def many_subscribers() -> list:  # type: ignore[type-arg]
    return [
        subscriber("protein folding"),
        subscriber("graph neural networks", exclude=("molecules",)),
        subscriber("volcano seismology"),
        subscriber("speech synthesis", about="Text to speech and vocoders for audiobooks"),
        subscriber(
            "tropical beekeeping", liked=("Robotic Grasping from Pixels with Reinforcement Learning",)
        ),
        subscriber("quantum error correction", "sparse matrix kernels"),
        subscriber("music generation"),
    ]


def summary(lists: list) -> list:  # type: ignore[type-arg]
    return [[(s.paper.key, round(s.score, 4), s.relevant, s.why) for s in ranked] for ranked in lists]


@pytest.mark.parametrize("only_relevant", [True, False])
def test_chunks_and_the_worker_thread_change_nothing(ranker: Ranker, only_relevant: bool) -> None:
    ranker.prepare(papers())
    whole = summary(ranker.rank_many(papers(), many_subscribers(), only_relevant=only_relevant))
    ranker.chunk = 2  # type: ignore[attr-defined]
    chunked = summary(ranker.rank_many(papers(), iter(many_subscribers()), only_relevant=only_relevant))
    assert chunked == whole
    assert len(whole) == len(many_subscribers()) and any(whole)


@pytest.mark.parametrize("only_relevant", [True, False])
def test_capped_lists_are_the_uncapped_ones_cut_at_max_items(ranker: Ranker, only_relevant: bool) -> None:
    ranker.prepare(papers())
    subs = [
        s.model_copy(update={"max_items": cap})
        for s, cap in zip(many_subscribers(), [2, 1, 1, 3, 1, 1, 1], strict=True)
    ]
    ranker.chunk = 3  # type: ignore[attr-defined]
    full = summary(ranker.rank_many(papers(), subs, only_relevant=only_relevant))
    capped = summary(ranker.rank_many(papers(), subs, only_relevant=only_relevant, capped=True))
    assert capped == [ranked[: s.max_items] for ranked, s in zip(full, subs, strict=True)]
    assert any(len(ranked) > s.max_items for ranked, s in zip(full, subs, strict=True))  # some were cut


def test_a_consumer_may_stop_early(ranker: Ranker) -> None:
    ranker.prepare(papers())
    ranker.chunk = 1  # type: ignore[attr-defined]
    lists = ranker.rank_many(papers(), many_subscribers())
    first = next(lists)
    lists.close()  # type: ignore[attr-defined]
    assert [s.paper.title for s in first] == ["Protein Folding with Equivariant Transformers"]


def test_no_papers_gives_an_empty_list_per_subscriber(ranker: Ranker) -> None:
    ranker.prepare(papers())
    assert list(ranker.rank_many([], many_subscribers())) == [[] for _ in many_subscribers()]


def test_background_papers_are_a_reference_never_a_result(ranker: Ranker) -> None:
    candidates, background = papers()[:8], papers()[8:]
    ranker.prepare(candidates, background)
    ranked = ranker.rank(candidates, subscriber("protein folding"))
    assert {s.paper.key for s in ranked} == {p.key for p in candidates}
    assert ranked[0].relevant and ranked[0].paper.title.startswith("Protein Folding")


def test_a_liked_paper_in_the_background_counts(ranker: Ranker) -> None:
    grasping = next(p for p in papers() if p.title.startswith("Robotic Grasping"))
    candidates = [p for p in papers() if p.key != grasping.key]
    ranker.prepare(candidates, [grasping])
    sub = subscriber("tropical beekeeping", liked=(grasping.title,))
    hands = by_title(ranker.rank(candidates, sub), "Dexterous Robot Hands")
    assert hands.relevant
    assert hands.why in (  # its own column, or its words in the profile's (Rocchio)
        f"similar to a paper you liked: {grasping.title}",
        "shares words with your profile and the papers you liked: Grasping, robot, objects",
    )


def test_the_words_reason_names_the_liked_papers_only_when_their_words_are_in_the_query() -> None:
    liked = next(p.title for p in papers() if p.title.startswith("Transcribing"))
    sub = subscriber("speech synthesis", about="Text to speech and vocoders for audiobooks", liked=(liked,))
    whys = {}
    for weight in (0.75, 0.0):
        ranker = LexicalRanker(replace(LexicalParams(), liked_words=weight))
        ranker.prepare(papers())
        whys[weight] = [s.why for s in ranker.rank(papers(), sub) if s.why.startswith("shares words")]
    assert whys[0.75] and all("your profile and the papers you liked: " in w for w in whys[0.75])
    assert whys[0.0] and all(w.startswith("shares words with your profile: ") for w in whys[0.0])


def test_reasons_of_papers_below_the_threshold_never_read_like_a_match(ranker: Ranker) -> None:
    ranker.prepare(papers())
    for sub in (subscriber("sourdough baking"), subscriber("graph neural networks", "speech synthesis")):
        for scored in ranker.rank(papers(), sub):
            if not scored.relevant and "excluded" not in scored.why:
                assert scored.why.startswith("closest: ") and scored.why.endswith("(below threshold)")
                assert "matches" not in scored.why


def test_an_excluded_paper_names_the_topic(ranker: Ranker) -> None:
    ranker.prepare(papers())
    ranked = ranker.rank(papers(), subscriber("graph neural networks", exclude=("molecules", "weather")))
    molecules = by_title(ranked, "Graph Neural Networks for Molecule")
    assert molecules.why == "about 'molecules', a topic you excluded" and not molecules.relevant


def test_words_reason_names_shared_words_as_the_profile_wrote_them() -> None:
    ranker = LexicalRanker()
    ranker.prepare(papers())
    sub = subscriber("tropical beekeeping", about="Precipitation Nowcasting from radar images")
    hit = by_title(ranker.rank(papers(), sub), "Weather Nowcasting")
    assert hit.relevant
    assert hit.why.startswith("shares words with your profile: ")
    assert "Nowcasting" in hit.why and "Precipitation" in hit.why


@pytest.mark.parametrize("work", [0.0, np.inf])
def test_dense_and_sparse_tfidf_agree(monkeypatch: pytest.MonkeyPatch, work: float) -> None:
    index = LexicalIndex(papers())
    postings = index.postings(np.arange(len(papers())))
    texts = ["graph neural networks for traffic", "protein folding structures", "nothing known zzz"]
    queries = index.queries(texts, np.array([[0, 1], [1, -1], [2, -1]]))
    expected = index.cosine(queries, postings)
    monkeypatch.setattr(index_module, "DENSE_WORK", work)
    assert np.allclose(index.cosine(queries, postings), expected, atol=1e-6)
    assert expected[0].argmax() in (2, 3) and expected[2].max() == 0.0


def test_top_terms_are_the_biggest_contributions() -> None:
    index = LexicalIndex(papers())
    postings = index.postings(np.arange(len(papers())))
    queries = index.queries(["graph traffic zebra"], np.array([[0]]))
    row = next(i for i, p in enumerate(papers()) if p.title.startswith("Graph Neural Networks for Urban"))
    top = index.top_terms(queries, postings, np.array([0]), np.array([row]))
    assert [index.names[t] for t in top[0] if t >= 0] == ["traffic", "graph"]


def test_a_hyphenated_compound_is_one_word_in_tfidf() -> None:
    corpus = [
        paper("Image Pre-Training with Flows", "We warm up vision encoders.", 1),
        paper("Pretraining of Satellite Encoders", "We warm up on satellite tiles.", 2),
        paper("Co-Training Segmentation", "Joint training of masks for street scenes with long training.", 3),
        paper("Fast Pre Training of Face Encoders", "We warm up on portraits.", 4),
        *papers(),
    ]
    index = LexicalIndex(corpus)
    queries = index.queries(["pre-training"], np.array([[0]]))
    scores = index.cosine(queries, index.postings(np.arange(len(corpus))))[0]
    assert scores[0] > 0 and scores[1] > 0 and scores[3] > 0  # hyphenated, one word or two
    assert scores[2] == 0  # 'training' alone is not pre-training
    word = index.terms_of("pre-training")[0]
    assert index.word(int(word)) == "pre-training"  # as the profile wrote it, for reasons


def test_a_long_compound_is_one_word_where_it_is_hyphenated() -> None:
    index = LexicalIndex(
        [paper("Vision-Language-Action Policies", "We map pixels to actions.", 1), *papers()]
    )
    assert [index.word(int(t)) for t in index.terms_of("vision-language-action robots")] == [
        "vision-language-action",
        "robots",
    ]
    assert len(index.terms_of("vision language action robots")) == 4  # as the papers that write it so


def test_helpers() -> None:
    assert ragged_arange(np.array([5, 0, 10]), np.array([2, 0, 3])).tolist() == [5, 6, 10, 11, 12]
    values = np.random.default_rng(0).standard_normal((4, 9)).astype(np.float32)
    assert np.allclose(median(values), np.median(values, axis=-1, keepdims=True))
    assert np.allclose(median(values[:, :8]), np.median(values[:, :8], axis=-1, keepdims=True))


def fraud_paper_and_protein_reader() -> tuple[StoredPaper, Subscriber]:
    """A paper off the reader's subject that one of their interests ("features") names literally."""
    fraud = paper(
        "Feature Selection for Credit Card Fraud Detection",
        "We compare feature selection methods. The selected features cut false alarms; features from "
        "transaction histories matter most.",
        40,
    )
    sub = subscriber(
        "protein folding", "features", about="How proteins fold into three-dimensional structures"
    )
    return fraud, sub


@pytest.mark.semantic
@pytest.mark.skipif(not semantic_available(), reason="needs the bundled model")
def test_a_generic_word_counts_less_in_a_paper_on_another_subject() -> None:
    fraud, sub = fraud_paper_and_protein_reader()
    scores = {}
    for gate in (0.0, 1.0):  # scores as the best column: the gate acts on the matched interest's column
        ranker = SemanticRanker(
            embedder=minilm(), params=replace(SemanticParams(), literal_gate=gate, corroborate=False)
        )
        ranker.prepare([*papers(), fraud])
        ranked = ranker.rank([*papers(), fraud], sub)
        scores[gate] = (
            by_title(ranked, "Feature Selection").score,
            by_title(ranked, "Protein Folding").score,
        )
        assert ranked[0].paper.title.startswith("Protein Folding") and ranked[0].relevant
    assert scores[1.0][0] < scores[0.0][0] - 1.0  # the off-topic literal match lost most of its bonus
    assert scores[1.0][1] == pytest.approx(scores[0.0][1], abs=1e-4)  # the on-topic one kept it
