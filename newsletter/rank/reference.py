"""The fixed reference papers every score is calibrated against (see benchmarks/make_reference.py).

A paper's score is how far its similarity to a profile stands above that of these 256 typical
trending ML papers (shipped with the package), never above the papers the store happens to hold:
so a paper that names an interest in its title is sent whether the store holds 1, 3 or 3,000 papers.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from newsletter.models import UNRANKED, StoredPaper

REFERENCE = Path(__file__).resolve().parent / "reference.jsonl.gz"
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_source = REFERENCE


def use_reference(path: Path) -> None:
    """Calibrate against the papers in ``path`` (a file in this format) from now on. For measuring out
    of sample: benchmarks/ranking.py --reference, with papers other than the judged ones."""
    global _source
    _source = path
    reference_papers.cache_clear()


@cache
def reference_papers() -> tuple[StoredPaper, ...]:
    """The reference papers (ids below zero: they are no rows of any store)."""
    lines = gzip.decompress(_source.read_bytes()).decode().splitlines()
    return tuple(_paper(-1 - i, json.loads(line)) for i, line in enumerate(lines))


def _paper(row: int, item: dict[str, str]) -> StoredPaper:
    return StoredPaper(
        id=row,
        key=item["key"],
        title=item["title"],
        abstract=item["abstract"],
        arxiv_id=None,
        authors=(),
        first_seen=_EPOCH,
        last_seen=_EPOCH,
        first_dump_seq=-1,
        times_seen=0,
        best_rank=UNRANKED,
    )
