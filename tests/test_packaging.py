"""The sdist (MANIFEST.in): a distro packager builds the wheel from it and runs the tests there, so it
holds what the tests read beside the package (setuptools alone ships tests/test_*.py, without conftest.py,
helpers.py, tests/data, the seeds or the example subscribers)."""

import os
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ("tests", "seeds", "benchmarks")


def _manifest_files(candidates: set[str]) -> set[str]:
    from setuptools.command.egg_info import FileList  # here: without setuptools, one test fails, not the run

    files = FileList()
    files.allfiles = sorted(candidates)
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            files.process_template_line(line)
    return set(files.files)


def _needed_files() -> set[str]:
    found = {"subscribers.example.yaml"}
    for top in NEEDED:
        for folder, dirs, names in os.walk(top):
            dirs[:] = [name for name in dirs if name not in ("__pycache__", "out")]
            found |= {os.path.join(folder, name) for name in names if not name.endswith(".pyc")}
    return found


def test_sdist_holds_what_the_tests_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert (ROOT / "MANIFEST.in").is_file()
    needed = _needed_files()
    assert needed - _manifest_files(needed) == set()


def test_the_test_extra_installs_setuptools_which_reads_the_manifest() -> None:
    """A Python 3.12+ venv has no setuptools: `pip install -e '.[test]' && pytest` stopped at collecting
    this file ("Interrupted: 1 error during collection"), and no test ran."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "setuptools" in extras["test"]
