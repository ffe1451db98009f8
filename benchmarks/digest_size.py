"""Size of a digest built from real HF daily_papers files: HTML and text bytes against Gmail's clip.

    python benchmarks/digest_size.py [FOLDER] [--papers 10] [--out DIR]

Ingests every HF JSON file in FOLDER (default: the project's shared real captures, else
tests/data/realdata) into a fresh store, takes the most upvoted papers of the newest listing (with
every field the store keeps: links, upvotes, comments, summary), renders them with the bundled
templates and prints the sizes. ``--out`` writes the HTML and text parts there, to look at in a
browser (e.g. headless Chromium at 375 and 800 px).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from newsletter.config import PACKAGE_TEMPLATES
from newsletter.errors import NewsletterError
from newsletter.models import Scored
from newsletter.render import DigestView, Renderer
from newsletter.render.cards import item_view
from newsletter.sources import read_dump
from newsletter.store import Store

GMAIL_CLIP = 102 * 1024
SHARED = Path("/work/shared/realdata/hf-json")
BUNDLED = Path(__file__).resolve().parents[1] / "tests" / "data" / "realdata"
WHY = "matches: agents, reinforcement learning"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=SHARED if SHARED.is_dir() else BUNDLED)
    parser.add_argument("--papers", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, Store(f"sqlite:///{home}/state.db") as store:
        newest = ingest(store, sorted(args.folder.glob("*.json")))
        papers = sorted(
            (paper for paper, _rank in store.papers_in_dump(newest)), key=lambda p: -(p.upvotes or 0)
        )[: args.papers]
    items = tuple(item_view(Scored(p, 0.9, WHY, relevant=True)) for p in papers)
    view = DigestView(
        "Ada",
        "ada@example.org",
        items,
        datetime.now(UTC),
        "https://example.org/u?t=x",
        "Note.",
        "Trending Papers",
    )
    rendered = Renderer(PACKAGE_TEMPLATES).render(view)
    html, text = rendered.html.encode(), rendered.text.encode()
    print(f"papers: {len(items)} (newest listing, most upvoted first)")
    print(f"html: {len(html):,} bytes ({len(html) / GMAIL_CLIP:.0%} of Gmail's 102 KB clip)")
    print(f"text: {len(text):,} bytes")
    print(f"links per paper: {sum(len(i.links) for i in items) / max(len(items), 1):.1f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "digest.html").write_bytes(html)
        (args.out / "digest.txt").write_bytes(text)
        print(f"wrote {args.out / 'digest.html'} and digest.txt")


def ingest(store: Store, files: list[Path]) -> int:
    """Ingest each file (refused ones are reported and skipped); the newest listing's dump seq."""
    newest = 0
    for path in files:
        try:
            newest = store.ingest(read_dump(path), datetime.now(UTC)).dump_seq
        except NewsletterError as exc:
            print(f"refused: {exc}")
    return newest


if __name__ == "__main__":
    main()
