"""What the CLI prints reads right: plurals, status times, no stray lines, no Python type names."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from .helpers import add_dumps, cli, seed_names

ONE_PAPER = """
subscribers:
  - email: a-rather-long-address-for-a-table@example.org
    interests: ["chain-of-thought", "latent space"]
    max_items: 1
  - email: diff@example.org
    interests: ["sound"]
    cadence: each-dump
"""


@pytest.fixture
def ran(env: dict[str, str]) -> dict[str, str]:
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(ONE_PAPER, encoding="utf-8")
    add_dumps(env, *seed_names()[:2])
    proc = cli(env, "-v", "run", "--now", "2026-03-11T08:00:00Z")
    env["run_stdout"], env["run_stderr"] = proc.stdout, proc.stderr
    return env


def test_run_says_1_paper_and_logs_each_ingest_once(ran: dict[str, str]) -> None:
    assert "a-rather-long-address-for-a-table@example.org: sent (1 paper)" in ran["run_stdout"]
    assert ran["run_stdout"].splitlines()[-1].startswith("2026-03-11 08:00 UTC: 2 dumps ingested (")
    for name in seed_names()[:2]:
        logged = [line for line in ran["run_stderr"].splitlines() if "ingested" in line and name in line]
        assert len(logged) == 1, logged


def test_status_table_never_cuts_a_time_and_json_keeps_times_and_prose_apart(ran: dict[str, str]) -> None:
    table = cli(ran, "status", "--now", "2026-03-11T09:00:00Z").stdout  # not a terminal
    row = next(line for line in table.splitlines() if "a-rather-long-address-for-a-table@example.org" in line)
    assert "2026-03-11 08:00 UTC" in row  # the address whole on its row (grep finds it), and its times
    assert "2026-03-12 00:00 UTC" in row
    assert len(row) > 80  # Rich's width for a pipe would have folded the address
    data = json.loads(cli(ran, "status", "--json", "--now", "2026-03-11T09:00:00Z").stdout)
    rows = {row["subscriber"]: row for row in data["subscribers"]}
    for row in rows.values():
        assert row["next_due_at"] is None or datetime.fromisoformat(row["next_due_at"])
        assert row["last_digest_at"] is None or datetime.fromisoformat(row["last_digest_at"])
    assert rows["diff@example.org"]["next_due_at"] is None
    assert rows["diff@example.org"]["next_due"] == "when a dump brings new papers"
    due_now = json.loads(cli(ran, "status", "--json", "--now", "2026-03-13T09:00:00Z").stdout)
    row = next(r for r in due_now["subscribers"] if r["subscriber"].startswith("a-rather"))
    assert row["next_due"] == "when a dump brings new papers"  # due, but nothing new to weigh: not "now"
    assert (
        row["next_due_at"] is None
    )  # as the text says (it was the current time, which serve showed as "now")
    add_dumps(ran, seed_names()[2])
    cli(ran, "run", "--dry-run", "--now", "2026-03-13T09:00:00Z")  # ingests it, plans nothing
    again = json.loads(cli(ran, "status", "--json", "--now", "2026-03-13T09:00:00Z").stdout)
    row = next(r for r in again["subscribers"] if r["subscriber"].startswith("a-rather"))
    assert row["next_due"] == "now"


def test_retry_prints_only_what_it_did(ran: dict[str, str]) -> None:
    out = cli(ran, "retry").stdout
    assert out == "0 failed deliveries requeued; sending what is queued\n"  # no blank summary line after it


def test_help_shows_no_python_type_names() -> None:
    for command in ("", "ingest", "run", "retry", "status", "serve", "daemon", "preview", "check"):
        out = cli({}, *([command] if command else []), "--help").stdout
        assert not re.search(r"<(str|int|float|path|list\[|Path)", out), (command, out)
    assert "FILE" in cli({}, "ingest", "--help").stdout
