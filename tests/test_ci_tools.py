"""Under CI (``CI=true``) a test whose system tool is missing fails: a green CI run ran every test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT


def _pytest_without_tools(folder: Path, *tests: str, ci: str) -> subprocess.CompletedProcess[str]:
    """pytest on ``tests`` with a PATH holding only the empty ``folder``: no spamassassin, no chromium
    (this Python's own folder may be /usr/bin, beside them)."""
    env = {**os.environ, "PATH": str(folder), "CI": ci}
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "test",
    ["tests/test_spam.py", "tests/test_serve_browser.py::test_unsubscribe_button_works_in_the_browser"],
)
def test_a_missing_tool_fails_under_ci_and_skips_elsewhere(test: str, tmp_path: Path) -> None:
    """They were skipped under CI too, so a `.ci/run` whose apt-get failed passed without them."""
    under_ci = _pytest_without_tools(tmp_path, test, ci="true")
    assert under_ci.returncode == 1 and "required under CI: " in under_ci.stdout, under_ci.stdout
    elsewhere = _pytest_without_tools(tmp_path, test, ci="")
    assert elsewhere.returncode == 0 and "skipped" in elsewhere.stdout, elsewhere.stdout
