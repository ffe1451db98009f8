"""Ranking speed: 400 papers for 1,000 and 100,000 generated subscriber profiles, with cached vectors.

Paper and profile vectors are random unit vectors put in the vector cache beforehand (what the store
holds between runs), so the figures are for ranking, not for embedding. ``prepare`` gets the 400
candidates and a background of older papers (``--background``, 2,000 by default, as the pipeline
passes), and is timed on its own. The timed part is ``rank_many(papers, subscribers,
only_relevant=True, capped=True)`` consumed to the end, as `newsletter run` calls it: each list holds
the relevant papers up to the subscriber's max_items (10 here). Rows marked "all relevant" emit every
relevant paper (capped=False). Each measurement runs in its own process so its peak memory is its
own. Baselines in the same run: calling ``rank`` once per subscriber (the naive loop) and the lexical
ranker.

    /work/venv/bin/python benchmarks/rank_speed.py [--sizes 1000,100000] [--background 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.models import StoredPaper, Subscriber  # noqa: E402
from newsletter.rank.embed import MemoryVectorCache  # noqa: E402
from newsletter.rank.lexical import LexicalRanker  # noqa: E402
from newsletter.rank.semantic import SemanticRanker  # noqa: E402
from newsletter.rank.text import sentences  # noqa: E402

PAPERS = 400
ALL = ", all relevant"  # a kind's suffix: every relevant paper, not just max_items of them
DIM = 384
TOPICS = """graph neural networks|protein folding|speech recognition|reinforcement learning|optical flow|
machine translation|object detection|tabular learning|federated learning|quantization|
molecule generation|symbolic regression|retrieval augmented generation|code generation|robot learning|
pose estimation|drug discovery|program synthesis|active learning|point cloud registration|
KV cache|efficient LLM serving|instruction tuning|preference optimization|tokenization|3D reconstruction|
neural radiance fields|point clouds|autonomous driving|weather modeling|recommender systems|
contrastive learning|knowledge distillation|continual learning|meta learning|Bayesian optimization|
causal inference|fairness|privacy|adversarial robustness|watermarking|robot grasping|reasoning|agents|
tool use|math reasoning|theorem proving|speech synthesis|music generation|audio tagging"""
MODIFIERS = ["", "efficient", "scalable", "multimodal", "self-supervised", "low-resource", "long-context"]
WORDS = ["model", "data", "training", "inference", "learning", "neural", "vision", "robust", "sparse", "fast"]


def seed_papers(count: int = PAPERS, start: int = 0) -> list[StoredPaper]:
    """``count`` papers: the seed papers, then numbered copies of them (from copy ``start`` on)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ranking_research import load_seeds

    base = list(load_seeds().papers.values())
    if start:
        return [_copy(base[i % len(base)], start + i) for i in range(count)]
    extra = [_copy(p, i) for i, p in enumerate(base[: max(count - len(base), 0)])]
    return (base + extra)[:count]


def _copy(paper: StoredPaper, i: int) -> StoredPaper:
    from dataclasses import replace

    return replace(paper, id=10_000 + i, key=f"copy-{i}-{paper.key}", title=f"{paper.title} (copy {i})")


def phrases() -> list[str]:
    topics = [t.strip() for t in TOPICS.replace("\n", "").split("|")]
    return [f"{m} {t}".strip() for t in topics for m in MODIFIERS]


def profiles(n: int, papers: list[StoredPaper], rng: random.Random) -> list[Subscriber]:
    vocab = phrases()
    return [_profile(i, vocab, papers, rng) for i in range(n)]


def _profile(i: int, vocab: list[str], papers: list[StoredPaper], rng: random.Random) -> Subscriber:
    about = " ".join(rng.choice(WORDS) for _ in range(12)) + f" lab {i}" if rng.random() < 0.5 else ""
    liked = (rng.choice(papers).title,) if rng.random() < 0.1 else ()
    exclude = (rng.choice(vocab),) if rng.random() < 0.1 else ()
    interests = tuple(rng.sample(vocab, rng.randint(2, 5)))
    return Subscriber(
        email=f"u{i}@example.org", interests=interests, about=about, liked=liked, exclude=exclude
    )


