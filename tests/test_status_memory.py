"""status checks that a refused file is still there without reading it whole into memory."""

from __future__ import annotations

import hashlib
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from newsletter.status import _still_there
from newsletter.store.rejected import RejectedFile


def test_a_large_refused_file_is_hashed_in_blocks(tmp_path: Path) -> None:
    big = tmp_path / "backup.tar"
    big.write_bytes(b"x" * (64 * 2**20))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    record = RejectedFile(digest, str(big), "skipped, not a dump file", datetime(2026, 1, 1, tzinfo=UTC))
    tracemalloc.start()
    try:
        assert _still_there(record)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20
    big.write_bytes(b"y")
    assert not _still_there(record)
