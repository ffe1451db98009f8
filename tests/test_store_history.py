"""A state folder that has run before refuses an empty or missing database (it would resend everything)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import add_dumps, cli, outbox, seed_names

NOW = "2026-03-11T08:00:00Z"


@pytest.mark.parametrize("loss", ["emptied", "deleted"])
@pytest.mark.parametrize("command", [("run", "--now", NOW), ("ingest",)])
def test_a_lost_database_in_a_used_state_folder_is_refused(
    env: dict[str, str], loss: str, command: tuple[str, ...]
) -> None:
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", NOW)
    sent = len(outbox(env))
    assert sent >= 2
    db = Path(env["NEWSLETTER_HOME"]) / "state.db"
    if loss == "emptied":
        db.write_bytes(b"")  # a 0-byte state.db, as a full disk or a bad restore leaves it
    else:
        db.unlink()
    args = (
        (*command, *(str(p) for p in Path(env["NEWSLETTER_DUMPS"]).iterdir()))
        if command == ("ingest",)
        else command
    )
    proc = cli(env, *args, check=False)
    assert proc.returncode == 1
    first, *rest = proc.stderr.strip().splitlines()
    assert first.startswith("error: the state database is empty, but ")
    assert "last-run.json and messages in outbox/" in first
    assert rest and "--new-database" in rest[0]
    assert len(outbox(env)) == sent
    again = cli(env, *args, check=False)  # still refused: the refused command recorded nothing
    assert again.returncode == 1 and "state database is empty" in again.stderr


def test_new_database_starts_a_new_history_on_purpose(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", NOW)
    sent = len(outbox(env))
    (Path(env["NEWSLETTER_HOME"]) / "state.db").write_bytes(b"")
    cli(env, "--new-database", "run", "--now", NOW)
    assert len(outbox(env)) > sent  # new Message-IDs and file names: a new history
    cli(env, "run", "--now", NOW)  # from now on the database has a history of its own


def test_a_fresh_state_folder_needs_no_flag(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", NOW)
    assert outbox(env)


def test_a_folder_whose_runs_found_nothing_is_not_refused(env: dict[str, str]) -> None:
    cli(env, "run", "--now", NOW)  # an empty dumps folder: last-run.json, and nothing in the store
    assert (Path(env["NEWSLETTER_HOME"]) / "last-run.json").exists()
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", NOW)
    assert outbox(env)


def test_a_folder_whose_first_run_only_skipped_a_stray_file_is_not_refused(env: dict[str, str]) -> None:
    """A README.md in the dumps folder: the first run's warning about it read as an ingested dump, and
    every later run was refused as "the state database is empty" until --new-database."""
    (Path(env["NEWSLETTER_DUMPS"]) / "README.md").write_text("dumps go here\n")
    cli(env, "run", "--now", NOW)
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", NOW)
    assert outbox(env)


def test_explain_takes_new_database_as_its_hint_says(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", NOW)
    (Path(env["NEWSLETTER_HOME"]) / "state.db").unlink()
    refused = cli(env, "explain", "ssm@example.org", "no such paper", check=False)
    assert refused.returncode == 1 and "--new-database" in refused.stderr
    taken = cli(env, "--new-database", "explain", "ssm@example.org", "no such paper", check=False)
    assert "--new-database" not in taken.stderr and "no paper 'no such paper'" in taken.stderr


def test_after_an_idle_run_a_lost_database_is_still_refused(env: dict[str, str]) -> None:
    """An idle run's report names no dump now (only a count of those ingested before): the guard reads it."""
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", NOW, "--json")
    for eml in Path(env["NEWSLETTER_HOME"], "outbox").iterdir():
        eml.unlink()  # the outbox emptied (sent on by hand, say): the report is the only trace
    idle = cli(env, "run", "--now", "2026-03-11T09:00:00Z", "--json")
    assert '"dumps": []' in idle.stdout and '"dumps_already": 1' in idle.stdout
    (Path(env["NEWSLETTER_HOME"]) / "state.db").unlink()
    proc = cli(env, "run", "--now", NOW, check=False)
    assert proc.returncode == 1 and "the state database is empty" in proc.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("unsubscribe", "ssm@example.org"),
        ("resubscribe", "ssm@example.org"),
        ("feedback", "ssm@example.org", "2312.00752", "--more"),
        ("check",),
    ],
)
def test_a_mistyped_database_url_is_refused_by_every_command_that_reads_history(
    env: dict[str, str], tmp_path: Path, command: tuple[str, ...]
) -> None:
    """status showed nobody unsubscribed and no deliveries, resubscribe said 'had not unsubscribed', and
    check said ok (and made the database's folders): only run refused the empty database."""
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", NOW)
    typo = tmp_path / "tpyo" / "state.db"
    proc = cli({**env, "NEWSLETTER_DATABASE_URL": f"sqlite:///{typo}"}, *command, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: the state database is empty, but "), proc.stderr
    assert not typo.parent.exists()  # refused before it was made (in the wrong place)
    typed = {**env, "NEWSLETTER_DATABASE_URL": f"sqlite:///{typo}"}
    on_purpose = cli(typed, "--new-database", *command, check=False)
    assert "state database is empty" not in on_purpose.stderr  # as the hint says (feedback: no such paper)


def test_a_database_older_than_the_state_folder_is_refused(env: dict[str, str]) -> None:
    """A state.db restored from a backup taken before later dumps and digests (or copied without its
    -wal file) is not empty, but a run would send those papers again, and to addresses that
    unsubscribed since: it is refused until --new-database, and `check` says so."""
    first, second = seed_names()[:2]
    add_dumps(env, first)
    cli(env, "run", "--now", NOW)
    db = Path(env["NEWSLETTER_HOME"]) / "state.db"
    backup = db.read_bytes()  # the run has ended: state.db is whole (checkpointed)
    add_dumps(env, second)
    cli(env, "run", "--now", "2026-03-12T08:00:00Z")
    sent = len(outbox(env))
    db.write_bytes(backup)  # restored from the backup
    proc = cli(env, "run", "--now", "2026-03-13T08:00:00Z", check=False)
    assert proc.returncode == 1
    assert "the state database is older than" in proc.stderr and "--new-database" in proc.stderr
    assert len(outbox(env)) == sent  # nothing sent again
    assert cli(env, "check", check=False).returncode == 1
    shown = cli(env, "status")  # it still shows the state, and says what is wrong with it first
    assert shown.stdout.startswith("warning: the state database is older than")
    cli(env, "--new-database", "status")  # status only reads: it does not choose for the operator
    assert cli(env, "check", check=False).returncode == 1
    cli(env, "--new-database", "retry", "--now", "2026-03-13T08:00:00Z")  # once, by any command that
    assert (
        "older than" not in cli(env, "check", check=False).stderr
    )  # opens it for a run (a standby daemon too)
    cli(env, "run", "--now", "2026-03-14T08:00:00Z")  # and from then on it is the folder's history
