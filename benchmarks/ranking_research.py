"""Ranking research: compare rankers on the seed dumps against the dev relevance judgments.

Not a test and not the pipeline harness: it replays the five seed dumps straight through the rankers.
For each dump, each profile gets the dump's NEW papers, ranked; the relevant ones (at most 20) are
"sent". precision = share of sent papers judged 1 or 2; recall = share of label-2 papers sent (both
pooled over profiles and dumps); nDCG@10 (gain 2^label - 1, as in benchmarks/ranking.py) = one
ranking of all 385 papers, mean over profiles.

Profiles are read two ways: "full" (interests = keywords, about = description) and "terse" (the
first two keywords only). Thresholds are global; "lopo" re-picks the threshold on five profiles and
scores the sixth (leave one profile out), to show how much a threshold overfits this dev set.

    /work/venv/bin/python benchmarks/ranking_research.py [--methods a,b] [--background dump|seen]
    ... --model /path/to/all-mpnet-base-v2   # semantic methods with another sentence-transformers model
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.models import Dump, Scored, StoredPaper, Subscriber, normalize_title  # noqa: E402
from newsletter.rank.embed import MemoryVectorCache  # noqa: E402
from newsletter.rank.lexical import LexicalParams, LexicalRanker  # noqa: E402
from newsletter.rank.semantic import SemanticParams, SemanticRanker  # noqa: E402
from newsletter.rank.text import STOPWORDS, tokens  # noqa: E402
from newsletter.sources import read_dump  # noqa: E402

SEEDS = ROOT / "seeds"
JUDGMENTS = ROOT / "tests" / "data" / "relevance-dev.json"
MAX_ITEMS = 20
CACHE_DIR = Path(os.environ.get("RANK_RESEARCH_CACHE", "/tmp/rank_research_cache"))


# ---------------------------------------------------------------- data


def read_seed(path: Path) -> Dump:
    return read_dump(path)


@dataclass
class Seeds:
    papers: dict[str, StoredPaper]  # by key, every unique paper
    new_per_dump: list[list[StoredPaper]]
    seen_per_dump: list[list[StoredPaper]]  # every paper seen up to and including each dump


def load_seeds() -> Seeds:
    dumps = [read_seed(p) for p in sorted(SEEDS.glob("*.txt"))]
    seen: dict[str, list[tuple[int, int]]] = {}
    first: dict[str, tuple[str, str]] = {}
    for seq, dump in enumerate(dumps):
        for paper in dump.papers:
            seen.setdefault(paper.key, []).append((seq, paper.rank))
            first.setdefault(paper.key, (paper.title, paper.abstract))
    start = datetime(2025, 3, 11, tzinfo=UTC)
    papers = {
        key: StoredPaper(
            id=i + 1,
            key=key,
            title=first[key][0],
            abstract=first[key][1],
            arxiv_id=None,
            authors=(),
            first_seen=start + timedelta(days=hits[0][0]),
            last_seen=start + timedelta(days=hits[-1][0]),
            first_dump_seq=hits[0][0],
            times_seen=len(hits),
            best_rank=min(r for _, r in hits),
        )
        for i, (key, hits) in enumerate(seen.items())
    }
    new = [[p for p in papers.values() if p.first_dump_seq == s] for s in range(len(dumps))]
    upto = [[p for p in papers.values() if p.first_dump_seq <= s] for s in range(len(dumps))]
    for group in (*new, *upto):
        group.sort(key=lambda p: p.best_rank)
    return Seeds(papers, new, upto)


@dataclass
class Profile:
    id: str
    full: Subscriber
    terse: Subscriber
    labels: dict[str, int]  # paper key -> 1 | 2


def load_profiles() -> list[Profile]:
    data = json.loads(JUDGMENTS.read_text())
    out = []
    for p in data["profiles"]:
        email, exclude = f"{p['id']}@example.org", tuple(p["exclude"])
        full = Subscriber(
            email=email,
            max_items=MAX_ITEMS,
            exclude=exclude,
            interests=tuple(p["keywords"]),
            about=p["description"],
        )
        terse = Subscriber(
            email=email, max_items=MAX_ITEMS, exclude=exclude, interests=tuple(p["keywords"][:2])
        )
        labels = {normalize_title(t): v for t, v in p["relevance"].items()}
        out.append(Profile(p["id"], full, terse, labels))
    return out


# ---------------------------------------------------------------- a disk cache for the research runs


class DiskVectorCache(MemoryVectorCache):
    """MemoryVectorCache persisted as one .npz per model, so research runs embed each text once."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self._loaded: set[str] = set()

    def _file(self, model: str) -> Path:
        return self.folder / (model.replace("/", "_").replace(":", "_") + ".npz")

    def _load(self, model: str) -> None:
        if model in self._loaded:
            return
        self._loaded.add(model)
        path = self._file(model)
        if path.exists():
            with np.load(path) as data:
                keys = json.loads(str(data["keys"]))
                super().put(model, dict(zip(keys, data["vectors"], strict=True)))

    def get(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        self._load(model)
        return super().get(model, keys)

    def put(self, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        self._load(model)
        super().put(model, vectors)
        mine = {k: v for (m, k), v in self._data.items() if m == model}
        self.folder.mkdir(parents=True, exist_ok=True)
        # written aside, then renamed: a run sharing the folder never reads half a file
        partial = self._file(model).with_suffix(f".{os.getpid()}.npz")
        np.savez(partial, keys=json.dumps(list(mine)), vectors=np.stack(list(mine.values())))
        os.replace(partial, self._file(model))


# ---------------------------------------------------------------- baselines


def plain_tokens(text: str) -> list[str]:
    """What a vanilla TF-IDF sees: lower-cased words, English stop words dropped, no stemming."""
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS]


class TfidfRanker:
    """Baseline: cosine of TF-IDF vectors, query = interests + about. ``top`` cuts at N (no threshold)."""

    def __init__(self, threshold: float = 0.08, top: int | None = None, plain: bool = True) -> None:
        self.threshold, self.top = threshold, top
        self.tokens = plain_tokens if plain else tokens
        self.idf: dict[str, float] = {}

    def prepare(self, papers: Sequence[StoredPaper], background: Sequence[StoredPaper] = ()) -> None:
        papers = [*papers, *background]
        df = Counter(t for p in papers for t in set(self.tokens(f"{p.title} {p.abstract}")))
        self.idf = {t: math.log((1 + len(papers)) / (1 + d)) + 1 for t, d in df.items()}

    def _vec(self, text: str) -> dict[str, float]:
        tf = Counter(self.tokens(text))
        v = {t: (1 + math.log(c)) * self.idf.get(t, 0.0) for t, c in tf.items()}
        n = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {t: x / n for t, x in v.items()}

    def rank_many(
        self,
        papers: Sequence[StoredPaper],
        subs: Sequence[Subscriber],
        only_relevant: bool = False,
        capped: bool = False,
    ) -> Iterator[list[Scored]]:
        vecs = [self._vec(f"{p.title} {p.abstract}") for p in papers]
        for sub in subs:
            q = self._vec(" ".join(sub.interests) + " " + sub.about)
            sims = [sum(w * v.get(t, 0.0) for t, w in q.items()) for v in vecs]
            order = sorted(range(len(papers)), key=lambda i: (-sims[i], papers[i].best_rank))
            yield [self._scored(papers[i], sims[i], pos) for pos, i in enumerate(order)]

    def _scored(self, paper: StoredPaper, score: float, pos: int) -> Scored:
        relevant = pos < self.top if self.top else score >= self.threshold
        return Scored(paper=paper, score=score, why="tf-idf", relevant=relevant)


# ---------------------------------------------------------------- evaluation


@dataclass
class Run:
    """What one method produced for one profile: per-dump scored candidates, and the all-papers ranking."""

    daily: list[list[Scored]] = field(default_factory=list)
    full_ranking: list[Scored] = field(default_factory=list)


def replay(ranker, seeds: Seeds, subs: list[Subscriber], background: str) -> list[Run]:
    runs = [Run() for _ in subs]
    for seq, new in enumerate(seeds.new_per_dump):
        reference = {"seen": seeds.seen_per_dump[seq], "all": list(seeds.papers.values())}.get(background, [])
        ranker.prepare(new, reference)
        for run, ranked in zip(runs, ranker.rank_many(new, subs, only_relevant=False), strict=True):
            run.daily.append(ranked)
    everything = list(seeds.papers.values())
    ranker.prepare(everything)
    for run, ranked in zip(runs, ranker.rank_many(everything, subs, only_relevant=False), strict=True):
        run.full_ranking = ranked
    return runs


def sent(ranked: list[Scored], threshold: float | None) -> list[Scored]:
    """The digest: relevant papers (or, for a threshold sweep, those scoring >= it), best first."""
    if threshold is None:
        return [s for s in ranked if s.relevant][:MAX_ITEMS]
    return [s for s in ranked if s.score >= threshold and "you excluded" not in s.why][:MAX_ITEMS]


def counts(run: Run, labels: dict[str, int], threshold: float | None) -> np.ndarray:
    """[sent, sent judged 1|2, label-2 sent, label-2 total] over the daily digests."""
    out = np.zeros(4)
    for ranked in run.daily:
        picked = sent(ranked, threshold)
        out[0] += len(picked)
        out[1] += sum(labels.get(s.paper.key, 0) >= 1 for s in picked)
        out[2] += sum(labels.get(s.paper.key, 0) == 2 for s in picked)
        out[3] += sum(labels.get(s.paper.key, 0) == 2 for s in ranked)
    return out


def ndcg10(ranking: list[Scored], labels: dict[str, int]) -> float:
    """nDCG@10 with gain 2^label - 1, as benchmarks/ranking.py measures it."""
    gains = [2 ** labels.get(s.paper.key, 0) - 1 for s in ranking[:10]]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted((2**r - 1 for r in labels.values()), reverse=True)[:10]
    return dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal))


