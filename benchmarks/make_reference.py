"""Write newsletter/rank/reference.jsonl.gz: the fixed set of papers scores are calibrated against.

A ranker measures how far above a typical paper a paper's similarity to a profile is. "Typical" is
this fixed sample of trending ML papers (an even spread over the bundled seed dumps, titles and
abstracts only), so a score means the same whether the store holds one paper or thousands.

    python benchmarks/make_reference.py [--size 256]
    python benchmarks/make_reference.py --dumps DIR --out FILE   # another set, for ranking.py --reference

``--dumps`` takes a folder of dumps in any format newsletter reads; a dump the reader refuses is
named on stderr and left out.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np

from newsletter.errors import SourceError
from newsletter.models import Paper
from newsletter.sources import read_dump

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument(
        "--dumps", type=Path, default=ROOT / "seeds", help="folder of dumps (default: the seeds)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "newsletter" / "rank" / "reference.jsonl.gz")
    args = parser.parse_args()
    if not args.dumps.is_dir():
        parser.error(f"--dumps {args.dumps}: no such folder")
    every = list(_papers(sorted(p for p in args.dumps.iterdir() if p.is_file())).values())
    picked = np.unique(np.linspace(0, len(every) - 1, args.size).round().astype(int))
    lines = [
        json.dumps({"key": every[i].key, "title": every[i].title, "abstract": every[i].abstract})
        for i in picked.tolist()
    ]
    out = args.out
    out.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    print(f"{len(lines)} papers -> {out} ({out.stat().st_size:,} bytes)")


def _papers(dumps: list[Path]) -> dict[str, Paper]:
    """Every paper of the dumps once, by key, in dump order; unreadable dumps named and left out."""
    papers: dict[str, Paper] = {}
    for dump in dumps:
        try:
            found = read_dump(dump).papers
        except SourceError as exc:
            print(f"skipped {dump.name}: {exc}", file=sys.stderr)
            continue
        for paper in found:
            papers.setdefault(paper.key, paper)
    return papers


if __name__ == "__main__":
    main()
