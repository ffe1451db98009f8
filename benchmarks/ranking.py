"""Ranking quality, measured on the digests the real pipeline produces.

For every profile in a judgments file (default: tests/data/relevance-dev.json) and two ways of writing
it ("full": interests + about; "terse": the first two interests only), this replays the seed dumps in
order through the pipeline: dump k is dropped into the dumps folder and `run` goes on day k (cadence
daily, max_items 20, file outbox). It then scores what was actually sent:

- precision: of all papers sent, the share judged relevant (1 or 2);
- recall: of all papers judged 2 in the dumps, the share that was sent;
- nDCG@10 of one ranking over a single pool holding every seed paper (gain 2^rel - 1).

Two baselines run through the same pipeline: a TF-IDF similarity sort cut at 10 papers per digest, and
TF-IDF with one global threshold (the threshold that maximises F1 over the judged profiles, so this
baseline is, if anything, flattered).

    python benchmarks/ranking.py                    # the configured ranker (auto) + baselines
    python benchmarks/ranking.py --ranker lexical   # the fallback ranker
    python benchmarks/ranking.py --feedback-only    # just the terse + feedback runs

"terse + feedback" replays the terse profiles again; after each digest every sent paper judged 2 gets
"more like this" and every one judged 0 gets "less", recorded as the links' POST records them
(Store.record_feedback). Precision and recall count the digests after the first two only.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from newsletter.config import Settings, SubscriberList
from newsletter.models import Scored, StoredPaper, Subscriber, normalize_title
from newsletter.pipeline import Pipeline
from newsletter.rank import make_ranker
from newsletter.rank.base import Ranker
from newsletter.render import Renderer
from newsletter.report import ItemReport
from newsletter.send.file import FileTransport
from newsletter.store import Store

ROOT = Path(__file__).resolve().parent.parent
DAY0 = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
MAX_ITEMS = 20


# -- profiles and judgments ---------------------------------------------------------------------


@dataclass(frozen=True)
class Judged:
    id: str
    subscriber: Subscriber
    labels: dict[str, int]  # normalised title -> 1 | 2


def load_profiles(path: Path, variant: str) -> list[Judged]:
    data = json.loads(path.read_text(encoding="utf-8"))
    profiles = []
    for p in data["profiles"]:
        interests = p["keywords"] if variant == "full" else p["keywords"][:2]
        subscriber = Subscriber(
            email=f"{p['id']}@eval.example.org",
            interests=tuple(interests),
            about=p["description"] if variant == "full" else "",
            exclude=tuple(p.get("exclude", ())),
            max_items=MAX_ITEMS,
            cadence="daily",
        )
        labels = {normalize_title(t): int(r) for t, r in p["relevance"].items()}
        profiles.append(Judged(p["id"], subscriber, labels))
    return profiles


# -- baselines ------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


class TfidfRanker:
    """Cosine similarity of TF-IDF vectors (profile text vs title + abstract)."""

    def __init__(self, *, top: int | None = None, threshold: float | None = None) -> None:
        self.top, self.threshold = top, threshold
        self.idf: dict[str, float] = {}

    def prepare(self, papers: Sequence[StoredPaper], background: Sequence[StoredPaper] = ()) -> None:
        df = Counter(w for p in papers for w in set(_words(p.title + " " + p.abstract)))
        n = max(len(papers), 1)
        self.idf = {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}

    def similarities(self, papers: Sequence[StoredPaper], sub: Subscriber) -> list[float]:
        query = self._vector(" ".join((*sub.interests, sub.about)))
        return [_cosine(query, self._vector(p.title + " " + p.abstract)) for p in papers]

    def rank(self, papers: Sequence[StoredPaper], subscriber: Subscriber) -> list[Scored]:
        sims = self.similarities(papers, subscriber)
        order = sorted(range(len(papers)), key=lambda i: (-sims[i], papers[i].best_rank))
        out = []
        for pos, i in enumerate(order):
            relevant = pos < self.top if self.top is not None else sims[i] >= (self.threshold or 0.0)
            out.append(Scored(papers[i], sims[i], "tf-idf", relevant and sims[i] > 0))
        return out

    def rank_many(
        self,
        papers: Sequence[StoredPaper],
        subscribers: Iterable[Subscriber],
        only_relevant: bool = True,
        capped: bool = False,
    ) -> Iterator[list[Scored]]:
        for sub in subscribers:
            scored = self.rank(papers, sub)
            yield [s for s in scored if s.relevant] if only_relevant else scored

    def _vector(self, text: str) -> dict[str, float]:
        tf = Counter(_words(text))
        vec = {w: c * self.idf.get(w, 0.0) for w, c in tf.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {w: v / norm for w, v in vec.items()}


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    return sum(v * b.get(w, 0.0) for w, v in a.items())


# -- replaying the seeds through the pipeline --------------------------------------------------


def replay(seeds: list[Path], profiles: list[Judged], ranker: Ranker, workdir: Path) -> dict[str, set[str]]:
    """Run the pipeline once per dump, each on its own day; returns the title keys sent per profile."""
    dumps, home = workdir / "dumps", workdir / "state"
    dumps.mkdir(parents=True)
    settings = Settings(home=home, dumps=dumps, subscribers=workdir / "unused.yaml")
    subscribers = SubscriberList(workdir / "unused.yaml", tuple(p.subscriber for p in profiles))
    sent: dict[str, set[str]] = {p.subscriber.email: set() for p in profiles}
    home.mkdir()
    with Store(settings.db_url) as store:
        pipeline = Pipeline(
            settings, store, ranker, Renderer(settings.templates_dir), lambda: FileTransport(settings.outbox)
        )
        for day, seed in enumerate(seeds):
            shutil.copy(seed, dumps / seed.name)
            report = pipeline.run(subscribers, DAY0 + timedelta(days=day))
            for digest in report.digests:
                if digest.status == "sent":
                    sent[digest.subscriber] |= {normalize_title(i.title) for i in digest.items}
    return sent


# -- terse + feedback: the "more/less like this" links, clicked as the judgments say ------------------

FEEDBACK_FROM = 2  # digests scored: those after the first two (feedback has had time to count)


@dataclass(frozen=True)
class FeedbackScores:
    precision: float
    recall: float
    sent: int
    marked_more: int
    marked_less: int


def replay_with_feedback(
    seeds: list[Path], profiles: list[Judged], ranker: Ranker, workdir: Path, clicks: bool
) -> FeedbackScores:
    """Replay the seeds; after each digest (with ``clicks``) every sent paper judged 2 gets "more" and
    every one judged 0 gets "less", recorded as the links' POST does (Store.record_feedback).
    Scores the digests after the first FEEDBACK_FROM ones against the papers first seen in their dumps."""
    dumps, home = workdir / "dumps", workdir / "state"
    dumps.mkdir(parents=True)
    home.mkdir()
    settings = Settings(home=home, dumps=dumps, subscribers=workdir / "unused.yaml")
    subscribers = SubscriberList(workdir / "unused.yaml", tuple(p.subscriber for p in profiles))
    labels = {p.subscriber.email: p.labels for p in profiles}
    late: dict[str, set[str]] = {p.subscriber.email: set() for p in profiles}
    marks = Counter[str]()
    with Store(settings.db_url) as store:
        pipeline = Pipeline(
            settings, store, ranker, Renderer(settings.templates_dir), lambda: FileTransport(settings.outbox)
        )
        for day, seed in enumerate(seeds):
            shutil.copy(seed, dumps / seed.name)
            now = DAY0 + timedelta(days=day)
            for digest in pipeline.run(subscribers, now).digests:
                if digest.status != "sent":
                    continue
                if day >= FEEDBACK_FROM:
                    late[digest.subscriber] |= {normalize_title(i.title) for i in digest.items}
                if clicks:
                    marks += click(store, digest.subscriber, digest.items, labels[digest.subscriber], now)
        later = {normalize_title(p.title) for p in store.papers_first_seen_after(FEEDBACK_FROM)}
    precision, recall, n_sent = digest_scores(profiles, late, later)
    return FeedbackScores(precision, recall, n_sent, marks["more"], marks["less"])


def click(
    store: Store, email: str, items: Sequence[ItemReport], labels: dict[str, int], now: datetime
) -> Counter[str]:
    """The subscriber's clicks on one digest: "more" on each paper judged 2, "less" on each judged 0."""
    kinds = {2: "more", 0: "less"}
    marks = Counter[str]()
    for item in items:
        kind = kinds.get(labels.get(normalize_title(item.title), 0))
        if kind and store.record_feedback(email, item.key, kind, now + timedelta(hours=1)) is not None:
            marks[kind] += 1
    return marks


