"""Reviewer's repro (late diff review)."""

from __future__ import annotations

import json
from pathlib import Path

from .helpers import add_dumps, cli, seed_names

NY = (
    "subscribers:\n  - email: ny@example.org\n    interests: [language models, diffusion, reinforcement learning]\n"
    '    timezone: America/New_York\n    send_at: "08:00"\n'
)


def test_workers_2_a_send_time_with_nothing_new_is_served_too(env: dict[str, str]) -> None:
    """The same story as test_send_time_kept, with NEWSLETTER_WORKERS=2 (the sharded path: triage)."""
    env = {**env, "NEWSLETTER_WORKERS": "2"}
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(NY)
    first, second = seed_names()[:2]

    def run(now: str) -> str:
        report = json.loads(cli(env, "run", "--json", "--now", now, check=False).stdout)
        (digest,) = report["digests"]
        return str(digest["status"])

    add_dumps(env, first)
    assert run("2026-06-01T07:00-04:00") == "sent"
    assert run("2026-06-02T08:00-04:00") == "skipped"  # nothing new
    add_dumps(env, second)
    assert run("2026-06-03T03:00-04:00") == "skipped"  # not due: 08:00 of June 2 was served
