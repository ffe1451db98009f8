"""How much the state database grows when every paper's vectors are kept, against forgetting those no
run reads again (newsletter/selection/forget.py), over a replay of real dumps.

    python benchmarks/vector_growth.py [FOLDER] [--days N]    # default: the shared real HF captures

As a default install does, the first run reads the bundled seeds (text dumps without arXiv ids, so
keyed by title as the reference papers are); then FOLDER's dated files are copied one a day into the
dumps folder, with one run (semantic ranker, file outbox, the example subscribers) after each. The
replay runs twice, keeping every vector (the baseline) and forgetting. It prints, per replay, the
vectors stored, the bytes the database uses and their growth over the second half of the replay (the
first half fills the recent dumps a run keeps), the seconds in runs and the texts embedded (equal
when nothing is embedded twice), and each figure of the second replay as a ratio of the first.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import numpy as np

from newsletter.app import open_pipeline
from newsletter.config import Settings
from newsletter.rank.minilm import MiniLMEmbedder
from newsletter.subscribers import load_subscribers

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path("/work/shared/realdata/hf-json")
DAY0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=SHARED)
    parser.add_argument("--days", type=int, default=0, help="replay only the first N files (0: all)")
    args = parser.parse_args()
    files = sorted(p for p in args.folder.iterdir() if re.search(r"\d{4}-\d{2}-\d{2}", p.name))
    files = [
        sorted((ROOT / "seeds").glob("*.txt")),
        *([f] for f in (files[: args.days] if args.days else files)),
    ]
    kept = replay(files, forget=False)
    forgot = replay(files, forget=True)
    half = len(files) // 2
    last = len(files) - half
    print(f"the seeds, then {len(files) - 1} dumps, one run after each; 'growth': over the last {last} runs")
    print(f"{'':<20}{'vectors':>9}{'growth':>8}{'MB used':>9}{'growth':>8}{'run s':>8}{'embedded':>10}")
    rows = {name: _figures(steps, half) for name, steps in (("keep every vector", kept), ("forget", forgot))}
    for name, row in rows.items():
        sizes = f"{row[2] / 1e6:>9.1f}{row[3] / 1e6:>8.1f}"
        print(f"{name:<20}{row[0]:>9,}{row[1]:>8,}{sizes}{row[4]:>8.1f}{row[5]:>10,}")
    base, new = rows.values()
    ratios = "".join(
        f"{f / b if b else float('nan'):>{w}.3f}"
        for f, b, w in zip(new, base, (9, 8, 9, 8, 8, 10), strict=True)
    )
    print(f"{'ratio':<20}{ratios}")


def _figures(steps: list[tuple[int, int, float, int]], half: int) -> tuple[int, int, int, int, float, int]:
    """(vectors, their growth since run ``half``, bytes used, its growth, seconds in runs, texts embedded)."""
    (vectors, used, _, _), (mid_vectors, mid_used, _, _) = steps[-1], steps[half - 1]
    took, embedded = sum(step[2] for step in steps), sum(step[3] for step in steps)
    return vectors, vectors - mid_vectors, used, used - mid_used, took, embedded


def replay(files: list[list[Path]], *, forget: bool) -> list[tuple[int, int, float, int]]:
    """After each of one run per file: (vectors stored, bytes the database uses, seconds it took, texts
    it embedded)."""
    steps, embedded = [], []
    real_embed = MiniLMEmbedder.embed

    def counted(self: MiniLMEmbedder, texts: Sequence[str]) -> np.ndarray:
        embedded.append(len(texts))
        return real_embed(self, texts)

    keep = mock.patch("newsletter.pipeline.forget_old_vectors", _keep)
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(MiniLMEmbedder, "embed", counted),
        contextlib.nullcontext() if forget else keep,
    ):
        settings = _settings(Path(tmp))
        subscribers = load_subscribers(settings.subscribers)
        for day, paths in enumerate(files):
            for path in paths:
                shutil.copy(path, settings.dumps / path.name)
            embedded.clear()
            started = time.perf_counter()
            with open_pipeline(settings) as pipeline:
                pipeline.run(subscribers, DAY0 + timedelta(days=day))
            took = time.perf_counter() - started
            steps.append((*_used(settings.home / "state.db"), took, sum(embedded)))
    return steps


def _keep(*args: object) -> int:
    return 0


def _settings(tmp: Path) -> Settings:
    (tmp / "dumps").mkdir()
    return Settings(
        home=tmp / "state",
        dumps=tmp / "dumps",
        subscribers=ROOT / "subscribers.example.yaml",
        ranker="semantic",
    )


def _used(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        vectors = conn.execute("SELECT count(*) FROM vectors").fetchone()[0]
        pages, free, size = (
            conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
        )
    return vectors, (pages - free) * size


if __name__ == "__main__":
    main()