def feedback_rows(
    make: Callable[[], Ranker], seeds: list[Path], judgments: Path
) -> dict[str, FeedbackScores]:
    """Terse profiles without and with clicks, on the same later digests."""
    profiles = load_profiles(judgments, "terse")
    rows = {}
    for name, clicks in (("terse", False), ("terse + feedback", True)):
        with tempfile.TemporaryDirectory() as tmp:
            rows[name] = replay_with_feedback(seeds, profiles, make(), Path(tmp), clicks)
    return rows


def print_feedback(rows: dict[str, FeedbackScores]) -> None:
    print(
        f"\nDigests {FEEDBACK_FROM + 1}+ (after the first {FEEDBACK_FROM}); "
        "targets with feedback: P >= 0.90, R >= 0.90"
    )
    print(f"{'run':34} {'precision':>9} {'recall':>7} {'sent':>5} {'more':>5} {'less':>5}")
    for name, s in rows.items():
        print(
            f"{name:34} {s.precision:9.3f} {s.recall:7.3f} {s.sent:5d} {s.marked_more:5d} {s.marked_less:5d}"
        )


def all_papers(seeds: list[Path], workdir: Path) -> list[StoredPaper]:
    """Every seed paper once: the single pool nDCG is measured on."""
    from newsletter.sources import read_dump

    with Store(f"sqlite:///{workdir / 'pool.db'}") as store:
        for i, seed in enumerate(seeds):
            store.ingest(read_dump(seed), DAY0 + timedelta(minutes=i))
        return store.papers_first_seen_after(0)


