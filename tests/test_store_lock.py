"""The run lock: one run per state folder, across processes, released when the holder dies."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from newsletter.errors import LockedError
from newsletter.store import run_lock

_HOLDER = """
import sys
from pathlib import Path
from newsletter.store import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def _holder(home: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the lock until its stdin closes."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "held"
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def test_a_second_process_is_refused_while_a_run_holds_the_lock(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with _holder(home) as proc:
        with pytest.raises(LockedError, match=r"another run holds .*run\.lock"), run_lock(home):
            pytest.fail("entered a lock another process holds")
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    with run_lock(home):
        assert (home / "run.lock").exists()


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    with _holder(tmp_path) as proc:
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    with run_lock(tmp_path):
        entered = True
    assert entered


def test_a_second_holder_in_the_same_process_is_refused_too(tmp_path: Path) -> None:
    with run_lock(tmp_path), pytest.raises(LockedError), run_lock(tmp_path):
        pytest.fail("entered the lock twice")
    with run_lock(tmp_path):  # released on exit
        pass


def test_a_short_timeout_waits_then_gives_up(tmp_path: Path) -> None:
    with _holder(tmp_path):
        started = time.monotonic()
        with pytest.raises(LockedError), run_lock(tmp_path, timeout=0.3):
            pytest.fail("entered a held lock")
        assert time.monotonic() - started >= 0.3


def test_the_lock_creates_the_state_folder(tmp_path: Path) -> None:
    home = tmp_path / "not" / "yet"
    with run_lock(home):
        assert (home / "run.lock").exists()
