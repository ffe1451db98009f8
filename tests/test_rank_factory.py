"""make_ranker: semantic when its extra is installed, else the lexical fallback with a notice."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import pytest

from newsletter.errors import RankError
from newsletter.rank import LexicalRanker, SemanticRanker, make_ranker
from newsletter.rank.minilm import INSTALL_HINT, MODEL_PACKAGE
from newsletter.rank.semantic import semantic_available


@pytest.fixture
def model_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the model package look uninstalled, as on a machine where it failed to install."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == MODEL_PACKAGE else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_lexical_is_always_available() -> None:
    assert isinstance(make_ranker("lexical"), LexicalRanker)


@pytest.mark.usefixtures("model_missing")
def test_auto_falls_back_to_lexical_with_a_notice(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="newsletter.rank"):
        ranker = make_ranker("auto")
    assert isinstance(ranker, LexicalRanker)
    assert INSTALL_HINT in caplog.text


@pytest.mark.usefixtures("model_missing")
def test_semantic_without_the_extra_is_an_error_with_a_hint() -> None:
    with pytest.raises(RankError) as info:
        make_ranker("semantic")
    assert info.value.hint == INSTALL_HINT


@pytest.mark.usefixtures("model_missing")
def test_semantic_ranker_without_model_or_embedder_refuses() -> None:
    with pytest.raises(RankError, match="not installed"):
        SemanticRanker()


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(RankError, match="unknown ranker"):
        make_ranker("fuzzy")  # type: ignore[arg-type]


@pytest.mark.semantic
@pytest.mark.skipif(not semantic_available(), reason="needs the bundled model")
def test_auto_picks_semantic_when_installed() -> None:
    ranker = make_ranker("auto")
    assert isinstance(ranker, SemanticRanker)
    assert ranker.embedder.name == "all-MiniLM-L6-v2-int8"
