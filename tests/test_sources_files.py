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
    assert "rejected" not in proc.stderr  # said once: the error log line repeated it


def test_a_character_device_is_refused_too() -> None:
    with pytest.raises(SourceError, match="not a regular file"):
        read_dump(Path("/dev/zero"))  # would otherwise be read until memory runs out


REAL_JSON = Path(__file__).parent / "data" / "realdata" / "hf-daily_2026-08-21.json"


def test_a_utf16_listing_is_read_like_its_utf8_self() -> None:
    from newsletter.sources import parse_dump

    raw = REAL_JSON.read_bytes()
    utf16 = parse_dump(raw.decode("utf-8").encode("utf-16"), "saved-by-windows.json")
    assert [p.title for p in utf16.papers] == [p.title for p in parse_dump(raw, "a.json").papers]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"null\n", "expected a JSON list of papers, got null"),
        (b'<?xml version="1.0"?>\n<rdf:RDF xmlns:rdf="x"><channel/></rdf:RDF>', r"an RSS 1\.0 \(RDF\) feed"),
    ],
)
def test_a_misrouted_file_is_refused_for_what_it_is(data: bytes, problem: str) -> None:
    """Not 'truncated dump: ends with title null' nor 'an HTML/XML page, not a text dump'."""
    from newsletter.errors import ParseError
    from newsletter.sources import parse_dump

    with pytest.raises(ParseError, match=problem):
        parse_dump(data, "odd.json")