class RandomEmbedder:
    """Stands in for the model: only reached if something was not cached (it should not be)."""

    name = "all-MiniLM-L6-v2"
    dim = DIM

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += len(texts)
        return unit_vectors(len(texts), seed=len(texts))


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def warm_cache(papers: list[StoredPaper], subs: list[Subscriber]) -> MemoryVectorCache:
    """Paper, title and sentence vectors by key and every profile text's vector, as the store has them."""
    cache = MemoryVectorCache()
    cache.put(
        RandomEmbedder.name, dict(zip([p.key for p in papers], unit_vectors(len(papers), 1), strict=True))
    )
    titles = dict(zip([p.key for p in papers], unit_vectors(len(papers), 3), strict=True))
    cache.put(f"title:{RandomEmbedder.name}", titles)
    parts = [f"{p.key}#{i}" for p in papers for i in range(len(sentences(p)))]
    cache.put(f"sentence:{RandomEmbedder.name}", dict(zip(parts, unit_vectors(len(parts), 4), strict=True)))
    texts = sorted({t for s in subs for t in (*s.interests, s.about, *s.liked, *s.exclude) if t})
    cache.put(f"query:{RandomEmbedder.name}", dict(zip(texts, unit_vectors(len(texts), 2), strict=True)))
    return cache


def measure(kind: str, n: int, background_size: int) -> dict[str, float]:
    rng = random.Random(7)
    papers = seed_papers()
    background = seed_papers(background_size, start=PAPERS)
    subs = profiles(n, papers, rng)
    embedder = RandomEmbedder()
    cache = warm_cache(papers + background, subs)
    capped = not kind.endswith(ALL)
    kind = kind.removesuffix(ALL)
    ranker = LexicalRanker() if kind == "lexical" else SemanticRanker(embedder, cache)
    start = time.perf_counter()
    ranker.prepare(papers, background)
    prepare_secs = time.perf_counter() - start
    start = time.perf_counter()
    if kind == "semantic-naive":
        sent = sum(sum(s.relevant for s in ranker.rank(papers, sub)) for sub in subs)
    else:
        sent = sum(len(x) for x in ranker.rank_many(papers, subs, only_relevant=True, capped=capped))
    secs = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "prepare_secs": prepare_secs,
        "secs": secs,
        "per_sub_ms": 1000 * secs / n,
        "peak_mb": peak_mb,
        "listed": sent / n,
        "embedded_at_run_time": embedder.calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--background", type=int, default=2000, help="background papers given to prepare")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: "kind:n", run in a child process
    args = parser.parse_args()
    if args.one:
        kind, n = args.one.split(":")
        print(json.dumps(measure(kind, int(n), args.background)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = ("semantic", "lexical", "semantic" + ALL, "lexical" + ALL)
    runs = [("semantic-naive", min(sizes))] + [(k, n) for k in kinds for n in sizes]
    print(f"{PAPERS} papers (+{args.background} background), cached vectors, {os.cpu_count()} cores")
    head = ("ranker", "subscribers", "prepare s", "rank s", "ms/subscriber", "peak MB", "listed/sub")
    widths = (22, 11, 9, 8, 14, 8, 12)
    print(
        " ".join(
            f"{h:{w}s}" if i == 0 else f"{h:>{w}s}" for i, (h, w) in enumerate(zip(head, widths, strict=True))
        )
    )
    for kind, n in runs:
        command = [sys.executable, __file__, "--one", f"{kind}:{n}", "--background", str(args.background)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{kind:22s} {n:11,d} {r['prepare_secs']:9.2f} {r['secs']:8.2f} {r['per_sub_ms']:14.4f} "
            f"{r['peak_mb']:8.0f} {r['listed']:12.1f}"
        )


if __name__ == "__main__":
    main()
