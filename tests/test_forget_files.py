"""`forget` erases the address's files, and only its own."""

from __future__ import annotations

import sqlite3
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
    outbox = _two_sent(env, "john_smith@example.org", "smith@example.org")
    before = sorted(p.name for p in outbox.glob("*"))
    assert len(before) == 4, before
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text("subscribers:\n" + ENTRY.format("john_smith@example.org"))
    print(cli(env, "forget", "smith@example.org").stdout)
    assert len(list(outbox.glob("*"))) == 2  # john_smith's digest is still there


def test_forget_erases_the_outbox_files_of_an_address_with_an_international_domain(
    env: dict[str, str],
) -> None:
    """Its files are named after the domain's A-labels (bob@xn--strae-oqa.example): forget took the Unicode
    domain's slug, bob@strasse.example, and deleted that other subscriber's files instead of its own."""
    entry = "  - email: {}\n    interests: [language models, diffusion, reinforcement learning]\n"
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(
        "subscribers:\n" + entry.format("Bob@Straße.Example") + entry.format("bob@strasse.example")
    )
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z", check=False)
    outbox = Path(env["NEWSLETTER_HOME"]) / "outbox"
    assert len(list(outbox.glob("*"))) == 4
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text("subscribers:\n" + entry.format("bob@strasse.example"))
    cli(env, "forget", "Bob@Straße.Example")
    left = sorted(p.name for p in outbox.glob("*"))
    assert len(left) == 2 and all("_bob@strasse.example_" in name for name in left), left


def test_forget_leaves_the_address_unreadable_in_the_sqlite_files_another_process_keeps_open(
    env: dict[str, str],
) -> None:
    """With `serve` (or the daemon) holding the database, its write-ahead log outlives `forget`: the
    address was still readable in state.db-wal, and in state.db's pages the log had not replaced yet."""
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(
        "subscribers:\n  - email: Ada@Example.org\n    interests: [language models, diffusion]\n"
    )
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z")
    db = Path(env["NEWSLETTER_HOME"]) / "state.db"
    other = sqlite3.connect(db)  # as serve's: open, idle
    try:
        other.execute("SELECT count(*) FROM dumps").fetchone()
        cli(env, "unsubscribe", "ada@example.org")
        Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text("subscribers: []\n")
        cli(env, "forget", "ada@example.org")
        wal = db.with_name("state.db-wal")
        left = db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    finally:
        other.close()
    assert b"ada@example.org" not in left.lower()


def test_forget_erases_outbox_files_named_by_an_earlier_version(env: dict[str, str]) -> None:
    """Versions before the address was in the name wrote <digest id>.eml: an upgraded state keeps them."""
    outbox = _two_sent(env, "ada@example.org", "bob@example.org")
    for path in outbox.glob("*"):  # 2026-03-11_ada@example.org_<id>.eml -> <id>.eml
        path.rename(outbox / path.name.rpartition("_")[2])
    assert len(list(outbox.glob("*"))) == 4
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text("subscribers:\n" + ENTRY.format("bob@example.org"))
    cli(env, "forget", "ada@example.org")
    left = [p.read_bytes() for p in outbox.glob("*.eml")]
    assert len(left) == 1 and b"bob@example.org" in left[0] and b"ada@example.org" not in left[0]
    assert len(list(outbox.glob("*"))) == 2


ENTRY = "  - email: {}\n    interests: [language models, diffusion, reinforcement learning]\n"


def _two_sent(env: dict[str, str], first: str, second: str) -> Path:
    """The outbox once a run has sent a digest each to two subscribers of the same interests."""
    entry = "  - email: {}\n    interests: [language models, diffusion, reinforcement learning]\n"
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(
        "subscribers:\n" + entry.format(first) + entry.format(second)
    )
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", "2026-03-11T08:00:00Z", check=False)
    return Path(env["NEWSLETTER_HOME"]) / "outbox"