# -- metrics --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    ndcg: float
    sent: int


def digest_scores(
    profiles: list[Judged], sent: dict[str, set[str]], seed_keys: set[str]
) -> tuple[float, float, int]:
    n_sent = n_rel_sent = n_two = n_two_sent = 0
    for p in profiles:
        got = sent[p.subscriber.email]
        n_sent += len(got)
        n_rel_sent += sum(1 for k in got if p.labels.get(k, 0) >= 1)
        twos = {k for k, r in p.labels.items() if r == 2 and k in seed_keys}
        n_two += len(twos)
        n_two_sent += len(twos & got)
    precision = n_rel_sent / n_sent if n_sent else 0.0
    recall = n_two_sent / n_two if n_two else 0.0
    return precision, recall, n_sent


def ndcg_at_10(profiles: list[Judged], ranker: Ranker, pool: list[StoredPaper]) -> float:
    ranker.prepare(pool)
    values = []
    for p in profiles:
        ranked = ranker.rank(pool, p.subscriber)[:10]
        gains = [2 ** p.labels.get(normalize_title(s.paper.title), 0) - 1 for s in ranked]
        ideal = sorted((2**r - 1 for r in p.labels.values()), reverse=True)[:10]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        values.append(dcg / idcg if idcg else 0.0)
    return float(np.mean(values))


