"""Ranking quality, measured on the digests the real pipeline produces.

For every profile in the judgments files (default: tests/data/relevance-dev.json and relevance-dev2.json,
twelve profiles) and two ways of writing it ("full": interests, about, liked papers and excluded topics;
"terse": the first two interests and the excluded topics), this replays the seed dumps in order through
the pipeline: dump k is dropped into the dumps folder and `run` goes on day k (cadence daily, max_items
20, file outbox). It then scores what was actually sent:

- precision: of all papers sent, the share judged relevant (1 or 2);
- recall: of all papers judged 2 in the dumps, the share that was sent;
- nDCG@10 of one ranking over a single pool holding every seed paper (gain 2^rel - 1).

Figures are given per profile, pooled over the profiles ("mean"), and for the worst profile. With
``--grid`` the harness replays every combination of the given global parameters and shows, beside the
figures of the shipped parameters ("fitted"), the leave-one-profile-out ones ("LOPO"): each profile is
scored with the combination that does best on the other eleven (each run's precision up to its target,
full 0.90, terse 0.88, terse + feedback 0.90; then recall; then precision), so a parameter that only
suits some profiles shows up as a gap between the two.

Two baselines run through the same pipeline: a TF-IDF similarity sort cut at 10 papers per digest, and
TF-IDF with one global threshold (the threshold that maximises F1 over the judged profiles, so this
baseline is, if anything, flattered).

    python benchmarks/ranking.py                    # the configured ranker (auto) + baselines
    python benchmarks/ranking.py --ranker lexical   # the fallback ranker
    python benchmarks/ranking.py --grid chance=0.002,0.005,0.01 --grid title_weight=0,4
    python benchmarks/ranking.py --feedback-only    # just the terse and terse + feedback runs
    python benchmarks/ranking.py --seeds DIR --judgments FILE   # other dumps, judged the same way

``--seeds`` takes a folder of dumps in any format newsletter reads (text dumps, HF daily_papers JSON,
arXiv feeds), so profiles judged over real captures check that the figures hold on data the
parameters were not chosen on. A dump the reader refuses is named on stderr, with its error, and left
out.

"terse+fb" (terse + feedback) replays the terse profiles again; after each digest every sent paper
judged 2 gets "more like this" and every one judged 0 gets "less", recorded as the links' POST records
them (Store.record_feedback). It is scored on the digests after the first two only (the papers first
seen in dumps 3+), as is "terse 3+", the terse run without clicks on those same digests.

A profile's liked papers are left out of its judged pool (neither a paper sent nor a judged-2 paper
missed, nor in its nDCG): they are not new to that reader, and newsletter never sends a reader a paper
they listed as liked. Only the "full" profiles list them (two dev2 profiles name papers in the seeds).
``--judge-liked`` counts them as before, for figures comparable with the records made before that rule.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
from ranking_research import DiskVectorCache

from newsletter.config import Settings
from newsletter.models import Scored, StoredPaper, Subscriber, normalize_title
from newsletter.pipeline import Pipeline
from newsletter.rank import make_ranker
from newsletter.rank.base import Ranker
from newsletter.rank.embed import MemoryVectorCache, VectorCache
from newsletter.rank.reference import REFERENCE, reference_papers, use_reference
from newsletter.render import Renderer
from newsletter.report import ItemReport
from newsletter.send.file import FileTransport
from newsletter.store import Store
from newsletter.subscribers import SubscriberList

ROOT = Path(__file__).resolve().parent.parent
DAY0 = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
MAX_ITEMS = 20
PRECISION_TARGETS = {"full": 0.90, "terse": 0.88, "terse+fb": 0.90}  # the issue's, run by run


# -- profiles and judgments ---------------------------------------------------------------------


@dataclass(frozen=True)
class Judged:
    id: str
    subscriber: Subscriber
    labels: dict[str, int]  # normalised title -> 1 | 2
    known: frozenset[str] = frozenset()  # normalised titles of the liked papers: left out of the pool


def load_profiles(paths: Sequence[Path], variant: str, judge_liked: bool = False) -> list[Judged]:
    profiles = []
    for path in paths:
        for p in json.loads(path.read_text(encoding="utf-8"))["profiles"]:
            full = variant == "full"
            subscriber = Subscriber(
                email=f"{p['id']}@eval.example.org",
                interests=tuple(p["keywords"] if full else p["keywords"][:2]),
                about=p["description"] if full else "",
                liked=tuple(p.get("liked") or ()) if full else (),
                exclude=tuple(p.get("exclude") or ()),
                max_items=MAX_ITEMS,
                cadence="daily",
            )
            labels = {normalize_title(t): int(r) for t, r in p["relevance"].items()}
            known = frozenset() if judge_liked else frozenset(map(normalize_title, subscriber.liked))
            profiles.append(Judged(p["id"], subscriber, labels, known))
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


FEEDBACK_FROM = 2  # feedback runs are scored on the digests after the first two
OBJECTIVE = tuple(PRECISION_TARGETS)  # the runs LOPO scores ("terse 3+" is a part of "terse")


def replay(
    seeds: list[Path], profiles: list[Judged], ranker: Ranker, workdir: Path, clicks: bool = False
) -> tuple[dict[str, list[set[str]]], Counter[str]]:
    """Run the pipeline once per dump, each on its own day; the title keys sent per profile and day.

    With ``clicks``, after each digest every sent paper judged 2 gets "more like this" and every one
    judged 0 gets "less", recorded as the links' POST records them; returns the clicks counted too.
    """
    dumps, home = workdir / "dumps", workdir / "state"
    dumps.mkdir(parents=True)
    settings = Settings(home=home, dumps=dumps, subscribers=workdir / "unused.yaml")
    subscribers = SubscriberList(workdir / "unused.yaml", tuple(p.subscriber for p in profiles))
    labels = {p.subscriber.email: p.labels for p in profiles}
    sent: dict[str, list[set[str]]] = {p.subscriber.email: [set() for _ in seeds] for p in profiles}
    marks = Counter[str]()
    home.mkdir()
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
                sent[digest.subscriber][day] |= {normalize_title(i.title) for i in digest.items}
                if clicks:
                    marks += click(store, digest.subscriber, digest.items, labels[digest.subscriber], now)
    return sent, marks


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


def readable(dumps: list[Path]) -> list[Path]:
    """The dumps newsletter can read; each other one is named on stderr with the reader's error."""
    from newsletter.errors import SourceError
    from newsletter.sources import read_dump

    kept = []
    for dump in dumps:
        try:
            read_dump(dump)
        except SourceError as exc:  # the reader's own one-line error names the file and item or line
            print(f"skipped {dump.name}: {exc}", file=sys.stderr)
        else:
            kept.append(dump)
    return kept


