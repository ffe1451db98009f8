"""A daily subscriber's send time with nothing to send is served all the same."""

from __future__ import annotations

import json
from pathlib import Path

from .helpers import add_dumps, cli, seed_names


def test_a_send_time_with_nothing_new_does_not_leave_the_next_dump_to_go_out_at_once(
    env: dict[str, str],
) -> None:
    """08:00 in New York found nothing new on June 2; the dump that came at 03:00 on June 3 went out at
    once (a digest at 03:00 local) and another at 08:00: two that day, the first in the night."""
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(
        "subscribers:\n  - email: ny@example.org\n    interests: [language models, diffusion, reinforcement learning]\n"
        '    timezone: America/New_York\n    send_at: "08:00"\n'
    )
    first, second, third = seed_names()[:3]

    def run(now: str) -> str:
        report = json.loads(cli(env, "run", "--json", "--now", now).stdout)
        (digest,) = report["digests"]
        return str(digest["status"])

    add_dumps(env, first)
    assert run("2026-06-01T07:00-04:00") == "sent"  # the first digest
    assert run("2026-06-02T08:00-04:00") == "skipped"  # nothing new
    add_dumps(env, second)
    assert run("2026-06-03T03:00-04:00") == "skipped"  # not due: the 08:00 of June 2 was served
    add_dumps(env, third)
    assert run("2026-06-03T08:00-04:00") == "sent"
