"""Excerpts that show the point: the listing's summary, else the contribution, and the matched phrase."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from newsletter.models import NO_DETAILS, Paper, PaperDetails, StoredPaper
from newsletter.render.excerpts import MAX_CHARS, point_excerpt, why_phrases
from newsletter.sources import read_dump

from .conftest import DATA

LISTING = {p.arxiv_id: p for p in read_dump(DATA / "realdata" / "hf-daily_2026-08-21.json").papers}
T0 = datetime(2026, 8, 21, tzinfo=UTC)


def stored(listed: Paper, *, summary: bool = False) -> StoredPaper:
    details = listed.details if summary else dataclasses.replace(listed.details, ai_summary=None)
    return StoredPaper(
        1, listed.key, listed.title, listed.abstract, listed.arxiv_id, listed.authors,
        T0, T0, 1, 1, listed.rank, listed.upvotes, listed.comments, details,
    )  # fmt: skip


def test_the_contribution_comes_before_the_background() -> None:
    text = point_excerpt(stored(LISTING["2608.19880"]))  # opens with two sentences of background
    assert text.startswith(
        "To alleviate the engineering burden of rebuilding environments from scratch, we propose"
    )
    assert "LLM agents learn by interacting" not in text
    assert len(text) <= MAX_CHARS


def test_an_abstract_that_opens_with_its_contribution_keeps_its_opening() -> None:
    text = point_excerpt(stored(LISTING["2608.20335"]))
    assert text.startswith("We present 4DAnyone, a framework for reconstructing 4D humans")


def test_a_sentence_opening_with_the_works_name_states_the_contribution() -> None:
    text = point_excerpt(stored(LISTING["2608.19861"]))  # 'PolicyGuide: ...', four sentences of background
    assert text.startswith("PolicyGuide instead compiles each domain policy into a workflow graph")
    assert "Customer-service LLM agents must follow" not in text


def test_a_title_head_that_is_a_common_word_does_not_take_the_background_for_the_contribution() -> None:
    listed = LISTING["2608.19861"]  # as if titled 'LLMs: ...' and opening on LLMs
    abstract = (
        "LLMs are now used as judges of proofs. LLMs miss errors. We introduce ProofBench, a benchmark."
    )
    paper = dataclasses.replace(stored(listed), title="LLMs: Can They Grade Proofs?", abstract=abstract)
    assert point_excerpt(paper) == "We introduce ProofBench, a benchmark."


def test_a_sentence_naming_the_matched_phrase_is_shown_too() -> None:
    paper = stored(LISTING["2608.20202"])
    text = point_excerpt(paper, "matches: inference-time method, memory benchmarks")
    assert text.startswith("To systematically evaluate these failure modes, we introduce MemTrapBench")
    assert "we propose AdaptiveMem, a simple yet effective inference-time method" in text
    assert point_excerpt(paper, "close to your interest 'Belief Distortion'").count("Belief Di") == 1


def test_the_listings_own_summary_is_preferred() -> None:
    listed = LISTING["2608.19880"]
    text = point_excerpt(stored(listed, summary=True), "matches: EnvRigger")
    assert listed.details.ai_summary is not None
    assert text.startswith(listed.details.ai_summary)  # it names EnvRigger already: nothing added
    assert text == listed.details.ai_summary
    other = point_excerpt(stored(listed, summary=True), "matches: co-evolution of the policy")
    assert other.startswith(listed.details.ai_summary) and "Furthermore, EnvHarness provides" in other


@pytest.mark.parametrize(
    ("key", "why", "background"),
    [
        ("2608.19880", "matches: LLM agents", "LLM agents learn by interacting"),
        ("2608.19891", "shares words with your profile: manipulation, robot", "State of the art robotic"),
    ],
)
def test_the_sentence_naming_the_phrase_is_never_background(key: str, why: str, background: str) -> None:
    listed = LISTING[key]
    assert listed.details.ai_summary is not None
    assert background not in point_excerpt(stored(listed, summary=True), why)
    assert background not in point_excerpt(stored(listed), why)


def test_a_hyphenated_phrase_names_the_spaced_one() -> None:
    summary = "Models improve through test-time feedback loops."  # the abstract says "at test time"
    listed = LISTING["2608.18027"]
    paper = stored(dataclasses.replace(listed, details=PaperDetails(ai_summary=summary)), summary=True)
    assert point_excerpt(paper, "matches: test time") == summary


def test_a_paper_without_an_abstract_has_an_empty_excerpt() -> None:
    bare = dataclasses.replace(stored(LISTING["2608.19880"]), abstract="", details=NO_DETAILS)
    assert point_excerpt(bare, "matches: agents") == ""
    with_summary = dataclasses.replace(bare, details=PaperDetails(ai_summary="Short."))
    assert point_excerpt(with_summary) == "Short."


@pytest.mark.parametrize(
    ("why", "phrases"),
    [
        ("matches: NeRF, radiance field", ("NeRF", "radiance field")),
        ("close to your interest 'vision transformers'", ("vision transformers",)),
        ("shares words with your profile: nerf, ray", ("nerf", "ray")),
        ("similar to a paper you liked: NeRF: Representing Scenes", ()),
        ("close to what you wrote about your work", ()),
        ("", ()),
    ],
)
def test_why_phrases(why: str, phrases: tuple[str, ...]) -> None:
    assert why_phrases(why) == phrases