def pr(c: np.ndarray) -> tuple[float, float]:
    return (c[1] / c[0] if c[0] else 1.0), (c[2] / c[3] if c[3] else 1.0)


def pick_threshold(runs: list[Run], profiles: list[Profile]) -> float:
    """The single threshold maximising min(P, R) (then F1) over these runs."""
    scores = sorted({round(s.score, 4) for r in runs for d in r.daily for s in d})
    best, best_val = scores[0], (-1.0, -1.0)
    for th in scores[:: max(1, len(scores) // 400)]:
        p, r = pr(
            sum((counts(run, prof.labels, th) for run, prof in zip(runs, profiles, strict=True)), np.zeros(4))
        )
        val = (min(p, r), 2 * p * r / (p + r) if p + r else 0.0)
        if val > best_val:
            best, best_val = th, val
    return best


@dataclass
class Result:
    precision: float
    recall: float
    ndcg: float
    lopo_precision: float
    lopo_recall: float
    per_profile: dict[str, tuple[float, float, float]]


def evaluate(runs_by_mode: dict[str, list[Run]], profiles: list[Profile], mode: str) -> Result:
    runs = runs_by_mode[mode]
    total = sum((counts(r, p.labels, None) for r, p in zip(runs, profiles, strict=True)), np.zeros(4))
    per = {}
    for r, p in zip(runs, profiles, strict=True):
        pp, rr = pr(counts(r, p.labels, None))
        per[p.id] = (pp, rr, ndcg10(r.full_ranking, p.labels))
    lopo = np.zeros(4)
    both = [(r, p) for m in runs_by_mode.values() for r, p in zip(m, profiles, strict=True)]
    for i, prof in enumerate(profiles):
        train = [(r, p) for r, p in both if p.id != prof.id]
        th = pick_threshold([r for r, _ in train], [p for _, p in train])
        lopo += counts(runs[i], prof.labels, th)
    precision, recall = pr(total)
    lp, lr = pr(lopo)
    ndcg = float(np.mean([v[2] for v in per.values()]))
    return Result(precision, recall, ndcg, lp, lr, per)


# ---------------------------------------------------------------- methods


class FolderEmbedder:
    """A sentence-transformers model from a local folder, for comparing models (not used by the tool)."""

    def __init__(self, folder: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(folder), device="cpu")
        self.name = folder.name
        self.dim = int(self.model.get_sentence_embedding_dimension())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=32, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


EMBEDDER: FolderEmbedder | None = None  # --model; None: the bundled MiniLM


def _semantic(cache: DiskVectorCache, params: SemanticParams | None = None) -> Callable[[], SemanticRanker]:
    return lambda: SemanticRanker(embedder=EMBEDDER, cache=cache, params=params or SemanticParams())


def methods(cache: DiskVectorCache) -> dict[str, Callable[[], object]]:
    return {
        "tfidf-top10": lambda: TfidfRanker(top=10),
        "tfidf-threshold": lambda: TfidfRanker(),
        "tfidf-stemmed-threshold": lambda: TfidfRanker(plain=False),
        "lexical": lambda: LexicalRanker(),
        "lexical-phrases-only": lambda: LexicalRanker(replace(LexicalParams(), words_scale=0.0)),
        "semantic-cosine-z": _semantic(
            cache, replace(SemanticParams(), lexical_weight=0.0, context=0.0, words_weight=0.0)
        ),
        "semantic+phrases": _semantic(cache, replace(SemanticParams(), context=0.0, words_weight=0.0)),
        "semantic+phrases+context": _semantic(cache, replace(SemanticParams(), words_weight=0.0)),
        "semantic+phrases+context+tfidf": _semantic(cache),
    }


def _value(text: str) -> float | bool:
    """A --try value: true or false for a switch, else a number (ValueError for anything else)."""
    if text in ("true", "false"):
        return text == "true"
    return float(text)


def variant(spec: str, cache: DiskVectorCache) -> Callable[[], object]:
    kind, _, settings = spec.partition(":")
    # Any: names and values come from the command line; replace() refuses a name the params lack
    kw: dict[str, Any] = {k: _value(v) for k, v in (item.split("=") for item in settings.split(",") if item)}
    if kind == "lexical":
        return lambda: LexicalRanker(replace(LexicalParams(), **kw))
    return _semantic(cache, replace(SemanticParams(), **kw))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--background", choices=["dump", "seen", "all"], default="seen")
    parser.add_argument("--detail", action="store_true", help="per-profile figures too")
    parser.add_argument(
        "--select",
        action="store_true",
        help="leave one profile out over the methods: pick the method on five profiles, score the sixth",
    )
    parser.add_argument(
        "--try",
        dest="variants",
        action="append",
        default=[],
        help="a semantic or lexical variant, e.g. 'semantic:words_weight=1,context=2' (repeatable)",
    )
    parser.add_argument(
        "--model", type=Path, help="a sentence-transformers model folder for the semantic methods"
    )
    args = parser.parse_args()
    global EMBEDDER
    if args.model:
        EMBEDDER = FolderEmbedder(args.model)
    seeds, profiles = load_seeds(), load_profiles()
    cache = DiskVectorCache(CACHE_DIR)
    table = methods(cache)
    chosen = [m for m in args.methods.split(",") if m in table]
    for spec in args.variants:
        table[spec] = variant(spec, cache)
        chosen.append(spec)
    chosen = chosen or list(table)
    print(
        f"papers={len(seeds.papers)} new per dump={[len(n) for n in seeds.new_per_dump]} "
        f"background={args.background}"
    )
    print(f"{'method':44s} {'mode':5s}  {'P':>5s} {'R':>5s} {'nDCG':>5s} | {'lopoP':>5s} {'lopoR':>5s}  secs")
    all_runs: dict[str, dict[str, list[Run]]] = {}
    for name in chosen:
        start = time.perf_counter()
        ranker = table[name]()
        runs = {
            m: replay(ranker, seeds, [getattr(p, m) for p in profiles], args.background)
            for m in ("full", "terse")
        }
        all_runs[name] = runs
        secs = time.perf_counter() - start
        for mode in ("full", "terse"):
            r = evaluate(runs, profiles, mode)
            print(
                f"{name[:44]:44s} {mode:5s}  {r.precision:5.3f} {r.recall:5.3f} {r.ndcg:5.3f} | "
                f"{r.lopo_precision:5.2f} {r.lopo_recall:5.2f}  {secs:4.0f}"
            )
            if args.detail:
                for pid, (p, rr, nd) in r.per_profile.items():
                    print(f"    {pid:12s} P={p:.3f} R={rr:.3f} nDCG={nd:.3f}")
    if args.select:
        select_leaving_one_out(all_runs, profiles)


def select_leaving_one_out(all_runs: dict[str, dict[str, list[Run]]], profiles: list[Profile]) -> None:
    """For each profile: the method best on the other five (min(P, R), then F1, both modes pooled),
    scored on the held-out one. Shows whether a knob picked on this dev set carries to new profiles."""
    held = {"full": np.zeros(4), "terse": np.zeros(4)}
    ndcg: dict[str, list[float]] = {"full": [], "terse": []}
    for i, prof in enumerate(profiles):
        best = max(all_runs, key=lambda m: _train_value(all_runs[m], profiles, i))
        print(f"  held out {prof.id:12s} -> {best}")
        for mode in held:
            run = all_runs[best][mode][i]
            held[mode] += counts(run, prof.labels, None)
            ndcg[mode].append(ndcg10(run.full_ranking, prof.labels))
    for mode, c in held.items():
        p, r = pr(c)
        print(
            f"{'leave-one-profile-out selection':44s} {mode:5s}  {p:5.2f} {r:5.2f} {np.mean(ndcg[mode]):5.3f}"
        )


def _train_value(runs: dict[str, list[Run]], profiles: list[Profile], held: int) -> tuple[float, float]:
    total = np.zeros(4)
    for mode_runs in runs.values():
        for j, (run, prof) in enumerate(zip(mode_runs, profiles, strict=True)):
            if j != held:
                total += counts(run, prof.labels, None)
    p, r = pr(total)
    return min(p, r), (2 * p * r / (p + r) if p + r else 0.0)


if __name__ == "__main__":
    main()
