"""An acronym means what the paper says it means: a paper that defines "TTS" as test-time scaling does
not match an interest in text-to-speech through its "TTS", while one that defines it as text-to-speech,
or uses it without a definition, still does."""

from __future__ import annotations

import numpy as np
import pytest

from newsletter.models import Subscriber
from newsletter.rank import LexicalRanker, SemanticRanker
from newsletter.rank.index import LexicalIndex
from newsletter.rank.naming import Acronyms
from newsletter.rank.semantic import semantic_available
from tests.test_rank_corpus import paper, papers

OTHER_MEANING = paper(
    "TTS for Autoregressive Image Generation",
    "Test-time scaling (TTS) has improved large language models. We bring TTS to autoregressive image "
    "generation: TTS with token entropy stops weak trajectories early and saves visual tokens.",
    1,
)
SAME_MEANING = paper(
    "Fast TTS with Flow Matching",
    "Text-to-speech (TTS) turns text into natural speech. Our TTS model synthesises speech ten times "
    "faster than autoregressive TTS baselines with the same naturalness.",
    2,
)
UNDEFINED = paper(
    "Expressive TTS for Audiobooks",
    "We train a TTS model on audiobook narration so that its voices carry emotion across long passages.",
    3,
)
PAPERS = [OTHER_MEANING, SAME_MEANING, UNDEFINED]


def index() -> LexicalIndex:
    """The three papers, with the test corpus's papers (none says "TTS") as the reference papers."""
    background = papers()
    return LexicalIndex([*PAPERS, *background], np.arange(len(PAPERS), len(PAPERS) + len(background)))


def test_an_acronym_defined_otherwise_in_a_paper_is_no_literal_match() -> None:
    strength = index().literal("text-to-speech", 1.0)[:3]
    assert strength[0] == 0.0
    assert strength[1] > 0.5
    assert strength[2] > 0.5


def test_an_acronym_defined_otherwise_does_not_name_the_interest() -> None:
    strong, _ = Acronyms(f"{p.title}. {p.abstract}" for p in PAPERS).forms("text-to-speech")
    spelled = {form for form in strong if len(form) > 1}
    assert index().naming(strong, meanings=spelled)[:3].tolist() == [False, True, True]
    assert index().naming(strong)[:3].tolist() == [True, True, True]  # without meanings: every "TTS"


def test_a_reader_who_writes_the_acronym_keeps_every_meaning_the_papers_define() -> None:
    acronyms = Acronyms(f"{p.title}. {p.abstract}" for p in PAPERS)
    strong, _ = acronyms.forms("TTS")
    spelled = {form for form in strong if len(form) > 1}
    assert index().naming(strong, meanings=spelled)[:3].tolist() == [True, True, True]


RANKERS = [pytest.param(LexicalRanker, id="lexical")]
if semantic_available():
    RANKERS.append(pytest.param(SemanticRanker, id="semantic"))


@pytest.mark.parametrize("make", RANKERS)
def test_a_text_to_speech_reader_is_not_sent_the_test_time_scaling_paper(make: type) -> None:
    ranker = make()
    ranker.prepare(PAPERS)
    reader = Subscriber(email="v@example.org", interests=("text-to-speech", "speech synthesis"))
    scored = {s.paper.id: s for s in ranker.rank(PAPERS, reader)}
    assert not scored[1].relevant, scored[1].why
    assert "matches" not in scored[1].why
    assert scored[2].relevant and scored[3].relevant
