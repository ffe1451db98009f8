"""The sdist (MANIFEST.in): a distro packager builds the wheel from it and runs the tests there, so it
holds what the tests read beside the package (setuptools alone ships tests/test_*.py, without conftest.py,
helpers.py, tests/data, the seeds or the example subscribers)."""

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
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


LICENSE_FILES = ("LICENSE", "NOTICE", "LICENSES/Apache-2.0.txt")
SHIPPED = ("newsletter/rank/minilm_vocab.txt", "newsletter/rank/reference.jsonl.gz")  # not the MIT code's


def test_notice_names_each_third_party_file_the_wheel_ships_and_the_sdist_holds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wheel shipped the model's vocabulary (Apache-2.0) and 256 arXiv abstracts under MIT alone."""
    monkeypatch.chdir(ROOT)
    notice = (ROOT / "NOTICE").read_text()
    assert all(path in notice for path in SHIPPED)
    assert "Apache License, Version 2.0" in notice and "arXiv" in notice
    vocab = hashlib.sha256((ROOT / SHIPPED[0]).read_bytes()).hexdigest()
    assert vocab in notice  # the file named is the file shipped
    assert set(LICENSE_FILES) <= _manifest_files(set(LICENSE_FILES))


@pytest.mark.slow
def test_the_built_wheel_carries_the_notice_and_the_apache_license(tmp_path: Path) -> None:
    """Built from a copy (a build writes build/ and *.egg-info beside the sources)."""
    source = tmp_path / "src"
    junk = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "out", ".newsletter")
    shutil.copytree(ROOT, source, symlinks=True, ignore=junk)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)]
    subprocess.run([*command, *_build_flags()], check=True)
    (wheel,) = tmp_path.glob("newsletter-*.whl")
    with zipfile.ZipFile(wheel) as built:
        names = set(built.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = built.read(metadata).decode()
    info = metadata.removesuffix("METADATA")
    assert {f"{info}licenses/{name}" for name in LICENSE_FILES} <= names
    assert set(SHIPPED) <= names
    assert all(f"License-File: {name}" in headers for name in LICENSE_FILES)


def _build_flags() -> tuple[str, ...]:
    """The installed setuptools when it reads pyproject's license fields (77+); else pip installs one for
    the build from the configured index, as `pip install .` does."""
    from setuptools import __version__

    return ("--no-build-isolation",) if int(__version__.split(".")[0]) >= 77 else ()
