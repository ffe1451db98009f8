"""An acronym means what the paper says it means: a paper that defines "MPC" as multi-party computation
does not match an interest in model predictive control through its "MPC", while one that defines it as
model predictive control, or uses it without a definition, still does."""

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
    "Faster MPC for Private Set Intersection",
    "Secure multi-party computation (MPC) lets parties compute on data none of them reveals. We cut "
    "the rounds of MPC for set intersection: an MPC protocol with oblivious transfer halves the traffic.",
    1,
)
SAME_MEANING = paper(
    "Learned MPC with Neural Dynamics",
    "Model predictive control (MPC) plans actions over a receding horizon. Our MPC solves each step "
    "five times faster than MPC baselines with the same tracking error.",
    2,
)
UNDEFINED = paper(
    "MPC for Heat Pumps in Office Buildings",
    "We run an MPC every fifteen minutes to schedule heat pumps against weather forecasts and prices.",
    3,
)
PAPERS = [OTHER_MEANING, SAME_MEANING, UNDEFINED]


def index() -> LexicalIndex:
    """The three papers, with the test corpus's papers (none says "MPC") as the reference papers."""
    background = papers()
    return LexicalIndex([*PAPERS, *background], np.arange(len(PAPERS), len(PAPERS) + len(background)))


def test_an_acronym_defined_otherwise_in_a_paper_is_no_literal_match() -> None:
    strength = index().literal("model predictive control", 1.0)[:3]
    assert strength[0] == 0.0
    assert strength[1] > 0.5
    assert strength[2] > 0.5


def test_an_acronym_defined_otherwise_does_not_name_the_interest() -> None:
    strong, _ = Acronyms(f"{p.title}. {p.abstract}" for p in PAPERS).forms("model predictive control")
    spelled = {form for form in strong if len(form) > 1}
    assert index().naming(strong, meanings=spelled)[:3].tolist() == [False, True, True]
    assert index().naming(strong)[:3].tolist() == [True, True, True]  # without meanings: every "MPC"


def test_a_reader_who_writes_the_acronym_keeps_every_meaning_the_papers_define() -> None:
    acronyms = Acronyms(f"{p.title}. {p.abstract}" for p in PAPERS)
    strong, _ = acronyms.forms("MPC")
    spelled = {form for form in strong if len(form) > 1}
    assert index().naming(strong, meanings=spelled)[:3].tolist() == [True, True, True]


RANKERS = [pytest.param(LexicalRanker, id="lexical")]
if semantic_available():
    RANKERS.append(pytest.param(SemanticRanker, id="semantic"))


@pytest.mark.parametrize("make", RANKERS)
def test_a_control_reader_is_not_sent_the_secure_computation_paper(make: type) -> None:
    ranker = make()
    ranker.prepare(PAPERS)
    reader = Subscriber(email="v@example.org", interests=("model predictive control", "optimal control"))
    scored = {s.paper.id: s for s in ranker.rank(PAPERS, reader)}
    assert not scored[1].relevant, scored[1].why
    assert "matches" not in scored[1].why
    assert scored[2].relevant and scored[3].relevant
