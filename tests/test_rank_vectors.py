"""StoreVectorCache: embeddings kept in the state database between runs."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa

from newsletter.rank import SemanticRanker, make_ranker
from newsletter.rank.embed import HashingEmbedder
from newsletter.rank.reference import reference_papers
from newsletter.rank.text import sentences
from newsletter.store import MIGRATIONS, Store
from newsletter.store.engine import make_engine
from newsletter.store.migrations import migrate
from newsletter.store.vectors import StoreVectorCache
from tests.test_rank_corpus import papers, subscriber
from tests.test_rank_semantic import CountingEmbedder


@pytest.fixture
def url(store_url: str) -> str:
    return store_url


def unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_vectors_survive_reopening_the_store(url: str) -> None:
    with Store(url) as store:
        StoreVectorCache(store).put("m", {"2401.00001": unit(1), "a title key": unit(2)})
    with Store(url) as store:
        found = StoreVectorCache(store).get("m", ["2401.00001", "a title key", "missing"])
    assert set(found) == {"2401.00001", "a title key"}
    assert found["2401.00001"].dtype == np.float32
    assert np.array_equal(found["a title key"], unit(2))


def test_models_are_kept_apart(url: str) -> None:
    with Store(url) as store:
        cache = StoreVectorCache(store)
        cache.put("model-a", {"k": unit(1)})
        assert cache.get("model-b", ["k"]) == {}
        assert cache.count("model-a") == 1 and cache.count() == 1


def test_profile_texts_are_stored_by_hash_not_as_written(url: str) -> None:
    text = "I study coral reef acoustics"
    with Store(url) as store:
        cache = StoreVectorCache(store)
        cache.put("query:m", {text: unit(3)})
        assert np.array_equal(cache.get("query:m", [text])[text], unit(3))
        with store._engine.connect() as conn:
            keys = list(conn.execute(sa.text("SELECT key FROM vectors")).scalars())
    assert len(keys) == 1 and keys[0].startswith("sha256:") and "coral" not in keys[0]


def test_storing_a_key_again_keeps_the_first_vector(url: str) -> None:
    with Store(url) as store:
        cache = StoreVectorCache(store)
        cache.put("m", {"k": unit(1)})
        cache.put("m", {"k": unit(2), "j": unit(3)})
        found = cache.get("m", ["k", "j"])
    assert np.array_equal(found["k"], unit(1)) and np.array_equal(found["j"], unit(3))


def test_many_keys_are_read_and_written_in_batches(url: str) -> None:
    keys = [f"paper-{i}" for i in range(1234)]
    with Store(url) as store:
        cache = StoreVectorCache(store)
        cache.put("m", {k: unit(i, dim=4) for i, k in enumerate(keys)})
        found = cache.get("m", keys)
    assert len(found) == len(keys)
    assert np.array_equal(found["paper-1233"], unit(1233, dim=4))


def test_a_second_run_embeds_nothing_new(url: str) -> None:
    subs = [subscriber("protein folding", about="Structures of proteins"), subscriber("speech synthesis")]
    embedder = CountingEmbedder()
    with Store(url) as store:
        ranker = SemanticRanker(embedder=embedder, cache=StoreVectorCache(store))
        ranker.prepare(papers())
        first = [[s.paper.key for s in r] for r in ranker.rank_many(papers(), subs)]
    every = [*papers(), *reference_papers()]  # the candidates and the papers scores are calibrated on
    split = sum(len(sentences(p)) for p in every)
    assert len(embedder.seen) == 2 * len(every) + split + 3  # papers, titles, sentences, 3 profile texts
    embedder.seen.clear()
    with Store(url) as store:
        ranker = SemanticRanker(embedder=embedder, cache=StoreVectorCache(store))
        ranker.prepare(papers())
        again = [[s.paper.key for s in r] for r in ranker.rank_many(papers(), subs)]
    assert embedder.seen == []
    assert again == first and first[0]


def test_make_ranker_passes_the_store_cache_on(url: str) -> None:
    with Store(url) as store:
        cache = StoreVectorCache(store)
        ranker = make_ranker("lexical", cache=cache)
        assert ranker.name == "lexical"
        semantic = SemanticRanker(embedder=HashingEmbedder(), cache=cache)
        semantic.prepare(papers()[:3])
        assert cache.count("hashing-bow") == 3 + len(reference_papers())


def test_an_older_database_gains_the_vectors_table(url: str) -> None:
    engine = make_engine(sa.make_url(url))
    migrate(engine, MIGRATIONS[:1])
    engine.dispose()
    with Store(url) as store:
        assert store.migrations_applied == [name for name, _ in MIGRATIONS[1:]]
        StoreVectorCache(store).put("m", {"k": unit(1)})
        assert StoreVectorCache(store).count() == 1


def test_forgetting_vectors_and_finding_the_papers_that_have_some(url: str) -> None:
    from newsletter.models import Dump, Paper

    listed = [
        Paper(title=f"Paper {i}", abstract="An abstract.", rank=i, arxiv_id=f"2601.0000{i}")
        for i in (1, 2, 3)
    ]
    when = datetime(2026, 3, 1, tzinfo=UTC)
    with Store(url) as store:
        store.ingest(Dump(source="d1", format="hf-json", content_hash="h1", papers=tuple(listed[:2])), when)
        store.ingest(Dump(source="d2", format="hf-json", content_hash="h2", papers=tuple(listed[2:])), when)
        cache = StoreVectorCache(store)
        cache.put("m", {p.arxiv_id or "": unit(i) for i, p in enumerate(listed)})
        cache.put("other", {"2601.00001": unit(9)})
        store.record_feedback("a@example.org", "2601.00002", "more", when)
        assert [p.key for p in cache.papers_embedded("m", 1)] == ["2601.00001"]  # not the marked one
        assert cache.delete({"m": ["2601.00001", "2601.00003", "never stored"]}) == 2
        assert cache.papers_embedded("m", 2) == [] and cache.count("m") == 1
        assert cache.get("other", ["2601.00001"])  # another model's vector is another's
