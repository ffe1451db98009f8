"""The about text as the rankers read it: negated clauses left out (see rank/text.affirmed)."""

from __future__ import annotations

import pytest

from newsletter.models import Subscriber
from newsletter.rank.profile import compile_profile
from newsletter.rank.text import affirmed


@pytest.mark.parametrize(
    ("about", "read"),
    [
        ("I study protein folding, not drug discovery.", "I study protein folding."),
        (
            "Ocean modelling: eddies, sea ice. Not interested in weather.",
            "Ocean modelling: eddies, sea ice.",
        ),
        ("Seismology. I do not care about volcanoes or tsunamis.", "Seismology."),
        ("I don't want surveys; I want methods", "I want methods."),
        ("Methods, no negation", "Methods, no negation"),
        ("Never astronomy. Nor games.", ""),
        ("Not only images but also video.", "Not only images but also video."),
        (
            "Graph neural networks (GCN, GAT) as alternatives to kernels.",
            "Graph neural networks (GCN, GAT) as alternatives to kernels.",
        ),
        (
            "No-reference image quality assessment, no-regret learning.",
            "No-reference image quality assessment, no-regret learning.",
        ),
        ("", ""),
    ],
)
def test_negated_clauses_are_left_out(about: str, read: str) -> None:
    assert affirmed(about) == read


def test_the_profile_reads_the_affirmed_about_and_the_subscriber_keeps_what_was_written() -> None:
    written = "Crop yield and soil mapping. I do not care about forestry."
    subscriber = Subscriber(email="reader@example.org", interests=("crop yield",), about=written)
    assert compile_profile(subscriber).about == "Crop yield and soil mapping."
    assert subscriber.about == written
