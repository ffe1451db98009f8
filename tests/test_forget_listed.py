"""`forget` erases nothing while the subscribers file may still list the address."""

from __future__ import annotations

from pathlib import Path

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
