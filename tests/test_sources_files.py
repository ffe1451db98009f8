"""Only regular files are read as dumps: a FIFO (or a device) is one error line, never a hang."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.errors import SourceError
from newsletter.sources import list_dump_files, read_dump

from .helpers import make_env


def test_reading_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "dump.txt"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match=r"cannot read dump .*dump\.txt: not a regular file"):
        read_dump(fifo)
    assert list_dump_files(tmp_path) == []


def test_ingest_of_a_fifo_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "ingest", str(fifo)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,  # it used to wait forever for a writer
    )
    assert proc.returncode == 1
    assert (
        proc.stdout.strip()
        == f"{fifo}: 0 papers, 0 new (rejected: cannot read dump {fifo}: not a regular file)"
    )


def test_a_character_device_is_refused_too() -> None:
    with pytest.raises(SourceError, match="not a regular file"):
        read_dump(Path("/dev/zero"))  # would otherwise be read until memory runs out