def all_papers(seeds: list[Path], workdir: Path) -> list[StoredPaper]:
    """Every seed paper once: the single pool nDCG is measured on."""
    from newsletter.sources import read_dump

    with Store(f"sqlite:///{workdir / 'pool.db'}") as store:
        for i, seed in enumerate(seeds):
            store.ingest(read_dump(seed), DAY0 + timedelta(minutes=i))
        return store.papers_first_seen_after(0)


# -- metrics --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """One profile's digests: papers sent, of those judged 1|2, judged-2 papers sent, judged-2 papers."""

    sent: int = 0
    good: int = 0
    found: int = 0
    wanted: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def precision(self) -> float:
        return self.good / self.sent if self.sent else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.wanted if self.wanted else 1.0


def goal(runs: dict[str, Counts]) -> tuple[float, float, float]:
    """What LOPO maximises: each run's precision up to its target (a digest must be trusted before it
    can be complete, and one run's precision does not make up for another's), then recall over the runs,
    then precision beyond the targets (else a tie goes to whichever combination is listed first)."""
    pooled = sum(runs.values(), Counts())
    trusted = sum(min(counts.precision, PRECISION_TARGETS[run]) for run, counts in runs.items())
    return trusted, pooled.recall, pooled.precision


@dataclass(frozen=True)
class Result:
    """One ranker on one way of writing the profiles: counts and nDCG@10 per profile."""

    per: dict[str, Counts]
    ndcg: dict[str, float]

    @property
    def total(self) -> Counts:
        return sum(self.per.values(), Counts())

    def worst(self, metric: str) -> tuple[str, float]:
        name = min(self.per, key=lambda k: getattr(self.per[k], metric))
        return name, getattr(self.per[name], metric)


