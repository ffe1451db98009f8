"""`forget` erases nothing while the subscribers file may still list the address."""

from __future__ import annotations

from pathlib import Path

from newsletter.store import run_lock

from .helpers import cli


def test_forget_refuses_an_address_listed_in_a_file_with_a_mistake(env: dict[str, str]) -> None:
    """ada is still listed, only her own entry has a mistake: forget must refuse, or her unsubscribe is
    erased and she gets digests again once the mistake is fixed."""
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(
        "subscribers:\n  - email: ada@example.org\n    interests: [diffusion]\n    max_items: many\n"
    )
    cli(env, "unsubscribe", "ada@example.org")  # lenient: recorded, with a warning
    result = cli(env, "forget", "ada@example.org", check=False)
    assert result.returncode != 0, result.stdout + result.stderr


def test_forget_refuses_while_a_run_holds_the_state(env: dict[str, str]) -> None:
    """A run that read the subscribers file before the address left it mailed the address after `forget`
    (and listed it again in last-run.json): forget must wait for it, as prune's compacting does."""
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text("subscribers: []\n")
    cli(env, "unsubscribe", "ada@example.org")
    with run_lock(Path(env["NEWSLETTER_HOME"])):  # as a run in flight holds it
        result = cli(env, "forget", "ada@example.org", check=False)
    assert result.returncode != 0 and "another run holds" in result.stderr, result.stdout + result.stderr
    assert "had already unsubscribed" in cli(env, "unsubscribe", "ada@example.org").stdout  # nothing erased
    assert "forgotten" in cli(env, "forget", "ada@example.org").stdout
