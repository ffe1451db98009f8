"""One bad entry in the subscribers file: the run goes on for the others (exit 1, the entry's line on
stderr) and the bad entry's subscriber loses nothing: no digest, their papers and queued digests wait."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from newsletter.daemon.schedule import SubscriberFile
from newsletter.deliver.queued import KEPT_FOR_FIX
from newsletter.pipeline import ENTRY_HELD
from newsletter.store import PENDING, RETRY, Store

from .helpers import add_dumps, cli, outbox, seed_names
from .test_cli import _smtp_down

GOOD = """\
subscribers:
  - email: ssm@example.org
    interests: ["chain-of-thought", "latent space", "language grounding"]
  - email: diff@example.org
    interests: ["sound", "speech synthesis"]
  - email: lm@example.org
    interests: ["chain-of-thought", "latent space", "language grounding"]
    timezone: Europe/Paris
"""
BAD = GOOD.replace("Europe/Paris", "Europe/Pariss")  # line 8


def _write(env: dict[str, str], text: str) -> None:
    Path(env["NEWSLETTER_SUBSCRIBERS"]).write_text(text)


def _run(env: dict[str, str], now: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    proc = cli(env, "run", "--json", "--now", now, check=False)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def _sent(report: dict) -> dict[str, set[str]]:  # type: ignore[type-arg]
    return {
        d["subscriber"]: {i["key"] for i in d["items"]} for d in report["digests"] if d["status"] == "sent"
    }


def test_a_bad_entry_holds_its_subscriber_and_the_others_get_their_digests(env: dict[str, str]) -> None:
    names = seed_names()
    _write(env, GOOD)
    add_dumps(env, names[0])
    code, first, _ = _run(env, "2026-03-11T08:00:00Z")
    assert code == 0 and set(_sent(first)) == {"ssm@example.org", "diff@example.org", "lm@example.org"}
    _write(env, BAD)
    add_dumps(env, names[1])
    code, second, err = _run(env, "2026-03-12T08:00:00Z")
    assert code == 1  # the run needs a look: an entry is left out
    path = env["NEWSLETTER_SUBSCRIBERS"]
    assert f"error: {path}:8: subscriber #3 (lm@example.org): field 'timezone'" in err
    assert set(_sent(second)) == {"ssm@example.org", "diff@example.org"}
    (held,) = [d for d in second["digests"] if d["subscriber"] == "lm@example.org"]
    assert (held["status"], held["reason"]) == ("skipped", ENTRY_HELD)
    assert any(f"{path}:8:" in e for e in second["errors"])
    missed = _sent(second)["ssm@example.org"]
    _write(env, GOOD)  # fixed: the papers it missed come with the next digest
    code, third, _ = _run(env, "2026-03-13T08:00:00Z")
    assert code == 0 and set(_sent(third)) == {"lm@example.org"}
    assert missed <= _sent(third)["lm@example.org"]


def test_a_bad_entry_s_queued_digest_waits_past_five_days_and_goes_once_fixed(env: dict[str, str]) -> None:
    """Taken out of the file, a queued digest is given up after 5 days; a bad entry is still in the
    file: its digest is kept as it is, and sent once the entry is fixed."""
    _write(env, GOOD)
    add_dumps(env, seed_names()[0])
    cli(_smtp_down(env), "run", "--now", "2026-03-11T08:00:00Z", check=False)  # every digest queued
    _write(env, BAD)
    code, report, _ = _run(env, "2026-03-18T08:00:00Z")
    assert code == 1 and set(_sent(report)) == {"ssm@example.org", "diff@example.org"}
    (held,) = [d for d in report["digests"] if d["subscriber"] == "lm@example.org"]
    assert (held["status"], held["reason"]) == ("skipped", KEPT_FOR_FIX)
    with Store(f"sqlite:///{env['NEWSLETTER_HOME']}/state.db") as store:
        (record,) = store.deliveries(email="lm@example.org", with_items=False)
    assert record.status in (PENDING, RETRY)  # queued as it was, not given up
    status = json.loads(cli(env, "status", "--json").stdout)  # a bad entry does not stop `status`
    assert any(":8:" in w for w in status["warnings"])
    _write(env, GOOD)
    code, report, _ = _run(env, "2026-03-18T09:00:00Z")
    assert code == 0 and _sent(report) == {"lm@example.org": _sent(report)["lm@example.org"]}
    assert _sent(report)["lm@example.org"]


def test_status_lists_a_held_entry_with_its_problem(env: dict[str, str]) -> None:
    """`status` left a held subscriber out of its table (a warning only) and out of its JSON rows."""
    _write(env, BAD)
    path = env["NEWSLETTER_SUBSCRIBERS"]
    rows = {r["subscriber"]: r for r in json.loads(cli(env, "status", "--json").stdout)["subscribers"]}
    assert rows["ssm@example.org"]["held"] is None
    held = rows["lm@example.org"]
    assert held["held"].startswith(f"{path}:8: subscriber #3 (lm@example.org): field 'timezone'")
    assert (held["next_due_at"], held["next_due"]) == (None, "when its entry is fixed")
    (line,) = [line for line in cli(env, "status").stdout.splitlines() if "lm@example.org " in line]
    assert f"held: fix its entry ({path}:8: subscriber #3 (lm@example.org): field 'timezone'" in line


def test_two_entries_of_one_address_are_both_held(env: dict[str, str]) -> None:
    _write(env, GOOD + "  - email: LM@example.org\n    interests: [sound]\n")
    add_dumps(env, seed_names()[0])
    code, report, err = _run(env, "2026-03-11T08:00:00Z")
    assert code == 1 and ":9: subscriber LM@example.org: duplicate email" in err
    assert set(_sent(report)) == {"ssm@example.org", "diff@example.org"}
    assert not any(m["To"] == "lm@example.org" for m in outbox(env))


def test_an_entry_whose_address_cannot_be_read_is_reported_and_the_others_go_on(env: dict[str, str]) -> None:
    _write(env, GOOD.replace("lm@example.org", "lm at example.org"))
    add_dumps(env, seed_names()[0])
    code, report, err = _run(env, "2026-03-11T08:00:00Z")
    assert code == 1 and ":6: subscriber #3 (lm at example.org): field 'email'" in err
    assert set(_sent(report)) == {"ssm@example.org", "diff@example.org"}


def test_preview_of_another_subscriber_goes_on_and_of_the_bad_entry_names_its_problem(
    env: dict[str, str],
) -> None:
    _write(env, BAD)
    add_dumps(env, seed_names()[0])
    other = cli(env, "preview", "ssm@example.org", "--out", "ssm.html", check=False)
    assert other.returncode == 0 and ":8: subscriber #3" in other.stderr  # a warning
    own = cli(env, "explain", "lm@example.org", "anything", check=False)
    assert own.returncode == 1 and "error: " in own.stderr and ":8: subscriber #3" in own.stderr


def test_a_file_that_is_not_yaml_or_a_bad_default_still_stops_the_run(env: dict[str, str]) -> None:
    add_dumps(env, seed_names()[0])
    for text, where in [
        (BAD + "  - [oops\n", "invalid YAML"),
        ("defaults: {cadance: weekly}\n" + BAD, ":1:"),
    ]:
        _write(env, text)
        code, report, _ = _run(env, "2026-03-11T08:00:00Z")
        assert code == 1 and where in report["error"]
        assert outbox(env) == []


def test_the_daemon_takes_a_file_s_valid_entries_and_holds_the_bad_one(env: dict[str, str]) -> None:
    path = Path(env["NEWSLETTER_SUBSCRIBERS"])
    path.write_text(GOOD)
    watcher = SubscriberFile(path, settle=0)
    path.write_text(BAD)
    os.utime(path, (time.time() + 5, time.time() + 5))
    taken = watcher.get()
    assert [s.email for s in taken.subscribers] == ["ssm@example.org", "diff@example.org"]
    assert taken.holds("LM@example.org") and watcher.problems[0].startswith(f"{path}:8:")
    path.write_text("subscribers: [oops\n")  # not YAML: the last list is kept
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert watcher.get() is taken


def test_unsubscribe_and_resubscribe_of_a_bad_entry_s_address_know_it_is_in_the_file(
    env: dict[str, str],
) -> None:
    """Held, not gone: unsubscribe said '(not in subscribers.yaml: recorded for if it is added)' and a
    resubscribe of the held address that had not unsubscribed was 'no subscriber with email' (exit 1)."""
    _write(env, BAD)
    assert cli(env, "resubscribe", "lm@example.org").stdout == "lm@example.org: had not unsubscribed\n"
    assert cli(env, "unsubscribe", "lm@example.org").stdout == "lm@example.org: unsubscribed\n"
    back = cli(env, "resubscribe", "lm@example.org").stdout
    assert back == "lm@example.org: subscribed again: digests from papers listed from now on\n"
