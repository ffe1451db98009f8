"""Under systemd (JOURNAL_STREAM naming stderr) each log line carries its priority and no second time."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from newsletter.cli.base import JournalFormatter, utc_clock

ROOT = Path(__file__).resolve().parent.parent


def _status(tmp_path: Path, journal: bool) -> list[str]:
    log = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["TZ"] = "Asia/Kolkata"  # +05:30 all year: a local time cannot pass for UTC
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


def test_a_pipe_or_cron_log_keeps_its_timestamps_in_utc_as_the_summary_line(tmp_path: Path) -> None:
    """They were in the machine's zone, unsaid, beside the summary line's `... UTC:`."""
    lines = _status(tmp_path, journal=False)
    stamp = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d):\d\d,\d{3} UTC INFO applied schema migration")
    found = [stamp.match(line) for line in lines]
    assert lines and all(found), lines
    logged = datetime.strptime(found[0].group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)  # type: ignore[union-attr]
    assert abs((datetime.now(UTC) - logged).total_seconds()) < 300


def test_a_terminal_s_time_column_is_in_utc_too() -> None:
    moment = datetime(2026, 3, 11, 8, 15, 3, tzinfo=UTC)
    assert utc_clock(moment.astimezone().replace(tzinfo=None)).plain == "[08:15:03 UTC]"


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
