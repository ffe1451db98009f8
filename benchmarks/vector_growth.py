"""How much the state database grows when every paper's vectors are kept, against forgetting those no
run reads again (newsletter/forget.py), over a replay of real dumps.

    python benchmarks/vector_growth.py [FOLDER] [--days N]    # default: the shared real HF captures

The dated files are copied one a day into a fresh dumps folder, with one run (semantic ranker, file
outbox, the example subscribers) after each; the replay runs twice, keeping every vector (the
baseline) and forgetting. It prints, per replay, the vectors stored, the bytes the database uses and
the total run time, and each figure of the second as a ratio of the first.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

from newsletter.app import open_pipeline
from newsletter.config import Settings, load_subscribers

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path("/work/shared/realdata/hf-json")
DAY0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=SHARED)
    parser.add_argument("--days", type=int, default=0, help="replay only the first N files (0: all)")
    args = parser.parse_args()
    files = sorted(p for p in args.folder.iterdir() if re.search(r"\d{4}-\d{2}-\d{2}", p.name))
    files = files[: args.days] if args.days else files
    kept = replay(files, forget=False)
    forgot = replay(files, forget=True)
    print(f"{len(files)} dumps, one run after each")
    print(f"{'':<22}{'vectors':>10}{'MB used':>10}{'run s':>9}")
    for name, row in (("keep every vector", kept), ("forget (this code)", forgot)):
        print(f"{name:<22}{row[0]:>10,}{row[1] / 1e6:>10.1f}{row[2]:>9.1f}")
    ratios = [f / k if k else float("nan") for f, k in zip(forgot, kept, strict=True)]
    print(f"{'ratio':<22}{ratios[0]:>10.3f}{ratios[1]:>10.3f}{ratios[2]:>9.3f}")


def replay(files: list[Path], *, forget: bool) -> tuple[int, int, float]:
    """(vectors stored, bytes the database uses, seconds in runs) after one run per file."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp))
        subscribers = load_subscribers(settings.subscribers)
        took = 0.0
        with (
            mock.patch("newsletter.pipeline.forget_old_vectors", _keep)
            if not forget
            else contextlib.nullcontext()
        ):
            for day, path in enumerate(files):
                shutil.copy(path, settings.dumps / path.name)
                started = time.perf_counter()
                with open_pipeline(settings) as pipeline:
                    pipeline.run(subscribers, DAY0 + timedelta(days=day))
                took += time.perf_counter() - started
        return (*_used(settings.home / "state.db"), took)


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
