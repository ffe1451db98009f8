"""Write newsletter/rank/reference.jsonl.gz: the fixed set of papers scores are calibrated against.

A ranker measures how far above a typical paper a paper's similarity to a profile is. "Typical" is
this fixed sample of trending ML papers (an even spread over the bundled seed dumps, titles and
abstracts only), so a score means the same whether the store holds one paper or thousands.

    python benchmarks/make_reference.py [--size 256]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

from newsletter.sources import read_dump

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    papers = {}
    for dump in sorted((ROOT / "seeds").glob("*.txt")):
        for paper in read_dump(dump).papers:
            papers.setdefault(paper.key, paper)
    every = list(papers.values())
    picked = np.unique(np.linspace(0, len(every) - 1, args.size).round().astype(int))
    lines = [
        json.dumps({"key": every[i].key, "title": every[i].title, "abstract": every[i].abstract})
        for i in picked.tolist()
    ]
    out = ROOT / "newsletter" / "rank" / "reference.jsonl.gz"
    out.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    print(f"{len(lines)} papers -> {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