def evaluate(
    make: callable,
    seeds: list[Path],
    profiles: list[Judged],
    pool: list[StoredPaper],  # type: ignore[valid-type]
) -> Scores:
    seed_keys = {normalize_title(p.title) for p in pool}
    with tempfile.TemporaryDirectory() as tmp:
        sent = replay(seeds, profiles, make(), Path(tmp))
    precision, recall, n_sent = digest_scores(profiles, sent, seed_keys)
    return Scores(precision, recall, ndcg_at_10(profiles, make(), pool), n_sent)


def best_global_threshold(profiles: list[Judged], pool: list[StoredPaper]) -> float:
    """The one TF-IDF threshold that maximises F1 over all judged profiles (pool-level)."""
    ranker = TfidfRanker()
    ranker.prepare(pool)
    keys = [normalize_title(p.title) for p in pool]
    sims = {p.id: ranker.similarities(pool, p.subscriber) for p in profiles}

    def f1(threshold: float) -> float:
        tp = fp = fn = 0
        for p in profiles:
            for k, s in zip(keys, sims[p.id], strict=True):
                rel = p.labels.get(k, 0)
                tp += s >= threshold and rel >= 1
                fp += s >= threshold and rel == 0
                fn += s < threshold and rel == 2
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0

    return max(np.linspace(0.01, 0.5, 50), key=f1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--judgments", type=Path, default=ROOT / "tests" / "data" / "relevance-dev.json")
    parser.add_argument("--seeds", type=Path, default=ROOT / "seeds")
    parser.add_argument("--ranker", default="auto", choices=["auto", "lexical", "semantic"])
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--feedback-only", action="store_true", help="only the terse + feedback runs")
    args = parser.parse_args(argv)
    if args.feedback_only:
        print_feedback(
            feedback_rows(lambda: make_ranker(args.ranker), sorted(args.seeds.glob("*.txt")), args.judgments)
        )
        return 0

    seeds = sorted(args.seeds.glob("*.txt"))
    rows: dict[str, dict[str, Scores]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pool = all_papers(seeds, Path(tmp))
    for variant in ("full", "terse"):
        profiles = load_profiles(args.judgments, variant)
        started = time.perf_counter()
        rows.setdefault(f"newsletter ({args.ranker})", {})[variant] = evaluate(
            lambda: make_ranker(args.ranker), seeds, profiles, pool
        )
        print(f"[{variant}] ranked in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        if args.no_baselines:
            continue
        rows.setdefault("baseline: tf-idf top 10", {})[variant] = evaluate(
            lambda: TfidfRanker(top=10), seeds, profiles, pool
        )
        threshold = best_global_threshold(profiles, pool)
        rows.setdefault("baseline: tf-idf one threshold", {})[variant] = evaluate(
            lambda t=threshold: TfidfRanker(threshold=t), seeds, profiles, pool
        )
    feedback = feedback_rows(lambda: make_ranker(args.ranker), seeds, args.judgments)
    if args.json:
        figures = {m: {v: s.__dict__ for v, s in r.items()} for m, r in rows.items()}
        figures["feedback"] = {name: s.__dict__ for name, s in feedback.items()}
        print(json.dumps(figures, indent=2))
    else:
        print_table(rows, len(pool))
        print_feedback(feedback)
    return 0


def print_table(rows: dict[str, dict[str, Scores]], pool_size: int) -> None:
    print(
        f"Ranking quality on the seed replay ({pool_size} papers; "
        "targets: P >= 0.90, R >= 0.90, nDCG@10 >= 0.95)"
    )
    print(f"{'method':34} {'profile':6} {'precision':>9} {'recall':>7} {'nDCG@10':>8} {'sent':>5}")
    for method, variants in rows.items():
        for variant, s in variants.items():
            print(f"{method:34} {variant:6} {s.precision:9.3f} {s.recall:7.3f} {s.ndcg:8.3f} {s.sent:5d}")


if __name__ == "__main__":
    sys.exit(main())
