"""Which dump files a scan would still read (what a preview locked out by a run leaves out): by the
content hash the store keeps, so a UTF-16 copy of a stored dump, a refused file under a new name and a
file too large to read wait for nothing."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from newsletter.intake import ingest_folder, waiting_files, waiting_note
from newsletter.sources import MAX_DUMP_BYTES
from newsletter.store import Store

from .helpers import SEEDS, seed_names

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_only_files_a_scan_would_read_are_waiting(tmp_path: Path) -> None:
    folder = tmp_path / "dumps"
    folder.mkdir()
    shutil.copy(SEEDS / seed_names()[0], folder / "a.txt")
    (folder / "broken.json").write_text('{"not": "a listing"', "utf-8")
    with Store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        ingest_folder(store, folder, NOW)  # a.txt in, broken.json refused
        text = (SEEDS / seed_names()[0]).read_text("utf-8")
        (folder / "a-windows.txt").write_bytes(text.encode("utf-16"))  # the same dump, saved as UTF-16
        shutil.copy(folder / "broken.json", folder / "broken-copy.json")  # refused whatever its name
        with (folder / "video.json").open("wb") as huge:  # refused unread
            huge.truncate(MAX_DUMP_BYTES + 1)
        shutil.copy(SEEDS / seed_names()[1], folder / "b.txt")
        waiting = waiting_files(store, folder)
        assert waiting == [folder / "b.txt"]
        assert waiting_files(store, tmp_path / "missing") == []
        ingest_folder(store, folder, NOW)
        assert waiting_files(store, folder) == []


def test_the_note_names_at_most_three_files() -> None:
    assert waiting_note([]) is None
    note = waiting_note([Path(f"/d/{n}.json") for n in "abcd"])
    assert (
        note is not None
        and "4 dump files not in the store yet left out (a.json, b.json, c.json, ...)" in note
    )
