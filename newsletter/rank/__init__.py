"""Rankers: score new papers against a subscriber's profile.

``make_ranker("auto")`` gives the semantic ranker when its model and runtime (dependencies) can be imported,
else the lexical one (with a logged notice). Both implement :class:`newsletter.rank.base.Ranker`.
"""

from __future__ import annotations

import logging
from typing import Literal

from newsletter.errors import RankError
from newsletter.rank.base import Ranker
from newsletter.rank.embed import VectorCache
from newsletter.rank.lexical import LexicalRanker
from newsletter.rank.semantic import INSTALL_HINT, SemanticRanker, semantic_available

log = logging.getLogger(__name__)

RankerKind = Literal["auto", "lexical", "semantic"]

__all__ = ["LexicalRanker", "RankError", "Ranker", "RankerKind", "SemanticRanker", "make_ranker"]


def make_ranker(
    kind: RankerKind = "auto", cache: VectorCache | None = None
) -> LexicalRanker | SemanticRanker:
    """The ranker for a settings value; ``cache`` lets the store persist embeddings between runs."""
    if kind == "lexical":
        return LexicalRanker()
    if kind == "semantic":
        if not semantic_available():
            raise RankError(
                "ranker 'semantic' needs its model package, which is not installed", hint=INSTALL_HINT
            )
        return SemanticRanker(cache=cache)
    if kind == "auto":
        if semantic_available():
            return SemanticRanker(cache=cache)
        log.warning(
            "semantic model not installed; using the lexical ranker (%s for better ranking)", INSTALL_HINT
        )
        return LexicalRanker()
    raise RankError(f"unknown ranker {kind!r}", hint="use one of: auto, lexical, semantic")
