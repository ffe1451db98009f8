"""Under systemd (JOURNAL_STREAM naming stderr) each log line carries its priority and no second time."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from newsletter.cli.base import JournalFormatter

ROOT = Path(__file__).resolve().parent.parent


def _status(tmp_path: Path, journal: bool) -> list[str]:
    log = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with log.open("w") as stderr:
        if journal:
            found = os.fstat(stderr.fileno())
            env["JOURNAL_STREAM"] = f"{found.st_dev}:{found.st_ino}"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "newsletter",
                "--verbose",
                "--home",
                str(tmp_path / "h"),
                "--subscribers",
                str(ROOT / "subscribers.example.yaml"),
                "status",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            check=True,
            timeout=120,
            cwd=tmp_path,
        )
    return [line for line in log.read_text().splitlines() if "schema migration" in line]


def test_journald_gets_priorities_and_no_timestamp(tmp_path: Path) -> None:
    lines = _status(tmp_path, journal=True)
    assert lines and all(line.startswith("<6>INFO applied schema migration") for line in lines)


def test_a_pipe_or_cron_log_keeps_its_timestamps(tmp_path: Path) -> None:
    lines = _status(tmp_path, journal=False)
    assert lines and all(line[:2] == "20" and " INFO applied schema migration" in line for line in lines)


def test_every_line_of_a_traceback_keeps_the_error_priority() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    lines = JournalFormatter("%(levelname)s %(message)s").format(record).splitlines()
    assert lines[0] == "<3>ERROR failed" and len(lines) > 2 and all(line.startswith("<3>") for line in lines)


def test_a_refusal_to_start_reaches_the_journal_as_an_error(tmp_path: Path) -> None:
    """`journalctl -u newsletter -p warning` must show why the daemon did not start (printed, not logged)."""
    log = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with log.open("w") as stderr:
        found = os.fstat(stderr.fileno())
        env["JOURNAL_STREAM"] = f"{found.st_dev}:{found.st_ino}"
        command = [sys.executable, "-m", "newsletter", "--home", str(tmp_path / "h")]
        command += ["--subscribers", str(tmp_path / "missing.yaml"), "daemon"]
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, timeout=120, cwd=tmp_path)
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith("<3>") for line in lines), lines
