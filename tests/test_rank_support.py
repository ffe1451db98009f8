"""A paper the model finds close must also be supported by its words (SemanticParams.support)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from newsletter.models import Scored
from newsletter.ops.explain import Explanation, _why_not
from newsletter.rank import SemanticRanker
from newsletter.rank.breakdown import Breakdown
from newsletter.rank.semantic import SemanticParams, semantic_available
from tests.test_rank_behaviour import minilm
from tests.test_rank_corpus import paper, papers, subscriber

pytestmark = [
    pytest.mark.semantic,
    pytest.mark.skipif(not semantic_available(), reason="needs the bundled model"),
]

# Close to "image captioning" in meaning, but with none of its words.
DESCRIBED = paper(
    "Describing Photos in Words",
    "A vision encoder and a language decoder write one-sentence descriptions of photographs, and human "
    "raters prefer them to earlier systems' sentences.",
    41,
)
NAMED = paper("Streaming Image Captioning on Phones", "An on-device model captions the photos you take.", 42)


def ranked(support: float) -> tuple[SemanticRanker, dict[str, tuple[float, bool, str]]]:
    ranker = SemanticRanker(embedder=minilm(), params=replace(SemanticParams(), support=support))
    everything = [*papers(), DESCRIBED, NAMED]
    ranker.prepare(everything)
    out = ranker.rank(everything, subscriber("image captioning"))
    return ranker, {s.paper.title: (s.score, s.relevant, s.why) for s in out}


def test_a_paper_only_the_model_finds_close_is_not_sent() -> None:
    _, off = ranked(-np.inf)
    ranker, on = ranked(0.4)
    assert off[DESCRIBED.title][1] and not on[DESCRIBED.title][1]  # the words decide, nothing else
    assert on[NAMED.title][1]  # a paper stating the interest is supported
    breakdown = ranker.breakdown([DESCRIBED], subscriber("image captioning"))
    assert breakdown.best[0, 0] >= breakdown.threshold[0, 0]  # its best column clears the bar
    assert breakdown.unsupported is not None and breakdown.unsupported[0, 0]


def test_an_unsupported_paper_is_listed_under_every_sent_paper() -> None:
    _, on = ranked(0.4)
    score, relevant, why = on[DESCRIBED.title]
    assert not relevant and why.endswith("(below threshold)")
    assert score < min(s for s, r, _ in on.values() if r)


def test_explain_says_the_words_do_not_support_it() -> None:
    breakdown = Breakdown(bar=3.0, column="interest 'image captioning' (4.000)", best=4.0, unsupported=True)
    verdict = _why_not(breakdown)
    assert (
        verdict
        == "it clears the bar, but states none of your interests and shares few words with your profile"
    )
    score, _, why = ranked(0.4)[1][DESCRIBED.title]
    lines = Explanation(
        DESCRIBED, Scored(DESCRIBED, score, why, False), breakdown, f"not sent: {verdict}"
    ).lines()
    assert lines[1] == (
        "  score 4.000 against a bar of 3.000, held under it: closest: 'image captioning' (below threshold)"
    )
