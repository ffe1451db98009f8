"""Helpers both dump parsers use."""

from __future__ import annotations

import logging

from newsletter.models import Paper

log = logging.getLogger(__name__)


def dedupe(papers: list[Paper], source: str) -> tuple[Paper, ...]:
    """Keep the first of papers listed twice (same arXiv id, or same normalised title without one)."""
    seen: set[str] = set()
    kept: list[Paper] = []
    for paper in papers:
        if paper.key in seen:
            log.info("%s: duplicate paper at rank %s dropped: %s", source, paper.rank, paper.key)
            continue
        seen.add(paper.key)
        kept.append(paper)
    return tuple(kept)
