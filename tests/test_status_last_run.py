"""`status`'s "Last run:" line: it printed the finish time as raw ISO with microseconds
("2026-12-08T00:40:31.719248+00:00"), beside a summary and a table in minutes."""

from __future__ import annotations

import re

from .helpers import cli


def test_the_last_run_s_finish_time_is_written_as_the_rest_of_status(env: dict[str, str]) -> None:
    cli(env, "run", "--no-fetch", "--now", "2027-01-11T08:00")
    text = cli(env, "status").stdout
    line = next(line for line in text.splitlines() if line.startswith("Last run:"))
    assert re.match(r"Last run: finished \d{4}-\d\d-\d\d \d\d:\d\d UTC: ", line), line
