"""`forget` erases the address's files, and only its own."""

from __future__ import annotations

from pathlib import Path

from .helpers import add_dumps, cli, seed_names


def test_forget_erases_the_preview_of_a_mixed_case_address(env: dict[str, str]) -> None:
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(
        "subscribers:\n  - email: Ada@Example.org\n    interests: [language models, diffusion]\n"
    )
    add_dumps(env, seed_names()[0])
    out = cli(env, "preview", "Ada@Example.org", check=False)
    home = Path(env["NEWSLETTER_HOME"])
    previews = list((home / "preview").glob("*")) if (home / "preview").exists() else []
    assert previews, out.stdout + out.stderr
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text("subscribers: []\n")
    cli(env, "forget", "Ada@Example.org", check=False)
    assert list((home / "preview").glob("*")) == []


def test_forget_keeps_another_address_s_outbox_files(env: dict[str, str]) -> None:
    """Forgetting smith@ matched "_smith@example.org_" inside john_smith@'s outbox file names."""
    entry = "  - email: {}\n    interests: [language models, diffusion, reinforcement learning]\n"
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(
        "subscribers:\n" + entry.format("john_smith@example.org") + entry.format("smith@example.org")
    )
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z", check=False)
    outbox = Path(env["NEWSLETTER_HOME"]) / "outbox"
    before = sorted(p.name for p in outbox.glob("*"))
    assert len(before) == 4, before
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text("subscribers:\n" + entry.format("john_smith@example.org"))
    print(cli(env, "forget", "smith@example.org").stdout)
    assert len(list(outbox.glob("*"))) == 2  # john_smith's digest is still there
