"""Deliverability: SpamAssassin (local rules only, no network) scores the digests a real run writes.

Skipped when the ``spamassassin`` binary is absent (Debian package ``spamassassin``), except under CI
(``CI=true``; .ci/run installs it), where that fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .helpers import add_dumps, cli, seed_names, tool_missing

TARGET = 1.0
SUBSCRIBERS = """
subscribers:
  - {email: ssm@example.org, name: Sam Ströbel, interests: ["chain-of-thought", "latent space", "language grounding"]}
  - {email: diff@example.org, interests: ["sound", "speech synthesis"], max_items: 3}
  - {email: llm@example.org, name: Ада Лавлейс, interests: ["large language models", "agents"], max_items: 25}
"""
SPAMASSASSIN = shutil.which("spamassassin")
_STATUS = re.compile(
    r"^X-Spam-Status: (?P<verdict>\w+), score=(?P<score>-?[\d.]+) .*?tests=(?P<tests>.*?)(?:autolearn|version)=",
    re.M | re.S,
)


def spam_score(message: bytes) -> tuple[float, list[str]]:
    """(score, rules that fired) from ``spamassassin -L -t`` (local tests only)."""
    assert SPAMASSASSIN is not None
    proc = subprocess.run(
        [SPAMASSASSIN, "-L", "-t"], input=message, capture_output=True, timeout=120, check=True
    )
    output = proc.stdout.decode("utf-8", "replace")
    found = _STATUS.search(output)
    assert found, f"no X-Spam-Status in spamassassin output:\n{output[:2000]}"
    rules = [
        r.strip() for r in found["tests"].replace("\n", " ").split(",") if r.strip() and r.strip() != "none"
    ]
    return float(found["score"]), rules


def test_seed_digests_score_at_most_one_point_with_spamassassin(env: dict[str, str]) -> None:
    if SPAMASSASSIN is None:
        tool_missing("spamassassin is not installed (apt-get install spamassassin)")
    env |= {
        "NEWSLETTER_BASE_URL": "https://papers.example.org",
        "NEWSLETTER_UNSUBSCRIBE_SECRET": "s3-spam-test-secret",
    }
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(SUBSCRIBERS, encoding="utf-8")
    add_dumps(env, seed_names()[0])  # the first dump has papers for all three profiles
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    messages = sorted((Path(env["NEWSLETTER_HOME"]) / "outbox").glob("*.eml"))
    assert len(messages) == 3
    scores = {path.name: spam_score(path.read_bytes()) for path in messages}
    for name, (score, rules) in scores.items():
        print(f"spamassassin: {name}: {score} {rules}")
    assert max(score for score, _ in scores.values()) <= TARGET, scores
    # The hidden preheader once had color:#ffffff (MJML's mj-preview): 0.7 points on every digest.
    assert not any("HTML_FONT_LOW_CONTRAST" in rules for _, rules in scores.values())
