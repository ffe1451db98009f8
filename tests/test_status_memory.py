"""status checks that a refused file is still there without reading it whole into memory."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

from newsletter.ops.status import _content_hash


def test_a_large_refused_file_is_hashed_in_blocks(tmp_path: Path) -> None:
    big = tmp_path / "backup.tar"
    big.write_bytes(b"x" * (64 * 2**20))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    tracemalloc.start()
    try:
        assert _content_hash(str(big)) == digest
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20
    big.unlink()
    assert _content_hash(str(big)) is None
