"""How far could a better bar take the ranker? The best recall any cut on its own score reaches.

For each judged profile, every paper of the dumps is ranked in one pool by the score the ranker lists
papers by. Then each profile gets its own cut, chosen with the judgments (an oracle, which no bar can
be) so that together they find the most papers judged 2 while the pooled precision meets the target.
That recall bounds what any threshold, per-profile bar or calibration of this score can reach at that
precision; only a score that orders the papers better can go further. One cut on the score shared by
every profile (what a single global bar could do at best) is printed as well.

    python benchmarks/ranking_ceiling.py [--ranker semantic] [--reference FILE] [--cache FOLDER]
    python benchmarks/ranking_ceiling.py --seeds DIR --judgments FILE   # other dumps, judged the same way
    python benchmarks/ranking_ceiling.py --grid context=1,2,3   # does a parameter order papers better?

Precision targets as the issue's: full 0.90, terse 0.88 (``--precision`` sets one for both).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ranking import (
    Judged,
    all_papers,
    check_arguments,
    data_arguments,
    grid,
    label,
    load_profiles,
    ranker_maker,
    readable,
)
from ranking_research import DiskVectorCache

from newsletter.models import StoredPaper, normalize_title
from newsletter.rank.base import Ranker
from newsletter.rank.embed import MemoryVectorCache

TARGETS = {"full": 0.90, "terse": 0.88}


@dataclass(frozen=True)
class Cut:
    """The top ``sent`` papers of one ranking."""

    wanted: int  # papers judged 2
    sent: int = 0
    good: int = 0  # of those sent, judged 1 or 2
    found: int = 0  # of those sent, judged 2

    @property
    def recall(self) -> float:
        return self.found / self.wanted if self.wanted else 1.0


def cuts(labels: np.ndarray) -> list[Cut]:
    """Every cut of one ranking (``labels`` 0, 1, 2 in ranked order), from sending nothing to all."""
    good = np.concatenate([[0], np.cumsum(labels > 0)])
    found = np.concatenate([[0], np.cumsum(labels == 2)])
    wanted = int((labels == 2).sum())
    return [Cut(wanted, k, int(good[k]), int(found[k])) for k in range(len(labels) + 1)]


def best_cuts(options: list[list[Cut]], precision: float) -> list[Cut]:
    """One cut per profile, the most judged-2 papers found in all, with pooled precision >= ``precision``.

    Exact, by dynamic programming over the number found: for each total, the largest surplus of
    relevant papers over what the precision requires (good - precision x sent) any choice reaches.
    """
    best: dict[int, tuple[float, list[Cut]]] = {0: (0.0, [])}
    for profile in options:
        grown: dict[int, tuple[float, list[Cut]]] = {}
        for total, (surplus, chosen) in best.items():
            for cut in profile:
                key, value = total + cut.found, surplus + cut.good - precision * cut.sent
                if key not in grown or value > grown[key][0]:
                    grown[key] = (value, [*chosen, cut])
        best = grown
    return max((t, c) for t, (v, c) in best.items() if v >= -1e-9)[1]


def ranked(ranker: Ranker, pool: list[StoredPaper], profile: Judged) -> tuple[np.ndarray, np.ndarray, Cut]:
    """(scores, labels) of every pool paper for one profile, best score first, and what its own bar sends."""
    scored = ranker.rank(pool, profile.subscriber)
    scores = np.array([s.score for s in scored])
    labels = np.array([profile.labels.get(normalize_title(s.paper.title), 0) for s in scored])
    sent = labels[[s.relevant for s in scored]]
    own = Cut(int((labels == 2).sum()), len(sent), int((sent > 0).sum()), int((sent == 2).sum()))
    order = np.argsort(-scores, kind="stable")
    return scores[order], labels[order], own


def report(variant: str, profiles: list[Judged], ranker: Ranker, pool: list[StoredPaper], p: float) -> None:
    rankings = [ranked(ranker, pool, profile) for profile in profiles]
    chosen = best_cuts([cuts(labels) for _, labels, _ in rankings], p)
    print(f"{variant}: the cut per profile that finds the most at pooled precision >= {p:.2f}")
    for profile, cut, (scores, _, own) in zip(profiles, chosen, rankings, strict=True):
        print(f"  {profile.id:20} {describe(cut, scores)} (the ranker's own bar sends {own.sent})")
    print(f"  pooled: {describe(pooled(chosen))}")
    print(f"  the ranker's own bars: {describe(pooled([own for _, _, own in rankings]))}")
    scores = np.concatenate([s for s, _, _ in rankings])
    labels = np.concatenate([lab for _, lab, _ in rankings])
    shared = [c for c in cuts(labels[np.argsort(-scores, kind="stable")]) if c.good >= p * c.sent][-1]
    print(f"  one cut on the score for every profile: {describe(shared)}")


def pooled(chosen: list[Cut]) -> Cut:
    return Cut(*(sum(getattr(c, f) for c in chosen) for f in ("wanted", "sent", "good", "found")))


def describe(cut: Cut, scores: np.ndarray | None = None) -> str:
    at = f" (score >= {scores[cut.sent - 1]:.2f})" if scores is not None and cut.sent else ""
    precision = cut.good / cut.sent if cut.sent else 1.0
    found = f"finds {cut.found} of {cut.wanted}: recall {cut.recall:.3f}"
    return f"sends {cut.sent}{at}, {found}, precision {precision:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_arguments(parser)
    parser.add_argument("--cache", type=Path, help="keep the vectors in this folder between runs")
    parser.add_argument("--precision", type=float, help="one precision target for full and terse")
    parser.add_argument("--grid", action="append", default=[], help="name=v1,v2: each combination in turn")
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    seeds = readable(sorted(p for p in args.seeds.iterdir() if p.is_file() and not p.name.startswith(".")))
    with tempfile.TemporaryDirectory() as tmp:
        pool = all_papers(seeds, Path(tmp))
    cache = DiskVectorCache(args.cache) if args.cache else MemoryVectorCache()
    print(f"{len(pool)} papers from {len(seeds)} dumps, {args.ranker} ranker", file=sys.stderr)
    for combo in grid(args.grid):
        if combo:
            print(f"== {label(combo)}")
        ranker = ranker_maker(args.ranker, cache, combo)()
        ranker.prepare(pool)
        for variant, target in TARGETS.items():
            report(variant, load_profiles(args.judgments, variant), ranker, pool, args.precision or target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