def profile_counts(profile: Judged, got: set[str], seed_keys: set[str]) -> Counts:
    twos = {k for k, r in profile.labels.items() if r == 2 and k in seed_keys} - profile.known
    got = got - profile.known
    good = sum(1 for k in got if profile.labels.get(k, 0) >= 1)
    return Counts(len(got), good, len(twos & got), len(twos))


def ndcg_at_10(profiles: list[Judged], ranker: Ranker, pool: list[StoredPaper]) -> dict[str, float]:
    ranker.prepare(pool)
    values = {}
    for p in profiles:
        titles = (normalize_title(s.paper.title) for s in ranker.rank(pool, p.subscriber))
        ranked = list(itertools.islice((t for t in titles if t not in p.known), 10))
        gains = [2 ** p.labels.get(t, 0) - 1 for t in ranked]
        ideal = sorted((2**r - 1 for k, r in p.labels.items() if k not in p.known), reverse=True)[:10]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        values[p.id] = dcg / idcg if idcg else 0.0
    return values


def evaluate(
    make: Callable[[], Ranker],
    seeds: list[Path],
    profiles: list[Judged],
    pool: list[StoredPaper],
    clicks: bool = False,
) -> tuple[Result, Result]:
    """All the digests, and the digests after the first FEEDBACK_FROM (against the papers first seen
    in their dumps). nDCG is measured without feedback, so not for a run with clicks."""
    with tempfile.TemporaryDirectory() as tmp:
        sent, marks = replay(seeds, profiles, make(), Path(tmp), clicks)
    if clicks:
        print(f"  clicks: {marks['more']} more, {marks['less']} less", file=sys.stderr)
    ndcg = {} if clicks else ndcg_at_10(profiles, make(), pool)
    out = []
    for first in (0, FEEDBACK_FROM):
        keys = {normalize_title(p.title) for p in pool if p.first_dump_seq > first}
        got = {p.id: set().union(*sent[p.subscriber.email][first:]) for p in profiles}
        out.append(Result({p.id: profile_counts(p, got[p.id], keys) for p in profiles}, ndcg))
    return out[0], out[1]


def run_variants(
    make: Callable[[], Ranker], seeds: list[Path], variants: dict[str, list[Judged]], pool: list[StoredPaper]
) -> dict[str, Result]:
    """full, terse, terse on the digests after the first two, and terse + feedback on those."""
    out = {}
    if "full" in variants:
        out["full"], _ = evaluate(make, seeds, variants["full"], pool)
    out["terse"], out["terse 3+"] = evaluate(make, seeds, variants["terse"], pool)
    _, out["terse+fb"] = evaluate(make, seeds, variants["terse"], pool, clicks=True)
    return out


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
                if k in p.known:
                    continue
                rel = p.labels.get(k, 0)
                tp += s >= threshold and rel >= 1
                fp += s >= threshold and rel == 0
                fn += s < threshold and rel == 2
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0

    return max(np.linspace(0.01, 0.5, 50), key=f1)


# -- global parameters: a grid, and leave-one-profile-out ----------------------------------------


