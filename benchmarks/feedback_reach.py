"""How far can "more like this" reach? The terse + feedback replay of benchmarks/ranking.py, and on each
digest after the first two, every new paper's liked-papers column (the best of the papers marked "more",
calibrated as one column against the reference papers) read for each profile.

It prints, for a range of bars the liked column alone might be held to (each letting through a share
of the papers judged 0, so the figures read the same for either ranker), how many papers that column
would add to what was sent and the precision and recall of the digests then (judged-2 papers of those
dumps): an upper bound on what any bar on similarity to the clicked papers can do.

    python benchmarks/feedback_reach.py [--ranker semantic|lexical] [--cache FOLDER]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from ranking import DAY0, FEEDBACK_FROM, ROOT, Judged, click, load_profiles
from ranking_research import DiskVectorCache

from newsletter.config import Settings
from newsletter.models import StoredPaper, normalize_title
from newsletter.pipeline import Pipeline
from newsletter.rank import make_ranker
from newsletter.rank.core import ChunkedRanker
from newsletter.rank.embed import MemoryVectorCache
from newsletter.rank.profile import compile_profile
from newsletter.render import Renderer
from newsletter.selection.select import with_feedback
from newsletter.send.file import FileTransport
from newsletter.store import Store
from newsletter.subscribers import SubscriberList

SHARES = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25)  # of the judged-0 papers a bar lets through


@dataclass(frozen=True)
class Seen:
    """One new paper for one profile on a later day."""

    label: int  # 0, 1 or 2
    sent: bool
    liked: float  # its liked-papers column (-inf: the profile has none yet)


def liked_column(
    ranker: ChunkedRanker, papers: list[StoredPaper], profile: Judged, feedback: dict
) -> np.ndarray:
    """The best liked-paper column of each paper for the profile with its feedback so far."""
    subscriber = with_feedback(profile.subscriber, feedback)
    compiled = compile_profile(subscriber)
    scores = ranker.breakdown(papers, subscriber)
    n = len(papers)
    values = scores.columns.values_at(np.zeros(n, dtype=np.int64), np.arange(n))
    first = len(compiled.interests) + 1
    liked = values[:, first : first + len(compiled.liked)]
    return liked.max(axis=1) if liked.shape[1] else np.full(n, -np.inf)


def replay(seeds: list[Path], profiles: list[Judged], ranker: ChunkedRanker, workdir: Path) -> list[Seen]:
    dumps, home = workdir / "dumps", workdir / "state"
    dumps.mkdir(parents=True)
    home.mkdir()
    settings = Settings(home=home, dumps=dumps, subscribers=workdir / "unused.yaml")
    subscribers = SubscriberList(workdir / "unused.yaml", tuple(p.subscriber for p in profiles))
    labels = {p.subscriber.email: p.labels for p in profiles}
    seen: list[Seen] = []
    with Store(settings.db_url) as store:
        pipeline = Pipeline(
            settings, store, ranker, Renderer(settings.templates_dir), lambda: FileTransport(settings.outbox)
        )
        for day, seed in enumerate(seeds):
            shutil.copy(seed, dumps / seed.name)
            now = DAY0 + timedelta(days=day)
            digests = [d for d in pipeline.run(subscribers, now).digests if d.status == "sent"]
            sent = {d.subscriber: {normalize_title(i.title) for i in d.items} for d in digests}
            if day >= FEEDBACK_FROM:
                seen += _day(ranker, store, profiles, sent, day)
            for d in digests:
                click(store, d.subscriber, d.items, labels[d.subscriber], now)
    return seen


def _day(
    ranker: ChunkedRanker, store: Store, profiles: list[Judged], sent: dict[str, set[str]], day: int
) -> list[Seen]:
    papers = store.papers_first_seen_in(day + 1)
    feedback = store.feedback_marks()
    out = []
    for p in profiles:
        got = sent.get(p.subscriber.email, set())
        for paper, value in zip(papers, liked_column(ranker, papers, p, feedback), strict=True):
            key = normalize_title(paper.title)
            out.append(Seen(p.labels.get(key, 0), key in got, float(value)))
    return out


def report(seen: list[Seen]) -> None:
    sent = [s for s in seen if s.sent]
    twos = sum(s.label == 2 for s in seen)
    good, found = sum(s.label >= 1 for s in sent), sum(s.label == 2 for s in sent)
    missed = sorted(round(s.liked, 2) for s in seen if s.label == 2 and not s.sent)
    print(
        f"digests {FEEDBACK_FROM + 1}+: {len(sent)} sent, "
        f"precision {good / len(sent):.3f}, recall {found / twos:.3f}"
    )
    print(f"judged-2 papers missed: {len(missed)}; their liked column: {missed}")
    for label in (0, 1, 2):
        values = np.array([s.liked for s in seen if s.label == label and np.isfinite(s.liked)])
        quantiles = np.quantile(values, [0.5, 0.9, 0.99]) if len(values) else []
        print(
            f"  judged {label}: {len(values)} papers, "
            f"liked column median / 90% / 99%: {np.round(quantiles, 2)}"
        )
    unrelated = np.array([s.liked for s in seen if s.label == 0])
    print(f"\n{'judged 0 above':>14} {'bar':>6} {'added':>6} {'of them 2':>9} {'precision':>9} {'recall':>7}")
    for share in SHARES:
        bar = float(np.quantile(unrelated, 1 - share))
        added = [s for s in seen if not s.sent and s.liked >= bar]
        g, f = good + sum(s.label >= 1 for s in added), found + sum(s.label == 2 for s in added)
        print(
            f"{share:14.1%} {bar:6.2f} {len(added):6d} {sum(s.label == 2 for s in added):9d}"
            f" {g / (len(sent) + len(added)):9.3f} {f / twos:7.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ranker", default="auto", choices=["auto", "lexical", "semantic"])
    parser.add_argument("--cache", type=Path, help="keep the vectors in this folder between runs")
    args = parser.parse_args(argv)
    data = ROOT / "tests" / "data"
    profiles = load_profiles([data / "relevance-dev.json", data / "relevance-dev2.json"], "terse")
    cache = DiskVectorCache(args.cache) if args.cache else MemoryVectorCache()
    ranker = make_ranker(args.ranker, cache=cache)
    assert isinstance(ranker, ChunkedRanker)
    with tempfile.TemporaryDirectory() as tmp:
        seen = replay(sorted((ROOT / "seeds").glob("*.txt")), profiles, ranker, Path(tmp))
    report(seen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
