"""Lexical ranking: literal phrase matches and TF-IDF over title + abstract. Pure Python and numpy.

Each interest phrase is its own column: how strongly the paper states it (the phrase or its acronym,
a title mention counting three times, saturating; a phrase common across the papers needs more
mentions). The whole profile (interests + about) and each liked paper are TF-IDF cosine columns,
z-scored against the prepared papers. A paper's score is its best column, so one strongly matched
interest is enough; papers scoring under the threshold are not relevant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from newsletter.rank.core import ChunkedRanker, named_papers
from newsletter.rank.profile import LIKED_PREFIX, Layout, Profile
from newsletter.rank.scoring import (
    BatchScores,
    Columns,
    Exclusions,
    View,
    everywhere,
    max_threshold,
    padded,
)


@dataclass(frozen=True, slots=True)
class LexicalParams:
    """Global knobs (never per subscriber). Chosen with benchmarks/ranking_research.py."""

    threshold: float = 0.7  # best column needed for a paper to be relevant (LOPO over the dev profiles)
    phrase_half: float = 1.0  # weighted mentions that give half the full phrase strength
    words_scale: float = 0.3  # TF-IDF z-score -> column score (z = 2.3 reaches the threshold)
    exclude_threshold: float = 0.5  # phrase strength at which a paper is about an excluded topic
    naming_gate: float = -np.inf  # TF-IDF z-score to the profile a paper naming an interest needs
    liked_set: bool = True  # liked papers (and "more like this") count as one column, calibrated as one
    scattered: float = 0.0  # a long interest's words all in one sentence, in any order: share of a mention
    liked_words: float = 0.75  # Rocchio's beta: liked papers' words in the words query (LOPO: all twelve)


class LexicalRanker(ChunkedRanker):
    """The fallback ranker: no model, decent on its own."""

    name = "lexical"

    def __init__(self, params: LexicalParams | None = None) -> None:
        super().__init__()
        self.params = params or LexicalParams()

    def score_batch(self, profiles: Sequence[Profile], view: View) -> BatchScores:
        """Columns [interests | about (in the words column) | liked | profile words], best per paper."""
        layout = Layout.of(profiles)
        literal = self.literal_table(layout, view, self.params.phrase_half, self.params.scattered)
        columns = Columns(len(profiles), len(view.papers))
        columns.add_table(padded(literal), layout.interests)
        columns.add(np.full((len(profiles), len(view.papers)), -np.inf, dtype=np.float32))
        every = self._liked_table(layout, everywhere(view))
        liked = self.not_itself(layout, view, padded(every[:, view.cand]))
        if self.params.liked_set:
            offset = self.liked_offset(every, layout, view, self.params.words_scale)
        else:
            offset = self._liked_offset(layout, len(view.papers))
        columns.add_table(liked, layout.liked, offset)
        queries, z_words = self.words_z(layout, view, self.params.liked_words)
        columns.add(self.params.words_scale * z_words)
        stated = self.stated_table(layout, literal, view, self.params.phrase_half, self.params.scattered)
        exclusions = Exclusions(padded(stated), layout.exclude, self.params.exclude_threshold)
        named = named_papers(self.naming_table(layout, view), layout, z_words, self.params.naming_gate)
        reasons = (profiles, layout, literal, queries, view)
        return self.finish(columns, exclusions, self.params.threshold, reasons, named=named)

    def _liked_offset(self, layout: Layout, candidates: int) -> np.ndarray:
        """(profiles, candidates) what each liked-paper column loses so that, together, a profile's
        liked papers let through no more unrelated papers than one does (many "more like this" would
        otherwise each add their own chance), reading them as independent (without ``liked_set``)."""
        scale = self.params.words_scale
        one = np.float32(self.params.threshold / scale)  # the z one liked paper needs
        chance = 1.0 - NormalDist().cdf(float(one))
        liked = (layout.liked >= 0).sum(axis=1)
        extra = np.maximum(max_threshold(liked, chance) - one, 0.0) * (liked > 1)
        return np.repeat((-scale * extra)[:, None], candidates, axis=1).astype(np.float32)

    def _liked_table(self, layout: Layout, view: View) -> np.ndarray:
        """(texts, candidates) scaled TF-IDF z-score against each liked paper (-inf for other texts)."""
        out = np.full((len(layout.texts), len(view.cand)), -np.inf, dtype=np.float32)
        ids = layout.liked_ids()
        if len(ids):
            out[ids] = self.similar_to([layout.texts[i][len(LIKED_PREFIX) :] for i in ids.tolist()], view)
        return out

    def similar_to(self, items: Sequence[str], view: View) -> np.ndarray:
        """(items, candidates) scaled TF-IDF z-score against each paper named (+inf: the paper itself)."""
        return self.params.words_scale * self.words_like(items, view)