def grid(specs: Sequence[str]) -> list[dict[str, float | bool]]:
    """Every combination of 'name=v1,v2' specs, as parameter overrides ([{}] for no specs)."""
    axes = []
    for spec in specs:
        name, _, values = spec.partition("=")
        axes.append([(name, _value(v)) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def _value(text: str) -> float | bool:
    if text in ("true", "false"):
        return text == "true"
    return int(text) if text.lstrip("-").isdigit() else float(text)


def ranker_maker(kind: str, cache: VectorCache, overrides: dict[str, float | bool]) -> Callable[[], Ranker]:
    """The configured ranker, sharing one vector cache, with some global parameters overridden."""

    def make() -> Ranker:
        ranker = make_ranker(kind, cache=cache)  # type: ignore[arg-type]
        ranker.params = replace(ranker.params, **overrides)  # type: ignore[arg-type]
        return ranker

    return make


def label(overrides: dict[str, float | bool]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in overrides.items())


def lopo(results: dict[str, dict[str, Result]], ids: list[str]) -> tuple[dict[str, Result], dict[str, str]]:
    """Each profile scored with the combination best on the others (by ``goal`` over the OBJECTIVE runs)."""
    chosen = {}
    for held in ids:

        def train(name: str, held: str = held) -> tuple[float, float, float]:
            runs = {v: r for v, r in results[name].items() if v in OBJECTIVE}
            return goal({v: sum((r.per[i] for i in ids if i != held), Counts()) for v, r in runs.items()})

        chosen[held] = max(results, key=train)
    variants = next(iter(results.values()))
    out = {
        v: Result(
            {i: results[chosen[i]][v].per[i] for i in ids},
            {i: results[chosen[i]][v].ndcg[i] for i in ids if i in results[chosen[i]][v].ndcg},
        )
        for v in variants
    }
    return out, chosen


# -- the command ------------------------------------------------------------------------------------


def data_arguments(parser: argparse.ArgumentParser) -> None:
    """The judged dumps and profiles, the reference and the ranker (shared with ranking_ceiling.py)."""
    data = ROOT / "tests" / "data"
    parser.add_argument(
        "--judgments",
        type=Path,
        nargs="+",
        default=[data / "relevance-dev.json", data / "relevance-dev2.json"],
    )
    parser.add_argument(
        "--seeds",
        type=Path,
        default=ROOT / "seeds",
        help="folder of dumps replayed in name order, in any format newsletter reads (default: the seeds)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        help="calibrate against these papers instead of the bundled ones (benchmarks/make_reference.py"
        " --out): papers outside the judged dumps measure out of sample",
    )
    parser.add_argument("--ranker", default="auto", choices=["auto", "lexical", "semantic"])


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A missing folder or file, a judgments file of another shape or an unknown --grid parameter is a
    usage error naming it; then calibrate against --reference, if given."""
    if not args.seeds.is_dir():
        parser.error(f"--seeds {args.seeds}: no such folder")
    for path in args.judgments:
        try:
            load_profiles([path], "full")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"--judgments {path}: not a judgments file ({exc!r})")
    known = {f.name for f in fields(make_ranker(args.ranker, cache=MemoryVectorCache()).params)}
    for spec in args.grid:
        name, _, values = spec.partition("=")
        if name not in known:
            parser.error(
                f"--grid {spec}: {args.ranker} has no parameter {name!r} (it has {', '.join(sorted(known))})"
            )
        try:
            [_value(v) for v in values.split(",")]
        except ValueError:
            parser.error(f"--grid {spec}: values are numbers, true or false")
    calibrate(parser, args.reference)


def calibrate(parser: argparse.ArgumentParser, reference: Path | None) -> None:
    """Calibrate against ``--reference`` when given; a file that is no reference is a usage error."""
    if reference is None:
        return
    use_reference(reference)
    try:
        reference_papers()
    except (OSError, EOFError, ValueError, KeyError) as exc:  # missing, not gzip, not JSON lines
        use_reference(REFERENCE)  # back to the bundled papers for whatever runs next in this process
        parser.error(f"--reference {reference}: not a reference file ({exc})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data_arguments(parser)
    parser.add_argument("--grid", action="append", default=[], help="name=v1,v2: a global parameter to vary")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--cache", type=Path, help="keep the vectors in this folder between runs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--feedback-only", action="store_true", help="only the terse and terse + feedback runs"
    )
    parser.add_argument(
        "--judge-liked", action="store_true", help="count a profile's liked papers in its judged pool"
    )
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    seeds = readable(sorted(p for p in args.seeds.iterdir() if p.is_file() and not p.name.startswith(".")))
    with tempfile.TemporaryDirectory() as tmp:
        pool = all_papers(seeds, Path(tmp))
    kinds = ("terse",) if args.feedback_only else ("full", "terse")
    variants = {v: load_profiles(args.judgments, v, args.judge_liked) for v in kinds}
    cache = DiskVectorCache(args.cache) if args.cache else MemoryVectorCache()  # each text embedded once
    combos = [{}, *(c for c in grid(args.grid) if c)]
    results: dict[str, dict[str, Result]] = {}
    for combo in combos:
        started = time.perf_counter()
        make = ranker_maker(args.ranker, cache, combo)
        results[label(combo) or "shipped"] = run_variants(make, seeds, variants, pool)
        print(f"[{label(combo) or 'shipped'}] {time.perf_counter() - started:.1f}s", file=sys.stderr)
    rows = {f"newsletter ({args.ranker})": results["shipped"]}
    chosen: dict[str, str] = {}
    if len(results) > 1:
        rows[f"newsletter ({args.ranker}), LOPO"], chosen = lopo(results, [p.id for p in variants["terse"]])
    if not args.no_baselines and not args.feedback_only:
        rows.update(baselines(seeds, variants, pool))
    if args.json:
        print(json.dumps(as_json(rows, results, chosen), indent=2))
        return 0
    print_table(rows, len(pool), len(seeds))
    print("a profile's liked papers are " + ("judged" if args.judge_liked else "left out of its judged pool"))
    print_profiles(rows, chosen)
    return 0


def baselines(seeds: list[Path], variants: dict[str, list[Judged]], pool: list[StoredPaper]) -> dict:
    top = {v: evaluate(lambda: TfidfRanker(top=10), seeds, p, pool)[0] for v, p in variants.items()}
    one = {}
    for v, profiles in variants.items():
        threshold = best_global_threshold(profiles, pool)
        one[v] = evaluate(partial(TfidfRanker, threshold=threshold), seeds, profiles, pool)[0]
    return {"baseline: tf-idf top 10": top, "baseline: tf-idf one threshold": one}


def as_json(rows: dict[str, dict[str, Result]], results: dict, chosen: dict[str, str]) -> dict:
    def one(r: Result) -> dict:
        total = r.total
        per = {
            i: {"precision": c.precision, "recall": c.recall, "ndcg": r.ndcg.get(i)} for i, c in r.per.items()
        }
        return {"precision": total.precision, "recall": total.recall, "sent": total.sent, "per_profile": per}

    return {
        "rows": {m: {v: one(r) for v, r in vs.items()} for m, vs in rows.items()},
        "grid": {name: {v: one(r) for v, r in vs.items()} for name, vs in results.items()},
        "lopo_choice": chosen,
    }


def print_table(rows: dict[str, dict[str, Result]], pool_size: int, dumps: int) -> None:
    print(
        f"Ranking quality on the replay of {dumps} dumps ({pool_size} papers; pooled over profiles; "
        "targets (LOPO): full P >= 0.90, R >= 0.92; terse P >= 0.88, R >= 0.85; no full recall < 0.80;"
        f" terse+fb, digests {FEEDBACK_FROM + 1}+: P >= 0.90, R >= 0.90)"
    )
    print(
        f"{'method':38} {'profile':8} {'precision':>9} {'recall':>7} {'nDCG@10':>8} {'sent':>5}"
        f"  {'worst precision':>24}  {'worst recall':>24}"
    )
    for method, variants in rows.items():
        for variant, r in variants.items():
            t, ndcg = r.total, np.mean(list(r.ndcg.values())) if r.ndcg else math.nan
            wp, wr = r.worst("precision"), r.worst("recall")
            print(
                f"{method:38} {variant:8} {t.precision:9.3f} {t.recall:7.3f} {ndcg:8.3f}"
                f" {t.sent:5d}  {wp[0]:>17} {wp[1]:.3f}  {wr[0]:>17} {wr[1]:.3f}"
            )


def print_profiles(rows: dict[str, dict[str, Result]], chosen: dict[str, str]) -> None:
    """Precision / recall per profile, for each run of the shipped parameters (and LOPO)."""
    methods = [m for m in rows if m.startswith("newsletter")]
    runs = [(m, v) for m in methods for v in rows[m]]
    print()
    print(f"{'profile':18} " + "  ".join(f"{'LOPO' if 'LOPO' in m else 'fitted':>15}" for m, _ in runs))
    print(f"{'':18} " + "  ".join(f"{v + ' P / R':>15}" for _, v in runs))
    for pid in next(iter(rows[methods[0]].values())).per:
        cells = "  ".join(
            f"{rows[m][v].per[pid].precision:>7.3f} / {rows[m][v].per[pid].recall:.3f}" for m, v in runs
        )
        print(f"{pid:18} {cells}   {chosen.get(pid, '')}")


if __name__ == "__main__":
    sys.exit(main())
