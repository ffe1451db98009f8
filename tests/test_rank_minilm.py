"""The bundled embedding model's batching: batches within a token budget, and the same vectors however
the texts are grouped."""

from __future__ import annotations

import numpy as np
import pytest

from newsletter.rank.minilm import MiniLMEmbedder, batches, minilm_available

TEXTS = [
    "Graph neural networks predict the properties of molecules.",
    "A recurrent model for long sequences. " * 40,  # past the 256-token cut
    "Neural radiance fields for novel view synthesis.",
    "We propose a faster protein structure predictor with fewer parameters, and analyse its errors. " * 6,
    "Short.",
]


def test_batches_cover_every_text_once_in_ascending_length_within_the_budget() -> None:
    lengths = np.array([30, 250, 12, 90, 4, 40, 256, 8])
    order = np.argsort(lengths, kind="stable")
    runs = list(batches(order, lengths, most=3, budget=128))
    assert sorted(np.concatenate(runs).tolist()) == list(range(len(lengths)))
    assert np.concatenate(runs).tolist() == order.tolist()
    for run in runs:
        assert len(run) <= 3
        assert len(run) == 1 or len(run) * lengths[run].max() <= 128
    assert [len(r) for r in runs] == [3, 2, 1, 1, 1]  # 4, 8, 12 | 30, 40 | 90 | 250 | 256 (alone)


def test_a_budget_of_zero_gives_fixed_batches() -> None:
    lengths = np.array([5, 300, 7, 9, 400])
    order = np.argsort(lengths, kind="stable")
    assert [len(r) for r in batches(order, lengths, most=2, budget=0)] == [2, 2, 1]


@pytest.mark.skipif(not minilm_available(), reason="the bundled model is not installed")
def test_the_vectors_do_not_depend_on_how_the_texts_are_batched() -> None:
    budget = MiniLMEmbedder().embed(TEXTS)
    fixed = MiniLMEmbedder(batch_size=32, token_budget=0).embed(TEXTS)
    alone = np.stack([MiniLMEmbedder().embed([t])[0] for t in TEXTS])
    assert budget.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(budget, axis=1), 1.0, atol=1e-5)
    assert (budget * fixed).sum(axis=1).min() > 0.9999
    assert (budget * alone).sum(axis=1).min() > 0.9999
    assert (budget[0] * budget[2]).sum() < 0.9  # different texts stay apart
