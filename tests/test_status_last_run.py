"""`status`'s "Last run:" line: it printed the finish time as raw ISO with microseconds
("2026-12-08T00:40:31.719248+00:00"), beside a summary and a table in minutes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .helpers import cli


def test_the_last_run_s_finish_time_is_written_as_the_rest_of_status(env: dict[str, str]) -> None:
    cli(env, "run", "--no-fetch", "--now", "2027-01-11T08:00")
    text = cli(env, "status").stdout
    line = next(line for line in text.splitlines() if line.startswith("Last run:"))
    assert re.match(r"Last run: finished \d{4}-\d\d-\d\d \d\d:\d\d UTC: ", line), line


@pytest.mark.parametrize(
    ("finished_at", "shown"),
    [
        ("garbage", "at 'garbage' (not a time)"),
        (12345, "at 12345 (not a time)"),
        ("2026-12-08T00:40:31", "2026-12-08 00:40 UTC"),  # naive: a run writes UTC, not local time
        (None, "at an unknown time"),
    ],
)
def test_a_finish_time_status_cannot_read_is_shown_not_a_crash(
    env: dict[str, str], finished_at: object, shown: str
) -> None:
    cli(env, "run", "--no-fetch", "--now", "2027-01-11T08:00")
    last_run = Path(env["NEWSLETTER_HOME"]) / "last-run.json"
    data = json.loads(last_run.read_text(encoding="utf-8"))
    last_run.write_text(json.dumps(data | {"finished_at": finished_at}), encoding="utf-8")
    text = cli(env | {"TZ": "America/New_York"}, "status").stdout
    assert f"Last run: finished {shown}: " in text
